"""``tensorly-cross demo``: the embedded default volume (the MNI152 template where nilearn
is installed, else a procedural one), compressed, with a picture of a slice."""

import contextlib
import math
import os
import shutil

import numpy as np

from ._common import UsageError
from .compress import compress_volume, stream_volume
from .reconstruct import as_image, tt_slice, volume_slice, write_png
from .summary import format_summary, outcome

# After "method: stream" chosen by the cost model: the stream reads every voxel, so the
# demo shows no cross (the library's point); say how to see one.
STREAM_HINT = ("hint: the stream reads the whole volume; --method lsq shows a cross, which "
               "reads a fraction of it")


def demo_workdir():
    """``$XDG_CACHE_HOME/tensorly-cross``, else ``~/.cache/tensorly-cross``."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "tensorly-cross")


def run_demo(args):
    import tensorly_cross as tlc

    workdir = args.workdir or demo_workdir()
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        # os.makedirs said only "[Errno 17] File exists", naming neither flag nor fix.
        raise NotADirectoryError(f"--workdir {workdir!r} is not a folder; give a folder "
                                 "(it is created if missing).")
    os.makedirs(workdir, exist_ok=True)
    name, shape, function, tol, why = _demo_volume(args)
    if not args.quiet:  # which volume, and why: a fallback must not go unsaid
        print(f"volume: {why}")
    volume_path = os.path.join(workdir, f"{name}.zarr")
    # One writer at a time: a second demo waits for the first's volume instead of writing
    # its own over it (and write_volume publishes atomically either way).
    with _exclusive(os.path.join(workdir, f".{name}.lock")):
        if not os.path.exists(volume_path):
            from tensorly_cross.datasets import write_volume

            _check_room(workdir, shape, procedural=name != MNI152_NAME)
            if not args.quiet:
                print(f"writing the demo volume {shape} (float32, once) to {volume_path}")
            write_volume(volume_path, function, shape, chunks=(32, 32, 32))
        else:
            _check_kept_volume(volume_path, function, shape)
    volume = tlc.open_volume(volume_path, strict=True)
    output = os.path.join(workdir, f"{name}.tt.npz")
    method, reason = _demo_method(args.method, volume, volume_path)
    if not args.quiet:
        print(f"method: {method} ({reason})")
        if method == "stream" and args.method == "auto":
            print(STREAM_HINT)
    if method == "stream":
        summary = stream_volume(volume, output, tol=tol, source=volume_path, force=True,
                                dtype=args.dtype)
    else:
        summary = compress_volume(volume, output, tol=tol, method=method, quiet=args.quiet,
                                  verbose=args.verbose, source=volume_path, force=True,
                                  dtype=args.dtype)
    summary["bytes_total"] = math.prod(shape) * 4
    png = _demo_picture(volume_path, output, name, shape, workdir)
    if not args.quiet:
        print(format_summary(summary))
        if summary.get("bytes_read") is not None:
            print(f"volume size         {summary['bytes_total'] / 2**20:.1f} MiB of float32 "
                  f"({summary['bytes_read'] / summary['bytes_total']:.1%} read)")
        print(f"picture             {png}")
    asked = None if args.method == "auto" else method
    return outcome(summary, True, args.accept_miss, demo_volume=volume_path, demo_method=asked)


def _check_room(workdir, shape, procedural=True):
    """Refuse a volume larger than the free space of ``workdir`` before any of it is
    written: ``--size 4096`` (256 GiB of float32, stored as it is: blobs do not compress)
    filled the disk before failing, and larger ones failed on their first slab's memory.
    ``--size`` is named only for the ``procedural`` volume: it does not set the MNI152
    template's shape (and is refused with it)."""
    needed = math.prod(shape) * 4
    free = shutil.disk_usage(workdir).free
    if needed > free:
        what, fix = ((f"--size {shape[0]}: the demo volume", "give a smaller --size or ")
                     if procedural else ("the MNI152 demo volume", "free some space or give "))
        raise OSError(f"{what} {shape} takes {needed / 2**30:,.1f} GiB of float32, and "
                      f"--workdir {workdir!r} has {free / 2**30:,.1f} GiB free; {fix}"
                      "another --workdir.")


# Entries of a kept demo volume compared with the demo's own (a few chunks read).
CHECKED_ENTRIES = 64


def _check_kept_volume(path, function, shape):
    """Raise FileExistsError if the volume kept at ``path`` (written by an earlier demo) is
    not this demo's: another shape, or other values at a sample of its entries. A template
    of another nilearn (its 2 mm MNI152) or a procedural volume of another version was
    compressed under this one's name, and its shape and share read misreported."""
    import tensorly_cross as tlc

    volume = tlc.open_volume(path)  # its own counters: the run's reads are counted apart
    fix = "remove it (it is rewritten) or pass another --workdir"
    if tuple(volume.shape) != tuple(shape):
        raise FileExistsError(f"{path!r} holds a volume of shape {tuple(volume.shape)}, not "
                              f"the demo's {tuple(shape)} (kept by another version of "
                              f"nilearn or tensorly-cross?): {fix}.")
    rng = np.random.default_rng(0)
    indices = np.stack([rng.integers(0, n, CHECKED_ENTRIES) for n in shape], axis=1)
    expected = np.asarray(function(indices), dtype=np.float64).reshape(-1)
    stored = np.asarray(volume.evaluate(indices), dtype=np.float64)
    # To float32's rounding, not bit for bit: a function evaluated in batches of another
    # size may round otherwise in its last bit; a volume of another version differs more.
    scale = float(np.max(np.abs(expected), initial=0.0)) or 1.0
    if not np.allclose(stored, expected, rtol=1e-6, atol=1e-6 * scale):
        raise FileExistsError(f"{path!r} holds a volume of shape {tuple(shape)} with other "
                              "values than the demo's (kept by another version of nilearn "
                              f"or tensorly-cross?): {fix}.")


# The MNI152 template's name in --workdir (its volume and TT files).
MNI152_NAME = "mni152_t1"
# Default of --size: the edge of the procedural volume.
DEMO_SIZE = 384


def _demo_volume(args):
    """The demo's volume.

    Parameters
    ----------
    args : argparse.Namespace
        The demo's arguments (``volume``, ``size``, ``tol``).

    Returns
    -------
    tuple
        ``(name, shape, function of multi-indices, tol, why)``, ``why`` saying which volume
        and why it was chosen (printed: with nilearn missing, ``auto`` falls back to a
        larger, slower procedural volume, which a user should know).
    """
    import importlib.util

    from tensorly_cross.datasets import blob_phantom

    installed = importlib.util.find_spec("nilearn") is not None
    if args.volume == "mni152" and not installed:
        raise UsageError("--volume mni152 needs nilearn (pip install nilearn), which is not "
                         "installed; --volume procedural needs nothing.")
    sized = args.size != DEMO_SIZE  # --size is the procedural volume's edge
    if args.volume == "mni152" and sized:
        raise UsageError(f"--size {args.size} sets the procedural volume's edge; the MNI152 "
                         "template has its own shape (197x233x189): drop --size, or pass "
                         "--volume procedural.")
    if args.volume == "mni152" or (args.volume == "auto" and installed and not sized):
        from nilearn.datasets import load_mni152_template

        template = np.asarray(load_mni152_template().get_fdata(), dtype=np.float32)
        why = ("asked for" if args.volume == "mni152" else
               "nilearn is installed; --volume procedural for the procedural one")
        return (MNI152_NAME, template.shape, lambda indices: template[tuple(indices.T)],
                0.1 if args.tol is None else args.tol,
                f"nilearn's MNI152 T1 template, shape {template.shape} ({why})")
    shape = (args.size,) * 3
    why = ("asked for" if args.volume == "procedural" else
           "nilearn is not installed; pip install nilearn for the MNI152 T1 template"
           if not installed else f"--size {args.size} asks for it")
    return (f"blobs{args.size}", shape, blob_phantom(shape),
            1e-3 if args.tol is None else args.tol,
            f"the procedural {args.size}^3 volume of Gaussian blobs, "
            f"{math.prod(shape) * 4 / 2**20:.3g} MiB of float32 ({why})")


def _demo_method(method, volume, path):
    if method != "auto":
        return method, "asked for"
    from ..cost import choose_path

    choice = choose_path(volume, path=path)
    return choice.method, choice.reason


def _demo_picture(volume_path, output, name, shape, workdir):
    """The middle slice along the last axis: the original, the TT and the error map."""
    import tensorly_cross as tlc

    tt, metadata = tlc.load_tt(output)
    axis, index = 2, shape[2] // 2
    image = tt_slice(tt, metadata, axis, index)
    selection = (slice(None), slice(None), index)
    original = as_image(volume_slice(tlc.open_volume(volume_path), selection))
    png = os.path.join(workdir, f"{name}_slice.png")
    write_png(png, image, original, title=f"demo volume {shape}, slice {axis}={index}")
    return png


@contextlib.contextmanager
def _exclusive(lock_path):
    """An exclusive advisory lock on ``lock_path`` (POSIX; elsewhere no lock, and the
    atomic publication alone keeps the volume whole)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

