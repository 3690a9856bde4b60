"""What the subcommands share: exit codes, argument errors, output checks, progress."""

import contextlib
import os
import sys
import warnings

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_TOL_MISSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """A combination of arguments that argparse cannot check by itself."""


def check_output(path, force):
    """Refuse an output before any work: its folder must exist, the file only with force."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"the folder of the output {path!r} does not exist "
                                f"({folder!r}).")
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path!r} exists; pass --force to replace it.")


def default_output(path):
    """``INPUT`` stem + ``.tt.npz``, in the current folder."""
    stem = os.path.basename(os.path.normpath(path))
    for suffix in (".nii.gz", ".zarr", ".hdf5", ".h5", ".npy", ".nii"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem.split(":")[0] + ".tt.npz"


@contextlib.contextmanager
def open_client(address):
    """A ``dask.distributed.Client`` connected to ``address`` (None without one), closed on
    the way out (closing disconnects: the cluster itself keeps running)."""
    if not address:
        yield None
        return
    from distributed import Client

    with Client(address) as client:
        yield client


@contextlib.contextmanager
def progress_bar(total, unit, quiet):
    """A progress bar on stderr, cleared on the way out, errors and Ctrl-C included: the
    message that follows starts on a clean line. Warnings raised meanwhile are written
    above the bar, one line each (``warning: ...``), not over it with a source line."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit=unit, disable=quiet, leave=False, file=sys.stderr)

    def show(message, category, *_, **__):
        bar.write(f"warning: {message} ({category.__name__})", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            yield bar
        finally:
            bar.close()

