"""Atomic file writes: readers see the old file or the whole new one, never a part."""

import os
import uuid


def write_atomically(path, write):
    """Write ``path`` through ``write(stream)``: to a unique temporary file beside it,
    synced, then renamed to ``path`` (readers see the old file or the whole new one, and a
    power loss leaves no empty file under the name).

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
    """
    temporary = os.path.join(os.path.dirname(os.path.abspath(path)),
                             f".tensorly-cross-{uuid.uuid4().hex}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:  # name the file asked for, not the temporary one
        raise type(error)(error.errno, f"cannot write {path!r}: {error.strerror}") from error
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
