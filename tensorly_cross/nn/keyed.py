"""Keyed reuse across passes: keys compared by value, and the fingerprint that tells whether
the volume under a key is still the one whose patches were kept."""

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
    """What tells two volumes apart cheaply.

    A tensor: its shape, dtype, device, in-place version and two weighted sums of a strided
    subsample (at most 16 per axis). A lazy volume: its type, shape, path and modification
    time (its identity when it has no path). Patches cut from one volume go to a later pass
    under the same key only if the fingerprints agree: an augmented or another volume
    under that key is cut afresh.
    """
    if isinstance(volume, torch.Tensor):
        steps = [max(1, -(-n // 16)) for n in volume.shape]
        sample = volume.detach()[tuple(slice(None, None, step) for step in steps)]
        sample = sample.to(torch.float64).reshape(-1)
        weights = torch.arange(1, sample.numel() + 1, dtype=torch.float64,
                               device=sample.device)
        return (tuple(volume.shape), str(volume.dtype), str(volume.device), volume._version,
                float(sample.sum()), float((sample * weights).sum()))
    path = getattr(volume, "source_path", None) or getattr(volume, "path", None)
    if path is None:
        return type(volume).__name__, tuple(volume.shape), id(volume)
    path = os.fspath(path)
    try:  # a file rewritten between passes is another volume
        modified = os.stat(path).st_mtime_ns
    except OSError:
        modified = None
    return type(volume).__name__, tuple(volume.shape), path, modified
