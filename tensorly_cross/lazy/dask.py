"""DaskTensor: sample an out-of-core array by chunk-grouped reads, locally or on a cluster.

One batch of multi-indices becomes one read per touched chunk: the batch is grouped by
chunk, each chunk is read once (from a byte-bounded LRU when it is warm), values are
gathered and put back in request order. With a ``dask.distributed`` client the per-chunk
gathers run on the workers, each chunk always on the same worker so that worker's cache
serves it next time.
"""

import threading
import uuid
import zlib
from collections import OrderedDict

import numpy as np
import tensorly as tl

from .base import LazyTensor
from .chunk_cache import ChunkCache
from .sources import as_chunk_source, read_retrying, refuse_unsendable

# Index arrays above this many entries are scattered to the cluster, not put in the graph.
_SCATTER_ENTRIES = 50_000
# Chunk caches a worker keeps, one per DaskTensor, least recently used dropped first: each
# holds up to its tensor's cache_bytes, and nothing tells a worker a tensor is gone.
_MAX_WORKER_CACHES = 4
_WORKER_CACHES = OrderedDict()
_WORKER_LOCK = threading.Lock()


class DaskTensor(LazyTensor):
    """A lazy tensor over a dask array, zarr array, h5py dataset or sliceable proxy.

    Parameters
    ----------
    array : dask array, zarr array, h5py dataset, or any sliceable array
        A dask array made directly from a zarr array or h5py dataset is read from that
        store (dask's own ``vindex`` costs milliseconds per call); other dask arrays are
        read chunk by chunk through dask.
    cache_bytes : int, default 256 MiB
        Bound of the decoded-chunk LRU (per process; 0 disables it).
    client : dask.distributed.Client or None
        Run the per-chunk gathers on this cluster's workers.

    Attributes
    ----------
    chunks_read, bytes_read, chunk_hits : int
        Chunks read from storage, their bytes as stored (uncompressed: a scaled NIfTI
        counts its int16, not the float64 it reads back as), and chunks served by the cache
        (local reads only; with a client the workers keep their own caches).

    Examples
    --------
    >>> import numpy as np
    >>> import zarr
    >>> from tensorly_cross import DaskTensor
    >>> array = zarr.zeros((64, 64), chunks=(16, 16), dtype="f8")  # in memory here
    >>> array[:] = np.arange(64 * 64.0).reshape(64, 64)
    >>> lazy = DaskTensor(array)
    >>> lazy.evaluate([[0, 1], [17, 3], [0, 2]])
    array([1.000e+00, 1.091e+03, 2.000e+00])
    >>> lazy.chunks_read, lazy.chunk_hits
    (2, 0)
    """

    stored = True

    def __init__(self, array, cache_bytes=256 * 2**20, client=None):
        self.source = as_chunk_source(array)
        super().__init__(self.source.shape)
        self.cache = ChunkCache(cache_bytes)
        self.cache_bytes = self.cache.max_bytes
        self.client = check_client(client)
        if self.client is not None:  # its workers reopen the file
            refuse_unsendable(self.source)
        self.chunks_read = self.bytes_read = self.chunk_hits = 0
        self._bounds = [np.concatenate([[0], np.cumsum(c)]).astype(np.int64)
                        for c in self.source.chunks]
        self._grid = tuple(len(c) for c in self.source.chunks)
        # Unique for ever: id(self) is reused once this tensor is collected, and a new
        # tensor of a rewritten file would then be served the old file's cached chunks.
        self._token = f"{self.source.name}:{uuid.uuid4().hex}"

    @property
    def described_as(self):
        """How messages name this tensor: with the store it reads."""
        return f"DaskTensor of {self.source.name}"

    def _evaluate(self, indices):
        chunk_ids, groups = self._group_by_chunk(indices)
        values = np.empty(indices.shape[0], dtype=np.float64)
        if self.client is None:
            for position in self._hits_first(chunk_ids):
                members = groups[position]
                values[members] = self._gather_local(chunk_ids[position], indices[members])
        else:
            for members, gathered in self._gather_distributed(chunk_ids, groups, indices):
                values[members] = gathered
        return tl.tensor(values)

    def _group_by_chunk(self, indices):
        """Touched chunk ids (ascending) and, for each, the positions of its points."""
        coords = [np.searchsorted(bounds, indices[:, axis], side="right") - 1
                  for axis, bounds in enumerate(self._bounds)]
        chunk_of_point = np.ravel_multi_index(tuple(coords), self._grid)
        order = np.argsort(chunk_of_point, kind="stable")
        chunk_ids, starts = np.unique(chunk_of_point[order], return_index=True)
        # No chunk, no group: np.split of an empty batch gives one empty group.
        return chunk_ids, np.split(order, starts[1:]) if chunk_ids.size else []

    def _hits_first(self, chunk_ids):
        """Batch order: cached chunks first, then the others, each in ascending order.

        Reading the misses first would evict cached chunks that this very batch needs when
        it touches more chunks than the cache holds (LRU thrashing); this order serves every
        hit the cache holds at the start of the batch.
        """
        cached = np.array([int(chunk_id) in self.cache for chunk_id in chunk_ids], dtype=bool)
        return np.concatenate([np.flatnonzero(cached), np.flatnonzero(~cached)])

    def chunk_slices(self, chunk_id):
        """The slices of one chunk, from its flat id.

        Parameters
        ----------
        chunk_id : int
            The chunk's position in the C-ordered grid of chunks.

        Returns
        -------
        slices : tuple of slice
            One slice per axis: the chunk's extent in the array.
        """
        coords = np.unravel_index(int(chunk_id), self._grid)
        return tuple(slice(int(b[c]), int(b[c + 1])) for b, c in zip(self._bounds, coords,
                                                                         strict=True))

    def _gather_local(self, chunk_id, points):
        slices = self.chunk_slices(chunk_id)
        block = self.cache.get(int(chunk_id))
        if block is None:
            block = self.source.read(slices)
            self.chunks_read += 1
            self.bytes_read += block.size * self.source.stored_itemsize
            self.cache.put(int(chunk_id), block)
        else:
            self.chunk_hits += 1
        local = points - np.array([s.start for s in slices], dtype=np.int64)
        return block[tuple(local.T)]

    def _gather_distributed(self, chunk_ids, groups, indices):
        workers = sorted(client_threads(self.client))  # addresses, in a stable order
        futures = []
        for chunk_id, members in zip(chunk_ids, groups, strict=True):
            slices = self.chunk_slices(chunk_id)
            local = indices[members] - np.array([s.start for s in slices], dtype=np.int64)
            if local.size > _SCATTER_ENTRIES:
                local = self.client.scatter(local)
            # Pin each chunk to one worker (stable hash) so its cache is reused; allow
            # others so a lost worker's chunks are retried elsewhere with the same result.
            worker = workers[zlib.crc32(f"{self._token}:{chunk_id}".encode()) % len(workers)]
            future = self.client.submit(
                _worker_gather, self.source, self._token, int(chunk_id), slices, local,
                self.cache_bytes, workers=[worker], allow_other_workers=True, pure=False,
            )
            futures.append((members, future))
        for members, future in futures:
            yield members, future.result()


def _worker_gather(source, token, chunk_id, slices, local, cache_bytes):
    """Runs on a worker: read (or reuse) one chunk and gather points from it."""
    with _WORKER_LOCK:
        cache = _WORKER_CACHES.get(token)
        if cache is None:
            cache = _WORKER_CACHES[token] = ChunkCache(cache_bytes)
            while len(_WORKER_CACHES) > _MAX_WORKER_CACHES:
                _WORKER_CACHES.popitem(last=False)
        _WORKER_CACHES.move_to_end(token)
    block = cache.get(chunk_id)
    if block is None:
        block = read_retrying(source, slices)
        cache.put(chunk_id, block)
    return np.asarray(block[tuple(np.asarray(local).T)], dtype=np.float64)


def check_client(client):
    """``client`` if it is None or looks like a ``dask.distributed.Client``; raise otherwise.

    Parameters
    ----------
    client : dask.distributed.Client or None
        The cluster to read on.

    Returns
    -------
    client : dask.distributed.Client or None
        The same object.

    Raises
    ------
    TypeError
        If ``client`` has no ``submit`` and ``scheduler_info`` methods.
    """
    if client is None or all(callable(getattr(client, name, None))
                             for name in ("submit", "scheduler_info")):
        return client
    raise TypeError(f"client must be a dask.distributed.Client or None, got "
                    f"{type(client).__name__}.")


def client_threads(client):
    """The threads of each of ``client``'s workers, as asked of the scheduler.

    ``client.scheduler_info()`` is not asked: it returns the client's cached identity,
    which the client's periodic refresh (every 2 s, listing no worker) can overwrite
    between the fresh query and its return, so a cluster with workers looked empty.

    Parameters
    ----------
    client : dask.distributed.Client
        A connected client.

    Returns
    -------
    threads : dict
        Worker address to its number of threads; at least one worker.

    Raises
    ------
    ValueError
        If the cluster has no workers (or the client is closed): nothing could run there.
    """
    threads = {}
    # A closed client has no scheduler to ask (an AttributeError deep in distributed).
    if getattr(client, "status", "running") not in ("closing", "closed"):
        try:
            threads = dict(client.nthreads())
        except RuntimeError:  # distributed 2026: "IOLoop is closed" from a closed client
            threads = {}
    if not threads:
        raise ValueError(f"client {client!r} has no workers (is it closed, or its cluster "
                         "scaled to zero?); pass a connected client or client=None.")
    return threads
