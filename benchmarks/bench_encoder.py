"""Encoder evaluations per cross: once per patch (ours) vs once per requested entry.

    python benchmarks/bench_encoder.py [--size 64] [--features 16] [--ranks 4,8,16]

The paper's public code runs the encoder once per requested (position, channel) entry; here
the encoder runs once per unique position for all channels, and positions are cached
during the index search. Both counts come from the same cross on the same volume.
"""

import argparse
import itertools
import time

import _harness
import numpy as np
import tensorly as tl
import torch

import tensorly_cross as tlc
from tensorly_cross.datasets import blob_phantom
from tensorly_cross.nn import EncodedTensor, default_encoder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--ranks", default="4,8,16")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    controller = _harness.limit_threads()
    tl.set_backend("pytorch")
    torch.manual_seed(0)
    shape = (args.size,) * 3
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    volume = torch.as_tensor(blob_phantom(shape)(grid.reshape(-1, 3)).reshape(shape))
    rows = []
    layouts = {
        "block cross (default)": ("last", "block", lambda r: r, "tt"),
        "block cross, quantics": ("last", "block", lambda r: r, "quantics"),
        "features last": ("last", "als", lambda r: r, "tt"),
        "features first, r_1 = F": ("first", "als", lambda r: [1, args.features, r, r, 1], "tt"),
    }
    for (layout, (axis, method, ranks, grid_layout)), rank in itertools.product(
            layouts.items(), [int(r) for r in args.ranks.split(",")]):
        torch.manual_seed(0)  # the same encoder in every row
        encoder = default_encoder(5, args.features)
        lazy = EncodedTensor(volume, encoder, 5, args.features, feature_axis=axis,
                             layout=grid_layout)
        start = time.perf_counter()
        with torch.no_grad():
            indices, info = tlc.select_indices(lazy, rank=ranks(rank), method=method, tol=0.0,
                                               n_iter_max=4, val_size=0, random_state=0,
                                               return_info=True)
        search = lazy.n_encoded
        tt = tlc.cross_interpolate(lazy, indices)  # the differentiable pass, with gradient
        seconds = time.perf_counter() - start
        per_entry = info.n_requested + _fiber_count(indices)
        encoded = lazy.n_encoded
        error = _relative_error(tt, lazy)
        rows.append([f"{args.size}^3", layout, args.features, rank, info.n_requested,
                     info.n_evals, search, encoded, f"{per_entry / encoded:.1f}",
                     f"{error:.3f}", f"{seconds:.1f}"])
        print("  " + " | ".join(str(c) for c in rows[-1]), flush=True)
    text = _harness.format_table(
        ["volume", "layout", "features", "rank", "entries requested", "distinct entries",
         "patches encoded (search)", "patches encoded (total)",
         "per-entry scheme / ours", "error (all positions)", "wall s"], rows)
    _harness.emit(text, args.out)
    del controller


def _fiber_count(indices):
    """Entries read by the differentiable assembly (its per-entry encoder runs)."""
    channels = indices.block or 1
    return sum(indices.rank[k] * n * indices.rank[k + 1] * channels
               for k, n in enumerate(indices.shape))


@torch.no_grad()
def _relative_error(tt, lazy):
    """Relative error of the TT over the whole feature field (every position encoded)."""
    grid = lazy.patches.grid_shape
    positions = np.stack(np.unravel_index(np.arange(int(np.prod(grid))), grid), axis=1)
    exact = lazy.features(positions).reshape(*grid, lazy.n_features)
    if lazy.feature_axis == "first":
        exact = exact.permute(3, 0, 1, 2)
    if lazy.layout is not None:
        tt = tlc.qtt_to_tt(tt, lazy.layout)
    approx = tl.tt_to_tensor(tt)
    return float(torch.linalg.norm(approx - exact) / torch.linalg.norm(exact))


if __name__ == "__main__":
    main()
