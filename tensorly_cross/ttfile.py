"""TT files: cores and metadata in one ``.npz``, written atomically, read without pickle."""

import json
import os
import tempfile
import zipfile

import numpy as np
import tensorly as tl
from tensorly.tt_tensor import TTTensor

from ._backend import to_host

FORMAT = "tensorly-cross-tt"
FORMAT_VERSION = 1


class TTFileError(ValueError):
    """A file is not a readable tensorly-cross TT file (corrupt, foreign or unsafe)."""


def save_tt(path, tt, metadata=None, overwrite=False):
    """Write a TT and its metadata to ``path`` (``.npz``), atomically.

    The file is written to a temporary name in the same folder and renamed over ``path``
    only once complete, so an interrupted save never leaves a half-written file.

    Parameters
    ----------
    path : str or os.PathLike
    tt : TTTensor or list of cores
    metadata : dict, optional
        JSON-serialisable facts to keep (original shape, quantics layout, error, arguments).
    overwrite : bool, default False

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True (--force) to replace it.")
    cores = [to_host(core) for core in tt]
    meta = dict(metadata or {})
    meta.update(format=FORMAT, format_version=FORMAT_VERSION, n_cores=len(cores),
                ranks=[1] + [int(core.shape[2]) for core in cores])
    arrays = {f"core_{k}": core for k, core in enumerate(cores)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tt-", suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; use the default
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_tt(path):
    """Read a TT file written by :func:`save_tt`.

    Returns
    -------
    tt : TTTensor
        Cores in the active TensorLy backend.
    metadata : dict

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    TTFileError
        If the file is not a tensorly-cross TT file, is corrupt, or holds pickled objects
        (never unpickled).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"path {path!r} does not exist.")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise TTFileError(f"{path!r} is not a readable tensorly-cross TT file (not .npz).")
        with archive:
            meta = _read_meta(archive, path)
            cores = [archive[f"core_{k}"] for k in range(meta["n_cores"])]
    except TTFileError:
        raise
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise TTFileError(f"{path!r} is not a readable tensorly-cross TT file: {error}") from error
    _check_chain(cores, path)
    return TTTensor([tl.tensor(core) for core in cores]), meta


def _read_meta(archive, path):
    if "meta" not in archive.files:
        raise TTFileError(f"{path!r} is not a tensorly-cross TT file (no metadata).")
    meta = json.loads(bytes(archive["meta"]).decode())
    if meta.get("format") != FORMAT:
        raise TTFileError(f"{path!r} is not a tensorly-cross TT file (format "
                          f"{meta.get('format')!r}).")
    return meta


def _check_chain(cores, path):
    if not cores or any(core.ndim != 3 for core in cores):
        raise TTFileError(f"{path!r}: cores must be 3-D arrays.")
    ranks = [core.shape[0] for core in cores] + [cores[-1].shape[2]]
    if ranks[0] != 1 or ranks[-1] != 1 or any(
            a.shape[2] != b.shape[0] for a, b in zip(cores, cores[1:], strict=False)):
        raise TTFileError(f"{path!r}: core shapes do not chain into a TT.")
