"""What a TT of the feature field keeps of what a dense CNN pools: the channel means.

    python benchmarks/bench_nn_field.py --size 64 --volumes 12 \
        --out benchmarks/results/nn_field_64.md

A dense CNN with mean pooling sees each volume through the means of its feature channels.
For one fixed (seeded, untrained) encoder and MNI152-derived crops, this compares the means
of the cross's TT (no gradient) with the exact means over every grid position, and reports the
error relative to the spread of those means across volumes (the signal a readout has to
work with): 1.0 means the TT's means are as far from the truth as the volumes are from each
other. Rows: the field of single-voxel patches (issue 17's configuration) and fields of
tiles (``default_encoder(pooled=True)``, stride ``patch_size - 2``) in both layouts.
"""

import argparse
import os
import sys
import time

import numpy as np
import tensorly as tl
import torch

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = [  # label, patch size, stride, pooled, layout, rank
    ("voxels (issue 17)", 5, 1, False, "quantics", 6),
    ("voxels", 5, 1, False, "tt", 6),
    ("tiles 4^3", 6, 4, True, "quantics", 6),
    ("tiles 4^3", 6, 4, True, "tt", 6),
    ("tiles 4^3", 6, 4, True, "tt", 8),
]


def _tt_means(tt):
    """Channel means of a block TT ``(*grid cores, channels core (r, n, F), identity)``
    over every position, from the mean of each core over its mode."""
    running = None
    for core in list(tt)[:-1]:
        mean = core.mean(dim=1)
        running = mean if running is None else running @ mean
    return running[0]


def _field_means(lazy):
    """Exact channel means of the feature field: every grid position encoded."""
    grid = lazy.patches.grid_shape
    positions = np.stack(np.unravel_index(np.arange(int(np.prod(grid))), grid), axis=1)
    return torch.cat([lazy.features(positions[start : start + 65536]) for start in
                      range(0, len(positions), 65536)]).mean(dim=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--volumes", type=int, default=12)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    sys.path.insert(0, HERE)
    import _harness

    import tensorly_cross as tlc
    from tensorly_cross.nn import EncodedTensor, default_encoder, mni152_crops

    controller = _harness.limit_threads()
    tl.set_backend("pytorch")
    data = mni152_crops(40, args.size, seed=0,
                        directory=os.path.join(HERE, "_data", f"mni{args.size}"))
    volumes = [torch.as_tensor(np.load(data.volumes[k])) for k in range(args.volumes)]
    rows = []
    for label, patch, stride, pooled, layout, rank in CONFIGS:
        torch.manual_seed(0)
        encoder = default_encoder(patch, args.features, pooled=pooled)
        start, encoded, cross, exact = time.perf_counter(), 0, [], []
        with torch.no_grad():
            for volume in volumes:
                lazy = EncodedTensor(volume, encoder, patch, args.features, stride=stride,
                                     layout=layout)
                indices = tlc.select_indices(lazy, rank=rank, method="block", tol=0.0,
                                             n_iter_max=2, val_size=0, random_state=0)
                cross.append(_tt_means(tlc.cross_interpolate(lazy, indices)))
                encoded += lazy.n_encoded
                exact.append(_field_means(lazy))
        cross, exact = torch.stack(cross), torch.stack(exact)
        error = ((cross - exact).norm(dim=0) / (exact - exact.mean(0)).norm(dim=0)).numpy()
        grid = int(np.prod([-(-args.size // stride)] * 3))
        rows.append([f"{args.size}^3", label, layout, rank,
                     f"{encoded // len(volumes)} of {grid}", f"{np.median(error):.2f}",
                     f"{error.max():.2f}", f"{time.perf_counter() - start:.1f}"])
        print("  " + " | ".join(str(c) for c in rows[-1]), flush=True)
    text = _harness.format_table(
        ["volume", "field", "layout", "rank", "patches encoded per volume",
         "mean error / spread (median of channels)", "(worst channel)", "wall s"], rows)
    _harness.emit(text, args.out)
    del controller


if __name__ == "__main__":
    main()
