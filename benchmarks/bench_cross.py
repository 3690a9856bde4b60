"""TT-cross: tensorly-cross against the peers on problems P1-P5, one BLAS thread, one process.

Run ``bash benchmarks/setup_peers.sh`` first (missing peers are reported and skipped)::

    python benchmarks/bench_cross.py [--problems P1,P3] [--seeds 5] [--out FILE.md]

For each problem and method, medians over ``--seeds`` random starts (default 10): the
evaluations at the stop, the relative error on 10,000 independent held-out entries, wall
time, and overhead per evaluation (wall time minus time inside the function, over the
evaluations); "met" counts the starts that reached the target. A closing table gives our
rank-free default against the best peer that met the target on most starts.

Evaluations are counted three ways. "requested": the entries the method asked for, repeats
included (ours and teneva's: of their caches; tntorch and ttpy have none, so of the
function). "unique": the distinct multi-indices among them. "evals", the headline and the
ratios: the entries the function computed, which is what a run costs: the unique ones for
ours and teneva (cached), the requested ones for tntorch and ttpy.

tensorly-cross stops by itself (tolerance = the target, on its own held-out set, whose
evaluations and time are counted). teneva and ttpy are given an *oracle* stop: they are
validated on our 10,000 held-out entries for free, in evaluations and in time (the
checks' time is taken out of their wall time), and stop at the first sweep that meets the
target. tntorch stops by its own rule (eps = target).
"""

import argparse
import sys
import time

import _harness
import numpy as np
from problems import problems

N_TEST = 10_000


class Counted:
    """Wraps a problem's function: counts entries (all, and distinct) and time inside."""

    def __init__(self, function, shape):
        self.function, self.shape = function, shape
        self.entries = 0
        self.seconds = 0.0
        self._keys = []

    def __call__(self, indices):
        start = time.perf_counter()
        indices = np.asarray(indices, dtype=np.int64)
        values = self.function(indices)
        self.seconds += time.perf_counter() - start
        self.entries += len(values)
        self._keys.append(np.ravel_multi_index(tuple(indices.T), self.shape))
        return values

    @property
    def unique(self):
        """Distinct multi-indices computed."""
        return int(np.unique(np.concatenate(self._keys)).size) if self._keys else 0


class Timed:
    """Wraps a function and adds up the time spent in it: the oracle stops' validation,
    which is the benchmark's doing and is taken out of the peers' wall times."""

    def __init__(self, function):
        self.function = function
        self.seconds = 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def run_ours(problem, test, exact, seed, **kwargs):
    import tensorly_cross as tlc
    from tensorly_cross.cross.tt_entries import tt_entries

    counted = Counted(problem.function, problem.shape)
    start = time.perf_counter()
    tt, info = tlc.tt_cross(tlc.FunctionTensor(counted, problem.shape), tol=problem.target,
                            random_state=seed, return_info=True, **kwargs)
    wall = time.perf_counter() - start
    error = _relative(np.asarray(tt_entries(list(tt), test)), exact)
    return dict(evals=info.n_evals, requested=info.n_requested, unique=info.n_evals,
                error=error, wall=wall, inside=counted.seconds, rank=max(tt.rank),
                note=(info.stop_reason if info.method in ("tci", "als", "block")
                      else f"{info.method}: {info.stop_reason}"))


def run_teneva(problem, test, exact, seed, rank=None):
    import teneva

    counted = Counted(problem.function, problem.shape)
    info, cache = {}, {}
    start_rank = rank or 1
    y0 = teneva.rand(list(problem.shape), start_rank, seed=seed)
    growth = 0 if rank else 2
    oracle = Timed(teneva.accuracy_on_data)  # teneva.cross's check on our test entries
    teneva.accuracy_on_data = oracle
    try:
        start = time.perf_counter()
        tt = teneva.cross(counted, y0, info=info, cache=cache, I_vld=test, y_vld=exact,
                          e_vld=problem.target, nswp=60, dr_min=growth, dr_max=growth)
        wall = time.perf_counter() - start - oracle.seconds
    finally:
        teneva.accuracy_on_data = oracle.function
    error = _relative(teneva.get_many(tt, test), exact)
    return dict(evals=info["m"], requested=info["m"] + info["m_cache"], unique=info["m"],
                error=error, wall=wall, inside=counted.seconds,
                rank=max(teneva.props.ranks(tt)) if hasattr(teneva, "props") else 0,
                note=f"oracle stop: {info['stop']}")


def run_tntorch(problem, test, exact, seed, rank=None):
    import tntorch
    import torch

    counted = Counted(problem.function, problem.shape)
    torch.manual_seed(seed)  # its random start
    np.random.seed(seed)  # noqa: NPY002

    def function(*vectors):
        indices = torch.stack(vectors, dim=1).round().long().numpy()
        return torch.as_tensor(counted(indices))

    domain = [torch.arange(n, dtype=torch.float64) for n in problem.shape]
    start = time.perf_counter()
    # Adaptive: ranks_tt=None, so that tntorch grows its ranks by kickrank (3, its default)
    # after every sweep. Given a starting rank it ignores kickrank and never grows: an
    # earlier version of this table passed ranks_tt=4 and had tntorch stuck at rank 4.
    tt, info = tntorch.cross(function, domain=domain, ranks_tt=rank,
                             kickrank=0 if rank else 3, eps=problem.target, verbose=False,
                             return_info=True, suppress_warnings=True)
    wall = time.perf_counter() - start
    approx = tt[torch.as_tensor(test)].numpy()
    return dict(evals=counted.entries, requested=counted.entries, unique=counted.unique,
                error=_relative(approx, exact), wall=wall, inside=counted.seconds,
                rank=max(tt.ranks_tt.tolist()), note="own stop, no cache")


def run_ttpy(problem, test, exact, seed):
    import tt
    from tt.cross.rectcross import cross

    from tensorly_cross import tt_entries

    counted = Counted(problem.function, problem.shape)

    def error(vector):
        return _relative(tt_entries(tt.vector.to_list(vector), test), exact)

    oracle = Timed(error)
    np.random.seed(seed)  # noqa: NPY002 -- tt.rand draws from NumPy's global generator
    x0 = tt.rand(np.array(problem.shape), len(problem.shape), 1)
    start = time.perf_counter()
    # Oracle stop: the first sweep whose error on our held-out entries meets the target.
    result = cross(counted, x0, nswp=60, eps=problem.target, verbose=False,
                   stop_fun=lambda old, new: oracle(new) <= problem.target)
    wall = time.perf_counter() - start - oracle.seconds
    return dict(evals=counted.entries, requested=counted.entries, unique=counted.unique,
                error=error(result), wall=wall, inside=counted.seconds,
                rank=int(max(result.r)), note="oracle stop, no cache")


def _relative(approx, exact):
    return float(np.linalg.norm(np.asarray(approx) - exact) / np.linalg.norm(exact))


# Rank-free methods: "ours" is the first; the peers that take no rank follow.
OURS = "tensorly-cross TCI (no rank)"
RANK_FREE_PEERS = ("teneva adaptive", "tntorch adaptive", "ttpy rect_cross")


def methods(problem):
    """name -> runner(test, exact, seed); peers that are not installed are dropped."""
    runners = {
        OURS: lambda *a: run_ours(problem, *a),
        "tensorly-cross TCI rook search": lambda *a: run_ours(problem, *a, pivot_search="rook"),
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


def run_seeds(runner, problem, test, exact, n_seeds):
    """Median evaluations, error, wall and overhead over seeds ``0..n_seeds-1``, and how
    many seeds met the target; None when the runner's library is missing."""
    results = []
    for seed in range(n_seeds):
        try:
            results.append(runner(test, exact, seed))
        except ImportError:
            return None
        except Exception as error:  # a peer that crashes is reported, not fatal
            results.append(dict(failed=f"{type(error).__name__}: {str(error)[:50]}"))
    done = [result for result in results if "failed" not in result]
    if not done:
        return dict(failed=results[0]["failed"])
    summary = {key: float(np.median([result[key] for result in done]))
               for key in ("evals", "requested", "unique", "error", "wall", "inside", "rank")}
    summary["met"] = sum(result["error"] <= problem.target for result in done)
    summary["runs"] = n_seeds
    summary["note"] = done[0]["note"] + (f"; {n_seeds - len(done)} crashed"
                                         if len(done) < n_seeds else "")
    return summary


def table_row(problem, name, result, ours):
    if "failed" in result:
        return [problem.name, name, "-", "-", "-", f"failed: {result['failed']}", "-", "-", "-",
                "-", "-", "-"]
    return [problem.name, name, int(result["evals"]), int(result["requested"]),
            int(result["unique"]), f"{result['error']:.1e}",
            f"{result['met']}/{result['runs']}", f"{result['wall']:.3f}",
            f"{1e6 * (result['wall'] - result['inside']) / result['evals']:.2f}",
            int(result["rank"]), result["note"], f"{result['evals'] / ours:.2f}"]


def met(result):
    """Whether a method reached the target on most seeds."""
    return "failed" not in result and 2 * result["met"] > result["runs"]


def ratios(results):
    """Ours against the best peer that met the target: evaluations (any peer; rank-free
    peers only) and wall time (the fastest rank-free peer)."""
    ours = results[OURS]
    peers = {name: result for name, result in results.items()
             if not name.startswith("tensorly-cross") and met(result)}
    rank_free = {name: result for name, result in peers.items() if name in RANK_FREE_PEERS}
    out = {}
    if peers:
        out["evals vs best peer"] = ours["evals"] / min(r["evals"] for r in peers.values())
    if rank_free:
        out["evals vs best rank-free peer"] = ours["evals"] / min(
            r["evals"] for r in rank_free.values())
        out["wall vs fastest rank-free peer"] = ours["wall"] / min(
            r["wall"] for r in rank_free.values())
    return out


def summary_table(all_ratios):
    keys = ["evals vs best peer", "evals vs best rank-free peer", "wall vs fastest rank-free peer"]
    rows = [[name] + [f"{values[key]:.2f}" if key in values else "-" for key in keys]
            for name, values in all_ratios.items()]
    means = []
    for key in keys:
        found = [values[key] for values in all_ratios.values() if key in values]
        means.append(f"{np.exp(np.mean(np.log(found))):.2f}" if found else "-")
    rows.append(["geometric mean"] + means)
    header = ["problem (ours / best peer that met the target)"] + keys
    return _harness.format_table(header, rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="", help="comma-separated prefixes, e.g. P1,P3")
    parser.add_argument("--seeds", type=int, default=10, help="random starts per method")
    parser.add_argument("--methods", default="",
                        help="comma-separated substrings of the method names to run (ours, "
                             "the reference of the ratios, always runs)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    controller = _harness.limit_threads()
    wanted = [p for p in args.problems.split(",") if p]
    header = ["problem", "method", "evals", "requested", "unique", "held-out error", "met",
              "wall s",
              "overhead us/eval", "max rank", "stop", "evals / ours"]
    rows, all_ratios = [], {}
    for problem in problems():
        if wanted and not any(problem.name.startswith(w) for w in wanted):
            continue
        rng = np.random.default_rng(12345)
        test = np.stack([rng.integers(n, size=N_TEST) for n in problem.shape], axis=1)
        exact = problem.function(test)
        results = {}
        chosen = [m for m in args.methods.split(",") if m]
        for name, runner in methods(problem).items():
            if chosen and name != OURS and not any(m in name for m in chosen):
                continue
            result = run_seeds(runner, problem, test, exact, args.seeds)
            if result is None:
                print(f"  {problem.name} {name}: skipped (not installed)", file=sys.stderr)
                continue
            results[name] = result
            rows.append(table_row(problem, name, result, results[OURS]["evals"]))
            print("  " + " | ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)
        all_ratios[problem.name] = ratios(results)
    text = _harness.format_table(header, rows) + "\n\n" + summary_table(all_ratios)
    _harness.emit(text, args.out)
    del controller


if __name__ == "__main__":
    main()
