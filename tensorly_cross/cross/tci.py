"""Rank-adaptive two-site cross (TCI with partial rank-revealing LU).

At each bond ``k`` the two-site block ``A[left[k], :, :, right[k+1]]`` is unfolded to a
matrix and a prrLU picks its pivots to the tolerance: they become ``left[k+1]`` and
``right[k]``, and their number the new rank ``r_{k+1}``. Ranks grow and shrink with the
data (Fernandez et al. 2025, "TCI2"; Savostyanov & Oseledets 2011 for DMRG-cross).
"""

from .bond import BondMatrix, TransposedBondMatrix
from .global_pivots import add_global_pivots
from .init import clip_ranks
from .prrlu import prrlu

# Bonds whose two modes have at most this many index pairs are searched in full by "auto"
# (column search elsewhere): a (2r x 2r) quantics block costs 4 r^2 entries read whole.
FULL_SEARCH_PAIRS = 16


def tci_half_sweep(lazy, indices, direction, abs_tol, max_rank, rng, search="column", scale=None,
                   keep=True, max_kept_growth=None):
    """Update ``indices`` in place by one sweep.

    Returns the largest modulus read, and the fibers ``A[left[k], :, right[k]]`` of the
    updated sets, shaped ``(r_k, n_k, r_{k+1})``: the sweep has read each of them whole (its
    pivots' columns and rows), so the assembly needs no second read.

    Parameters
    ----------
    abs_tol : callable
        ``abs_tol(block_max) -> float``: the pivot cut of a bond given the largest modulus
        read in its block so far. Relative to the block, not to the largest entry seen
        anywhere: a random TT at d=80 spans 13 orders of magnitude along its modes, and a
        cut at ``tol`` times its largest entry truncated the middle bonds (a sweep with
        held-out error 31 after one of 3e-7).
    max_rank : sequence of int
        Cap on each rank ``r_0..r_d``.
    search : {"column", "rook", "full", "auto"}
    scale : float or None
        Largest modulus seen before this sweep (returned updated).
    keep : bool
        On bonds of more than ``FULL_SEARCH_PAIRS`` index pairs, keep the previous pivots
        that lie in the block (eliminated first, dropped when their residual falls below
        the tolerance) and search only beyond them: a sweep then reads little more than
        the new pivots' fibers.
    max_kept_growth : float or None
        Drop kept pivots that are smaller than their columns' largest residuals by more
        than this factor (see :func:`prrlu`).
    """
    shape, d = indices.shape, indices.ndim
    bonds = range(d - 1) if direction == "lr" else range(d - 2, -1, -1)
    scale = 0.0 if scale is None else scale
    fibers = [None] * d
    for k in bonds:
        matrix = BondMatrix(lazy, indices.left[k], shape[k], shape[k + 1], indices.right[k + 1])
        small = shape[k] * shape[k + 1] <= FULL_SEARCH_PAIRS
        bond_search = ("full" if small else "column") if search == "auto" else search
        # Measured (bench_cross, bench_quantics): keeping pivots saves evaluations on bonds
        # of large modes and costs some on quantics bonds, cheap to search afresh.
        rows, cols = _bond_pivots(matrix, indices, k, direction, abs_tol,
                                  max_rank[k + 1], rng, bond_search, keep and not small,
                                  max_kept_growth)
        scale = max(scale, matrix.max_abs)
        indices.left[k + 1] = matrix.row_multi[rows]
        indices.right[k] = matrix.col_multi[cols]
        _keep_fibers(fibers, matrix, rows, cols, k, shape, direction)
    indices.nested = "left" if direction == "lr" else "right"
    return scale, fibers


def _keep_fibers(fibers, matrix, rows, cols, k, shape, direction):
    """The fibers that bond ``k`` fixes for the rest of the sweep: left to right, core
    ``k``'s (``left[k]`` was fixed by bond ``k-1``), and the last core's at the last bond;
    right to left, core ``k+1``'s, and the first core's at bond 0."""
    if direction == "lr":
        fibers[k] = matrix.column_fiber(cols, shape[k])
        if k == len(shape) - 2:
            fibers[k + 1] = matrix.row_fiber(rows, shape[k + 1])
    else:
        fibers[k + 1] = matrix.row_fiber(rows, shape[k + 1])
        if k == 0:
            fibers[0] = matrix.column_fiber(cols, shape[0])


def _bond_pivots(matrix, indices, k, direction, abs_tol, max_rank, rng, search, keep,
                 max_kept_growth=None):
    """Pivot rows and columns of bond ``k``'s block; a right-to-left sweep searches the
    transpose, so that its starts are the previous pivot rows (just read by bond k+1)."""
    # Last sweep's pivots found in this block: kept pivots, and search starts when all are.
    old_rows = matrix.row_positions(indices.left[k + 1])
    old_cols = matrix.col_positions(indices.right[k])
    # The rank this bond is expected to reach: its own in the last sweep, or that of the
    # bond this sweep has just passed (batched search reads that many columns at once).
    neighbour = indices.left[k] if direction == "lr" else indices.right[k + 1]
    hint = max(len(indices.left[k + 1]), len(neighbour))
    if direction == "lr":
        # Starts at last sweep's pivot columns: bond k-1 has just read them.
        hints = old_cols.tolist() if len(old_cols) == len(indices.right[k]) else []
        kept = (old_rows, old_cols) if keep else None
        return prrlu(matrix, abs_tol, max_rank, rng, search, hints, kept, max_kept_growth,
                     hint)
    hints = old_rows.tolist() if len(old_rows) == len(indices.left[k + 1]) else []
    kept = (old_cols, old_rows) if keep else None
    cols, rows = prrlu(TransposedBondMatrix(matrix), abs_tol, max_rank, rng, search, hints, kept,
                       max_kept_growth, hint)
    return rows, cols


class TCISweeper:
    """The rank-adaptive sweep with its state between sweeps.

    Keeps the largest modulus seen (the pivot scale); after a sweep that stalls above the
    tolerance, lowers the pivot cut and adds global pivots.
    """

    def __init__(self, tol, max_rank, rng, search, scale, info, keep=True, min_cut=0.0):
        self.tol, self.max_rank, self.rng, self.search = tol, max_rank, rng, search
        self.keep, self.min_cut = keep, min_cut
        self.scale = scale
        self.info = info
        self.pivot_factor = 1.0
        # Stalls lower the relative pivot cut, never below min_cut (nor below tol if that is
        # lower): pivots at round-off level make the pivot blocks singular.
        self.lowest_factor = min(1.0, min_cut / tol) if tol > 0 else 1.0
        # A kept pivot may grow the interpolation coefficients, and the round-off they
        # carry, by at most tol / (1000 eps) (min_cut is 100 eps), and at least 16: a
        # random TT at d=80 kept its start pivot at 1e-7 of its columns' largest entries
        # along the first sweep (held-out error 3e-7 after it, 1e-10 with the bound).
        # Measured on bench_cross (10 starts): a bound of 4.5e4 at tol 1e-6 raised P2's
        # median from 53.7k to 57.8k evaluations; this one (4.5e6) leaves it.
        self.max_kept_growth = (max(16.0, 0.1 * tol / min_cut) if min_cut > 0
                                else None)
    def __call__(self, lazy, indices, direction, cores):
        # Global pivots only where the sweeps stall: while they converge on their own, the
        # probes and the pivots (one more row in every index set) cost evaluations for
        # nothing (bench_cross, 10 starts: medians P2 60.0k -> 52.1k, P4 11.5k -> 9.7k).
        if self.lower_cut_if_stalled(self.info.val_errors) and cores is not None:
            add_global_pivots(lazy, indices, cores, self.rng, self._abs_tol(self.scale))
        self.scale, fibers = tci_half_sweep(lazy, indices, direction, self._abs_tol,
                                            self.max_rank, self.rng, self.search, self.scale,
                                            self.keep, self.max_kept_growth)
        return fibers

    def at_rank_cap(self, indices):
        """Whether a bond has reached ``max_rank`` below the full rank of its unfolding (a
        bond at full rank is exact, not capped)."""
        d = indices.ndim
        full = clip_ranks(indices.shape, [1] + [2**62] * (d - 1) + [1])
        return any(rank >= cap and cap < limit for rank, cap, limit in
                   zip(indices.rank[1:-1], self.max_rank[1:-1], full[1:-1], strict=True))

    def lower_cut_if_stalled(self, errors):
        """Lower the pivot cut tenfold after a sweep that missed the tolerance without
        halving the error; returns whether it did (the sweeps stall)."""
        missed = bool(errors) and errors[-1] > self.tol
        stalled = missed and len(errors) >= 2 and errors[-1] > 0.5 * errors[-2]
        if stalled:
            # Pivots are cut at tol * max|A| (max-norm) while the stop is a 2-norm error:
            # data with small features needs a lower cut.
            self.pivot_factor = max(0.1 * self.pivot_factor, self.lowest_factor)
        return stalled

    def diverged(self):
        """A sweep blew up (near-singular pivots, cut too low): raise the cut tenfold."""
        self.pivot_factor = min(1.0, 10.0 * self.pivot_factor)

    def _abs_tol(self, block_max):
        # Never below round-off of the largest entry seen: a block of tiny entries next to
        # huge ones is not resolved below the huge ones' rounding errors.
        return max(self.tol * block_max * self.pivot_factor, self.min_cut * self.scale)
