"""A/B: evaluation counts of the smooth benchmarks from two source trees (no timing).

    git worktree add /tmp/base <commit>
    python benchmarks/bench_evals_ab.py /tmp/base .

Runs, in a fresh process per tree, ``tt_cross`` on problems P1-P5 (``problems.py``; seeds
0-9, rank-adaptive, and fixed-rank where a problem gives a rank) and the quantics problems
of ``bench_quantics.py`` (smooth 1D at 2^10, 2^20, 2^30; smooth 3D at 2^10, 2^20; the
phantom at 2^8), and prints every count that differs and the largest relative change: a
change of the engine that must not cost evaluations on smooth functions is checked here.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import _harness
_harness.limit_threads()
import tensorly_cross as tlc
import bench_quantics
from problems import problems

counts = {}
for problem in problems():
    name = problem.name.split()[0]
    lazy = tlc.FunctionTensor(problem.function, problem.shape)
    for seed in range(10):
        counts[f"{name} seed {seed}"] = tlc.tt_cross(
            lazy, tol=problem.target, random_state=seed, return_info=True)[1].n_evals
        if problem.given_rank:
            counts[f"{name} rank {problem.given_rank} seed {seed}"] = tlc.tt_cross(
                lazy, rank=problem.given_rank, tol=problem.target, random_state=seed,
                return_info=True)[1].n_evals
for make, levels in ((bench_quantics.smooth_1d, (10, 20, 30)),
                     (bench_quantics.smooth_3d, (10, 20)), (bench_quantics.phantom_3d, (8,))):
    for level in levels:
        counts[f"{make.__name__} 2^{level}"] = bench_quantics.measure(make, level, 64)["evals"]
print(json.dumps(counts))
"""


def counts_of(tree):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", CHILD, HERE], cwd=tree, env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"the counts of {tree} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs=2, help="the A and B source trees")
    args = parser.parse_args()
    first, second = (counts_of(tree) for tree in args.trees)
    changed = {key: (first[key], second.get(key)) for key in first
               if first[key] != second.get(key)}
    for key, (a, b) in changed.items():
        print(f"{key}: {a} -> {b}")
    worst = max((abs(b - a) / a for a, b in changed.values() if b is not None), default=0.0)
    print(f"{len(changed)} of {len(first)} counts differ; largest relative change "
          f"{100 * worst:.1f}%")


if __name__ == "__main__":
    main()
