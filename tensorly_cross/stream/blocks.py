"""Blocks of a stored volume, and a map-reduce over them (threads, or a dask cluster).

A block is a box of whole storage chunks (zarr and HDF5 decode whole chunks anyway) of at
most ``block_bytes`` once read as float64. A block's contribution to the result is a list of
updates ``(key, selection, array)``, added to ``result[key][selection]``. Local threads
compute contributions in parallel and add them to one shared result under a lock; on a
dask cluster, blocks are grouped into one task per worker thread, each task folds its
blocks into its own partial result, and the partials are summed in place as they arrive.
Memory is then the result (and, on a cluster, one partial in flight) plus one block per
thread, whatever the volume's size.

Every block is scaled by a power of two (exact) to a largest modulus in ``[1/2, 1)`` before
its contribution is computed, and results are held at the largest scale seen so far
(:class:`ScaledSums`): sums of squares of values near ``1e-200`` or ``1e160`` would
otherwise underflow to zero or overflow to infinity.
"""

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._validation import check_regular_file
from ..errors import NonFiniteValueError
from ..lazy.base import NAN_BACKGROUND, LazyTensor
from ..lazy.dask import client_threads
from ..lazy.dispatch import refuse_nibabel_image
from ..lazy.filled import FilledSource
from ..lazy.npy import NpyTensor, map_npy
from ..lazy.sources import (
    ChunkReadError,
    ChunkSource,
    FileStamp,
    as_chunk_source,
    read_retrying,
    refuse_closed_hdf5,
    refuse_empty,
    refuse_masked,
)

BLOCK_BYTES = 32 * 2**20
# Keys of the results whose updates are sums of squares of the values (degree 2); every
# other key is linear in the values.
QUADRATIC_KEYS = frozenset({"squares"})


class MemmapSource(ChunkSource):
    """A ``.npy`` file read in slabs along its slowest axis, reopened where it is read (so
    that it pickles to dask workers without the data).

    A block is read with ``os.preadv`` into memory of its own, never returned as a view of
    a memory map: the pages of a view are read only when the block is used, and a file
    truncated in between killed the process with SIGBUS instead of raising.
    """

    def __init__(self, path, block_bytes=BLOCK_BYTES):
        self.path = os.fspath(path)
        check_regular_file(self.path)  # a FIFO would block the read forever
        try:
            array = map_npy(self.path, f".npy {self.path!r}")
        except OSError as error:
            raise ValueError(f".npy {self.path!r} cannot be read as an array file: "
                             f"{error}") from error
        refuse_empty(array.shape, f".npy {self.path!r}")
        fortran = array.flags.f_contiguous and array.ndim > 1
        chunks = _slab_chunks(array.shape, fortran, block_bytes)
        super().__init__(array.shape, array.dtype, chunks, f".npy {self.path!r}")
        self.fortran, self.offset = fortran, int(array.offset)
        del array  # unmapped: only its header was needed
        # Two passes over two versions of a file would give a TT of neither, and an error
        # computed from both: any change since it was opened raises.
        self.stamp = FileStamp(self.path, self.name)

    def _read(self, slices):
        with self.stamp.open() as handle:
            self.stamp.check(handle.fileno())  # the file this descriptor reads
            return self._read_box(handle.fileno(), slices)

    def _read_box(self, descriptor, slices):
        """The box ``slices`` of the file, read one contiguous run of it at a time."""
        # A Fortran-ordered file is the C-ordered file of the reversed shape.
        shape, box = (self.shape[::-1], slices[::-1]) if self.fortran else (self.shape, slices)
        block = np.empty([part.stop - part.start for part in box], dtype=self.dtype)
        buffer = block.reshape(-1).view(np.uint8)
        itemsize, position = self.dtype.itemsize, 0
        for first, count in _contiguous_runs(shape, box):
            size, offset = count * itemsize, self.offset + first * itemsize
            done = _read_into(descriptor, buffer[position : position + size], offset)
            if done < size:  # never zeros for what the file no longer holds
                raise ChunkReadError(
                    f"reading {self._describe(slices)} of {self.name}: the file is shorter "
                    f"than its header declares (it ends at byte {offset + done}; it was "
                    "truncated after it was opened). Open it again.")
            position += size
        return block.T if self.fortran else block


def _contiguous_runs(shape, box):
    """``(first entry, number of entries)`` of the contiguous runs of a C-ordered array of
    ``shape`` that the box (a tuple of slices) covers, in the box's own C order.

    The whole trailing axes and the first partial one before them form one run per index
    of the axes before: a block of whole slabs is a single run, or one per slab.
    """
    extents = [part.stop - part.start for part in box]
    split = len(shape) - 1
    while split > 0 and extents[split] == shape[split]:
        split -= 1
    strides = [math.prod(shape[axis + 1:]) for axis in range(len(shape))]
    run = math.prod(extents[split:])
    start = box[split].start * strides[split]
    for outer in np.ndindex(*extents[:split]):
        yield start + sum((part.start + int(i)) * stride for part, i, stride
                          in zip(box[:split], outer, strides[:split], strict=True)), run


def _read_into(descriptor, buffer, offset):
    """Fill ``buffer`` (writable bytes) from the file at ``offset``; the bytes read, fewer
    than asked only where the file ends first."""
    done = 0
    while done < buffer.size:  # a read may return less than asked, short of the end
        count = _pread_into(descriptor, buffer[done:], offset + done)
        if count == 0:
            break
        done += count
    return done


def _pread_into(descriptor, buffer, offset):
    """Bytes read into ``buffer`` at ``offset``: straight into it where the platform has
    ``os.preadv`` (no copy of the block), else through ``os.pread``."""
    if hasattr(os, "preadv"):
        return os.preadv(descriptor, [buffer], offset)
    data = os.pread(descriptor, buffer.size, offset)
    buffer[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return len(data)


def _slab_chunks(shape, fortran, block_bytes):
    """Chunks of at most ``block_bytes`` (as float64) that are contiguous runs of a file in
    C (or Fortran) order: the fastest axes whole, one axis cut, the slower ones one index.

    Cutting the slowest axis alone would read a whole layer at once however large it is
    (a ``(2, 10**9)`` file: 8 GB a block); while a layer fits, this is that cut.
    """
    axes = list(range(len(shape)))  # slowest to fastest in the file
    chunks = [1] * len(shape)
    inner = 8  # bytes of one entry as float64
    for axis in (axes if fortran else reversed(axes)):
        chunks[axis] = max(1, min(shape[axis], block_bytes // inner))
        if chunks[axis] < shape[axis]:
            break
        inner *= shape[axis]
    return chunks


def volume_source(volume, block_bytes=BLOCK_BYTES):
    """The :class:`ChunkSource` behind a path, a lazy volume or an array (a ``.npy`` file
    in slabs of at most ``block_bytes``)."""
    refuse_closed_hdf5(volume, "volume")
    source = getattr(volume, "source", None)
    if isinstance(source, ChunkSource):
        return source
    if isinstance(volume, NpyTensor):  # by type: its file may have another suffix
        fill = volume.fill_nan  # open_volume(..., fill_nan=) of a .npy
        # The file is reopened by path: the version the tensor was opened on, or an error
        # (a file rewritten since, even with another shape, was streamed without a word).
        volume.check_unchanged()
        source = MemmapSource(volume.path, block_bytes)
        source.stamp = volume.stamp  # every block then checks that same version
        return source if fill is None else FilledSource(source, fill)
    if isinstance(volume, str | bytes | os.PathLike):
        if os.fsdecode(volume).lower().endswith(".npy"):  # as open_volume: any case
            return MemmapSource(os.fsdecode(volume), block_bytes)
        from ..io import open_volume

        return volume_source(open_volume(volume))
    axes = getattr(volume, "axes", None)
    if isinstance(volume, LazyTensor) and axes is not None and hasattr(volume, "lazy"):
        return TransposedSource(volume_source(volume.lazy, block_bytes), axes)
    if isinstance(volume, LazyTensor) and hasattr(volume, "array"):  # an ArrayTensor
        return volume_source(volume.array, block_bytes)
    if isinstance(volume, LazyTensor):
        what = ("a view of stored data that cannot be read in blocks (stream the volume "
                "itself)" if volume.stored else "computed, not stored")
        raise TypeError(f"volume is a {type(volume).__name__}, whose entries are {what}: "
                        "streaming reads a stored volume (a path, an opened volume, or a "
                        "NumPy, zarr, h5py or dask array); use tt_cross for this one.")
    refuse_nibabel_image(volume, "volume")
    if not (hasattr(volume, "shape") and hasattr(volume, "dtype")):
        raise TypeError(f"volume must be a path, an opened volume, or a NumPy, zarr, h5py or "
                        f"dask array; got {type(volume).__name__}.")
    # Its raw data was read, masked entries included, into the TT and its error; the
    # cross (lazy_tensor) refuses it alike.
    refuse_masked(volume, "volume")
    return as_chunk_source(volume)


class TransposedSource(ChunkSource):
    """Another source with its axes permuted (as ``numpy.transpose``): what a streaming
    TT-SVD of a :class:`~tensorly_cross.lazy.transpose.TransposedTensor` reads.

    Parameters
    ----------
    source : ChunkSource
        The source in its own axis order.
    axes : sequence of int
        Axis ``m`` of this source is axis ``axes[m]`` of ``source``.
    """

    def __init__(self, source, axes):
        self.base = source
        self.axes = tuple(int(axis) for axis in axes)
        super().__init__([source.shape[a] for a in self.axes], source.dtype,
                         [source.chunks[a] for a in self.axes], source.name)
        self.stored_dtype, self.stored_itemsize = source.stored_dtype, source.stored_itemsize

    def _read(self, slices):
        return np.transpose(self.base._read(self._inner(slices)), self.axes)

    def stored_index(self, index):
        return self.base.stored_index(self._inner(index))

    def _describe(self, slices):
        # In the stored volume's axes, which the message names (its chunks are there).
        return self.base._describe(self._inner(slices))

    def _inner(self, per_axis):
        """``per_axis`` (slices, or a multi-index) of this source in ``source``'s order."""
        inner = [None] * len(per_axis)
        for position, axis in enumerate(self.axes):
            inner[axis] = per_axis[position]
        return tuple(inner)


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
    read and folded on the cluster's workers; else in local threads. ``values`` are the
    block scaled by a power of two; the sums come back as a :class:`ScaledSums`, whose
    ``exponent`` says by how much they are scaled.
    """
    if n_tasks is None:
        n_tasks = _n_workers(client)
    groups = [blocks[i::n_tasks] for i in range(min(n_tasks, len(blocks)))]
    if client is not None:
        futures = [client.submit(_fold_group, source, group, contribute, start, pure=False)
                   for group in groups]
        total = ScaledSums(start())
        try:
            for future in futures:
                total.merge(future.result())
                future.release()
        except BaseException:
            # A block that raised (a NaN, a failed read) or an interrupt: the other tasks
            # would go on reading their blocks for as long as the error's traceback lives.
            _cancel_quietly(client, futures)
            raise
        return total
    total, lock = ScaledSums(start()), threading.Lock()
    # Set when a block raises, or the caller is interrupted: the other threads stop at their
    # next block (the pool's exit waits for them; they read their whole groups before).
    stop = threading.Event()

    def fold_group(group):
        try:
            for slices in group:
                if stop.is_set():
                    return
                values, exponent = _read_scaled(source, slices)
                if exponent is None:
                    continue
                updates = contribute(slices, values)
                with lock:
                    total.add(updates, exponent)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        try:
            list(pool.map(fold_group, groups))
        except BaseException:
            stop.set()
            raise
    return total


def _cancel_quietly(client, futures):
    """Cancel ``futures`` where the client still can; never raise: the caller re-raises
    the run's own error, which a failed cancellation replaced (a client closed during
    the run raised "Client is closed. Can't send cancel-keys message" instead of the
    cancelled futures' error)."""
    try:
        client.cancel(futures)
    except Exception:  # a closed client: its futures are cancelled already
        pass


class ScaledSums:
    """Sums of block contributions, held at one power-of-two scale.

    Parameters
    ----------
    arrays : dict
        The sums, each scaled by ``2**(-degree * exponent)``: degree 2 for the keys in
        ``QUADRATIC_KEYS``, 1 for the others.

    Attributes
    ----------
    exponent : int or None
        The scale; None while every block added was zero (the sums are then zero).
    """

    def __init__(self, arrays):
        self.arrays = arrays
        self.exponent = None

    def __getitem__(self, key):
        return self.arrays[key]

    def add(self, updates, exponent):
        """Add a block's updates ``(key, selection, array)``, computed at ``2**-exponent``."""
        shift = self._align(exponent)
        for key, selection, array in updates:
            self.arrays[key][selection] += _ldexp(array, _degree(key) * shift)

    def merge(self, other):
        """Add another :class:`ScaledSums` (a partial result from a worker) into this one."""
        if other.exponent is None:
            return
        shift = self._align(other.exponent)
        for key, value in other.arrays.items():
            self.arrays[key] += _ldexp(value, _degree(key) * shift)

    def _align(self, exponent):
        """Make the scale at least ``exponent``, rescaling the sums held in place; returns
        the (non-positive) shift that brings a sum at ``exponent`` to the scale. What
        underflows in a shift is below ``2**-1074`` of the largest block: negligible."""
        if self.exponent is None:
            self.exponent = exponent
        elif exponent > self.exponent:
            for key, value in self.arrays.items():
                np.ldexp(value, _degree(key) * (self.exponent - exponent), out=value)
            self.exponent = exponent
        return exponent - self.exponent


def _degree(key):
    return 2 if key in QUADRATIC_KEYS else 1


def _ldexp(array, shift):
    return array if shift == 0 else np.ldexp(array, shift)


def _read_scaled(source, slices):
    """A block times ``2**-exponent``, its largest modulus in ``[1/2, 1)``, and
    ``exponent``; ``(None, None)`` for an all-zero block, which adds nothing to any sum."""
    raw = read_retrying(source, slices)
    values = _check_finite(source, slices, np.asarray(raw, dtype=np.float64))
    if values.size == 0:
        return None, None
    # Two reductions rather than np.abs: no temporary copy of the block.
    peak = max(float(values.max()), -float(values.min()))
    if peak == 0.0:
        return None, None
    exponent = math.frexp(peak)[1]
    # In place only into the float64 copy made here, never into the source's own memory.
    owned = values is not raw and not np.may_share_memory(values, raw)
    return np.ldexp(values, -exponent, out=values if owned else None), exponent


def _check_finite(source, slices, values):
    """``values``; a NaN or infinite voxel raises, naming its multi-index."""
    if not np.isfinite(values).all():
        local = np.unravel_index(int(np.flatnonzero(~np.isfinite(values))[0]), values.shape)
        index = tuple(int(s.start + i) for s, i in zip(slices, local, strict=True))
        value = values[local]
        # Named in the stored volume's axes, as a cross of the same view names it: the
        # view's own multi-index (a TransposedTensor's) was not where the file holds it.
        stored = source.stored_index(index)
        seen = "" if stored == index else f" (multi-index {index} of the transposed view)"
        error = NonFiniteValueError(f"{source.name} holds {value} at multi-index {stored}"
                                    f"{seen}; values must be finite.", stored, value)
        if np.isnan(value):  # the stream reads stored data: a masked background, as a cross
            error.add_note(NAN_BACKGROUND)  # reading it notes (LazyTensor.evaluate_checked)
        raise error
    return values


def _fold_group(source, group, contribute, start):
    partial = ScaledSums(start())
    for slices in group:
        if _task_cancelled():  # its partial would be dropped: stop reading
            return partial
        values, exponent = _read_scaled(source, slices)
        if exponent is not None:
            partial.add(contribute(slices, values), exponent)
    return partial


def _task_cancelled():
    """Whether the dask task running this thread was cancelled (another block failed, or the
    caller was interrupted). Cancelling a task does not stop the thread that runs it: the
    other tasks read their whole groups of blocks after the error. False outside a task."""
    try:
        from distributed import get_worker
        from distributed.worker import thread_state

        task = get_worker().state.tasks.get(thread_state.key)
    except (ImportError, ValueError, AttributeError):  # not a worker's task
        return False
    return task is not None and task.state == "cancelled"


def _n_workers(client):
    if client is None:  # the CPUs this process may use (sched_getaffinity: Linux only)
        affinity = getattr(os, "sched_getaffinity", None)
        return max(1, len(affinity(0)) if affinity else os.cpu_count() or 1)
    # A closed client, or no workers: a clear error, not a KeyError.
    return max(1, sum(max(1, int(threads)) for threads in client_threads(client).values()))
