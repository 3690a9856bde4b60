"""Over-claims on piecewise-constant functions: the levels guard on and off, side by side.

    python benchmarks/bench_levels.py --seeds 40 --out benchmarks/results/levels.md

A binary ball (and two balls) read through a callable, in the plain and the quantics
layouts, ``tt_cross`` at its defaults with ``tol=1e-2``, seeds 0 to ``--seeds`` - 1. Each
run is judged on its true error over every entry. Printed per case and per guard setting:
how many runs stopped on ``"tol"``, how many of those have a true error above 1.5 and 3
times ``tol`` (over-claims), the largest true error among them and the most entries one of
them has off by more than half the contrast, and the median evaluation count. A ball fills
12% of the grid: one entry off in 32^3 is a relative error of 0.016.

"Off" disables the guard (``stopping.LEVEL_SHARE`` set to infinity) in the same process, so
the two columns differ only by it: a sample of held-out values that sit on a few levels
makes every pass be confirmed on fresh entries and judged on its upper 95% bound, as on
stored data (docs/guarantees.rst).
"""

import argparse
import statistics
import warnings

import _harness
import numpy as np

TOL = 1e-2


def ball(n, centres=((0.43, 0.52, 0.61),), radius=0.31):
    """A binary function on an n^3 grid: 1 inside any of the balls, 0 outside."""
    centres = np.asarray(centres) * (n - 1)

    def function(indices):
        inside = np.zeros(indices.shape[0], dtype=bool)
        for centre in centres:
            inside |= np.linalg.norm(indices - centre, axis=1) <= radius * n
        return inside.astype(np.float64)

    return function, (n, n, n)


CASES = {
    "ball 32^3": (lambda: ball(32), None),
    "ball 64^3": (lambda: ball(64), None),
    "ball 32^3 quantics grouped": (lambda: ball(32), "grouped"),
    "ball 32^3 quantics interleaved": (lambda: ball(32), "interleaved"),
    "two balls 32^3 quantics interleaved": (
        lambda: ball(32, ((0.3, 0.3, 0.4), (0.7, 0.65, 0.6)), radius=0.2), "interleaved"),
}


def run(case, seed):
    """(stop reason, true relative error over every entry, evaluations) of one run."""
    import tensorly as tl

    import tensorly_cross as tlc

    make, order = CASES[case]
    function, shape = make()
    lazy = tlc.FunctionTensor(function, shape)
    if order:
        lazy = tlc.QuanticsTensor(lazy, order=order)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt, info = tlc.tt_cross(lazy, tol=TOL, random_state=seed, return_info=True)
    every = np.indices(shape).reshape(len(shape), -1).T
    exact = function(every)
    if order:
        approx = np.asarray(tlc.tt_entries(tt, lazy.layout.to_quantics(every)))
    else:
        approx = np.asarray(tl.tt_to_tensor(tt)).reshape(-1)
    error = float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))
    n_off = int(np.count_nonzero(np.abs(approx - exact) > 0.5))  # half the contrast
    return info.stop_reason, error, n_off, info.n_evals


def summary(results):
    """Table cells for one case and guard setting."""
    tol_stops = [(error, n_off) for stop, error, n_off, _ in results if stop == "tol"]
    errors = [error for error, _ in tol_stops]
    return [f"{len(tol_stops)}/{len(results)}",
            sum(error > 1.5 * TOL for error in errors), sum(error > 3 * TOL for error in errors),
            f"{max(errors):.3f}" if errors else "-",
            max((n_off for _, n_off in tol_stops), default="-"),
            int(statistics.median(evals for *_, evals in results))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    controller = _harness.limit_threads()
    from tensorly_cross.cross import stopping

    share = stopping.LEVEL_SHARE
    rows = []
    for case in CASES:
        for label, value in (("off", float("inf")), ("on", share)):
            stopping.LEVEL_SHARE = value
            results = [run(case, seed) for seed in range(args.seeds)]
            rows.append([case, label, *summary(results)])
            print(rows[-1], flush=True)
    stopping.LEVEL_SHARE = share
    header = ["case", "guard", '"tol" stops', "> 1.5 tol", "> 3 tol", "largest error",
              "most entries off", "median evals"]
    _harness.emit(
        f"Binary functions through a callable, tt_cross defaults, tol={TOL}, seeds "
        f"0-{args.seeds - 1}; true errors over every entry.\n\n"
        + _harness.format_table(header, rows), args.out)
    del controller


if __name__ == "__main__":
    main()
