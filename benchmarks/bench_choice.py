"""The settings a user chooses, side by side on small problems (docs/choosing.rst).

    python benchmarks/bench_choice.py [--seeds 5] [--out benchmarks/results/choice.md]

Each problem is crossed (at most 12 sweeps) with every setting that applies to it: the
rank-adaptive TCI with each pivot search, the fixed-rank ALS cross at the true rank, at
twice and at half of it, oversampled (``oversample=2``), the quantics layout, and, on a
``.npy`` file, another mode order (``TransposedTensor``) and ``max_slices``. Medians over
``--seeds`` starts (seeds 0, 1, ...): distinct evaluations (held-out entries included),
the relative error on 10,000 independent random entries, wall time, and for the file the
share of its 4 KiB pages read; "met" counts the starts whose test error reached the
target. TT-SVD rows read the whole tensor (TensorLy's ``tensor_train``), for reference.
One BLAS thread.
"""

import argparse
import os
import time

import _harness
import numpy as np
import tensorly as tl
from problems import phantom, problems, smooth_field

import tensorly_cross as tlc

N_TEST = 10_000


def boxes(indices, size=64):
    """Two overlapping axis-aligned boxes: piecewise constant, plain TT rank 2."""
    x, y, z = (indices[:, axis] for axis in range(3))
    first = (x >= 8) & (x < 40) & (y >= 4) & (y < 52) & (z >= 20) & (z < 30)
    second = (x >= 24) & (x < 60) & (y >= 30) & (y < 44) & (z >= 10) & (z < 50)
    return first.astype(float) + 2.0 * second.astype(float)


def cases():
    """(problem name, shape, function, target, settings): settings map a label to the
    lazy-tensor wrapper and the keyword arguments of tt_cross."""
    plain, quantics = (lambda lazy: lazy), tlc.QuanticsTensor

    def xzy(lazy):  # the file's contiguous axis as the middle TT mode
        return tlc.TransposedTensor(lazy, (0, 2, 1))

    by_name = {problem.name.split()[0]: problem for problem in problems()}
    p1, p4 = by_name["P1"], by_name["P4"]
    tci = {f"TCI, {search} search": (plain, dict(pivot_search=search))
           for search in ("column", "rook")}
    return [
        (p1.name, p1.shape, p1.function, p1.target, {
            **tci,
            "ALS, true rank 6": (plain, dict(rank=6)),
            "ALS, rank 12 (twice)": (plain, dict(rank=12)),
            "ALS, rank 3 (half)": (plain, dict(rank=3)),
            "ALS, rank 6, oversample=2": (plain, dict(rank=6, oversample=2)),
        }),
        (p4.name, p4.shape, p4.function, p4.target, {
            **tci,
            "ALS, rank 4": (plain, dict(rank=4)),
            "ALS, rank 8": (plain, dict(rank=8)),
        }),
        ("smooth 3D 256^3 (P5a)", (256,) * 3, smooth_field, 1e-6, {
            **tci,
            "TCI, quantics": (quantics, {}),
            "ALS, true rank 3": (plain, dict(rank=3)),
            "ALS, rank 4": (plain, dict(rank=4)),
        }),
        ("two boxes 64^3", (64,) * 3, boxes, 1e-6, {
            **tci,
            "ALS, rank 2": (plain, dict(rank=2)),
            "TCI, quantics, column search": (quantics, dict(pivot_search="column")),
            "TCI, quantics, auto search": (quantics, dict(pivot_search="auto")),
        }),
        ("phantom 128^3 (sharp edges)", (128,) * 3, lambda idx: phantom(idx, 128), 0.3, {
            "TCI, column search (max_rank 32)": (plain, dict(max_rank=32)),
            "ALS, rank 16": (plain, dict(rank=16)),
            "ALS, rank 16, oversample=2": (plain, dict(rank=16, oversample=2)),
            "ALS, rank 32": (plain, dict(rank=32)),
            "ALS, rank 32, oversample=2": (plain, dict(rank=32, oversample=2)),
            "TCI, quantics, auto search (max_rank 32)": (
                quantics, dict(pivot_search="auto", max_rank=32)),
            "TT-SVD, rank 16": ("svd", dict(rank=16)),
            "TT-SVD, rank 32": ("svd", dict(rank=32)),
        }),
        ("phantom 256^3 .npy, C order", (256,) * 3, "npy", 0.3, {
            # A file is stored data: with a rank and no max_slices, method="auto" runs the
            # least-squares cross there.
            "least-squares (auto), rank 16": (plain, dict(rank=16)),
            "least-squares (auto), rank 16, order (x, z, y)": (xzy, dict(rank=16)),
            "ALS, rank 16, order (x, z, y), max_slices=4": (xzy, dict(rank=16, max_slices=4)),
            "ALS, rank 16, order (x, z, y), max_slices=4, oversample=2": (
                xzy, dict(rank=16, max_slices=4, oversample=2)),
        }),
    ]


def run(source, target, wrap, options, seed, test, exact):
    if wrap == "svd":
        return run_svd(source, options["rank"], test, exact)
    base = source()
    lazy = wrap(base)
    start = time.perf_counter()
    tt, info = tlc.tt_cross(lazy, tol=target, random_state=seed, return_info=True,
                            n_iter_max=12, **options)
    wall = time.perf_counter() - start
    if hasattr(lazy, "layout"):
        query = lazy.layout.to_quantics(test)
    elif hasattr(lazy, "from_original"):
        query = lazy.from_original(test)
    else:
        query = test
    approx = np.asarray(tlc.tt_entries(tt, query))
    error = float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))
    pages = getattr(base, "pages_read", None)
    read = pages * 4096 / os.path.getsize(base.path) if pages is not None else None
    return dict(evals=info.n_evals, error=error, wall=wall, rank=max(tt.rank),
                stop=info.stop_reason, read=read)


def run_svd(source, rank, test, exact):
    lazy = source()
    start = time.perf_counter()
    dense = lazy.evaluate(np.indices(lazy.shape).reshape(lazy.ndim, -1).T)
    tt = tl.decomposition.tensor_train(tl.reshape(dense, lazy.shape), rank=rank)
    wall = time.perf_counter() - start
    approx = np.asarray(tlc.tt_entries(tt, test))
    error = float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))
    return dict(evals=lazy.size, error=error, wall=wall, rank=max(tt.rank), stop="-",
                read=None)


def source_of(shape, function):
    """A function of the lazy tensor to cross (a fresh one per run: counters start at 0)."""
    if function == "npy":
        from bench_volume import write_phantom

        _, path = write_phantom(shape[0])  # benchmarks/_data, written once
        return lambda: tlc.open_volume(path)
    return lambda: tlc.FunctionTensor(function, shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    controller = _harness.limit_threads()
    rows = []
    for name, shape, function, target, settings in cases():
        source = source_of(shape, function)
        rng = np.random.default_rng(12345)
        test = np.stack([rng.integers(n, size=N_TEST) for n in shape], axis=1)
        exact = np.asarray(source().evaluate(test))
        for label, (wrap, options) in settings.items():
            seeds = 1 if wrap == "svd" else args.seeds  # TT-SVD is deterministic
            results = [run(source, target, wrap, options, seed, test, exact)
                       for seed in range(seeds)]
            median = {key: float(np.median([r[key] for r in results]))
                      for key in ("evals", "error", "wall", "rank")}
            met = sum(r["error"] <= target for r in results)
            stops = sorted({r["stop"] for r in results})
            read = ("-" if results[0]["read"] is None
                    else f"{100 * np.median([r['read'] for r in results]):.1f}%")
            rows.append([f"{name} (target {target:.0e})", label, f"{median['evals']:.0f}",
                         f"{median['error']:.1e}", f"{met}/{seeds}", f"{median['rank']:.0f}",
                         ", ".join(stops), read, f"{median['wall']:.2f}"])
            print("  " + " | ".join(rows[-1]), flush=True)
    text = _harness.format_table(["problem (target)", "setting", "evals", "test error",
                                  "met", "max rank", "stop", "file read", "wall s"], rows)
    _harness.emit(text, args.out)
    del controller


if __name__ == "__main__":
    main()
