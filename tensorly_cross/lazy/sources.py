"""Chunked sources: where a chunk of an out-of-core array is read from.

Each source knows its shape, dtype, chunk grid and how to read one chunk (a tuple of
slices) as a NumPy array. They pickle without open file handles, so dask.distributed
workers can read chunks themselves.
"""

import bisect
import math
import os

import numpy as np

from .._backend import check_concrete, to_host
from .base import ml_float, sub_byte_note

SUPPORTED_KINDS = "biuf"  # bool, signed and unsigned ints, floats


def unsupported_dtype(name, dtype):
    """The refusal of a stored volume ``name`` of ``dtype``, with why for a complex one:
    the chunked readers read real values (float64), and ``tt_cross`` crosses complex arrays
    (and zarr arrays, read through their own indexing) passed to it in memory."""
    if dtype.kind == "c":
        return (f"{name} has dtype {dtype} (stored volumes are read as real, in float64, "
                "chunk by chunk: by open_volume, compress and streaming_tt_svd, and tt_cross "
                "of an HDF5 dataset); pass the values loaded in memory (np.asarray) to "
                "tt_cross, which crosses complex arrays, or cross the real and imaginary "
                "parts as two volumes.")
    return (f"{name} has dtype {dtype}{sub_byte_note(dtype)}; supported are bool, integer "
            "and real floating-point arrays.")


class ChunkReadError(OSError):
    """Reading one chunk failed; the message names the source and the chunk."""


# A chunk read that fails with an I/O error (a network file system's hiccup) is tried this
# many times in all; any other error (a changed file, a corrupt chunk, a NaN voxel) is raised
# at once. dask's retries=3 re-ran every failure, a NaN voxel's too: each block of the
# group read four times and four worker tracebacks logged before the same error came back.
READ_ATTEMPTS = 4


def read_retrying(source, slices):
    """``source.read(slices)``, tried again (at most ``READ_ATTEMPTS`` in all) where it
    failed with an :class:`OSError` underneath. Worker loss needs nothing here: the
    scheduler reruns a lost worker's tasks elsewhere."""
    for _ in range(READ_ATTEMPTS - 1):
        try:
            return source.read(slices)
        except ChunkReadError as error:
            if not isinstance(error.__cause__, OSError):
                raise
    return source.read(slices)


class ChunkSource:
    """Base class: ``shape``, ``dtype``, ``chunks`` (a tuple of per-axis chunk sizes).

    ``stored_dtype`` is the dtype in storage, and ``stored_itemsize`` its bytes per entry,
    which byte counts use: a scaled NIfTI stores int16 (or uint8) that read back as
    float64, with no more precision than the stored integers.
    """

    def __init__(self, shape, dtype, chunks, name, stored_dtype=None):
        if shape is None:  # an HDF5 dataset with a null dataspace: tuple(None) named nothing
            raise ValueError(f"{name} has no shape (a null dataspace, h5py.Empty): it holds "
                             "no entries; a volume has at least one mode.")
        self.shape = tuple(int(n) for n in shape)
        self.stored_dtype = np.dtype(stored_dtype or dtype)
        # ml_dtypes' bfloat16 and float8 types (JAX's; NumPy kind "V") are read as float32,
        # exactly, as a cross reads them and PyTorch's bfloat16 is read: they were refused
        # as not real floating point.
        self.dtype = np.dtype(np.float32) if ml_float(dtype) else np.dtype(dtype)
        self.stored_itemsize = self.stored_dtype.itemsize
        if self.dtype.kind not in SUPPORTED_KINDS:
            raise TypeError(unsupported_dtype(name, self.dtype))
        if not self.shape:  # LazyTensor would refuse it too, without naming the source
            raise ValueError(f"{name} holds a 0-d array (a scalar); a volume has at least "
                             "one mode.")
        self.chunks = tuple(_normalise_chunks(chunks, self.shape, name))
        check_chunk_count(self.chunks, name)
        self.name = name

    def read(self, slices):
        try:
            block = self._read(slices)
            if isinstance(block, np.ma.MaskedArray):  # np.asarray would drop its mask
                raise ChunkReadError(
                    f"reading {self._describe(slices)} of {self.name} returned a masked "
                    "array; a cross reads raw entries, masked or not: fill the masked "
                    "entries first.")
            block = np.asarray(block)
            if ml_float(block.dtype):
                block = block.astype(np.float32)
        except ChunkReadError:  # already names the file and what went wrong
            raise
        except Exception as error:
            raise ChunkReadError(f"reading {self._describe(slices)} of {self.name} failed: "
                                 f"{type(error).__name__}: {error}") from error
        # A reader that lies (a dask block function, a proxy) must not be gathered from:
        # a short block fails deep inside with an IndexError, a complex one loses its
        # imaginary part without a word.
        expected = tuple(s.stop - s.start for s in slices)
        if block.shape != expected or block.dtype.kind not in SUPPORTED_KINDS:
            raise ChunkReadError(
                f"reading {self._describe(slices)} of {self.name} returned an array of shape "
                f"{block.shape} and dtype {block.dtype}; expected shape {expected} and a bool, "
                "integer or real floating-point dtype."
            )
        return block

    def _read(self, slices):
        raise NotImplementedError

    def stored_index(self, index):
        """The multi-index, in the stored volume's own axis order, of this source's
        ``index`` (a tuple of ints): itself, but for a view that reorders the axes."""
        return index

    def _describe(self, slices):
        """What ``slices`` read, for messages: a chunk, or a block of several (the
        streaming TT-SVD reads a block of chunks at once, which zarr or HDF5 decode one by
        one: the failing chunk is one of them)."""
        count = math.prod(_chunks_within(sizes, part)
                          for sizes, part in zip(self.chunks, slices, strict=True))
        if count == 1:
            return f"chunk [{_bounds(slices)}]"
        return f"block [{_bounds(slices)}] ({count} chunks)"


def _chunks_within(sizes, part):
    """How many of the chunks of sizes ``sizes`` along an axis the slice ``part`` meets."""
    bounds = np.cumsum((0, *sizes))
    first = int(np.searchsorted(bounds, part.start, side="right")) - 1
    return max(1, int(np.searchsorted(bounds, part.stop, side="left")) - first)


def _normalise_chunks(chunks, shape, name):
    """Per-axis tuples of chunk sizes, from dask-style tuples or a regular chunk shape."""
    for axis, size in enumerate(shape):
        if int(size) < 1:  # before the chunks: an empty axis gives an empty chunk too
            raise ValueError(f"{name} has shape {shape}: shape[{axis}]={size} must be >= 1 "
                             "(the array is empty).")
    if chunks is None:
        chunks = tuple(min(n, 64) for n in shape)
    result = []
    for axis, (chunk, size) in enumerate(zip(chunks, shape, strict=True)):
        if isinstance(chunk, tuple | list):
            result.append(tuple(int(c) for c in chunk))
            continue
        chunk = int(chunk)
        if chunk < 1:
            raise ValueError(f"{name} has chunks[{axis}]={chunk}; chunk sizes must be >= 1.")
        full, rest = divmod(size, chunk)
        result.append((chunk,) * full + ((rest,) if rest else ()))
    return result


def check_chunk_count(chunks, name):
    """Raise ValueError, naming the array, if its grid holds 2**63 chunks or more: a chunk
    is known by its int64 position in the grid (and Python's ``len`` of a dask graph of
    that many tasks overflows, naming nothing).

    Parameters
    ----------
    chunks : sequence of sequence of int
        The chunk sizes along each axis.
    name : str
        How the message names the array.
    """
    n_chunks = math.prod(len(sizes) for sizes in chunks)
    if n_chunks > np.iinfo(np.int64).max:
        raise ValueError(f"{name} has {n_chunks} chunks (about 2**{n_chunks.bit_length() - 1}); "
                         "at most 2**63 - 1 can be told apart: rechunk it into fewer, larger "
                         "chunks.")


class MissingChunksError(ValueError):
    """A zarr array or HDF5 dataset opened with ``strict=True`` has chunks that were never
    stored."""


class FileStamp:
    """What identifies a file's contents when it was opened: device, inode, size and
    modification time. A later read that finds another stamp would mix two versions of
    the data (pages or chunks read before, and after, the file changed).

    Parameters
    ----------
    path : str
        The file.
    name : str
        How messages name it.
    """

    def __init__(self, path, name):
        self.path = path
        self.name = name
        self.stamp = _stamp(os.stat(path))

    def check(self, descriptor=None):
        """Raise :class:`ChunkReadError` if the file changed or vanished since it was opened.

        Parameters
        ----------
        descriptor : int, optional
            An open descriptor of the file, checked instead of the path (what was read).
        """
        if self.current(descriptor) != self.stamp:
            raise ChunkReadError(
                f"{self.name} changed after it was opened (its inode, size or modification "
                "time differ): open it again; reading on would mix two versions of its data."
                f"{self._relative_hint()}"
            )

    def open(self):
        """The file, opened for binary reading; :class:`ChunkReadError` if it is gone."""
        try:
            return open(self.path, "rb")
        except FileNotFoundError as error:
            raise ChunkReadError(f"{self.name} was deleted after it was opened."
                                 f"{self._relative_hint()}") from error

    def current(self, descriptor=None):
        """The file's stamp now (of ``descriptor`` if given); ChunkReadError if it is gone."""
        try:
            return _stamp(os.fstat(descriptor) if descriptor is not None else os.stat(self.path))
        except FileNotFoundError as error:
            raise ChunkReadError(f"{self.name} was deleted after it was opened."
                                 f"{self._relative_hint()}") from error

    def _relative_hint(self):
        """For messages: a relative path (a zarr store opened so, which zarr reads by that
        path) names another file, or none, once the working directory changed."""
        if os.path.isabs(self.path):
            return ""
        return (f" Or the working directory changed: it was opened by the relative path "
                f"{os.fsdecode(self.path)!r}; open it by an absolute path.")


def _bounds(slices):
    """``start:stop`` of each slice, for messages (built only when one is raised)."""
    return ", ".join(f"{part.start}:{part.stop}" for part in slices)


def refuse_empty(shape, name):
    """Raise ValueError, naming the file, for an array with no mode or an empty one
    (``LazyTensor``'s own message names no file, and chunking divides by the sizes)."""
    if not shape or 0 in tuple(shape):
        raise ValueError(f"{name} holds an array of shape {tuple(shape)}; a volume has at "
                         "least one mode and every mode size >= 1.")


def _stamp(status):
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


class ZarrSource(ChunkSource):
    """A zarr array (v2 or v3); reads whole chunks, which is how zarr decodes them anyway.

    Parameters
    ----------
    array : zarr.Array
    strict : bool, default False
        zarr returns the fill value for a chunk that is not stored, without an error. With
        ``strict=True`` an array with fewer stored chunks than its grid holds is refused
        (:class:`MissingChunksError`), so a partly written or damaged array is not read as
        if it were complete. Counted by zarr's ``nchunks_initialized`` (by shard for
        sharded arrays: an inner chunk missing inside a stored shard is not seen).
    """

    def __init__(self, array, strict=False):
        super().__init__(array.shape, array.dtype, array.chunks, f"zarr array {_zarr_name(array)}")
        self.array = array
        if strict:
            _check_all_chunks_stored(array, self.name)
        self.unsendable = _zip_being_written(array, self.name)
        self._stamp = zarr_stamp(array)

    def __getstate__(self):
        if self.unsendable:
            raise TypeError(self.unsendable)
        return dict(self.__dict__)

    def _read(self, slices):
        if self._stamp is not None:  # zarr reads a chunk of a deleted store as fill values
            self._stamp.check()
        return self.array[slices]


def zarr_stamp(array):
    """A :class:`FileStamp` of the metadata document (``zarr.json`` or ``.zarray``) of a
    zarr array in a local folder, or None for other stores.

    zarr reads every chunk of a store deleted after it was opened as the fill value,
    without an error, and an array written anew in its place (which rewrites its metadata)
    chunk by chunk from the new version: reads check the stamp first, as for the other
    files. Values written into the same array (its metadata unchanged) are not seen.
    """
    store = getattr(array, "store", None)
    root = getattr(store, "root", None)
    if type(store).__name__ != "LocalStore" or root is None:
        return None
    document = "zarr.json" if array.metadata.zarr_format == 3 else ".zarray"
    path = os.path.join(os.fspath(root), array.path, document)
    return FileStamp(path, f"zarr array {_zarr_name(array)}") if os.path.isfile(path) else None


def _zip_being_written(array, name):
    """Why ``array``'s store cannot be reopened elsewhere (a worker's way), or None: a
    ZipStore opened for writing, whose zip file is complete only once it is closed
    (reopened by path, every chunk read as the fill value)."""
    store = getattr(array, "store", None)
    if type(store).__name__ == "ZipStore" and not getattr(store, "read_only", True):
        return (f"{name} is in a ZipStore opened for writing: its zip file is complete "
                "only once the store is closed, and a worker reopening it reads fill values; "
                "close the store and open the file again")
    return None


def _check_all_chunks_stored(array, name):
    stored, total, unit = _stored_objects(array)
    if stored < total:
        raise MissingChunksError(
            f"{name} stores {stored} of its {total} {unit}; the {total - stored} missing ones "
            f"would read as the fill value {array.fill_value} (strict=True refuses this; "
            "without it, missing chunks are read as fill values)."
        )


def _stored_objects(array):
    """``(stored, total, unit)``: how many of a zarr array's chunks (``unit`` "chunks"), or
    of a sharded one's shards ("shards"), are stored, and how many its grid holds.

    zarr (3.1.6) counts a sharded array's stored chunks as every inner chunk of each stored
    shard, those past the array's edge included, against the inner chunks inside the
    array: an array missing whole edge shards counted more chunks stored than its grid
    holds. Shards are counted instead (zarr's count divided by the inner chunks of one
    shard). zarr 3.1.0 (our floor) counts the stored objects, the shards themselves: its
    count is taken as it is (divided, it refused a complete sharded array).
    """
    shards = getattr(array, "shards", None)  # None unsharded (and in zarr 2)
    if shards is None:
        return int(array.nchunks_initialized), int(array.nchunks), "chunks"
    per_shard = math.prod(shard // chunk for shard, chunk in zip(shards, array.chunks,
                                                                   strict=True))
    total = math.prod(-(-size // shard) for size, shard in zip(array.shape, shards,
                                                                 strict=True))
    stored = int(array.nchunks_initialized)
    # The zarr versions that count inner chunks are those that count shards apart.
    counts_inner_chunks = hasattr(array, "_nshards_initialized")
    return (stored // per_shard if counts_inner_chunks else stored), total, "shards"


def _zarr_name(array):
    store = getattr(array, "store", None)
    root = getattr(store, "root", None) or getattr(store, "path", None) or store
    # An array at the store's root has no path of its own: the store names it (a "/"
    # after the store read as a stray character in messages).
    return f"'{root}' {array.path}".strip() if array.path else f"'{root}'"


class H5Source(ChunkSource):
    """An h5py dataset, reopened by file name and dataset path where it is read.

    Parameters
    ----------
    dataset : h5py.Dataset
    strict : bool, default False
        HDF5 reads a chunk that was never written as the dataset's fill value, without an
        error. With ``strict=True`` a chunked dataset with fewer chunks allocated than its
        grid holds, or a contiguous one never written, is refused
        (:class:`MissingChunksError`); a virtual dataset, whose sources are other files,
        cannot be checked and is refused with a ValueError.

    Raises
    ------
    ValueError
        If the dataset was compressed with a filter this HDF5 library lacks, or keeps its
        data in an external raw file (``external=``) that is missing or shorter than the
        data (HDF5 reads the bytes missing as zeros). Reads raise
        :class:`ChunkReadError` once the HDF5 file or a raw file changed, or the working
        directory that relative raw files are found from.
    """

    def __init__(self, dataset, strict=False):
        super().__init__(dataset.shape, dataset.dtype, dataset.chunks,
                         f"HDF5 '{dataset.file.filename}' dataset {dataset.name}")
        _check_h5_dataset(dataset, self.name, strict)
        self.filename = _on_disk_name(dataset.file.filename)
        self.dataset_name = _reopenable_name(dataset)
        self._dataset = dataset
        # In-memory files (driver="core") have no file on disk to stamp.
        self._stamp = (FileStamp(self.filename, self.name) if os.path.isfile(self.filename)
                       else None)
        self._raw_files = ExternalRawFiles(dataset, self.name)
        self.unsendable = _held_in_memory(dataset.file, self.name) or (
            None if self.dataset_name is not None else
            f"{self.name} has no path in its file {self.filename!r} to reopen it by")

    def __getstate__(self):
        if self.unsendable:
            raise TypeError(self.unsendable)
        state = dict(self.__dict__)
        state["_dataset"] = None  # h5py handles do not pickle; reopen on the worker
        return state

    def _read(self, slices):
        if self._stamp is not None:  # reopened by name on a worker: maybe another file
            self._stamp.check()
        self._raw_files.check(slices)
        if self._dataset is None or not self._dataset.id.valid:
            import h5py

            self._dataset = h5py.File(self.filename, "r")[self.dataset_name]
        return self._dataset[slices]


def _check_h5_dataset(dataset, name, strict):
    """What opening ``dataset`` (or a view of it) refuses, whatever reads it: a filter
    missing, a virtual source missing, and with ``strict`` chunks missing."""
    _refuse_missing_filters(dataset, name)
    _refuse_missing_sources(dataset, name)
    if strict:
        _check_h5_chunks_stored(dataset, name)


class ExternalRawFiles:
    """The external raw files (``create_dataset(..., external=...)``) an HDF5 dataset
    keeps its data in, checked when opened (:func:`_checked_raw_files`) and stamped for
    its reads; none for any other dataset, whose check costs nothing.

    A read checks the raw files that hold its bytes, not all: a dataset kept as a raw file
    per frame (hundreds) paid a stat per frame on every read. That is enough: a change to
    a file after it was opened is seen by the next read of its bytes, and the bytes of
    the files not read cannot mix versions into what is read.

    Parameters
    ----------
    dataset : h5py.Dataset
    name : str
        How messages name the dataset.
    """

    def __init__(self, dataset, name):
        self.name = name
        segments, self.cwd = _checked_raw_files(dataset, name)
        self.stamps = [FileStamp(path, f"{name}'s external raw file {path!r}")
                       for path, _ in segments]
        self.ends = [end for _, end in segments]
        self.shape = dataset.shape
        self.itemsize = dataset.id.get_type().get_size()

    def check(self, slices):
        """Raise ChunkReadError if a raw file holding bytes of the block ``slices`` changed
        since it was opened, or if HDF5 would now look for one elsewhere: it finds a
        relative one from the working directory of each read (after a chdir, or on a
        worker started elsewhere, it read another file of that name, or failed naming
        none)."""
        if not self.stamps:
            return
        first = _c_order_index([part.start for part in slices], self.shape) * self.itemsize
        last = (_c_order_index([part.stop - 1 for part in slices], self.shape) + 1
                ) * self.itemsize - 1  # its last byte: an entry may straddle two files
        # The files from the one holding the block's first byte to the one holding its last.
        for stamp in self.stamps[bisect.bisect_right(self.ends, first):
                                 bisect.bisect_right(self.ends, last) + 1]:
            stamp.check()
        if self.cwd is not None and _working_directory() != self.cwd:
            raise ChunkReadError(
                f"{self.name} keeps its data in external raw files named relative to the "
                f"working directory, {self.cwd!r} when it was opened and "
                f"{_working_directory()!r} now, from which HDF5 would read other files or "
                "none: read it from that directory (or start Python with "
                "HDF5_EXTFILE_PREFIX set to it: HDF5 reads it only when it starts).")


def _c_order_index(entry, shape):
    """The position of ``entry`` in an array of ``shape`` stored in C order (as
    ``np.ravel_multi_index``, several times faster on one entry)."""
    index = 0
    for position, size in zip(entry, shape, strict=True):
        index = index * size + position
    return index


def _working_directory():
    """``os.getcwd()``, or None where it was deleted (os.getcwd raises then)."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


def _checked_raw_files(dataset, name):
    """The external raw files ``dataset`` keeps its data in (``create_dataset(...,
    external=...)``), as ``(path, end)`` pairs, in order: each one's absolute path, as
    this process's HDF5 finds it now, and where its part of the dataset's bytes ends (it
    begins where the previous one's ends); and the working directory where HDF5 finds one
    of them from it (else None).

    Raise ValueError, naming the file, where one does not exist (every read failed with
    "unable to open external raw data file", naming none), or is shorter than the data
    it should hold: HDF5 reads the bytes missing as zeros, without an error.
    """
    plist = dataset.id.get_create_plist()
    count = plist.get_external_count()
    if count == 0:
        return [], None
    prefix = _raw_prefix(dataset)
    # The dataset's bytes fill the raw files' segments in order; later ones may stay unused.
    total = dataset.id.get_type().get_size() * math.prod(dataset.shape)
    segments, end, from_cwd = [], 0, False
    for number in range(count):
        raw, offset, size = plist.get_external(number)
        raw = os.fsdecode(raw)
        needed = min(int(size), total - end)
        if not needed:
            break
        end += needed
        from_cwd = from_cwd or not (os.path.isabs(raw) or os.path.isabs(prefix))
        path = absolute_path(os.path.join(prefix, raw))  # raw itself where it is absolute
        if not os.path.isfile(path):
            raise ValueError(f"{name} keeps its data in the external raw file {raw!r}, and "
                             f"{path!r} does not exist (HDF5 looks for a relative one from "
                             "the working directory, or from HDF5_EXTFILE_PREFIX as set "
                             "when Python started).")
        if os.path.getsize(path) < offset + needed:
            raise ValueError(f"{name} keeps its data in the external raw file {path!r}, which "
                             f"is shorter than the data: {os.path.getsize(path)} bytes, "
                             f"{offset + needed} needed (HDF5 would read the rest as zeros).")
        segments.append((path, end))
    return segments, (os.getcwd() if from_cwd else None)


def _raw_prefix(dataset):
    """The folder HDF5 resolves ``dataset``'s relative raw file names from: the prefix its
    access property list reports, "" (the working directory) if none.

    Not ``os.environ``: HDF5 reads HDF5_EXTFILE_PREFIX once, when it starts, and reports
    the prefix it uses (that, or one set on the dataset) there, ``${ORIGIN}`` replaced.
    One set in ``os.environ`` later is not where HDF5 reads the raw files from.
    """
    prefix = _access_prefix(dataset, "get_efile_prefix")
    return "" if prefix == "." else prefix


def _access_prefix(dataset, getter):
    """The prefix that ``dataset``'s access property list's ``getter`` reports, as a str,
    with a leading ``${ORIGIN}`` replaced (HDF5 2.0 has replaced it already)."""
    prefix = os.fsdecode(getattr(dataset.id.get_access_plist(), getter)() or b"")
    return _origin_replaced(prefix, dataset.file.filename)


def _origin_replaced(prefix, filename):
    """``prefix`` with a leading ``${ORIGIN}`` replaced as HDF5 replaces it: by the folder
    of the HDF5 file ``filename``, made absolute (as HDF5 made it when it opened the
    file), with its trailing separator ("${ORIGIN}raw" is the folder "raw" next to it)."""
    origin = "${ORIGIN}"
    if not prefix.startswith(origin):
        return prefix
    return os.path.join(os.path.dirname(absolute_path(filename)), "") + prefix[len(origin):]


def _refuse_missing_filters(dataset, name):
    """Raise ValueError if the chunks of ``dataset`` were written through a filter that this
    HDF5 library lacks (a compression plugin: blosc, zstd, bitshuffle, ...): every chunk
    read failed, after the file opened without a word, with h5py's "can't open directory
    (.../plugin)", which names neither the filter nor a cure.

    Judged by the first stored chunk's filter mask: a filter marked optional that the
    writer lacked too was skipped, and its chunks read without it.
    """
    import h5py

    if dataset.chunks is None or dataset.is_virtual:  # filters need chunks
        return
    plist = dataset.id.get_create_plist()
    missing = [(number, plist.get_filter(number)) for number in range(plist.get_nfilters())
               if not h5py.h5z.filter_avail(plist.get_filter(number)[0])]
    if not missing or dataset.id.get_num_chunks() == 0:  # no chunk: all fill value
        return
    # Bit i set: filter i was skipped. (HDF5 before 1.10.5 cannot tell: taken as applied.)
    chunk_info = getattr(dataset.id, "get_chunk_info", None)
    mask = chunk_info(0).filter_mask if chunk_info is not None else 0
    applied = [(code, label) for number, (code, _, _, label) in missing
               if not mask & (1 << number)]
    if applied:
        filters = ", ".join(f"filter {code} ({os.fsdecode(label) or 'unnamed'})"
                            for code, label in applied)
        raise ValueError(f"{name} was compressed with {filters}, not available in this "
                         "HDF5 library: no chunk can be read. Register it first (import "
                         "hdf5plugin, which provides blosc, zstd, lz4, bitshuffle and "
                         "others, or set HDF5_PLUGIN_PATH to the plugin's folder).")


def _refuse_missing_sources(dataset, name):
    """Raise ValueError if a source file of the virtual dataset ``dataset`` is missing:
    HDF5 reads its region as the fill value, without an error.

    A source file is looked for where HDF5 looks (:func:`_virtual_source_folders`): the
    virtual prefix HDF5 uses (HDF5_VDS_PREFIX as set when it started, or the dataset's),
    the virtual file's own folder, then the working directory. Names with printf-style
    patterns (``%b``, of unlimited virtual datasets) are left to HDF5. Only the files are
    checked, not the datasets in them.
    """
    if not dataset.is_virtual:
        return
    filename = dataset.file.filename
    folders = _virtual_source_folders(dataset)
    missing, seen = [], {".", ""}  # "." (or ""): a source in the virtual file itself
    for source in dataset.virtual_sources():
        source_file = source.file_name
        if source_file in seen or "%" in source_file:
            continue
        seen.add(source_file)
        if not _virtual_source_found(source_file, folders):
            missing.append(source_file)
    if missing:
        raise ValueError(f"{name} is a virtual dataset whose source files {_few(missing)} are "
                         f"missing (looked for next to {filename!r} and in the working "
                         "directory): HDF5 would read their regions as the fill value "
                         f"{dataset.fillvalue}. Put them back, or open the file from where "
                         "they are.")


def _virtual_source_folders(dataset):
    """The folders HDF5 looks for a virtual dataset's relative source files in, in order:
    its virtual prefix (HDF5_VDS_PREFIX as HDF5 read it when it started, or the
    dataset's own: see :func:`_raw_prefix`), then the virtual file's own folder (the
    working directory comes last, by the name itself)."""
    prefix = _access_prefix(dataset, "get_virtual_prefix")
    origin = _origin_replaced("${ORIGIN}", dataset.file.filename)
    return [prefix, origin] if prefix else [origin]


def _virtual_source_found(source_file, folders):
    """Whether HDF5 finds the source file ``source_file`` of a virtual dataset: as named,
    or in one of ``folders``; an absolute name is looked for by its base name too (a
    virtual file moved with its sources)."""
    names = {source_file, os.path.basename(source_file)}
    candidates = [os.path.join(folder, name) for folder in folders for name in names]
    return any(os.path.isfile(path) for path in (source_file, *candidates))


def _few(names, shown=5):
    """``names`` for a message: the first ``shown``, and how many more."""
    more = len(names) - shown
    return repr(names[:shown]) + (f" (and {more} more)" if more > 0 else "")


def _on_disk_name(filename):
    """``filename`` made absolute where it names a file on disk: the file is checked, and
    reopened on workers, by this name, which a change of working directory would point
    elsewhere (to no file, or another). Other names (an in-memory file's) stay as given."""
    return absolute_path(filename) if os.path.isfile(filename) else filename


def absolute_path(path):
    """``path`` (str or bytes) joined to the working directory where it is relative.

    Not normalised, as ``os.path.abspath`` would: "link/.." is the OS's to resolve. An
    absolute path is returned as given, without asking for the working directory, which
    may have been deleted (``os.getcwd`` then raises FileNotFoundError, naming nothing).
    """
    path = os.fspath(path)
    if os.path.isabs(path):
        return path
    return os.path.join(os.getcwd() if isinstance(path, str) else os.getcwdb(), path)


def _reopenable_name(dataset):
    """The path that opens ``dataset`` again in its own file (``dataset.file``), or None.

    h5py names a dataset reached through a soft link to an external link by the soft
    link's path, which in the external file (the dataset's own) leads to another dataset
    or to none: a worker, or any pickled copy, reopening it by that name read other
    values. Such a dataset is looked up among its file's objects instead.
    """
    file = dataset.file
    name = dataset.name
    if name is not None and _opened(file, name) == dataset:
        return name
    found = file.visititems(lambda path, obj: path if obj == dataset else None)
    return None if found is None else f"/{found}"


def _opened(file, name):
    """``file[name]``, or None where ``name`` leads nowhere (a broken link)."""
    try:
        return file.get(name)
    except (KeyError, OSError, ValueError):
        return None


def _held_in_memory(file, name):
    """Why ``file``'s data cannot be read by reopening it by name (a worker's way), or None.

    A file-like object has no name on disk; an in-memory file (``driver="core"``) opened
    for writing holds data its file on disk (if any: one of the same name, with other
    data) does not, and reopened by that name it was read from that other file.
    """
    driver = file.driver
    if driver == "fileobj" or (driver == "core" and (file.mode != "r"
                                                     or not os.path.isfile(file.filename))):
        return (f"{name} is held in memory (h5py driver {driver!r}): a worker reopens the "
                "file by its name, and the file of that name on disk, if any, holds other "
                "data; write it to disk and open it by its path")
    return None


def refuse_unsendable(source):
    """Raise ValueError if the workers of a client cannot read ``source``: an in-memory
    HDF5 file (:func:`_held_in_memory`) or a zarr ZipStore still being written
    (:func:`_zip_being_written`); any other source passes."""
    reason = getattr(source, "unsendable", None)
    if reason:
        raise ValueError(f"client: the volume cannot be sent to the workers ({reason}); "
                         "or pass client=None to read it in local threads.")


def _check_h5_chunks_stored(dataset, name):
    if dataset.is_virtual:
        raise ValueError(f"{name} is a virtual dataset: its data sit in other files, which "
                         "strict=True cannot check; open it without strict.")
    fill = f"would read as the fill value {dataset.fillvalue}"
    if dataset.chunks is None:  # contiguous (or compact): storage is there once written
        if dataset.id.get_storage_size() == 0:
            raise MissingChunksError(f"{name} was never written: every entry {fill} "
                                     "(strict=True refuses this).")
        return
    stored = int(dataset.id.get_num_chunks())
    total = math.prod(-(-size // chunk) for size, chunk in zip(dataset.shape, dataset.chunks,
                                                               strict=True))
    if stored < total:
        raise MissingChunksError(
            f"{name} stores {stored} of its {total} chunks; the {total - stored} missing ones "
            f"{fill} (strict=True refuses this; without it, missing chunks are read as fill "
            "values).")


class DaskSource(ChunkSource):
    """A dask array without a store we can read directly (e.g. defined by functions)."""

    def __init__(self, array):
        super().__init__(array.shape, array.dtype, array.chunks, f"dask array {array.name}")
        self.array = array

    def _read(self, slices):
        # Synchronous: the read itself may run inside a distributed task.
        return self.array[slices].compute(scheduler="sync")


class SliceableSource(ChunkSource):
    """Anything sliceable with basic slices (nibabel's ArrayProxy, np.memmap, a PyTorch
    tensor, ...). A PyTorch tensor is read to host NumPy arrays (detached, off its device;
    bfloat16 widened to float32), its dtype given as NumPy's."""

    def __init__(self, array, chunks=None, name=None, dtype=None, stored_dtype=None):
        dtype = dtype if dtype is not None else _host_dtype(array)
        super().__init__(array.shape, dtype, chunks, name or type(array).__name__,
                         stored_dtype=stored_dtype)
        self.array = array

    def _read(self, slices):
        return _on_host(self.array[slices])


class NiftiSource(SliceableSource):
    """A NIfTI image's array proxy, which reopens the file by name on every read: each
    read first checks that the file is the one opened (a file rewritten meanwhile would
    otherwise mix both versions in one TT).

    Parameters
    ----------
    proxy : nibabel.arrayproxy.ArrayProxy
    path : str
        The file the proxy reads.
    dtype, stored_dtype : numpy.dtype
        What a read returns (float64 when the image is scaled), and what the file stores.
    """

    def __init__(self, proxy, path, dtype, stored_dtype):
        name = f"NIfTI {path!r}"
        super().__init__(proxy, chunks=None, name=name, dtype=dtype, stored_dtype=stored_dtype)
        self.path = path
        self._stamp = FileStamp(path, name)

    def _read(self, slices):
        self._stamp.check()
        return super()._read(slices)


def _is_torch(array):
    """Whether ``array`` is a PyTorch tensor (without importing torch when it is not)."""
    return type(array).__module__.startswith("torch")


def _host_dtype(array):
    """NumPy's dtype of ``array``'s entries once on the host: ``np.dtype`` cannot read a
    PyTorch dtype (``torch.float64``)."""
    if not _is_torch(array):
        return array.dtype
    import torch

    check_concrete(array, "volume")  # a meta tensor holds no values to stream
    return to_host(torch.empty(0, dtype=array.dtype)).dtype


def _on_host(block):
    """A block as NumPy can read it: ``np.asarray`` fails on a PyTorch tensor that requires
    grad or lives on a GPU."""
    return to_host(block) if _is_torch(block) else block


def refuse_masked(obj, name):
    """Raise TypeError if ``obj`` is a masked array, or a dask array of masked chunks
    (``dask.array.ma``): a cross reads raw entries, masked or not, and ``np.asarray``
    drops a mask without a word.

    Parameters
    ----------
    obj : object
        What was passed.
    name : str
        The argument, as messages name it.
    """
    if isinstance(obj, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array: a cross reads raw entries, masked or not. "
                        f"Fill the masked entries first ({name}.filled(value)).")
    if (type(obj).__module__.startswith("dask.array")
            and isinstance(getattr(obj, "_meta", None), np.ma.MaskedArray)):
        raise TypeError(f"{name} is a dask array of masked chunks (dask.array.ma): a cross "
                        "reads raw entries, masked or not. Fill the masked entries first "
                        f"(dask.array.ma.filled({name}, value)).")


def refuse_closed_hdf5(obj, name):
    """Raise ValueError if ``obj`` is an h5py object whose file was closed: its ``shape``
    raised h5py's bare RuntimeError ("identifier is not of specified type") wherever it
    was read first."""
    if not type(obj).__module__.startswith("h5py."):
        return
    handle = getattr(obj, "id", None)
    if handle is not None and not getattr(handle, "valid", True):
        raise ValueError(f"{name} is an h5py {type(obj).__name__} of a closed file; open the "
                         "file again (h5py.File(path, 'r')[name]) or pass the file's path.")


def as_chunk_source(obj):
    """The best :class:`ChunkSource` for ``obj``: its store when it has one."""
    if isinstance(obj, ChunkSource):
        return obj
    refuse_closed_hdf5(obj, "the array")
    refuse_masked(obj, "the array")
    kind = f"{type(obj).__module__}.{type(obj).__name__}"
    if kind.startswith(("zarr.", "h5py.")) and not hasattr(obj, "shape"):
        # A group (or an HDF5 file) failed deep in the source: it has no shape.
        raise TypeError(f"cannot read chunks from {kind}: a group of arrays, not an array; "
                        "pass one of its arrays (group['name']).")
    if kind.startswith("zarr."):
        return ZarrSource(obj)
    if kind.startswith("h5py."):
        return h5py_source(obj)
    if kind.startswith("dask.array"):
        if any(np.isnan(size) for sizes in obj.chunks for size in sizes):
            raise ValueError(f"the dask array of shape {obj.shape} has chunks of unknown size "
                             "(NaN, after a boolean mask, say): call its "
                             "compute_chunk_sizes() first.")
        check_chunk_count(obj.chunks, f"dask array {obj.name}")  # before len() of its graph
        store = _store_behind(obj)
        return as_chunk_source(store) if store is not None else DaskSource(obj)
    if hasattr(obj, "shape") and hasattr(obj, "__getitem__") and hasattr(obj, "dtype"):
        return SliceableSource(obj)
    raise TypeError(f"cannot read chunks from {kind}; expected a dask array, a zarr array, "
                    "an h5py dataset or a sliceable array.")


def h5py_source(obj, strict=False):
    """The :class:`ChunkSource` of an h5py dataset, or of one of h5py's views of a dataset
    (``dataset.astype(dtype)``, ``dataset.fields(name)``, ``dataset.asstr()``), which has
    a shape, a dtype and slicing, but none of a dataset's other attributes: each failed
    deep inside ("'AsTypeView' object has no attribute 'chunks'"). A view is read through
    itself, chunked as its dataset; its dataset is checked as :class:`H5Source` checks one
    (a filter missing, a virtual source missing, an external raw file missing or short, and
    with ``strict`` chunks missing).

    Parameters
    ----------
    obj : h5py.Dataset or a view of one
    strict : bool, default False
        As for :class:`H5Source`.
    """
    import h5py

    if isinstance(obj, h5py.Dataset):
        return H5Source(obj, strict=strict)
    dataset = getattr(obj, "_dset", None)  # where h5py's views keep their dataset
    if not isinstance(dataset, h5py.Dataset) or not hasattr(obj, "shape"):
        raise TypeError(f"cannot read chunks from h5py {type(obj).__name__}; expected an h5py "
                        "Dataset (or a view of one, such as dataset.astype(dtype)).")
    refuse_closed_hdf5(dataset, "the array")
    name = (f"HDF5 '{dataset.file.filename}' dataset {dataset.name} (an h5py "
            f"{type(obj).__name__})")
    # Its dtype (strings, objects) is refused first, before any check reads the file.
    return H5ViewSource(obj, dataset, name, strict)


class H5ViewSource(SliceableSource):
    """One of h5py's views of a dataset, read through itself, chunked as its dataset;
    each read checks that the file and its external raw files are the ones opened, as
    :class:`H5Source` does.

    Parameters
    ----------
    view : h5py view (``dataset.astype(dtype)``, ``dataset.fields(name)``, ...)
    dataset : h5py.Dataset
        The dataset it views.
    name : str
        How messages name it.
    strict : bool
        As for :class:`H5Source`.
    """

    def __init__(self, view, dataset, name, strict):
        super().__init__(view, chunks=dataset.chunks, name=name)
        _check_h5_dataset(dataset, name, strict)
        filename = _on_disk_name(dataset.file.filename)
        self._stamp = FileStamp(filename, name) if os.path.isfile(filename) else None
        self._raw_files = ExternalRawFiles(dataset, name)
        self.unsendable = (f"{name} is an h5py view of a dataset, which does not pickle; "
                           "pass the dataset itself, or its file's path")

    def _read(self, slices):
        if self._stamp is not None:
            self._stamp.check()
        self._raw_files.check(slices)
        return super()._read(slices)


def _store_behind(array):
    """The zarr array or h5py dataset a dask array was made from, if it is that simple.

    A lazy (Blockwise) layer is judged by its one task, never materialized: that lists
    every chunk's task, which never ends for a virtual array of trillions of chunks.
    """
    graph = array.__dask_graph__()
    layers = getattr(graph, "layers", None)
    if layers is None:  # a plain dict graph is materialized already
        layers = {"graph": graph}
    n_tasks = sum(len(layer) for layer in layers.values())
    if n_tasks != array.npartitions + 1:
        return None
    # Every task but the store must only read its own chunk's region of it: one that
    # computes from it, or reads another region (a hand-made graph, a fused one), gives
    # other values than the store holds there.
    edges = [np.cumsum((0, *sizes)) for sizes in array.chunks]
    stores, reads_only = [], True
    for layer in layers.values():
        if not _is_materialized(layer):  # a Blockwise layer: one task for all its chunks
            reads_only = reads_only and _is_getter(getattr(layer, "task", None))
            continue
        for key, value in dict(layer).items():
            if (type(value).__module__.startswith(("zarr.", "h5py."))
                    and tuple(getattr(value, "shape", ())) == tuple(array.shape)):
                stores.append(value)
            else:
                reads_only = reads_only and _is_getter(value) and _reads_its_chunk(key, value,
                                                                                   edges)
    return stores[0] if len(stores) == 1 and reads_only else None


def _reads_its_chunk(key, task, edges):
    """Whether a getter keyed ``(name, *block)`` reads exactly that block of its store
    (``edges``: the chunk boundaries along each axis). Getters of other regions (a
    hand-made graph, slicing such as ``x[::-1]`` fused into them) make an array of the
    store's shape with other values: read from the store, they were wrong."""
    block = key[1:] if isinstance(key, tuple) else ()
    arguments = task.args if hasattr(task, "args") else task[1:]  # after the function
    region = arguments[1] if len(arguments) > 1 else None
    region = getattr(region, "value", region)  # a task-spec DataNode holds the slices
    if len(block) != len(edges) or not isinstance(region, tuple) or len(region) != len(block):
        return False
    for part, number, bounds in zip(region, block, edges, strict=True):
        if not (isinstance(part, slice) and isinstance(number, int | np.integer)
                and 0 <= number < len(bounds) - 1):
            return False
        if part.indices(int(bounds[-1])) != (int(bounds[number]), int(bounds[number + 1]), 1):
            return False
    return True


def _is_getter(task):
    """Whether a graph value is one of dask's ``from_array`` reads of a region."""
    from dask.array.core import getter, getter_inline, getter_nofancy

    func = getattr(task, "func", None)
    if func is None and isinstance(task, tuple) and task:
        func = task[0]  # an old-style task: (function, *arguments)
    return any(func is known for known in (getter, getter_inline, getter_nofancy))


def _is_materialized(layer):
    is_materialized = getattr(layer, "is_materialized", None)
    return True if is_materialized is None else bool(is_materialized())
