"""Which fraction of a chunked store's chunks a cross decodes: MNI152 T1 in zarr.

    python benchmarks/bench_chunks_touched.py --out benchmarks/results/chunks_touched.md

Writes nilearn's MNI152 T1 template (197x233x189, float32) to a zarr array with cubic
chunks of 16, 32 and 64 voxels (under ``benchmarks/_data``), crosses it with the default
(``tol=0.1``: the least-squares cross), with fewer held-out entries, with the paper's ALS
at rank 20, and with ALS whose fibers keep to 4 slices per mode (``max_slices=4``), and
counts the distinct chunks each run decoded (``DaskTensor.chunks_read``): the bytes a
cross costs on such a store. Evaluation counts, not times; seed 0.
"""

import argparse
import os
import warnings

import _harness
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = [("default, tol 0.1", dict(tol=0.1)),
        ("default, tol 0.1, val_size 200", dict(tol=0.1, val_size=200)),
        ("als rank 20", dict(rank=20, method="als")),
        ("als rank 20, max_slices 4", dict(rank=20, method="als", max_slices=4))]


def store(volume, chunk):
    import zarr

    path = os.path.join(HERE, "_data", f"mni152_t1_chunks{chunk}.zarr")
    if not os.path.exists(path):
        array = zarr.create_array(path, shape=volume.shape, chunks=(chunk,) * 3,
                                  dtype="float32")
        array[:] = volume
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    _harness.limit_threads()
    from nilearn.datasets import load_mni152_template

    import tensorly_cross as tlc

    volume = np.asarray(load_mni152_template().get_fdata(), dtype=np.float32)
    rows = []
    for chunk in (16, 32, 64):
        path = store(volume, chunk)
        n_chunks = int(np.prod([-(-size // chunk) for size in volume.shape]))
        for name, kwargs in RUNS:
            lazy = tlc.open_volume(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, info = tlc.tt_cross(lazy, random_state=0, return_info=True, **kwargs)
            decoded = f"{lazy.chunks_read} ({100 * lazy.chunks_read / n_chunks:.0f}%)"
            rows.append([f"{chunk}^3 ({n_chunks})", name,
                         f"{100 * info.n_evals / volume.size:.1f}%", info.n_heldout, decoded,
                         f"{info.val_error:.3f}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    table = _harness.format_table(["chunks (number)", "run", "voxels read", "held-out",
                                   "chunks decoded", "held-out error"], rows)
    print(table)
    if args.out:
        with open(args.out, "w") as handle:
            command = f"python benchmarks/bench_chunks_touched.py --out {args.out}"
            handle.write(f"Command: `{command}`\n\n")
            handle.write(table + "\n")


if __name__ == "__main__":
    main()
