"""Review of session 26's changes: regressions they brought in.

- max_time on a dask client that is not the default one (``Client(...,
  set_as_default=False)``, or a second client) failed every batch with distributed's
  "No clients found" (its ``as_completed`` waits on the default client's loop).
- The deadline of a run leaked into a nested run without ``max_time`` (a tensor whose
  entries each run a cross of their own): the inner run's chunked function raised the
  outer run's MaxTimeReached.
- ``main()`` replaced a SIGTERM handler it did not own: a program embedding it with its
  own handler never saw its SIGTERM (the command returned 143 and the program went on),
  and a process started with SIGTERM ignored was ended by it.
- Serial chunks (``chunk_size`` without an executor) of a function that refills one
  output buffer all held the last chunk's values; a chunk with the wrong number of values
  was found only after every other chunk had run.
- A deadline met in a run's first batch, which chunks now stop in, raised a
  MaxTimeReached that said neither that no sweep completed nor that a rerun resumes.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross import cli


def _smooth(indices):
    return 1.0 / (1.0 + indices.sum(axis=1))


def test_max_time_on_a_dask_client_that_is_not_the_default():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        lazy = tlc.FunctionTensor(_smooth, (8, 8, 8), executor=client)
        tt, info = tlc.tt_cross(lazy, rank=2, max_time=60, random_state=0,
                                return_info=True)
    assert info.stop_reason != "max_time"
    assert info.n_evals > 0


class _CrossPerBatch(tlc.LazyTensor):
    """Entries whose every batch first runs a cross of its own, without max_time, on a
    function evaluated in chunks; the outer run's deadline passes meanwhile."""

    def __init__(self):
        super().__init__((5, 5, 5))
        self.inner_stops = []

    def _evaluate(self, indices):
        time.sleep(0.25)
        inner = tlc.FunctionTensor(_smooth, (6, 6, 6), chunk_size=4)
        _, info = tlc.tt_cross(inner, rank=2, random_state=0, return_info=True)
        self.inner_stops.append(info.stop_reason)
        return _smooth(indices)


def test_a_nested_run_without_max_time_is_not_stopped_by_the_outer_runs():
    lazy = _CrossPerBatch()
    with pytest.raises(tlc.MaxTimeReached, match="before the first sweep"):
        tlc.tt_cross(lazy, rank=2, random_state=0, max_time=0.1)
    assert lazy.inner_stops and "max_time" not in lazy.inner_stops


def _paced_writes(monkeypatch):
    """Small blocks, each after a pause (at most about 24 MB a second on disk): the write of
    1.6 TB, unpaced, ran until the disk was full (ENOSPC, exit code 1) on a loaded machine
    before the signals were handled. The write still lasts far longer than they take."""
    from tensorly_cross import _reconstruct

    values = _reconstruct.volume_values

    def paced(*args):
        time.sleep(0.01)
        return values(*args)

    monkeypatch.setattr(_reconstruct, "BLOCK_ENTRIES", 2**16)
    monkeypatch.setattr(_reconstruct, "volume_values", paced)


def _terminate_while_writing(tmp_path, then, monkeypatch):
    """Run ``reconstruct`` of a huge NIfTI in this process, paced; once its temporary file
    exists, send this process SIGTERM, then call ``then()`` (from another thread). Returns
    main's exit code and what the thread saw as SIGTERM's handler during the command.
    ``then`` is not called once the command has ended (its signal would reach pytest)."""
    _paced_writes(monkeypatch)
    # 320 GB of float64, gzipped (ones: about 1000 to 1), so that it is still writing when
    # terminated and yet passes the check that the output's disk can hold it.
    shape = (20000, 20000, 100)
    tlc.save_tt(tmp_path / "huge.tt.npz", [np.ones((1, n, 1)) for n in shape],
                {"shape": list(shape)})
    seen, ended = {}, threading.Event()

    def signal_it():
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".tensorly-cross-*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.02)
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        if not ended.is_set():
            then()

    thread = threading.Thread(target=signal_it)
    thread.start()
    try:
        code = cli.main(["reconstruct", str(tmp_path / "huge.tt.npz"), "-o",
                         str(tmp_path / "huge.nii.gz")])
    finally:
        ended.set()
        thread.join()
    return code, seen["handler"]


class _Shutdown(BaseException):
    pass


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_main_keeps_an_embedding_programs_own_sigterm_handler(tmp_path, monkeypatch):
    received = []

    def shutdown(signum, frame):
        received.append(signum)
        raise _Shutdown

    previous = signal.signal(signal.SIGTERM, shutdown)
    try:
        with pytest.raises(_Shutdown):
            _terminate_while_writing(tmp_path, then=lambda: None, monkeypatch=monkeypatch)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["huge.tt.npz"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_main_keeps_sigterm_ignored_when_it_was(tmp_path, monkeypatch):
    # Ctrl-C must raise KeyboardInterrupt here: a shell without job control starts its
    # background jobs (`cmd &` in a script) with SIGINT ignored, and the write went on.
    interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        code, handler = _terminate_while_writing(
            tmp_path, then=lambda: os.kill(os.getpid(), signal.SIGINT), monkeypatch=monkeypatch)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, interrupt)
    assert handler is signal.SIG_IGN
    assert code == cli.EXIT_INTERRUPTED  # ended by the Ctrl-C, not by the ignored SIGTERM


def test_serial_chunks_of_a_function_that_refills_one_output_buffer():
    """A wrapped model writing into one output array it returns every time: in one call
    per batch (before chunk_size applied serially) the values were right; in serial
    chunks, every chunk showed the last chunk's values."""
    buffer = np.empty(64)

    def refills(indices):
        out = buffer[:len(indices)]
        out[:] = _smooth(indices)
        return out

    indices = np.array([[i, j, 0] for i in range(4) for j in range(4)])
    values = tlc.FunctionTensor(refills, (4, 4, 4), chunk_size=4).evaluate(indices)
    np.testing.assert_allclose(values, _smooth(indices))


def test_max_time_in_the_first_batch_in_chunks_says_the_checkpoint_resumes(tmp_path):
    """The deadline met inside the run's first batch (its held-out entries), which chunks
    now stop at: the MaxTimeReached that reached the caller spoke only of chunks ('reached
    after 3 of 42 chunks of a batch'), not that no sweep completed nor that the
    checkpoint holds what was read, as it does for a deadline met in a sweep."""

    def slow(indices):
        time.sleep(0.05)
        return _smooth(indices)

    lazy = tlc.FunctionTensor(slow, (8, 8, 8), chunk_size=4)
    with pytest.raises(tlc.MaxTimeReached, match="before the first sweep.*rerun to resume"):
        tlc.tt_cross(lazy, rank=2, random_state=0, max_time=0.12,
                     checkpoint=str(tmp_path / "run.ckpt"))


def test_a_serial_chunk_with_the_wrong_number_of_values_stops_the_batch_there():
    """Serial chunks were checked once every chunk had run: a function returning one value
    too few ran every other chunk of the batch (hours of them) before the ValueError,
    where one call per batch failed after that call."""
    calls = []

    def one_short(indices):
        calls.append(len(indices))
        return _smooth(indices)[:-1]

    lazy = tlc.FunctionTensor(one_short, (8, 8, 8), chunk_size=4)
    with pytest.raises(ValueError, match="for a chunk of 4"):
        lazy.evaluate(np.zeros((40, 3), dtype=np.int64))
    assert calls == [4]


@pytest.mark.parametrize("as_tensor", ["torch 1-d", "torch 0-d", "list of torch 0-d"])
def test_ranks_as_tensors_with_a_checkpoint_and_a_max_rank(tmp_path, as_tensor):
    """Ranks as a backend's integer tensor, newly taken: with a checkpoint, the run failed
    with a bare 'TypeError: iteration over a 0-d tensor' (the checkpoint's JSON header);
    and a fixed rank above an explicit max_rank, refused for a list, was let through."""
    torch = pytest.importorskip("torch")
    rank = {"torch 1-d": torch.tensor([1, 3, 3, 1]), "torch 0-d": torch.tensor(3),
            "list of torch 0-d": [1, torch.tensor(3), torch.tensor(3), 1]}[as_tensor]
    lazy = tlc.FunctionTensor(_smooth, (6, 6, 6))
    got = tlc.tt_cross(lazy, rank=rank, random_state=0, checkpoint=str(tmp_path / "c"))
    again = tlc.tt_cross(lazy, rank=[1, 3, 3, 1], random_state=0,
                         checkpoint=str(tmp_path / "c"))  # the same run: it resumes
    assert tuple(got.rank) == tuple(again.rank) == (1, 3, 3, 1)
    with pytest.raises(ValueError, match="exceeds max_rank=2"):
        tlc.tt_cross(lazy, rank=rank, max_rank=2, random_state=0)


def test_decimal_targets_are_still_taken():
    """Targets as ``decimal.Decimal`` (pandas' read_sql of a NUMERIC column): taken before
    the real-number check, then refused as 'not real numbers ... encode class labels as
    numbers first' (a Decimal is a number, but not a ``numbers.Real``)."""
    import decimal

    pytest.importorskip("torch")
    from tensorly_cross.nn import VolumeDataset

    volumes = [np.zeros((4, 4, 4)), np.ones((4, 4, 4))]
    data = VolumeDataset(volumes, [decimal.Decimal("1.5"), decimal.Decimal("2")])
    assert data.targets.tolist() == [1.5, 2.0]


def test_subset_takes_an_object_array_of_ints_and_names_a_bad_entry():
    """An object array of ints (a pandas column of mixed types' values): taken before the
    new index check, then refused with a bare AttributeError ("'int' object has no
    attribute 'item'") raised while writing the refusal."""
    pytest.importorskip("torch")
    from tensorly_cross.nn import VolumeDataset

    data = VolumeDataset([np.zeros((4, 4, 4))] * 3, [0.0, 1.0, 2.0])
    assert data.subset(np.array([0, 2], dtype=object)).targets.tolist() == [0.0, 2.0]
    with pytest.raises(TypeError, match="indices must be ints.*such as 'a'"):
        data.subset(np.array([0, "a"], dtype=object))
