"""Expensive functions at scale: parallel evaluation, resume after a crash, large d.

One script, six measurements (each pins BLAS to one thread)::

    python benchmarks/bench_scale.py parallel --out benchmarks/results/scale_parallel.md
    python benchmarks/bench_scale.py resume --out benchmarks/results/scale_resume.md
    python benchmarks/bench_scale.py max-time --out benchmarks/results/scale_max_time.md
    python benchmarks/bench_scale.py large-d [--base TREE] --out benchmarks/results/scale_large_d.md
    python benchmarks/bench_scale.py cheap --out benchmarks/results/scale_cheap.md  # needs ttpy
    python benchmarks/bench_scale.py counts --base TREE --out benchmarks/results/scale_counts.md

``parallel``: 1/sum(x) on [1, 2]^8 (n = 64, tol 1e-6, seed 0) behind 0.5 ms of ``time.sleep``
per entry (an expensive function that releases the GIL), serial and on three executors: a
``ThreadPoolExecutor(8)``, a ``LocalCluster`` of 8 threads in this process, and one of 8
single-thread worker processes (every socket on loopback). Runs alternate between the
settings, each setting's wall time is its minimum over ``--reps``, and every setting must
return the serial TT bit for bit.

``max-time``: the ``parallel`` problem, at 5 ms per entry, stopped by ``max_time`` (0.3,
1.5 and 3 s) with a checkpoint: serially in one call per batch, serially with
``chunk_size=16``, and on a ``ThreadPoolExecutor(8)`` and a ``LocalCluster`` of 8 threads;
how far past ``max_time`` each run went, and how many entries its rerun read back from the
checkpoint.

``resume``: each problem runs uninterrupted, then in a child process whose function kills
it (SIGKILL) once it has evaluated 60% of the uninterrupted count, then again with the
child's checkpoint; the table gives what the rerun evaluates and how far its TT is from
the uninterrupted one.

``large-d``: a random TT (rank 8, n = 16, tol 1e-8, seed 0) at d = 10, 20, 40, 80:
evaluations against the TT's parameter count, the held-out error after every sweep, and
the overhead per evaluation (wall time minus time inside the function, over the
evaluations; minimum over ``--reps`` runs, each in a fresh process, trees alternating).
With ``--base`` the same runs of another source tree (e.g. ``git archive`` of an older
commit) come in the same table.

``cheap``: wall time of our rank-free default against ttpy's ``rect_cross`` (Fortran, the
fastest peer of ``bench_cross.py``, with the same oracle stop, its checks' time taken out)
on P1-P5a, seeds 0-9, as ``bench_ab.py`` measures: the two alternate seed by seed, a seed's
time is its minimum over ``--reps`` rounds, a problem's time the median over seeds.

``parallel``, ``large-d`` and ``cheap`` run each TCI pivot search of ``--searches`` (default
``column,batched``: the default column search, and batched search, which reads a round of
pivots' columns and rows per batch).

``counts``: median evaluations of the rank-free default on ``bench_cross.py``'s P1-P5a (seeds
0-9) and on ``bench_quantics.py``'s smooth 1D and 3D functions at 2^10, 2^20 and 2^30 points
per axis (seeds 0-7), and how many runs met their target on independent test entries; with
``--base``, the same for another tree, to check that no problem needs more evaluations; with
``--searches column,batched``, the same for batched search, in this tree.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import _harness
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class SlowInverseSum:
    """1/sum(x) on a grid of [1, 2], after sleeping ``delay`` seconds per entry (the sleep
    releases the GIL, as a simulation or a compiled model would). Module level: it
    pickles, for worker processes."""

    def __init__(self, n=64, delay=5e-4):
        self.grid, self.delay = np.linspace(1.0, 2.0, n), delay

    def __call__(self, indices):
        time.sleep(self.delay * indices.shape[0])
        return 1.0 / self.grid[indices].sum(axis=1)


# ---------------------------------------------------------------------------- parallel


def _executors(workers):
    """name -> a context manager yielding the executor (None: serial)."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    def dask_client(processes):
        import distributed

        @contextlib.contextmanager
        def client():
            n_workers, threads = (workers, 1) if processes else (1, workers)
            # Every socket on loopback (as tests/test_dask.py's loopback_cluster does).
            with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads,
                                          processes=processes,
                                          host="127.0.0.1" if processes else None,
                                          dashboard_address="127.0.0.1:0",
                                          worker_dashboard_address="127.0.0.1:0") as cluster:
                with distributed.Client(cluster) as handle:
                    yield handle

        return client

    return {
        "serial": contextlib.nullcontext,
        f"ThreadPoolExecutor({workers})": lambda: ThreadPoolExecutor(workers),
        f"dask LocalCluster, {workers} threads": dask_client(False),
        f"dask LocalCluster, {workers} processes": dask_client(True),
    }


def _round_trip(executor, workers, rounds=20):
    """Median seconds of one batch of ``workers`` chunks of a function that does nothing:
    what every batch of a run pays on this executor besides its longest chunk."""
    import tensorly_cross as tlc

    if executor is None:
        return None
    lazy = tlc.FunctionTensor(SlowInverseSum(delay=0.0), (64,) * 8, executor=executor)
    batch = np.zeros((8 * workers, 8), dtype=np.int64)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        lazy.evaluate(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_parallel(args):
    import tensorly_cross as tlc

    function = SlowInverseSum(delay=args.delay)
    settings = _executors(args.workers)
    searches = args.searches.split(",")
    walls = {(name, search): [] for name in settings for search in searches}
    results, trips = {}, {}
    for _ in range(args.reps):
        for name, make in settings.items():
            with make() as executor:
                for search in searches:
                    lazy = tlc.FunctionTensor(function, (64,) * 8, executor=executor)
                    start = time.perf_counter()
                    tt, info = tlc.tt_cross(lazy, tol=1e-6, random_state=0, return_info=True,
                                            pivot_search=search)
                    walls[name, search].append(time.perf_counter() - start)
                    results[name, search] = (tt, info)
                    print(f"  {name}, {search}: {walls[name, search][-1]:.2f} s",
                          file=sys.stderr, flush=True)
                trips[name] = _round_trip(executor, args.workers)
    serial_wall = min(walls["serial", searches[0]])
    rows = []
    for (name, search), (tt, info) in results.items():
        serial_tt = results["serial", search][0]
        same = all(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(tt, serial_tt, strict=True))
        wall = min(walls[name, search])
        trip = "-" if trips[name] is None else f"{1e3 * trips[name]:.1f}"
        rows.append([name, search, info.n_evals, info.n_calls, f"{wall:.2f}",
                     f"{wall / serial_wall:.3f}", f"{info.function_seconds:.2f}",
                     f"{info.wait_seconds:.2f}", f"{info.overhead_seconds:.2f}", trip,
                     "yes" if same else "NO"])
    header = ["executor", "pivot search", "evals", "batches", f"wall s (min of {args.reps})",
              f"wall / serial {searches[0]}", "function s (summed)", "waiting s",
              "overhead s", "empty batch ms (median of 20)",
              "same TT as serial (same search)"]
    note = (f"1/sum(x), d=8, n=64, tol 1e-6, seed 0; {args.delay * 1e3:.1f} ms of sleep per "
            "entry. Time columns are from the last rep.")
    return _harness.format_table(header, rows) + "\n\n" + note


# ---------------------------------------------------------------------------- max time


def _max_time_once(executor, chunk_size, max_time, path, delay):
    """One run stopped by ``max_time`` with a checkpoint, then its rerun without one; the
    wall time past ``max_time`` and what the rerun restored."""
    import tensorly_cross as tlc

    function = SlowInverseSum(delay=delay)
    lazy = tlc.FunctionTensor(function, (64,) * 8, executor=executor, chunk_size=chunk_size)
    if os.path.exists(path):
        os.remove(path)
    start = time.perf_counter()
    try:
        _, info = tlc.tt_cross(lazy, tol=1e-6, random_state=0, return_info=True,
                               max_time=max_time, checkpoint=path)
        stop = info.stop_reason
    except tlc.MaxTimeReached:
        stop = "MaxTimeReached"
    wall = time.perf_counter() - start
    rerun = tlc.FunctionTensor(SlowInverseSum(delay=0.0), (64,) * 8)
    _, rerun_info = tlc.tt_cross(rerun, tol=1e-6, random_state=0, return_info=True,
                                 checkpoint=path)
    return wall, stop, rerun_info.n_restored


def run_max_time(args):
    """How far past ``max_time`` a run goes: one call per batch, serial chunks, executors."""
    import tempfile

    executors = _executors(args.workers)
    settings = [("serial", None), ("serial", args.chunk_size),
                (f"ThreadPoolExecutor({args.workers})", None),
                (f"dask LocalCluster, {args.workers} threads", None)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "run.ckpt")
        for name, chunk_size in settings:
            with executors[name]() as executor:
                for max_time in [float(t) for t in args.max_times.split(",")]:
                    wall, stop, restored = _max_time_once(executor, chunk_size, max_time,
                                                          path, args.delay)
                    rows.append([name, chunk_size or "-", f"{max_time:.2f}", f"{wall:.3f}",
                                 f"{wall - max_time:+.3f}", stop, restored])
                    print("  " + " | ".join(str(c) for c in rows[-1]), file=sys.stderr,
                          flush=True)
    header = ["executor", "chunk_size", "max_time s", "wall s", "past max_time s", "stop",
              "restored by the rerun"]
    note = (f"1/sum(x), d=8, n=64, tol 1e-6, seed 0; {args.delay * 1e3:.1f} ms of sleep per "
            "entry; a checkpoint in every run. Serial without chunk_size evaluates a batch "
            "in one call, which runs to its end.")
    return _harness.format_table(header, rows) + "\n\n" + note


# ------------------------------------------------------------------------------ resume


def _resume_problems():
    from problems import problems

    return [problem for problem in problems() if problem.name.split()[0] in ("P2", "P4")]


class Counting:
    """Counts the entries a problem's function computes; kills its process past a count."""

    def __init__(self, function, kill_after=None):
        self.function, self.kill_after, self.computed = function, kill_after, 0

    def __call__(self, indices):
        self.computed += indices.shape[0]
        if self.kill_after is not None and self.computed > self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.function(indices)


def _resume_child(name, path, kill_after):
    import tensorly_cross as tlc

    problem = next(p for p in _resume_problems() if p.name.startswith(name))
    tlc.tt_cross(tlc.FunctionTensor(Counting(problem.function, kill_after), problem.shape),
                 tol=problem.target, random_state=0, checkpoint=path)


def run_resume(args):
    import tempfile

    import tensorly_cross as tlc

    rows = []
    for problem in _resume_problems():
        name = problem.name.split()[0]
        reference = Counting(problem.function)
        tt_ref = tlc.tt_cross(tlc.FunctionTensor(reference, problem.shape), tol=problem.target,
                              random_state=0)
        kill_after = int(0.6 * reference.computed)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, f"{name}.ckpt")
            child = subprocess.run([sys.executable, __file__, "resume-child", name, path,
                                    str(kill_after)], cwd=ROOT, capture_output=True, text=True,
                                   env=dict(os.environ, PYTHONPATH=ROOT))
            stored = os.path.getsize(path)
            resumed = Counting(problem.function)
            tt, info = tlc.tt_cross(tlc.FunctionTensor(resumed, problem.shape),
                                    tol=problem.target, random_state=0, checkpoint=path,
                                    return_info=True)
        difference = max(float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(b).max())
                         for a, b in zip(tt, tt_ref, strict=True))
        rows.append([problem.name, reference.computed, kill_after,
                     "SIGKILL" if child.returncode == -signal.SIGKILL else child.returncode,
                     f"{stored / 2**20:.2f}", info.n_restored, resumed.computed,
                     f"{resumed.computed / reference.computed:.3f}", f"{difference:.1e}"])
        print("  " + " | ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)
    header = ["problem", "uninterrupted evals", "killed after", "exit", "checkpoint MiB",
              "rerun: restored", "rerun: evaluated", "evaluated / uninterrupted",
              "max core difference (relative)"]
    return _harness.format_table(header, rows)


# ----------------------------------------------------------------------------- large d

LARGE_D_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
import _harness
_harness.limit_threads()
import tensorly_cross as tlc
from problems import random_tt_function

d = int(sys.argv[1])
shape = (16,) * d
function = random_tt_function(shape, 8, seed=0)
inside = [0.0]

def timed(indices):
    start = time.perf_counter()
    values = function(indices)
    inside[0] += time.perf_counter() - start
    return values

start = time.perf_counter()
tt, info = tlc.tt_cross(tlc.FunctionTensor(timed, shape), tol=1e-8, random_state=0,
                        return_info=True, pivot_search=sys.argv[3])
wall = time.perf_counter() - start
print(json.dumps(dict(evals=info.n_evals, wall=wall, inside=inside[0], errors=info.val_errors,
                      sweeps=info.n_sweeps, heldout=info.n_heldout, batches=info.n_calls)))
"""


def _large_d_once(tree, d, search):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1")
    output = subprocess.run([sys.executable, "-c", LARGE_D_CHILD, str(d), HERE, search],
                            cwd=tree, env=env, capture_output=True, text=True,
                            check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_large_d(args):
    trees = {"this tree": ROOT}
    if args.base:
        trees = {f"base ({args.base_label or args.base})": args.base, **trees}
    dims = [int(d) for d in args.dims.split(",")]
    searches = args.searches.split(",")
    # Another tree runs the first search only (it may not know the others).
    runs = {(tree, search, d): [] for tree in trees
            for search in (searches if tree == "this tree" else searches[:1]) for d in dims}
    for _ in range(args.reps):
        for d in dims:
            for tree, path in trees.items():
                for search in (searches if tree == "this tree" else searches[:1]):
                    runs[tree, search, d].append(_large_d_once(path, d, search))
                    last = runs[tree, search, d][-1]
                    print(f"  {tree} {search} d={d}: {last['evals']} evals, "
                          f"{1e6 * (last['wall'] - last['inside']) / last['evals']:.2f} "
                          "us/eval", file=sys.stderr, flush=True)
    rows = []
    for (tree, search, d), results in runs.items():
        parameters = (d - 2) * 8 * 16 * 8 + 2 * 16 * 8 - (d - 1) * 64
        overheads = [1e6 * (r["wall"] - r["inside"]) / r["evals"] for r in results]
        first = results[0]
        rows.append([tree, search, d, first["evals"], first["batches"], parameters,
                     f"{first['evals'] / parameters:.2f}", first["sweeps"],
                     " ".join(f"{e:.1e}" for e in first["errors"]),
                     f"{min(overheads):.2f}", f"{statistics.median(overheads):.2f}"])
    header = ["tree", "pivot search", "d", "evals", "batches", "parameters",
              "evals / parameters", "sweeps", "held-out error per sweep",
              f"overhead us/eval (min of {args.reps})", "overhead us/eval (median)"]
    return _harness.format_table(header, rows)


# ------------------------------------------------------------------------------ cheap


def run_cheap(args):
    from bench_cross import N_TEST, run_ours, run_ttpy
    from problems import problems

    wanted = args.problems.split(",")
    chosen = [p for p in problems() if p.name.split()[0] in wanted]
    searches = args.searches.split(",")
    runners = {search: (lambda *a, search=search: run_ours(*a, pivot_search=search))
               for search in searches}
    runners["ttpy"] = run_ttpy
    walls = {(p.name, who): {} for p in chosen for who in runners}
    for _ in range(args.reps):
        for problem in chosen:
            rng = np.random.default_rng(12345)
            test = np.stack([rng.integers(n, size=N_TEST) for n in problem.shape], axis=1)
            exact = problem.function(test)
            for seed in range(args.seeds):
                for who, runner in runners.items():
                    wall = runner(problem, test, exact, seed)["wall"]
                    times = walls[problem.name, who]
                    times[seed] = min(times.get(seed, np.inf), wall)
        print("  round done", file=sys.stderr, flush=True)
    rows, ratios = [], {search: [] for search in searches}
    for problem in chosen:
        ttpy = float(np.median(list(walls[problem.name, "ttpy"].values())))
        ours = {search: float(np.median(list(walls[problem.name, search].values())))
                for search in searches}
        for search in searches:
            ratios[search].append(ours[search] / ttpy)
        rows.append([problem.name, *(f"{1e3 * ours[s]:.1f}" for s in searches),
                     f"{1e3 * ttpy:.1f}", *(f"{ours[s] / ttpy:.2f}" for s in searches)])
    rows.append(["geometric mean", *([""] * (len(searches) + 1)),
                 *(f"{np.exp(np.mean(np.log(ratios[s]))):.2f}" for s in searches)])
    header = ["problem", *(f"ours, {s} search: ms (median of seeds, min of {args.reps})"
                           for s in searches), "ttpy ms",
              *(f"ours, {s} / ttpy" for s in searches)]
    return _harness.format_table(header, rows)


# ----------------------------------------------------------------------------- counts

COUNTS_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import _harness
_harness.limit_threads()
import numpy as np
import tensorly_cross as tlc
import bench_quantics
from problems import problems

out = {}
for problem in problems()[:5]:
    rng = np.random.default_rng(12345)
    test = np.stack([rng.integers(n, size=10_000) for n in problem.shape], axis=1)
    exact = problem.function(test)
    runs = []
    for seed in range(10):
        tt, info = tlc.tt_cross(tlc.FunctionTensor(problem.function, problem.shape),
                                tol=problem.target, random_state=seed, return_info=True,
                                pivot_search=sys.argv[2])
        error = np.linalg.norm(np.asarray(tlc.tt_entries(tt, test)) - exact)
        runs.append((int(info.n_evals), bool(error <= problem.target * np.linalg.norm(exact))))
    out[problem.name] = runs
smooth = (("smooth 1D", bench_quantics.smooth_1d), ("smooth 3D", bench_quantics.smooth_3d))
for name, make in smooth:
    for level in (10, 20, 30):
        function, shape, tol = make(2**level)
        rng = np.random.default_rng(99)
        test = np.stack([rng.integers(n, size=10_000) for n in shape], axis=1)
        exact = function(test)
        runs = []
        for seed in range(8):
            lazy = tlc.QuanticsTensor(tlc.FunctionTensor(function, shape))
            tt, info = tlc.tt_cross(lazy, tol=tol, max_rank=32, random_state=seed,
                                    return_info=True, n_iter_max=12,
                                    pivot_search=sys.argv[2])
            approx = np.asarray(tlc.tt_entries(tt, lazy.layout.to_quantics(test)))
            error = np.linalg.norm(approx - exact)
            runs.append((int(info.n_evals), bool(error <= tol * np.linalg.norm(exact))))
        out[f"quantics {name} 2^{level}"] = runs
print(json.dumps(out))
"""


def _counts_of(tree, search):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1")
    output = subprocess.run([sys.executable, "-c", COUNTS_CHILD, HERE, search], cwd=tree,
                            env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_counts(args):
    """Each tree with the first of ``--searches``, and this tree with the others."""
    searches = args.searches.split(",")
    trees = {"this tree": (ROOT, searches[0])}
    if args.base:
        trees = {f"base ({args.base_label or args.base})": (args.base, searches[0]), **trees}
    trees.update({f"this tree, {search} search": (ROOT, search) for search in searches[1:]})
    counts = {tree: _counts_of(*where) for tree, where in trees.items()}
    rows = []
    for problem in counts["this tree"]:
        row = [problem]
        for tree in trees:
            runs = counts[tree][problem]
            row += [f"{statistics.median(e for e, _ in runs):.0f}",
                    f"{sum(met for _, met in runs)}/{len(runs)}"]
        if args.base:
            base = statistics.median(e for e, _ in counts[next(iter(trees))][problem])
            now = statistics.median(e for e, _ in counts["this tree"][problem])
            row.append(f"{now / base:.3f}")
        column = statistics.median(e for e, _ in counts["this tree"][problem])
        for search in searches[1:]:
            other = counts[f"this tree, {search} search"][problem]
            row.append(f"{statistics.median(e for e, _ in other) / column:.3f}")
        rows.append(row)
    header = ["problem"]
    for tree in trees:
        header += [f"{tree}: median evals", "met"]
    if args.base:
        header.append("this / base")
    header += [f"{search} / {searches[0]}" for search in searches[1:]]
    return _harness.format_table(header, rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    parallel = commands.add_parser("parallel")
    parallel.add_argument("--workers", type=int, default=8)
    parallel.add_argument("--delay", type=float, default=5e-4, help="seconds per entry")
    parallel.add_argument("--reps", type=int, default=3)
    resume = commands.add_parser("resume")
    max_time = commands.add_parser("max-time")
    max_time.add_argument("--workers", type=int, default=8)
    max_time.add_argument("--delay", type=float, default=5e-3, help="seconds per entry")
    max_time.add_argument("--chunk-size", type=int, default=16)
    max_time.add_argument("--max-times", default="0.3,1.5,3")
    large_d = commands.add_parser("large-d")
    large_d.add_argument("--dims", default="10,20,40,80")
    large_d.add_argument("--reps", type=int, default=3)
    large_d.add_argument("--base", default=None, help="another source tree to compare")
    cheap = commands.add_parser("cheap")
    cheap.add_argument("--problems", default="P1,P2,P3,P4,P5a")
    cheap.add_argument("--seeds", type=int, default=10)
    cheap.add_argument("--reps", type=int, default=5)
    counts = commands.add_parser("counts")
    counts.add_argument("--base", default=None, help="another source tree to compare")
    counts.add_argument("--base-label", default=None, help="its name in the table")
    child = commands.add_parser("resume-child")
    child.add_argument("name")
    child.add_argument("path")
    child.add_argument("kill_after", type=int)
    large_d.add_argument("--base-label", default=None, help="its name in the table")
    for command in (parallel, resume, max_time, large_d, cheap, counts):
        command.add_argument("--out", default=None)
    counts.add_argument("--searches", default="column",
                        help="the first for every tree, the others for this tree")
    for command in (parallel, large_d, cheap):
        command.add_argument("--searches", default="column,batched",
                             help="TCI pivot searches to run, comma-separated")
    args = parser.parse_args()
    controller = _harness.limit_threads()
    if args.command == "resume-child":
        _resume_child(args.name, args.path, args.kill_after)
        return
    runner = {"parallel": run_parallel, "resume": run_resume, "max-time": run_max_time,
              "large-d": run_large_d,
              "cheap": run_cheap, "counts": run_counts}
    _harness.emit(runner[args.command](args), args.out)
    del controller


if __name__ == "__main__":
    main()
