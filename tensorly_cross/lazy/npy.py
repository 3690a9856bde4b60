"""NpyTensor: sample a .npy file by reading only the disk pages that hold the entries.

A memory map would serve the same gathers, but every page it touches (and, by fault-around
and read-ahead, its neighbours) stays mapped, so resident memory grows towards the file
size. Here each batch reads its distinct pages with ``os.pread`` into a small LRU of pages:
resident memory stays bounded and ``bytes_read`` is exactly what came off the disk.
"""

import os
import tokenize

import numpy as np
import tensorly as tl

from .._validation import check_float, check_regular_file
from .base import LazyTensor
from .chunk_cache import ChunkCache
from .filled import fill_nan
from .sources import (
    SUPPORTED_KINDS,
    ChunkReadError,
    FileStamp,
    absolute_path,
    refuse_empty,
    unsupported_dtype,
)

PAGE = 4096
# Pages gathered at once in one batch (16 MiB).
BATCH_PAGES = 4096
NPY_MAGIC = b"\x93NUMPY"


class NpyTensor(LazyTensor):
    """A lazy tensor over a ``.npy`` file (C or Fortran order), read page by page.

    Parameters
    ----------
    path : str or os.PathLike
        A regular ``.npy`` file (a FIFO or device is refused: reading it could block).
    cache_bytes : int, default 64 MiB
        LRU of pages already read (0 disables it).
    fill_nan : float or None
        What NaN entries read as (None: a NaN raises, naming its multi-index).

    Attributes
    ----------
    pages_read, bytes_read, page_hits : int

    Raises
    ------
    ValueError
        If the file is not a regular file, not a ``.npy`` file (no NPY magic string: it is
        never read as a pickle), or shorter than its header declares.
    TypeError
        If its dtype is not bool, integer or real floating point (objects are refused).
    ChunkReadError
        From :meth:`evaluate`, if the file became shorter than its header declares after
        it was opened (a page read short is an error, never zeros).
    """

    stored = True

    def __init__(self, path, cache_bytes=64 * 2**20, fill_nan=None):
        # Absolute: every page read reopens the file by this path, which a change of
        # working directory pointed elsewhere ("deleted after it was opened").
        self.path = absolute_path(path)
        self.fill_nan = None if fill_nan is None else check_float(fill_nan, "fill_nan")
        header = _open_header(self.path)
        if header.dtype.kind not in SUPPORTED_KINDS:
            raise TypeError(unsupported_dtype(repr(self.path), header.dtype))
        refuse_empty(header.shape, repr(self.path))
        super().__init__(header.shape)
        self.dtype = header.dtype
        self.offset = int(header.offset)
        self.order = "F" if header.flags.f_contiguous and not header.flags.c_contiguous else "C"
        del header
        if PAGE % self.dtype.itemsize or self.offset % self.dtype.itemsize:
            raise TypeError(f"{self.path!r}: entries of {self.dtype.itemsize} bytes would "
                            "straddle pages.")
        # Where the data ends: a page read short of it means the file shrank since.
        self.end = self.offset + self.size * self.dtype.itemsize
        self.cache = ChunkCache(cache_bytes)
        self.pages_read = self.bytes_read = self.page_hits = 0
        # Pages cached from one version of the file must not be mixed with another's.
        self.stamp = FileStamp(self.path, repr(self.path))
        with open(self.path, "rb") as handle:
            self.header = handle.read(self.offset)

    @property
    def described_as(self):
        """How messages name this tensor: with its file."""
        return f"NpyTensor {self.path!r}"

    def _evaluate(self, indices):
        if indices.shape[0] == 0:
            return tl.tensor(np.zeros(0))
        flat = np.ravel_multi_index(tuple(indices.T), self.shape, order=self.order)
        byte_offsets = self.offset + flat * self.dtype.itemsize
        pages, where = np.unique(byte_offsets // PAGE, return_inverse=True)
        where = where.reshape(-1)
        within = (byte_offsets % PAGE) // self.dtype.itemsize
        values = np.empty(flat.shape[0], dtype=np.float64)
        order = np.argsort(where, kind="stable")
        ends = np.searchsorted(where[order], np.arange(0, pages.size, BATCH_PAGES)[1:])
        with self.stamp.open() as handle:
            descriptor = handle.fileno()
            self._check_unchanged(descriptor)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_RANDOM)
            # A few MiB of pages at a time: the batch's buffer, not only the cache, stays
            # bounded whatever the number of distinct pages it touches.
            for first, members in zip(range(0, pages.size, BATCH_PAGES),
                                      np.split(order, ends), strict=True):
                group = pages[first:first + BATCH_PAGES]
                buffer = np.stack([self._page(descriptor, int(page)) for page in group])
                values[members] = buffer.view(self.dtype)[where[members] - first,
                                                          within[members]]
        return tl.tensor(fill_nan(values, self.fill_nan))

    def check_unchanged(self):
        """Raise :class:`ChunkReadError` if the file changed since this tensor opened it.

        What reads the file by its path instead of through this tensor (the streaming
        TT-SVD) calls it first, so that it reads the version this tensor was opened on.
        """
        with self.stamp.open() as handle:
            self._check_unchanged(handle.fileno())

    def _check_unchanged(self, descriptor):
        """Raise ChunkReadError if the file changed since it was opened: entries read
        before and after (in this tensor's caches, or in a TT under construction) would
        mix two versions of the data. The message says how: another header, a file cut
        short, or other contents."""
        now = self.stamp.current(descriptor)
        if now == self.stamp.stamp:
            return
        if os.pread(descriptor, self.offset, 0) != self.header:
            raise ChunkReadError(
                f"{self.path!r} was rewritten after it was opened: its header no longer "
                f"declares shape {self.shape} and dtype {self.dtype}. Open it again."
            )
        size = now[2]  # the stamp is (device, inode, size, mtime)
        if size < self.end:
            raise ChunkReadError(
                f"{self.path!r} is shorter than its header declares: {size} of {self.end} "
                "bytes (the file was truncated after it was opened)."
            )
        self.stamp.check(descriptor)

    def _page(self, descriptor, page):
        block = self.cache.get(page)
        if block is not None:
            self.page_hits += 1
            return block
        data = os.pread(descriptor, PAGE, page * PAGE)
        expected = min(PAGE, self.end - page * PAGE)
        if len(data) < expected:
            raise ChunkReadError(
                f"{self.path!r} is shorter than its header declares: page {page} read "
                f"{len(data)} of {expected} bytes (the file was truncated after it was opened)."
            )
        block = np.zeros(PAGE, dtype=np.uint8)
        block[: len(data)] = np.frombuffer(data, dtype=np.uint8)
        self.pages_read += 1
        self.bytes_read += len(data)
        self.cache.put(page, block)
        return block


def _open_header(path):
    """The memory-mapped array of a regular ``.npy`` file, only for its header; a clear
    ValueError (naming the file) for anything else."""
    check_regular_file(path)
    with open(path, "rb") as handle:
        magic = handle.read(len(NPY_MAGIC))
        if magic != NPY_MAGIC:
            # Without this check NumPy falls back to pickle and asks for allow_pickle=True.
            raise ValueError(f"{path!r} is not a .npy file (it does not start with the NPY "
                             "magic string).")
        handle.seek(0)
        dtype = _declared_dtype(handle)
    if dtype is not None and dtype.hasobject:
        # Refused by its dtype, as NpyTensor documents: NumPy's memory map said only
        # "Array can't be memory-mapped: Python objects in dtype" (a ValueError).
        raise TypeError(f"{path!r} has dtype {dtype} (Python objects, never unpickled); "
                        "supported are bool, integer and real floating-point arrays.")
    return map_npy(path, repr(path))


# What NumPy raises for a malformed header: its tokenizer raises TokenError (not a
# ValueError) for one cut short, "{'descr': '<f8', " say.
HEADER_ERRORS = (ValueError, EOFError, SyntaxError, tokenize.TokenError)


def map_npy(path, name):
    """``np.load(path, mmap_mode="r")``, for the header of a ``.npy`` file (nothing is
    read); a ValueError naming it for any header NumPy cannot read.

    Parameters
    ----------
    path : str
        The file.
    name : str
        How the message names it.
    """
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except HEADER_ERRORS as error:
        reason = (f"its header is cut short or malformed ({error.args[0]})"
                  if isinstance(error, tokenize.TokenError) else str(error).rstrip("."))
        raise ValueError(f"{name} is not a readable .npy array: {reason}.") from error
    except OverflowError as error:  # NumPy's memory map of a negative or huge byte count
        raise ValueError(f"{name} is not a readable .npy array: its header declares a "
                         f"{_size_problem(error)} ({error}).") from error


def _size_problem(error):
    """What an OverflowError of NumPy's memory map says of the size declared."""
    return "size too large to map" if "too large" in str(error) else "negative size"


def _declared_dtype(handle):
    """The dtype the header of the .npy file open in ``handle`` declares (format 1.0 or
    2.0), or None where it cannot be read so (``np.load`` then names what is wrong)."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(handle)[2]
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(handle)[2]
    except HEADER_ERRORS:
        pass
    return None
