"""maxvol and rect_maxvol: tensorly-cross against the peers' kernels, one BLAS thread.

Run ``bash benchmarks/setup_peers.sh`` first (peers missing from the environment are
reported and skipped), then::

    python benchmarks/bench_maxvol.py [--repeats 5] [--out benchmarks/results/maxvol.md]

Each cell is the median wall time of ``--repeats`` runs on the same Gaussian matrix, with
the max |B| (maxvol) or the longest coefficient row (rect_maxvol) that the kernel reached.
Ratios are peer time / our time (> 1: we are faster).
"""

import argparse
import sys

import _harness
import numpy as np

SIZES = [(1_000, 10), (10_000, 20), (100_000, 32), (1_000_000, 16)]
# teneva builds the n x n permutation matrix of scipy.linalg.lu: 8 n^2 bytes.
TENEVA_MAX_BYTES = 4 * 2**30


def square_kernels():
    """name -> callable(A) returning (rows, B) or None when the peer is missing."""
    import tensorly_cross

    kernels = {"tensorly-cross": lambda a: tensorly_cross.maxvol(a, tol=1.05, max_iter=100)}
    kernels["maxvolpy (C)"] = _optional(lambda: __import__("maxvolpy.maxvol").maxvol.c_maxvol,
                                        lambda f: lambda a: f(a, tol=1.05, max_iters=100))
    kernels["tntorch (Python)"] = _optional(lambda: __import__("tntorch.maxvol").maxvol.py_maxvol,
                                            lambda f: lambda a: f(a, tol=1.05, max_iters=100))
    kernels["teneva"] = _optional(lambda: __import__("teneva").maxvol,
                                  lambda f: lambda a: f(a, e=1.05, k=100))
    kernels["ttpy (Fortran)"] = _optional(_ttpy_maxvol, lambda f: f)
    kernels["TensorLy contrib"] = _optional(_tensorly_maxvol, lambda f: f)
    return kernels


def rect_kernels():
    import tensorly_cross

    kernels = {"tensorly-cross": lambda a: tensorly_cross.rect_maxvol(a, tol=1.1)}
    kernels["maxvolpy (C)"] = _optional(
        lambda: __import__("maxvolpy.maxvol").maxvol.c_rect_maxvol,
        lambda f: lambda a: f(a, tol=1.1, start_maxvol_iters=100))
    kernels["tntorch (Python)"] = _optional(
        lambda: __import__("tntorch.maxvol").maxvol.py_rect_maxvol,
        lambda f: lambda a: f(a, tol=1.1, start_maxvol_iters=100))
    kernels["teneva"] = _optional(lambda: __import__("teneva").maxvol_rect,
                                  lambda f: lambda a: f(a, e=1.1, e0=1.05, k0=100))
    return kernels


def _tensorly_maxvol():
    from tensorly.contrib.decomposition._tt_cross import maxvol

    def run(matrix):
        rows, _ = maxvol(matrix)
        rows = np.asarray(rows, dtype=np.int64)
        return rows, matrix @ np.linalg.inv(matrix[rows])

    return run


def _ttpy_maxvol():
    import tt.maxvol

    def run(matrix):
        # ttpy's tol is the excess over 1 and nswp its swap budget: the same stop as ours.
        rows = np.asarray(tt.maxvol.maxvol(matrix, nswp=100, tol=0.05), dtype=np.int64)
        return rows, None

    return run


def _optional(load, wrap):
    try:
        return wrap(load())
    except ImportError:
        return None


def quality(matrix, rows, coefficients, rect):
    """max |B| (square) or max row norm (rect), recomputed from the rows for fairness."""
    rows = np.asarray(rows, dtype=np.int64)
    if rect:
        coefficients = matrix @ np.linalg.pinv(matrix[rows])
        return float(np.linalg.norm(coefficients, axis=1).max()), len(rows)
    coefficients = np.linalg.solve(matrix[rows].T, matrix.T).T
    return float(np.abs(coefficients).max()), len(rows)


def run(kernels, rect, repeats):
    header = ["n x r"] + [f"{name}" for name in kernels]
    table = []
    for n_rows, n_cols in SIZES:
        matrix = np.random.default_rng(n_rows + n_cols).standard_normal((n_rows, n_cols))
        cells, ours = [], None
        for name, kernel in kernels.items():
            cell, seconds = _measure(name, kernel, matrix, rect, repeats)
            ours = seconds if name == "tensorly-cross" else ours
            cells.append((cell, seconds))
            print(f"  {n_rows}x{n_cols} {name}: {cell}", file=sys.stderr, flush=True)
        row = [f"{n_rows:.0e} x {n_cols}"]
        for (cell, seconds), name in zip(cells, kernels, strict=True):
            if seconds is not None and name != "tensorly-cross":
                cell += f" ({seconds / ours:.1f}x)"
            row.append(cell)
        table.append(row)
    return _harness.format_table(header, table)


def _measure(name, kernel, matrix, rect, repeats):
    if kernel is None:
        return "not installed", None
    if name == "teneva" and 8 * matrix.shape[0] ** 2 > TENEVA_MAX_BYTES:
        return f"skipped: n x n matrix ({8 * matrix.shape[0] ** 2 / 2**30:.0f} GiB)", None
    seconds, (rows, coefficients) = _harness.median_time(lambda: kernel(matrix), repeats)
    value, n_selected = quality(matrix, rows, coefficients, rect)
    label = "max row norm" if rect else "max|B|"
    extra = f", {n_selected} rows" if rect else ""
    return f"{seconds * 1e3:.1f} ms, {label} {value:.3f}{extra}", seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    args = parser.parse_args()
    controller = _harness.limit_threads()
    report = ["## maxvol (tol 1.05, max_iter 100)", "", run(square_kernels(), False, args.repeats),
              "", "## rect_maxvol (tol 1.1)", "", run(rect_kernels(), True, args.repeats),
              "", "Cells: median time of the runs, quality reached; (k x) = peer time / ours."]
    text = "\n".join(report)
    _harness.emit(text, args.out)
    del controller


if __name__ == "__main__":
    main()
