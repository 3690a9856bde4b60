"""One dask task per worker: a batch's chunks grouped by worker, run on the worker's threads.

Every dask task pays a fixed cost in the client, the scheduler and the worker. On a
``LocalCluster`` of 8 threads a batch of 8 chunks that do nothing took 18 ms and a batch of
one chunk 11 ms; with 15 ms of sleep in each chunk, 34-40 ms as 8 tasks against 26-27 ms
as one task that runs the 8 chunks on 8 threads itself (``bench_scale.py parallel``
measures the whole run). So a worker gets one task holding the chunks its threads would
have run, and the task runs them on a thread pool of the worker's size in the worker's
process. A worker of one thread (a cluster of processes) runs its one chunk directly.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

from .chunk_result import noted_result

# One pool per size in each process that runs groups (a dask worker process, or the
# client's process for a cluster of threads); threads are kept between batches.
_POOLS = {}
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

    The groups go in one ``map`` (one message to the scheduler), not pinned: a ``submit``
    per worker sent the second one up to 10 ms later (the client batches its messages),
    and the scheduler gives idle workers a task each.
    """
    groups = group_chunks(len(chunks), workers)
    # pure=False: a group is never merged with an equal-looking earlier task.
    return client.map(run_group, [timed] * len(groups),
                      [chunks[start:stop] for _, _, start, stop in groups],
                      [threads for _, threads, _, _ in groups],
                      [start for _, _, start, _ in groups],
                      [len(chunks)] * len(groups), pure=False)


def run_group(timed, chunks, threads, first_number, n_chunks):
    """The ``(values, seconds)`` of each chunk, run on up to ``threads`` threads here.

    The first failing chunk's exception is raised with a note naming its multi-indices
    (its number counts from ``first_number`` out of ``n_chunks``).
    """
    if len(chunks) == 1 or threads == 1:
        return [noted_result(lambda chunk=chunk: timed(chunk), chunk, first_number + number,
                             n_chunks) for number, chunk in enumerate(chunks)]
    pool = _pool(min(threads, len(chunks)))
    futures = [pool.submit(timed, chunk) for chunk in chunks]
    try:
        return [noted_result(future.result, chunk, first_number + number, n_chunks)
                for number, (future, chunk) in enumerate(zip(futures, chunks, strict=True))]
    except BaseException:
        for future in futures:
            future.cancel()
        raise


def _pool(size):
    with _POOLS_LOCK:
        if size not in _POOLS:
            _POOLS[size] = ThreadPoolExecutor(size, thread_name_prefix="tensorly-cross")
        return _POOLS[size]
