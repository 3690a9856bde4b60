"""Atomic file writes: readers see the old file or the whole new one, never a part."""

import contextlib
import os
import stat
import uuid


def write_atomically(path, write, publish=os.replace):
    """Write ``path`` through ``write(stream)``: to a unique temporary file beside it,
    synced, then given the name by ``publish`` (readers see the old file or the whole new
    one, and a power loss leaves no empty file under the name).

    The temporary file is created with mode 0o666 as ``open`` creates files, so that the
    umask gives its mode: a fixed 0o644 made slices of scans world-readable under a
    private umask (077), and reading the umask (``os.umask``) changes it for every thread
    meanwhile. A file replaced keeps its mode instead: ``overwrite``/``--force`` over a
    file made private (``chmod 600``) made it world-readable under the default umask.

    A symbolic link is written through: its target gets the new file, and the link stays
    (a rename over the link replaced it with a file and left the target as it was). A
    FIFO, socket or device is refused rather than replaced by a file.

    Parameters
    ----------
    path : str
        The file to write.
    write : callable
        ``write(stream)`` writes the contents to a binary stream.
    publish : callable, default os.replace
        ``publish(temporary, target)`` gives the complete file its name, ``path`` or the
        file a link there points to (a TT file that must not replace another links it
        instead).

    Raises
    ------
    ValueError
        If ``path`` (or its link's target) exists and is not a regular file.
    """
    target = destination(path)
    folder = os.path.dirname(target)
    temporary = os.path.join(folder, f".tensorly-cross-{uuid.uuid4().hex}.tmp")
    # Created inside the try: a signal handled between the creation and the try (Ctrl-C,
    # a SIGTERM turned into an exception) left the file behind, its cleanup never reached.
    # The name is this call's own (a fresh uuid), so removing it can remove nothing else.
    try:
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as error:  # name the file asked for, not the temporary one
            raise type(error)(error.errno,
                              f"cannot write {path!r}: {error.strerror}") from error
        with os.fdopen(descriptor, "wb") as stream:
            keep_mode(stream.fileno(), target)
            write(stream)
            # On disk before it gets the name: else a power loss can leave the name on an
            # empty or partial file (the rename reaching the disk before the data).
            stream.flush()
            os.fsync(stream.fileno())
        publish(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    _sync_folder(folder)


def keep_mode(descriptor, target):
    """Give the new file the read/write/execute bits of the file it replaces, if any (POSIX;
    not its set-id bits, which a file of another owner's could pass to ours)."""
    # Not by hasattr(os, "fchmod"): Python >= 3.13 has it on Windows, where it sets the
    # read-only attribute, which made the temporary file undeletable when the replace
    # onto a read-only file failed (Windows deletes no read-only file).
    if os.name != "posix":  # Windows: no POSIX modes to keep
        return
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode) & 0o777
    except FileNotFoundError:  # a new file: the umask's mode
        return
    with contextlib.suppress(OSError):  # a file system without modes (FAT, some shares)
        os.fchmod(descriptor, mode)


def destination(path):
    """The file that a write to ``path`` gives its contents: ``path``, or the target of the
    symbolic link ``path`` is (resolved whole, a link to a link included).

    Parameters
    ----------
    path : str
        The file to write.

    Returns
    -------
    target : str
        An absolute path, with no symbolic link in it.

    Raises
    ------
    ValueError
        If the target exists and is not a regular file (a folder, FIFO, socket or device).
    """
    target = os.path.realpath(path)
    if os.path.exists(target) and not stat.S_ISREG(os.stat(target).st_mode):
        raise ValueError(f"{path!r} is not a regular file (a folder, FIFO, socket or device): "
                         "it would be replaced by a file; give the path of a file.")
    return target


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
