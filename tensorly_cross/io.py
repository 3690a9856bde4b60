"""Opening volumes by path: zarr, HDF5, npy (read page by page) and NIfTI, as lazy tensors."""

import math
import os
import re
import warnings

import numpy as np

from ._optional import require
from ._validation import check_bool, check_float, check_int, check_regular_file
from .lazy.dask import DaskTensor, check_client
from .lazy.dispatch import refuse_nibabel_image
from .lazy.filled import with_fill_nan
from .lazy.npy import NpyTensor
from .lazy.sources import (
    H5Source,
    NiftiSource,
    ZarrSource,
    absolute_path,
    as_chunk_source,
    h5py_source,
    refuse_closed_hdf5,
    refuse_masked,
)

VOLUME_SUFFIXES = (".zarr", ".h5", ".hdf5", ".npy", ".nii", ".nii.gz")


def open_volume(path, dataset=None, cache_bytes=None, client=None, strict=False,
                fill_nan=None):
    """A lazy tensor reading a volume on disk, without loading it.

    Parameters
    ----------
    path : str, os.PathLike or array
        ``.zarr`` (v2 or v3 array, or an array inside a zarr group: ``group.zarr/name``),
        ``.h5``/``.hdf5`` (with ``dataset``, or
        ``"file.h5:/group/name"``, or a file holding exactly one dataset), ``.npy``
        (read page by page), ``.nii``/``.nii.gz`` (nibabel's lazy proxy, scaling applied).
        Files must be regular files (a FIFO or device is refused: reading could block).
        An array already opened (a dask array, zarr array or h5py dataset) is read as it
        is, chunk by chunk.
    dataset : str, optional
        The HDF5 dataset path (a ValueError for any other volume, which has none).
    cache_bytes : int or None
        Chunk cache of the :class:`DaskTensor` (zarr, HDF5, NIfTI; default 256 MiB) or page
        cache of the ``NpyTensor`` (.npy; default 64 MiB). Bound it to bound memory:
        it is the only buffer that grows with the volume.
    client : dask.distributed.Client, optional
        Read chunks on this cluster's workers (zarr, HDF5; for .npy and NIfTI files a
        warning says that the cross does not use it: pass the client to
        :func:`streaming_tt_svd` instead, which reads their blocks on the workers).
    strict : bool, default False
        zarr and HDF5. Both read a chunk that was never stored as the fill value, with no
        error: a partly written array, or one whose chunks were lost, looks complete. With
        ``strict=True`` an array with fewer stored chunks than its chunk grid holds (an HDF5
        contiguous dataset: one never written) is refused. zarr arrays written with
        ``write_empty_chunks=False`` (zarr's default) leave out chunks that are all fill
        value on purpose: strict mode refuses those too. Not used for .npy and NIfTI files,
        which hold every entry.
    fill_nan : float or None
        Read NaN voxels as this value, on every path (a cross's reads, the streaming TT-SVD,
        dask workers). Statistical maps and masked scans often hold NaN outside the brain,
        which every reader refuses by default (a :class:`NonFiniteValueError` naming the
        voxel); ``fill_nan=0.0`` reads that background as 0. Infinities still raise. A
        value that the stored floating dtype cannot hold exactly (``0.1`` in a float16
        volume, ``1e39`` in a float32 one) makes the volume read as float64.

    Returns
    -------
    LazyTensor
        For NIfTI, with the image's ``affine`` (4x4 ndarray) and ``nifti_header`` (its
        nibabel header) as attributes.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    KeyError
        If the HDF5 dataset is missing (the message lists the datasets there are).
    ValueError
        For an unknown suffix, a path that is not a regular file (or, for zarr, a folder),
        zarr metadata, an HDF5 file or a NIfTI header that cannot be read (the message
        names the file), an uncompressed NIfTI file shorter than its header declares, a
        ``dataset`` for a volume that is not an HDF5 file (or for a path
        ``"file.h5:/name"`` that names its dataset already), or, with ``strict``, a zarr
        array or HDF5 dataset with chunks missing.
    TypeError
        For an unsupported dtype, a nibabel image (pass its NIfTI file's path, or
        its ``dataobj`` for another format), a ``strict``
        that is not a bool, a ``dataset`` that is not a str, a ``client`` that is not a
        dask.distributed Client, or a ``fill_nan`` that is not a real number.
    ImportError
        For a NIfTI file without nibabel (the ``[nifti]`` extra) or an HDF5 file without
        h5py (the ``[dask]`` extra): the message says which to install.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> path = os.path.join(tempfile.mkdtemp(), "volume.npy")
    >>> grid = np.linspace(0.0, 1.0, 32)
    >>> np.save(path, np.add.outer(np.add.outer(grid, grid), grid))
    >>> volume = tlc.open_volume(path)
    >>> volume.shape
    (32, 32, 32)
    >>> tt = tlc.tt_cross(volume, tol=1e-6, random_state=0)
    >>> tt.rank
    (1, 2, 2, 1)
    """
    if cache_bytes is not None:
        cache_bytes = check_int(cache_bytes, "cache_bytes", minimum=0)
    if fill_nan is not None:
        fill_nan = check_float(fill_nan, "fill_nan")
    strict = check_bool(strict, "strict")
    client = check_client(client)
    if dataset is not None and not isinstance(dataset, str):
        raise TypeError(f"dataset must be a str (the HDF5 dataset path, e.g. '/group/name') "
                        f"or None, got {dataset!r} ({type(dataset).__name__}).")
    volume = _open(path, dataset, cache_bytes, client, strict)
    return volume if fill_nan is None else with_fill_nan(volume, fill_nan)


def _names_a_dataset(path):
    """Whether ``path`` is ``FILE.h5:/NAME`` of an HDF5 file that exists."""
    return (".h5:" in path.lower() or ".hdf5:" in path.lower()) and \
        os.path.isfile(_split_hdf5_path(path)[0])


def volume_file(path):
    """The file (or store) of a volume path: ``FILE.h5`` of ``FILE.h5:/NAME``, split as
    :func:`open_volume` splits it (a path that exists is kept whole: ':' is a valid
    character in file and folder names), the path itself otherwise."""
    lower = path.lower()
    if (".h5:" in lower or ".hdf5:" in lower) and not os.path.exists(path):
        return _split_hdf5_path(path)[0]
    return path


def _split_hdf5_path(path):
    """``(file, dataset)`` of ``FILE.h5:/NAME``, split after the first ``.h5`` or ``.hdf5``
    whose file exists (else the first): a dataset's name may hold ':' too (split at the
    last ':', ``n.h5:/a:b`` looked for a file ``n.h5:/a``)."""
    ends = sorted(match.end() for match in re.finditer(r"\.(h5|hdf5):", path, re.IGNORECASE))
    files = [(path[: end - 1], path[end:]) for end in ends]
    return next((pair for pair in files if os.path.isfile(pair[0])), files[0])


def _open(path, dataset, cache_bytes, client, strict):
    """The lazy tensor of :func:`open_volume` (arguments checked)."""
    if not isinstance(path, str | bytes | os.PathLike):
        _refuse_dataset(dataset, "an array")
        return _open_array(path, cache_bytes, client, strict)
    path = os.fsdecode(path)  # str, bytes or os.PathLike
    if (dataset is None and (".h5:" in path.lower() or ".hdf5:" in path.lower())
            and not os.path.exists(path)):
        # Only a path that is not a file itself: ':' is a valid character in file names.
        # Any case, as the suffix itself (and the command line's FILE.H5:/NAME) is read.
        path, dataset = _split_hdf5_path(path)
    elif dataset is not None and not os.path.exists(path) and _names_a_dataset(path):
        # Read as a file name, it "did not exist", of a file that does.
        raise ValueError(f"path {path!r} names its dataset, and dataset={dataset!r} names "
                         "one too: name it once ('file.h5:/name', or 'file.h5' with "
                         "dataset='/name').")
    if not os.path.exists(path):
        raise FileNotFoundError(f"path {path!r} does not exist.")
    # Kept absolute: every read checks (or reopens) the file by its path, and a relative
    # one named another file, or none ("deleted after it was opened"), once the working
    # directory changed (a notebook's %cd, a worker started elsewhere). Not normalised.
    path = absolute_path(path)
    lower = path.lower().rstrip("/")
    if lower.endswith(".zarr") or _inside_zarr(path):
        _refuse_dataset(dataset, f"the zarr store {path!r} (an array in a zarr group is "
                                 "opened by its path, 'store.zarr/name')")
        return _open_zarr(path, cache_bytes, client, strict)
    if not lower.endswith(VOLUME_SUFFIXES):
        raise ValueError(f"path {path!r} has an unsupported suffix; supported: "
                         f"{', '.join(VOLUME_SUFFIXES)}.{_nibabel_hint(lower)}")
    check_regular_file(path)
    if lower.endswith((".h5", ".hdf5")):
        return _open_hdf5(path, dataset, cache_bytes, client, strict)
    _refuse_dataset(dataset, repr(path))
    if client is not None:  # said, not silently dropped: the user expects the workers
        warnings.warn(f"client is not used for {os.path.basename(path)!r}: .npy and NIfTI "
                      "files are read in this process (zarr and HDF5 on the workers).",
                      UserWarning, stacklevel=2)
    if lower.endswith(".npy"):
        return _open_npy(path, cache_bytes)
    return _open_nifti(path, cache_bytes)


# Volumes nibabel loads that are not NIfTI (FreeSurfer, Analyze, MINC, PAR/REC, AFNI, ECAT).
NIBABEL_SUFFIXES = (".mgz", ".mgh", ".hdr", ".img", ".img.gz", ".hdr.gz", ".mnc", ".par",
                    ".rec", ".head", ".brik", ".brik.gz", ".v")


def _nibabel_hint(lower):
    """How to open a volume in a format nibabel reads: as NIfTI, once converted."""
    if not lower.endswith(NIBABEL_SUFFIXES):
        return ""
    return (" nibabel reads this format: convert it once to NIfTI "
            "(nibabel.save(nibabel.load(path), 'volume.nii')) and open that.")


def _refuse_dataset(dataset, what):
    """``dataset`` names an HDF5 dataset: given for anything else it would be ignored."""
    if dataset is not None:
        raise ValueError(f"dataset={dataset!r} names an HDF5 dataset, but the volume is "
                         f"{what}, not an HDF5 file: drop dataset.")


def _open_array(array, cache_bytes, client, strict):
    """An opened array (dask, zarr, h5py): read chunk by chunk."""
    refuse_closed_hdf5(array, "path")
    refuse_masked(array, "path")
    refuse_nibabel_image(array, "path")
    if not (hasattr(array, "shape") and hasattr(array, "dtype")):
        raise TypeError(f"path must be a str or os.PathLike, or an array (dask, zarr, h5py); "
                        f"got {type(array).__name__}.")
    if type(array).__module__.startswith("dask.") and strict:
        # Read from its store when it is a plain view of one: strict checks that store
        # (a computed dask array has no chunks missing).
        source = as_chunk_source(array)
        if isinstance(source, ZarrSource):
            array = source.array
        elif isinstance(source, H5Source):
            array = source._dataset
    if type(array).__module__.startswith("zarr."):
        array = ZarrSource(array, strict=strict)
    elif type(array).__module__.startswith("h5py."):
        array = h5py_source(array, strict=strict)
    return DaskTensor(array, client=client, **_cache(cache_bytes))


def _inside_zarr(path):
    """Whether ``path`` is a folder inside a ``.zarr`` folder: an array of a zarr group."""
    parents = os.path.normpath(os.path.abspath(path)).split(os.sep)[:-1]
    return os.path.isdir(path) and any(part.lower().endswith(".zarr") for part in parents)


def _open_zarr(path, cache_bytes, client, strict):
    import zarr

    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is not a folder; a .zarr volume is a folder holding a "
                         "zarr.json (v3) or .zarray (v2).")
    try:
        array = zarr.open(path, mode="r")
    except (ValueError, KeyError, TypeError) as error:  # a JSONDecodeError is a ValueError
        files = [name for name in ("zarr.json", ".zarray", ".zattrs", ".zgroup")
                 if os.path.exists(os.path.join(path, name))]
        raise ValueError(f"{path!r}: its zarr metadata ({', '.join(files) or 'none found'}) "
                         f"cannot be read: {type(error).__name__}: {error}") from error
    if not hasattr(array, "shape"):
        names = _group_arrays(array)
        raise ValueError(f"{path!r} is a zarr group, not an array; its arrays: "
                         f"{_listed(names)}. Open one of them, e.g. "
                         f"'{path}/{names[0] if names else '...'}'.")
    return DaskTensor(ZarrSource(array, strict=strict), client=client, **_cache(cache_bytes))


# Names a message lists at most: a group of thousands would fill the screen.
LISTED_NAMES = 10


def _group_arrays(group):
    """The paths of a zarr group's arrays, its sub-groups' included (``sub/vol``): listing
    only its own said ``[]`` of a group whose arrays all sit in sub-groups. Sorted: the
    store lists them in no fixed order."""
    members = getattr(group, "members", None)
    if members is None:  # zarr 2
        return sorted(name for name, _ in group.arrays(recurse=True))
    return sorted(name for name, member in members(max_depth=None) if hasattr(member, "shape"))


def _listed(names):
    """``names`` for a message: the first :data:`LISTED_NAMES`, and how many more."""
    shown = repr(list(names[:LISTED_NAMES]))
    more = len(names) - LISTED_NAMES
    return shown if more <= 0 else f"{shown[:-1]}, ... and {more} more]"


def _open_hdf5(path, dataset, cache_bytes, client, strict):
    h5py = require("h5py", f"the HDF5 volume {path!r} (.h5/.hdf5)", "dask")

    try:
        handle = h5py.File(path, "r")
    except OSError as error:  # h5py's message names neither the file nor what it expected
        raise ValueError(f"{path!r} is not an HDF5 file h5py can read: {error}") from error
    names = []
    handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset)
                      else None)
    # visititems does not follow soft or external links: a file whose datasets are all
    # reached through links (an index file of external links) held "0 datasets".
    names = names or _linked_datasets(handle)
    if dataset is None:
        if len(names) != 1:
            broken = _unresolved_links(handle)
            handle.close()
            raise KeyError(f"{path!r} holds {len(names)} datasets {_listed(names)}{broken}; "
                           "pass dataset=... or 'file.h5:/name'.")
        dataset = names[0]
    # Looked up, not only searched among the datasets visited: visititems does not follow
    # soft or external links, through which h5py opens a dataset all the same.
    if not isinstance(handle.get(dataset), h5py.Dataset):
        broken = _unresolved_links(handle)
        handle.close()
        raise KeyError(f"dataset {dataset!r} not found in {path!r}; datasets: "
                       f"{_listed(names)}{broken}.")
    try:
        source = H5Source(handle[dataset], strict=strict)
    except Exception:  # a refused dtype too: the exception kept (a notebook's last one)
        handle.close()  # held the file open, and rewriting it failed ("already open")
        raise
    return DaskTensor(source, client=client, **_cache(cache_bytes))


def _unresolved_links(handle):
    """For a message: the soft and external links of an HDF5 file that lead nowhere (a
    target file or object missing), which ``visititems`` skips without a word; "" if none.
    """
    import h5py

    groups = [handle]
    handle.visititems(lambda name, obj: groups.append(obj) if isinstance(obj, h5py.Group)
                      else None)
    broken = []
    for group in groups:
        for key in group:
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.SoftLink | h5py.ExternalLink) and _target(group, key) is None:
                broken.append(f"{group.name.rstrip('/')}/{key} -> {_link_text(link)}")
    if not broken:
        return ""
    return f" (links that could not be resolved: {', '.join(broken)})"


def _linked_datasets(handle):
    """The paths of the datasets an HDF5 file reaches through its soft and external links
    (which ``visititems`` does not follow), in its own groups."""
    import h5py

    groups = [handle]
    handle.visititems(lambda name, obj: groups.append(obj) if isinstance(obj, h5py.Group)
                      else None)
    return [f"{group.name.rstrip('/')}/{key}".lstrip("/") for group in groups
            for key in group
            if not isinstance(group.get(key, getlink=True), h5py.HardLink)
            and isinstance(_target(group, key), h5py.Dataset)]


def _target(group, key):
    """What the link ``key`` of ``group`` leads to, or None where it leads nowhere."""
    try:
        return group.get(key)
    except (KeyError, OSError, ValueError):  # h5py raises for some broken external links
        return None


def _link_text(link):
    """``link``'s target as a message shows it."""
    filename = getattr(link, "filename", None)
    return f"{link.path!r} in {filename!r}" if filename else repr(link.path)


def _open_npy(path, cache_bytes):
    return NpyTensor(path, **_cache(cache_bytes))


def _cache(cache_bytes):
    """The reader's own default unless a size is given."""
    return {} if cache_bytes is None else {"cache_bytes": int(cache_bytes)}


def _open_nifti(path, cache_bytes):
    nibabel = require("nibabel", f"the NIfTI volume {path!r} (.nii/.nii.gz)", "nifti")

    try:
        # Not memory-mapped: a chunk read whole was a view into nibabel's map, kept in the
        # chunk cache, and a file truncated meanwhile killed the process with SIGBUS on
        # its next use. Unmapped, a chunk is read from the file (only its own bytes, for
        # an uncompressed .nii) into memory of its own: truncation is a ChunkReadError.
        image = nibabel.load(path, mmap=False)
    except (nibabel.filebasedimages.ImageFileError, EOFError, OSError,
            # A header field nibabel refuses (an unknown datatype code, a vox_offset inside
            # the header, a slope without a valid intercept): its message names no file.
            nibabel.spatialimages.HeaderDataError) as error:
        raise ValueError(f"{path!r} is not a NIfTI file nibabel can read: {error}") from error
    if not isinstance(image, nibabel.Nifti1Image):  # Nifti2Image derives from it
        raise ValueError(f"{path!r} is a {type(image).__name__}, not a NIfTI volume (CIFTI "
                         "and other NIfTI-based formats are not volumes on a grid).")
    proxy = image.dataobj
    _refuse_short_nifti(path, proxy)
    dtype = np.result_type(image.get_data_dtype(), np.float64 if _is_scaled(proxy) else
                           image.get_data_dtype())
    source = NiftiSource(proxy, path, dtype=dtype, stored_dtype=image.get_data_dtype())
    tensor = DaskTensor(source, **_cache(cache_bytes))
    tensor.affine = np.asarray(image.affine, dtype=np.float64)
    tensor.nifti_header = image.header
    return tensor


def _refuse_short_nifti(path, proxy):
    """Raise ValueError, naming the file, if an uncompressed NIfTI file ends before the
    data its header declares: it was read chunk by chunk until the first chunk past the
    end failed, after a cross or a streaming pass had read every chunk before it. (A
    ``.nii.gz`` file's data size is known only once decompressed: its reads still fail.)"""
    if path.lower().endswith(".gz"):
        return
    expected = int(proxy.offset) + math.prod(proxy.shape) * np.dtype(proxy.dtype).itemsize
    size = os.path.getsize(path)
    if size < expected:
        raise ValueError(f"{path!r} is shorter than its header declares: {size} of "
                         f"{expected} bytes (a truncated or partly copied file).")


def _is_scaled(proxy):
    slope = getattr(proxy, "slope", 1.0)
    inter = getattr(proxy, "inter", 0.0)
    return (slope not in (None, 1.0)) or (inter not in (None, 0.0))
