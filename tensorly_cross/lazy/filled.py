"""NaN voxels read as a given value: the background of many NIfTI maps is NaN.

A statistical map or a masked scan often holds NaN outside the brain. Every reader refuses
NaN (a :class:`~tensorly_cross.NonFiniteValueError` naming the voxel), so such a volume
could not be compressed at all; ``open_volume(path, fill_nan=0.0)`` reads its NaN voxels
as 0 instead, on every path (the cross's gathers, the streaming TT-SVD's blocks, dask
workers). Infinities still raise: they are not a background.
"""

import numpy as np

from .sources import ChunkSource


def fill_nan(values, value):
    """``values`` (a floating NumPy array) with its NaN entries replaced by ``value``, in
    place; ``value`` None leaves them."""
    if value is not None:
        values[np.isnan(values)] = value
    return values


class FilledSource(ChunkSource):
    """Another source whose NaN entries read as ``value``.

    Parameters
    ----------
    source : ChunkSource
        The source read.
    value : float
        What its NaN entries read as.
    """

    def __init__(self, source, value):
        self.base, self.value = source, float(value)
        super().__init__(source.shape, _holding(source.dtype, self.value), source.chunks,
                         source.name, stored_dtype=source.stored_dtype)
        self.promoted = self.dtype != source.dtype

    def stored_index(self, index):
        return self.base.stored_index(index)

    def _read(self, slices):
        block = self.base._read(slices)
        if isinstance(block, np.ma.MaskedArray):  # refused by read(): asarray drops the mask
            return block
        block = np.asarray(block)
        # Integers and bools hold no NaN; a block without NaN is returned as read (no copy,
        # and float32 stays float32 in the caches); a copy is filled, never the source.
        if block.dtype.kind != "f":
            return block
        if self.promoted:
            return fill_nan(block.astype(np.float64), self.value)
        if not np.isnan(block).any():
            return block
        return fill_nan(np.array(block), self.value)


def _holding(dtype, value):
    """``dtype``, or float64 where a floating ``dtype`` cannot hold ``value`` exactly: a
    float16 volume filled with 1e5 read inf (then refused as a non-finite voxel), one
    filled with 0.1 read 0.0999755859375, while the ``.npy`` gathers (in float64) read
    the value itself."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return dtype
    with np.errstate(over="ignore", under="ignore"):
        exact = float(dtype.type(value)) == value
    return dtype if exact else np.dtype(np.float64)


def with_fill_nan(volume, value):
    """``volume`` (an :class:`NpyTensor` or a :class:`DaskTensor`, as ``open_volume``
    makes them) reading its NaN entries as ``value``; ``volume.fill_nan`` records it."""
    if hasattr(volume, "source"):  # a DaskTensor: its source, which workers read too
        volume.source = FilledSource(volume.source, value)
    volume.fill_nan = value  # an NpyTensor fills the pages it gathers
    return volume
