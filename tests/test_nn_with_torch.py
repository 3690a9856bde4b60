"""Tests of the tensorly_cross.nn module: embeddings, encoders, heads, datasets and training
(needing PyTorch)."""

import copy
import pickle
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorly as tl  # noqa: E402

import tensorly_cross as tlc  # noqa: E402
from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    DenseEmbedding,
    LockstepEncoder,
    VolumeDataset,
    default_encoder,
    mni152_crops,
)
from tensorly_cross.nn.training import Regressor  # noqa: E402

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
    # the features changed from run to run (tests/test_nn_under_pytorch.py).
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


def _function(theta):
    """A function tensor whose entries depend on the parameter ``theta`` (2 entries)."""
    def entries(indices):
        x = torch.as_tensor(indices, dtype=torch.float64)
        return torch.exp(-theta[0] * x[:, 0] / 6) * torch.cos(theta[1] * x[:, 1] / 5 + x[:, 2] / 7)

    return tlc.FunctionTensor(entries, (6, 5, 7))


@pytest.mark.parametrize("method", ["als", "tci", "lsq"])
def test_a_cached_tensor_passes_the_gradient_to_the_function_parameters(method):
    options = dict(rank=3, method=method, random_state=0, tol=0.0, n_iter_max=3)
    with tl.backend_context("pytorch"):
        expected = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
        tlc.tt_cross(_function(expected), differentiable=True, **options).to_tensor().sum() \
            .backward()
        theta = expected.detach().clone().requires_grad_(True)
        cache = tlc.EvaluationCache(_function(theta))
        tt = tlc.tt_cross(cache, differentiable=True, **options)
        assert all(core.requires_grad for core in tt)
        tt.to_tensor().sum().backward()
        torch.testing.assert_close(theta.grad, expected.grad)

        # the two phases, the search filling the cache without gradient
        theta.grad = None
        with torch.no_grad():
            indices = tlc.select_indices(cache, **options)
        tlc.cross_interpolate(cache, indices).to_tensor().sum().backward()
        torch.testing.assert_close(theta.grad, expected.grad)

        # a training step changed theta: the read with gradient computes the entries anew
        with torch.no_grad():
            theta.mul_(1.1)
        tt = tlc.cross_interpolate(cache, indices)
        fresh = tlc.cross_interpolate(_function(theta.detach()), indices)
        torch.testing.assert_close(tt.to_tensor().detach(), fresh.to_tensor())


def test_a_cached_volume_passes_the_gradient_through_the_patches():
    # The search cached the voxels without gradient; PatchGrid read them back detached, and
    # the volume's .grad stayed None.
    from tensorly_cross.nn import EncodedTensor, default_encoder

    torch.manual_seed(0)
    encoder = default_encoder(3, 2).double()
    raw = torch.rand(5, 6, 7, dtype=torch.float64)
    options = dict(rank=[1, 2, 2, 2, 1], method="als", tol=0.0, n_iter_max=2, random_state=0,
                   differentiable=True)
    gradients = []
    with tl.backend_context("pytorch"):
        for wrap in (tlc.ArrayTensor, lambda v: tlc.EvaluationCache(tlc.ArrayTensor(v))):
            volume = raw.clone().requires_grad_(True)
            field = EncodedTensor(wrap(volume), encoder, 3, 2, stride=2)
            tlc.tt_cross(field, **options).to_tensor().sum().backward()
            assert volume.grad is not None
            gradients.append(volume.grad)
    torch.testing.assert_close(gradients[1], gradients[0])


@pytest.mark.parametrize("method", ["als", "tci", "lsq"])
def test_a_cache_of_values_without_graph_is_read_back_not_recomputed(method):
    # The fix above recomputed every entry of a read with gradient, also where the function
    # gives values without a graph (a NumPy function under the PyTorch backend, grad
    # enabled, as torch runs by default): cross_interpolate of a filled cache, meant as
    # "the cores in one batched read" of what the search read, evaluated them all again.
    grid = np.linspace(1.0, 2.0, 6)
    cache = tlc.EvaluationCache(tlc.FunctionTensor(
        lambda i: 1.0 / grid[i].sum(axis=1), (6, 6, 6, 6)))
    options = dict(rank=3, method=method, random_state=0, tol=0.0, n_iter_max=3)
    with tl.backend_context("pytorch"):
        indices = tlc.select_indices(cache, **options)
        evaluated, calls = cache.counters.unique, cache.counters.calls
        tt = tlc.cross_interpolate(cache, indices)
        # One entry per read, to learn whether fresh values carry a graph (they do not).
        assert cache.counters.unique - evaluated <= cache.counters.calls - calls
        reference = tlc.cross_interpolate(tlc.FunctionTensor(
            lambda i: 1.0 / grid[i].sum(axis=1), (6, 6, 6, 6)), indices)
        for core, expected in zip(tt, reference, strict=True):
            torch.testing.assert_close(core, expected)


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '"crops"'],
                         ids=["list", "not-json", "string"])
def test_a_targets_file_that_is_not_a_manifest_is_refused_by_name(tmp_path, content):
    path = tmp_path / "targets.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="targets.json.*not a manifest"):
        mni152_crops(1, 4, directory=tmp_path)
    assert path.read_text() == content  # the file is left as it was


@pytest.mark.parametrize("in_memory", ["no", 0.0, None])
def test_in_memory_must_be_a_bool(tmp_path, in_memory):
    path = tmp_path / "v.npy"
    np.save(path, np.zeros((3, 3, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="in_memory must be True or False"):
        VolumeDataset([str(path)], [0.0], in_memory=in_memory)


@pytest.mark.parametrize("cache_bytes, error", [("big", TypeError), (-1, ValueError),
                                                (1.5, TypeError)])
def test_cache_bytes_is_checked_when_the_dataset_is_made(cache_bytes, error):
    with pytest.raises(error, match="cache_bytes"):
        VolumeDataset([np.zeros((3, 3, 3))], [0.0], cache_bytes=cache_bytes)


@pytest.mark.parametrize("shuffle", ["no", 1, None])
def test_batches_shuffle_must_be_a_bool(shuffle):
    # "no" is truthy: the items came back shuffled
    data = VolumeDataset([np.zeros((3, 3, 3))] * 4, [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="shuffle must be True or False"):
        next(data.batches(2, shuffle=shuffle))


@pytest.mark.parametrize("volumes", [None, 5])
def test_volumes_that_are_not_a_sequence_are_refused_by_name(volumes):
    # list(None) raised "'NoneType' object is not iterable", naming no argument
    with pytest.raises(TypeError, match="volumes must be a sequence"):
        VolumeDataset(volumes, [0.0])


def _dataset_in_memory(tmp_path, count=6, edge=16):
    paths = []
    for k in range(count):
        path = tmp_path / f"sub-{k:02d}.npy"
        np.save(path, np.random.default_rng(k).random((edge,) * 3).astype(np.float32))
        paths.append(str(path))
    return VolumeDataset(paths, np.arange(count, dtype=np.float32), in_memory=True)


def test_a_pickled_subset_takes_the_volumes_of_its_own_items_only(tmp_path):
    data = _dataset_in_memory(tmp_path)
    for k in range(len(data)):
        data.volume(k)  # every volume read whole, into the store the subsets share
    test = data.subset([4])
    copy = pickle.loads(pickle.dumps(test))
    assert list(copy._loaded) == [test.volumes[0]]
    torch.testing.assert_close(copy.volume(0), data.volume(4), rtol=0, atol=0)
    volume_bytes = 16**3 * 4
    assert len(pickle.dumps(test)) < 2 * volume_bytes  # one volume, not six


def test_a_pickled_dataset_still_shares_the_store_among_its_own_copies(tmp_path):
    data = _dataset_in_memory(tmp_path, count=3)
    train, test = data.subset([0, 1]), data.subset([2])
    train.volume(0)
    copy = pickle.loads(pickle.dumps(data))
    assert list(copy._loaded) == [data.volumes[0]]
    assert copy.subset([0])._loaded is copy._loaded  # the copy's subsets share its store
    assert test._loaded is data._loaded  # the original's are untouched


@pytest.mark.parametrize("targets", [np.array([1, 3]), [1, 3], torch.tensor([1, 3])])
def test_set_target_scale_takes_integer_targets(targets):
    model = Regressor(CrossEmbedding(n_outputs=2), 2)
    model.set_target_scale(targets)
    assert model.target_mean.tolist() == [2.0]
    assert model.target_scale.tolist() == pytest.approx([2**0.5])


def test_set_target_scale_refuses_complex_targets():
    model = Regressor(CrossEmbedding(n_outputs=2), 2)
    with pytest.raises(TypeError, match="targets must be real"):
        model.set_target_scale(np.array([1 + 1j, 3.0]))
    assert model.target_mean.tolist() == [0.0]


def _mask_of_seed(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(2, 9, size=rng.integers(2, 5)))
    return (rng.random(shape) > 0.7).astype(float)


# Before: once a sweep read the last entries of this 3x4x3x8 mask, the best state (sweep 3)
# and the current one (sweep 4) were measured over every entry: the current one was better
# (0.6471 against 0.6536), but only the best one was kept as such, so sweep 5 (0.6517)
# replaced it and was returned, sweep 4's better TT lost.
def test_the_state_measured_better_when_the_tensor_is_read_whole_is_kept_as_the_best():
    import tensorly as tl

    import tensorly_cross as tlc

    dense = _mask_of_seed(152)
    assert dense.shape == (3, 4, 3, 8)
    tt, info = tlc.tt_cross(dense, method="lsq", tol=0.01, val_size=4, max_rank=4,
                            random_state=152, return_info=True)
    assert info.n_evals == dense.size
    exact = info.val_errors[2:]  # sweeps 3 on: the held ones, measured again, and later
    assert info.val_error == min(exact)
    approx = tl.to_numpy(tl.tt_to_tensor(tt))
    true = np.linalg.norm(approx - dense) / np.linalg.norm(dense)
    assert abs(info.val_error - true) <= 1e-12


def test_set_target_scale_takes_targets_that_require_grad_as_data():
    model = Regressor(CrossEmbedding(n_outputs=2), 2)
    ages = torch.tensor([30.0, 40.0, 50.0], requires_grad=True)
    model.set_target_scale(ages * 1.0)  # a tensor of a graph
    assert model.target_mean.grad_fn is None and not model.target_mean.requires_grad
    assert model.target_scale.grad_fn is None and not model.target_scale.requires_grad
    assert model.target_mean.tolist() == [40.0]
    assert model.target_scale.tolist() == pytest.approx([10.0])
    copied = copy.deepcopy(model)  # refused for buffers in a graph
    assert copied.target_mean.tolist() == [40.0]
    assert ages.grad is None


def test_set_target_scale_refuses_targets_whose_statistics_overflow_the_buffers():
    # Before: finite float64 targets beyond float32 gave a mean and a scale of inf in the
    # float32 buffers, and so every prediction.
    model = Regressor(CrossEmbedding(n_outputs=2), 2)
    with pytest.raises(ValueError, match="overflows torch.float32"):
        model.set_target_scale(np.array([1e39, 3e39]))
    assert model.target_mean.tolist() == [0.0] and model.target_scale.tolist() == [1.0]
    model.double().set_target_scale(np.array([1e39, 3e39]))  # a float64 model holds them
    assert model.target_mean.tolist() == [2e39]


def _mask_719():
    rng = np.random.default_rng(719)
    shape = tuple(int(x) for x in rng.integers(2, 9, size=rng.integers(2, 5)))
    return (rng.random(shape) > 0.7).astype(float)


def test_tci_stalls_on_ranks_going_back_and_forth_once_its_errors_are_exact():
    import tensorly as tl

    import tensorly_cross as tlc

    dense = _mask_719()
    assert dense.shape == (7, 2, 4)
    tt, info = tlc.tt_cross(dense, method="tci", tol=0.01, val_size=10, max_rank=4,
                            random_state=719, return_info=True)
    assert info.n_evals == dense.size  # read whole: the errors are exact
    # Before: 50 sweeps ("n_iter_max"), ranks (4, 4), (4, 3), (4, 4), ... at 0.5145.
    assert info.stop_reason == "stalled" and info.n_sweeps < 10
    # Not worse than after 50 sweeps (0.4851, sweep 3): here the refinement over the last
    # sweeps' fibers, then run, lowers it (0.4310).
    assert info.val_error <= 0.48507126
    approx = tl.to_numpy(tl.tt_to_tensor(tt))
    assert np.linalg.norm(approx - dense) / np.linalg.norm(dense) == pytest.approx(
        info.val_error, rel=1e-9)


def test_a_miss_beyond_float64_at_the_data_s_scale_is_named_not_raised():
    import warnings

    from tensorly_cross import FunctionTensor
    from tensorly_cross.cross.scaling import ShrunkTensor
    from tensorly_cross.cross.stopping import Validation
    from tensorly_cross.errors import UnseenStructureWarning
    from tensorly_cross.lazy.cache import EvaluationCache

    from ._helpers_shared import ones_with

    shape = (40, 40, 40)

    # Ones and one entry of 40, near float64's top (2**1021.3).
    corner = ones_with({39: 40.0}, scale=2.0**1016)

    cache = EvaluationCache(ShrunkTensor(FunctionTensor(corner, shape)))
    validation = Validation(cache, 1000, np.random.default_rng(0), tol=0.1)
    cache.evaluate(np.array([[39, 39, 39]]))
    one = validation.max_abs  # a data 1 * 2**1016, at the scale the cross ran at
    # The TT of -300 there: it misses the corner by 340 * 2**1016, past float64.
    cores = [np.full((1, n, 1), -300.0 * one if k == 0 else 1.0) for k, n in enumerate(shape)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(0.0, cores=cores)  # before: OverflowError
    messages = [str(w.message) for w in caught if w.category is UnseenStructureWarning]
    assert len(messages) == 1
    assert f"(39, 39, 39), {40 * 2.0**1016:.3g}, and the TT missed by inf" in messages[0]
