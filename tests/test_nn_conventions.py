"""tensorly_cross.nn follows torch.nn's conventions: complete state at construction, state
that round-trips into a fresh module, buffers for fitted state, one warning per module,
device and dtype that follow the module."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorly_cross as tlc  # noqa: E402
from tensorly_cross.nn import CrossEmbedding, TTPCAHead  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


pytestmark = pytest.mark.usefixtures("pytorch_backend")


def _volumes(count=3, shape=(8, 8, 8), seed=0):
    rng = np.random.default_rng(seed)
    return [torch.as_tensor(rng.standard_normal(shape), dtype=torch.float32)
            for _ in range(count)]


def _embedding(**options):
    torch.manual_seed(0)
    defaults = dict(patch_size=3, n_features=2, rank=2, n_outputs=3, n_iter_max=2)
    return CrossEmbedding(**dict(defaults, **options))


def test_the_probe_head_exists_at_construction_given_the_volume_shape():
    model = _embedding(volume_shape=(8, 8, 8))
    keys = set(model.state_dict())
    model(_volumes(1))
    assert set(model.state_dict()) == keys
    assert any(key.startswith("head.cores.") for key in keys)
    strided = _embedding(volume_shape=(9, 8, 7), stride=2, layout="quantics")
    assert strided.head.shape == strided.tt_shape((5, 4, 4))


@pytest.mark.parametrize("volume_shape", [(8, 8, 8), None])
def test_a_trained_state_loads_into_a_fresh_module_and_gives_the_same_features(volume_shape):
    trained = _embedding(volume_shape=volume_shape)
    volumes = _volumes()
    trained(volumes[:1])  # builds the head when the shape was not given
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    fresh = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=3, n_iter_max=2,
                           volume_shape=volume_shape)
    fresh.load_state_dict(trained.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(volumes), trained(volumes))


def test_the_pca_head_state_is_buffers_and_restores_into_a_fresh_module():
    volumes = _volumes(5)
    fitted = _embedding(head="pca").fit_pca(volumes[:4])
    names = set(dict(fitted.named_buffers()))
    assert {"head.projection", "head.centred_row_means", "head.train_core_0"} <= names
    assert not [name for name, _ in fitted.head.named_parameters()]
    fresh = _embedding(head="pca")
    with pytest.raises(RuntimeError, match="fit"):
        fresh(volumes[:1])
    fresh.load_state_dict(fitted.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(volumes), fitted(volumes))


def test_the_pca_head_moves_with_the_module():
    fitted = _embedding(head="pca").fit_pca(_volumes(4)).double()
    assert all(buffer.dtype == torch.float64 for buffer in fitted.head.buffers())
    features = fitted(_volumes(2))
    assert features.dtype == torch.float64


def test_a_clipped_rank_list_warns_once_per_module_and_an_int_rank_never():
    volumes = _volumes(2)
    # 8^3 grid in quantics: 9 binary digits, whose first bonds cannot hold rank 6.
    listed = _embedding(layout="quantics", rank=[1] + [6] * 8 + [1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listed(volumes)
        listed(volumes)
    clipping = [w for w in caught if "exceeds" in str(w.message)]
    assert len(clipping) == 1 and "once per module" in str(clipping[0].message)
    assert clipping[0].filename == __file__  # the caller's line, not a lockstep thread's
    capped = _embedding(layout="quantics", rank=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capped(volumes)
    assert not [w for w in caught if "exceeds" in str(w.message)]


def test_a_rank_list_of_the_wrong_length_names_the_rank():
    with pytest.raises(ValueError, match="rank must have"):
        _embedding(rank=[1, 2, 1])(_volumes(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_features_and_head_follow_the_module_dtype(dtype):
    model = _embedding(volume_shape=(8, 8, 8)).to(dtype)
    features = model(_volumes(2))
    assert features.dtype == dtype
    lazy_head = _embedding().to(dtype)
    lazy_head(_volumes(1))
    assert all(p.dtype == dtype for p in lazy_head.head.parameters())


def test_bad_head_and_max_batch_are_reported_by_name():
    with pytest.raises(ValueError, match="head"):
        _embedding(head="mean")
    with pytest.raises(TypeError, match="head"):
        _embedding(head=3)
    with pytest.raises(ValueError, match="max_batch"):
        _embedding(max_batch=0)
    with pytest.raises(ValueError, match="n_components"):
        TTPCAHead(0)


@needs_cuda
def test_training_step_runs_on_cuda_with_everything_on_the_device():
    model = _embedding(volume_shape=(8, 8, 8)).cuda()
    volumes = [volume.cuda() for volume in _volumes(2)]
    features = model(volumes)
    assert features.device.type == "cuda"
    features.sum().backward()
    assert all(p.grad is not None and p.grad.device.type == "cuda"
               for p in model.encoder.parameters())


@needs_cuda
def test_cuda_features_equal_cpu_features():
    model = _embedding(volume_shape=(8, 8, 8)).double()
    volumes = [volume.double() for volume in _volumes(2)]
    with torch.no_grad():
        expected = model(volumes)
        model.cuda()
        on_device = model([volume.cuda() for volume in volumes])
    torch.testing.assert_close(on_device.cpu(), expected)


@needs_cuda
def test_pca_state_saved_on_cuda_loads_on_cpu():
    fitted = _embedding(head="pca").cuda().fit_pca([v.cuda() for v in _volumes(4)])
    fresh = _embedding(head="pca")
    fresh.load_state_dict({k: v.cpu() for k, v in fitted.state_dict().items()})
    assert fresh.head.projection.device.type == "cpu"


def test_kept_patches_follow_a_change_of_dtype():
    model = _embedding(volume_shape=(8, 8, 8), refresh_every=3)
    volumes = _volumes(2)
    model(volumes, keys=["a", "b"])
    model.double()
    features = model([v.double() for v in volumes], keys=["a", "b"])
    assert features.dtype == torch.float64


@pytest.mark.parametrize("option", ["patch_size", "n_features", "stride", "n_outputs",
                                    "refresh_every", "n_iter_max", "probe_rank", "rank"])
def test_non_positive_sizes_are_reported_by_name(option):
    with pytest.raises(ValueError, match=f"{option} must be >= 1"):
        _embedding(**{option: 0})
    with pytest.raises(TypeError, match=option):
        _embedding(**{option: 2.5})
    with pytest.raises(ValueError, match=r"rank\[1\] must be >= 1"):
        _embedding(rank=[1, 0, 1])


@pytest.mark.parametrize("arguments, message", [
    (dict(keys=["a"]), "keys must have one entry per volume"),
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(batch_size=2.5), "batch_size must be a positive int"),
])
def test_fit_pca_refuses_bad_keys_and_batch_sizes_naming_the_argument(arguments, message):
    with pytest.raises(ValueError, match=message):
        _embedding(head="pca").fit_pca(_volumes(3), **arguments)


def test_keys_given_as_tensors_match_by_value():
    # A DataLoader yields its indices as a tensor: each key must still find its entry.
    model = _embedding(refresh_every=100)
    volumes = _volumes(2)
    with torch.no_grad():
        for _ in range(3):
            model(volumes, keys=torch.tensor([0, 1]))
    assert model.counters["searches"] == 2 and len(model._indices) == 2
    with pytest.raises(TypeError, match="each key must be one value"):
        model(volumes, keys=[torch.tensor([0, 1]), 2])


def test_another_volume_under_a_kept_key_is_read_from_itself():
    # An augmented crop, or another dataset's volume at the same position, under a key whose
    # patches were kept: its features are its own (they were the first volume's before).
    model = _embedding(refresh_every=100)
    first, second = _volumes(2)
    with torch.no_grad():
        model([first], keys=[0])
        kept = model([second], keys=[0])  # the indices of key 0, the patches of `second`
        indices = model._indices[0][0]
        lazy = model.encoded(second)
        expected = model.head(list(tlc.cross_interpolate(lazy, indices)))
    torch.testing.assert_close(kept[0], expected)


def test_fit_starts_from_no_kept_keys():
    from tensorly_cross.nn import VolumeDataset
    from tensorly_cross.nn.training import Regressor, fit

    model = Regressor(_embedding(refresh_every=100, volume_shape=(8, 8, 8)), 3)
    model.embedding([torch.zeros(8, 8, 8)], keys=[0])  # a pass of someone else's data
    train = VolumeDataset(_volumes(4), np.arange(4.0))
    fit(model, train, epochs=1, batch_size=2)
    assert model.embedding.counters["searches"] == 1 + 4  # every volume searched afresh


def test_a_forward_pass_runs_under_cpu_autocast():
    # autocast("cpu") computes in bfloat16, which NumPy has no dtype for: the search's host
    # copies raised "unsupported ScalarType BFloat16" before.
    model = _embedding()
    with torch.autocast("cpu"):
        features = model(_volumes(2))
    assert features.shape == (2, 3) and torch.isfinite(features.float()).all()


@pytest.mark.parametrize("layout", ["tt", "quantics"])
def test_a_volume_of_another_shape_is_refused_before_any_search(layout):
    # (16, 16, 8) against a head for (8, 16, 16): in the quantics layout both grids have the
    # same digits, and the probes read a permuted grid without a word before.
    model = _embedding(layout=layout, stride=2)
    model(_volumes(1, shape=(8, 16, 16)))
    for batch in ([_volumes(1, shape=(16, 16, 8))[0]],
                  _volumes(1, shape=(8, 16, 16)) + _volumes(1, shape=(8, 8, 8))):
        searches = model.counters["searches"]
        with pytest.raises(ValueError, match="one module takes one volume shape"):
            model(batch)
        assert model.counters["searches"] == searches
    with pytest.raises(ValueError, match="volumes is empty"):
        model([])


def test_a_pca_state_loads_in_the_module_s_own_dtype():
    fitted = _embedding(head="pca").double().fit_pca([v.double() for v in _volumes(4)])
    fresh = _embedding(head="pca")  # float32, like every tensor load_state_dict copies into
    fresh.load_state_dict(fitted.state_dict())
    assert all(buffer.dtype == torch.float32 for buffer in fresh.head.buffers())
    with torch.no_grad():
        torch.testing.assert_close(fresh(_volumes(2)).double(), fitted(_volumes(2)),
                                   rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("module_patch, encoder_options, message", [
    (3, dict(patch_size=3, n_features=3), r"returned shape \(\d+, 3\)"),
    (5, dict(patch_size=3, n_features=2), r"patches of shape \(1, 5, 5, 5\)")])
def test_an_encoder_that_does_not_fit_the_module_is_named(module_patch, encoder_options,
                                                          message):
    from tensorly_cross.nn import default_encoder

    model = _embedding(patch_size=module_patch, encoder=default_encoder(**encoder_options))
    with pytest.raises(ValueError, match=message):
        model(_volumes(2))


@pytest.mark.parametrize("layout", ["tt", "quantics"])
def test_nan_in_a_volume_is_named_by_batch_item_grid_position_and_voxel(layout):
    from tensorly_cross import NonFiniteValueError

    volumes = _volumes(3, shape=(16, 16, 16))
    volumes[2][4:12, 4:12, 4:12] = float("nan")
    model = _embedding(layout=layout, stride=2)
    with pytest.raises(NonFiniteValueError, match="grid position") as caught:
        model(volumes, keys=["a", "b", "c"])
    assert "in volume 2 of the batch (key 'c')" in caught.value.__notes__
    centre = [int(n) for n in caught.value.args[0].split("centred at voxel (")[1]
              .split(")")[0].split(",")]
    assert all(4 - 1 <= c <= 11 + 1 for c in centre)  # the patch touches the NaN block


def test_reprs_show_the_settings():
    model = _embedding(volume_shape=(8, 8, 8), layout="quantics")
    text = repr(model)
    assert "patch_size=3" in text and "layout='quantics'" in text and "n_probes=3" in text
    assert repr(TTPCAHead(4)) == "TTPCAHead(n_components=4, fitted=False)"
