"""The end of an interpolating cross that missed its tolerance: least-squares refinement.

An interpolating cross (ALS, TCI) passes exactly through its last sweep's fibers and ignores
what earlier sweeps read. On data whose singular values decay slowly (real volumes), fitting
the cores in least squares to the fibers of the last few sweeps together
(:func:`~tensorly_cross.cross.refine.refine_cores`, no new reads) gives a better TT of the
same ranks (MNI152, ALS at rank 40: ``benchmarks/bench_real.py``). It runs only when the
sweeps stopped short of the tolerance, and is kept only if the held-out error drops by 1%:
a run that met its tolerance is returned as it was, interpolation property included.
"""

from ..errors import EvaluationBudgetExceeded, MaxTimeReached
from .refine import refine_cores

# Sweeps whose fibers the final refinement fits, and the ALS passes it makes.
FINAL_SWEEPS, FINAL_PASSES = 6, 2


def refine_if_better(cache, state, history, validation, info):
    """``state`` (indices, cores), or the same indices with refined cores when these lower
    the held-out error by 1% (recorded in ``info`` as one more sweep, ``refined``)."""
    indices, cores = state
    if cores is None or indices.block or not history or validation.values is None:
        return state
    best_error = info.val_error
    refined = cores
    try:
        for _ in range(FINAL_PASSES):
            refined = refine_cores(cache, refined, history[-FINAL_SWEEPS:])
    except (EvaluationBudgetExceeded, MaxTimeReached):  # evicted fibers, and no budget left
        return state
    error = validation.error(refined)
    if not error < 0.99 * best_error:
        return state
    info.refined = True
    info.n_sweeps += 1
    info.ranks.append(tuple(indices.rank))
    info.val_errors.append(error)
    info.evals_per_sweep.append(cache.counters.unique)
    info.best_sweep = info.n_sweeps
    return indices, refined
