"""Audit s33 (resume): resumable runs and clean stops, as the docs promise them
(``checkpoint=``, ``max_time=``): the counters of a resumed run, and checkpoint paths."""

import time
import warnings

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross import CheckpointError
from tensorly_cross.lazy.keys import KeyScheme

GRID = np.linspace(1.0, 2.0, 10)
SHAPE = (10,) * 4


class Failing:
    """A smooth function of rank > 1 that counts what it computes and raises a
    RuntimeError on the call that would take its count past ``fail_after``."""

    def __init__(self, fail_after=None):
        self.computed, self.fail_after = 0, fail_after

    def __call__(self, indices):
        if self.fail_after is not None and self.computed + len(indices) > self.fail_after:
            raise RuntimeError("transient failure")
        self.computed += len(indices)
        x = GRID[indices]
        return 1.0 / x.sum(axis=1) + 0.1 * np.sin(x[:, 0] * x[:, -1])


def _chunked(function):
    # In chunks: a failed batch's finished chunks go to the checkpoint, so the rerun's
    # batch at that point is read back in part.
    return tlc.FunctionTensor(function, SHAPE, chunk_size=5)


def test_entries_read_back_in_a_batch_that_max_time_stopped_are_not_counted_restored(tmp_path):
    # A batch read back in part, whose other part max_time refused, was counted in
    # n_restored though n_evals dropped it with its batch: a resumed run stopped by
    # max_time reported n_restored > n_evals, "the function ran n_evals - n_restored"
    # times a negative number.
    settings = dict(tol=1e-10, random_state=0, checkpoint=tmp_path / "run.ckpt")
    _, whole = tlc.tt_cross(_chunked(Failing()), tol=1e-10, random_state=0, return_info=True)
    # Failed in the second sweep, part way through a batch.
    first = Failing(fail_after=(whole.evals_per_sweep[0] + whole.evals_per_sweep[1]) // 2)
    with pytest.raises(RuntimeError, match="transient"):
        tlc.tt_cross(_chunked(first), **settings)
    # Replayed at once, then stopped at the batch that failed: no time left for the rest.
    rerun = Failing()
    with pytest.warns(tlc.ToleranceNotMetWarning, match="max_time"):
        _, info = tlc.tt_cross(_chunked(rerun), max_time=1e-9, return_info=True, **settings)
    assert info.stop_reason == "max_time"
    assert rerun.computed == 0
    assert info.n_restored <= info.n_evals
    assert info.n_evals - info.n_restored == rerun.computed


def test_a_checkpoint_path_ending_in_a_separator_is_refused_as_a_folder(tmp_path):
    # "runs/" names a folder; it created a FILE "runs" holding the checkpoint (a later
    # mkdir runs failed), where an existing folder is refused and save_tt refuses both.
    with pytest.raises(CheckpointError, match="folder"):
        tlc.tt_cross(_chunked(Failing()), tol=1e-6, random_state=0,
                     checkpoint=f"{tmp_path / 'runs'}/")
    assert not (tmp_path / "runs").exists()


class SlowAfter:
    """Failing's function that sleeps ``seconds`` once, on the first call after it has
    computed ``after`` entries: a run under a shorter max_time stops at the next batch."""

    def __init__(self, after, seconds):
        self.function, self.after, self.seconds = Failing(), after, seconds

    def __call__(self, indices):
        if self.after is not None and self.function.computed >= self.after:
            self.after = None
            time.sleep(self.seconds)
        return self.function(indices)


@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
def test_the_fresh_read_of_differentiable_past_max_time_is_warned_of():
    # max_time "no new batch of evaluations starts" once past; differentiable=True read
    # every core's entries again after a search that max_time had stopped (a run with
    # max_time=1.2 took 1.75 s, 2720 entries read past it) without a word, where the same
    # read past max_evals is warned of.
    _, whole = tlc.tt_cross(Failing(), shape=SHAPE, tol=1e-10, random_state=0,
                            return_info=True)
    function = SlowAfter(whole.evals_per_sweep[0], seconds=1.1)
    with pytest.warns(RuntimeWarning, match=r"max_time=1.0 bounds the index search") as seen:
        _, info = tlc.tt_cross(function, shape=SHAPE, tol=1e-10, random_state=0,
                               max_time=1.0, differentiable=True, return_info=True)
    # Its 1.1 s batch took the search itself past max_time: the advice says so, rather
    # than "lower max_time by that read", which would not have sufficed.
    message = next(str(w.message) for w in seen if "bounds the index search" in str(w.message))
    assert "The search itself ended" in message and "Lower max_time" not in message
    assert info.stop_reason == "max_time"
    assert function.function.computed == info.n_evals


def test_a_differentiable_search_within_max_time_is_not_warned_of():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _, info = tlc.tt_cross(Failing(), shape=SHAPE, tol=1e-6, random_state=0,
                               max_time=600, differentiable=True, return_info=True)
    assert info.stop_reason == "tol"


def test_a_callback_of_a_resumed_run_sees_the_entries_restored_so_far(tmp_path):
    # The callback's info counted the restored entries in n_evals but showed n_restored=0
    # until the run returned: on a replay that evaluated nothing, a callback saw "the
    # function ran n_evals - n_restored" = 1539 times after the first sweep.
    settings = dict(tol=1e-10, random_state=0, n_iter_max=3, checkpoint=tmp_path / "c.ckpt")
    tlc.tt_cross(_chunked(Failing()), **settings)
    seen, rerun = [], Failing()
    _, info = tlc.tt_cross(_chunked(rerun), return_info=True,
                           callback=lambda tt, info: seen.append(info), **settings)
    assert rerun.computed == 0 and len(seen) == info.n_sweeps > 1
    assert [record.n_restored for record in seen] == [record.n_evals for record in seen]
    assert seen[-1].n_restored == info.n_restored


def test_a_checkpoint_interrupted_while_it_is_indexed_is_not_left_locked(tmp_path,
                                                                         monkeypatch):
    # Ctrl-C while a run sorted the keys of a large checkpoint (seconds for 1e8 entries),
    # after the store had taken the file's lock and before the run's try/finally closed
    # it: the store stayed open while the traceback lived (IPython keeps the last one),
    # and every rerun was refused as "in use by another run". The interrupt is injected
    # right after the real key computation, as a handler run there would raise it.
    settings = dict(tol=1e-6, random_state=0, checkpoint=tmp_path / "c.ckpt")
    tlc.tt_cross(_chunked(Failing()), **settings)
    real_keys = KeyScheme.keys

    def keys_then_interrupt(self, indices):
        real_keys(self, indices)
        raise KeyboardInterrupt

    monkeypatch.setattr(KeyScheme, "keys", keys_then_interrupt)
    with pytest.raises(KeyboardInterrupt) as interrupted:  # its traceback kept alive
        tlc.tt_cross(_chunked(Failing()), **settings)
    monkeypatch.undo()
    rerun = Failing()
    _, info = tlc.tt_cross(_chunked(rerun), return_info=True, **settings)
    assert interrupted.tb is not None
    assert rerun.computed == 0 and info.n_restored == info.n_evals


def test_a_checkpoint_path_with_a_nul_character_is_refused_for_it():
    # os's "embedded null byte" was taken for a path that is not a regular file: the
    # message said "a FIFO, socket or device".
    with pytest.raises(ValueError, match="NUL") as refused:
        tlc.tt_cross(_chunked(Failing()), random_state=0, checkpoint="run\0.ckpt")
    assert "FIFO" not in str(refused.value)


def test_a_checkpoint_in_a_file_taken_for_a_folder_is_named_as_such(tmp_path):
    # "run.ckpt/part" under an existing FILE run.ckpt was refused as "its folder ... does
    # not exist", though it does, as a file.
    (tmp_path / "run.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        tlc.tt_cross(_chunked(Failing()), random_state=0,
                     checkpoint=tmp_path / "run.ckpt" / "part")
