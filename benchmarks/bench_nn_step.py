"""One training step of CrossEmbedding from two source trees: encoder calls and time.

    git archive 55df060 | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    python benchmarks/bench_nn_step.py /tmp/base . --labels "main 55df060,issue-17" \
        --out benchmarks/results/nn_step_64.md

Issue 17's configuration (``layout="quantics", rank=6, n_features=8, patch_size=5``, 8
probes, 4 sweeps) on a batch of 8 MNI152-derived crops at 64^3 (in memory): forward,
backward and an Adam step, with the encoder wrapped to count its calls and patches. Each
tree runs in a fresh process that imports its own ``tensorly_cross``, one thread; the trees
alternate over ``--reps`` repetitions and each figure is the minimum over them. Only the
API both trees share is used (the probe head is built by a first forward pass).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, tensorly as tl, torch
import tensorly_cross
from tensorly_cross.nn import CrossEmbedding, default_encoder

torch.set_num_threads(1)
tl.set_backend("pytorch")
torch.manual_seed(0)


class Counting(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.calls, self.patches = encoder, 0, 0

    def forward(self, patches):
        self.calls += 1
        self.patches += patches.shape[0]
        return self.encoder(patches)


data = json.loads(sys.argv[2])
volumes = [torch.as_tensor(np.load(path)) for path in data["paths"]]
encoder = Counting(default_encoder(5, 8))
model = CrossEmbedding(encoder, patch_size=5, n_features=8, rank=6, n_outputs=8,
                       layout="quantics", n_iter_max=4)
readout = torch.nn.Linear(8, 1)
model(volumes[:1])  # the old tree builds its head here
optimiser = torch.optim.Adam([*model.parameters(), *readout.parameters()], lr=1e-3)
targets = torch.linspace(0, 1, len(volumes))
rows = []
for _ in range(data["steps"]):
    encoder.calls = encoder.patches = 0
    start, cpu = time.perf_counter(), time.process_time()
    optimiser.zero_grad()
    loss = torch.mean((readout(model(volumes)).squeeze(1) - targets) ** 2)
    loss.backward()
    optimiser.step()
    rows.append(dict(wall=time.perf_counter() - start, cpu=time.process_time() - cpu,
                     calls=encoder.calls, patches=encoder.patches))
profile = {}
if data["profile"]:  # one more step under cProfile (the calling thread only)
    import cProfile, pstats

    profiler = cProfile.Profile()
    profiler.enable()
    optimiser.zero_grad()
    torch.mean((readout(model(volumes)).squeeze(1) - targets) ** 2).backward()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    wanted = dict(
        select_indices=lambda key: key[2] == "select_indices",
        cross_interpolate=lambda key: key[2] == "cross_interpolate",
        cutting_patches=lambda key: key[2] == "patches" and key[0].endswith("patches.py"),
        encoder_calls=lambda key: key[2] == "forward" and key[0] == "<string>",
    )
    for name, match in wanted.items():
        profile[name] = round(max((value[3] for key, value in stats.items() if match(key)),
                                  default=0.0), 3)
    profile["step"] = round(pstats.Stats(profiler).total_tt, 3)
print(json.dumps(dict(source=os.path.dirname(tensorly_cross.__file__), rows=rows,
                      profile=profile)))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs=2, help="source trees A and B")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--profile", action="store_true",
                        help="also profile one step of each tree (cumulative seconds of the "
                        "index searches, reads, patch cutting and encoder calls)")
    parser.add_argument("--labels", default=None, help="names of the trees in the table, "
                        "comma-separated (default: their paths)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    labels = args.labels.split(",") if args.labels else args.trees
    sys.path.insert(0, HERE)
    import _harness

    from tensorly_cross.nn import mni152_crops

    data = mni152_crops(40, 64, seed=0, directory=os.path.join(HERE, "_data", "mni64"))
    request = json.dumps(dict(paths=[str(p) for p in data.volumes[:8]], steps=args.steps,
                              profile=args.profile))
    best = {tree: None for tree in args.trees}
    profiles = {}
    for _ in range(args.reps):
        for tree in args.trees:
            env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                       PYTHONPATH=os.path.abspath(tree))
            output = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(tree),
                                     request], capture_output=True, text=True, env=env,
                                    check=True, timeout=3600).stdout
            result = json.loads(output.strip().splitlines()[-1])
            if not result["source"].startswith(os.path.abspath(tree)):
                raise RuntimeError(f"{tree} imported tensorly_cross from {result['source']}")
            step = min(result["rows"], key=lambda row: row["cpu"])
            if best[tree] is None or step["cpu"] < best[tree]["cpu"]:
                best[tree] = step
            print(f"  {tree}: {step}", flush=True)
            if result["profile"]:
                profiles[tree] = result["profile"]
                print(f"  {tree} profile (s, calling thread): {result['profile']}", flush=True)
    rows = [[label, str(best[tree]["calls"]), str(best[tree]["patches"]),
             f"{best[tree]['wall']:.2f}", f"{best[tree]['cpu']:.2f}"]
            for label, tree in zip(labels, args.trees, strict=True)]
    text = _harness.format_table(
        ["source tree", "encoder calls per step", "patches encoded per step",
         "wall s per step", "CPU s per step"], rows)
    if profiles:
        names = list(next(iter(profiles.values())))
        text += "\n\nOne more step under cProfile (cumulative s in the calling thread):\n\n"
        text += _harness.format_table(
            ["source tree"] + names,
            [[label] + [str(profiles[tree][name]) for name in names]
             for label, tree in zip(labels, args.trees, strict=True) if tree in profiles])
    _harness.emit(text, args.out)


if __name__ == "__main__":
    main()
