"""Atomic file writes: readers see the old file or the whole new one, never a part."""

import os
import uuid


def write_atomically(path, write, publish=os.replace):
    """Write ``path`` through ``write(stream)``: to a unique temporary file beside it,
    synced, then given the name by ``publish`` (readers see the old file or the whole new
    one, and a power loss leaves no empty file under the name).

    The temporary file is created with mode 0o666 as ``open`` creates files, so that the
    umask gives its mode: a fixed 0o644 made slices of scans world-readable under a
    private umask (077), and reading the umask (``os.umask``) changes it for every thread
    meanwhile.

    Parameters
    ----------
    path : str
        The file to write.
    write : callable
        ``write(stream)`` writes the contents to a binary stream.
    publish : callable, default os.replace
        ``publish(temporary, path)`` gives the complete file its name (a TT file that must
        not replace another links it instead).
    """
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".tensorly-cross-{uuid.uuid4().hex}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:  # name the file asked for, not the temporary one
        raise type(error)(error.errno, f"cannot write {path!r}: {error.strerror}") from error
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            # On disk before it gets the name: else a power loss can leave the name on an
            # empty or partial file (the rename reaching the disk before the data).
            stream.flush()
            os.fsync(stream.fileno())
        publish(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    _sync_folder(folder)


def _sync_folder(folder):
    """Make the new name itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows, or no read permission on the folder
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(descriptor)
