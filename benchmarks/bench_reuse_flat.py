"""Indices kept from a flat tensor, reused on a slightly changed one (docs/pipeline.rst).

    python benchmarks/bench_reuse_flat.py [--cases 300]

A flat 6^3 tensor is searched at rank 3 (ALS, seeds 0-19): past the data's rank 1 its
pivots are arbitrary. One entry is then changed by 1e-8 to 1e-2 (log-uniform) and the
changed tensor is crossed twice: through the kept indices (``cross_interpolate``, what
``CrossEmbedding(refresh_every > 1)`` does between searches) and by a fresh search. Prints
how many reuses end above 1% relative error, how many raise, and the ranges of errors.
"""

import argparse
import warnings

import numpy as np

import tensorly_cross as tlc


def _error(tt, tensor):
    return float(np.linalg.norm(np.asarray(tt.to_tensor()) - tensor) / np.linalg.norm(tensor))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # RankDeficiencyWarning is expected on every reuse here
    flat = np.ones((6, 6, 6))
    reused, fresh, raised = [], [], 0
    for case in range(args.cases):
        rng = np.random.default_rng(case)
        changed = flat.copy()
        changed[tuple(rng.integers(0, 6, 3))] += 10 ** rng.uniform(-8, -2)
        indices = tlc.select_indices(flat, rank=3, method="als", random_state=case % 20)
        try:
            reused.append(_error(tlc.cross_interpolate(changed, indices), changed))
        except np.linalg.LinAlgError:
            raised += 1
        fresh.append(_error(tlc.tt_cross(changed, rank=3, method="als",
                                         random_state=case % 20), changed))
    bad = [error for error in reused if error > 1e-2]
    print(f"{args.cases} cases: reuse above 1% in {len(bad)} "
          f"({min(bad, default=0):.2f}-{max(bad, default=0):.2f}), raised in {raised}; "
          f"fresh search worst {max(fresh):.1e}")


if __name__ == "__main__":
    main()
