"""Which path compresses a stored volume for less: a cross, or reading everything.

The cost of a stored volume is bytes off the storage, not entries: zarr and HDF5 decode
whole chunks, a ``.npy`` file is read by 4 KiB pages, and a gzip NIfTI has to be
decompressed from its start. A cross reads fibers (lines of voxels along one mode): a fiber
costs the chunks or pages it crosses, so a few thousand fibers (a rank-30 least-squares
cross reads about ``sweeps * (1.5 r)^2`` of them along its inner mode) can touch every chunk of
a chunked store. :func:`choose_path` estimates the share of the storage a cross would read
and takes the streaming TT-SVD (two full reads, exact error) when that share is large:
then reading everything costs little more and is never wrong.
"""

import math
import os
from dataclasses import dataclass

import numpy as np

from ._validation import check_float, check_int
from .lazy.base import views_of
from .lazy.dispatch import refuse_nibabel_image
from .lazy.sources import refuse_closed_hdf5
from .options import LSQ_VAL_SIZE

# A cross is chosen when it is expected to read less than this share of the storage.
CROSS_SHARE = 0.25
# Sweeps of a least-squares cross that the estimate assumes.
SWEEPS = 4
# The outer sets of the least-squares cross are this many times larger (cross/lsq.py).
OUTER_FACTOR = 4
PAGE = 4096


@dataclass
class PathChoice:
    """The chosen path and why (each parameter is an attribute of the same name).

    Parameters
    ----------
    method : {"stream", "lsq"}
        ``"stream"``: :func:`tensorly_cross.streaming_tt_svd`; ``"lsq"``: the
        least-squares cross.
    reason : str
        Why, in words (the CLI prints it).
    cross_share : float
        Estimated share of the storage a least-squares cross would read (nan: unknown).

    Examples
    --------
    >>> from tensorly_cross import PathChoice
    >>> PathChoice("stream", "a gzip file is decompressed whole whatever is read").method
    'stream'
    """

    method: str
    reason: str
    cross_share: float = float("nan")


def choose_path(volume, path=None, rank=None, max_rank=64, oversample=1.5):
    """Choose between a least-squares cross and the streaming TT-SVD of ``volume``.

    Parameters
    ----------
    volume : LazyTensor, array, str or os.PathLike
        The opened volume (:func:`tensorly_cross.open_volume`), possibly transposed, an
        array (a zarr array or h5py dataset is measured by its chunks, as opened; NumPy
        data is in memory), or the path of a volume file (then opened, and ``path``
        defaults to it).
    path : str or os.PathLike, optional
        Its file: a gzip NIfTI is decompressed whole by any reader.
    rank : int, optional
        The fixed rank; otherwise ``max_rank`` bounds the estimate.
    max_rank : int, default 64
        The rank assumed for a rank-adaptive cross (the worst case it could reach).
    oversample : float, default 1.5
        The oversampling of the least-squares cross's index sets.

    Returns
    -------
    PathChoice
        The method, the reason, and the estimated share of the storage a cross would read.

    Raises
    ------
    TypeError
        If ``volume`` has no shape or is a nibabel image (pass its file), ``path`` is not
        a path, or ``rank``, ``max_rank`` or ``oversample`` is not a number of the right
        kind.
    ValueError
        If ``volume`` has no mode or an empty one, or a number is out of range, or for a
        dask array whose chunks cannot be read (unknown sizes, or too many to count).

    Examples
    --------
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> tlc.choose_path(tlc.lazy_tensor(np.ones((8, 8, 8)))).method  # in memory
    'stream'
    >>> f = lambda idx: np.exp(-idx.sum(axis=1) / 8.0)
    >>> tlc.choose_path(tlc.FunctionTensor(f, (8, 8, 8))).method  # computed on demand
    'lsq'
    """
    if isinstance(volume, str | bytes | os.PathLike):
        from .io import open_volume

        path = volume if path is None else path
        volume = open_volume(volume)
    refuse_closed_hdf5(volume, "volume")
    refuse_nibabel_image(volume, "volume")
    if not hasattr(volume, "shape"):
        raise TypeError(f"volume must be a lazy tensor (open_volume, lazy_tensor), an array, "
                        f"or a path; got {type(volume).__name__}.")
    shape = tuple(volume.shape)
    if not shape or 0 in shape:
        # Nothing to compress: an empty zarr array was a "lsq" choice "at no storage cost".
        raise ValueError(f"volume has shape {shape}; a volume has at least one mode and "
                         "every mode size >= 1.")
    if path is not None and not isinstance(path, str | bytes | os.PathLike):
        raise TypeError(f"path must be a str, bytes or os.PathLike, or None; got {path!r} "
                        f"({type(path).__name__}).")
    rank = None if rank is None else check_int(rank, "rank", minimum=1)
    max_rank = check_int(max_rank, "max_rank", minimum=1)
    oversample = check_float(oversample, "oversample", minimum=1.0)
    path = path if path is not None else _file_of(volume)
    if path is not None and os.fsdecode(path).lower().endswith(".gz"):
        return PathChoice("stream", "a gzip file is decompressed whole whatever is read")
    geometry = storage_geometry(volume)
    if geometry is None and getattr(_untransposed(volume)[0], "lazy", None) is not None \
            and volume.stored:
        # A quantics view, say: its reads of the storage are not modelled, and claiming
        # they cost nothing would be false.
        return PathChoice("lsq", f"a {type(volume).__name__} of stored data: what a cross "
                          "reads of the storage is not estimated; the streaming TT-SVD "
                          "cannot read this view")
    if geometry is None and getattr(volume, "stored", True):  # NumPy data in memory
        return PathChoice("stream", "an array in memory is read whole at no storage cost: "
                          "the streaming TT-SVD's error is then exact, and it was faster "
                          "than a cross on MNI152 (0.3-0.6 s against 0.7-14 s)")
    if geometry is None:  # a function: every entry read is one evaluation
        return PathChoice("lsq", "entries are computed one by one: a cross reads few of "
                          "them, the streaming TT-SVD would compute them all")
    r = rank if rank is not None else max_rank
    share = cross_share(geometry, r, oversample)
    if share > CROSS_SHARE:
        return PathChoice("stream", f"a cross would read about {share:.0%} of the storage "
                          f"(>{CROSS_SHARE:.0%}): reading it all, at most twice, costs little more "
                          "and the error is exact", share)
    return PathChoice("lsq", f"a cross should read about {share:.0%} of the storage", share)


def _untransposed(volume):
    """The volume under its transpositions, which the stream reads as it reads the volume
    (a transposed array in memory was "a view the streaming TT-SVD cannot read"), and the
    permutation they compose: mode ``m`` of ``volume`` is mode ``axes[m]`` of the one
    returned (None where ``volume`` is not transposed)."""
    axes = None
    while getattr(volume, "axes", None) is not None and getattr(volume, "lazy", None) is not None:
        axes = volume.axes if axes is None else tuple(volume.axes[a] for a in axes)
        volume = volume.lazy
    return volume, axes


def _file_of(volume):
    """The file an opened volume reads (through views of it), or None: a gzip NIfTI
    opened first is decompressed whole all the same."""
    for view in views_of(volume):
        path = getattr(getattr(view, "source", None), "path", None) or getattr(view, "path", None)
        if isinstance(path, str | bytes | os.PathLike):
            return path
    return None


@dataclass
class _Geometry:
    shape: tuple
    unit_shape: tuple  # voxels per storage unit along each mode (chunk, or page run)


def storage_geometry(volume):
    """Storage units (chunks; pages as runs along the contiguous mode) in the volume's mode
    order, or None for data in memory."""
    # Every transposition, not the outer one only: a store transposed twice was taken for
    # data in memory ("read whole at no storage cost").
    base, axes = _untransposed(volume)
    shape = tuple(base.shape)
    source = getattr(base, "source", None)
    if source is None:
        source = _store_of(getattr(base, "array", base))
    if source is not None and getattr(source, "chunks", None) is not None:
        unit = tuple(max(chunks) for chunks in source.chunks)
    elif hasattr(base, "pages_read"):  # a .npy file read by pages
        run = max(1, PAGE // np.dtype(base.dtype).itemsize)  # a uint8 page holds 4096
        if getattr(base, "order", "C") == "F":  # pages run along the first mode
            unit = _page_block(shape[::-1], run)[::-1]
        else:
            unit = _page_block(shape, run)
    else:
        return None
    if axes is not None:
        shape = tuple(shape[a] for a in axes)
        unit = tuple(unit[a] for a in axes)
    return _Geometry(shape, unit)


def _store_of(array):
    """The chunk source of a zarr array or h5py dataset given as it is (or inside an
    ArrayTensor, or behind a dask array), else None: a cross reads such a store by whole
    chunks, as it reads the same store opened with ``open_volume``, never for free."""
    from .lazy.sources import H5Source, ZarrSource, as_chunk_source

    if not type(array).__module__.startswith(("zarr.", "h5py.", "dask.array")):
        return None  # NumPy (or another backend's) data in memory
    # A dask array of unknown chunk sizes, or of more chunks than can be counted, raises as
    # the stream and the cross do (it was "an array in memory", and streamed into the error).
    source = as_chunk_source(array)
    if isinstance(source, ZarrSource | H5Source):
        return source
    # A dask array without a store behind it is computed chunk by chunk as well.
    return source if type(array).__module__.startswith("dask.array") else None


def _page_block(shape, run):
    """The voxels a page of ``run`` C-ordered entries spans along each mode: a run of the
    last mode, and where the last mode is shorter than the run, whole rows of it over as
    many rows of the modes before (a (400, 400, 8) float64 file: 64 rows of 8 per page)."""
    unit = [1] * len(shape)
    left = run
    for mode in range(len(shape) - 1, -1, -1):
        unit[mode] = max(1, min(left, shape[mode]))
        left //= max(shape[mode], 1)
        if left < 1:
            break
    return tuple(unit)


def cross_share(geometry, rank, oversample, heldout=LSQ_VAL_SIZE):
    """Expected share of the storage units that ``SWEEPS`` sweeps of a least-squares cross
    at ``rank`` read: per sweep, ``(oversample rank)^2`` fibers along each inner mode and
    ``OUTER_FACTOR oversample rank`` along the first and last, at random positions; and its
    ``heldout`` random entries, each in a random unit (on a store of a few thousand small
    chunks they alone decode most of them: left out, a 64^3 array of 4x4x1 chunks was
    estimated at 24% and read 30%)."""
    d = len(geometry.shape)
    units = math.prod(math.ceil(n / u) for n, u in
                      zip(geometry.shape, geometry.unit_shape, strict=True))
    missed = math.exp(-heldout / max(units, 1))
    for mode in range(d):
        outer = mode in (0, d - 1)
        # In floats, which saturate at inf: a huge rank or oversample reads everything,
        # where exact ints would overflow the division in _hit_share.
        side = float(oversample) * _saturating_float(rank)
        whole = math.ceil(side) if math.isfinite(side) else side  # ceil(inf) raises
        per_sweep = OUTER_FACTOR * side if outer else float(whole) * whole
        missed *= 1.0 - _hit_share(geometry, mode, SWEEPS * per_sweep)
    return 1.0 - missed


def _saturating_float(value):
    """``float(value)``, or inf for an int beyond float64's range (``float`` raises)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _hit_share(geometry, mode, fibers):
    """Share of storage units hit by ``fibers`` random fibers along ``mode``: a fiber reads
    every unit of its column of units along that mode."""
    columns = math.prod(math.ceil(n / u) for k, (n, u) in
                        enumerate(zip(geometry.shape, geometry.unit_shape, strict=True))
                        if k != mode)
    return 1.0 - math.exp(-fibers / max(columns, 1))
