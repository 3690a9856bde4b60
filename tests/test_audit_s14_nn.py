"""Audit of tensorly_cross.nn (session 14): the dense baseline's batches (a complex volume
silently lost its imaginary part, an empty batch failed deep inside torch), the lockstep
encoder with no patch to encode, and the arguments of the public constructors that failed
inside torch or int() without naming themselves."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    DenseEmbedding,
    LockstepEncoder,
    default_encoder,
)

# --- DenseEmbedding: batches ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tensor", "array"])
def test_the_dense_embedding_refuses_a_complex_volume_by_name(kind):
    # Cast to the encoder's dtype, its imaginary part was dropped with only torch's
    # warning, and features of the real part came back (CrossEmbedding refuses it).
    volume = torch.rand(5, 5, 5, dtype=torch.complex64)
    volume = volume if kind == "tensor" else volume.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the refusal, not torch's ComplexWarning
        with pytest.raises(TypeError, match="volume 1 of the batch is complex"):
            DenseEmbedding(default_encoder(3, 2))([torch.rand(5, 5, 5), volume])


@pytest.mark.parametrize("volumes", [[], (), torch.zeros(0, 1, 4, 4, 4)])
def test_the_dense_embedding_refuses_an_empty_batch_by_name(volumes):
    # torch.stack raised "stack expects a non-empty TensorList".
    with pytest.raises(ValueError, match="volumes is empty"):
        DenseEmbedding(default_encoder(3, 2))(volumes)


@pytest.mark.parametrize(("volumes", "message"), [
    ("scan.nii", "volumes must be a tensor of shape"),
    (None, "volumes must be a tensor of shape"),
    (5, "volumes must be a tensor of shape"),
    ([np.zeros((4, 4, 4)), "scan.nii"], "volume 1 of the batch must be a tensor or an array"),
    ([np.zeros((4, 4, 4), dtype=object)], "volume 0 of the batch must be a tensor or an array"),
])
def test_the_dense_embedding_names_what_is_not_a_batch_of_volumes(volumes, message):
    # torch's "can't convert np.ndarray of type numpy.str_" or "'NoneType' object is not
    # iterable" named neither the argument nor the volume.
    with pytest.raises(TypeError, match=message):
        DenseEmbedding(default_encoder(3, 2))(volumes)


def test_the_dense_embedding_still_reads_arrays_and_tuples_of_volumes():
    torch.manual_seed(0)
    model = DenseEmbedding(default_encoder(3, 2))
    volumes = [torch.rand(5, 5, 5, generator=torch.Generator().manual_seed(k))
               for k in range(2)]
    expected = model(volumes)
    as_arrays = model(tuple(v.numpy().astype(">f4") for v in volumes))
    torch.testing.assert_close(as_arrays, expected)
    torch.testing.assert_close(model(torch.stack(volumes)[:, None]), expected)


# --- LockstepEncoder ---------------------------------------------------------------------


def test_lockstep_encodes_no_patch_to_no_features():
    # torch.cat([]) raised "expected a non-empty list of Tensors".
    lockstep = LockstepEncoder(default_encoder(3, 2), n_features=2, max_batch=16)
    empty = torch.zeros(0, 1, 3, 3, 3)
    assert tuple(lockstep.encode(empty).shape) == (0, 2)
    first, second = lockstep.run([lambda: lockstep.encode(empty)] * 2)
    assert tuple(first.shape) == tuple(second.shape) == (0, 2)
    assert lockstep.n_calls == 0


def test_lockstep_mixes_runs_without_patches_and_runs_with_them():
    encoder = default_encoder(3, 2)
    lockstep = LockstepEncoder(encoder, n_features=2, max_batch=16)
    patches = torch.rand(3, 1, 3, 3, 3)
    empty, full = lockstep.run([lambda: lockstep.encode(patches[:0]),
                                lambda: lockstep.encode(patches)])
    assert tuple(empty.shape) == (0, 2)
    torch.testing.assert_close(full, encoder(patches))


@pytest.mark.parametrize(("options", "error", "name"), [
    (dict(max_batch=None), TypeError, "max_batch"),
    (dict(max_batch="64"), TypeError, "max_batch"),
    (dict(max_batch=2.5), TypeError, "max_batch"),
    (dict(max_batch=0), ValueError, "max_batch"),
    (dict(n_features=None), TypeError, "n_features"),
    (dict(n_features=0), ValueError, "n_features"),
])
def test_lockstep_names_a_bad_argument(options, error, name):
    # None and "64" failed inside int() ("int() argument must be ..."), naming nothing.
    arguments = {"n_features": 2, "max_batch": 4, **options}
    with pytest.raises(error, match=name):
        LockstepEncoder(default_encoder(3, 2), **arguments)


def test_lockstep_takes_a_numpy_int_max_batch():
    lockstep = LockstepEncoder(default_encoder(3, 2), np.int64(2), np.int64(8))
    assert (lockstep.max_batch, lockstep.n_features) == (8, 2)


# --- default_encoder ---------------------------------------------------------------------


@pytest.mark.parametrize(("arguments", "error", "name"), [
    (dict(patch_size=None, n_features=2), TypeError, "patch_size"),
    (dict(patch_size="5", n_features=2), TypeError, "patch_size"),
    (dict(patch_size=5.0, n_features=2), TypeError, "patch_size"),
    (dict(patch_size=5, n_features=None), TypeError, "n_features"),
    (dict(patch_size=5, n_features=2.0), TypeError, "n_features"),
    (dict(patch_size=5, n_features=0), ValueError, "n_features"),
    (dict(patch_size=5, n_features=2, width=None), TypeError, "width"),
    (dict(patch_size=5, n_features=2, width=0), ValueError, "width"),
])
def test_default_encoder_names_a_bad_argument(arguments, error, name):
    # Each failed deep inside torch's Conv3d ("'<' not supported between 'NoneType' and
    # 'int'", "empty(): argument 'size' ..."); n_features=0 built an encoder of 0 features.
    with pytest.raises(error, match=name):
        default_encoder(**arguments)


@pytest.mark.parametrize("pooled", [False, True])
def test_default_encoder_still_takes_numpy_ints(pooled):
    encoder = default_encoder(np.int64(4), np.int32(3), width=np.int16(5), pooled=pooled)
    assert tuple(encoder(torch.zeros(2, 1, 4, 4, 4)).shape) == (2, 3)


@pytest.mark.parametrize("kwargs, error", [
    (dict(oversample=0.5), ValueError), (dict(oversample="2"), TypeError),
    (dict(oversample=float("nan")), ValueError), (dict(random_state=-1), ValueError),
    (dict(random_state="seed"), TypeError), (dict(random_state=1.5), TypeError)])
def test_cross_embedding_checks_oversample_and_random_state_when_built(kwargs, error):
    # Both were checked only by the first forward pass's index search.
    name = next(iter(kwargs))
    with pytest.raises(error, match=name):
        CrossEmbedding(**kwargs)


def test_cross_embedding_takes_one_seed_from_a_generator():
    # Kept as given, one generator was shared by the threads of a batch's searches, and
    # the features changed from run to run (audit s20, tests/test_audit_s20_nn.py).
    seeds = [CrossEmbedding(random_state=np.random.default_rng(3)).random_state
             for _ in range(2)]
    assert isinstance(seeds[0], int) and seeds[0] == seeds[1]


@pytest.mark.parametrize("n_volumes, size, error", [
    (None, 8, TypeError), (2, "8", TypeError), (True, 8, TypeError),
    (2, float("inf"), ValueError), (2, 8.5, ValueError), (0, 8, ValueError)])
def test_mni152_crops_checks_its_counts_by_name(n_volumes, size, error):
    # None failed inside int() ("int() argument must be ..."), True passed as 1, and inf
    # raised an OverflowError.
    from tensorly_cross.nn.mni152 import mni152_crops

    name = "n_volumes" if not isinstance(n_volumes, int) or n_volumes < 1 or \
        isinstance(n_volumes, bool) else "size"
    with pytest.raises(error, match=name):
        mni152_crops(n_volumes, size)


def test_cross_embedding_still_takes_oversample_none():
    # None (the method's default, as select_indices takes it) worked before the checks.
    assert CrossEmbedding(oversample=None).oversample is None
