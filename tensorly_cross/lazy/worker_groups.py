"""One dask task per worker: a batch's chunks grouped by worker, run on the worker's threads.

Every dask task pays a fixed cost in the client, the scheduler and the worker. On a
``LocalCluster`` of 8 threads a batch of 8 chunks that do nothing took 18 ms and a batch of
one chunk 11 ms; with 15 ms of sleep in each chunk, 34-40 ms as 8 tasks against 26-27 ms
as one task that runs the 8 chunks on 8 threads itself (``bench_scale.py parallel``
measures the whole run). So a worker gets one task holding the chunks its threads would
have run, and the task runs them on a thread pool of the size of the worker it runs on,
kept with that worker. A worker of one thread (a cluster of processes) runs its chunks
directly.
"""

import contextvars
import threading
import weakref
from concurrent.futures import CancelledError, ThreadPoolExecutor

import numpy as np

from .chunk_result import NOTE_PREFIX, noted_result, results_in_order, span

# Worker -> its pool. The workers of a cluster of threads share one process, so a pool per
# worker, not per process. The worker also lists it among its executors, so that closing
# the worker shuts the pool down: distributed keeps closed workers alive until exit
# (functools.cache of their handlers), so the weak key alone left their threads idle.
_POOLS = weakref.WeakKeyDictionary()
POOL_NAME = "tensorly-cross"
_POOLS_LOCK = threading.Lock()


def group_chunks(n_chunks, workers):
    """``(address, threads, start, stop)`` per worker with chunks: consecutive chunks
    ``start:stop`` out of ``n_chunks``, shared in proportion to ``threads``.

    Parameters
    ----------
    n_chunks : int
    workers : sequence of (str or None, int)
        Each worker's address and thread count.

    Returns
    -------
    list of tuple
    """
    total = sum(threads for _, threads in workers)
    groups, start, seen = [], 0, 0
    for address, threads in workers:
        seen += threads
        stop = (n_chunks * seen) // total  # the last worker's stop is n_chunks
        if stop > start:
            groups.append((address, threads, start, stop))
        start = stop
    return groups


def submit_groups(client, timed, chunks, workers):
    """One future per worker group; each resolves to its chunks' ``(values, seconds)``.

    The groups go in one ``map`` (one message to the scheduler), not pinned: pinning needs
    a ``submit`` per worker, and the client sends its messages in batches at most every
    10 ms (distributed's ``BatchedSend``: read in its source, not measured here), so the
    later ones could wait that long. Unpinned, the scheduler gave idle workers a task
    each (40 of 40 batches on 2 workers of 2 threads).
    """
    groups = group_chunks(len(chunks), workers)
    # pure=False: a group is never merged with an equal-looking earlier task.
    return client.map(run_group, [timed] * len(groups),
                      [chunks[start:stop] for _, _, start, stop in groups],
                      [start for _, _, start, _ in groups],
                      [len(chunks)] * len(groups), pure=False)


def gather_groups(client, futures, chunks, workers, deadline=None):
    """The chunks' ``(values, seconds)`` in order, from :func:`submit_groups`' futures.

    A group notes its failing chunk where it ran; when that note did not survive the trip
    (dask sends an exception it cannot pickle as a plain one), the group's range is noted
    here. Past ``deadline`` (a :class:`~tensorly_cross.lazy.deadline.Deadline`), the
    groups still running are left to the caller to cancel: MaxTimeReached.
    """
    if deadline is not None:
        _wait_until(client, futures, deadline)
    try:
        return [result for group in client.gather(futures) for result in group]
    except CancelledError as error:  # the function never finished them: do not blame it
        error.add_note(f"the batch ({len(chunks)} chunk{'s' if len(chunks) > 1 else ''}, "
                       f"{span(np.concatenate(chunks))}) was cancelled before it finished: "
                       "the dask client was closed, or its cluster shut down, while the "
                       "batch waited for it")
        raise
    except Exception as error:
        if not any(note.startswith(NOTE_PREFIX) for note in getattr(error, "__notes__", ())):
            groups = group_chunks(len(chunks), workers)
            failed = [number for number, future in enumerate(futures)
                      if future.status == "error"][:1]
            for number in failed:
                start, stop = groups[number][2:]
                which = f" {stop}" if stop - start == 1 else f"s {start + 1}-{stop}"
                error.add_note(f"{NOTE_PREFIX}{which} of {len(chunks)}: "
                               f"{span(np.concatenate(chunks[start:stop]))}")
        raise


def _wait_until(client, futures, deadline):
    """Return once every future of ``client`` is done or one has failed; raise
    MaxTimeReached once past ``deadline`` before that."""
    from distributed import as_completed

    # On the client's own loop: as_completed takes the default client's, and failed with
    # "No clients found" for a client made with set_as_default=False.
    waiting = as_completed(futures, loop=client.loop, timeout=max(0.0, deadline.remaining()))
    try:
        for future in waiting:
            if future.status == "error":
                return  # gathered at once: its error is the batch's
    except TimeoutError:  # distributed's TimeoutError is the built-in one
        unfinished = sum(not future.done() for future in futures)
        raise deadline.reached(f"with {unfinished} of {len(futures)} dask tasks of a batch "
                               "still to finish") from None


def run_group(timed, chunks, first_number, n_chunks):
    """The ``(values, seconds)`` of each chunk, run on the threads of the worker running it.

    The first failing chunk's exception is raised with a note naming its multi-indices
    (its number counts from ``first_number`` out of ``n_chunks``).
    """
    try:
        return _run_chunks(timed, chunks, first_number, n_chunks)
    except Exception:
        raise
    except BaseException as error:
        # A dask worker never reports a task's SystemExit or other BaseException: the
        # client waited for it forever. Sent as an Exception that says what it was.
        aborted = RuntimeError(f"the function raised {type(error).__name__}: {error}")
        aborted.add_note(f"{NOTE_PREFIX}s {first_number + 1}-{first_number + len(chunks)} "
                         f"of {n_chunks}: {span(np.concatenate(chunks))}")
        raise aborted from error


def _run_chunks(timed, chunks, first_number, n_chunks):
    worker = _current_worker()
    threads = _worker_threads(worker)
    if len(chunks) == 1 or threads == 1:
        return [noted_result(lambda chunk=chunk: timed(chunk), chunk, first_number + number,
                             n_chunks) for number, chunk in enumerate(chunks)]
    pool = _pool(worker, threads)
    # Each chunk in a copy of this task's context: distributed.get_worker() and other
    # context variables still work inside the function.
    futures = [pool.submit(contextvars.copy_context().run, timed, chunk) for chunk in chunks]
    return results_in_order(futures, chunks, first_number, n_chunks)


def _current_worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # called outside a dask worker
        return None


def _worker_threads(worker):
    """The threads of the worker running the group (not those it was sized for: the
    scheduler may place it elsewhere), so that it never runs more chunks at once than
    ``threads_per_worker`` allows."""
    threads = getattr(getattr(worker, "state", None), "nthreads", None)
    return max(1, int(threads)) if threads else 1


def _pool(worker, threads):
    with _POOLS_LOCK:
        pool = _POOLS.get(worker)
        if pool is None:
            pool = _POOLS[worker] = _worker_pool_class()(threads, thread_name_prefix=POOL_NAME)
            executors = getattr(worker, "executors", None)
            if isinstance(executors, dict):
                # A new dict, not an insertion: Worker.close iterates over the executors
                # with awaits in between, and a task thread inserting then broke its loop
                # ("dictionary changed size during iteration"). A close under way shuts
                # the old dict's executors down; a pool made during it stays idle.
                worker.executors = {**executors, POOL_NAME: pool}
        return pool


def _worker_pool_class():
    """distributed's thread pool, whose shutdown at the worker's close has a timeout (a
    chunk that hangs does not hang the close); the standard one outside distributed."""
    try:
        from distributed.threadpoolexecutor import ThreadPoolExecutor as WorkerPool
    except ImportError:
        return ThreadPoolExecutor
    return WorkerPool
