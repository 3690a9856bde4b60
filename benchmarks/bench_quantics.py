"""Samples vs grid size: quantics (QTT) cross of smooth 1D/3D functions and a 3D phantom.

    python benchmarks/bench_quantics.py [--out benchmarks/results/quantics.md] [--plot PNG]

For grids of 2^L points per axis (L = 10 ... 30): distinct evaluations to reach the
tolerance (our own stop on 1000 held-out entries, counted) and the relative error on
10,000 independent random entries. The claim to check: evaluations grow like log(size).
"""

import argparse
import time

import _harness
import numpy as np
from problems import phantom

import tensorly_cross as tlc

LEVELS = (10, 15, 20, 25, 30)


def smooth_1d(n):
    def function(indices):
        x = indices[:, 0] / (n - 1)
        return np.sin(20.0 * x) * np.exp(-x) + 0.1 * x

    return function, (n,), 1e-8


def smooth_3d(n):
    def function(indices):
        x = indices / (n - 1) * 2.0 - 1.0
        return np.exp(-np.sum(x**2, axis=1)) * np.cos(2.0 * x[:, 0]) + 0.3 * x[:, 2]

    return function, (n, n, n), 1e-6


def phantom_3d(n):
    return (lambda indices: phantom(indices, n)), (n, n, n), 3e-2


def measure(make, level, max_rank):
    function, shape, tol = make(2**level)
    lazy = tlc.QuanticsTensor(tlc.FunctionTensor(function, shape))
    start = time.perf_counter()
    tt, info = tlc.tt_cross(lazy, tol=tol, max_rank=max_rank, random_state=0,
                            return_info=True, n_iter_max=12)
    wall = time.perf_counter() - start
    rng = np.random.default_rng(99)
    test = np.stack([rng.integers(n, size=10_000) for n in shape], axis=1)
    approx = np.asarray(tlc.tt_entries(tt, lazy.layout.to_quantics(test)))
    exact = function(test)
    error = float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))
    return dict(evals=info.n_evals, error=error, rank=max(tt.rank), wall=wall, tol=tol,
                stop=info.stop_reason)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    controller = _harness.limit_threads()
    cases = [("smooth 1D", smooth_1d, 32), ("smooth 3D", smooth_3d, 32),
             ("phantom 3D", phantom_3d, 48)]
    rows, curves = [], {}
    for name, make, max_rank in cases:
        base = None
        for level in LEVELS:
            result = measure(make, level, max_rank)
            base = result["evals"] if base is None else base
            curves.setdefault(name, []).append(result["evals"])
            rows.append([name, f"2^{level}", result["evals"], f"{result['evals'] / base:.2f}",
                         f"{result['error']:.1e} (tol {result['tol']:.0e})", result["rank"],
                         result["stop"], f"{result['wall']:.1f}"])
            print("  " + " | ".join(str(c) for c in rows[-1]), flush=True)
    text = _harness.format_table(["function", "points per axis", "evals", "evals / 2^10",
                                  "held-out error", "max rank", "stop", "wall s"], rows)
    _harness.emit(text, args.out)
    if args.plot:
        _plot(curves, args.plot)
    del controller


def _plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, evals in curves.items():
        axes.plot(LEVELS, evals, marker="o", label=name)
    axes.set_xlabel("log2(points per axis)")
    axes.set_ylabel("distinct evaluations")
    axes.set_yscale("log")
    axes.set_title("Quantics cross: evaluations vs grid size")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
