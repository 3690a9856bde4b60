"""Blocks of a stored volume, and a map-reduce over them (threads, or a dask cluster).

A block is a box of whole storage chunks (zarr and HDF5 decode whole chunks anyway) of at
most ``block_bytes`` once read as float64. A block's contribution to the result is a list of
updates ``(key, selection, array)``, added to ``result[key][selection]``. Local threads
compute contributions in parallel and add them to one shared result under a lock; on a
dask cluster, blocks are grouped into one task per worker thread, each task folds its
blocks into its own partial result, and the partials are summed in place as they arrive.
Memory is then the result (and, on a cluster, one partial in flight) plus one block per
thread, whatever the volume's size.
"""

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import NonFiniteValueError
from ..lazy.sources import ChunkSource, as_chunk_source

BLOCK_BYTES = 32 * 2**20


class MemmapSource(ChunkSource):
    """A ``.npy`` file read in slabs along its slowest axis, reopened where it is read (so
    that it pickles to dask workers without the data)."""

    def __init__(self, path, block_bytes=BLOCK_BYTES):
        self.path = os.fspath(path)
        array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        slowest = 0 if not array.flags.f_contiguous or array.ndim == 1 else array.ndim - 1
        chunks = list(array.shape)
        layer = array.size // array.shape[slowest] * 8
        chunks[slowest] = max(1, min(array.shape[slowest], block_bytes // max(layer, 1)))
        super().__init__(array.shape, array.dtype, chunks, f".npy {self.path!r}")

    def _read(self, slices):
        return np.load(self.path, mmap_mode="r", allow_pickle=False)[slices]


def volume_source(volume):
    """The :class:`ChunkSource` behind a path, a lazy volume or an array."""
    source = getattr(volume, "source", None)
    if isinstance(source, ChunkSource):
        return source
    path = getattr(volume, "path", None)
    if path is not None and str(path).endswith(".npy"):
        return MemmapSource(path)
    if isinstance(volume, str | os.PathLike):
        if os.fspath(volume).endswith(".npy"):
            return MemmapSource(volume)
        from ..io import open_volume

        return volume_source(open_volume(volume))
    return as_chunk_source(volume)


def plan_blocks(source, block_bytes=BLOCK_BYTES):
    """Chunk-aligned boxes (tuples of slices) covering the volume, each at most
    ``block_bytes`` as float64 where whole chunks allow: chunks are merged along the last
    axes first (contiguous in C order)."""
    bounds = [np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
              for sizes in source.chunks]
    counts = [len(sizes) for sizes in source.chunks]
    per_block = [1] * len(counts)
    largest = [max(sizes) for sizes in source.chunks]
    for axis in reversed(range(len(counts))):
        while per_block[axis] < counts[axis]:
            trial = per_block[axis] + 1
            size = math.prod(largest[a] * (trial if a == axis else per_block[a])
                             for a in range(len(counts)))
            if size * 8 > block_bytes:
                break
            per_block[axis] = trial
    ranges = [range(0, count, step) for count, step in zip(counts, per_block, strict=True)]
    blocks = []
    for starts in np.ndindex(*[len(r) for r in ranges]):
        block = []
        for axis, position in enumerate(starts):
            first = ranges[axis][position]
            last = min(first + per_block[axis], counts[axis])
            block.append(slice(int(bounds[axis][first]), int(bounds[axis][last])))
        blocks.append(tuple(block))
    return blocks


def map_reduce(source, blocks, contribute, start, client=None, n_tasks=None):
    """The sum over all blocks of their contributions, added into ``start()``.

    ``contribute(slices, values)`` returns a block's updates ``(key, selection, array)``;
    ``start()`` makes the empty result (a dict of arrays). With ``client`` the blocks are
    read and folded on the cluster's workers; else in local threads.
    """
    if n_tasks is None:
        n_tasks = _n_workers(client)
    groups = [blocks[i::n_tasks] for i in range(min(n_tasks, len(blocks)))]
    if client is not None:
        futures = [client.submit(_fold_group, source, group, contribute, start, pure=False,
                                 retries=3) for group in groups]
        total = start()
        for future in futures:
            _add_into(total, future.result())
            future.release()
        return total
    total, lock = start(), threading.Lock()

    def fold_group(group):
        for slices in group:
            updates = contribute(slices, _read(source, slices))
            with lock:
                _apply(total, updates)

    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        list(pool.map(fold_group, groups))
    return total


def _read(source, slices):
    """A block as float64; a NaN or infinite voxel raises, naming its multi-index."""
    values = np.asarray(source.read(slices), dtype=np.float64)
    if not np.isfinite(values).all():
        local = np.unravel_index(int(np.flatnonzero(~np.isfinite(values))[0]), values.shape)
        index = tuple(int(s.start + i) for s, i in zip(slices, local, strict=True))
        value = values[local]
        raise NonFiniteValueError(f"{source.name} holds {value} at multi-index {index}; "
                                  "values must be finite.", index, value)
    return values


def _fold_group(source, group, contribute, start):
    partial = start()
    for slices in group:
        _apply(partial, contribute(slices, _read(source, slices)))
    return partial


def _apply(result, updates):
    for key, selection, array in updates:
        result[key][selection] += array


def _add_into(total, partial):
    for key, value in partial.items():
        total[key] += value


def _n_workers(client):
    if client is None:
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, sum(worker.get("nthreads", 1)
                      for worker in client.scheduler_info()["workers"].values()))
