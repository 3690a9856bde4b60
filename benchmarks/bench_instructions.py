"""Instructions executed by ``tt_cross`` on P1-P5a, per source tree, counted by valgrind.

Wall time on a shared virtual machine moves by 10-40% between runs of the same code (steal
time), more than most changes to the cross's bookkeeping. The number of instructions a
run executes does not depend on the load: callgrind counts them exactly, so two trees
compare to a fraction of a percent. It does not see what costs time without instructions
(cache misses, memory traffic), so it complements ``bench_ab.py`` and ``bench_scale.py
cheap``; it does not replace them. Needs ``valgrind`` (Debian: ``apt install valgrind``);
each run takes about 60x its normal time::

    python benchmarks/bench_instructions.py --problems P2,P4 --seeds 4 /tmp/base . \
        --out benchmarks/results/instructions.md

A tree's count for a problem is that of a process that imports it and runs the seeds
``0..seeds-1`` once, minus that of one that only imports it (so that a heavier import does
not count). The trees' ``tensorly_cross`` is found first on the path, as in ``bench_ab.py``.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

import _harness

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
import tensorly_cross as tlc
from problems import problems

for problem in problems():
    if problem.name.split()[0] != sys.argv[2]:
        continue
    for seed in range(int(sys.argv[3])):
        tlc.tt_cross(tlc.FunctionTensor(problem.function, problem.shape), tol=problem.target,
                     random_state=seed)
"""


def count_instructions(tree, problem, seeds):
    """Instructions of one process running ``problem`` for ``seeds`` seeds in ``tree``."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                             sys.executable, "-c", CHILD, HERE, problem, str(seeds)],
                            cwd=tree, env=env, capture_output=True, text=True, check=True)
    match = re.search(r"refs:\s+([\d,]+)", result.stderr)
    return int(match.group(1).replace(",", ""))


def _label(tree):
    """A tree's name in the table: "this tree", or its folder's name."""
    path = os.path.abspath(tree)
    return "this tree" if path == os.path.dirname(HERE) else os.path.basename(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="P1,P2,P3,P4,P5a")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--out", default=None)
    parser.add_argument("trees", nargs="+", help="source trees; the first is the reference")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench_instructions.py needs valgrind (apt install valgrind).")
    names = args.problems.split(",")
    rows = []
    for problem in names:
        counts = []
        for tree in args.trees:
            # The import alone: a problem name that matches nothing runs no seed.
            imports = count_instructions(tree, "none", 0)
            counts.append(count_instructions(tree, problem, args.seeds) - imports)
            print(f"  {problem} {tree}: {counts[-1] / 1e6:.1f} M", file=sys.stderr, flush=True)
        rows.append([problem, *(f"{count / 1e6:.1f}" for count in counts),
                     *(f"{count / counts[0]:.3f}" for count in counts[1:])])
    labels = [_label(tree) for tree in args.trees]
    header = ["problem", *(f"{label}: M instructions ({args.seeds} seeds)" for label in labels),
              *(f"{label} / {labels[0]}" for label in labels[1:])]
    _harness.emit(_harness.format_table(header, rows), args.out)


if __name__ == "__main__":
    main()
