"""Mutation audit 29: tests that kill hand-made mutants of ``nn/dense.py``,
``nn/mni152.py``, ``cli/compress.py``, ``stream/``, ``lazy/worker_groups.py``,
``lazy/dask.py``, ``cross/refine.py`` (and the refine step after ``max_time``) and
``Validation.warn_if_unseen`` that the earlier tests let through.

Each test names the mutant it kills; each asserts documented behaviour.
"""

import numpy as np
import pytest

from .nn_helpers import crops_manifest

# -- nn/dense.py ---------------------------------------------------------------------------


def test_the_dense_baseline_reads_a_boolean_mask_as_its_zeros_and_ones():
    # Mutant: ``_as_tensor`` refuses dtype kind "b" (a mask), which PatchGrid and
    # CrossEmbedding take as 0/1 ("patches need bool, integer or real").
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import DenseEmbedding, default_encoder

    torch.manual_seed(0)
    embedding = DenseEmbedding(default_encoder(patch_size=3, n_features=2))
    mask = np.random.default_rng(0).random((5, 5, 5)) > 0.5
    with torch.no_grad():
        torch.testing.assert_close(embedding([mask]), embedding([mask.astype(np.float32)]))


def test_the_dense_baseline_refuses_a_block_of_layers_of_its_own():
    # Mutant: a layer with children of its own (a custom block holding a convolution) is
    # run as if pointwise: the border leaves out its kernel, and the mean is taken over
    # fewer positions than voxels without a word.
    pytest.importorskip("torch")
    from torch import nn

    from tensorly_cross.nn import DenseEmbedding

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 2, 3)

        def forward(self, x):
            return self.conv(x)

    encoder = nn.Sequential(Block(), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten())
    with pytest.raises(ValueError, match=r"(?s)encoder\[0\].*cannot run over the whole volume"):
        DenseEmbedding(encoder)


def test_the_dense_baseline_refuses_a_linear_layer_inside_its_body():
    # Mutant: nn.Linear dropped from the layers refused. Run over the padded volume it mixes
    # (and resizes) the last axis: features of positions that are no voxel's, no error.
    pytest.importorskip("torch")
    from torch import nn

    from tensorly_cross.nn import DenseEmbedding

    encoder = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Linear(7, 7), nn.AdaptiveAvgPool3d(1),
                            nn.Flatten())
    with pytest.raises(ValueError, match=r"encoder\[1\] \(Linear.*cannot run over the whole"):
        DenseEmbedding(encoder)


# -- nn/mni152.py --------------------------------------------------------------------------


def test_mni152_crops_rewrites_the_crops_of_an_older_version_whatever_their_seed(tmp_path):
    # Mutant: the version no longer gates the refusal, so a directory of the crops of an
    # older version (documented: "rewritten") but of another seed was refused.
    pytest.importorskip("torch")
    pytest.importorskip("nilearn")
    from tensorly_cross.nn import mni152_crops

    crops_manifest(tmp_path, version=1, seed=3)
    data = mni152_crops(1, 4, seed=0, directory=tmp_path)
    volume = np.load(data.volumes[0])
    assert volume.shape == (4, 4, 4) and not np.all(volume == 7.0)  # written afresh


def test_mni152_crops_writes_again_a_crop_missing_from_its_directory(tmp_path):
    # Mutant: the manifest is trusted without checking that its files are there: the
    # dataset returned named a deleted crop, and failed only when read.
    pytest.importorskip("torch")
    pytest.importorskip("nilearn")
    from tensorly_cross.nn import mni152_crops

    (name,) = crops_manifest(tmp_path)
    (tmp_path / name).unlink()
    data = mni152_crops(1, 4, seed=0, directory=tmp_path)
    volume, target = data[0]
    assert tuple(volume.shape) == (4, 4, 4) and 0.0 <= float(target) <= 1.0
    assert (tmp_path / name).exists()


# -- cli/compress.py -----------------------------------------------------------------------


def _compress(tmp_path, capsys, *flags, shape=(6, 6, 6)):
    """``tensorly-cross compress`` run in this process on a small .npy: (exit code, stderr)."""
    from tensorly_cross.cli import main

    path = tmp_path / "volume.npy"
    np.save(path, np.random.default_rng(0).random(shape))
    code = main(["compress", str(path), "-o", str(tmp_path / "out.tt.npz"), "-q", *flags])
    return code, capsys.readouterr().err


def test_compress_refuses_max_slices_with_tci_by_its_flags(tmp_path, capsys):
    # Mutant: only --method lsq is refused with --max-slices; TCI (which has no slice
    # budget) was then run, or failed in the library's terms, not the command's.
    code, err = _compress(tmp_path, capsys, "--rank", "2", "--max-slices", "2",
                          "--method", "tci")
    assert code == 2
    assert "--max-slices needs --method als or auto" in err and "not tci" in err


def test_compress_refuses_dataset_for_a_file_other_than_hdf5_as_a_usage_error(tmp_path, capsys):
    # Mutant: the command's own check dropped; the library refused it later, as an input
    # error (exit 1, not 2) naming its own argument ("dataset='vol'"), not the flag.
    code, err = _compress(tmp_path, capsys, "--dataset", "vol")
    assert code == 2
    assert "--dataset names an HDF5 dataset" in err and "is not .h5/.hdf5" in err


def test_compress_refuses_axes_that_repeat_one_beside_all_the_others(tmp_path, capsys):
    # Mutant: --axes checked as a set, so "0,1,2,2" (every axis, one twice) passed the
    # command's check and failed later, in the library's terms (exit 1).
    code, err = _compress(tmp_path, capsys, "--axes", "0,1,2,2", "--rank", "2")
    assert code == 2
    assert "--axes must be a permutation of the volume's 3 axes" in err


def test_compress_refuses_a_budget_the_held_out_entries_exhaust_on_a_2d_image(tmp_path, capsys):
    # Mutant: ``ndim > 2`` for the least-squares cross that auto runs: on an image the
    # budget went unchecked, and the library refused it later (exit 1, its own terms).
    code, err = _compress(tmp_path, capsys, "--max-evals", "2000", shape=(64, 64))
    assert code == 2
    assert "--max-evals 2000 is too small for the least-squares cross" in err


def test_compress_refuses_a_budget_equal_to_the_held_out_entries(tmp_path, capsys):
    # Mutant: ``max_evals < LSQ_VAL_SIZE``: a budget of exactly the 4000 held-out entries
    # leaves none for the cross ("Give more than 4000").
    from tensorly_cross.options import LSQ_VAL_SIZE

    code, err = _compress(tmp_path, capsys, "--max-evals", str(LSQ_VAL_SIZE))
    assert code == 2
    assert f"--max-evals {LSQ_VAL_SIZE} is too small for the least-squares cross" in err


def test_compress_says_the_cross_of_a_gzipped_nifti_does_not_use_the_scheduler(
        tmp_path, loopback_cluster, capsys):
    # Mutant: ".nii.gz" left out of the files the cross reads in this process: no warning
    # that --scheduler goes unused for it (as for .nii and .npy).
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross.cli import main

    grid = np.linspace(0, 1, 8)
    path = tmp_path / "v.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.add.outer(np.add.outer(grid, grid), grid),
                                     np.eye(4)), str(path))
    code = main(["compress", str(path), "-o", str(tmp_path / "c.tt.npz"), "--method", "tci",
                 "--scheduler", loopback_cluster.scheduler_address, "--tol", "1e-6", "-q"])
    assert code == 0
    assert "warning: --scheduler is not used by the cross for 'v.nii.gz'" in \
        capsys.readouterr().err



@pytest.mark.parametrize("dtype, stored", [(np.int16, np.float32), (np.int32, np.float64)])
def test_compress_stores_integer_volumes_in_the_documented_core_dtype(tmp_path, capsys, dtype,
                                                                    stored):
    # Mutant: ``itemsize <= 1``: an int16 volume (a CT, most NIfTI) was stored in float64
    # cores, twice the file, where --dtype's help says "float32 for integers of 16 bits or
    # fewer".
    from tensorly_cross import load_tt
    from tensorly_cross.cli import main

    grid = np.arange(8)
    path = tmp_path / "v.npy"
    np.save(path, np.add.outer(np.add.outer(grid, grid), grid).astype(dtype))
    output = tmp_path / "v.tt.npz"
    assert main(["compress", str(path), "-o", str(output), "--method", "stream", "-q"]) == 0
    tt, _ = load_tt(str(output))
    assert all(np.asarray(core).dtype == stored for core in tt.factors)

# -- stream/streaming.py -------------------------------------------------------------------


def test_the_memory_check_counts_the_test_matrices_and_every_copy_the_qr_holds():
    # Mutants: the random test matrices (width x sum(shape) per sketched mode) left out of
    # the estimate, or one QR working copy fewer: an (n, 8) volume sketched at widths (8, 8)
    # needs 40 n entries (sketch 8n, its test matrix 8n, three more copies in the QR);
    # counted as 32 n, one needing 10/9 of the machine passed the check, to be killed for
    # memory after a full read.
    from tensorly_cross.stream.streaming import _check_memory, _physical_memory

    physical = _physical_memory()
    if physical is None:
        pytest.skip("the OS does not say how much memory this machine has")
    n = physical // (8 * 36)  # 40 n float64 entries: 10/9 of the memory; 32 n: 8/9
    with pytest.raises(MemoryError, match="Lower max_width"):
        _check_memory((n, 8), (8, 8))


def test_a_fixed_rank_volume_filling_the_core_budget_exactly_is_read_once(monkeypatch):
    # Mutant: the default outer width 2 max(rank) + 10 applied from a smaller size than
    # the budget (``>=``, or half of it): a volume within the budget was sketched (two
    # reads, an approximate basis) instead of taken whole (documented: "A volume within the
    # budget is not sketched: TT-SVD").
    from tensorly_cross import streaming_tt_svd
    from tensorly_cross.stream import streaming

    monkeypatch.setattr(streaming, "MAX_CORE_ENTRIES", 20 * 20 * 15)
    volume = np.random.default_rng(0).standard_normal((20, 20, 15))
    _, info = streaming_tt_svd(volume, rank=2, random_state=0, return_info=True)
    assert info.widths == (20, 20, 15) and info.n_passes == 1


# -- lazy/worker_groups.py -----------------------------------------------------------------


def test_a_worker_left_without_chunks_gets_no_group():
    # Mutant: ``stop >= start``: a worker whose share rounds to no chunk still got a group
    # (an empty dask task per idle worker, each paying the fixed cost the groups save).
    from tensorly_cross.lazy.worker_groups import group_chunks

    workers = [("a", 1), ("b", 1), ("c", 1)]
    assert group_chunks(1, workers) == [("c", 1, 0, 1)]
    assert group_chunks(0, workers) == []
    assert all(stop > start for *_, start, stop in group_chunks(2, workers))


def _fails_beyond_30(indices):
    """Module level: dask pickles a task's function even for a cluster of threads."""
    if (indices[:, 0] > 30).any():
        raise KeyError("no model for x0 > 30")
    return indices.sum(axis=1).astype(float)


def test_a_failing_chunk_on_a_dask_worker_is_named_once():
    # Mutant: the group's range noted even when the chunk's own note survived the trip:
    # the error then named two culprits, "chunk 4 of 4" and "chunks 3-4 of 4".
    distributed = pytest.importorskip("distributed")
    from tensorly_cross import FunctionTensor
    from tensorly_cross.lazy.chunk_result import NOTE_PREFIX

    batch = np.array([[i, i] for i in range(12)])
    batch[9, 0] = 31
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=False,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        failing = FunctionTensor(_fails_beyond_30, (32, 32), executor=client)
        with pytest.raises(KeyError, match="x0 > 30") as error:
            failing.evaluate(batch)
    notes = [note for note in error.value.__notes__ if note.startswith(NOTE_PREFIX)]
    assert len(notes) == 1
    assert notes[0].startswith(f"{NOTE_PREFIX} 4 of 4: 3 multi-indices from (31, 9) to (11, 11)")


def _slow_or_fails(indices):
    """Fails at once on x0 > 30; else takes 2 s."""
    import time

    if (indices[:, 0] > 30).any():
        raise KeyError("no model for x0 > 30")
    time.sleep(2.0)
    return indices.sum(axis=1).astype(float)


def test_a_failing_dask_group_raises_its_error_before_a_slower_group_meets_the_deadline():
    # Mutant: the wait for the groups goes on past a failed one (``continue``, not
    # ``return``): the slower group then ran into max_time, and the function's own error
    # came back as MaxTimeReached ("1 of 2 dask tasks still to finish"), a stop, not a bug.
    import time

    distributed = pytest.importorskip("distributed")
    from tensorly_cross.lazy.deadline import Deadline
    from tensorly_cross.lazy.parallel import evaluate_in_chunks

    batch = np.array([[i, i] for i in range(4)])
    batch[3, 0] = 31  # in the second chunk, run by the second worker
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(KeyError, match="x0 > 30"):
            evaluate_in_chunks(_slow_or_fails, batch, client,
                               deadline=Deadline(time.perf_counter() + 1.0, 1.0))


# -- lazy/dask.py --------------------------------------------------------------------------


def test_a_dask_tensor_spreads_its_chunks_over_the_workers():
    # Mutant: every chunk pinned to the first worker (not by its hash): the reads of a
    # batch ran one worker's threads only, and its cache held every chunk.
    distributed = pytest.importorskip("distributed")
    zarr = pytest.importorskip("zarr")
    from tensorly_cross import DaskTensor

    array = zarr.zeros((64, 64), chunks=(8, 8), dtype="f8")
    array[:] = np.arange(64 * 64.0).reshape(64, 64)
    points = np.array([[i, j] for i in range(0, 64, 8) for j in range(0, 64, 8)])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        lazy = DaskTensor(array, client=client)
        with distributed.get_task_stream(client) as tasks:
            values = lazy.evaluate(points)
        workers = {task["worker"] for task in tasks.data}
    np.testing.assert_array_equal(np.asarray(values), points[:, 0] * 64.0 + points[:, 1])
    # 64 chunks hashed to 2 workers: all on one has probability 2**-63
    assert len(workers) == 2


def test_a_worker_drops_its_least_recently_used_chunk_cache_first(monkeypatch):
    # Mutant: a cache used again is not moved to the end: the worker dropped the oldest
    # cache made (first in, first out), though its tensor was the one in use.
    from collections import OrderedDict

    from tensorly_cross.lazy import dask as lazy_dask

    monkeypatch.setattr(lazy_dask, "_WORKER_CACHES", OrderedDict())
    source = lazy_dask.DaskTensor(np.arange(16.0).reshape(4, 4)).source
    block = (slice(0, 4), slice(0, 4))

    def read(token):
        return lazy_dask._worker_gather(source, token, 0, block, np.array([[1, 2]]), 2**20)

    for token in ("a", "b", "c", "d"):
        read(token)
    assert read("a")[0] == 6.0  # "a" used again: the most recent
    read("e")  # one cache too many: the least recently used ("b") goes
    assert list(lazy_dask._WORKER_CACHES) == ["c", "d", "a", "e"]


# -- cross/driver.py, cross/finish.py, cross/refine.py: the refinement -----------------------


def _noisy(shape, seed):
    """A smooth tensor plus noise: no low rank meets a small tol, so the cross refines."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return (np.sin(4 * sum(grids)) + np.exp(-3 * grids[0] * grids[2])
            + 0.05 * rng.standard_normal(shape))


def test_a_run_stopped_by_max_time_returns_its_best_sweep_unrefined():
    # Mutant: the least-squares refinement also ran after a max_time stop: past the time
    # allowed, the run added a sweep (info.refined) that no sweep had validated, where
    # max_time is documented to return "the best sweep it has completed and validated".
    import time

    import tensorly_cross as tlc

    def past_the_deadline_after_two_sweeps(tt, info):
        if info.n_sweeps == 2:
            time.sleep(1.2)

    dense = _noisy((30, 28, 26), 0)
    _, info = tlc.tt_cross(dense, rank=5, method="als", tol=1e-6, random_state=0,
                           return_info=True, max_time=1.0,
                           callback=past_the_deadline_after_two_sweeps)
    assert info.stop_reason == "max_time"
    assert not info.refined and info.n_sweeps == len(info.val_errors) <= 2


def test_a_refinement_meeting_tol_past_max_time_is_judged_without_fresh_entries():
    # Mutant: MaxTimeReached not caught around the refined TT's confirmation: a run whose
    # refinement met tol once max_time had passed raised it out of tt_cross (documented:
    # a run past max_time stops and returns), where it is judged on the entries held out.
    import time

    import tensorly_cross as tlc

    dense = _noisy((30, 28, 26), 0)
    _, plain = tlc.tt_cross(dense, rank=5, method="als", tol=1e-6, random_state=0,
                            return_info=True, n_iter_max=2)
    assert plain.refined
    tol = 1.02 * plain.val_errors[-1]  # met by the refinement, by no sweep

    def past_the_deadline_in_the_last_sweep(tt, info):
        if info.n_sweeps == 2:
            time.sleep(1.2)

    _, info = tlc.tt_cross(dense, rank=5, method="als", tol=tol, random_state=0,
                           return_info=True, max_time=1.0, n_iter_max=2,
                           callback=past_the_deadline_in_the_last_sweep)
    assert info.refined and info.val_errors[-1] == plain.val_errors[-1]


def test_the_refinement_of_a_tensor_scaled_by_a_power_of_two_is_the_same_refinement():
    # Mutant: the ridge pulls towards the current core in the data's units, not in the
    # scaled blocks' (refine.py brings them near 1 by powers of two): for data near 1e120
    # the pull outweighed the fit and the refinement was dropped (refined False).
    import tensorly_cross as tlc

    dense = _noisy((30, 28, 26), 0)
    runs = [tlc.tt_cross(np.ldexp(dense, exponent), rank=5, method="als", tol=1e-6,
                         random_state=0, return_info=True)[1] for exponent in (0, 400)]
    assert all(info.refined for info in runs)
    assert runs[1].val_errors[-1] == pytest.approx(runs[0].val_errors[-1], rel=1e-9)


# -- cross/stopping.py: Validation.warn_if_unseen --------------------------------------------


def test_the_unseen_structure_warning_of_a_block_cross_bounds_positions_not_channels():
    # Mutant: the bound in the warning counts every held-out channel as a draw, not every
    # position (3 channels: 0.003 claimed where the held-out positions bound 0.009).
    import re
    import warnings

    import tensorly_cross as tlc
    from tensorly_cross.cross.stopping import heldout_bound
    from tensorly_cross.errors import UnseenStructureWarning

    from .test_reliability import HiddenSpike

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = tlc.tt_cross(HiddenSpike(), shape=(30, 30, 3), method="block", rank=2,
                               random_state=0, return_info=True)
    (message,) = [str(w.message) for w in caught if w.category is UnseenStructureWarning]
    claimed = float(re.search(r"at most a fraction (\S+) of the entries", message)[1])
    drawn = info.n_fresh or info.n_heldout  # held-out channel values, 3 per position
    assert claimed == pytest.approx(heldout_bound(drawn // 3), rel=1e-2)


def test_the_unseen_structure_warning_is_given_once_per_validation():
    # Mutant: ``self.warned`` no longer checked: each pass judged (the held-out error's,
    # then the driver's once the pass is decided) warned again ("Warn (once)").
    import warnings

    import tensorly_cross as tlc
    from tensorly_cross.cross.stopping import Validation
    from tensorly_cross.errors import UnseenStructureWarning
    from tensorly_cross.lazy.cache import EvaluationCache

    from .test_reliability import HiddenSpike

    cache = EvaluationCache(tlc.FunctionTensor(HiddenSpike(), (30, 30, 30)))
    validation = Validation(cache, 1000, np.random.default_rng(0), None, 1e-3)
    cache.evaluate(np.indices((30, 30, 2)).reshape(3, -1).T.astype(np.int64))  # the spike
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(1e-4)
        validation.warn_if_unseen(1e-4)
    assert [w.category for w in caught] == [UnseenStructureWarning]
