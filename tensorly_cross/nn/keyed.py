"""Keyed reuse across passes: keys compared by value, and the fingerprint that tells whether
the volume under a key is still the one whose patches were kept."""

import hashlib
import mmap
import os

import numpy as np
import torch


def key_value(key):
    """A key compared by value: a one-element tensor or NumPy scalar (a DataLoader's
    indices) becomes its Python number; a tensor hashes by identity and would never match."""
    if isinstance(key, torch.Tensor | np.ndarray | np.generic):
        size = key.numel() if isinstance(key, torch.Tensor) else np.size(key)
        if size != 1:
            raise TypeError(f"each key must be one value (an int, a str, ...), got an array "
                            f"of shape {tuple(key.shape)}.")
        return key.item()
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"each key must be hashable (an int, a str, ...), got "
                        f"{type(key).__name__}.") from None
    return key


def volume_fingerprint(volume):
    """What tells two volumes apart, so that patches kept under a key go to a later pass
    only while the volume under that key is still the one they were cut from.

    * An in-memory volume (a torch tensor, a NumPy array): its shape, dtype and a SHA-256
      of every voxel's bytes. Any change of any voxel, in place (``a *= 3``, a write
      through a NumPy view of a tensor) or in a new array (an augmentation), gives another
      fingerprint. It reads the whole volume once per keyed pass (a CUDA tensor is copied
      to the host for it): about 7 ms for 128^3 float32 voxels, small next to the
      encoder's step.
    * A volume on disk (a lazy tensor or read-only ``np.memmap`` with a ``source_path``,
      ``path`` or ``filename``, as :class:`VolumeDataset` and ``open_volume`` give for
      ``.npy``): its type, shape, path, and the file's size and modification time
      (``st_mtime_ns``); a memmap also by its dtype and its window on the file (byte
      offset and strides), so that a crop or flip of one memmap is another volume. No
      voxel is read. A file rewritten between passes is another volume; a zarr folder's
      time changes only when chunk files are added or removed, not when one is rewritten.
    * A writable ``np.memmap`` (opened with mode ``"c"``, ``"r+"`` or ``"w+"``): as a
      volume in memory, by content, since its memory changes without the file (``"c"``
      never writes back, ``"r+"`` pages already dirty leave the modification time alone).
    * Any other volume (a lazy tensor without a path): its identity. The volume is kept
      alive by the fingerprint, so another object cannot reuse its ``id``; changing its
      content in place under the same key is not detected: pass a new object, or call
      ``clear_cache()``.

    Parameters
    ----------
    volume : torch.Tensor, numpy array or LazyTensor
        The volume as passed with its key.

    Returns
    -------
    fingerprint : tuple
        Equal for two calls exactly when the patches of the first may serve the second.
    """
    path = file_of(volume)
    if path is not None and isinstance(volume, np.memmap):
        window = _memmap_window(volume)
        if window is not None:
            return (type(volume).__name__, tuple(volume.shape), path, _file_stamp(path),
                    str(volume.dtype), window)
    elif path is not None:
        return type(volume).__name__, tuple(volume.shape), path, _file_stamp(path)
    if isinstance(volume, torch.Tensor | np.ndarray):
        return (type(volume).__name__, tuple(volume.shape), str(volume.dtype),
                content_digest(volume))
    return type(volume).__name__, tuple(volume.shape), _SameObject(volume)


def content_digest(*tensors):
    """SHA-256 of the bytes of tensors or arrays, in order (a contiguous host copy of each).

    Parameters
    ----------
    *tensors : torch.Tensor or numpy array
        Read whole; their dtypes are part of the bytes' meaning, not of the digest.

    Returns
    -------
    digest : bytes
        32 bytes; any changed element changes it.
    """
    hasher = hashlib.sha256()
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor):
            # A uint8 view reads the bytes of any dtype (bfloat16 has no NumPy twin).
            tensor = tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
        hasher.update(memoryview(np.ascontiguousarray(tensor)).cast("B"))
    return hasher.digest()


def file_of(volume):
    """The file a volume reads from, or None for a volume in memory (or without a path)."""
    if isinstance(volume, torch.Tensor) or (isinstance(volume, np.ndarray)
                                            and not isinstance(volume, np.memmap)):
        return None
    path = (getattr(volume, "source_path", None) or getattr(volume, "path", None)
            or getattr(volume, "filename", None))
    return None if path is None else os.fspath(path)


def _memmap_window(volume):
    """``(byte offset in the file, strides)`` of a read-only memmap's view; None for a
    writable one (its memory may differ from the file) or a view whose mapping is not found.

    Every view of one memmap (a crop, a flip) shares its ``filename`` and, often, its
    shape; ``volume.offset`` is the offset of the memmap first opened, copied unchanged to
    its views, so the view's own offset comes from its data pointer."""
    if volume.flags.writeable or getattr(volume, "mode", "r") != "r":
        return None
    root = volume
    while isinstance(root, np.ndarray) and not isinstance(root.base, mmap.mmap):
        root = root.base
    if not isinstance(root, np.memmap):
        return None
    start = volume.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return root.offset + start, volume.strides


def _file_stamp(path):
    """``(size, st_mtime_ns)`` of the file (an HDF5 ``"file.h5:/dataset"`` path: of the
    file); None where it cannot be read."""
    from ..io import volume_file

    # Split as open_volume splits it: the last ':' of 'v.h5:/a:b' named no file (None
    # before and after the file was rewritten, whose old patches were then served).
    for candidate in (path, volume_file(path)):
        try:
            status = os.stat(candidate)
        except OSError:
            continue
        return status.st_size, status.st_mtime_ns
    return None


class _SameObject:
    """Equal only to a wrapper of the very same object, which it keeps alive (so that a
    new object cannot take over its ``id``)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _SameObject) and other.value is self.value

    def __hash__(self):
        return id(self.value)
