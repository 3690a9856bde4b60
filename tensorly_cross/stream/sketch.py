"""The two passes: random range sketches of every mode, then the projected core.

Pass 1 (modes compressed to ``l_k < n_k`` columns): ``Y_k = A_(k) Omega_k`` with a
Khatri-Rao Gaussian ``Omega_k`` (column ``c`` is the outer product of one Gaussian vector per
other mode), so each block adds ``block x_{m != k} G_{k,m}[rows_m]`` to the rows of ``Y_k``
it covers, without forming ``Omega_k``. ``U_k`` is an orthonormal basis of ``Y_k``'s range
(the randomized range finder of Halko, Martinsson & Tropp, with a structured test matrix).

Pass 2: the Tucker core ``W = A x_k U_k^T`` (modes not compressed are kept as they are),
block by block, and ``||A||^2``: then ``||A - W x_k U_k||^2 = ||A||^2 - ||W||^2`` exactly.
"""

import numpy as np


def sketch_factors(shape, widths, rng):
    """For each compressed mode ``k`` (``widths[k] < shape[k]``), one Gaussian
    ``(n_m, widths[k])`` matrix per other mode ``m``; None for the others."""
    factors = []
    for k, width in enumerate(widths):
        if width >= shape[k]:
            factors.append(None)
            continue
        factors.append([None if m == k else rng.standard_normal((size, width))
                        for m, size in enumerate(shape)])
    return factors


def sketch_start(shape, widths, factors):
    """An empty pass-1 result."""
    def start():
        partial = {"squares": np.zeros(1)}
        for k, mode_factors in enumerate(factors):
            if mode_factors is not None:
                partial[k] = np.zeros((shape[k], widths[k]))
        return partial
    return start


def sketch_fold(factors):
    """Pass 1: one block's updates of the range sketches (and of ``||A||^2``)."""
    def contribute(slices, values):
        updates = [("squares", slice(None), np.vdot(values, values))]
        for k, mode_factors in enumerate(factors):
            if mode_factors is not None:
                updates.append((k, slices[k], _contract_all_but(values, k, mode_factors,
                                                                slices)))
        return updates
    return contribute


def _contract_all_but(values, k, mode_factors, slices):
    """``sum over the other modes of values * prod_m G_m[rows_m, c]``: (b_k, width)."""
    others = [m for m in range(values.ndim) if m != k]
    width = mode_factors[others[0]].shape[1]
    if max(values.shape[m] for m in others) < values.shape[k]:
        return _contract_by_khatri_rao(values, others, mode_factors, slices, width)
    current = np.moveaxis(values, k, 0)  # (b_k, other modes...)
    # The last other mode: a matrix product adds the column axis.
    last = others[-1]
    result = current @ mode_factors[last][slices[last]]  # (b_k, ..., width)
    for m in reversed(others[:-1]):
        rows = mode_factors[m][slices[m]]  # (b_m, width)
        result = np.einsum("...mc,mc->...c", result, rows)
    return result.reshape(values.shape[k], width)


def _contract_by_khatri_rao(values, others, mode_factors, slices, width):
    """The same sum in one product with the Khatri-Rao rows of the other modes,
    ``(prod b_m, width)``: where mode ``k`` is the block's longest, the mode-by-mode
    contraction's first product is ``b_k x ... x width`` (64 MiB for a 64x64x1024 block,
    twice the block) and these rows are smaller (4 MiB there)."""
    rows = mode_factors[others[0]][slices[others[0]]]
    for m in others[1:]:
        rows = (rows[:, None, :] * mode_factors[m][slices[m]][None, :, :]).reshape(-1, width)
    rows = rows.reshape(*(values.shape[m] for m in others), width)
    return np.tensordot(values, rows, axes=(others, list(range(len(others)))))


def range_bases(partial, shape, widths):
    """Orthonormal ``(n_k, l_k)`` bases of the sketches' ranges; None where uncompressed."""
    bases = []
    for k in range(len(shape)):
        if widths[k] >= shape[k]:
            bases.append(None)
            continue
        basis, _ = np.linalg.qr(partial[k])
        bases.append(basis)
    return bases


def core_start(shape, bases):
    """An empty pass-2 result: the core of the projection and ``||A||^2``."""
    sizes = tuple(n if basis is None else basis.shape[1] for n, basis in zip(shape, bases,
                                                                              strict=True))
    def start():
        return {"core": np.zeros(sizes), "squares": np.zeros(1)}
    return start


def core_fold(bases):
    """Pass 2: one block's update of the core (its projection) and of ``||A||^2``."""
    def contribute(slices, values):
        projected = values
        compressed = [k for k, basis in enumerate(bases) if basis is not None]
        # The modes that shrink the block most first, so that the intermediates stay small:
        # a 64x64x1024 block projected on mode 0 first (64 rows -> 128 columns) made a
        # 64 MiB intermediate, on mode 2 first a 4 MiB one.
        for k in sorted(compressed, key=lambda k: bases[k].shape[1] / values.shape[k]):
            # Contract mode k with U_k[rows]: the new axis goes last, then moves back.
            projected = np.moveaxis(np.tensordot(projected, bases[k][slices[k]],
                                                 axes=(k, 0)), -1, k)
        target = tuple(slices[k] if basis is None else slice(None)
                       for k, basis in enumerate(bases))
        return [("squares", slice(None), np.vdot(values, values)),
                ("core", target, projected)]
    return contribute
