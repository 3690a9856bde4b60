"""Mutation audit (s28): the stopping rules, options, checkpoints and chunked evaluation
changed in sessions 26-27, each test written to kill a hand-made mutant that the existing
tests let survive (the comment above each test names it)."""

import warnings

import numpy as np
import pytest

import tensorly_cross as tlc

from .test_reliability import HiddenSpike


def _cosine(shape):
    """An exact TT of rank 2: crosses recover it to round-off."""
    return tlc.FunctionTensor(lambda idx: np.cos(idx.sum(axis=1) / 9.0), shape)


# Mutant (stopping.Validation): the first stage of held-out entries as
# min(FIRST_MIN, ...) instead of max(...): a val_size of 2000 read 200 first, not a fifth.
def test_an_exact_recovery_reads_a_fifth_of_the_held_out_entries():
    _, info = tlc.tt_cross(_cosine((16,) * 4), tol=1e-8, val_size=2000, random_state=0,
                           return_info=True)
    assert info.stop_reason == "tol"
    # A fifth of val_size, less the draws of the start pivot (never held out).
    assert 390 <= info.n_heldout <= 400


# Mutant (checkpoint.CheckpointStore): only a missing file is new, not an empty one: an
# empty file (what tempfile.mkstemp leaves) was refused as "not a checkpoint".
def test_an_empty_file_is_a_new_checkpoint_and_resumes(tmp_path):
    path = tmp_path / "run.ckpt"
    path.write_bytes(b"")
    settings = dict(tol=1e-8, random_state=0, return_info=True, checkpoint=path)
    first, info = tlc.tt_cross(_cosine((8,) * 3), **settings)
    assert info.n_restored == 0 and path.stat().st_size > 0
    again, rerun = tlc.tt_cross(_cosine((8,) * 3), **settings)
    assert rerun.n_restored == rerun.n_evals == info.n_evals
    assert all(np.array_equal(a, b) for a, b in zip(first.factors, again.factors, strict=True))


# Mutant (function._evaluate_chunks): the deadline checked from the third chunk on
# (``number > 1``), not from the second: a chunk started after max_time had passed.
def test_serial_chunks_stop_at_the_deadline_after_the_chunk_then_running():
    import time

    calls = []

    def slow(idx):
        calls.append(idx.shape[0])
        time.sleep(1.2)  # past max_time: no further chunk of the batch may start
        return np.ones(idx.shape[0])

    tensor = tlc.FunctionTensor(slow, (8,) * 3, chunk_size=50)
    with pytest.raises(tlc.errors.MaxTimeReached, match="after 1 of"):
        tlc.tt_cross(tensor, tol=1e-6, val_size=400, random_state=0, max_time=1.0)
    assert calls == [50]


# Mutant (stopping.warn_if_unseen): the unseen-entry factor raised from UNSEEN_FACTOR (100)
# to 1000: a read entry 201 times every held-out one passed "tol" without a word.
def test_a_pass_warns_of_an_entry_read_a_hundred_times_the_held_out_ones():
    from tensorly_cross.errors import UnseenStructureWarning

    with pytest.warns(UnseenStructureWarning, match="201x the largest held-out"):
        _, info = tlc.tt_cross(HiddenSpike(200.0), shape=(30, 30, 30), random_state=0,
                               return_info=True)
    assert info.stop_reason == "tol"


# Mutant (chunk_result.results_in_order): the error of the last failed chunk raised, not
# the lowest-numbered one's.
def test_of_several_failed_chunks_the_lowest_numbered_ones_error_is_raised():
    from concurrent.futures import Future

    from tensorly_cross.lazy.chunk_result import results_in_order

    futures = [Future() for _ in range(3)]
    futures[0].set_exception(ValueError("chunk zero"))
    futures[1].set_result(np.ones(2))
    futures[2].set_exception(ValueError("chunk two"))
    chunks = [np.full((2, 3), k, dtype=np.int64) for k in range(3)]
    with pytest.raises(ValueError, match="chunk zero") as caught:
        results_in_order(futures, chunks, first_number=4, n_chunks=9)
    assert "chunk 5 of 9" in "\n".join(caught.value.__notes__)


# Mutant (chunk_result.FinishedChunks.claim): a later claim replaced the first: a function
# that evaluates another tensor could pass that tensor's finished chunks off as its own.
def test_finished_chunks_keep_their_first_claimant():
    from tensorly_cross.lazy.chunk_result import FinishedChunks

    inner, outer = _cosine((4, 4)), _cosine((4, 4))
    finished = FinishedChunks(np.zeros((1, 2), dtype=np.int64), [np.ones(1)])
    finished.claim(inner)
    finished.claim(outer)
    assert finished.source is inner


# Mutant (chunk_result.attach_finished): without a finished chunk of its own, a batch's
# error kept the finished chunks an inner evaluation had attached (those are not its own).
def test_a_batch_without_finished_chunks_drops_those_an_inner_evaluation_attached():
    from tensorly_cross.lazy.chunk_result import FINISHED, FinishedChunks, attach_finished

    error = RuntimeError("inner")
    setattr(error, FINISHED, FinishedChunks(np.zeros((1, 2), dtype=np.int64), [np.ones(1)]))
    attach_finished(error, [np.zeros((2, 2), dtype=np.int64)], [None])
    assert getattr(error, FINISHED, None) is None


# Mutant (parallel.evaluate_in_chunks): the seconds inside the function as the longest
# chunk's, not summed over the chunks as function_seconds is documented.
def test_function_seconds_with_an_executor_sum_over_the_chunks():
    import time
    from concurrent.futures import ThreadPoolExecutor

    def slow(idx):
        time.sleep(0.1)
        return np.ones(idx.shape[0])

    with ThreadPoolExecutor(4) as pool:
        tensor = tlc.FunctionTensor(slow, (10, 10), executor=pool, chunk_size=10)
        tensor.evaluate(np.stack([np.arange(40) // 10, np.arange(40) % 10], axis=1))
    assert tensor.function_seconds >= 0.35  # four chunks of 0.1 s each, run at once


_POISONED = {}  # key -> multi-index that fails once: shared by the copies dask pickles


class _FailsOnce:
    """1 + sum(x), but the chunk holding ``_POISONED[key]`` sleeps, then raises (once)."""

    def __init__(self, key, poison):
        self.key = key
        _POISONED[key] = np.asarray(poison)

    def __call__(self, indices):
        import time

        poison = _POISONED.get(self.key)
        if poison is not None and (indices == poison).all(axis=1).any():
            _POISONED.pop(self.key, None)
            time.sleep(0.5)  # the other worker's group finishes first
            raise RuntimeError("transient failure")
        return 1.0 + indices.sum(axis=1)


# Mutant (parallel._finished_results): a finished dask group's results put back one chunk
# short (``results[start:stop - 1]``): its last chunk was lost to the checkpoint.
def test_a_finished_dask_group_is_kept_whole_by_the_checkpoint(tmp_path):
    distributed = pytest.importorskip("distributed")
    from tensorly_cross.lazy.checkpoint import CheckpointedTensor, CheckpointStore

    from .test_dask import loopback_cluster  # two workers of one thread, on loopback

    chunk, shape = 4, (8, 8)
    batch = np.stack([np.arange(16) // 8, np.arange(16) % 8], axis=1).astype(np.int64)
    with loopback_cluster() as cluster, distributed.Client(cluster) as client:
        function = _FailsOnce("dask-group", batch[-1])  # in the second worker's group
        lazy = tlc.FunctionTensor(function, shape, executor=client, chunk_size=chunk)
        store = CheckpointStore(tmp_path / "run.ckpt", shape, {})
        try:
            with pytest.raises(RuntimeError, match="transient failure"):
                CheckpointedTensor(lazy, store).evaluate(batch)
        finally:
            store.close()
    kept = CheckpointStore(tmp_path / "run.ckpt", shape, {})  # the entries read back
    kept.close()
    # The first worker's group, chunks 0 and 1, finished: both are kept.
    np.testing.assert_array_equal(kept.indices, batch[: 2 * chunk])
    np.testing.assert_array_equal(kept.values, 1.0 + batch[: 2 * chunk].sum(axis=1))


# Mutant (api._entry_source): the deadline put in front of the checkpoint instead of behind
# it: a rerun past max_time was refused even the entries it only read back.
def test_a_rerun_replays_its_checkpoint_whatever_max_time(tmp_path):
    settings = dict(tol=1e-8, random_state=0, return_info=True, checkpoint=tmp_path / "c")
    first, info = tlc.tt_cross(_cosine((8,) * 3), **settings)
    again, rerun = tlc.tt_cross(_cosine((8,) * 3), max_time=1e-9, **settings)
    assert rerun.stop_reason == info.stop_reason == "tol"
    assert rerun.n_restored == rerun.n_evals == info.n_evals
    assert all(np.array_equal(a, b) for a, b in zip(first.factors, again.factors, strict=True))


# Mutants (api._assemble_counted): the warning given only past max_evals plus the fresh
# read itself (a differentiable run that read past max_evals said nothing), and the fresh
# read left out of n_evals.
def test_a_differentiable_read_past_max_evals_warns():
    settings = dict(tol=1e-8, val_size=300, random_state=0, return_info=True)
    _, search = tlc.select_indices(_cosine((16,) * 4), **settings)
    with pytest.warns(RuntimeWarning, match=f"max_evals={search.n_evals} bounds the index"):
        _, info = tlc.tt_cross(_cosine((16,) * 4), differentiable=True,
                               max_evals=search.n_evals, **settings)
    assert info.n_evals > search.n_evals  # the search, then the cores' fresh read


# Mutant (options.checkpoint_arguments): the rank bound as given, not written out: a rerun
# of rank=2 as rank=[1, 2, 2, 1] (the same run) was refused.
def test_a_checkpoint_binds_the_written_out_rank(tmp_path):
    settings = dict(method="als", tol=1e-8, random_state=0, return_info=True,
                    checkpoint=tmp_path / "c")
    _, info = tlc.tt_cross(_cosine((8,) * 3), rank=2, **settings)
    _, rerun = tlc.tt_cross(_cosine((8,) * 3), rank=[1, 2, 2, 1], **settings)
    assert rerun.n_restored == rerun.n_evals == info.n_evals


# Mutants (options._check_rank_within): the default max_rank enforced on a fixed rank (it
# is allowed to exceed it without a word), and a rank equal to an explicit max_rank refused.
def test_a_fixed_rank_may_exceed_the_default_max_rank_and_equal_an_explicit_one():
    from tensorly_cross.options import DEFAULT_MAX_RANK, cross_options

    shape = (200, 200, 200)
    assert cross_options(shape, rank=DEFAULT_MAX_RANK + 16).rank == DEFAULT_MAX_RANK + 16
    assert cross_options(shape, rank=[1, 8, 8, 1], max_rank=8).max_rank == 8
    with pytest.raises(ValueError, match="exceeds max_rank=8"):
        cross_options(shape, rank=9, max_rank=8)


# Mutant (driver._stop_reason): the callback's stop taking precedence over a pass: a sweep
# that met tol, after which the callback also asked to stop, reported "callback".
def test_a_pass_stops_on_tol_even_where_the_callback_also_asks_to_stop():
    seen = []

    def stop_always(tt, info):
        seen.append(info.n_sweeps)
        return True

    _, info = tlc.tt_cross(_cosine((16,) * 4), tol=1e-8, random_state=0, return_info=True,
                           callback=stop_always)
    assert seen == [1] and info.n_sweeps == 1
    assert info.stop_reason == "tol" and info.val_error <= 1e-8


# Mutant (options._auto_method): the least-squares cross chosen from 3 modes on, not 2: a
# stored matrix went to TCI (rank-adaptive) or the ALS cross (rank=) under "auto".
@pytest.mark.parametrize("rank", [None, 2])
def test_auto_runs_the_least_squares_cross_on_a_stored_matrix(rank):
    matrix = np.add.outer(np.arange(12.0), np.arange(10.0))
    _, info = tlc.tt_cross(matrix, rank=rank, random_state=0, return_info=True)
    assert info.method == "lsq"


def _missed_warnings(info, **settings):
    """The ToleranceNotMetWarning messages ``warn_if_missed`` gives for ``info``."""
    from tensorly_cross.cross.missed import warn_if_missed
    from tensorly_cross.options import cross_options

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_missed(cross_options((8, 8, 8), **settings), info)
    return [str(w.message) for w in caught if w.category is tlc.ToleranceNotMetWarning]


# Mutant (missed._STOPS_WITHOUT_PASS): "max_time" left out: a run stopped on max_time whose
# sample was below tol, but never passed, was returned without a word.
def test_a_max_time_stop_below_tol_without_a_pass_is_warned_of():
    from tensorly_cross.cross.stopping import CrossInfo

    info = CrossInfo(method="tci", val_errors=[5e-4], ranks=[(1, 3, 3, 1)], n_sweeps=1,
                     best_sweep=1, stop_reason="max_time", n_heldout=500)
    messages = _missed_warnings(info, tol=1e-3, method="tci")
    assert len(messages) == 1 and "not met with confidence" in messages[0]
    assert "raise max_time" in messages[0]


# Mutant (missed.warn_if_missed): the ranks of the last sweep named, not of the sweep
# returned: the message said the largest rank 5 (and to raise max_rank=5) of a TT of rank 3.
def test_the_missed_tolerance_warning_names_the_ranks_of_the_sweep_returned():
    from tensorly_cross.cross.stopping import CrossInfo

    info = CrossInfo(method="tci", val_errors=[0.5, 0.6], ranks=[(1, 3, 3, 1), (1, 5, 5, 1)],
                     n_sweeps=2, best_sweep=1, stop_reason="stalled", n_heldout=500)
    messages = _missed_warnings(info, tol=1e-3, method="tci", max_rank=5)
    assert len(messages) == 1 and "largest rank 3" in messages[0]
    assert "raise max_rank" not in messages[0]


# Mutant (missed.warn_if_missed): TCI with rank= taken for a fixed-rank run, whose missed
# tol is no news: TCI's rank is only a cap, and a TT far above tol came back silently.
def test_tci_capped_by_rank_warns_when_it_misses_tol():
    wavy = tlc.FunctionTensor(lambda idx: np.sin(idx[:, 0] * idx[:, 1] * idx[:, 2] / 7.0),
                              (12, 12, 12))
    with pytest.warns(tlc.ToleranceNotMetWarning, match="raise rank"):
        _, info = tlc.tt_cross(wavy, method="tci", rank=1, tol=1e-8, random_state=0,
                               return_info=True)
    assert info.val_error > 1e-8


# Mutant (missed.warn_if_missed): "not checked" only with val_size > 0: a run with
# val_size=0 that a budget stopped before its first sweep returned the starting TT silently.
def test_a_budget_stop_before_the_first_sweep_warns_even_without_held_out_entries():
    from tensorly_cross.cross.stopping import CrossInfo

    info = CrossInfo(method="tci", ranks=[], n_sweeps=0, best_sweep=0,
                     stop_reason="max_evals", n_heldout=0, n_evals=150)
    messages = _missed_warnings(info, tol=1e-3, method="tci", val_size=0)
    assert len(messages) == 1 and "before its first sweep" in messages[0]


# Mutant (api._sweep_size): the fibers of bond k counted without the left set's size
# (right[k - 1]): a budget too small for one sweep named 112 entries for a sweep of 192.
def test_a_budget_too_small_for_one_sweep_names_the_entries_a_sweep_reads():
    # ALS at rank 2 on 16^4: fibers 16*2 + 2*16*2 + 2*16*2 + 2*16 = 192.
    with pytest.raises(ValueError, match="reads up to about 192 more"):
        tlc.tt_cross(_cosine((16,) * 4), method="als", rank=2, val_size=0, max_evals=20,
                     random_state=0)


# Mutant (driver._run_sweeps): the first sweep eligible as the best: its right sets are
# still random (the TT interpolates only once both families come from the tensor), yet a
# first sweep of lower held-out error than the later ones was returned.
@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
def test_the_first_sweep_is_not_returned_once_a_later_one_completed():
    wavy = tlc.FunctionTensor(lambda idx: np.sin(idx[:, 0] * idx[:, 1] * idx[:, 2] / 7.0),
                              (10, 10, 10))
    _, info = tlc.tt_cross(wavy, method="als", rank=1, tol=1e-9, n_iter_max=4, patience=None,
                           random_state=2, return_info=True)
    assert info.val_errors[0] < min(info.val_errors[1:])  # the case this test is about
    assert info.best_sweep >= 2
    assert info.val_error == min(info.val_errors[1:])


# Mutant (indices._check_ranks_fit): a least-squares rank one above the multi-indices that
# bound its bond let through (the TT rebuilt had smaller ranks than the dict claimed).
def test_a_least_squares_rank_above_its_sets_is_refused():
    matrix = np.add.outer(np.arange(6.0), np.arange(5.0)) ** 2
    data = tlc.select_indices(matrix, rank=2, method="lsq", random_state=0).to_dict()
    room = min(len(data["left"][1]), len(data["right"][0]))  # 5: right[0]'s rows
    with pytest.raises(ValueError, match=f"ranks\\[1\\]={room + 1} exceeds the {room}"):
        tlc.cross_interpolate(matrix, dict(data, ranks=[1, room + 1, 1]))



# Mutants (indices._as_size, indices._integral): a fractional mode size read as its integer
# part (7.9 as 7), and a float index of 2**63 or more let through to the int64 cast (which
# wraps it): both from a dict, both refused by name.
def test_a_dict_with_a_fractional_size_or_an_index_beyond_int64_is_refused():
    data = tlc.select_indices(np.add.outer(np.arange(8.0), np.arange(5.0)), rank=1,
                              method="als", random_state=0).to_dict()
    with pytest.raises(ValueError, match="shape entries must be integers >= 1, got 7.9"):
        tlc.CrossIndices.from_dict(dict(data, shape=[7.9, 5]))
    left = list(data["left"])
    left[1] = [[2.0**63]]
    with pytest.raises(ValueError, match=r"left\[1\] must be a list of multi-indices"):
        tlc.CrossIndices.from_dict(dict(data, left=left))
