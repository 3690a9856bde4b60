"""Entries of a tensor train at a batch of multi-indices."""

import tensorly as tl

from .._backend import take_rows


def tt_entries(cores, indices):
    """Values of the TT with ``cores`` at (m, d) host multi-indices, as an (m,) tensor.

    Costs ``O(m sum_k r_k r_{k+1})``; never forms the full tensor.
    """
    result = None
    for mode, core in enumerate(cores):
        # (n_k, r_k, r_{k+1}) so that one gather picks each multi-index's slice.
        picked = take_rows(tl.moveaxis(core, 1, 0), indices[:, mode])
        if result is None:
            result = picked[:, 0, :]
        else:
            result = tl.einsum("ma,mab->mb", result, picked)
    return result[:, 0]
