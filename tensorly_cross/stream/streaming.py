"""streaming_tt_svd: the TT of a whole stored volume, two passes, bounded memory."""

import math
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from tensorly.tt_tensor import TTTensor

from .._narrowing import backend_cores, narrowing_change, warn_if_narrowing_missed
from .._validation import check_bool, check_float, check_int, check_random_state
from ..cross.ranks import expand_rank
from ..errors import ToleranceNotMetWarning
from ..lazy.base import views_of
from ..lazy.dask import check_client
from .blocks import BLOCK_BYTES, map_reduce, plan_blocks, volume_source
from .core_tt import tt_svd
from .sketch import (
    core_fold,
    core_start,
    range_bases,
    sketch_factors,
    sketch_fold,
    sketch_start,
)

# The projected core holds at most this many float64 entries (128 MiB): it bounds the
# sketch width of every compressed mode.
MAX_CORE_ENTRIES = 2**24


@dataclass
class StreamInfo:
    """What a streaming TT-SVD did (each parameter is an attribute of the same name).

    Parameters
    ----------
    error : float
        The relative Frobenius error of the TT, exact (not sampled): the projection's
        ``||A||^2 - ||W||^2`` plus the energy the TT-SVD of the core dropped. That
        difference of squares resolves errors down to about ``1e-7`` (the square root of
        round-off): below, an exact low-rank volume sketched in two passes can report
        ``1e-8``, so a ``tol`` under ``1e-6`` may be reported missed (and keep more rank
        than needed) on a TT that meets it; give ``rank=`` instead. A volume read once (no
        mode sketched) is its own core: no projection. Where the threshold of each bond,
        ``tol / sqrt(d - 1)`` of the norm, is at least ``1e-6`` (``tol`` from ``1.4e-6``
        in 3-D, ``1.7e-6`` in 4-D), its short, wide unfoldings are decomposed through
        their Gram matrices, whose eigenvalues resolve the error to about ``1e-8`` of the
        norm as well: an exact rank-3 volume, reconstructed to ``1e-15``, reports about
        ``3e-8`` (an over-estimate; the ranks are not affected). Below (``tol=1e-6``
        itself, ``tol=0``) an SVD: no such floor.
    projection_error : float
        The part due to the sketched bases alone.
    widths : tuple of int
        Columns kept per mode by the sketches (``n_k``: not compressed).
    n_passes, n_blocks : int
        Full reads of the volume, and blocks per read.
    bytes_read : int
        Bytes read over all passes (in the volume's stored dtype).
    ranks : tuple of int
        The TT ranks.
    seconds : float
        Wall time of the whole call.
    limited_by : str or None
        What stopped a tolerance-driven run short of ``tol``: ``"max_rank"`` or
        ``"max_width"``; None when it met ``tol``.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import streaming_tt_svd
    >>> _, info = streaming_tt_svd(np.ones((6, 5, 4)), tol=1e-6, return_info=True)
    >>> info.ranks, info.n_passes, info.widths
    ((1, 1, 1, 1), 1, (6, 5, 4))
    """

    error: float = float("nan")
    projection_error: float = float("nan")
    widths: tuple = ()
    n_passes: int = 0
    n_blocks: int = 0
    bytes_read: int = 0
    ranks: tuple = field(default_factory=tuple)
    seconds: float = 0.0
    limited_by: str | None = None


def streaming_tt_svd(volume, tol=None, rank=None, max_rank=None, max_width=None, client=None,
                     random_state=None, block_bytes=BLOCK_BYTES, return_info=False):
    """TT of a stored volume from two full reads, chunk by chunk, in bounded memory.

    Pass 1 sketches the range of every mode's unfolding (a random test matrix with
    Khatri-Rao structure, never formed); pass 2 projects the volume on those ranges
    (a Tucker core that fits in memory); the TT-SVD of the core then truncates to ``tol``
    or ``rank``, and the bases are multiplied back in. The error is exact: both the
    projection's and the truncation's are known without sampling. Modes no larger than
    their sketch width are not compressed (a small volume: pass 1 is skipped and the
    result is the TT-SVD of the volume itself).

    Each block is scaled by a power of two before it enters any sum (of squares, of
    products), so the result is scale-invariant: the volume times ``s`` gives ``s`` times the
    TT (the same ranks and error) for any ``s`` float64 holds, from about ``1e-300`` to
    ``1e300``.

    Parameters
    ----------
    volume : str, path, lazy volume, zarr/h5py/dask array or NumPy array
        A path is opened with :func:`tensorly_cross.open_volume` (``.npy`` is read in slabs).
    tol : float, optional
        Target relative Frobenius error, in ``[0, 1)`` (default 1e-3 when ``rank`` is
        None).
    rank : int or list of int, optional
        Fixed TT rank instead of a tolerance.
    max_rank : int, optional
        Cap on every rank of a tolerance-driven run (a run it stops short of ``tol`` warns,
        :class:`~tensorly_cross.ToleranceNotMetWarning`, and reports
        ``limited_by="max_rank"``).
    max_width : int, optional
        Sketch width of the first and last modes (default: the mode's size, or twice
        ``rank`` plus 10 when a rank is given for a volume of more than ``2**24``
        entries: cheaper, but on noisy data up to about 1.35x TT-SVD's error, where the
        default width of a ``tol`` run matched it). Modes are narrowed further, from the outside
        in, until the projected core fits in ``2**24`` entries (128 MiB); inner modes stay
        whole while it fits, because a TT's inner cores need many directions of their mode.
    client : dask.distributed.Client, optional
        Read and fold blocks on this cluster's workers (the source must pickle: zarr,
        HDF5, ``.npy`` opened by path do; one that does not, such as a dask array over an
        open h5py dataset, raises ValueError before any block is read); else in local
        threads. Default: the client a volume was
        opened with (``open_volume(path, client=...)``), if any.
    random_state : None, int, numpy RandomState or Generator
        Seed of the sketches' random test matrices: an int repeats a run; a Generator or
        RandomState object is drawn from, so two calls given one object differ.
    block_bytes : int, default 32 MiB
        Largest block read at once (as float64), per thread or worker.
    return_info : bool, default False
        Also return a :class:`StreamInfo`.

    Returns
    -------
    tt : tensorly.tt_tensor.TTTensor
        The TT, in the active TensorLy backend, with float64 cores whatever the stored
        dtype (it computes in float64, where its exact error holds;
        :func:`~tensorly_cross.tt_cross` returns a float32 volume's TT in float32, and
        ``tensorly-cross compress`` stores the input's floating dtype unless ``--dtype``
        says otherwise).
    info : StreamInfo
        Only when ``return_info`` is True.

    Raises
    ------
    ValueError
        For an argument out of range (``tol`` outside ``[0, 1)``, a rank below 1, ...), a
        volume with no mode or an empty one, a client without workers, or a volume that
        cannot be sent to the client's workers (it does not pickle).
    TypeError
        For an argument of the wrong type, or a volume that is not stored data (a masked
        array included: its masked entries would be read) or not real (a complex volume:
        :func:`~tensorly_cross.tt_cross` crosses a complex array).
    MemoryError
        Before any read, if the sketches (with the working copies of their QR) and the
        projected core would not fit in this machine's memory (lower ``max_width``).
    NonFiniteValueError
        If the volume holds NaN or inf (the message names the first multi-index found).
    ChunkReadError
        If a chunk cannot be read, or a ``.npy`` or HDF5 file changed after it was opened.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import streaming_tt_svd
    >>> grid = np.linspace(0, 1, 30)
    >>> volume = np.add.outer(np.add.outer(grid, grid), grid)
    >>> tt, info = streaming_tt_svd(volume, tol=1e-8, return_info=True)
    >>> tt.rank, info.error < 1e-8
    ((1, 2, 2, 1), True)
    """
    start = time.perf_counter()
    block_bytes = check_int(block_bytes, "block_bytes", minimum=8)
    # Every argument is checked before the first of two full reads, not after them.
    caps = None if max_rank is None else check_int(max_rank, "max_rank", minimum=1)
    return_info = check_bool(return_info, "return_info")
    # A volume opened on a cluster is read there, as its point reads are.
    given = client is not None
    client = check_client(client if given else _opened_with(volume))
    source = volume_source(volume, block_bytes)
    if client is not None:
        _check_sendable(source, given)
    shape = tuple(source.shape)
    if not shape:
        raise ValueError("volume must have at least one mode; got a 0-D array (a scalar).")
    tol, ranks = _check_target(tol, rank, shape)
    widths = _widths(shape, ranks, max_width)
    _check_memory(shape, widths)
    rng = check_random_state(random_state)
    blocks = plan_blocks(source, block_bytes)
    info = StreamInfo(widths=widths, n_blocks=len(blocks))
    bases = _sketch_pass(source, blocks, widths, rng, client, info)
    projected = map_reduce(source, blocks, core_fold(bases), core_start(shape, bases), client)
    _count_pass(info, source)
    core = projected["core"]
    kept = float(np.vdot(core, core))
    # Nothing projected, the core is the volume and loses nothing: its blocks' sums of
    # squares differ from its own by round-off, which read as a projection error of 1e-8.
    projected_any = any(basis is not None for basis in bases)
    total = float(projected["squares"][0]) if projected_any else kept
    lost = max(total - kept, 0.0)
    budget = 0.0 if tol is None else max(tol**2 * total - lost, 0.0)
    threshold = math.sqrt(budget / _bonds_that_truncate(core.shape))
    cores, dropped, round_off = tt_svd(core, threshold, ranks, caps)
    cores = [_expand(core_k, basis) for core_k, basis in zip(cores, bases, strict=True)]
    cores = _unscale(cores, projected.exponent)
    info.projection_error = math.sqrt(lost / total) if total > 0 else 0.0
    info.error = math.sqrt((lost + dropped) / total) if total > 0 else 0.0
    info.ranks = (1,) + tuple(c.shape[2] for c in cores)
    info.seconds = time.perf_counter() - start
    if ranks is not None and tuple(info.ranks) != tuple(ranks):
        warnings.warn(f"rank {tuple(ranks)} was asked for; the TT has ranks {info.ranks} "
                      f"(lowered by {_lowered_by(ranks, info.ranks, widths, caps)}).",
                      stacklevel=2)
    # Round-off is never kept as rank, so tol=0 is met at the data's precision.
    beyond_round_off = math.sqrt(max(lost + dropped - round_off, 0.0) / total) if total else 0.0
    if tol is not None and beyond_round_off > tol:
        info.limited_by = "max_rank" if info.projection_error <= tol else "max_width"
        remedy = (f"raise max_rank (now {caps})" if info.limited_by == "max_rank" else
                  _width_remedy(info.projection_error, widths, max_width))
        # The crosses' class for a miss: one filter turns every missed tol into an error.
        message = f"relative error {info.error:.3g} > tol={tol}: {remedy} to meet it."
        warnings.warn(ToleranceNotMetWarning(message, info.error, tol), stacklevel=2)
    returned = backend_cores(cores)
    if tol is not None and beyond_round_off <= tol:  # met in float64, where it computes
        warn_if_narrowing_missed(info.error, tol, narrowing_change(cores, returned),
                                 "streaming_tt_svd")
    tt = TTTensor(returned)
    return (tt, info) if return_info else tt


def _lowered_by(ranks, got, widths, caps):
    """What lowered a fixed rank: ``max_rank``, the sketch widths (a bond's rank is at most
    the product of the widths on either side of it), or else the volume itself, whose
    unfoldings have fewer nonzero singular values than asked for."""
    causes = []
    if caps is not None and max(ranks) > caps:
        causes.append(f"max_rank={caps}")
    bounds = [min(math.prod(widths[:k]), math.prod(widths[k:])) for k in range(1, len(widths))]
    if any(bound < rank for bound, rank in zip(bounds, ranks[1:-1], strict=True)):
        causes.append(f"the sketch widths {tuple(widths)}")
    limits = [min(rank, bound, caps or rank) for rank, bound in zip(ranks[1:-1], bounds,
                                                                      strict=True)]
    if any(have < limit for have, limit in zip(got[1:-1], limits, strict=True)):
        causes.append("the volume's own ranks (its unfoldings have fewer nonzero singular "
                      "values)")
    return " and ".join(causes) or f"the sketch widths {tuple(widths)}"


def _width_remedy(projection_error, widths, max_width):
    """What to change when the sketched bases alone miss ``tol``: ``max_width`` where it
    narrowed them, else the budget of the projected core (which nothing raises)."""
    if max_width is not None:
        return (f"the sketched bases alone leave {projection_error:.3g}: raise max_width "
                f"(now {max_width})")
    return (f"the sketched bases alone leave {projection_error:.3g}: the projected core's "
            f"budget of {MAX_CORE_ENTRIES} entries narrowed the sketches to widths "
            f"{tuple(widths)}; a volume of fewer, larger modes (or tensorly's in-memory "
            "tensor_train) is needed")


def _check_target(tol, rank, shape):
    if tol is not None and rank is not None:
        raise ValueError("give tol or rank, not both.")
    if rank is not None:
        return None, expand_rank(rank, shape)
    tol = 1e-3 if tol is None else check_float(tol, "tol", minimum=0.0)
    if tol >= 1.0:  # a relative error of 1 is the zero tensor's: no tolerance at all
        raise ValueError(f"tol must be in [0, 1) (a relative error), got {tol}.")
    return tol, None


def _check_sendable(source, given):
    """Refuse, before any block is submitted, a source the workers cannot be sent.

    A dask array over an open h5py dataset (``da.from_array(f["vol"]).T``), or any source
    holding an object that does not pickle, failed in distributed's serializer with an
    unreadable ``TypeError`` and several chained tracebacks. Pickled here once, its large
    buffers out of band (pickle protocol 5): not copied, so an in-memory array costs no
    second copy.

    Parameters
    ----------
    source : object
        What the workers would read blocks from.
    given : bool
        Whether ``client`` was passed, or is the one the volume was opened with.

    Raises
    ------
    ValueError
        If ``source`` cannot be pickled, naming ``client`` and what to do instead.
    """
    import cloudpickle

    try:
        cloudpickle.dumps(source, protocol=5, buffer_callback=lambda buffer: False)
    except Exception as error:  # pickle raises TypeError, PicklingError, and more
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        advice = ("pass client=None to read it in local threads" if given else
                  "open it without client (open_volume(array)) to read it in local threads")
        raise ValueError(f"client: the volume cannot be sent to the workers ({reason}); "
                         f"{advice}, or open the file by its path (open_volume('file.h5', "
                         "client=...)) so that the workers open it themselves.") from None


def _opened_with(volume):
    """The client of an opened volume, through views of it (transposed); else None."""
    clients = (getattr(view, "client", None) for view in views_of(volume))
    return next((client for client in clients if client is not None), None)


def _widths(shape, ranks, max_width):
    """Sketch width per mode (``n_k``: not compressed).

    The first and the last modes are narrowed to ``max_width`` when given (else to
    ``2 max(rank) + 10`` for a fixed rank on a volume over the core's budget). A TT's inner
    cores need ``r_k r_{k+1}`` directions of their mode, which a narrow Tucker basis would
    lose, so the core's entry budget is then met by narrowing modes from the outside in,
    each pair as little as the budget allows.
    """
    d = len(shape)
    widths = list(shape)
    cap = None
    if max_width is not None:
        cap = check_int(max_width, "max_width", minimum=1)
    if d == 1:  # a vector is its own one-core TT: nothing to sketch
        return tuple(widths)
    elif cap is None and ranks is not None and math.prod(shape) > MAX_CORE_ENTRIES:
        # The default only: a max_width the user gave is kept. A volume within the
        # budget is not sketched: TT-SVD.
        cap = 2 * max(ranks) + 10
    if cap is not None:
        widths[0], widths[-1] = min(widths[0], cap), min(widths[-1], cap)
    # A mode's unfolding has rank at most the product of the other sizes: a wider sketch
    # adds nothing but memory ((2, 2**26) would otherwise sketch 2**26 x 4096 numbers).
    # Only over the budget: within it the core is taken whole, in one pass (a tall
    # (8, 20000) volume was read twice to sketch a mode it could hold).
    if math.prod(widths) > MAX_CORE_ENTRIES:
        total = math.prod(shape)
        widths = [min(width, total // size) for width, size in zip(widths, shape, strict=True)]
    for depth in range((d + 1) // 2):
        if math.prod(widths) <= MAX_CORE_ENTRIES:
            break
        pair = sorted({depth, d - 1 - depth})
        others = math.prod(w for k, w in enumerate(widths) if k not in pair)
        room = max(1, int((MAX_CORE_ENTRIES / others) ** (1.0 / len(pair))))
        for k in pair:
            widths[k] = min(widths[k], room)
    return tuple(widths)


# NumPy's QR of an (n, l) sketch holds this many more (n, l) arrays at its peak, its
# result included (measured: 1 GiB for a 2**22 x 8 sketch of 256 MiB).
QR_COPIES = 4


def _check_memory(shape, widths):
    """Raise MemoryError, before any read, if the sketches, their random test matrices,
    their QR and the projected core need more than this machine's memory."""
    compressed = [k for k, (w, n) in enumerate(zip(widths, shape, strict=True)) if w < n]
    sketches = [widths[k] * shape[k] for k in compressed]
    # The bases are kept from one QR to the next; the QR's working copies are freed.
    entries = (math.prod(widths) + sum(widths[k] * sum(shape) for k in compressed)
               + sum(sketches) + (QR_COPIES - 1) * max(sketches, default=0))
    physical = _physical_memory()
    if physical is not None and 8 * entries > physical:
        raise MemoryError(
            f"a streaming TT-SVD of a volume of shape {shape} with sketch widths "
            f"{tuple(widths)} needs about {8 * entries / 2**30:.3g} GiB for its sketches, "
            f"their QR and the projected core; this machine has {physical / 2**30:.3g} GiB. "
            "Lower max_width (or give a smaller rank), or use tt_cross."
        )


def _physical_memory():
    """Bytes of physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _sketch_pass(source, blocks, widths, rng, client, info):
    shape = source.shape
    if all(w >= n for w, n in zip(widths, shape, strict=True)):
        return [None] * len(shape)
    factors = sketch_factors(shape, widths, rng)
    partial = map_reduce(source, blocks, sketch_fold(factors), sketch_start(shape, widths,
                                                                             factors), client)
    _count_pass(info, source)
    return range_bases(partial, shape, widths)


def _bonds_that_truncate(shape):
    """How many bonds share the truncation budget (at least 1): those whose unfolding has
    more than one row and one column. A bond beside modes of size 1 only has rank 1 and
    drops nothing: counted, it took a share (a ``(X, Y, Z, 1)`` NIfTI, common for maps and
    masks, was cut at ``tol / sqrt(3)`` per bond instead of ``tol / sqrt(2)``: error 0.077
    for ``tol=0.1`` on MNI152, with 34% more parameters than the volume in 3-D)."""
    total = math.prod(shape)
    lefts = [math.prod(shape[:k]) for k in range(1, len(shape))]
    return max(sum(1 for left in lefts if 1 < left < total), 1)


def _count_pass(info, source):
    info.n_passes += 1
    info.bytes_read += source.stored_itemsize * math.prod(source.shape)


def _unscale(cores, exponent):
    """The TT times ``2**exponent``, undoing the blocks' scaling (exactly: a power of two).

    The last core takes it all, the others being orthonormal. Where that overflows (a
    volume whose norm is near the float64 limit) or rounds the core (values near the
    subnormal range), it is spread evenly over all cores instead.
    """
    if exponent is None:  # an all-zero volume: the TT is zero, at any scale
        return cores
    with np.errstate(over="ignore", under="ignore"):
        last = np.ldexp(cores[-1], exponent)
        if _exact(last, cores[-1], exponent):
            return cores[:-1] + [last]
        share, rest = divmod(exponent, len(cores))
        cores = [np.ldexp(core, share + (rest if k == len(cores) - 1 else 0))
                 for k, core in enumerate(cores)]
    if not all(np.isfinite(core).all() for core in cores):
        raise OverflowError(f"the volume's TT has entries beyond the float64 range "
                            f"(largest value about 2**{exponent}): scale the volume down.")
    return cores


def _exact(scaled, core, exponent):
    """Whether ``scaled = core * 2**exponent`` is finite and lost at most a unit roundoff
    of ``core``'s norm (the TT's relative error, its other cores being orthonormal)."""
    if not np.isfinite(scaled).all():
        return False
    lost = np.linalg.norm(np.ldexp(scaled, -exponent) - core)
    return lost <= 2.0**-53 * np.linalg.norm(core)


def _expand(core, basis):
    """A core of the projected modes, multiplied back by its mode's basis."""
    if basis is None:
        return core
    return np.einsum("anb,in->aib", core, basis)
