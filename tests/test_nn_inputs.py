"""Inputs that tensorly_cross.nn once mishandled: encoders of the wrong output shape or patch
size, non-native byte order, DenseEmbedding's border, cache keys, PCA refits, rank ends."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    DenseEmbedding,
    EncodedTensor,
    PatchGrid,
    TTPCAHead,
    default_encoder,
)

pytestmark = pytest.mark.usefixtures("pytorch_backend")


def _volume(shape=(10, 10, 10), seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random(shape).astype(dtype)


def _embedding(encoder, **options):
    defaults = dict(patch_size=4, stride=2, n_features=3, rank=2, n_outputs=2, n_iter_max=1)
    return CrossEmbedding(encoder, **dict(defaults, **options))


class _FeaturesFirst(nn.Module):
    """A plausible slip: an encoder that returns its features as (F, m)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 4)

    def forward(self, patches):
        return self.conv(patches).flatten(1).T


# --- 2: the encoder's output shape is checked, not only its number of elements -------------

def test_an_encoder_returning_features_first_is_refused():
    torch.manual_seed(0)
    field = EncodedTensor(torch.rand(10, 10, 10), _FeaturesFirst(), 4, 3, stride=2)
    with torch.no_grad(), pytest.raises(ValueError, match=r"shape \(3, 4\).*expected \(4, 3\)"):
        field.features([[0, 0, 0], [1, 2, 3], [4, 4, 4], [3, 1, 0]])
    with torch.no_grad(), pytest.raises(ValueError, match=r"expected \(\d+, 3\)"):
        _embedding(_FeaturesFirst())([torch.rand(10, 10, 10)])


def test_an_encode_callable_returning_features_first_is_refused():
    encoder = _FeaturesFirst()
    field = EncodedTensor(torch.rand(10, 10, 10), encoder, 4, 3, stride=2, encode=encoder)
    with torch.no_grad(), pytest.raises(ValueError, match=r"shape \(3, 2\).*expected \(2, 3\)"):
        field.features([[0, 0, 0], [1, 2, 3]])


def test_an_encoder_with_trailing_unit_axes_is_accepted():
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 3, 4)  # no Flatten: (m, 3, 1, 1, 1)
    positions = [[0, 0, 0], [1, 2, 3], [4, 4, 4]]
    volume = torch.rand(10, 10, 10)
    with torch.no_grad():
        got = EncodedTensor(volume, conv, 4, 3, stride=2).features(positions)
        want = EncodedTensor(volume, nn.Sequential(conv, nn.Flatten()), 4, 3,
                             stride=2).features(positions)
    assert torch.equal(got, want)


# --- 3: DenseEmbedding's border follows each convolution's kernel, per axis ----------------

def _mean_over_voxels(volume, conv, pads):
    """The mean of a convolution's outputs at the voxels of a volume padded by ``pads``."""
    padded = np.pad(volume, pads, mode="reflect")
    with torch.no_grad():
        local = conv(torch.as_tensor(padded)[None, None])
    assert tuple(local.shape[2:]) == volume.shape  # one position per voxel
    return local.mean(dim=(2, 3, 4))[0]


@pytest.mark.parametrize("kernel, dilation, pads", [
    ((3, 1, 1), 1, ((1, 1), (0, 0), (0, 0))),
    ((1, 2, 3), 1, ((0, 0), (0, 1), (1, 1))),
    (3, (2, 1, 1), ((2, 2), (1, 1), (1, 1))),
])
def test_dense_embedding_averages_over_every_voxel_for_any_kernel(kernel, dilation, pads):
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 2, kernel, dilation=dilation).double()
    encoder = nn.Sequential(conv, nn.AdaptiveAvgPool3d(1), nn.Flatten())
    volume = _volume((9, 8, 7), dtype=np.float64)
    with torch.no_grad():
        features = DenseEmbedding(encoder)([volume])[0]
    torch.testing.assert_close(features, _mean_over_voxels(volume, conv, pads))


@pytest.mark.parametrize("layer, message", [
    (nn.Conv3d(1, 2, 3, padding=1), "padding"),
    (nn.Conv3d(1, 2, 3, padding="same"), "padding"),
    (nn.Conv3d(1, 2, 3, stride=2), "stride"),
    (nn.Sequential(nn.Conv3d(1, 2, 3, padding=1)), r"encoder\[0\]\[0\]"),
    (nn.MaxPool3d(2), "cannot run over the whole volume"),
])
def test_dense_embedding_refuses_layers_its_border_cannot_follow(layer, message):
    encoder = nn.Sequential(nn.Conv3d(1, 1, 1), layer, nn.AdaptiveAvgPool3d(1), nn.Flatten())
    if isinstance(layer, nn.Sequential):
        encoder = nn.Sequential(layer, nn.AdaptiveAvgPool3d(1), nn.Flatten())
    with pytest.raises(ValueError, match=message):
        DenseEmbedding(encoder)


# --- 4: the feature cache sees a swapped parameter-free layer ------------------------------

def test_encoded_tensor_cache_sees_a_swapped_activation():
    torch.manual_seed(0)
    encoder = default_encoder(3, 2, width=2)
    field = EncodedTensor(torch.rand(6, 6, 6), encoder, 3, 2, stride=2)
    with torch.no_grad():
        field.features([[1, 1, 1]])
        encoder[1] = nn.ReLU()  # was GELU
        served = field.features([[1, 1, 1]])
        fresh = encoder(field.patches.patches([[1, 1, 1]]))
    assert torch.equal(served, fresh)


# --- 6: big-endian volumes in memory ----------------------------------------------------------

def test_big_endian_volumes_give_the_features_of_native_ones():
    native = _volume((10, 10, 10))
    swapped = native.astype(native.dtype.newbyteorder(">" if np.little_endian else "<"))
    torch.manual_seed(0)
    encoder = default_encoder(4, 3, width=2, pooled=True)
    assert torch.equal(PatchGrid(swapped, 4, 2).patches([[1, 2, 3]]),
                       PatchGrid(native, 4, 2).patches([[1, 2, 3]]))
    with torch.no_grad():
        for embedding in (_embedding(encoder), DenseEmbedding(encoder)):
            assert torch.equal(embedding([swapped]), embedding([native]))


# --- 7: an encoder built for larger patches gets a hint, not torch's conv error -------------

def test_an_encoder_for_larger_patches_says_what_it_needs():
    with torch.no_grad(), pytest.raises(ValueError,
                                        match=r"patch_size=4.*at least \(5, 5, 5\) voxels"):
        _embedding(default_encoder(5, 3, width=2))([torch.rand(10, 10, 10)])


# --- 9: DenseEmbedding reflects a volume no larger than its border, as PatchGrid does -------

@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 3, 4)])
def test_dense_reflect_on_a_small_volume_matches_every_patch(shape):
    torch.manual_seed(0)
    encoder = default_encoder(6, 2, width=2).double()
    volume = torch.as_tensor(_volume(shape, dtype=np.float64))
    every_patch = PatchGrid(volume, 6).patches(list(np.ndindex(*shape)), dtype=torch.float64)
    with torch.no_grad():
        features = DenseEmbedding(encoder, padding="reflect")([volume])[0]
        want = encoder(every_patch).mean(dim=0)
    torch.testing.assert_close(features, want)


# --- 10: a PCA refit on TTs of a new shape starts afresh, whatever their number --------------

def _tts(shape, count, seed):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, shape[0], 2, generator=generator, dtype=torch.float64),
             torch.randn(2, shape[1], 2, generator=generator, dtype=torch.float64),
             torch.randn(2, shape[2], 1, generator=generator, dtype=torch.float64)]
            for _ in range(count)]


@pytest.mark.parametrize("count", [4, 5])
def test_pca_refit_on_a_new_shape_is_a_fresh_fit(count):
    new = _tts((6, 4, 3), count, seed=1)
    refit = TTPCAHead(2).fit(_tts((5, 4, 3), 4, seed=0)).fit(new)
    fresh = TTPCAHead(2).fit(new)
    assert torch.equal(refit(new[0]), fresh(new[0]))


# --- minor: the boundary ranks are checked before any clipping warning -----------------------

@pytest.mark.parametrize("rank, method", [([2, 3, 3, 2], "block"), ([2, 3, 3, 1], "block"),
                                          ([1, 3, 3, 3, 2], "als")])
def test_rank_boundary_entries_are_checked_by_the_constructor(rank, method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no clipping warning first
        with pytest.raises(ValueError, match=r"rank must be a list.*1 \(method="):
            _embedding(default_encoder(4, 3, width=2), rank=rank, method=method)
