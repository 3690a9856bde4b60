"""Checkpoints: every evaluated entry appended to a file as it is computed, read back on a rerun.

The file is a header, then frames, one per batch of new entries::

    header  b"TLCCKPT1", uint32 n, n bytes of JSON {"format", "shape", "fingerprint",
            "arguments"}, uint32 CRC-32 of the JSON
    frame   b"BTCH", uint32 count, 4 bytes value dtype (e.g. b"<f8\\0"), uint32 CRC-32 of
            the payload; payload: count x d int64 multi-indices, then count values

Everything is little-endian binary: nothing is unpickled. The header is written to a
temporary file and renamed into place, so a file that exists has a whole header; frames
are appended and flushed one batch at a time, so a killed run loses at most the batch in
flight. A last frame cut short, or whose checksum fails (a write torn by a crash), ends
the valid part: it is dropped with a warning, and the file is truncated there before new
frames are appended. An unreadable frame (bad tag, count or checksum) that is not the
last (a valid frame follows it, or its own whole head says more does) is damage, not a
torn write: it is refused (:class:`CheckpointError`) and the file left as it is.

A store holds an exclusive advisory lock on its file (POSIX ``flock``) until it is closed:
two runs on one checkpoint each wrote at their own offset, over each other's frames, and
the entries of one were silently lost. The second run is refused instead. A run that
stopped while its executor still ran chunks holds it until they have finished and been
stored (:meth:`CheckpointStore.keep_late`); a rerun in the same process waits for them.

The fingerprint is a SHA-256 of the tensor's shape and the run's arguments: a checkpoint
written for another shape or other arguments is refused (:class:`CheckpointMismatchError`).
"""

import functools
import hashlib
import json
import os
import struct
import threading
import uuid
import warnings
import weakref
import zlib

try:  # POSIX: an advisory lock keeps two runs from appending to one file
    import fcntl
except ImportError:  # pragma: no cover -- Windows: no lock
    fcntl = None

import numpy as np

from .._atomic import destination, keep_mode
from .._backend import to_host
from .._validation import outside_stacklevel
from ..errors import CheckpointError, CheckpointMismatchError
from .base import LazyTensor, check_values, views_of
from .chunk_result import FINISHED, evaluating_tensor, take_late
from .keys import KeyScheme

MAGIC = b"TLCCKPT1"
FRAME_TAG = b"BTCH"
FORMAT = 1
_FRAME_HEAD = struct.Struct("<4sI4sI")  # tag, count, value dtype, CRC-32 of the payload
_VALUE_DTYPES = ("<f8", "<f4", "<c16", "<c8")


def fingerprint(shape, arguments):
    """SHA-256 (hex) of the shape and the JSON-able ``arguments``, key order aside."""
    text = json.dumps({"shape": [int(n) for n in shape], "arguments": arguments},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class CheckpointStore:
    """An append-only file of evaluated entries for one tensor shape and set of arguments.

    Opening an existing file checks its fingerprint and reads its entries back
    (:attr:`indices`, :attr:`values`); a torn last frame is dropped. New entries go to
    :meth:`append`, one frame per call, flushed before it returns.

    Parameters
    ----------
    path : str or os.PathLike
    shape : tuple of int
    arguments : dict
        JSON-able settings that must match for the entries to be reused.
    """

    def __init__(self, path, shape, arguments):
        # As str: an os.PathLike of bytes (an os.scandir(b"...") entry) failed on joining
        # the temporary file's str name to its folder.
        self.path = os.fsdecode(path)
        if os.path.isdir(self.path):
            raise CheckpointError(f"checkpoint={self.path!r} is a directory; give a file path "
                                  "(created if missing), e.g. a file in that directory.")
        # "runs/", "runs/." and "runs/.." name folders. Resolved, the first two named a file
        # "runs" beside them, created; the last the folder above, refused as a FIFO.
        if os.path.basename(self.path) in ("", os.curdir, os.pardir):
            raise CheckpointError(f"checkpoint={self.path!r} ends in a path separator, "
                                  f"{os.curdir!r} or {os.pardir!r}: it names a folder, which "
                                  "does not exist; give a file path (created if missing).")
        folder = os.path.dirname(os.path.abspath(self.path))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise CheckpointError(f"checkpoint={self.path!r}: {folder!r} is a file, not a "
                                  "folder; give a file path in a folder.")
        if not os.path.isdir(folder):
            raise CheckpointError(f"checkpoint={self.path!r}: its folder {folder!r} does not "
                                  "exist (the file is created, not its folders).")
        self.shape = tuple(int(n) for n in shape)
        self.arguments = arguments
        self.fingerprint = fingerprint(self.shape, arguments)
        target = _checkpoint_file(self.path)
        # An empty file is new too: the header is written whole or not at all, so an empty
        # file never held a checkpoint (it is what tempfile.mkstemp leaves).
        if not os.path.exists(target) or os.path.getsize(target) == 0:
            _write_header_atomically(target, self._header(), self.path)
        # The chunks of an earlier run in this process still running, whose values that
        # run's store appends once they finish: waited for, not evaluated again.
        self._target = os.path.realpath(target)
        _wait_for_late_chunks(self._target)
        self._file = _open_for_appending(target, self.path)
        self._removed_warned = False
        self._guard = threading.RLock()  # late chunks append from the executor's threads
        self._n_late, self._close_asked = 0, False
        self._late_done = threading.Event()
        self._late_done.set()
        with _OPEN_STORES_LOCK:  # a process forked from now on lets go of the file
            _OPEN_STORES.add(self)
        try:
            _lock(self._file, self.path)  # before reading: another run may be appending
            self.indices, self.values, self._end = self._read_all()
            self._file.truncate(self._end)  # drop a torn tail before appending after it
            self._file.seek(self._end)
        except BaseException:
            _unlock(self._file)
            self._file.close()
            raise

    def __len__(self):
        return self.indices.shape[0]

    def append(self, indices, values):
        """Write one frame of ``indices`` (m, d) int64 and their ``values`` through to the file."""
        with self._guard:
            self._append(indices, values)

    def _append(self, indices, values):
        values = np.ascontiguousarray(to_host(values))
        dtype = values.dtype.newbyteorder("<").str
        if dtype not in _VALUE_DTYPES:
            values, dtype = values.astype("<f8"), "<f8"  # ints, bools: stored as float64
        payload = (np.ascontiguousarray(indices, dtype="<i8").tobytes()
                   + values.astype(dtype, copy=False).tobytes())
        head = _FRAME_HEAD.pack(FRAME_TAG, indices.shape[0], dtype.encode().ljust(4, b"\0"),
                                zlib.crc32(payload))
        try:
            _write_all(self._file, head + payload)
        except OSError as error:  # a full disk, a quota, a file size limit
            self._cut_back()
            raise type(error)(error.errno, f"checkpoint={self.path!r}: a batch of "
                              f"{indices.shape[0]} entries could not be appended "
                              f"({error.strerror}); the entries stored before it are kept: "
                              "free space and rerun to resume.") from error
        self._end += len(head) + len(payload)
        self._warn_if_removed()

    def keep_late(self, late):
        """Append the chunks of :class:`~.chunk_result.LateChunks` ``late`` as each
        finishes (values that fail the checks every read passes are dropped): they ran on
        after their batch failed (``max_time``), and a rerun evaluated them again. Until
        the last has finished, :meth:`close` leaves the file open and locked."""
        with self._guard:
            if self._file.closed:
                return
            self._n_late += len(late.pairs)
            self._late_done.clear()
        for chunk, future in late.pairs:
            future.add_done_callback(functools.partial(self._store_late, chunk))

    def _store_late(self, chunk, future):
        """A late chunk's done-callback, in the executor's thread: never raises there."""
        try:
            if not future.cancelled() and future.exception() is None:
                values = checked_part(future.result()[0], chunk.shape[0])
                with self._guard:
                    if values is not None and not self._file.closed:
                        self._append(chunk, values)
        except Exception:  # noqa: BLE001 -- a full disk: the entries before it are kept
            pass
        finally:
            with self._guard:
                self._n_late -= 1
                if not self._n_late:
                    self._close_if_asked()

    def _close_if_asked(self):
        """Close the store if :meth:`close` was put off, then let reruns go on: set even
        where the sync fails (a full disk, NFS), which left a rerun in this process
        waiting for ever (the lock and file are let go of all the same)."""
        try:
            if self._close_asked:
                self._close_now()
        except OSError:  # nobody to raise to in the executor's thread
            pass
        finally:
            self._late_done.set()

    def wait_for_late(self):
        """Return once every late chunk has finished (and the store closed, if asked)."""
        while not self._late_done.wait(1.0):  # bounded waits: Ctrl-C is handled between
            pass

    def close(self):
        """Sync to disk (fsync), release the lock and close; appending after this is an
        error. The lock is released even where the sync fails: a store whose write failed
        (a full disk) stays referenced by the traceback, and its lock refused the rerun.
        With late chunks still running (:meth:`keep_late`), the last one to finish closes
        it."""
        with self._guard:
            if self._n_late:
                self._close_asked = True
                return
            self._close_now()

    def _close_now(self):
        if not self._file.closed:
            try:
                os.fsync(self._file.fileno())
            finally:
                _unlock(self._file)
                self._file.close()

    def _warn_if_removed(self):
        """Warn, once, when the file has lost its last name (deleted, or replaced by a
        rename): appending on, the entries went to a file nothing reached, lost at the
        end of the run, and a rerun started afresh without a word."""
        if self._removed_warned or os.fstat(self._file.fileno()).st_nlink > 0:
            return
        self._removed_warned = True
        warnings.warn(f"checkpoint {self.path!r} was removed (or replaced) during the run: "
                      "the entries evaluated from now on are not kept on disk, and a rerun "
                      "starts afresh. Keep the file until the run has finished.",
                      stacklevel=outside_stacklevel())

    def _cut_back(self):
        """Truncate a frame written in part to the end of the last whole one, if the file
        system lets us: a frame torn mid-file would be refused as damage once another
        frame followed it."""
        try:
            self._file.truncate(self._end)
            self._file.seek(self._end)
        except OSError:  # left as a torn tail, which a rerun drops
            pass

    def _header(self):
        text = json.dumps({"format": FORMAT, "shape": list(self.shape),
                           "fingerprint": self.fingerprint, "arguments": self.arguments},
                          sort_keys=True).encode()
        return MAGIC + struct.pack("<I", len(text)) + text + struct.pack("<I", zlib.crc32(text))

    def _read_all(self):
        """(indices, values, end of the valid frames) after checking the header."""
        data = self._file.read()
        offset = self._check_header(data)
        d = len(self.shape)
        indices, values = [np.zeros((0, d), dtype=np.int64)], []
        while offset < len(data):
            frame = _read_frame(data, offset, d)
            if frame is None and not _is_torn_tail(data, offset, d):
                # Not a write the crash cut short, but damage: truncating here would destroy
                # every later frame.
                raise CheckpointError(
                    f"checkpoint={self.path!r} is damaged: the frame at byte {offset} is "
                    f"unreadable (bad tag, count or checksum) but not the file's last: "
                    f"{len(data) - offset} bytes follow it, and a crash tears the last frame "
                    "only. Nothing was changed; move the file aside to start afresh.")
            if frame is None:
                warnings.warn(f"checkpoint {self.path!r}: dropped a torn last frame "
                              f"({len(data) - offset} bytes) after {offset} valid bytes.",
                              stacklevel=outside_stacklevel())
                break
            frame_indices, frame_values, offset = frame
            indices.append(frame_indices)
            values.append(frame_values)
        values = np.concatenate(values) if values else np.zeros(0)
        return np.concatenate(indices), values, offset

    def _check_header(self, data):
        """Offset of the first frame; raise unless the header is whole and matches."""
        if data[: len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + 4:
            raise CheckpointError(f"checkpoint={self.path!r} is not a tensorly-cross "
                                  "checkpoint (bad magic number).")
        (size,) = struct.unpack_from("<I", data, len(MAGIC))
        start = len(MAGIC) + 4
        text = data[start : start + size]
        crc = data[start + size : start + size + 4]
        if len(crc) < 4 or struct.unpack("<I", crc)[0] != zlib.crc32(text):
            raise CheckpointError(f"checkpoint={self.path!r}: its header is damaged.")
        try:
            header = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"checkpoint={self.path!r}: its header is not JSON "
                                  f"({error}).") from error
        if not isinstance(header, dict):
            raise CheckpointError(f"checkpoint={self.path!r}: its header is a JSON "
                                  f"{type(header).__name__}, not an object.")
        if header.get("fingerprint") != self.fingerprint:
            raise CheckpointMismatchError(_mismatch(self.path, header, self.shape,
                                                    self.arguments))
        return start + size + 4


def _read_frame(data, offset, d):
    """(indices, values, next offset) of the frame at ``offset``, or None if it is torn."""
    if offset + _FRAME_HEAD.size > len(data):
        return None
    tag, count, dtype, crc = _FRAME_HEAD.unpack_from(data, offset)
    dtype = dtype.rstrip(b"\0").decode("ascii", "replace")
    if tag != FRAME_TAG or dtype not in _VALUE_DTYPES:
        return None
    start = offset + _FRAME_HEAD.size
    index_bytes = 8 * d * count
    end = start + index_bytes + np.dtype(dtype).itemsize * count
    payload = data[start:end]
    if end > len(data) or zlib.crc32(payload) != crc:
        return None
    indices = np.frombuffer(payload, dtype="<i8", count=d * count).reshape(count, d)
    values = np.frombuffer(payload, dtype=dtype, offset=index_bytes, count=count)
    return indices.astype(np.int64), values.astype(np.dtype(dtype).newbyteorder("=")), end


def _is_torn_tail(data, offset, d):
    """Whether the unreadable frame at ``offset`` is the last write, cut short by a crash.

    A crash tears only the frame in flight, so nothing valid follows a torn frame. Damage
    elsewhere (a flipped bit in a tag, count or payload) leaves later frames intact: a frame
    whose whole head says it ends before the file does, or any later offset that parses as
    a frame with a matching checksum, means the bytes at ``offset`` are damage, not a tail.
    """
    if _frame_end(data, offset, d) < len(data):
        return False
    start = data.find(FRAME_TAG, offset + 1)
    while start != -1:
        if _read_frame(data, start, d) is not None:
            return False
        start = data.find(FRAME_TAG, start + 1)
    return True


def _frame_end(data, offset, d):
    """Where the frame at ``offset`` says it ends (the file's end if its head is torn or
    unreadable)."""
    if offset + _FRAME_HEAD.size > len(data):
        return len(data)
    tag, count, dtype, _ = _FRAME_HEAD.unpack_from(data, offset)
    dtype = dtype.rstrip(b"\0").decode("ascii", "replace")
    if tag != FRAME_TAG or dtype not in _VALUE_DTYPES:
        return len(data)
    return offset + _FRAME_HEAD.size + (8 * d + np.dtype(dtype).itemsize) * count


def _checkpoint_file(path):
    """The file behind ``path``: the target of a symbolic link, which is written through
    and stays a link (a checkpoint kept on shared storage); a FIFO, socket or device is
    refused, which the header's rename would have replaced with a file."""
    try:
        return destination(path)
    except ValueError as error:
        raise CheckpointError(f"checkpoint={path!r} is not a regular file (a FIFO, socket or "
                              "device); a checkpoint is a file that is read back and "
                              "appended to: give a file path (created if missing).") from error


def _open_for_appending(target, path):
    """The checkpoint file open for reading and appending; an OSError that says why a
    checkpoint must be writable, where a bare "Permission denied" left it unclear."""
    try:
        # Unbuffered: each frame is written whole or fails at once; a buffered file kept a
        # failed write's bytes and raised again on closing (a full disk).
        return open(target, "r+b", buffering=0)  # noqa: SIM115 -- open until close()
    except OSError as error:
        raise type(error)(error.errno, f"checkpoint={path!r} cannot be opened for reading "
                          f"and writing ({error.strerror}): a run reads the stored entries "
                          "back, appends the ones it evaluates and cuts off a torn last "
                          "frame, even a run that only replays. Make it readable and "
                          "writable (chmod u+rw), or resume from a writable copy.") from error


def _write_all(handle, data):
    """Write ``data`` to the unbuffered ``handle``, which may take part of it per call."""
    view = memoryview(data)
    while view:
        view = view[handle.write(view):]


def _lock(handle, path):
    """Take an exclusive lock on the open checkpoint, or raise: another run holds it."""
    if fcntl is None:
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CheckpointError(
            f"checkpoint={path!r} is in use by another run (it holds the file's lock): two "
            "runs appending to one checkpoint overwrite each other's entries (a run stopped "
            "by max_time, or an error, holds it until the chunks its executor was still "
            "running have finished and been stored). Wait for it to finish, or use "
            "another checkpoint path.") from None
    except OSError:  # pragma: no cover -- a file system without locks (some NFS mounts)
        pass


def _unlock(handle):
    """Release the lock explicitly: a process forked while the file was open (a process
    pool's worker) shares its open file description, and closing ours would not release
    a lock that description still holds."""
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        except OSError:  # pragma: no cover -- not locked (a file system without locks)
            pass


# The stores open in this process, whose files a forked child lets go of.
_OPEN_STORES = weakref.WeakSet()
# Held to add to it and to copy it in threads: a store opened in one thread while another
# looked through them for late chunks raised "Set changed size during iteration". (Not
# taken in a forked child, which has one thread, and where a parent's thread may have
# left it held.)
_OPEN_STORES_LOCK = threading.Lock()


def _wait_for_late_chunks(target):
    """Wait until no store of this process on the file ``target`` has late chunks
    running (see :meth:`CheckpointStore.keep_late`)."""
    with _OPEN_STORES_LOCK:
        stores = list(_OPEN_STORES)
    for store in stores:
        if getattr(store, "_target", None) == target:
            store.wait_for_late()


def checked_part(values, n_entries):
    """A chunk's ``values`` on the host if they are ``n_entries`` values that pass the
    checks every read passes; None otherwise (NaN, strings, mixed kinds, a wrong shape)."""
    if tuple(np.shape(values)) != (n_entries,):
        return None
    try:
        return to_host(check_values(values, np.empty((n_entries, 0)), "function"))
    except (ValueError, TypeError):
        return None


def _release_in_child():
    """In a child forked while checkpoints are open, point their descriptors at
    ``os.devnull``, without unlocking.

    A child made by ``fork`` (a ``ProcessPoolExecutor``'s worker, started by the run's first
    batch) shares each open file description, and the lock with it. Once the run was
    killed (SIGKILL, the OOM killer), its orphaned workers, which outlive it, held the lock,
    and every rerun was refused as "in use by another run". Unlocking here would release
    the parent's lock; closing the descriptor only lets the lock go with the parent.

    Nor does the child wait for late chunks (:meth:`CheckpointStore.keep_late`): the
    executor threads that finish them stayed in the parent, and a rerun in the child
    waited for ever once the parent's had finished. The locks that a thread of the parent
    may have held at the fork are made anew.
    """
    global _OPEN_STORES_LOCK
    _OPEN_STORES_LOCK = threading.Lock()
    for store in list(_OPEN_STORES):
        store._late_done = threading.Event()  # not the parent's: its lock may be held
        store._late_done.set()
        handle = getattr(store, "_file", None)
        if handle is None or handle.closed:
            continue
        try:
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, handle.fileno(), inheritable=False)
            finally:
                os.close(null)
        except OSError:  # pragma: no cover -- nothing to let go of
            pass


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_release_in_child)


def _write_header_atomically(path, header, name=None):
    """Create ``path`` holding ``header`` whole, or leave it as another run created it.

    The header goes to a uniquely named temporary file (two runs in one process no longer
    share a name), synced, then published: a hard link where ``path`` is new, so that of
    two runs creating it at once the second does not replace the file the first already
    appends to; a replace where ``path`` is an empty file (nothing to lose). Messages name
    ``name`` (the path the user gave, a link to ``path``, say), ``path`` by default.
    """
    folder = os.path.dirname(os.path.abspath(path))
    # Unique per call; created with mode 0o666 so that the umask gives the default mode
    # (mkstemp's 0o600, widened by reading the umask, would set it to 0 for other threads).
    # Named as every temporary file of this library (_atomic.py), which the docs name.
    temporary = os.path.join(folder, f".tensorly-cross-{uuid.uuid4().hex}.tmp")
    try:  # created inside it: a Ctrl-C right after the creation still removes it
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as error:  # name the file asked for, not the temporary one
            raise type(error)(error.errno, f"cannot create checkpoint={name or path!r}: "
                              f"{error.strerror}") from error
        with os.fdopen(handle, "wb") as stream:
            # An empty file replaced keeps its mode: mkstemp's 0o600 became the umask's
            # (0o644), the tensor's entries world-readable.
            keep_mode(stream.fileno(), path)
            stream.write(header)
            stream.flush()
            os.fsync(stream.fileno())
        if not os.path.lexists(path):
            _link_if_new(temporary, path)
        elif not os.path.exists(path) or os.path.getsize(path) == 0:
            # An empty file (what mkstemp leaves) or a dangling link: nothing to lose.
            os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _link_if_new(temporary, path):
    """Publish ``temporary`` as ``path`` unless another run created ``path`` meanwhile."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another run created it just now: its header is checked when read
    except OSError:  # no hard links on this file system
        os.replace(temporary, path)



def _mismatch(path, header, shape, arguments):
    """The message for a checkpoint of another run: which of shape and arguments differ."""
    if list(header.get("shape", [])) != list(shape):
        return (f"checkpoint={path!r} was written for a tensor of shape "
                f"{tuple(header.get('shape', []))}, this one has shape {tuple(shape)}; "
                "use another checkpoint path.")
    stored, arguments = _as_given(header.get("arguments", {})), _as_given(arguments)
    differ = sorted(key for key in set(stored) | set(arguments)
                    if stored.get(key) != arguments.get(key))
    details = ", ".join(f"{key}={stored.get(key)!r} there, {arguments.get(key)!r} here"
                        for key in differ)
    if "differentiable" in differ:  # select_indices has no such argument, yet differs so
        details += "; select_indices searches as tt_cross(..., differentiable=True) does"
    return (f"checkpoint={path!r} was written with other arguments ({details}); rerun with "
            "the same arguments to resume, or use another checkpoint path.")


def _as_given(arguments):
    """Bound ``arguments`` in the terms of :func:`tt_cross`: ``handover`` and ``refine``
    are set from ``method="auto"`` and ``differentiable``, and a mismatch message named
    them ("handover=True there, False here"), arguments no caller can pass."""
    given = dict(arguments)
    if given.pop("handover", False):  # "auto" resolved to TCI, handing over where it stalls
        given["method"] = "auto"
    # refine: absent (the default, True) or False, which differentiable=True sets
    given["differentiable"] = given.pop("refine", True) is False
    return given


# Stored entries read again on a resume of stored data: enough to tell another volume of
# the same shape (whose entries all differ) from the one written, at a negligible cost.
N_SOURCE_CHECKS = 8


def check_stored_source(lazy, store):
    """Refuse ``store`` where ``lazy`` is stored data that is not the data it was written
    from: a few of its entries, spread over the file, read again from ``lazy``.

    The fingerprint binds the shape and the arguments, not the data: resumed on another
    volume of the same shape (a script looping over subjects with one checkpoint name),
    a run returned the first volume's TT as the second's. A function is not read again
    (its entries are the expensive ones a checkpoint exists to keep).

    Raises
    ------
    CheckpointMismatchError
        Naming the first multi-index whose value differs.
    """
    if not lazy.stored or not len(store):
        return
    picks = np.unique(np.linspace(0, len(store) - 1, N_SOURCE_CHECKS).astype(np.int64))
    indices = np.ascontiguousarray(store.indices[picks])
    fresh = to_host(lazy.evaluate(indices))
    written = store.values[picks]
    common = np.result_type(fresh.dtype, written.dtype, np.float64)
    differ = np.flatnonzero(fresh.astype(common) != written.astype(common))
    if differ.size:
        at = differ[0]
        raise CheckpointMismatchError(
            f"checkpoint={store.path!r} was not written from this tensor's data: at "
            f"{tuple(indices[at].tolist())} it stored {written[at].item()!r}, the tensor holds "
            f"{fresh[at].item()!r}. Use another checkpoint path for another volume.")


def restored_entries(tensor):
    """Entries read back so far by the :class:`CheckpointedTensor` that ``tensor`` reads
    through (``tensor`` itself or a view of it, as a run's cache is); 0 without one."""
    found = (view for view in views_of(tensor) if isinstance(view, CheckpointedTensor))
    return getattr(next(found, None), "n_restored", 0)


class CheckpointedTensor(LazyTensor):
    """``lazy`` whose entries are first looked up in a :class:`CheckpointStore`.

    Entries found there are read back instead of evaluated (:attr:`n_restored`); the
    others are evaluated by ``lazy`` and appended to the store, one frame per batch,
    before they are returned.
    """

    passes_batches_through = True  # the misses go to ``lazy`` as asked (see evaluating_tensor)

    def __init__(self, lazy, store):
        super().__init__(lazy.shape)
        self.lazy, self.store = lazy, store
        self.n_restored = 0
        self._scheme = KeyScheme(self.shape)
        keys = self._scheme.keys(store.indices)
        order = np.argsort(keys, kind="stable")
        self._keys, self._order = keys[order], order

    def evaluate_checked(self, indices):
        found, stored = self._find(indices)
        if not found.any():
            return self._evaluate_and_store(indices)
        values = np.empty(indices.shape[0], dtype=self.store.values.dtype)
        values[found] = self.store.values[stored[found]]
        missing = np.flatnonzero(~found)
        if missing.size:
            fresh = to_host(self._evaluate_and_store(np.ascontiguousarray(indices[missing])))
            values = values.astype(np.promote_types(values.dtype, fresh.dtype))
            values[missing] = fresh
        # Counted once the batch is whole: the cache drops a batch whose misses failed
        # (max_time, an error), and n_evals with it; counted before, a resumed run that
        # max_time stopped there reported more entries restored than evaluated.
        self.n_restored += int(found.sum())
        return check_values(values, indices, "checkpoint")  # as a backend tensor

    def _evaluate_and_store(self, indices):
        evaluate = getattr(self.lazy, "evaluate_checked", self.lazy.evaluate)
        try:
            values = evaluate(indices)
        except BaseException as error:
            # Left on the error: the cache above counts them in n_evals, then drops them.
            self._store_finished(getattr(error, FINISHED, None))
            late = take_late(error)
            if late is not None and late.source is evaluating_tensor(self.lazy):
                self.store.keep_late(late)
            raise
        self.store.append(indices, values)
        return values

    def _store_finished(self, finished):
        """Keep the finished chunks of a batch that failed (an executor's), so that a rerun
        does not evaluate them again; only those of the tensor this store stands over (a
        view in between, such as quantics, asks for other multi-indices: it hands them up
        in its own, see ``finished_seen_through``), and only
        values that pass the checks every read passes, chunk by chunk (one chunk with a
        NaN lost its batch's other finished chunks too)."""
        if finished is None or finished.source is not evaluating_tensor(self.lazy):
            return
        ends = np.cumsum([len(part) for part in finished.values])
        kept_indices, kept_values = [], []
        for part, stop in zip(finished.values, ends, strict=True):
            values = checked_part(part, len(part))
            if values is None:  # NaN, strings, mixed kinds: not kept
                continue
            kept_indices.append(finished.indices[stop - len(part) : stop])
            kept_values.append(values)
        if kept_values:
            self.store.append(np.concatenate(kept_indices), np.concatenate(kept_values))

    def _find(self, indices):
        """Which multi-indices the store holds, and where (positions in its arrays)."""
        if not self._keys.size:
            return np.zeros(indices.shape[0], dtype=bool), None
        keys = self._scheme.keys(indices)
        where = np.minimum(np.searchsorted(self._keys, keys), self._keys.size - 1)
        stored = self._order[where]
        # Compare the multi-indices themselves: hashed keys may collide, and a stored
        # entry is only served for its own multi-index.
        found = (self._keys[where] == keys) & (self.store.indices[stored] == indices).all(axis=1)
        return found, stored

