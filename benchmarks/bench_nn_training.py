"""Training on MNI152-derived volumes: CrossEmbedding vs the same encoder applied densely.

    python benchmarks/bench_nn_training.py --size 64 --seeds 0,1,2 \
        --out benchmarks/results/nn_training_64.md

The task (:func:`tensorly_cross.nn.mni152_crops`): crops of nilearn's MNI152 template with a
random rotation, scale, intensity change, bias field and noise; the target is the crop's
grey-matter fraction. The first ``--n-train`` crops train, the rest test. Both models use the
same recipe (:mod:`tensorly_cross.nn.training`: BatchNorm-standardised features, a linear
readout, Adam) and the same encoder architecture; the cross model reads patches on demand
from the ``.npy`` files, the dense model holds each volume in memory. Each (model, seed) runs
in a fresh process that reports its peak resident memory (VmHWM). Two baselines need no
training: predicting the training mean, and least squares on each volume's mean and
standard deviation of intensity.

Times are wall and CPU seconds of the training steps (the process's CPU time, all threads:
on a machine shared with other work it is the figure that others' load does not inflate).
``--steps N`` times N training steps on one batch instead of training (for sizes where the
dense model takes too long to train), and reports time per step and peak memory only.
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

# The default cross model, and the steps from issue 17's configuration to it (the
# ablation): tiles (a pooled encoder, stride 4), the TT layout, rank 8, then fewer searches.
_ISSUE = dict(layout="quantics", rank=6, n_features=8, patch_size=5, stride=1, pooled=False,
              refresh_every=1, n_iter_max=4, n_outputs=8)
_TILES = dict(_ISSUE, patch_size=6, stride=4, pooled=True)
PRESETS = {
    "cross": dict(_TILES, layout="tt", rank=8, refresh_every=3, n_iter_max=2),
    "cross-issue": _ISSUE,
    "cross-tiles": _TILES,
    "cross-tiles-tt": dict(_TILES, layout="tt"),
    "cross-tiles-tt-r8": dict(_TILES, layout="tt", rank=8),
    "cross-r6": dict(_TILES, layout="tt", rank=6, refresh_every=3, n_iter_max=2),
    "cross-pca": dict(_TILES, layout="tt", rank=8, refresh_every=3, n_iter_max=2, head="pca"),
    # the same, its PCA refit with gradient at every step (TTPCAHead(gradient_through_fit))
    "cross-pca-grad": dict(_TILES, layout="tt", rank=8, refresh_every=3, n_iter_max=2,
                           head="pca", gradient_through_fit=True),
}




def _build(kind, options):
    from tensorly_cross.nn import CrossEmbedding, TTPCAHead, default_encoder
    from tensorly_cross.nn.dense import DenseEmbedding
    from tensorly_cross.nn.training import Regressor

    dense = kind.startswith("dense")
    # "dense" uses the encoder of "cross", "dense-issue" that of "cross-issue"
    config = dict(PRESETS["cross" + kind[len("dense"):] if dense else kind], **options)
    encoder = default_encoder(config["patch_size"], config["n_features"],
                              pooled=config["pooled"])
    if dense:
        return Regressor(DenseEmbedding(encoder), config["n_features"])
    cross_options = {k: v for k, v in config.items() if k != "pooled"}
    if cross_options.get("head") == "pca":  # a basis needs more TTs than components
        cross_options["n_outputs"] = min(cross_options["n_outputs"], options["n_train"] - 1)
    if cross_options.pop("gradient_through_fit", False):
        cross_options["head"] = TTPCAHead(cross_options["n_outputs"], gradient_through_fit=True)
    embedding = CrossEmbedding(encoder, volume_shape=(options["size"],) * 3,
                               **{k: v for k, v in cross_options.items()
                                  if k not in ("size", "n_train")})
    return Regressor(embedding, embedding.n_outputs)


def _child(kind, seed, args):
    import tensorly as tl
    import torch

    from tensorly_cross.nn import mni152_crops
    from tensorly_cross.nn.training import fit, rmse

    torch.set_num_threads(1)
    tl.set_backend("pytorch")
    data = mni152_crops(args["n_volumes"], args["size"], seed=0,
                        directory=os.path.join(DATA, f"mni{args['size']}"))
    data.in_memory = kind.startswith("dense")
    train, test = data.subset(range(args["n_train"])), \
        data.subset(range(args["n_train"], len(data)))
    torch.manual_seed(seed)
    model = _build(kind, dict(args["options"], size=args["size"], n_train=args["n_train"]))
    if args["steps"]:
        return _timed_steps(model, train, args["steps"], args["batch_size"])
    log = fit(model, train, epochs=args["epochs"], batch_size=args["batch_size"],
              lr=args["lr"], seed=seed)
    counters = getattr(model.embedding, "counters", {})
    return dict(rmse=rmse(model, test), seconds=log.total_seconds,
                cpu_seconds=log.total_cpu_seconds, steps=log.steps,
                peak=peak_rss(), encoder_calls=counters.get("encoder_calls"),
                searches=counters.get("searches"),
                patches=counters.get("patches_encoded"),
                rounds=counters.get("lockstep_rounds"))


def _timed_steps(model, train, steps, batch_size):
    """Mean wall and CPU time of ``steps`` training steps on one batch, after one."""
    import torch

    model.set_target_scale(train.targets)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    keys, volumes, targets = next(iter(train.batches(batch_size)))
    wall, cpu = [], []
    for _ in range(steps + 1):  # the first step (head, allocator, first search) not timed
        start, cpu_start = time.perf_counter(), time.process_time()
        optimiser.zero_grad()
        loss = torch.mean((model(volumes, keys=keys) - targets.to(model.target_mean)) ** 2)
        loss.backward()
        optimiser.step()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    counters = getattr(model.embedding, "counters", {})
    return dict(step_seconds=sum(wall[1:]) / steps, step_cpu_seconds=sum(cpu[1:]) / steps,
                peak=peak_rss(), steps=steps + 1, encoder_calls=counters.get("encoder_calls"))


def _baselines(args):
    import numpy as np

    from tensorly_cross.nn import mni152_crops

    data = mni152_crops(args.n_volumes, args.size, seed=0,
                        directory=os.path.join(DATA, f"mni{args.size}"))
    targets = data.targets.numpy()
    stats = []
    for path in data.volumes:
        volume = np.load(path, mmap_mode="r")
        stats.append([1.0, float(volume.mean()), float(volume.std())])
    stats = np.asarray(stats)
    train, test = slice(0, args.n_train), slice(args.n_train, None)
    mean_rmse = float(np.sqrt(np.mean((targets[train].mean() - targets[test]) ** 2)))
    weights = np.linalg.lstsq(stats[train], targets[train], rcond=None)[0]
    ls_rmse = float(np.sqrt(np.mean((stats[test] @ weights - targets[test]) ** 2)))
    return mean_rmse, ls_rmse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n-volumes", type=int, default=40)
    parser.add_argument("--n-train", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default="cross,dense")
    parser.add_argument("--steps", type=int, default=0,
                        help="time this many steps on one batch instead of training")
    parser.add_argument("--set", default="{}",
                        help='JSON overrides of the cross options, e.g. \'{"rank": 12}\'')
    parser.add_argument("--label", default="")
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        request = json.loads(args.child)
        print(json.dumps(_child(request["kind"], request["seed"], request)))
        return
    sys.path.insert(0, HERE)
    import _harness

    rows = []
    if not args.steps:
        mean_rmse, ls_rmse = _baselines(args)
        rows.append([f"{args.size}^3", "predict the training mean", "-", f"{mean_rmse:.4f}"]
                    + ["-"] * 5)
        rows.append([f"{args.size}^3", "least squares on mean, std", "-", f"{ls_rmse:.4f}"]
                    + ["-"] * 5)
        print("  " + "\n  ".join(" | ".join(row) for row in rows), flush=True)
    for kind in args.models.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            request = dict(kind=kind, seed=seed, size=args.size, n_volumes=args.n_volumes,
                           n_train=args.n_train, epochs=args.epochs, lr=args.lr,
                           batch_size=args.batch_size, steps=args.steps,
                           options=json.loads(args.set))
            result = _spawn(request)
            rows.append(_row(kind, seed, args, result))
            print("  " + " | ".join(rows[-1]), flush=True)
    header = (["volume", "model", "seed", "s per step", "CPU s per step", "peak RSS",
               "encoder calls per step"] if args.steps else
              ["volume", "model", "seed", "test RMSE", "training s", "training CPU s", "steps",
               "peak RSS", "encoder calls per step"])
    _harness.emit(_harness.format_table(header, rows), args.out)


def _row(kind, seed, args, result):
    name = kind + (f" {args.label}" if args.label and not kind.startswith("dense") else "")
    if result is None:
        return [f"{args.size}^3", name, str(seed)] + ["does not fit"] * (4 if args.steps else 6)
    calls = result.get("encoder_calls")
    per_step = "-" if calls is None else f"{calls / max(result['steps'], 1):.1f}"
    peak = f"{result['peak'] / 2**20:.0f} MiB"
    if args.steps:
        return [f"{args.size}^3", name, str(seed), f"{result['step_seconds']:.2f}",
                f"{result['step_cpu_seconds']:.2f}", peak, per_step]
    return [f"{args.size}^3", name, str(seed), f"{result['rmse']:.4f}",
            f"{result['seconds']:.1f}", f"{result['cpu_seconds']:.1f}", str(result["steps"]),
            peak, per_step]


def _spawn(request):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    process = subprocess.run([sys.executable, __file__, "--child", json.dumps(request)],
                             capture_output=True, text=True, env=env, timeout=4 * 3600)
    if process.returncode != 0:
        if "MemoryError" in process.stderr or process.returncode in (-9, 137):
            return None
        raise RuntimeError(process.stderr[-3000:])
    return json.loads(process.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
