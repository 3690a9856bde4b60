"""Rank-adaptive two-site cross (TCI with partial rank-revealing LU).

At each bond ``k`` the two-site block ``A[left[k], :, :, right[k+1]]`` is unfolded to a
matrix and a prrLU picks its pivots to the tolerance: they become ``left[k+1]`` and
``right[k]``, and their number the new rank ``r_{k+1}``. Ranks grow and shrink with the
data (Fernandez et al. 2025, "TCI2"; Savostyanov & Oseledets 2011 for DMRG-cross).
"""

from .bond import BondMatrix, TransposedBondMatrix
from .global_pivots import add_global_pivots
from .indices import positions_in
from .prrlu import prrlu

# Bonds whose two modes have at most this many index pairs are searched in full by "auto":
# a (2r x 2r) quantics block costs 4 r^2 entries read whole, rook search about 8 r^2.
FULL_SEARCH_PAIRS = 16


def tci_half_sweep(lazy, indices, direction, abs_tol, max_rank, rng, search="rook", scale=None):
    """Update ``indices`` in place by one sweep; returns the largest modulus read.

    Parameters
    ----------
    abs_tol : callable
        ``abs_tol(scale) -> float``: the pivot tolerance given the largest modulus seen.
    max_rank : sequence of int
        Cap on each rank ``r_0..r_d``.
    scale : float or None
        Largest modulus seen before this sweep.
    """
    shape, d = indices.shape, indices.ndim
    bonds = range(d - 1) if direction == "lr" else range(d - 2, -1, -1)
    scale = 0.0 if scale is None else scale
    for k in bonds:
        matrix = BondMatrix(lazy, indices.left[k], shape[k], shape[k + 1], indices.right[k + 1])
        bond_search = search
        if search == "auto":
            bond_search = "full" if shape[k] * shape[k + 1] <= FULL_SEARCH_PAIRS else "rook"
        if direction == "lr":
            # Rook starts at last sweep's pivot columns: bond k-1 has just read them.
            hints = _previous_pivots(indices.right[k], matrix.col_multi)
            rows, cols = prrlu(matrix, abs_tol(scale), max_rank[k + 1], rng, bond_search,
                               hints)
        else:
            hints = _previous_pivots(indices.left[k + 1], matrix.row_multi)
            cols, rows = prrlu(TransposedBondMatrix(matrix), abs_tol(scale), max_rank[k + 1],
                               rng, bond_search, hints)
        scale = max(scale, matrix.max_abs)
        indices.left[k + 1] = matrix.row_multi[rows]
        indices.right[k] = matrix.col_multi[cols]
    indices.nested = "left" if direction == "lr" else "right"
    return scale


def _previous_pivots(previous, candidates):
    """Positions of last sweep's pivots among ``candidates`` (rook starts), if all present."""
    try:
        return positions_in(previous, candidates).tolist()
    except ValueError:
        return []


class TCISweeper:
    """The rank-adaptive sweep with its state between sweeps.

    Keeps the largest modulus seen (the pivot scale), lowers the pivot cut when sweeps
    stall above the tolerance, and adds global pivots after a sweep that misses it.
    """

    def __init__(self, tol, max_rank, rng, search, scale, info):
        self.tol, self.max_rank, self.rng, self.search = tol, max_rank, rng, search
        self.scale = scale
        self.info = info
        self.pivot_factor = 1.0

    def __call__(self, lazy, indices, direction, cores):
        info = self.info
        errors = info.val_errors
        missed = bool(errors) and errors[-1] > self.tol
        if missed and len(errors) >= 2 and errors[-1] > 0.5 * errors[-2]:
            # Stalled above the tolerance. Pivots are cut at tol * max|A| (max-norm) while
            # the stop is a 2-norm error: data with small features needs a lower cut.
            self.pivot_factor *= 0.1
        if missed and cores is not None:
            add_global_pivots(lazy, indices, cores, self.rng, self._abs_tol(self.scale))
        self.scale = tci_half_sweep(lazy, indices, direction, self._abs_tol, self.max_rank,
                                    self.rng, self.search, self.scale)

    def _abs_tol(self, scale):
        return self.tol * scale * self.pivot_factor
