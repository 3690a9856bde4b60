"""A/B: wall time of ``tt_cross`` (no rank) from two source trees, interleaved, one BLAS thread.

Compares two versions of tensorly-cross on problems P1-P5 (``problems.py``), e.g. a git
worktree of an older commit against the working tree::

    git worktree add /tmp/base <commit>
    python benchmarks/bench_ab.py --problems P1,P2 --reps 5 /tmp/base .

Each rep runs seeds 0-9 once per tree, each tree in a fresh process that imports its own
``tensorly_cross`` (the trees alternate, so that machine noise hits both alike); a seed's
time is its minimum over the reps, and the table gives the median over seeds.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
import _harness
_harness.limit_threads()
import tensorly_cross as tlc
from problems import problems

walls = {}
for problem in problems():
    name = problem.name.split()[0]
    if name not in sys.argv[1].split(","):
        continue
    walls[name] = []
    for seed in range(10):
        start = time.perf_counter()
        tlc.tt_cross(tlc.FunctionTensor(problem.function, problem.shape), tol=problem.target,
                     random_state=seed)
        walls[name].append(time.perf_counter() - start)
print(json.dumps(walls))
"""


def run_tree(tree, problem_names):
    """Seconds per seed and problem, with ``tree``'s tensorly_cross first on the path."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1")
    output = subprocess.run([sys.executable, "-c", CHILD, problem_names, HERE], cwd=tree,
                            env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="P1,P2,P3,P4,P5a")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("trees", nargs=2, help="the A and B source trees")
    args = parser.parse_args()
    runs = {tree: [] for tree in args.trees}
    for _ in range(args.reps):
        for tree in args.trees:
            runs[tree].append(run_tree(tree, args.problems))
    first, second = args.trees
    print(f"| problem | A ms | B ms | B / A |   (A = {first}, B = {second})")
    for name in args.problems.split(","):
        a, b = (float(np.median(np.min([run[name] for run in runs[tree]], axis=0)))
                for tree in args.trees)
        print(f"| {name} | {1e3 * a:.1f} | {1e3 * b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
