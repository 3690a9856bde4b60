"""Out of core at scale: TT-cross of a procedural phantom volume on disk.

    python benchmarks/bench_volume.py [--size 1024] [--svd-size 512] [--ranks 8,16,32]
                                      [--default-sizes 512,1024]

Writes a float32 phantom of ``size^3`` once (``benchmarks/_data``: zarr with 64^3
uncompressed chunks, and .npy), then for each format, layout (plain; on the .npy also
"plain xzy", the transposed view that puts the contiguous axis in the middle of the TT,
"plain xzy s4", the same with ``max_slices=4``, "plain xzy x2" with ``oversample=2``, and
"plain xzy s4 x2" with both; quantics) and rank runs the fixed-rank ALS cross in
a fresh subprocess; "plain" (both files) and "plain xzy" also run the default method
("default" rows: ``method="auto"``, which on a file runs the least-squares cross; the row
names the method that ran) on the volumes of ``--default-sizes``. Each run reports: wall
time, sweeps and why they stopped, peak resident memory, chunks and bytes read (zarr),
4 KiB pages read (.npy; a page evicted from the 64 MiB page cache and needed again counts
again, as a chunk does), evaluations, held-out error on 10,000 random voxels. The baseline
reads a ``svd-size^3`` volume whole and runs TensorLy's TT-SVD at the same ranks.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from _harness import peak_rss

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "_data")


def write_phantom(size):
    """The phantom as zarr and npy, written slab by slab (never whole in memory)."""
    import zarr
    from problems import phantom

    zarr_path = os.path.join(DATA, f"phantom{size}.zarr")
    npy_path = os.path.join(DATA, f"phantom{size}.npy")
    if os.path.exists(zarr_path) and os.path.exists(npy_path):
        return zarr_path, npy_path
    os.makedirs(DATA, exist_ok=True)
    array = zarr.create_array(zarr_path + ".tmp", shape=(size,) * 3, chunks=(64, 64, 64),
                              dtype="f4", compressors=None, overwrite=True)
    memmap = np.lib.format.open_memmap(npy_path + ".tmp", mode="w+", dtype=np.float32,
                                       shape=(size,) * 3)
    jj, kk = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    for start in range(0, size, 64):
        slab = np.empty((min(64, size - start), size, size), dtype=np.float32)
        for offset in range(slab.shape[0]):
            points = np.stack([np.full(jj.size, start + offset), jj.ravel(), kk.ravel()], 1)
            slab[offset] = phantom(points, size).reshape(size, size)
        array[start : start + slab.shape[0]] = slab
        memmap[start : start + slab.shape[0]] = slab
    memmap.flush()
    del memmap
    os.replace(zarr_path + ".tmp", zarr_path)
    os.replace(npy_path + ".tmp", npy_path)
    return zarr_path, npy_path


def _layouts():
    import tensorly_cross as tlc

    return {"plain": lambda lazy: lazy, "quantics": tlc.QuanticsTensor,
            # C order: the contiguous axis as the middle TT mode (see TransposedTensor)
            "plain xzy": lambda lazy: tlc.TransposedTensor(lazy, (0, 2, 1))}


def _options(layout):
    """"plain xzy s4 x2" -> ("plain xzy", method="als", max_slices=4, oversample=2);
    "plain default" -> ("plain", method="auto")."""
    words, options = layout.split(), {"method": "als"}
    if words[-1] == "default":
        # What a user gets without naming a method: on a file, the least-squares cross.
        words.pop()
        options["method"] = "auto"
    while words[-1][:1] in "sx" and words[-1][1:].isdigit():
        word = words.pop()
        if word[0] == "x":
            options["oversample"] = float(word[1:])
        else:
            options["max_slices"] = int(word[1:])
    return " ".join(words), options


def _label(layout, result):
    """The table's name of a run: "plain default" -> "plain, default (lsq)", naming the
    method that ``method="auto"`` chose."""
    if not layout.endswith(" default"):
        return layout
    return f"{layout.removesuffix(' default')}, default ({result['method']})"


def run_cross(path, layout, rank):
    """One measurement; runs in its own process so that peak RSS is its own."""
    import tensorly_cross as tlc

    lazy = tlc.open_volume(path)
    layout, options = _options(layout)
    target = _layouts()[layout](lazy)
    start = time.perf_counter()
    # The ALS cross (the raw interpolating cross) or the default method, with the same
    # sweeps, seed and 1,000 held-out entries (the least-squares cross alone would hold out
    # 4,000), so that bytes read and errors compare row to row; tol=1e-3 is out of reach at
    # these ranks, so every run stops on n_iter_max or a stall.
    tt, info = tlc.tt_cross(target, rank=rank, tol=1e-3, n_iter_max=4, random_state=0,
                            return_info=True, val_size=1000, **options)
    wall = time.perf_counter() - start
    cost = _reads(lazy)  # before the held-out test entries below add their own reads
    peak = peak_rss()  # the cross's peak: the test reads below fill the chunk cache too
    rng = np.random.default_rng(7)
    test = np.stack([rng.integers(n, size=10_000) for n in lazy.shape], axis=1)
    exact = np.asarray(lazy.evaluate(test), dtype=np.float64)
    if layout == "quantics":
        query = target.layout.to_quantics(test)
    else:
        query = target.from_original(test) if layout == "plain xzy" else test
    approx = np.asarray(tlc.tt_entries(tt, query))
    result = dict(wall=wall, evals=info.n_evals, method=info.method,
                  sweeps=f"{info.n_sweeps} ({info.stop_reason})",
                  error=float(np.linalg.norm(approx - exact) / np.linalg.norm(exact)),
                  peak_rss=peak, **cost)
    return result


def _reads(lazy):
    if hasattr(lazy, "chunks_read"):
        return dict(chunks_read=f"{lazy.chunks_read} chunks", bytes_read=lazy.bytes_read)
    return dict(chunks_read=f"{lazy.pages_read} pages", bytes_read=lazy.bytes_read)  # .npy




def run_svd(size, rank):
    import tensorly as tl
    from problems import phantom
    from tensorly.decomposition import tensor_train

    start = time.perf_counter()
    path = os.path.join(DATA, f"phantom{size}.npy")
    volume = np.load(path).astype(np.float64)  # the whole volume, read once
    read = time.perf_counter() - start
    tt = tensor_train(volume, rank=[1, rank, rank, 1])
    wall = time.perf_counter() - start
    peak = peak_rss()  # TT-SVD's peak, not that of the full reconstruction tested below
    rng = np.random.default_rng(7)
    test = np.stack([rng.integers(size, size=10_000) for _ in range(3)], axis=1)
    exact = phantom(test, size)
    approx = np.asarray(tl.tt_to_tensor(tt))[tuple(test.T)]
    return dict(wall=wall, read=read, error=float(np.linalg.norm(approx - exact)
                                                   / np.linalg.norm(exact)),
                peak_rss=peak)


def _table_layouts(fmt, with_default):
    """The rows of one file, each default row after the ALS rows of its layout (those it
    is compared with)."""
    if fmt.startswith("npy"):
        layouts = ["plain", "plain xzy", "plain xzy s4", "plain xzy x2", "plain xzy s4 x2",
                   "quantics"]
        defaults = ("plain", "plain xzy")
    else:
        layouts, defaults = ["plain", "quantics"], ("plain",)
    if with_default:
        for layout in defaults:
            layouts.insert(layouts.index(layout) + 1, f"{layout} default")
    return layouts


def _child(args):
    sys.path.insert(0, HERE)
    if args.child == "svd":
        result = run_svd(args.svd_size, args.rank)
    else:
        result = run_cross(args.path, args.child, args.rank)
    print(json.dumps(result))


def _spawn(*extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    output = subprocess.run([sys.executable, __file__, *extra], capture_output=True, text=True,
                            env=env, check=True, timeout=3600).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--svd-size", type=int, default=512)
    parser.add_argument("--ranks", default="8,16,32")
    parser.add_argument("--default-sizes", default=None,
                        help="volume sizes that get the default-method rows, comma-separated "
                             "(default: every size)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", default=None)
    parser.add_argument("--path", default=None)
    parser.add_argument("--rank", type=int, default=None)
    args = parser.parse_args()
    if args.child:
        return _child(args)
    sys.path.insert(0, HERE)
    import _harness

    ranks = [int(r) for r in args.ranks.split(",")]
    sizes = sorted({args.svd_size, args.size})
    default_sizes = (sizes if args.default_sizes is None
                     else [int(s) for s in args.default_sizes.split(",")])
    rows = []
    for size in sizes:
        zarr_path, npy_path = write_phantom(size)
        file_bytes = os.path.getsize(npy_path)
        for fmt, path in (("zarr 64^3", zarr_path), ("npy (pages)", npy_path)):
            for layout in _table_layouts(fmt, size in default_sizes):
                for rank in ranks:
                    result = _spawn("--child", layout, "--path", path, "--rank", str(rank))
                    read = f"{result['bytes_read'] / file_bytes:.1%} ({result['chunks_read']})"
                    rows.append([f"{size}^3", fmt, _label(layout, result), rank,
                                 result["evals"], result["sweeps"], read,
                                 f"{result['peak_rss'] / 2**20:.0f} MiB",
                                 f"{result['wall']:.1f}", f"{result['error']:.3f}"])
                    print("  " + " | ".join(str(c) for c in rows[-1]), flush=True)
    for rank in ranks:
        result = _spawn("--child", "svd", "--svd-size", str(args.svd_size), "--rank", str(rank))
        rows.append([f"{args.svd_size}^3", "npy, read whole", "TT-SVD (TensorLy)", rank, "all",
                     "-", "100%", f"{result['peak_rss'] / 2**20:.0f} MiB", f"{result['wall']:.1f}",
                     f"{result['error']:.3f}"])
        print("  " + " | ".join(str(c) for c in rows[-1]), flush=True)
    text = _harness.format_table(["volume", "format", "method", "rank", "evals",
                                  "sweeps (stop)", "bytes read / file", "peak RSS", "wall s",
                                  "held-out error"], rows)
    _harness.emit(text, args.out)


if __name__ == "__main__":
    main()
