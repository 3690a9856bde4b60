"""``tensorly-cross reconstruct``: slices (PNG, .npy) or the whole volume (NIfTI) of a
TT file, side by side with the original."""

import base64
import math
import os
import sys

import numpy as np

from .._atomic import write_atomically
from ._common import (
    EXIT_OK,
    UsageError,
    check_dataset_once,
    check_given,
    check_output,
    fill_nan_of,
    is_hdf5,
    open_input,
    same_file,
)


def run_reconstruct(args):
    """``tensorly-cross reconstruct``: check the arguments, write each output asked for and
    report it on one line (as ``compress`` ends with ``written``), then the slice's error."""
    import tensorly_cross as tlc

    from .._reconstruct import volume_shape, volume_values

    nifti = _check_arguments(args)
    tt, metadata = tlc.load_tt(args.file)
    shape = volume_shape(tt, metadata)
    fixed = _parse_slice(args.slice, shape)
    selection = tuple(fixed.get(axis, slice(None)) for axis in range(len(shape)))
    where = ",".join(f"{axis}={index}" for axis, index in sorted(fixed.items())) or "all"
    # Checked before anything is written: a wrong --against leaves no output behind.
    volume = _open_against(args, shape, fill_nan_of(metadata))
    reports = []
    if nifti:
        reports.append(_write_nifti(args, tt, metadata, fixed, where))
        if not (args.png or volume is not None):
            # Written in blocks, and nothing else asked: the selection is not evaluated in
            # memory as well (a volume written for being too large to hold ran out of
            # memory there, after its file was complete, and the command exited 1).
            print("\n".join(reports))
            return EXIT_OK
    if args.output and not nifti:
        _check_npy_room(args.output, tt, [n for axis, n in enumerate(shape)
                                          if axis not in fixed])
    values = _typed(volume_values(tt, metadata, selection))
    image = np.atleast_2d(values)  # a 1-D volume is shown and compared as one row
    if args.output and not nifti:
        # In the volume's own shape: a 1-D volume was written as (1, n).
        save_npy(args.output, values)
        reports.append(written_line(args.output, values.shape, values.dtype, where))
    original = None if volume is None else as_image(volume_slice(volume, selection))
    if args.png:
        if np.iscomplexobj(image):
            print(f"tensorly-cross reconstruct: the TT is complex: {args.png} shows the "
                  "modulus |TT| (-o OUT.npy keeps the complex values).", file=sys.stderr)
        write_png(args.png, image, original, title=f"{os.path.basename(args.file)} {where}")
        reports.append(written_line(args.png, image.shape, "PNG", where))
    print("\n".join(reports))
    if original is not None:  # last: scripts read the number at the end of the output
        _note_zero_original(image, original, where)
        print(f"slice {where}: relative error {_relative_error(image, original):.3e}")
    return EXIT_OK


def _relative_error(image, original):
    """``||image - original|| / ||original||``, both divided by their largest modulus first:
    the squares of voxels beyond about 1e154 overflow, and the error read nan. Against a
    zero original: 0 for a zero image, else inf (a floor on the norm gave 1e+281 for a TT
    of round-off, 1e-19, where the original slice is zero)."""
    scale = max(float(np.abs(image).max(initial=0)), float(np.abs(original).max(initial=0)))
    if scale == 0 or not np.isfinite(scale):
        scale = 1.0
    image, original = image / scale, original / scale
    difference, norm = float(np.linalg.norm(image - original)), float(np.linalg.norm(original))
    if norm == 0:
        return math.inf if difference else 0.0
    return difference / norm


def _note_zero_original(image, original, where):
    """On stderr: where the original slice is zero and the TT's is not, its relative error
    is inf whatever the TT's values; say how large they are."""
    largest = float(np.abs(image).max(initial=0))
    if not np.any(original) and largest > 0:
        print(f"tensorly-cross reconstruct: the original slice {where} is zero: any nonzero TT "
              f"value makes its relative error inf; the largest |TT| there is {largest:.3g}.",
              file=sys.stderr)


def _check_arguments(args):
    """Refuse what cannot be done before any work; whether -o is a NIfTI."""
    check_given("--png", args.png)
    check_given("-o/--output", args.output)
    if not (args.png or args.output):
        raise UsageError("give --png and/or -o/--output.")
    nifti = bool(args.output) and args.output.lower().endswith((".nii", ".nii.gz"))
    if args.output and not nifti and not args.output.lower().endswith(".npy"):
        raise UsageError(f"-o/--output must end in .npy (a slice) or .nii/.nii.gz (the whole "
                         f"volume, or with --slice its slab), got {args.output!r}.")
    if args.png and not args.png.lower().endswith(".png"):
        # PNG bytes under another suffix (x.jpg) mislead every viewer that trusts it.
        raise UsageError(f"--png writes a PNG image: give a path ending in .png, got "
                         f"{args.png!r}.")
    if args.dataset is not None and not (args.against and is_hdf5(args.against)):
        raise UsageError("--dataset names the HDF5 dataset of --against; give it with an "
                         ".h5/.hdf5 --against only.")
    if args.against:
        check_dataset_once(args.against, args.dataset, "--against")
    if args.png and args.output and same_file(args.png, args.output):
        raise UsageError(f"--png and -o/--output name one file ({args.png!r}); give two.")
    for path in (args.png, args.output):
        if path:
            check_output(path, args.force, inputs=[args.file, args.against])
    return nifti


def _open_against(args, shape, fill_nan=None):
    """The ``--against`` volume (None without one), of the TT's shape, its NaN voxels read
    as the TT's were (``compress --fill-nan``)."""
    if not args.against:
        return None
    volume = open_input(args.against, dataset=args.dataset, fill_nan=fill_nan)
    if tuple(volume.shape) != shape:
        raise ValueError(f"--against has shape {volume.shape}, the TT has {shape}.")
    return volume


def _write_nifti(args, tt, metadata, fixed, where):
    """Write -o OUT.nii[.gz]: the whole volume, or with --slice the slab it names.

    An explicit ``--slice`` is honoured rather than refused or ignored: the user asked for
    that slice, and a slab of one voxel's thickness whose affine is moved to its first
    voxel (as nibabel's ``img.slicer[:, :, k:k + 1]`` does) is well defined, overlays the
    original in any viewer, and costs one slice's evaluations instead of the volume's.
    Without ``--slice``, the whole volume (the default slice is the PNG's, not a request).
    """
    from .._reconstruct import NiftiMetadataError, write_nifti

    _check_nifti_metadata(metadata.get("nifti"), args.file)
    slab = args.slice is not None
    try:
        shape, dtype = write_nifti(args.output, tt, metadata, fixed=fixed if slab else None)
    except NiftiMetadataError as error:  # raised before anything is written
        raise ValueError(_unusable_nifti(args.file, error)) from None
    return written_line(args.output, shape, dtype, where if slab else "all")


def _check_npy_room(path, tt, shape):
    """Refuse -o OUT.npy before the slice of ``shape`` is evaluated where its folder has no
    room for it (as -o OUT.nii is refused): a TT file's slice can be larger than the disk."""
    from .._backend import to_host
    from .._reconstruct import check_room

    complex_ = any(np.iscomplexobj(to_host(core)) for core in tt)
    dtype = np.dtype(np.complex128 if complex_ else np.float64)  # as _typed writes it
    check_room(path, math.prod(shape) * dtype.itemsize,
               f"the slice {tuple(shape)} as {dtype.name} .npy",
               "give -o in a folder with room, or read the entries you need in Python "
               "(tensorly_cross.tt_entries)")


def save_npy(path, values):
    """Write ``values`` to ``path`` as .npy, atomically, under exactly that name.

    Parameters
    ----------
    path : str
        The file to write. ``np.save(path)`` would append ``.npy`` to ``OUT.NPY`` (its
        suffix test is case-sensitive) and write a partial file when interrupted; here a
        temporary file in the same folder is renamed to ``path`` once complete, as for the
        PNG and NIfTI outputs.
    values : numpy.ndarray
        The array to store (no pickled objects).
    """
    write_atomically(path, lambda stream: np.save(stream, values, allow_pickle=False))


def written_line(path, shape, kind, where="all"):
    """The line that reports a written file, in the style of compress's summary.

    Parameters
    ----------
    path : str
        The file written.
    shape : tuple of int
        The shape of what it holds.
    kind : str or numpy dtype
        Its dtype (or its format, ``"PNG"``).
    where : str
        The slice it holds (``"all"``: the whole volume, not said).

    Returns
    -------
    str
        ``written             PATH (slice 2=10, shape (91, 109, 1), float32)``.
    """
    kind = kind if isinstance(kind, str) else np.dtype(kind).name  # '>f4' is float32 too
    what = ("" if where == "all" else f"slice {where}, ") + f"shape {tuple(shape)}, {kind}"
    return f"{'written':<20}{path} ({what})"


def _check_nifti_metadata(nifti, path):
    """What the file kept of a NIfTI input must be usable: a 4x4 finite affine and base64
    header text, as compress writes them (a file edited by hand may hold anything)."""
    if nifti is None:
        return
    problem = None
    if not isinstance(nifti, dict):
        problem = f"a JSON {type(nifti).__name__}, not an object"
    elif "affine" in nifti and not _is_affine(nifti["affine"]):
        problem = f"its affine {nifti['affine']!r} is not a 4x4 list of finite numbers"
    elif nifti.get("header") is not None and not _is_nifti_header(nifti["header"]):
        problem = (f"its header {str(nifti['header'])[:60]!r} is not the base64 text of a "
                   "NIfTI-1 or NIfTI-2 header")
    elif nifti.get("extensions") is not None and not _are_extensions(nifti["extensions"]):
        from .._reconstruct import MAX_EXTENSION_BYTES

        problem = (f"its extensions {str(nifti['extensions'])[:60]!r} are not a list of "
                   "[code, base64 content] pairs, codes from 0 to 2**31 - 1, contents of "
                   f"{MAX_EXTENSION_BYTES} bytes at most in all")
    if problem:
        raise ValueError(_unusable_nifti(path, problem))


def _unusable_nifti(path, problem):
    """The refusal of a TT file's kept NIfTI metadata, naming the file and the problem."""
    return (f"{path!r}: its 'nifti' metadata is unusable ({problem}); write slices "
            "(-o OUT.npy) instead, or fix the file's metadata.")


def _is_affine(value):
    try:
        affine = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return False
    return affine.shape == (4, 4) and bool(np.isfinite(affine).all())


def _are_extensions(value):
    """A list of ``[code, base64 content]`` pairs as compress keeps them: int32 codes that
    are not negative, contents of ``MAX_EXTENSION_BYTES`` at most in all."""
    from .._reconstruct import MAX_EXTENSION_BYTES

    if not isinstance(value, list):
        return False
    total = 0
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int)
                and not isinstance(pair[0], bool) and 0 <= pair[0] < 2**31
                and isinstance(pair[1], str)):
            return False
        try:
            total += len(base64.b64decode(pair[1], validate=True))
        except ValueError:  # binascii.Error
            return False
    return total <= MAX_EXTENSION_BYTES


def _is_nifti_header(value):
    """Base64 text of 348 (NIfTI-1) or 540 (NIfTI-2) bytes."""
    if not isinstance(value, str):
        return False
    try:
        return len(base64.b64decode(value, validate=True)) in (348, 540)
    except ValueError:  # binascii.Error
        return False


def _parse_slice(text, shape):
    """``{axis: index}`` for the fixed axes: all but two (a 1-D or 2-D volume: none)."""
    n_fixed = max(len(shape) - 2, 0)
    if text is None:
        shown = _default_axes(shape)
        return {axis: shape[axis] // 2 for axis in range(len(shape)) if axis not in shown}
    fixed = {}
    for part in text.split(","):
        try:
            axis, index = (int(item) for item in part.split("="))
        except ValueError as error:
            raise UsageError(f"--slice must be AXIS=INDEX[,AXIS=INDEX...], got {text!r}.") \
                from error
        if not 0 <= axis < len(shape) or not 0 <= index < shape[axis]:
            raise UsageError(f"--slice {part} is outside shape {shape}.")
        if axis in fixed:
            raise UsageError(f"--slice fixes axis {axis} twice.")
        fixed[axis] = index
    if len(fixed) != n_fixed:
        raise UsageError(f"--slice must fix {n_fixed} of the {len(shape)} axes of shape {shape} "
                         f"(a slice is 2-D), got {len(fixed)}.")
    return fixed


def _default_axes(shape):
    """The two axes a slice shows by default: the last two longer than 1, then the last
    others. The last two alone showed a single-slice (X, Y, 1) scan as an X x 1 strip."""
    longer = [axis for axis in range(len(shape)) if shape[axis] > 1]
    rest = [axis for axis in range(len(shape)) if shape[axis] == 1]
    return set(longer[-2:] + rest[len(rest) - max(2 - len(longer), 0):])


def as_image(values):
    """A 2-D float64 array (a 1-D volume becomes one row)."""
    values = np.asarray(values)
    values = values.real if np.iscomplexobj(values) else values
    return np.atleast_2d(values.astype(np.float64))


def _typed(values):
    """A float64 array, complex128 for a complex TT."""
    values = np.asarray(values)
    return values.astype(np.complex128 if np.iscomplexobj(values) else np.float64)


def tt_slice(tt, metadata, axis, index):
    """One 2-D slice (``axis`` fixed at ``index``) of a 3-D volume's TT (any layout)."""
    from .._reconstruct import volume_shape, volume_values

    shape = volume_shape(tt, metadata)
    selection = tuple(index if k == axis else slice(None) for k in range(len(shape)))
    return as_image(volume_values(tt, metadata, selection))


def volume_slice(volume, selection):
    import tensorly as tl

    ranges = [np.arange(n)[item] for item, n in zip(selection, volume.shape, strict=True)]
    grid = np.stack(np.meshgrid(*[np.atleast_1d(r) for r in ranges], indexing="ij"), -1)
    values = np.asarray(tl.to_numpy(volume.evaluate(grid.reshape(-1, len(ranges)))))
    kept = [np.size(r) for r, item in zip(ranges, selection, strict=True)
            if isinstance(item, slice)]
    return values.astype(np.float64).reshape(kept)


def write_png(path, image, original=None, title=""):
    """The slice, or the original, the TT slice and the error map side by side; a complex
    slice is shown as its modulus (titled ``|TT|``), its error map from the complex values.

    The original and the TT share one grey scale (:func:`shared_limits`): with a scale each,
    equal greys would not mean equal values, and the TT's error would not show. The error
    map has its own scale and colour map. Each slice is shown transposed with its origin
    at the bottom left (:func:`_show`), for every axis alike.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tt_panel = ("|TT|", np.abs(image)) if np.iscomplexobj(image) else ("TT", image)
    panels = [tt_panel] if original is None else [
        ("original", original), tt_panel, ("|error|", np.abs(image - original))]
    limits = shared_limits(*[data for name, data in panels if name != "|error|"])
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, data) in zip(axes[0], panels, strict=True):
        if name == "|error|":
            shown = _show(ax, data, cmap="magma")
        else:
            shown = _show(ax, data, cmap="gray", vmin=limits[0], vmax=limits[1])
        ax.set_title(name)
        ax.axis("off")
        figure.colorbar(shown, ax=ax, fraction=0.046)
    figure.suptitle(title)
    figure.tight_layout()
    try:
        write_atomically(path, lambda stream: figure.savefig(stream, dpi=100, format="png"))
    finally:
        plt.close(figure)



def shared_limits(*images):
    """One ``(vmin, vmax)`` for all ``images``: their finite values' range.

    Parameters
    ----------
    *images : array-like
        Real images (the original slice, the TT's).

    Returns
    -------
    tuple
        ``(vmin, vmax)`` as floats, or ``(None, None)`` (matplotlib's own) where no value
        is finite.
    """
    values = np.concatenate([np.ravel(np.asarray(image, dtype=float)) for image in images])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    return float(values.min()), float(values.max())


def _show(ax, data, **style):
    """``imshow`` of a slice ``data[i, j]`` with ``i`` across and ``j`` up (transposed,
    origin at the bottom left), as radiological and neurological viewers show NIfTI
    slices: a sagittal slice (axis 0 fixed) has the front to the side, the top up, not
    turned by 90 degrees as ``imshow``'s rows-down default shows it. Square pixels (one
    voxel each): "auto" drew a 233x189 sagittal slice square, squeezing the head."""
    return ax.imshow(np.asarray(data).T, origin="lower", aspect="equal", **style)
