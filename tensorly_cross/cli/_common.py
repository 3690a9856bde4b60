"""What the subcommands share: exit codes, argument errors, output checks, progress."""

import contextlib
import os
import sys
import uuid
import warnings

from .._atomic import destination

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_TOL_MISSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# 128 + SIGPIPE, as a shell reports a command killed by a closed pipe.
EXIT_STDOUT_CLOSED = 141
# 128 + SIGTERM, as a shell reports a command it terminated.
EXIT_TERMINATED = 143


class UsageError(Exception):
    """A combination of arguments that argparse cannot check by itself."""


def check_given(flag, path):
    """Refuse an empty path given to ``flag`` (``-o "$OUT"`` with ``OUT`` unset), which
    would read as the flag not given: a default output, or "give --png and/or -o"."""
    if path is not None and not path.strip():
        raise UsageError(f"{flag} is empty; give a file path.")


def check_output(path, force, inputs=()):
    """Refuse an output before any work: what writing it at the end would refuse (after
    a run that can take hours) is refused here instead.

    Parameters
    ----------
    path : str
        The output file.
    force : bool
        Whether an existing file may be replaced.
    inputs : sequence of str
        The command's inputs (None entries skipped), which writing ``path`` would destroy.

    Raises
    ------
    FileNotFoundError
        If the output's folder (or, for a symbolic link, its target's folder) does not exist.
    IsADirectoryError
        If ``path`` is a folder, or ends in ``/`` (names a folder that does not exist).
    ValueError
        If ``path`` (or its link's target) is a FIFO, socket or device.
    PermissionError
        If the folder the file would be written in cannot be written.
    UsageError
        If ``path`` is one of ``inputs``, or lies inside a zarr input's store.
    FileExistsError
        If ``path`` exists and ``force`` is not given.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"the folder of the output {path!r} does not exist "
                                f"({folder!r}).")
    if os.path.isdir(path):
        raise IsADirectoryError(f"the output {path!r} is a directory; give a file path (e.g. "
                                "a file in that directory).")
    if path.endswith(("/", os.sep)):
        raise IsADirectoryError(f"the output {path!r} ends in '/': it names a folder, which "
                                "does not exist; give a file path.")
    _check_inputs_kept(path, inputs)
    target = destination(path)  # a FIFO, socket or device: refused (ValueError)
    _check_writable(path, target)
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path!r} exists; pass --force to replace it.")


def _check_inputs_kept(path, inputs):
    """Refuse an output that is one of ``inputs`` or lies inside a zarr input's store."""
    for source in inputs:
        if source and same_file(path, source_file(source)):
            raise UsageError(f"the output {path!r} is the input {source!r}: writing it would "
                             "destroy the input; give another output path.")
        if source and _inside_folder(path, zarr_store_root(source_file(source))):
            raise UsageError(f"the output {path!r} is inside the input {source!r} (a store "
                             "folder): writing it would damage the input; give a path "
                             "outside it.")


def _check_writable(path, target):
    """Refuse an output whose file (a link's target) cannot be created in its folder.

    Tried by creating and removing a temporary file there, named as the library's own
    (``.tensorly-cross-<hex>.tmp``): ``os.access`` says yes to root where the file
    system still refuses (``/sys``), and the write itself is the only sure test.
    """
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"the output {path!r} is a link to {target!r}, whose folder "
                                "does not exist; give another output path.")
    probe = os.path.join(folder, f".tensorly-cross-{uuid.uuid4().hex}.tmp")
    try:  # removed in finally: a Ctrl-C right after the creation left it behind
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as error:
            raise type(error)(error.errno, f"cannot write {path!r}: {error.strerror} (in "
                              f"{folder!r})") from None
    finally:
        if os.path.exists(probe):
            os.remove(probe)


def open_input(path, flag="--dataset", **options):
    """:func:`tensorly_cross.open_volume`, its advice in the command's terms.

    Parameters
    ----------
    path : str
        The volume (an HDF5 one as ``file.h5`` or ``file.h5:/name``).
    flag : str
        The command's flag for the HDF5 dataset.
    **options
        Passed to :func:`tensorly_cross.open_volume`.

    Returns
    -------
    LazyTensor
        The volume.

    Raises
    ------
    KeyError
        An HDF5 file of several datasets and none named: the library says ``pass
        dataset=...``, a keyword the command line has no way to give; here ``--dataset``.
    """
    import tensorly_cross as tlc

    try:
        return tlc.open_volume(path, **options)
    except KeyError as error:
        text = str(error.args[0]) if error.args else ""
        if "pass dataset=..." not in text:
            raise
        raise KeyError(text.replace("pass dataset=...", f"pass {flag} NAME")) from error


def check_dataset_once(path, dataset, what="the input"):
    """Refuse an HDF5 dataset named twice, as ``file.h5:/a`` and ``--dataset b``.

    Parameters
    ----------
    path : str
        The volume's path, maybe with a ``:dataset`` suffix.
    dataset : str or None
        ``--dataset``.
    what : str
        How the message names ``path`` (``"the input"``, ``"--against"``).

    Raises
    ------
    UsageError
        If both name a dataset: the library would read ``file.h5:/a`` as a file name and
        say it does not exist, of a file that exists.
    """
    if dataset is not None and source_file(path) != path:
        raise UsageError(f"{what} {path!r} names its dataset, and --dataset names "
                         f"{dataset!r}: name it once (FILE.h5:/NAME or FILE.h5 --dataset "
                         "NAME).")


def source_file(path):
    """The file of an input path, without an HDF5 ``:dataset`` suffix.

    Split as :func:`tensorly_cross.open_volume` splits it (after the first ``.h5:`` or
    ``.hdf5:`` whose file exists; a path that is a file itself is kept whole): a dataset's
    name may hold ':' too, and the last ':' of ``scan.h5:/a:b`` gave ``scan.h5:/a``, so an
    output linked to ``scan.h5`` was not seen to be the input, and ``--force`` replaced it.
    """
    from ..io import volume_file

    return volume_file(path)


def is_hdf5(path):
    return source_file(path).lower().endswith((".h5", ".hdf5"))


def _inside_folder(path, folder):
    """Whether ``path`` lies under the folder ``folder`` (a zarr store), links resolved."""
    if not os.path.isdir(folder):
        return False
    folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def zarr_store_root(path):
    """The store a zarr input's folder lies in: its innermost ``.zarr`` folder (``grp.zarr``
    for ``grp.zarr/sub/vol``), else ``path`` itself (a file, or a folder in no ``.zarr``).

    An output anywhere in the store damages the hierarchy, not only one in the array's own
    folder: zarr then warns, on every listing, of an object it does not recognise.
    """
    if not os.path.isdir(path):
        return path
    parts = os.path.abspath(path).split(os.sep)
    for depth in range(len(parts), 0, -1):
        if parts[depth - 1].lower().endswith(".zarr"):
            return os.sep.join(parts[:depth]) or os.sep
    return path


def same_file(first, second):
    """Whether two paths name one file: the same inode where both exist (hard and symbolic
    links included), else the same resolved path."""
    if os.path.exists(first) and os.path.exists(second):
        return os.path.samefile(first, second)
    return os.path.realpath(first) == os.path.realpath(second)


def default_output(path):
    """``INPUT`` stem + ``.tt.npz``, in the current folder (of the file: an HDF5 input's
    ``:/group/name`` suffix is no part of it)."""
    stem = os.path.basename(os.path.normpath(source_file(path)))
    for suffix in (".nii.gz", ".zarr", ".hdf5", ".h5", ".npy", ".nii"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem + ".tt.npz"


@contextlib.contextmanager
def open_client(address):
    """A ``dask.distributed.Client`` connected to ``address`` (None without one), closed on
    the way out (closing disconnects: the cluster itself keeps running)."""
    if not address:
        yield None
        return
    from .._optional import require

    Client = require("distributed", "--scheduler", "dask").Client
    # dask's own messages ("missing port number in address 'x'", "Timed out trying to
    # connect to tcp://...") name no flag.
    try:
        client = Client(address)
    except ValueError as error:
        raise ValueError(f"--scheduler {address!r}: {error}") from error
    except OSError as error:  # unreachable: a timeout, a refused connection
        raise OSError(f"--scheduler {address!r}: {error}") from error
    with client:
        yield client


# Library advice in a warning that names an argument the command line has no flag for,
# and what the command line offers instead.
LIBRARY_ADVICE = {
    "Raise val_size, or check the result on the features you know of.":
        "Check the TT where it matters (reconstruct FILE --against INPUT --slice ...), or "
        "pass --method stream for an exact error.",
}


def in_flag_terms(message):
    """``message`` with the library's advice replaced by the command line's."""
    for advice, flags in LIBRARY_ADVICE.items():
        message = message.replace(advice, flags)
    return message


@contextlib.contextmanager
def progress_bar(total, unit, quiet):
    """A progress bar on stderr, cleared on the way out, errors and Ctrl-C included: the
    message that follows starts on a clean line. Warnings raised meanwhile are written
    above the bar, one line each (``warning: ...``), not over it with a source line."""
    from tqdm.auto import tqdm

    # None: no bar where stderr is not a terminal (a log file, a pipe), whose \r updates
    # would fill it with one line per refresh.
    bar = tqdm(total=total, unit=unit, disable=True if quiet else None, leave=False,
               file=sys.stderr)

    def show(message, category, *_, **__):
        bar.write(f"warning: {in_flag_terms(str(message))} ({category.__name__})",
                  file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            yield bar
        finally:
            bar.close()


def fill_nan_of(metadata):
    """The ``--fill-nan`` value a TT file was compressed with (None: none, or a file of
    another origin whose value is not a number).

    Parameters
    ----------
    metadata : dict
        The TT file's metadata.

    Returns
    -------
    float or None
    """
    arguments = metadata.get("arguments")
    value = arguments.get("fill_nan") if isinstance(arguments, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
