"""TT files: cores and metadata in one ``.npz``, written atomically, read without pickle.

A file is checked whole before its cores are read: the metadata must be a JSON object of
this format and version, the cores exactly ``core_0 .. core_{n_cores-1}``, numeric, 3-D,
chained into a TT whose ranks and mode sizes agree with the metadata, and the sizes their
headers declare within ``max_bytes`` (an archive member inflates to what its header says:
a forged header or a deflate bomb is refused before anything is allocated).

Limits of the format, checked by :func:`save_tt` and :func:`load_tt` alike: every mode size
and rank is at least 1 (a TT with an empty mode or a zero rank holds no entries); the
metadata's ``shape`` is a list of at most ``n_cores`` ints in ``[1, 2**63 - 1]`` (modes are
indexed by int64); the metadata is at most ``MAX_META_BYTES`` of JSON, its
keys strings, and ``format``, ``format_version``, ``n_cores`` and ``ranks`` are the file's
own. A forged header therefore costs no more to refuse than a valid one costs to read.
"""

import json
import numbers
import os
import zipfile

import numpy as np
import tensorly as tl
from tensorly.cp_tensor import CPTensor
from tensorly.tt_tensor import TTTensor
from tensorly.tucker_tensor import TuckerTensor

from ._atomic import write_atomically
from ._backend import check_concrete, to_host
from ._validation import check_bool, check_int, check_no_nul, check_regular_file

FORMAT = "tensorly-cross-tt"
FORMAT_VERSION = 1
# Core dtypes a TT file may hold: numbers only (bool, ints, floats, complex).
CORE_KINDS = "biufc"
# Bytes of the widest portable float and complex: NumPy's long double ("<f16") is an 80-bit
# float padded on x86 and an IEEE quad on other machines, the same header for other numbers.
MAX_FLOAT_BYTES = {"f": 8, "c": 16}
# ml_dtypes' floats narrower than float16 or of other layout (bfloat16, float8_e4m3fn, ...),
# which float32 holds exactly.
LOW_PRECISION_FLOATS = ("bfloat16", "float8", "float6", "float4")
# Default bound on the bytes the cores of a file may inflate to when loaded.
MAX_BYTES = 2**32
# The metadata record is small JSON; a larger one is refused before it is read.
MAX_META_BYTES = 2**24
# Metadata keys the file format sets itself (save_tt refuses other values for them).
RESERVED_KEYS = ("format", "format_version", "n_cores", "ranks")
# Zip compression methods zipfile reads (save_tt writes stored members).
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
# A mode is indexed by int64: its size is at most this.
MAX_MODE_SIZE = 2**63 - 1


class TTFileError(ValueError):
    """A file is not a readable tensorly-cross TT file.

    Raised by :func:`load_tt` for a corrupt, foreign, inconsistent or unsafe file, and by
    :func:`save_tt` for cores or metadata that would make such a file.

    Examples
    --------
    >>> import os, tempfile
    >>> import tensorly_cross as tlc
    >>> path = os.path.join(tempfile.mkdtemp(), "not_a_tt.npz")
    >>> with open(path, "wb") as stream:
    ...     _ = stream.write(b"plain bytes")
    >>> try:
    ...     tlc.load_tt(path)
    ... except tlc.TTFileError:
    ...     print("refused")
    refused
    """


def save_tt(path, tt, metadata=None, overwrite=False):
    """Write a TT and its metadata to ``path`` (``.npz``), atomically.

    The file is written to a temporary name in the same folder and published under ``path``
    only once complete, so an interrupted save never leaves a half-written file. Without
    ``overwrite`` the publication is a hard link, which fails if ``path`` exists: of two
    writers racing for one name, exactly one succeeds and the other gets FileExistsError.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (``.npz`` by convention; its folder must exist). A symbolic link
        is written through: its target gets the file and the link stays.
    tt : TTTensor or list of cores
        Numeric 3-D cores of shapes ``(r_k, n_k, r_{k+1})`` with ``r_0 = r_d = 1``, every
        entry finite (at most float64 or complex128: a long double is not portable;
        bfloat16 and float8 cores, of PyTorch or JAX, are stored as float32).
    metadata : dict, optional
        JSON-serialisable facts to keep (original shape, quantics layout, error, arguments),
        with str keys (JSON has no others), at most ``MAX_META_BYTES`` (16 MiB) as JSON.
        ``shape``, ``quantics`` and ``axes``, when given, must agree with the cores (see
        :func:`load_tt`). ``format``, ``format_version``, ``n_cores`` and ``ranks`` are set
        by the file itself: they may be given (as :func:`load_tt` returns them) only with
        the values the file gets.
    overwrite : bool, default False
        Replace an existing file (atomically: readers see the old file or the new one).

    Returns
    -------
    path : str
        ``path``, as a string.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a directory.
    TTFileError
        If the cores or the metadata would make a file that :func:`load_tt` refuses (a
        mode size or rank of 0, long double cores or cores of a dtype that is not
        NumPy's own and not a low-precision float (ml_dtypes' int4, complex32), metadata
        over ``MAX_META_BYTES``, a reserved key with another value than the file's).
    TypeError
        If ``metadata`` is not a dict, holds values JSON cannot represent or keys that are
        not str, or if ``overwrite`` is not a bool, or a core is a traced JAX value or a
        masked array.
    ValueError
        If ``path`` is empty, or it (or the target of its link) is a FIFO, socket or
        device; or if a core holds NaN or inf (the message names the core and how many),
        or is a PyTorch tensor on the ``meta`` device.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> cores = [np.ones((1, 4, 2)), np.ones((2, 5, 1))]
    >>> path = tlc.save_tt(os.path.join(tempfile.mkdtemp(), "ones.tt.npz"), cores,
    ...                    {"source": "example"})
    >>> tt, metadata = tlc.load_tt(path)
    >>> tt.rank, metadata["source"]
    ((1, 2, 1), 'example')
    """
    path = _check_target(path)
    overwrite = check_bool(overwrite, "overwrite")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True (--force) to replace it.")
    if not isinstance(tt, list | tuple) and not hasattr(tt, "factors"):
        raise TypeError(f"tt must be a TTTensor or a list of cores, got {type(tt).__name__}.")
    if isinstance(tt, CPTensor | TuckerTensor):  # they have factors too, not TT cores
        raise TypeError(f"tt is a TensorLy {type(tt).__name__}, not a TT: pass a TTTensor or "
                        "a list of TT cores.")
    for k, core in enumerate(tt):  # named here: to_host's message said "a tensor"
        check_concrete(core, f"tt core {k}")
        if isinstance(core, np.ma.MaskedArray):  # np.asarray would store its raw entries
            raise TypeError(f"tt core {k} is a masked array; a TT file stores every entry: "
                            f"pass the core filled (core.filled(value)).")
    cores = [_widened(np.asarray(to_host(core))) for core in tt]
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}.")
    meta = dict(metadata or {})
    where = f"save_tt({path!r})"
    reserved = {key: meta.pop(key) for key in RESERVED_KEYS if key in meta}
    for key in ("shape", "axes"):  # a tuple (an array's shape) is stored as JSON's list,
        # and NumPy ints (e.g. from an array's sizes) as Python ints, in a list as in a tuple
        if isinstance(meta.get(key), list | tuple):
            meta[key] = [int(item) if isinstance(item, numbers.Integral)
                         and not isinstance(item, bool) else item
                         for item in meta[key]]
    meta.update(format=FORMAT, format_version=FORMAT_VERSION, n_cores=len(cores))
    _check_cores([(core.shape, core.dtype) for core in cores], where)
    _check_finite(cores, where, advice=(
        " Cores cast to a narrower dtype overflow past its largest value (float32: "
        "3.4e38): keep them in float64 (the command line's --dtype float64)."))
    meta["ranks"] = [1] + [int(core.shape[2]) for core in cores]
    _check_reserved(reserved, meta, where)
    _check_meta_agrees(meta, [core.shape for core in cores], where)
    encoded = _encode_meta(meta, where)
    arrays = {f"core_{k}": core for k, core in enumerate(cores)}
    arrays["meta"] = np.frombuffer(encoded, dtype=np.uint8)
    _write_atomically(path, arrays, overwrite)
    return path


def _widened(core):
    """``core`` in float32 if it holds ml_dtypes' low-precision floats (JAX's bfloat16,
    the float8 types), exactly, as ``to_host`` widens PyTorch's: a JAX bfloat16 TT was
    refused as "not numbers" where a PyTorch one was saved."""
    # A type registered outside NumPy (isbuiltin 2), not the kind: ml_dtypes gives
    # float8_e5m2 kind "f" and the others "V", and NumPy's float64 starts with "float6".
    if core.dtype.isbuiltin == 2 and core.dtype.name.startswith(LOW_PRECISION_FLOATS):
        return core.astype(np.float32)
    return core


def _check_target(path):
    """``path`` as a str naming a file that can be created: refused by name, before the
    temporary file (whose name the user never gave) is involved."""
    if not isinstance(path, str | bytes | os.PathLike):
        raise TypeError(f"path must be a str, bytes or os.PathLike, got "
                        f"{type(path).__name__}.")
    path = os.fsdecode(path)
    if not path:
        raise ValueError("path must name a file, got ''.")
    check_no_nul(path)
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise IsADirectoryError(f"path {path!r} names a directory; give a file path (e.g. "
                                "a .tt.npz file in that directory).")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path {path!r}: its folder {folder!r} does not exist (the "
                                "file is created, not its folders).")
    return path


def _check_finite(cores, where, advice=""):
    """Refuse a core holding NaN or inf: every entry of the TT it is part of would be
    unusable, and a file that says nothing of it passes for a result."""
    for k, core in enumerate(cores):
        if core.dtype.kind not in "fc":  # bool and integer cores are finite
            continue
        count = core.size - int(np.count_nonzero(np.isfinite(core)))
        if count:
            raise ValueError(
                f"{where}: core {k} (shape {core.shape}, {core.dtype}) holds {count} "
                f"non-finite entr{'y' if count == 1 else 'ies'} (NaN or inf); a TT file "
                f"holds finite cores.{advice}")


def _check_reserved(given, meta, where):
    """Reserved keys the caller gave must say what the file says (as load_tt's metadata
    does): another value would be silently replaced."""
    for key, value in given.items():
        if type(value) is not type(meta[key]) or value != meta[key]:
            raise TTFileError(f"{where}: metadata key {key!r} is set by the file format "
                              f"(reserved: {', '.join(RESERVED_KEYS)}); it is {meta[key]!r} "
                              f"for these cores, got {value!r}. Store it under another key.")


def _encode_meta(meta, where):
    """The metadata as JSON bytes; refused if JSON would change it or load_tt refuse it."""
    try:
        encoded = json.dumps(meta, allow_nan=True).encode()
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must be JSON-serialisable: {error}") from error
    _check_str_keys(meta, "metadata")  # after dumps: it has ruled out circular references
    if len(encoded) > MAX_META_BYTES:
        raise TTFileError(f"{where}: the metadata takes {len(encoded)} bytes as JSON, above "
                          f"the {MAX_META_BYTES} bytes load_tt reads; store large data as "
                          "a file of its own.")
    return encoded


def _check_str_keys(value, name):
    """JSON turns an int or other key into a str: it would come back as another key."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{name} keys must be str (JSON has no others), got "
                                f"{key!r} ({type(key).__name__}).")
            _check_str_keys(item, f"{name}[{key!r}]")
    elif isinstance(value, list | tuple):
        for k, item in enumerate(value):
            _check_str_keys(item, f"{name}[{k}]")


def _write_atomically(path, arrays, overwrite):
    """Write ``arrays`` to a temporary file beside ``path``, then publish it there."""
    write_atomically(path, lambda stream: np.savez(stream, **arrays),
                     publish=lambda temporary, target: _publish(temporary, target, overwrite))


def _publish(temporary, path, overwrite):
    """Give the complete file its name: replace, or link where the name must be new."""
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        # Atomic and exclusive: fails if the name exists, even if it appeared just now.
        os.link(temporary, path)
    except FileExistsError:
        raise FileExistsError(f"{path!r} exists (another writer created it first); pass "
                              "overwrite=True (--force) to replace it.") from None
    except OSError:  # no hard links on this file system: claim the name exclusively
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        os.close(descriptor)
        os.replace(temporary, path)


def load_tt(path, max_bytes=MAX_BYTES):
    """Read a TT file written by :func:`save_tt`.

    Parameters
    ----------
    path : str or os.PathLike
        A regular file (a FIFO or device is refused: reading it could block forever).
    max_bytes : int >= 1 or None, default 2**32 (4 GiB)
        Refuse a file whose cores would take more memory than this once loaded (their
        headers are read first, nothing is allocated for a refused file). ``None`` lifts the
        bound: only for files you trust.

    Returns
    -------
    tt : TTTensor
        Cores in the active TensorLy backend.
    metadata : dict
        What :func:`save_tt` was given, plus the file's format fields (``format``,
        ``format_version``, ``n_cores``, ``ranks``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    OSError
        If the file cannot be read (no permission, an I/O error); the message names it.
    TypeError, ValueError
        If ``path`` is not a str, bytes or os.PathLike, or ``max_bytes`` is not None or an
        int >= 1.
    TTFileError
        If the file is not a tensorly-cross TT file, is corrupt, holds pickled objects
        (never unpickled), non-numeric, long double or non-finite (NaN, inf) cores, is of
        a newer format version, has cores that do not chain into a TT or disagree with its
        metadata (count, ranks, shape), or would exceed ``max_bytes``.

    Notes
    -----
    ``tt`` is the TT as it was computed, in its own mode order. A file of ``tensorly-cross
    compress --axes`` (metadata ``axes``) holds the volume's axes in that order, and one of
    ``--quantics`` (metadata ``quantics``) one mode per digit: ``tl.tt_to_tensor(tt)`` is
    then the volume transposed, or reshaped, silently so for a cube. The volume in its own
    axes is ``np.transpose(tl.tt_to_tensor(tt), np.argsort(metadata["axes"]))``, or
    ``qtt_to_tt(tt, QuanticsLayout.create(metadata["shape"]))`` for a grouped quantics
    layout; ``tensorly-cross reconstruct`` does this for every layout.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> path = os.path.join(tempfile.mkdtemp(), "ranks.tt.npz")
    >>> _ = tlc.save_tt(path, [np.ones((1, 3, 2)), np.ones((2, 3, 1))], {"shape": [3, 3]})
    >>> tt, metadata = tlc.load_tt(path)
    >>> metadata["ranks"], metadata["shape"]
    ([1, 2, 1], [3, 3])
    """
    if not isinstance(path, str | bytes | os.PathLike):  # os.fsdecode's message named neither
        raise TypeError(f"path must be a str, bytes or os.PathLike, got {type(path).__name__}.")
    path = os.fsdecode(path)
    if max_bytes is not None:
        max_bytes = check_int(max_bytes, "max_bytes", minimum=1)
    try:
        check_regular_file(path)
    except ValueError as error:
        raise TTFileError(str(error)) from None
    where = f"{path!r} is not a readable tensorly-cross TT file"
    if not _is_zip(path):
        # Checked first: NumPy would try any other file as a pickle, and say so.
        raise TTFileError(f"{where} (not a .npz archive).")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise TTFileError(f"{where} (not .npz).")
        with archive:
            _check_members(archive.zip, where)
            meta = _read_meta(archive, where)
            headers = _core_headers(archive, meta["n_cores"], where)
            _check_cores(headers, where)
            _check_size(headers, max_bytes, where)
            _check_meta_agrees(meta, [shape for shape, _ in headers], where)
            cores = [_native(archive[f"core_{k}"]) for k in range(meta["n_cores"])]
            # As save_tt refuses to write them: a file from elsewhere (or edited) with NaN
            # or inf gave a TT whose every entry through that core was unusable.
            try:
                _check_finite(cores, where)
            except ValueError as error:  # its message names the file already
                raise TTFileError(str(error)) from None
    except TTFileError:
        raise
    except (ValueError, OSError, KeyError, EOFError, NotImplementedError,
            zipfile.BadZipFile) as error:
        raise TTFileError(f"{where}: {error}") from error
    return TTTensor([tl.tensor(core) for core in cores]), meta


def _is_zip(path):
    """Whether ``path`` is a zip archive; an OSError (no permission to read it, an I/O
    error), which ``zipfile.is_zipfile`` swallows into "not a zip", is raised naming it."""
    try:
        with open(path, "rb") as stream:
            stream.read(1)  # a read error, raised here rather than lost below
            return zipfile.is_zipfile(stream)
    except OSError as error:
        raise type(error)(error.errno, f"cannot read TT file {path!r}: "
                          f"{error.strerror}") from error


def _native(core):
    """``core`` in the machine's byte order: a file may hold big-endian cores (written on
    such a machine, or from such arrays), which PyTorch refuses to convert."""
    if core.dtype.isnative:
        return core
    return core.astype(core.dtype.newbyteorder("="))


def _check_members(archive, where):
    """Refuse members zipfile cannot read: encrypted ones (it raised RuntimeError) or
    compressed by a method it lacks (NotImplementedError), neither naming the file."""
    for info in archive.infolist():
        if info.flag_bits & 0x1:
            raise TTFileError(f"{where}: its member {_short(info.filename)} is encrypted (save_tt "
                              "never encrypts).")
        if info.compress_type not in ZIP_METHODS:
            raise TTFileError(f"{where}: its member {_short(info.filename)} is compressed with zip "
                              f"method {info.compress_type}; readable are stored, deflate, "
                              "bzip2 and lzma.")


def _read_meta(archive, where):
    """The metadata record: a JSON object of this format, a known version, ``n_cores``."""
    if "meta" not in archive.files:
        raise TTFileError(f"{where} (no metadata).")
    shape, dtype = _member_header(archive, "meta")
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_META_BYTES:
        raise TTFileError(f"{where}: the metadata record is not a JSON text of at most "
                          f"{MAX_META_BYTES} bytes (header: {dtype}, shape {shape}).")
    try:
        meta = json.loads(bytes(archive["meta"]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TTFileError(f"{where}: its metadata is not JSON ({error}).") from error
    if not isinstance(meta, dict):
        raise TTFileError(f"{where}: its metadata is a JSON {type(meta).__name__}, not an "
                          "object.")
    if meta.get("format") != FORMAT:
        raise TTFileError(f"{where} (format {meta.get('format')!r}).")
    version = meta.get("format_version")
    if not _is_int(version) or not 1 <= version <= FORMAT_VERSION:
        raise TTFileError(f"{where}: format_version {version!r}; this library reads versions "
                          f"1 to {FORMAT_VERSION} (a newer file needs a newer tensorly-cross).")
    n_cores = meta.get("n_cores")
    if not _is_int(n_cores) or n_cores < 1:
        raise TTFileError(f"{where}: n_cores must be an int >= 1, got {n_cores!r}.")
    stored = sorted(name for name in archive.files if name.startswith("core_"))
    # Counted first: the names core_0 .. core_{n_cores-1} of a forged n_cores (10**12 in a
    # 1 KB file) took seconds to hours and gigabytes to list.
    if len(stored) != n_cores or stored != sorted(f"core_{k}" for k in range(n_cores)):
        raise TTFileError(f"{where}: n_cores={n_cores} but the file holds cores {stored}.")
    return meta


def _core_headers(archive, n_cores, where):
    return [_member_header(archive, f"core_{k}") for k in range(n_cores)]


def _member_header(archive, name):
    """``(shape, dtype)`` that the ``.npy`` header of an archive member declares, read
    without reading (or allocating) the data."""
    with archive.zip.open(f"{name}.npy") as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"member {name!r} has .npy format version {version}, not 1.0 or "
                             "2.0.")
    return tuple(int(size) for size in shape), np.dtype(dtype)


def _check_cores(headers, where):
    """Numeric 3-D cores whose shapes chain into a TT (boundary ranks 1)."""
    if not headers:
        raise TTFileError(f"{where}: a TT needs at least one core.")
    for k, (shape, dtype) in enumerate(headers):
        if dtype.isbuiltin == 2:  # e.g. ml_dtypes' complex32: saved, then unreadable
            raise TTFileError(f"{where}: core {k} has dtype {dtype}, not one of NumPy's own, "
                              "which a .npy file cannot describe; convert it to a NumPy "
                              "dtype (float32, float64, int8, ...).")
        if dtype.kind not in CORE_KINDS:
            raise TTFileError(f"{where}: core {k} has dtype {dtype}; cores must be numbers "
                              "(integer, real or complex floating point).")
        if dtype.kind in "fc" and dtype.itemsize > MAX_FLOAT_BYTES[dtype.kind]:
            raise TTFileError(f"{where}: core {k} has dtype {dtype}, NumPy's long double, "
                              "whose bytes mean an 80-bit float on x86 and a 128-bit one "
                              "elsewhere: not portable (nor read by PyTorch). Store float64 "
                              "(complex128) cores.")
        if len(shape) != 3:
            raise TTFileError(f"{where}: cores must be 3-D arrays; core {k} has shape {shape}.")
        if min(shape) < 1:
            raise TTFileError(f"{where}: core {k} has shape {shape}; every mode size and rank "
                              "must be >= 1 (a TT with an empty mode or a zero rank holds no "
                              "entries).")
    ranks = [shape[0] for shape, _ in headers] + [headers[-1][0][2]]
    if ranks[0] != 1 or ranks[-1] != 1 or any(
            a[0][2] != b[0][0] for a, b in zip(headers, headers[1:], strict=False)):
        raise TTFileError(f"{where}: core shapes {[shape for shape, _ in headers]} do not "
                          "chain into a TT.")


def _check_size(headers, max_bytes, where):
    if max_bytes is None:
        return
    total = sum(int(np.prod(shape, dtype=object)) * dtype.itemsize for shape, dtype in headers)
    if total > max_bytes:
        raise TTFileError(f"{where}: its cores would take {total} bytes in memory, above "
                          f"max_bytes={max_bytes}; pass a larger max_bytes (or None) if you "
                          "trust the file.")


def _check_meta_agrees(meta, core_shapes, where):
    """The metadata's ranks, shape, quantics layout and axes describe these cores."""
    ranks = [1] + [int(shape[2]) for shape in core_shapes]
    if "ranks" in meta and meta["ranks"] != ranks:
        raise TTFileError(f"{where}: its metadata says ranks {meta['ranks']}, the cores have "
                          f"{ranks}.")
    if meta.get("shape") is None:
        layout = [key for key in ("quantics", "axes") if meta.get(key) is not None]
        if layout:  # a layout says how the TT's modes map to a shape it must name
            raise TTFileError(f"{where}: its metadata gives {layout[0]!r} without 'shape', "
                              "the volume's shape that layout maps to.")
        return
    shape = meta["shape"]
    if not isinstance(shape, list) or not shape or not all(
            _is_int(size) and 1 <= size <= MAX_MODE_SIZE for size in shape):
        raise TTFileError(f"{where}: its metadata shape {_short(shape)} is not a list of ints "
                          "in [1, 2**63 - 1] (int64 indices).")
    expected = _mode_sizes(meta, shape, len(core_shapes), where)
    modes = [int(shape_k[1]) for shape_k in core_shapes]
    if modes != expected:
        raise TTFileError(f"{where}: its metadata (shape {shape}, quantics "
                          f"{meta.get('quantics')!r}, axes {meta.get('axes')!r}) means TT "
                          f"modes {expected}, the cores have {modes}.")


def _mode_sizes(meta, shape, n_cores, where):
    """The TT mode sizes that a volume of ``shape`` has in the layout the metadata records."""
    from .lazy.quantics import ORDERS, QuanticsLayout

    quantics, axes = meta.get("quantics"), meta.get("axes")
    if quantics is not None:
        if not isinstance(quantics, dict) or quantics.get("order") not in ORDERS:
            raise TTFileError(f"{where}: its quantics metadata {quantics!r} is not "
                              f"{{'order': one of {ORDERS}, ...}}.")
        if len(shape) > n_cores:
            # Checked before the layout is worked out (a factorisation per mode): each mode
            # has one digit at least, hence one core.
            raise TTFileError(f"{where}: its metadata shape has {len(shape)} modes, more "
                              f"than its {n_cores} cores, in a quantics layout.")
        try:
            return list(QuanticsLayout.create(shape, quantics["order"]).quantics_shape)
        except ValueError as error:
            raise TTFileError(f"{where}: its metadata shape has no quantics layout: "
                              f"{error}") from error
    if axes is not None:
        if (not isinstance(axes, list) or not all(_is_int(axis) for axis in axes)
                or sorted(axes) != list(range(len(shape)))):
            raise TTFileError(f"{where}: its metadata axes {axes!r} is not a permutation of "
                              f"the {len(shape)} axes of shape {shape}.")
        return [shape[axis] for axis in axes]
    return list(shape)


def _short(value, limit=200):
    """``repr(value)``, cut to ``limit`` characters: a forged record can be megabytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)
