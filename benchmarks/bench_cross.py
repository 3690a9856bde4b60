"""TT-cross: tensorly-cross against the peers on problems P1-P5, one BLAS thread, one run.

Run ``bash benchmarks/setup_peers.sh`` first (missing peers are reported and skipped)::

    python benchmarks/bench_cross.py [--problems P1,P3] [--out benchmarks/results/cross.md]

For each problem and method: distinct evaluations at the stop, the relative error on
10,000 independent held-out entries, wall time, and overhead (wall time minus time inside
the function). tensorly-cross stops by itself (tolerance = the target, on its own
held-out set, whose evaluations are counted). teneva is given an *oracle* stop: it
validates on our 10,000 held-out entries for free and stops at the first sweep that
meets the target. tntorch stops by its own rule (eps = target).
"""

import argparse
import sys
import time

import _harness
import numpy as np
from problems import problems

N_TEST = 10_000


class Counted:
    """Wraps a problem's function: counts entries and time spent inside."""

    def __init__(self, function):
        self.function = function
        self.entries = 0
        self.seconds = 0.0

    def __call__(self, indices):
        start = time.perf_counter()
        values = self.function(np.asarray(indices, dtype=np.int64))
        self.seconds += time.perf_counter() - start
        self.entries += len(values)
        return values


def run_ours(problem, test, exact, **kwargs):
    import tensorly_cross as tlc
    from tensorly_cross.cross.tt_entries import tt_entries

    counted = Counted(problem.function)
    start = time.perf_counter()
    tt, info = tlc.tt_cross(tlc.FunctionTensor(counted, problem.shape), tol=problem.target,
                            random_state=0, return_info=True, **kwargs)
    wall = time.perf_counter() - start
    error = _relative(np.asarray(tt_entries(list(tt), test)), exact)
    return dict(evals=info.n_evals, error=error, wall=wall, inside=counted.seconds,
                rank=max(tt.rank), note=info.stop_reason)


def run_teneva(problem, test, exact, rank=None):
    import teneva

    counted = Counted(problem.function)
    info, cache = {}, {}
    start_rank = rank or 1
    y0 = teneva.rand(list(problem.shape), start_rank, seed=0)
    growth = 0 if rank else 2
    start = time.perf_counter()
    tt = teneva.cross(counted, y0, info=info, cache=cache, I_vld=test, y_vld=exact,
                      e_vld=problem.target, nswp=60, dr_min=growth, dr_max=growth)
    wall = time.perf_counter() - start
    error = _relative(teneva.get_many(tt, test), exact)
    return dict(evals=info["m"], error=error, wall=wall, inside=counted.seconds,
                rank=max(teneva.props.ranks(tt)) if hasattr(teneva, "props") else 0,
                note=f"oracle stop: {info['stop']}")


def run_tntorch(problem, test, exact, rank=None):
    import tntorch
    import torch

    counted = Counted(problem.function)

    def function(*vectors):
        indices = torch.stack(vectors, dim=1).round().long().numpy()
        return torch.as_tensor(counted(indices))

    domain = [torch.arange(n, dtype=torch.float64) for n in problem.shape]
    start = time.perf_counter()
    # tntorch does not grow a rank-1 start (measured: it stays at rank 1), so its adaptive
    # run starts at rank 4 and kicks by 3 per sweep (its defaults otherwise).
    tt, info = tntorch.cross(function, domain=domain, ranks_tt=rank or 4,
                             kickrank=0 if rank else 3, eps=problem.target, verbose=False,
                             return_info=True, suppress_warnings=True)
    wall = time.perf_counter() - start
    approx = tt[torch.as_tensor(test)].numpy()
    return dict(evals=counted.entries, error=_relative(approx, exact), wall=wall,
                inside=counted.seconds, rank=max(tt.ranks_tt.tolist()), note="own stop, no cache")


def run_ttpy(problem, test, exact):
    import tt
    from tt.cross.rectcross import cross

    from tensorly_cross import tt_entries

    counted = Counted(problem.function)

    def error(vector):
        return _relative(tt_entries(tt.vector.to_list(vector), test), exact)

    np.random.seed(0)  # noqa: NPY002 -- tt.rand draws from NumPy's global generator
    x0 = tt.rand(np.array(problem.shape), len(problem.shape), 1)
    start = time.perf_counter()
    # Oracle stop: the first sweep whose error on our held-out entries meets the target.
    result = cross(counted, x0, nswp=60, eps=problem.target, verbose=False,
                   stop_fun=lambda old, new: error(new) <= problem.target)
    wall = time.perf_counter() - start
    return dict(evals=counted.entries, error=error(result), wall=wall, inside=counted.seconds,
                rank=int(max(result.r)), note="oracle stop, no cache")


def _relative(approx, exact):
    return float(np.linalg.norm(np.asarray(approx) - exact) / np.linalg.norm(exact))


def methods(problem):
    """name -> runner; peers that are not installed are dropped."""
    runners = {
        "tensorly-cross TCI (no rank)": lambda *a: run_ours(problem, *a),
        "tensorly-cross TCI full search": lambda *a: run_ours(problem, *a, pivot_search="full"),
        "teneva adaptive": lambda *a: run_teneva(problem, *a),
        "tntorch adaptive": lambda *a: run_tntorch(problem, *a),
        "ttpy rect_cross": lambda *a: run_ttpy(problem, *a),
    }
    r = problem.true_rank or problem.given_rank
    if r:
        runners["tensorly-cross ALS (rank given)"] = lambda *a: run_ours(problem, *a, rank=r)
        if problem.given_rank:  # no exact rank: least-squares cores over twice the probes
            runners["tensorly-cross ALS x2 (rank given)"] = lambda *a: run_ours(
                problem, *a, rank=r, oversample=2.0)
        runners["teneva (rank given)"] = lambda *a: run_teneva(problem, *a, rank=r)
        runners["tntorch (rank given)"] = lambda *a: run_tntorch(problem, *a, rank=r)
    return runners


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="", help="comma-separated prefixes, e.g. P1,P3")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    controller = _harness.limit_threads()
    wanted = [p for p in args.problems.split(",") if p]
    header = ["problem", "method", "evals", "held-out error", "wall s", "overhead s",
              "max rank", "stop", "evals / ours"]
    rows = []
    for problem in problems():
        if wanted and not any(problem.name.startswith(w) for w in wanted):
            continue
        rng = np.random.default_rng(12345)
        test = np.stack([rng.integers(n, size=N_TEST) for n in problem.shape], axis=1)
        exact = problem.function(test)
        ours = None
        for name, runner in methods(problem).items():
            try:
                result = runner(test, exact)
            except ImportError as error:
                print(f"  {problem.name} {name}: skipped ({error})", file=sys.stderr)
                continue
            except Exception as error:  # a peer that crashes is reported, not fatal
                rows.append([problem.name, name, "-", f"failed: {type(error).__name__}", "-",
                             "-", "-", str(error)[:60], "-"])
                continue
            ours = result["evals"] if ours is None else ours
            met = "yes" if result["error"] <= problem.target else "NO"
            rows.append([problem.name, name, result["evals"],
                         f"{result['error']:.1e} (target {problem.target:.0e}: {met})",
                         f"{result['wall']:.3f}", f"{result['wall'] - result['inside']:.3f}",
                         result["rank"], result["note"], f"{result['evals'] / ours:.2f}"])
            print("  " + " | ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)
    text = _harness.format_table(header, rows)
    _harness.emit(text, args.out)
    del controller


if __name__ == "__main__":
    main()
