"""Sub-volumes of a saved TT in the volume's own axes, and whole volumes written as NIfTI.

A TT file of the CLI records how its modes relate to the volume (``shape``, ``quantics``,
``axes``). Here a selection of the volume (an index or a range per axis) is turned into the
same selection of the TT's cores and contracted densely, which costs one pass over the
selected entries times the ranks (point-wise ``tt_entries`` would cost the ranks squared per
entry, and memory for ``m * r**2`` numbers). Only interleaved quantics layouts, whose digit
cores cannot be merged per axis, fall back to point-wise evaluation in small batches.
"""

import base64
import contextlib
import gzip
import io
import math
import numbers
import os
import shutil

import numpy as np

from ._atomic import write_atomically
from ._backend import to_host
from ._optional import require

# Entries evaluated per block when writing a whole volume: bounds memory (times the rank).
BLOCK_ENTRIES = 2**22
# Point-wise fallback: multi-indices per tt_entries call (it holds m * r**2 numbers).
POINTWISE_BATCH = 2**12


def volume_shape(tt, metadata):
    """The shape of the volume a TT file describes (the TT's own shape without metadata)."""
    shape = metadata.get("shape")
    return tuple(shape) if shape is not None else tuple(int(core.shape[1]) for core in tt)


def volume_values(tt, metadata, selection):
    """The sub-volume ``volume[selection]`` as a float64 (or complex) NumPy array.

    ``selection`` has one ``int`` or ``slice`` (step 1) per volume axis; an int drops its axis,
    and a negative one counts from the end, as NumPy indexing does.

    Raises
    ------
    IndexError
        For an index outside its axis.
    ValueError
        For a selection of another length than the volume's axes, or a slice whose step is
        not 1 (it would be ignored).
    TypeError
        For an item that is neither an int nor a slice.
    """
    shape = volume_shape(tt, metadata)
    if len(selection) != len(shape):
        raise ValueError(f"selection must have one int or slice per axis of the volume's "
                         f"shape {shape}; got {len(selection)}: {selection!r}.")
    ranges = [_axis_range(item, n, axis)
              for axis, (item, n) in enumerate(zip(selection, shape, strict=True))]
    cores, axes = _axis_cores(tt, metadata, shape)
    if cores is None:
        block = _pointwise(tt, metadata, shape, ranges)
    else:
        block = _contract([core[:, ranges[axis].start: ranges[axis].stop, :]
                           for core, axis in zip(cores, axes, strict=True)])
        # Only the axes of other than one index are put in the volume's order: one of one
        # index moves no value, and NumPy holds at most 64 axes (a TT of 71 modes, most of
        # size one, failed on its 2-D slice with "maximum supported dimension").
        wide = [axis for axis in axes if len(ranges[axis]) != 1]
        block = np.transpose(block.reshape([len(ranges[a]) for a in wide]), np.argsort(wide))
    return block.reshape([len(r) for r, item in zip(ranges, selection, strict=True)
                          if isinstance(item, slice)])


def _axis_range(item, size, axis):
    """The indices ``selection[axis]`` takes of an axis of ``size``, as a step-1 range."""
    if isinstance(item, slice):
        indices = range(*item.indices(size))
        if indices.step != 1:  # core slicing below takes start:stop only
            raise ValueError(f"selection[{axis}]={item!r} must have step 1 (or None).")
        return indices
    if isinstance(item, bool) or not isinstance(item, numbers.Integral):
        raise TypeError(f"selection[{axis}] must be an int or a slice, got {item!r} "
                        f"({type(item).__name__}).")
    if not -size <= item < size:
        raise IndexError(f"selection[{axis}]={item} is outside axis {axis} of size {size}.")
    index = int(item) % size
    return range(index, index + 1)


def _axis_cores(tt, metadata, shape):
    """Host cores whose modes are volume axes, and which axis each mode is (None, None for an
    interleaved quantics layout)."""
    cores = [np.asarray(to_host(core)) for core in tt]
    quantics = metadata.get("quantics")
    if quantics:
        from .lazy.quantics import QuanticsLayout, qtt_to_tt

        if quantics.get("order") != "grouped":
            return None, None
        layout = QuanticsLayout.create(shape, "grouped")
        return [np.asarray(to_host(core)) for core in qtt_to_tt(cores, layout)], list(
            range(len(shape)))
    return cores, list(metadata.get("axes") or range(len(shape)))


def _contract(cores):
    """The dense tensor of a TT (C order over its modes), left to right."""
    result = np.ones((1, 1))
    for core in cores:
        rank_in, size, rank_out = core.shape
        result = (result.reshape(-1, rank_in) @ core.reshape(rank_in, size * rank_out))
    return result.reshape(-1)


def _pointwise(tt, metadata, shape, ranges):
    from .cross.tt_entries import tt_entries
    from .lazy.base import unravel_c_order
    from .lazy.quantics import QuanticsLayout

    # Every multi-index of the selection, in C order (np.meshgrid made one axis per mode).
    starts = np.array([r.start for r in ranges], dtype=np.int64)
    grid = starts + unravel_c_order(np.arange(math.prod(len(r) for r in ranges)),
                                    [len(r) for r in ranges])
    layout = QuanticsLayout.create(shape, metadata["quantics"]["order"])
    values = [to_host(tt_entries(tt, layout.to_quantics(grid[start: start + POINTWISE_BATCH])))
              for start in range(0, grid.shape[0], POINTWISE_BATCH)]
    return np.concatenate(values) if values else np.zeros(0)


# The most bytes of NIfTI header extensions a TT file keeps (their contents, in order):
# comments, AFNI or DICOM blocks take a few KiB; a larger one (a file embedded whole) is
# left out rather than carried in the JSON metadata.
MAX_EXTENSION_BYTES = 2**20


def nifti_metadata(volume):
    """What a TT file keeps of a NIfTI input: its affine and header (base64), and its
    header extensions (``[code, base64 content]`` pairs, see :data:`MAX_EXTENSION_BYTES`),
    or None."""
    affine = getattr(volume, "affine", None)
    header = getattr(volume, "nifti_header", None)
    if affine is None or header is None:
        return None
    kept = dict(affine=np.asarray(affine, dtype=float).tolist(),
                header=base64.b64encode(header.binaryblock).decode("ascii"))
    extensions = _kept_extensions(header)
    if extensions:
        kept["extensions"] = extensions
    return kept


def _kept_extensions(header):
    """``header``'s extensions as ``[code, base64 content]`` pairs, in order, those that
    fit in :data:`MAX_EXTENSION_BYTES` in all (the binaryblock holds none of them)."""
    kept, total = [], 0
    for extension in getattr(header, "extensions", None) or ():
        content = _extension_content(extension)
        if total + len(content) > MAX_EXTENSION_BYTES:
            continue
        total += len(content)
        kept.append([int(extension.get_code()), base64.b64encode(content).decode("ascii")])
    return kept


def _extension_content(extension):
    """The raw content of a nibabel header extension, as stored (``get_content`` parses a
    DICOM one into a dataset): what it writes, less its size and code, unpadded."""
    raw = io.BytesIO()
    extension.write_to(raw, False)
    return raw.getvalue()[8:].rstrip(b"\0")


def write_nifti(path, tt, metadata, dtype=None, fixed=None):
    """Write the volume of a TT file, or one slab of it, as NIfTI (``.nii``/``.nii.gz``).

    Parameters
    ----------
    path : str
        The file to write, atomically (temporary file, then rename).
    tt : list of array
        The TT's cores.
    metadata : dict
        The TT file's metadata (``shape``, layout, ``nifti``).
    dtype : numpy dtype, optional
        Of the written voxels (default: the floating dtype that holds every core's values,
        at least float32).
    fixed : dict of int to int, optional
        ``{axis: index}``: write only the slab with these axes fixed, each kept as an axis
        of length 1, and the affine moved to the slab's first voxel (see
        :func:`slab_affine`), so that the slab lies where it lay in the volume.

    Returns
    -------
    shape : tuple of int
        The shape written.
    dtype : numpy dtype
        The dtype written.

    Notes
    -----
    Blocks of at most :data:`BLOCK_ENTRIES` entries, contiguous in NIfTI's Fortran order
    (runs of slabs of the last axis, or runs within a larger slab), are evaluated and written
    one at a time, so memory stays bounded by :data:`BLOCK_ENTRIES` times the rank. The
    affine, header and header extensions of a NIfTI input (kept in the TT file) are
    restored; other inputs get the identity affine.
    """
    nibabel = require("nibabel", f"writing the NIfTI file {path!r} (.nii/.nii.gz)", "nifti")
    box = _box(volume_shape(tt, metadata), fixed or {})
    shape = tuple(part.stop - part.start for part in box)
    # Every core's dtype: the first one's alone (float32) dropped a later complex core's
    # imaginary part, or turned a float64 core's values beyond float32 into inf.
    dtype = np.dtype(dtype or np.result_type(*[to_host(core).dtype for core in tt], np.float32))
    header = _nifti_header(nibabel, metadata, shape, dtype,
                           offset=[part.start for part in box])
    dtype = header.get_data_dtype()  # with the header's byte order (a kept header's)
    _check_room(path, shape, dtype)

    def write(raw):
        with _output_stream(raw, path) as stream:
            stream.write(_header_bytes(nibabel, header))
            for selection in _fortran_blocks(box, BLOCK_ENTRIES):
                block = volume_values(tt, metadata, selection)
                stream.write(np.asarray(block, dtype=dtype).ravel(order="F").tobytes())

    # Mode from the umask (a fixed 0o644 published private scans), synced before renaming.
    write_atomically(path, write)
    return shape, dtype


# The best ratio deflate reaches (runs of one byte): no .nii.gz is smaller than its voxels
# over this, so one that would not fit even so is refused without a false refusal.
DEFLATE_BEST_RATIO = 1032


def _check_room(path, shape, dtype):
    """Refuse a NIfTI file that the free space of ``path``'s folder cannot hold, before any
    of it is written: the volume of a TT file can be far larger than any disk (a function's
    TT on a 100000^3 grid is 4 PB of float32), and writing it slab by slab filled the disk
    first. A ``.nii.gz`` is refused only where even deflate's best ratio would not fit."""
    needed = math.prod(shape) * np.dtype(dtype).itemsize
    compressed = path.lower().endswith(".gz")
    if compressed:
        needed //= DEFLATE_BEST_RATIO
    check_room(path, needed, f"the volume {tuple(shape)} as {np.dtype(dtype).name} NIfTI",
               "write a slice (--slice AXIS=INDEX,... -o OUT.nii) or the entries you need "
               "(tensorly_cross.tt_entries)", at_least=compressed)


def check_room(path, needed, what, advice, at_least=False):
    """Raise OSError if the folder of ``path`` has fewer than ``needed`` bytes free, before
    any of the file is written (it would be written until the disk was full).

    Parameters
    ----------
    path : str
        The file to write (a link's target's folder is the one checked).
    needed : int
        Bytes the file takes (for a compressed one, the least it can take).
    what : str
        What the file holds, as the message names it ("the volume (n, n) as float32 NIfTI").
    advice : str
        What to do instead.
    at_least : bool, default is False
        Whether ``needed`` is a lower bound (a compressed file).
    """
    folder = os.path.dirname(os.path.realpath(path))
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise OSError(f"{path!r}: {what} takes {needed / 2**30:,.1f} GiB"
                      f"{' at the least, compressed' if at_least else ''}, and {folder!r} "
                      f"has {free / 2**30:,.1f} GiB free; {advice}.")


@contextlib.contextmanager
def _output_stream(raw, path):
    """``raw``, or a gzip stream into it for a ``.gz`` ``path``, whose gzip header names
    ``path``'s file (it named the temporary one, which ``gunzip -N`` restored)."""
    if not path.lower().endswith(".gz"):
        yield raw
        return
    name = os.path.basename(path)[: -len(".gz")]
    with gzip.GzipFile(filename=name, mode="wb", fileobj=raw) as stream:
        yield stream


def _fortran_blocks(box, budget):
    """Sub-boxes of ``box`` (one slice per axis) of at most ``budget`` entries, in the order
    that writes the box in Fortran order (NIfTI's) when each is written in Fortran order.

    The fastest axes are whole, one axis is cut into runs, the slower ones take one index
    each (slowest outermost): while a slab of the last axis fits, these are runs of whole
    slabs; a larger slab (a (8192, 8192, 100) volume's) is cut too.
    """
    sizes = [part.stop - part.start for part in box]
    inner, cut = 1, len(box)
    for axis, size in enumerate(sizes):
        if inner * size > budget:
            cut = axis
            break
        inner *= size
    if cut == len(box):  # the whole box fits
        yield tuple(box)
        return
    step = max(1, budget // inner)
    for outer in np.ndindex(*sizes[cut + 1:][::-1]):  # C order over reversed axes: Fortran's
        slower = tuple(slice(box[cut + 1 + k].start + i, box[cut + 1 + k].start + i + 1)
                       for k, i in enumerate(outer[::-1]))
        for start in range(box[cut].start, box[cut].stop, step):
            run = slice(start, min(start + step, box[cut].stop))
            yield (*box[:cut], run, *slower)


def _box(shape, fixed):
    """One slice per axis: ``index:index + 1`` for a fixed axis (kept, of length 1: a NIfTI
    slab stays 3-D, so viewers overlay it on the volume), else the whole axis."""
    return tuple(slice(fixed[axis], fixed[axis] + 1) if axis in fixed else slice(0, size)
                 for axis, size in enumerate(shape))


def slab_affine(affine, offset):
    """The affine of the sub-volume whose voxel 0 is voxel ``offset`` of the volume.

    Parameters
    ----------
    affine : array-like, shape (4, 4)
        The volume's voxel-to-world affine.
    offset : sequence of int
        The sub-volume's first voxel, in the volume's voxel indices (one per axis).

    Returns
    -------
    numpy.ndarray, shape (4, 4)
        The same voxel-to-world map, translated by ``affine[:3, :3] @ offset``: each voxel
        keeps its world position. Axes past the third (time, ...) have no place in the
        affine and do not move it.
    """
    affine = np.array(affine, dtype=float)
    spatial = np.zeros(3)
    spatial[: min(3, len(offset))] = list(offset)[:3]
    affine[:3, 3] += affine[:3, :3] @ spatial
    return affine


def _nifti_header(nibabel, metadata, shape, dtype, offset=None):
    """A NIfTI header for ``shape`` and ``dtype``: the input's, when the file kept it.

    NIfTI-1 (the input's kind, or the default) unless an axis is longer than its 16-bit
    fields hold (32767): NIfTI-2 then. Either holds at most 7 axes. ``offset``: the first
    voxel of a slab in the volume (its affine is moved there).
    """
    if len(shape) > 7:
        raise ValueError(f"NIfTI holds at most 7 axes; this TT's volume has {len(shape)} "
                         f"{tuple(shape)}: write slices (-o OUT.npy) instead.")
    kept = metadata.get("nifti") or {}
    affine = slab_affine(kept.get("affine", np.eye(4)), offset or ())
    # nibabel logs each problem of a header on stderr, and NumPy warns of the division by
    # a singular affine's zero zooms, before raising: the error alone says it.
    with _nibabel_log_off(nibabel), np.errstate(all="ignore"):
        try:
            header = _kept_image(nibabel, kept, shape, dtype, affine, offset).header
        except (nibabel.spatialimages.HeaderDataError, np.linalg.LinAlgError) as error:
            # Its text may span lines (an affine that cannot be decomposed is printed); older
            # nibabel and NumPy (the floors) fail on a zero affine in the SVD instead.
            reason = str(error).strip().splitlines()[0].rstrip(":") if str(error) else "?"
            raise NiftiMetadataError(f"nibabel cannot use it: {reason}") from None
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)  # values are written as they are, unscaled
    header.extensions.extend(_extensions(nibabel, kept.get("extensions")))
    header["vox_offset"] = type(header).single_vox_offset + header.extensions.get_sizeondisk()
    return header


def _extensions(nibabel, kept):
    """nibabel's extensions of the ``[code, base64 content]`` pairs a TT file kept."""
    try:
        pairs = [(int(code), base64.b64decode(content, validate=True))
                 for code, content in kept or ()]
    except (TypeError, ValueError) as error:  # a file edited by hand
        raise NiftiMetadataError(f"its extensions cannot be read: {error}") from None
    if any(not 0 <= code < 2**31 for code, _ in pairs):  # NIfTI's codes are int32
        raise NiftiMetadataError("its extensions' codes are not all from 0 to 2**31 - 1")
    return [nibabel.nifti1.Nifti1Extension(code, content) for code, content in pairs]


def _header_bytes(nibabel, header):
    """What precedes the voxels of a single NIfTI file: the header, the flag of its
    extensions and the extensions (in the header's byte order), zeros up to its
    ``vox_offset``."""
    block = io.BytesIO()
    block.write(header.binaryblock)
    block.write(b"\1\0\0\0" if len(header.extensions) else b"\0\0\0\0")
    header.extensions.write_to(block, header.endianness != nibabel.volumeutils.native_code)
    return block.getvalue().ljust(int(header["vox_offset"]), b"\0")


@contextlib.contextmanager
def _nibabel_log_off(nibabel):
    """nibabel's header log silenced: disabled, not its handlers removed (nibabel's own
    ``LoggingOutputSuppressor``), after which logging's last-resort handler prints it."""
    logger = nibabel.imageglobals.logger
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


class NiftiMetadataError(ValueError):
    """The NIfTI header or affine a TT file kept is one nibabel refuses (a file edited by
    hand, or forged): its message says why, the caller names the file."""


def _kept_image(nibabel, kept, shape, dtype, affine, offset):
    """A NIfTI image of one voxel carrying the kept header (if any) and ``affine``."""
    header = None
    if kept.get("header"):
        raw = base64.b64decode(kept["header"])
        kind = nibabel.Nifti1Header if len(raw) == 348 else nibabel.Nifti2Header
        header = kind.from_fileobj(io.BytesIO(raw))
    wide = max(shape) > 32767 or isinstance(header, nibabel.Nifti2Header)
    image_class = nibabel.Nifti2Image if wide else nibabel.Nifti1Image
    # A kept header of the other kind is converted by the image (nibabel's from_header).
    image = image_class(np.zeros((1,) * len(shape), dtype=dtype), affine, header=header)
    if header is not None and any(offset or ()):
        _keep_form_codes(image.header, header, affine, offset)
    return image


def _keep_form_codes(header, kept, affine, offset):
    """Set ``header``'s sform to ``affine`` and its qform to ``kept``'s own qform moved by
    ``offset``, each with the code ``kept`` gives it.

    An image given an affine that its header does not hold (a slab's, moved) sets it as
    sform 'aligned' and qform 'unknown'; a slab lies in the input's space, so it keeps the
    input's codes (say 'mni'). The qform is the input's own, moved as the sform is: an
    input's qform (scanner) may differ from its sform (MNI), and the sform under the
    qform's code placed the slab elsewhere for a viewer that reads the qform. A code 0 is
    left as the image set it: it would leave the moved affine unused.
    """
    if kept["sform_code"]:
        header.set_sform(affine, code=int(kept["sform_code"]))
    if kept["qform_code"]:
        header.set_qform(slab_affine(kept.get_qform(), offset), code=int(kept["qform_code"]))
