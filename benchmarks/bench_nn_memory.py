"""Peak memory of one training step: CrossEmbedding (out of core) vs a dense 3D CNN.

    python benchmarks/bench_nn_memory.py [--sizes 64,128,256,512] [--cache-mib 32] [--out ...]

Each measurement runs in a fresh process and reports its peak resident memory (VmHWM) for
one forward + backward + optimiser step on one procedural volume (Gaussian blobs, float32
zarr on disk). CrossEmbedding reads patches on demand (``open_volume``), with a 64^3 grid of
patch positions (stride = size / 64) and, separately, a full-resolution grid (stride 1).
The dense baseline convolves the whole volume in memory.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from _harness import peak_rss

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "_data")




def _child(kind, size, stride, cache_mib):
    import numpy as np
    import tensorly as tl
    import torch

    import tensorly_cross as tlc
    from tensorly_cross.nn import CrossEmbedding, default_encoder

    tl.set_backend("pytorch")
    torch.manual_seed(0)
    path = os.path.join(DATA, f"blobs{size}.zarr")
    start = time.perf_counter()
    if kind == "cross":
        volume = tlc.open_volume(path, cache_bytes=cache_mib * 2**20)
        model = CrossEmbedding(patch_size=5, n_features=8, rank=4, n_outputs=8, stride=stride)
        features = model([volume])  # the probe head is built on the first call
    else:
        volume = torch.as_tensor(np.asarray(tlc.open_volume(path).source.array[:]))
        model = default_encoder(5, 8)
        padded = torch.nn.functional.pad(volume[None, None], (2,) * 6, mode="reflect")
        features = model[:-1](padded).mean(dim=(2, 3, 4))
    loss = features.pow(2).sum()
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss.backward()
    optimiser.step()
    print(json.dumps(dict(peak=peak_rss(), seconds=time.perf_counter() - start)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,256,512")
    parser.add_argument("--dense-max", type=int, default=256)
    parser.add_argument("--out", default=None)
    parser.add_argument("--cache-mib", type=int, default=256,
                        help="open_volume's chunk cache (the only size-dependent buffer)")
    parser.add_argument("--child", nargs=4, default=None)
    args = parser.parse_args()
    if args.child:
        kind, size, stride, cache_mib = args.child
        return _child(kind, int(size), int(stride), int(cache_mib))
    sys.path.insert(0, HERE)
    import _harness

    from tensorly_cross.datasets import blob_phantom, write_volume

    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        path = os.path.join(DATA, f"blobs{size}.zarr")
        if not os.path.exists(path):
            os.makedirs(DATA, exist_ok=True)
            write_volume(path, blob_phantom((size,) * 3), (size,) * 3, chunks=(32, 32, 32))
        runs = [("cross, 64^3 grid", "cross", max(size // 64, 1)), ("cross, full grid", "cross", 1)]
        if size <= args.dense_max:
            runs.append(("dense CNN", "dense", 1))
        for name, kind, stride in runs:
            result = _spawn(kind, size, stride, args.cache_mib)
            rows.append([f"{size}^3", name, stride, f"{result['peak'] / 2**20:.0f} MiB",
                         f"{result['seconds']:.1f}"])
            print("  " + " | ".join(str(c) for c in rows[-1]), flush=True)
        if size > args.dense_max:
            rows.append([f"{size}^3", "dense CNN", 1, "not run (activations alone "
                         f"{size**3 * 8 * 4 * 3 / 2**30:.0f} GiB)", "-"])
    text = _harness.format_table(["volume", "model", "stride", "peak RSS (step)", "wall s"],
                                 rows)
    _harness.emit(text, args.out)


def _spawn(kind, size, stride, cache_mib):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    output = subprocess.run([sys.executable, __file__, "--child", kind, str(size), str(stride),
                             str(cache_mib)],
                            capture_output=True, text=True, env=env, check=True,
                            timeout=3600).stdout
    return json.loads(output.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
