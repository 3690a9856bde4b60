"""Least-squares refinement of a TT over every fiber block read so far (TT completion).

Each sweep of a least-squares cross reads, for every core ``k``, the fibers
``A[P, :, Q]`` of one pair of index sets. A sweep's own fit uses only its pairs; this step
fits each core, in least squares, to the fibers of all the pairs recorded (``history``),
with the other cores fixed (alternating least squares, one left-to-right pass):

    min over G_k of  sum_s || L_s G_k[:, i, :] R_s - A[P_s, i, Q_s] ||^2   for every i,

``L_s`` being the TT's left interface at ``P_s`` and ``R_s`` its right interface at
``Q_s``. The fibers are complete along mode ``k``, so every slice ``i`` shares one normal
matrix ``sum_s kron(L_s^T L_s, R_s R_s^T)`` of size ``(r_k r_{k+1})^2``: one Cholesky-like
solve per core, whatever ``n_k``. Nothing new is read (the entries are in the cache).
Cores with more than ``MAX_UNKNOWNS`` unknowns per slice keep the sweep's fit, as do cores
whose fit is not finite.
"""

import numpy as np
import tensorly as tl

from .._backend import all_finite, narrowed, take_rows, to_host, widened
from .indices import fiber_indices
from .scaling import exponent_of, times_power_of_two

# Above this many unknowns per slice (r_k r_{k+1}, 50 x 50) a core keeps the sweep's fit: its
# normal matrix (48 MiB here, 128 MiB at 64 x 64) is built once per recorded sweep and solved
# in ~r^6/3 flops, which took TCI at rank 64 on MNI152 from 3 s to 56 s.
MAX_UNKNOWNS = 2500
# Ridge, relative to the normal matrix's mean diagonal, towards the core being refitted: keeps
# directions that no sample constrains at the core's value. Towards zero, they took the
# right-hand side's round-off over the ridge (O(1)), and a TT whose other cores relied on
# them was ruined (a rank asked above the data's: a constant 12x10x8x2 array at rank 3,
# error 0.29 where the sweep's own fit was exact).
RIDGE = 1e-13
# ... and at least this many machine epsilons of the data's dtype: 1e-13 is below float32's
# resolution (1.2e-7), so a float32 normal matrix of rank-deficient interfaces (ALS asked
# for more rank than the data has) stayed exactly singular and PyTorch's solve raised.
RIDGE_EPS = 100


def refine_cores(lazy, cores, history):
    """One left-to-right ALS pass over the fibers of ``history`` (a list of
    ``(left_sets, right_sets)`` pairs, one per sweep); returns new cores."""
    cores = list(cores)
    d = len(cores)
    for k in range(d):
        r_left, n, r_right = tl.shape(cores[k])
        if r_left * r_right <= MAX_UNKNOWNS:
            fitted = _fit_core(lazy, cores, k, history)
            # A fit that is not finite is no refinement: the sweep's core is kept. The
            # first sweep of subnormal data (5e-324) underflows a core to zeros, its
            # interfaces scale by 2**0, and the anchor of the ridge overflowed to inf.
            if all_finite(fitted):
                cores[k] = fitted
        if k < d - 1:
            cores[k], cores[k + 1] = _orthogonalize_left(cores[k], cores[k + 1])
    return cores


def _fit_core(lazy, cores, k, history):
    r_left, n, r_right = tl.shape(cores[k])
    normal, rhs, scales = None, None, None
    for left, fibers, right in _distinct_blocks(lazy, cores, k, history):
        if scales is None:
            # Powers of two taken from the first block (exact, the same for every block):
            # the normal matrix squares the interfaces, which overflows for data near 1e160
            # and underflows near 1e-160 unless they are brought near 1 first.
            scales = [exponent_of(part) for part in (left, fibers, right)]
        # In double precision: the normal matrix squares the interfaces' condition, and
        # float32 (complex64) ones stalled a float32 array's error at 3.4e-4 whatever tol,
        # against 1.4e-5 (float32's own level) with the fit in float64.
        left, fibers, right = (times_power_of_two(widened(part), -scale) for part, scale
                               in zip((left, fibers, right), scales, strict=True))
        p, q = tl.shape(left)[0], tl.shape(right)[1]
        fibers = tl.reshape(fibers, (p, n * q))
        # L^H F_i R^H for every slice i: (r_k, n, r_{k+1}) -> (r_k r_{k+1}, n); conjugate
        # transposes, so that complex data is fitted in least squares too.
        projected = tl.reshape(tl.dot(_adjoint(left), fibers), (r_left * n, q))
        projected = tl.reshape(tl.dot(projected, _adjoint(right)), (r_left, n, r_right))
        projected = tl.reshape(tl.transpose(projected, (0, 2, 1)), (r_left * r_right, n))
        # vec(A G B) = kron(A, B^T) vec(G) in C order: B^T of R R^H is conj(R R^H).
        gram = tl.kron(tl.dot(_adjoint(left), left), tl.conj(tl.dot(right, _adjoint(right))))
        normal = gram if normal is None else normal + gram
        rhs = projected if rhs is None else rhs + projected
    trace = to_host(tl.sum(tl.diag(normal)))
    scale = float(np.real(trace)) / tl.shape(normal)[0]
    relative = max(RIDGE, RIDGE_EPS * float(np.finfo(trace.dtype).eps))
    ridge = relative * (scale if scale > 0 else 1.0)
    normal = normal + ridge * tl.eye(tl.shape(normal)[0], **tl.context(normal))
    # The current core in the scaled blocks' units, as (r_k r_{k+1}, n) like the solution.
    current = times_power_of_two(widened(cores[k]), scales[0] + scales[2] - scales[1])
    current = tl.reshape(tl.transpose(current, (0, 2, 1)), (r_left * r_right, n))
    solution = tl.solve(normal, rhs + ridge * current)  # (r_k r_{k+1}, n), scaled blocks
    solution = times_power_of_two(solution, scales[1] - scales[0] - scales[2])
    core = tl.transpose(tl.reshape(solution, (r_left, r_right, n)), (0, 2, 1))
    return narrowed(core, cores[k])


def _adjoint(matrix):
    return tl.transpose(tl.conj(matrix))


def _distinct_blocks(lazy, cores, k, history):
    """``(L, F, R)`` per distinct pair of sets of core ``k`` in ``history``: the left
    interface (p, r_k), the fibers read (p * n_k * q) and the right interface (r_{k+1}, q)."""
    n = tl.shape(cores[k])[1]
    seen = set()
    for left_sets, right_sets in history:
        pair = (left_sets[k].tobytes(), right_sets[k].tobytes())
        if pair in seen:  # the same fibers twice would only weigh them twice
            continue
        seen.add(pair)
        fibers = lazy.evaluate(fiber_indices(left_sets[k], n, right_sets[k]))
        yield (left_interface(cores, left_sets[k], k), fibers,
               right_interface(cores, right_sets[k], k))


def _orthogonalize_left(core, following):
    """``core`` made left-orthonormal by QR, its R factor moved into ``following``: the TT
    is unchanged and the next fit's left interfaces are well conditioned."""
    r_left, n, r_right = tl.shape(core)
    q_factor, r_factor = tl.qr(tl.reshape(core, (r_left * n, r_right)))
    rank = tl.shape(q_factor)[1]
    r_next, n_next, r_after = tl.shape(following)
    following = tl.reshape(tl.dot(r_factor, tl.reshape(following, (r_next, -1))),
                           (rank, n_next, r_after))
    return tl.reshape(q_factor, (r_left, n, rank)), following


def left_interface(cores, multi_indices, k):
    """The product of cores ``0..k-1`` at (m, k) multi-indices: an (m, r_k) tensor."""
    m = multi_indices.shape[0]
    result = None
    for mode in range(k):
        core = cores[mode]
        picked = take_rows(tl.moveaxis(core, 1, 0), multi_indices[:, mode])  # (m, r, r')
        result = picked[:, 0, :] if result is None else tl.matmul(result[:, None, :],
                                                                   picked)[:, 0, :]
    if result is None:
        return tl.ones((m, 1), **tl.context(cores[0]))
    return result


def right_interface(cores, multi_indices, k):
    """The product of cores ``k+1..d-1`` at (m, d-k-1) multi-indices: an (r_{k+1}, m)
    tensor."""
    d = len(cores)
    m = multi_indices.shape[0]
    result = None
    for mode in range(d - 1, k, -1):
        column = multi_indices[:, mode - k - 1]
        picked = take_rows(tl.moveaxis(cores[mode], 1, 0), column)  # (m, r, r')
        result = picked[:, :, 0] if result is None else tl.matmul(picked,
                                                                  result[:, :, None])[:, :, 0]
    if result is None:
        return tl.ones((1, m), **tl.context(cores[0]))
    return tl.transpose(result)
