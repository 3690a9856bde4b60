"""Mutation audit (s22): streaming, NIfTI writing, the nn layer, the CLI and the drop-in.

Each test below fails on a mutant of the library that the rest of the suite let pass
(the mutant is named in the comment above it); all assert documented behaviour.
"""

import math
import warnings

import numpy as np
import pytest

from tensorly_cross.stream import streaming as streaming_module
from tensorly_cross.stream import streaming_tt_svd


def _exact_rank_one_plus(weight, shape=(9, 8, 7), seed=0):
    """``u1 v1 w1 + weight * u2 v2 w2`` with orthonormal factor pairs: its relative error
    at TT rank 1 is ``weight / sqrt(1 + weight**2)``."""
    rng = np.random.default_rng(seed)
    factors = [np.linalg.qr(rng.standard_normal((n, 2)))[0] for n in shape]
    first = np.einsum("i,j,k->ijk", *(f[:, 0] for f in factors))
    second = np.einsum("i,j,k->ijk", *(f[:, 1] for f in factors))
    return first + weight * second


# -- stream/streaming.py ----------------------------------------------------------------


# Mutant: the middle mode of an odd number of modes never narrowed (``range(d // 2)``):
# the projected core then exceeds its documented budget of 2**24 entries.
@pytest.mark.parametrize("shape", [(2**13, 2**25, 2**13), (2**7, 2**7, 2**25, 2**7, 2**7)])
def test_the_projected_core_fits_its_budget_whatever_the_middle_mode(shape):
    widths = streaming_module._widths(shape, None, None)
    assert math.prod(widths) <= streaming_module.MAX_CORE_ENTRIES
    assert all(1 <= w <= n for w, n in zip(widths, shape, strict=True))


# Mutant: the memory check compares entries, not their 8 bytes each, with the memory.
def test_sketches_needing_more_bytes_than_the_machine_has_are_refused_before_any_read():
    physical = streaming_module._physical_memory()
    if physical is None:
        pytest.skip("the OS does not report its physical memory")
    entries = physical // 4  # 2x the memory in float64, half of it in entries
    with pytest.raises(MemoryError, match="Lower max_width"):
        streaming_module._check_memory((entries,), (entries,))
    streaming_module._check_memory((physical // 16,), (physical // 16,))  # 1/2: fits


# Mutant: the last core takes the whole scale while that rounds it by up to 2**-20 of its
# norm (not a unit roundoff): a volume near the subnormal range then lost 20 bits.
def test_a_volume_near_the_subnormal_range_keeps_full_precision_in_its_cores():
    rng = np.random.default_rng(0)
    shape = (6, 5, 4)
    dense = np.einsum("i,j,k->ijk", *(rng.integers(1, 64, n).astype(float) for n in shape))
    exponent = -1060
    tt = streaming_tt_svd(np.ldexp(dense, exponent), tol=1e-12, random_state=0)
    cores = [np.asarray(core) for core in tt.factors]
    # Undo the scale on the last core: exact where the cores kept every bit.
    cores[-1] = np.ldexp(cores[-1], -exponent)
    back = np.einsum("aib,bjc,ckd->ijk", *cores)
    assert np.linalg.norm(back - dense) <= 1e-13 * np.linalg.norm(dense)


# Mutant: ``max_rank`` named as what lowered a fixed rank when it equals the rank asked
# for (``>=``): the volume's own rank lowered it.
def test_a_fixed_rank_lowered_by_the_volume_does_not_blame_an_equal_max_rank():
    volume = np.zeros((5, 4, 3))  # two nonzero fibers: TT ranks (1, 2, 2, 1), exactly
    volume[0, 0], volume[1, 1] = [1.0, 2.0, 3.0], [1.0, 0.0, 2.0]
    with pytest.warns(UserWarning, match="lowered by") as record:
        tt = streaming_tt_svd(volume, rank=3, max_rank=3, random_state=0)
    assert tt.rank == (1, 2, 2, 1)
    message = str(record[0].message)
    assert "volume's own ranks" in message and "max_rank" not in message


# Mutant: a run warns (and sets ``limited_by``) only beyond twice ``tol``.
def test_an_error_between_tol_and_twice_tol_is_reported_as_a_miss():
    volume = _exact_rank_one_plus(0.1)  # error 0.0995 at rank 1
    with pytest.warns(UserWarning, match=r"relative error 0.0995 > tol=0.07"):
        tt, info = streaming_tt_svd(volume, tol=0.07, max_rank=1, random_state=0,
                                    return_info=True)
    assert max(tt.rank) == 1
    np.testing.assert_allclose(info.error, 0.1 / math.sqrt(1.01), rtol=1e-9)
    assert info.limited_by == "max_rank"


# -- stream/blocks.py -------------------------------------------------------------------


# Mutant: a block's scale taken from its largest value, not its largest modulus: a block of
# non-positive values whose largest is 0 was taken for an all-zero block and skipped.
def test_a_volume_of_non_positive_values_is_not_taken_for_zero():
    rng = np.random.default_rng(1)
    volume = -np.einsum("i,j,k->ijk", *(rng.random(n) + 0.5 for n in (6, 5, 4)))
    volume[0, 0, 0] = 0.0  # the largest value; the largest modulus is far from 0
    tt, info = streaming_tt_svd(volume, tol=1e-2, random_state=0, return_info=True)
    dense = np.asarray(tt.to_tensor())
    assert np.linalg.norm(dense - volume) <= 2e-2 * np.linalg.norm(volume)
    assert info.error <= 1e-2


# Mutant: sums of squares rescaled by the linear sums' shift when a later block sets a
# larger scale (``2**shift`` instead of ``2**(2 shift)``): ``||A||^2`` came out wrong.
def test_blocks_of_growing_magnitude_sum_their_squares_at_one_scale(tmp_path):
    from tensorly_cross.stream.blocks import map_reduce, plan_blocks, volume_source
    from tensorly_cross.stream.sketch import core_fold, core_start

    rng = np.random.default_rng(2)
    volume = rng.standard_normal((4, 6, 5)) * (10.0 ** np.arange(4))[:, None, None]
    np.save(tmp_path / "volume.npy", volume)
    source = volume_source(tmp_path / "volume.npy", block_bytes=8 * 30)  # slabs of 30 entries
    blocks = plan_blocks(source, block_bytes=8 * 30)
    assert len(blocks) == 4
    bases = [None, None, None]
    # One task: the blocks are added in order, each larger than the ones before.
    sums = map_reduce(source, blocks, core_fold(bases), core_start(volume.shape, bases),
                      n_tasks=1)
    np.testing.assert_allclose(np.ldexp(sums["core"], sums.exponent), volume, rtol=1e-14)
    np.testing.assert_allclose(np.ldexp(sums["squares"][0], 2 * sums.exponent),
                               np.vdot(volume, volume), rtol=1e-13)


# Mutant: a NaN named by its place in its block, not in the volume.
def test_a_nan_in_a_later_block_is_named_by_its_multi_index_in_the_volume(tmp_path):
    from tensorly_cross import NonFiniteValueError

    volume = np.ones((4, 6, 5))
    volume[3, 2, 1] = np.nan
    np.save(tmp_path / "volume.npy", volume)
    with pytest.raises(NonFiniteValueError, match=r"\(3, 2, 1\)") as caught:
        streaming_tt_svd(str(tmp_path / "volume.npy"), tol=1e-3, block_bytes=8 * 30)
    assert caught.value.index == (3, 2, 1)


# -- decomposition.py -------------------------------------------------------------------


def _counting_tensor(shape, seed=0, noise=None):
    """A full-rank tensor (``noise``: a rank-2 tensor plus that much noise) behind a function
    that counts the entries it is asked for."""
    from tensorly_cross import FunctionTensor

    rng = np.random.default_rng(seed)
    dense = rng.standard_normal(shape)
    if noise is not None:
        low = np.einsum("ir,jr,kr->ijk", *(rng.standard_normal((n, 2)) for n in shape))
        dense = low + noise * dense
    asked = []

    def function(indices):
        asked.append(len(indices))
        return dense[tuple(np.asarray(indices).T)]

    return FunctionTensor(function, shape), asked


def _entries_asked(runs, noise=None):
    """Entries each run (name -> callable of the tensor) asks of a fresh counting tensor
    (20^3, NumPy backend, warnings silenced)."""
    import tensorly as tl

    counts = {}
    for name, run in runs.items():
        tensor, asked = _counting_tensor((20, 20, 20), noise=noise)
        with tl.backend_context("numpy"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run(tensor)
        counts[name] = sum(asked)
    return counts


# Mutant: ``n_iter_max`` passed on as the number of sweeps, not of sweep pairs (TensorLy's
# iteration is one left-to-right and one right-to-left pass).
def test_tensor_train_cross_iterations_are_pairs_of_sweeps():
    from tensorly_cross import tensor_train_cross, tt_cross

    counts = _entries_asked({
        "pairs": lambda t: tensor_train_cross(t, rank=2, tol=1e-12, n_iter_max=1,
                                              random_state=0),
        "two": lambda t: tt_cross(t, rank=2, tol=1e-12, method="als", n_iter_max=2,
                                  random_state=0, differentiable=True),
        "one": lambda t: tt_cross(t, rank=2, tol=1e-12, method="als", n_iter_max=1,
                                  random_state=0, differentiable=True)})
    assert counts["pairs"] == counts["two"] != counts["one"]


# Mutant: ``random_state=None`` drew fresh entropy instead of NumPy's global RandomState
# (TensorLy's None), so ``np.random.seed`` neither reproduced a run nor was consumed.
def test_tensor_train_cross_none_seed_is_numpys_global_random_state():
    from tensorly_cross import tensor_train_cross

    tensor = np.random.default_rng(3).standard_normal((5, 6, 4))
    runs, after = [], []
    for _ in range(2):
        np.random.seed(7)  # noqa: NPY002 (the legacy global state is what is tested)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs.append(tensor_train_cross(tensor, rank=2, n_iter_max=2))
        after.append(np.random.random())  # noqa: NPY002
    for first, second in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    np.random.seed(7)  # noqa: NPY002
    untouched = np.random.random()  # noqa: NPY002
    assert after[0] == after[1] != untouched  # the run drew from the global state


# Mutant: ``tol`` not passed on (the default 1e-4 used whatever was asked): a rank-2 tensor
# plus 1e-3 noise meets 1e-2 at once, never 1e-4.
def test_tensor_train_cross_stops_at_the_tol_it_is_given():
    from tensorly_cross import tensor_train_cross, tt_cross

    counts = _entries_asked({
        "given": lambda t: tensor_train_cross(t, rank=2, tol=1e-2, n_iter_max=5,
                                              random_state=0),
        "same": lambda t: tt_cross(t, rank=2, tol=1e-2, method="als", n_iter_max=10,
                                   random_state=0, differentiable=True),
        "default": lambda t: tt_cross(t, rank=2, tol=1e-4, method="als", n_iter_max=10,
                                      random_state=0, differentiable=True)}, noise=1e-3)
    assert counts["given"] == counts["same"] != counts["default"]


# -- _reconstruct.py --------------------------------------------------------------------


def _random_tt(shape, rank=2, seed=0):
    rng = np.random.default_rng(seed)
    ranks = [1] + [rank] * (len(shape) - 1) + [1]
    return [rng.standard_normal((ranks[k], n, ranks[k + 1])) for k, n in enumerate(shape)]


def _dense(cores):
    result = np.ones((1, 1))
    for core in cores:
        result = result.reshape(-1, core.shape[0]) @ core.reshape(core.shape[0], -1)
    return result.reshape([core.shape[1] for core in cores])


# Mutant: an index equal to its axis' size taken (it wrapped around to index 0).
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_an_index_one_past_the_end_of_an_axis_is_refused(axis):
    from tensorly_cross._reconstruct import volume_values

    cores = _random_tt((4, 5, 3))
    selection = [slice(None)] * 3
    selection[axis] = cores[axis].shape[1]
    with pytest.raises(IndexError, match=f"outside axis {axis}"):
        volume_values(cores, {}, tuple(selection))
    selection[axis] = -cores[axis].shape[1]  # the first index, counted from the end
    np.testing.assert_allclose(volume_values(cores, {}, tuple(selection)),
                               np.take(_dense(cores), 0, axis=axis), rtol=1e-12)


def _kept_nifti(shape, affine, code=4):
    """What a TT file keeps of a NIfTI input: its affine and base64 header (sform and qform
    code ``code``: 4 is MNI152)."""
    import base64

    nibabel = pytest.importorskip("nibabel")
    image = nibabel.Nifti1Image(np.zeros(shape, dtype=np.float32), affine)
    image.header.set_sform(affine, code=code)
    image.header.set_qform(affine, code=code)
    return dict(affine=np.asarray(affine).tolist(),
                header=base64.b64encode(image.header.binaryblock).decode("ascii"))


# Mutants: a slab's affine moved by its voxel offset in voxels, not through the affine's
# voxel sizes; and the input's sform/qform codes kept only when every axis is offset.
@pytest.mark.parametrize("fixed", [{2: 3}, {0: 1}])
def test_a_nifti_slab_lies_where_it_lay_in_the_volume_in_the_inputs_space(tmp_path, fixed):
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross._reconstruct import write_nifti

    shape = (4, 5, 6)
    affine = np.array([[2.0, 0, 0, -10], [0, 3.0, 0, 5], [0, 0, 1.5, 7], [0, 0, 0, 1]])
    cores = _random_tt(shape)
    metadata = {"shape": list(shape), "nifti": _kept_nifti(shape, affine)}
    path = str(tmp_path / "slab.nii.gz")
    write_nifti(path, cores, metadata, fixed=fixed)
    written = nibabel.load(path)
    (axis, index), = fixed.items()
    offset = np.zeros(3)
    offset[axis] = index
    np.testing.assert_allclose(written.affine[:3, 3], affine[:3, 3] + affine[:3, :3] @ offset)
    np.testing.assert_allclose(written.affine[:3, :3], affine[:3, :3])
    assert int(written.header["sform_code"]) == 4 and int(written.header["qform_code"]) == 4
    np.testing.assert_allclose(np.asarray(written.dataobj),
                               np.take(_dense(cores), [index], axis=axis), rtol=1e-6)


# Mutant: NIfTI-2 from an axis of 32767 voxels, which NIfTI-1's 16-bit fields hold.
def test_an_axis_of_32767_voxels_is_written_as_nifti_1(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross._reconstruct import write_nifti

    cores = _random_tt((32767, 1), rank=1)
    path = str(tmp_path / "long.nii")
    shape, _ = write_nifti(path, cores, {})
    written = nibabel.load(path)
    assert shape == (32767, 1) and int(written.header["sizeof_hdr"]) == 348
    np.testing.assert_allclose(np.asarray(written.dataobj), _dense(cores), rtol=1e-6)


# Mutant: voxels written as float64 by default whatever the cores' dtype.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nifti_voxels_default_to_the_cores_floating_dtype(tmp_path, dtype):
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross._reconstruct import write_nifti

    cores = [core.astype(dtype) for core in _random_tt((4, 3, 5))]
    path = str(tmp_path / "v.nii")
    _, written_dtype = write_nifti(path, cores, {})
    assert written_dtype == np.dtype(dtype)
    assert nibabel.load(path).get_data_dtype() == np.dtype(dtype)


# Mutants: the slower axes of a block cut inside the first axis iterated in C order, not
# NIfTI's Fortran order; and each run cut one voxel short.
@pytest.mark.parametrize("budget", [4, 10, 50])
def test_a_nifti_written_in_blocks_smaller_than_an_axis_holds_the_volume(tmp_path, monkeypatch,
                                                                       budget):
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross import _reconstruct

    monkeypatch.setattr(_reconstruct, "BLOCK_ENTRIES", budget)
    cores = _random_tt((6, 7, 5, 2), rank=3)
    path = str(tmp_path / "v.nii")
    _reconstruct.write_nifti(path, cores, {})
    np.testing.assert_allclose(np.asarray(nibabel.load(path).dataobj), _dense(cores),
                               rtol=1e-5, atol=1e-5)


# -- cli/compress.py --------------------------------------------------------------------


def _smooth_volume_file(tmp_path, shape=(12, 10, 9), dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    grids = [np.linspace(0, 1, n) for n in shape]
    volume = np.exp(-np.add.outer(np.add.outer(grids[0] ** 2, grids[1]), 2 * grids[2] ** 2))
    volume = volume + 1e-2 * rng.standard_normal(shape)
    path = str(tmp_path / "volume.npy")
    np.save(path, volume.astype(dtype))
    return path


# Mutants: --oversample and --max-slices recorded in the file's arguments but not passed on
# to the cross. The command's run is tt_cross's with its settings: the same evaluations.
@pytest.mark.parametrize("flags, options", [
    (["--oversample", "2"], dict(oversample=2.0)),
    (["--max-slices", "1"], dict(max_slices=1)),
])
def test_compress_passes_oversample_and_max_slices_to_the_cross(tmp_path, flags, options):
    import tensorly_cross as tlc
    from tensorly_cross import cli

    path = _smooth_volume_file(tmp_path)
    output = str(tmp_path / "v.tt.npz")
    assert cli.main(["compress", path, "-o", output, "--rank", "3", "--method", "als",
                     "-q", *flags]) == cli.EXIT_OK
    _, metadata = tlc.load_tt(output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, info = tlc.tt_cross(tlc.open_volume(path), rank=3, tol=1e-6, method="als",
                               n_iter_max=20, patience=2, random_state=0, return_info=True,
                               **options)
        _, plain = tlc.tt_cross(tlc.open_volume(path), rank=3, tol=1e-6, method="als",
                                n_iter_max=20, patience=2, random_state=0, return_info=True)
    assert metadata["n_evals"] == info.n_evals != plain.n_evals


# Mutant: a stream run recorded as meeting --tol whatever its error: a run capped by
# --max-rank then exited 0 with stop "tol".
def test_compress_stream_caps_the_ranks_at_max_rank_and_reports_the_miss(tmp_path, capsys):
    import tensorly_cross as tlc
    from tensorly_cross import cli

    path = _smooth_volume_file(tmp_path)
    output = str(tmp_path / "v.tt.npz")
    code = cli.main(["compress", path, "-o", output, "--method", "stream", "--tol", "1e-3",
                     "--max-rank", "1", "-q"])
    tt, metadata = tlc.load_tt(output)
    assert max(core.shape[2] for core in tt) == 1
    assert code == cli.EXIT_TOL_MISSED and metadata["stop_reason"] == "max_rank"
    assert "--tol 1.0e-03 not met" in capsys.readouterr().err


# -- nn/lockstep.py ---------------------------------------------------------------------


# Mutant: the jobs' threads run with gradients on whatever the caller's mode (the index
# searches, run under no_grad, then encoded afresh and cached nothing).
@pytest.mark.usefixtures("pytorch_backend")
@pytest.mark.parametrize("grad", [False, True])
def test_lockstep_jobs_run_in_the_callers_gradient_mode(grad):
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import LockstepEncoder, default_encoder

    lockstep = LockstepEncoder(default_encoder(3, 2), n_features=2, max_batch=64)
    patches = torch.rand(3, 1, 3, 3, 3)

    def job():
        features = lockstep.encode(patches)
        return torch.is_grad_enabled(), features.requires_grad

    with torch.set_grad_enabled(grad):
        results = lockstep.run([job, job])
    assert results == [(grad, grad), (grad, grad)]
    assert lockstep.n_calls == 1 and lockstep.n_patches == 6


# -- nn/encoded.py ----------------------------------------------------------------------


# Mutant: the cache's encoder state without each module's train/eval mode: features cached
# with dropout on (train mode) were served after ``encoder.eval()``.
@pytest.mark.usefixtures("pytorch_backend")
def test_cached_features_are_dropped_when_the_encoder_switches_to_eval_mode():
    torch = pytest.importorskip("torch")
    from torch import nn

    from tensorly_cross.nn import EncodedTensor

    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv3d(1, 4, kernel_size=3), nn.Dropout(0.5), nn.Flatten())
    volume = torch.rand(5, 4, 6)
    field = EncodedTensor(volume, encoder, patch_size=3, n_features=4)
    positions = np.array([[0, 0, 0], [1, 2, 3], [4, 3, 5]])
    with torch.no_grad():
        encoder.train()
        field.features(positions)  # cached, with dropout
        encoder.eval()
        features = field.features(positions)
        expected = encoder(field.patches.patches(positions))
    torch.testing.assert_close(features, expected)


def _small_field(torch, **options):
    from tensorly_cross.nn import EncodedTensor, default_encoder

    torch.manual_seed(0)
    encoder = default_encoder(3, 2)
    volume = torch.rand(6, 5, 7)
    return EncodedTensor(volume, encoder, patch_size=3, n_features=2, **options), encoder


# Mutant: a batch of patches stored when the store was under its budget before it, though
# over it after (``nbytes > max_bytes``).
@pytest.mark.usefixtures("pytorch_backend")
def test_cut_patches_stay_within_patch_cache_bytes():
    torch = pytest.importorskip("torch")
    field, _ = _small_field(torch, patch_cache_bytes=1000)  # a patch: 27 float32, 108 bytes
    with torch.no_grad():
        field.features(np.array([[0, 0, k] for k in range(7)]))  # 756 bytes: kept
        field.features(np.array([[1, 0, k] for k in range(7)]))  # 1512 in all: not kept
    assert field.cut_patches.nbytes == 756


# Mutant: adopted patches keep the budget of the tensor that cut them, not this one's.
@pytest.mark.usefixtures("pytorch_backend")
def test_adopted_patches_grow_within_the_adopting_tensors_budget():
    torch = pytest.importorskip("torch")
    first, _ = _small_field(torch, patch_cache_bytes=0)
    second, _ = _small_field(torch, patch_cache_bytes=10_000)
    second.adopt_patches(first.cut_patches)
    with torch.no_grad():
        second.features(np.array([[0, 0, k] for k in range(5)]))
    assert second.cut_patches is first.cut_patches  # shared, not copied
    assert second.cut_patches.nbytes == 5 * 108


# Mutant: repeated positions in increasing order taken for distinct ones (``diff >= 0``):
# each repeat encoded again ("the encoder runs once per unique position").
@pytest.mark.usefixtures("pytorch_backend")
@pytest.mark.parametrize("grad", [False, True])
def test_repeated_positions_get_their_patches_features(grad):
    torch = pytest.importorskip("torch")
    field, encoder = _small_field(torch)
    positions = np.array([[1, 1, 1], [1, 1, 1], [2, 3, 4], [2, 3, 4], [2, 3, 4]])
    with torch.set_grad_enabled(grad):
        for _ in range(2):  # the second time from the caches
            features = field.features(positions)
            torch.testing.assert_close(features, encoder(field.patches.patches(positions)))
    assert field.n_encoded == (4 if grad else 2)  # with gradient each call encodes afresh


# -- _validation.py ---------------------------------------------------------------------


# Mutant: a RandomState turned into a Generator of one fixed seed (neither its seed nor
# its state mattered).
def test_a_random_state_seeds_the_generator_from_its_own_state():
    from tensorly_cross._validation import check_random_state

    def draws(state):
        return check_random_state(state).random(4)

    first, again = np.random.RandomState(1), np.random.RandomState(1)
    np.testing.assert_array_equal(draws(first), draws(again))  # deterministic
    assert not np.array_equal(draws(np.random.RandomState(1)), draws(np.random.RandomState(2)))
    assert not np.array_equal(draws(first), draws(np.random.RandomState(1)))  # consumed


# Mutants: the stored cores' default dtype: float32 input kept as float64 (``itemsize < 4``),
# int32 input (more digits than float32 holds) stored as float32.
@pytest.mark.parametrize("dtype, stored", [(np.float32, np.float32), (np.float64, np.float64),
                                           (np.int16, np.float32), (np.int32, np.float64)])
def test_compress_stores_cores_in_the_inputs_floating_dtype(tmp_path, dtype, stored):
    import tensorly_cross as tlc
    from tensorly_cross import cli

    volume = np.add.outer(np.add.outer(np.arange(8), np.arange(7)), np.arange(6)) * 100
    path = str(tmp_path / "volume.npy")
    np.save(path, volume.astype(dtype))
    output = str(tmp_path / "v.tt.npz")
    assert cli.main(["compress", path, "-o", output, "--method", "stream", "--tol", "1e-3",
                     "-q"]) == cli.EXIT_OK
    tt, metadata = tlc.load_tt(output)
    assert {np.asarray(core).dtype for core in tt} == {np.dtype(stored)}
    assert metadata["input_dtype"] == np.dtype(dtype).name


# Mutant: a tolerance met by the computed TT but not by its cores rounded to --dtype is
# recorded as met (exit 0): the stored TT misses it.
def test_compress_reports_a_tol_missed_only_by_the_rounding_to_float32(tmp_path):
    import tensorly_cross as tlc
    from tensorly_cross import cli

    rng = np.random.default_rng(5)
    volume = np.einsum("i,j,k->ijk", *(rng.standard_normal(n) for n in (9, 8, 7)))
    path = str(tmp_path / "volume.npy")
    np.save(path, volume)
    output = str(tmp_path / "v.tt.npz")
    code = cli.main(["compress", path, "-o", output, "--method", "stream", "--tol", "1e-10",
                     "--dtype", "float32", "-q"])
    _, metadata = tlc.load_tt(output)
    assert code == cli.EXIT_TOL_MISSED
    assert metadata["stop_reason"] == "dtype" and metadata["error"] > 1e-10
    assert metadata["rounding_error"] > 1e-9


# Mutant: --max-rank accepted beside --rank (the fixed rank ignores it without a word).
def test_compress_refuses_max_rank_with_a_fixed_rank(tmp_path, capsys):
    from tensorly_cross import cli

    path = _smooth_volume_file(tmp_path)
    code = cli.main(["compress", path, "-o", str(tmp_path / "v.tt.npz"), "--rank", "3",
                     "--max-rank", "5", "-q"])
    assert code == cli.EXIT_USAGE
    assert "--max-rank 5 caps the ranks" in capsys.readouterr().err


# Mutant: a scaled NIfTI's dtype taken as the float64 its voxels read back as, not the
# stored integers' (which hold no more precision): float64 cores, twice the file.
def test_compress_stores_a_scaled_int16_nifti_in_float32(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    import tensorly_cross as tlc
    from tensorly_cross import cli

    voxels = np.add.outer(np.add.outer(np.arange(8), np.arange(7)), np.arange(6)).astype(np.int16)
    image = nibabel.Nifti1Image(voxels, np.eye(4))
    image.header.set_slope_inter(0.5, 3.0)
    path = str(tmp_path / "scaled.nii")
    nibabel.save(image, path)
    output = str(tmp_path / "v.tt.npz")
    assert cli.main(["compress", path, "-o", output, "--method", "stream", "--tol", "1e-3",
                     "-q"]) == cli.EXIT_OK
    tt, metadata = tlc.load_tt(output)
    assert metadata["input_dtype"] == "int16"
    assert {np.asarray(core).dtype for core in tt} == {np.dtype(np.float32)}



# -- cli/reconstruct.py -----------------------------------------------------------------


def _tt_file(tmp_path, shape=(6, 5, 4)):
    """A TT file of the CLI, with the dense volume its TT holds."""
    import tensorly_cross as tlc

    cores = _random_tt(shape)
    path = str(tmp_path / "v.tt.npz")
    tlc.save_tt(path, cores, {"shape": list(shape)})
    return path, _dense(cores)


# Mutant: an index equal to the axis' size accepted by --slice (an IndexError later: exit 1
# with a traceback's message instead of the usage error, exit 2).
def test_reconstruct_refuses_a_slice_index_one_past_the_end(tmp_path, capsys):
    from tensorly_cross import cli

    path, _ = _tt_file(tmp_path)
    code = cli.main(["reconstruct", path, "--slice", "0=6", "-o", str(tmp_path / "s.npy")])
    assert code == cli.EXIT_USAGE
    assert "--slice 0=6 is outside shape (6, 5, 4)" in capsys.readouterr().err



# Mutant: an --against volume of another shape compared all the same (its slice at the
# same indices: an error against another volume, reported as the TT's).
def test_reconstruct_refuses_an_against_volume_of_another_shape(tmp_path, capsys):
    from tensorly_cross import cli

    path, _ = _tt_file(tmp_path)
    against = str(tmp_path / "other.npy")
    np.save(against, np.zeros((7, 5, 4)))
    code = cli.main(["reconstruct", path, "--against", against, "-o",
                     str(tmp_path / "s.npy")])
    assert code == cli.EXIT_INPUT
    assert "--against has shape (7, 5, 4), the TT has (6, 5, 4)" in capsys.readouterr().err


# -- cli/summary.py ---------------------------------------------------------------------


# Mutant: a held-out error below --tol that did not pass (its upper 95% bound above tol)
# reported as a plain miss: the message said the error missed tol when the sample met it.
def test_a_miss_whose_sample_met_tol_says_it_was_not_met_with_confidence(capsys):
    from tensorly_cross.cli import EXIT_TOL_MISSED
    from tensorly_cross.cli.summary import outcome

    summary = dict(stop="stalled", val_error=0.08, tol=0.1, exact_error=False,
                   output="v.tt.npz", tt_bytes=10, input_bytes=1000)
    assert outcome(summary, tol_driven=True, accept_miss=False) == EXIT_TOL_MISSED
    err = capsys.readouterr().err
    assert "--tol 1.0e-01 not met with confidence (the upper 95% bound" in err
    summary.update(val_error=0.2)
    outcome(summary, tol_driven=True, accept_miss=False)
    assert "not met: held-out error 2.00e-01" in capsys.readouterr().err


# -- nn/heads.py ------------------------------------------------------------------------


# Mutant: eigenvectors scaled by ``1/eigenvalue``, not ``1/sqrt(eigenvalue)``: the
# coordinates were not the PCA scores (projections on unit principal axes) of the tensors.
@pytest.mark.usefixtures("pytorch_backend")
def test_tt_pca_coordinates_are_the_dense_pca_scores():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import TTPCAHead

    generator = torch.Generator().manual_seed(0)

    def random_tt():
        return [torch.randn(1, 4, 2, generator=generator, dtype=torch.float64),
                torch.randn(2, 3, 2, generator=generator, dtype=torch.float64),
                torch.randn(2, 2, 1, generator=generator, dtype=torch.float64)]

    def dense(tt):
        return np.einsum("aib,bjc,ckd->ijk", *(core.numpy() for core in tt)).ravel()

    tts = [random_tt() for _ in range(6)]
    head = TTPCAHead(n_components=3).fit(tts)
    vectors = np.stack([dense(tt) for tt in tts])
    mean = vectors.mean(axis=0)
    _, _, axes = np.linalg.svd(vectors - mean, full_matrices=False)
    new = random_tt()
    for tt in tts + [new]:
        coordinates = head(tt).numpy()
        scores = (dense(tt) - mean) @ axes[:3].T
        np.testing.assert_allclose(np.abs(coordinates), np.abs(scores), rtol=1e-8, atol=1e-10)


# Mutant: the refit's Procrustes rotation transposed (``V^T U``, not ``U V^T``): the refit
# coordinates were not the closest rotation of the new ones to the previous ones, whose
# optimality condition is ``R^T P`` symmetric positive semi-definite.
@pytest.mark.usefixtures("pytorch_backend")
def test_a_tt_pca_refit_rotates_its_coordinates_closest_to_the_previous_ones():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import TTPCAHead

    generator = torch.Generator().manual_seed(1)

    def random_tt():
        return [torch.randn(1, 5, 2, generator=generator, dtype=torch.float64),
                torch.randn(2, 4, 1, generator=generator, dtype=torch.float64)]

    tts = [random_tt() for _ in range(7)]
    moved = [[core + 0.3 * torch.randn(core.shape, generator=generator, dtype=torch.float64)
              for core in tt] for tt in tts]
    head = TTPCAHead(n_components=3).fit(tts)
    previous = torch.stack([head(tt) for tt in moved])
    head.fit(moved)
    refit = torch.stack([head(tt) for tt in moved])
    fresh = torch.stack([TTPCAHead(n_components=3).fit(moved)(tt) for tt in moved])
    cross = (refit.T @ previous).numpy()
    np.testing.assert_allclose(cross, cross.T, atol=1e-9 * np.abs(cross).max())
    assert np.linalg.eigvalsh((cross + cross.T) / 2).min() >= -1e-9 * np.abs(cross).max()
    assert torch.linalg.norm(refit - previous) <= torch.linalg.norm(fresh - previous) + 1e-12


# -- nn/keyed.py ------------------------------------------------------------------------


# Mutant: a file's stamp without its modification time: a file rewritten with other voxels
# of the same size kept the fingerprint, and the old file's patches were reused.
def test_a_file_rewritten_with_the_same_size_gets_another_fingerprint(tmp_path):
    pytest.importorskip("torch")
    import os

    import tensorly_cross as tlc
    from tensorly_cross.nn.keyed import volume_fingerprint

    path = str(tmp_path / "volume.npy")
    np.save(path, np.zeros((4, 4, 4)))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = volume_fingerprint(tlc.open_volume(path))
    assert volume_fingerprint(tlc.open_volume(path)) == before
    np.save(path, np.ones((4, 4, 4)))
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert volume_fingerprint(tlc.open_volume(path)) != before


# -- nn/dataset.py, nn/training.py ------------------------------------------------------


# Mutant: ``batches(shuffle=True, seed=...)`` ignored its seed (one fixed order).
def test_shuffled_batches_follow_their_seed():
    pytest.importorskip("torch")
    from tensorly_cross.nn import VolumeDataset

    data = VolumeDataset([np.full((3, 3, 3), k, dtype=np.float32) for k in range(8)],
                         np.arange(8.0))
    for seed in (1, 2):
        order = [i for indices, _, _ in data.batches(3, shuffle=True, seed=seed)
                 for i in indices]
        assert order == np.random.default_rng(seed).permutation(8).tolist()


# Mutant: predictions ``mean + readout`` (the target scale dropped): a Regressor must predict
# ``mean + scale * readout`` in target units, so targets ``3 t + 5`` give ``3 p + 5``.
@pytest.mark.usefixtures("pytorch_backend")
def test_regressor_predictions_follow_the_targets_mean_and_scale():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import DenseEmbedding, default_encoder
    from tensorly_cross.nn.training import Regressor

    torch.manual_seed(0)
    model = Regressor(DenseEmbedding(default_encoder(3, 2)), n_inputs=2, normalize=False)
    volumes = torch.rand(3, 1, 5, 5, 5)
    targets = torch.tensor([1.0, 2.0, 4.0])
    with torch.no_grad():
        model.set_target_scale(targets)
        first = model(volumes)
        model.set_target_scale(3 * targets + 5)
        second = model(volumes)
    assert float((first - targets.mean()).abs().max()) > 1e-3  # a readout away from the mean
    torch.testing.assert_close(second, 3 * first + 5)


def _dense_regressor(torch, normalize):
    from tensorly_cross.nn import DenseEmbedding, default_encoder
    from tensorly_cross.nn.training import Regressor

    torch.manual_seed(0)
    return Regressor(DenseEmbedding(default_encoder(3, 2)), n_inputs=2, normalize=normalize)


def _dataset(n, seed=0):
    from tensorly_cross.nn import VolumeDataset

    rng = np.random.default_rng(seed)
    volumes = [rng.random((5, 5, 5)).astype(np.float32) for _ in range(n)]
    return VolumeDataset(volumes, 10.0 * rng.standard_normal(n) + 50.0)


# Mutant: the training loss not divided by the target scale (the log's losses are in
# standardised units). With lr=0 the model stays put: the epoch's loss is computable.
@pytest.mark.usefixtures("pytorch_backend")
def test_the_training_loss_is_in_standardised_target_units():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import fit

    model, train = _dense_regressor(torch, normalize=False), _dataset(4)
    log = fit(model, train, epochs=1, batch_size=4, lr=0.0)
    volumes = [train.volume(k) for k in range(4)]
    with torch.no_grad():
        predictions = model(volumes)
    expected = torch.mean(((predictions - train.targets) / train.targets.std()) ** 2)
    np.testing.assert_allclose(log.losses[0], float(expected), rtol=1e-5)


# Mutant: every epoch shuffled in the same order (its seed without the epoch).
@pytest.mark.usefixtures("pytorch_backend")
def test_each_epoch_visits_the_training_volumes_in_its_own_order():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import fit

    model, train = _dense_regressor(torch, normalize=False), _dataset(6)
    seen = []
    model.embedding.register_forward_pre_hook(
        lambda module, args, kwargs: seen.extend(kwargs["keys"]), with_kwargs=True)
    fit(model, train, epochs=2, batch_size=2, lr=1e-3, seed=3)
    expected = [np.random.default_rng(3 * 100_003 + epoch).permutation(6).tolist()
                for epoch in range(2)]
    assert expected[0] != expected[1]
    assert seen == expected[0] + expected[1]


# Mutant: predict in train mode (BatchNorm on the batch's statistics): a batch of one
# volume then failed, and predictions depended on the batch.
@pytest.mark.usefixtures("pytorch_backend")
def test_predict_runs_in_eval_mode_and_restores_the_mode():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import predict

    model, data = _dense_regressor(torch, normalize=True), _dataset(3)
    model.train()
    one_at_a_time = predict(model, data, batch_size=1)
    assert model.training
    torch.testing.assert_close(one_at_a_time, predict(model, data, batch_size=3))


# Mutant: a Regressor with BatchNorm and one training volume not refused when the batch
# size is larger: every step was skipped and nothing was trained, without a word.
@pytest.mark.usefixtures("pytorch_backend")
def test_fit_refuses_a_single_training_volume_with_batchnorm():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import fit

    with pytest.raises(ValueError, match="steps of one volume"):
        fit(_dense_regressor(torch, normalize=True), _dataset(1), epochs=1, batch_size=8)


# Mutant: the PCA head not refitted at the start of each epoch (never fitted: the first
# step failed).
@pytest.mark.usefixtures("pytorch_backend")
def test_fit_fits_a_pca_head_before_training():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import CrossEmbedding
    from tensorly_cross.nn.training import Regressor, fit

    torch.manual_seed(0)
    embedding = CrossEmbedding(patch_size=3, n_features=2, rank=2, head="pca", n_outputs=2,
                               n_iter_max=1, max_batch=4096)
    model = Regressor(embedding, n_inputs=2, normalize=False)
    log = fit(model, _dataset(3), epochs=1, batch_size=3)
    assert embedding.head.fitted and log.steps == 1 and np.isfinite(log.losses[0])


# -- nn/dense.py ------------------------------------------------------------------------


# Mutants: "edge" padding run as torch's "reflect"; and torch's reflect padding used on an
# axis no longer than the border (torch refuses it): the dense baseline must average the
# border patches PatchGrid (and CrossEmbedding) cut.
@pytest.mark.usefixtures("pytorch_backend")
@pytest.mark.parametrize("padding", ["reflect", "edge", "zeros"])
@pytest.mark.parametrize("shape", [(5, 4, 6), (1, 5, 4)])
def test_the_dense_baseline_pads_as_patch_grid_does(padding, shape):
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import DenseEmbedding, PatchGrid, default_encoder

    torch.manual_seed(0)
    encoder = default_encoder(patch_size=3, n_features=2).double()
    volume = torch.rand(shape, dtype=torch.float64)
    features = DenseEmbedding(encoder, padding=padding)([volume])[0]
    grid = PatchGrid(volume, patch_size=3, padding=padding)
    every = grid.patches(list(np.ndindex(*volume.shape)), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(features, encoder(every).mean(dim=0))


# -- _validation.py ---------------------------------------------------------------------


# Mutant: infinities accepted as real numbers (only NaN refused).
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_check_float_refuses_non_finite_values(value):
    from tensorly_cross._validation import check_float

    with pytest.raises(ValueError, match="must be finite"):
        check_float(value, "x")


# Mutant: an ``AdaptiveAvgPool3d`` to more than one position taken for the final mean when
# one of its sizes is 1: the baseline returned F features where the encoder gives 2 F.
@pytest.mark.usefixtures("pytorch_backend")
def test_the_dense_baseline_refuses_a_pooling_to_several_positions():
    pytest.importorskip("torch")
    from torch import nn

    from tensorly_cross.nn import DenseEmbedding

    encoder = nn.Sequential(nn.Conv3d(1, 2, kernel_size=3), nn.AdaptiveAvgPool3d((1, 2, 1)),
                            nn.Flatten())
    with pytest.raises(ValueError, match="cannot run over the whole volume"):
        DenseEmbedding(encoder)


# -- options.py -------------------------------------------------------------------------


# Mutant: a budget equal to the held-out entries accepted (nothing left for the cross).
def test_max_evals_equal_to_val_size_is_refused():
    from tensorly_cross.options import cross_options

    with pytest.raises(ValueError, match="max_evals=500 must exceed val_size=500"):
        cross_options((20, 20, 20), max_evals=500, val_size=500, method="tci")
    assert cross_options((20, 20, 20), max_evals=501, val_size=500, method="tci").max_evals == 501


# Mutants: the least-squares cross's default oversampling (1.5) replaced by 1.0; the
# TCI-to-least-squares handover switched on for an explicit method="tci" (only "auto" hands
# over); a checkpoint's arguments holding ``refine`` at its default (checkpoints written
# before it existed were then refused).
def test_method_defaults_handover_and_checkpoint_arguments():
    from tensorly_cross import FunctionTensor
    from tensorly_cross.options import checkpoint_arguments, cross_options

    shape = (8, 8, 8)
    assert cross_options(shape, stored=True).oversample == 1.5  # auto: lsq on stored data
    assert cross_options(shape, method="lsq").oversample == 1.5
    assert cross_options(shape, rank=2, method="als").oversample == 1.0
    assert cross_options(shape, method="auto").handover  # a function: TCI, then lsq
    assert not cross_options(shape, method="tci").handover
    tensor = FunctionTensor(lambda indices: np.ones(len(indices)), shape)
    options = cross_options(shape, method="tci", checkpoint="run.ckpt")
    arguments = checkpoint_arguments(options, 0, tensor)
    assert "refine" not in arguments and arguments["random_state"] == 0
    assert "refine" in checkpoint_arguments(cross_options(shape, method="tci",
                                                          checkpoint="run.ckpt",
                                                          refine=False), 0, tensor)


# Mutant: a kept NIfTI affine with a non-finite entry taken as usable (a NaN affine written).
def test_reconstruct_refuses_a_nifti_affine_with_nan(tmp_path, capsys):
    pytest.importorskip("nibabel")
    import tensorly_cross as tlc
    from tensorly_cross import cli

    affine = np.eye(4)
    affine[0, 3] = np.nan
    path = str(tmp_path / "v.tt.npz")
    tlc.save_tt(path, _random_tt((4, 3, 5)), {"shape": [4, 3, 5],
                                             "nifti": {"affine": affine.tolist()}})
    output = str(tmp_path / "v.nii")
    assert cli.main(["reconstruct", path, "-o", output]) == cli.EXIT_INPUT
    assert "is not a 4x4 list of finite numbers" in capsys.readouterr().err
    assert not (tmp_path / "v.nii").exists()


# Mutant: an output inside the input's store folder accepted (writing it damages the input).
def test_compress_refuses_an_output_inside_the_input_store(tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    from tensorly_cross import cli

    store = str(tmp_path / "volume.zarr")
    zarr.create_array(store, shape=(6, 5, 4), chunks=(3, 5, 4), dtype="f8")[:] = 1.0
    code = cli.main(["compress", store, "-o", str(tmp_path / "volume.zarr" / "v.tt.npz"),
                     "--method", "stream", "-q"])
    assert code == cli.EXIT_USAGE
    assert "is inside the input" in capsys.readouterr().err


# -- datasets.py ------------------------------------------------------------------------


# Mutant: indices scaled by the shape, not by ``shape - 1``: the phantom is one function on
# [0, 1]^3 sampled at any resolution, so voxel i of 9 is voxel 2 i of 17.
def test_the_blob_phantom_is_one_function_at_every_resolution():
    from tensorly_cross.datasets import blob_phantom

    coarse, fine = blob_phantom((9, 9, 9), seed=3), blob_phantom((17, 17, 17), seed=3)
    indices = np.stack(np.meshgrid(*[np.arange(9)] * 3, indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(coarse(indices), fine(2 * indices), rtol=1e-6)


# Mutant: the callback handed the run's own cores: one that scaled them in place changed
# the TT returned (and its reported error no longer described it).
def test_a_callback_editing_its_cores_in_place_leaves_the_run_alone():
    import tensorly as tl

    from tensorly_cross import tt_cross

    rng = np.random.default_rng(6)
    dense = np.einsum("ir,jr,kr->ijk", *(rng.standard_normal((n, 2)) for n in (7, 6, 5)))

    def vandal(tt, info):
        for core in tt.factors:
            core *= 3.0

    with tl.backend_context("numpy"):
        plain = tt_cross(dense, rank=2, method="als", n_iter_max=4, random_state=0)
        edited = tt_cross(dense, rank=2, method="als", n_iter_max=4, random_state=0,
                          callback=vandal)
    np.testing.assert_array_equal(tl.tt_to_tensor(edited), tl.tt_to_tensor(plain))
