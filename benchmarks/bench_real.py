"""Real volumes: TT-cross and the read-everything path against TT-SVD (quasi-optimal).

    python benchmarks/bench_real.py [--out benchmarks/results/real.md] [--seeds 0,1,2]
    python benchmarks/bench_real.py --memory 1024   # peak memory of the streaming path
    python benchmarks/bench_real.py --handover --out benchmarks/results/real_handover.md
    python benchmarks/bench_real.py --tolerances 0.3,0.2,0.1,0.05,0.03 \
        --out benchmarks/results/real_tolerances.md
    python benchmarks/bench_real.py --quantics --out benchmarks/results/real_quantics.md

Volumes (all shipped by the installed packages, nothing downloaded):
- MNI152 T1 template (nilearn, 197x233x189, MRI T1 intensity),
- MNI152 grey-matter probability template (nilearn, 197x233x189, a tissue map),
- a motor-task activation map (nilearn's sample z-map, 53x63x46, fMRI statistics).

Every error is relative, on 20,000 random voxels drawn independently of every method.
The reference is TensorLy's TT-SVD (``tensorly.decomposition.tensor_train``) of the volume
in memory, at the same ranks; "smallest TT-SVD meeting tol" is the sequential TT-SVD with
the fewest parameters whose exact error is at most ``tol`` (every first-bond rank tried),
its parameter count the yardstick for rank-adaptive runs. "read" is the share of voxels
evaluated (unique); the streaming path reads every voxel once per pass. One BLAS thread;
times are medians of the seeds, and ratios are taken within this run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from _harness import emit, format_table, limit_threads

N_TEST = 20_000


def load_volumes():
    from nilearn import datasets

    t1 = np.asarray(datasets.load_mni152_template().get_fdata(), dtype=np.float64)
    grey = np.asarray(datasets.load_mni152_gm_template().get_fdata(), dtype=np.float64)
    motor = datasets.load_sample_motor_activation_image()
    if isinstance(motor, str):
        import nibabel

        motor = nibabel.load(motor)
    motor = np.asarray(motor.get_fdata(), dtype=np.float64)
    return {"MNI152 T1": t1, "MNI152 grey matter": grey, "motor z-map (fMRI)": motor}


class Judge:
    """Errors on independent random voxels."""

    def __init__(self, volume, seed=12345):
        rng = np.random.default_rng(seed)
        self.points = np.stack([rng.integers(n, size=N_TEST) for n in volume.shape], axis=1)
        self.truth = volume[tuple(self.points.T)]

    def error(self, tt):
        from tensorly_cross import tt_entries

        values = np.asarray(tt_entries(tt, self.points))
        return float(np.linalg.norm(values - self.truth) / np.linalg.norm(self.truth))


def parameters(tt):
    return int(sum(np.asarray(core).size for core in tt))


def smallest_tt_svd(volume, tol):
    """Parameters and ranks of the smallest sequential TT-SVD of a 3D ``volume`` whose
    exact relative error is at most ``tol``.

    The per-bond rule ``tol / sqrt(d - 1)`` meets ``tol`` but splits the error evenly
    between the bonds, which is not the smallest: on MNI152 T1 at ``tol=0.3`` it keeps
    ranks (4, 3), 1.38x the parameters of (2, 4). So every first-bond rank is tried, the
    second bond taking what the error budget leaves."""
    n1, n2, n3 = volume.shape
    budget = tol**2 * float(np.sum(volume**2))
    unfolding = volume.reshape(n1, -1)
    left, singular, _ = np.linalg.svd(unfolding, full_matrices=False)
    tails = np.append(np.cumsum(singular[::-1] ** 2)[::-1], 0.0)  # tails[r]: dropped at rank r
    projected = (left.T @ unfolding).reshape(-1, n2, n3)
    gram, best = np.zeros((n3, n3)), None  # gram: of the second unfolding at rank r1
    for r1 in range(1, n1 + 1):
        if best is not None and n1 * r1 + r1 * n2 + n3 >= best[0]:
            break  # even a second rank of 1 costs more from here on
        gram += projected[r1 - 1].T @ projected[r1 - 1]
        if tails[r1] > budget:
            continue
        second = np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)  # squared singular values
        second_tails = np.append(np.cumsum(second[::-1])[::-1], 0.0)
        r2 = int(np.flatnonzero(tails[r1] + second_tails <= budget)[0])
        size = n1 * r1 + r1 * n2 * r2 + r2 * n3
        if best is None or size < best[0]:
            best = (size, (r1, r2))
    return best


def tensorly_tt_svd(volume, rank):
    """TensorLy's TT-SVD at ``rank`` on every bond, or at the TT ranks ``rank`` (a list)."""
    from tensorly.decomposition import tensor_train

    ranks = list(rank) if np.ndim(rank) else [1] + [rank] * (volume.ndim - 1) + [1]
    start = time.perf_counter()
    tt = tensor_train(volume, ranks)
    return tt, time.perf_counter() - start


def run_cross(volume, seed, **kwargs):
    import tensorly_cross as tlc

    start = time.perf_counter()
    tt, info = tlc.tt_cross(volume, random_state=seed, return_info=True, **kwargs)
    return tt, info, time.perf_counter() - start


def fixed_rank_rows(name, volume, judge, seeds, rank=40):
    reference, _ = tensorly_tt_svd(volume, rank)
    optimum = judge.error(reference)
    rows = [[name, f"TT-SVD rank {rank}", f"{optimum:.4f}", "1.00", "100%", "-"]]
    budget = int(0.25 * volume.size)
    for label, kwargs in [("lsq (4 sweeps)", dict(method="lsq", n_iter_max=4)),
                          ("lsq (budget 25%)", dict(method="lsq", max_evals=budget)),
                          ("als (paper)", dict(method="als")),
                          ("tci, rank cap", dict(method="tci", max_rank=rank, tol=1e-3))]:
        kwargs = dict(kwargs)
        kwargs.setdefault("rank", rank if label != "tci, rank cap" else None)
        try:
            results = [run_cross(volume, seed, **kwargs) for seed in seeds]
        except ValueError as error:  # a budget too small for one sweep
            rows.append([name, label, f"fails: {error}", "-", "-", "-"])
            continue
        errors = [judge.error(tt) for tt, _, _ in results]
        reads = [info.n_evals / volume.size for _, info, _ in results]
        seconds = [elapsed for _, _, elapsed in results]
        rows.append([name, label, f"{np.median(errors):.4f} ({min(errors):.4f}-{max(errors):.4f})",
                     f"{np.median(errors) / optimum:.2f}", f"{100 * np.median(reads):.1f}%",
                     f"{np.median(seconds):.1f}"])
    return rows


def adaptive_rows(name, volume, judge, seeds, tol):
    smallest, ranks = smallest_tt_svd(volume, tol)
    rows = [[name, tol, f"smallest TT-SVD {ranks}", "-", smallest, "1.00", "100%", "-"]]
    for label, kwargs in [("default (auto: lsq)", {}), ("tci", dict(method="tci"))]:
        results = [run_cross(volume, seed, tol=tol, **kwargs) for seed in seeds]
        errors = [judge.error(tt) for tt, _, _ in results]
        sizes = [parameters(tt) for tt, _, _ in results]
        reads = [info.n_evals / volume.size for _, info, _ in results]
        met = sum(error <= tol for error in errors)
        rows.append([name, tol, label,
                     f"{np.median(errors):.4f} ({met}/{len(seeds)} <= tol)",
                     int(np.median(sizes)), f"{np.median(sizes) / smallest:.2f}",
                     f"{100 * np.median(reads):.1f}%",
                     f"{np.median([e for _, _, e in results]):.1f}"])
    return rows


def compress_rows(name, volume, judge, tol=0.15):
    """The CLI's read-everything path from a stored file against TensorLy's TT-SVD."""
    import nibabel

    from tensorly_cross.stream import streaming_tt_svd

    smallest, _ = smallest_tt_svd(volume, tol)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "volume.nii.gz")
        nibabel.save(nibabel.Nifti1Image(volume.astype(np.float32), np.eye(4)), path)
        start = time.perf_counter()
        tt, info = streaming_tt_svd(path, tol=tol, return_info=True)
        stream_seconds = time.perf_counter() - start
        start = time.perf_counter()
        loaded = np.asarray(nibabel.load(path).get_fdata(), dtype=np.float64)
        load_seconds = time.perf_counter() - start
    _, svd_seconds = tensorly_tt_svd(loaded, tt.rank)  # the same ranks as the stream's
    return [[name, tol, f"{judge.error(tt):.4f} (exact {info.error:.4f})", parameters(tt),
             f"{parameters(tt) / smallest:.2f}", f"{stream_seconds:.2f}",
             f"{load_seconds + svd_seconds:.2f} ({svd_seconds:.2f} + {load_seconds:.2f} load)",
             f"{stream_seconds / (load_seconds + svd_seconds):.2f}"]]


def quantics_rows(volume, judge, seeds, tol=0.2, size=256):
    import tensorly_cross as tlc

    padded = np.zeros((size,) * 3)
    padded[tuple(slice(0, n) for n in volume.shape)] = volume
    rows = []
    for label, kwargs in [("default (auto: lsq)", {}), ("tci", dict(method="tci"))]:
        for seed in seeds:
            quantics = tlc.QuanticsTensor(tlc.lazy_tensor(padded))
            tt, info, seconds = run_cross(quantics, seed, tol=tol, max_rank=256, **kwargs)
            full = tlc.qtt_to_tt(tt, quantics)
            worst = max(error for error in info.val_errors if error == error)
            rows.append([label, seed, f"{judge.error(full):.4f}", f"{worst:.3f}",
                         max(tt.rank), f"{100 * info.n_evals / padded.size:.2f}%",
                         info.stop_reason, f"{seconds:.1f}"])
    return rows


def quantics_table(t1, seeds):
    judge = Judge(np.pad(t1, [(0, 256 - n) for n in t1.shape]))
    return ("### Quantics: MNI152 T1 zero-padded to 256^3, tol = 0.2, max_rank = 256\n\n"
            + format_table(["method", "seed", "error", "worst held-out", "max rank", "read",
                            "stop", "s"], quantics_rows(t1, judge, seeds)))


def memory_run(size):
    """Write a ``size^3`` float32 zarr volume (a smooth field plus 5% white noise), then
    stream it in a child process and report the child's peak resident memory."""
    import zarr

    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_data")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"texture{size}.zarr")
    if not os.path.exists(path):
        array = zarr.create_array(path + ".tmp", shape=(size,) * 3, chunks=(64, 64, 64),
                                  dtype="f4", overwrite=True)
        grid = np.linspace(0, 1, size, dtype=np.float32)
        rng = np.random.default_rng(0)
        for start in range(0, size, 64):
            x = grid[start : start + 64, None, None]
            slab = (np.sin(6 * x + 3 * grid[None, :, None] ** 2) * np.cos(5 * grid[None, None, :])
                    + 0.05 * rng.standard_normal((x.shape[0], size, size)).astype(np.float32))
            array[start : start + 64] = slab
        os.replace(path + ".tmp", path)
    # The child's own peak (VmHWM): ru_maxrss carries the parent's over exec, and a parent
    # that had just written the volume reported 1533 MiB where the stream peaked at 730.
    code = ("import json, sys, time; sys.path.insert(0, sys.argv[1]); import _harness; "
            "from tensorly_cross.stream import streaming_tt_svd; "
            f"t = time.perf_counter(); tt, info = streaming_tt_svd({path!r}, tol=0.15, "
            "return_info=True); "
            "print(json.dumps([info.error, info.ranks, info.widths, info.n_passes, "
            "time.perf_counter() - t, _harness.peak_rss() // 2**20]))")
    here = os.path.dirname(os.path.abspath(__file__))
    output = subprocess.run([sys.executable, "-c", code, here], capture_output=True,
                            text=True, check=True).stdout.strip().splitlines()[-1]
    error, ranks, widths, passes, seconds, peak = json.loads(output)
    header = ["volume", "exact error", "ranks", "sketch widths", "passes", "wall s",
              "peak RSS MiB"]
    return format_table(header, [[f"{size}^3 zarr f4 (64^3 chunks, 4 GiB)", f"{error:.4f}",
                                  tuple(ranks), tuple(widths), passes, f"{seconds:.0f}",
                                  peak]])


def handover_rows(name, volume, judge, seeds, tol=0.1):
    """The volume behind a callable (not stored): ``auto`` is TCI, handing over to the
    least-squares cross where TCI stalls; against TCI alone and the least-squares cross."""
    import tensorly_cross as tlc

    rows = []
    for label, method in [("auto (tci, then lsq)", "auto"), ("tci", "tci"), ("lsq", "lsq")]:
        results = []
        for seed in seeds:
            function = tlc.FunctionTensor(lambda idx: volume[tuple(np.asarray(idx).T)],
                                          volume.shape)
            results.append(run_cross(function, seed, tol=tol, method=method))
        errors = [judge.error(tt) for tt, _, _ in results]
        reads = [info.n_evals / volume.size for _, info, _ in results]
        ran = sorted({info.method for _, info, _ in results})
        met = sum(error <= tol for error in errors)
        rows.append([name, label, "/".join(ran),
                     f"{np.median(errors):.4f} ({met}/{len(seeds)} <= tol)",
                     int(np.median([parameters(tt) for tt, _, _ in results])),
                     f"{100 * np.median(reads):.1f}%",
                     f"{np.median([elapsed for _, _, elapsed in results]):.1f}"])
    return rows


def tolerance_rows(name, volume, judge, seeds, tol):
    """The default cross at ``tol`` (its own report beside the independent error) and the
    streaming TT-SVD of the same volume in memory, against the smallest TT-SVD meeting it."""
    from tensorly_cross.stream import streaming_tt_svd

    smallest, ranks = smallest_tt_svd(volume, tol)
    results = [run_cross(volume, seed, tol=tol) for seed in seeds]
    errors = [judge.error(tt) for tt, _, _ in results]
    stops = sorted({info.stop_reason for _, info, _ in results})
    rows = [[name, tol, f"smallest TT-SVD {ranks}", "-", "-", "-", max(ranks), "1.00",
             "100%", "-"],
            [name, tol, "default cross", f"{np.median(errors):.4f} "
             f"({sum(error <= tol for error in errors)}/{len(seeds)} <= tol)",
             f"{np.median([info.val_error for _, info, _ in results]):.4f}", "/".join(stops),
             int(np.median([max(tt.rank) for tt, _, _ in results])),
             f"{np.median([parameters(tt) for tt, _, _ in results]) / smallest:.2f}",
             f"{100 * np.median([info.n_evals / volume.size for _, info, _ in results]):.1f}%",
             f"{np.median([elapsed for _, _, elapsed in results]):.1f}"]]
    start = time.perf_counter()
    tt, info = streaming_tt_svd(volume, tol=tol, return_info=True)
    seconds = time.perf_counter() - start
    error = judge.error(tt)
    rows.append([name, tol, "streaming TT-SVD", f"{error:.4f} ({int(error <= tol)}/1 <= tol)",
                 f"{info.error:.4f} (exact)", "-", max(tt.rank),
                 f"{parameters(tt) / smallest:.2f}", "100%", f"{seconds:.1f}"])
    return rows


def tolerance_table(volumes, seeds, tolerances):
    rows = []
    for name in ("MNI152 T1", "MNI152 grey matter"):
        volume = volumes[name]
        judge = Judge(volume)
        for tol in tolerances:
            rows += tolerance_rows(name, volume, judge, seeds, tol)
    return ("### The default cross from loose to tight tolerances (max_rank 64)\n\n"
            + format_table(["volume", "tol", "method", "error (independent)", "reported",
                            "stop", "max rank", "params / smallest", "read", "s"], rows))


def handover_table(volumes, seeds):
    rows = []
    for name, volume in volumes.items():
        rows += handover_rows(name, volume, Judge(volume), seeds)
    return ("### A callable over the volume (not stored), tol = 0.1\n\n"
            + format_table(["volume", "method", "ran", "error", "parameters", "read", "s"],
                           rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--memory", type=int, help="only the streaming memory run at SIZE^3")
    parser.add_argument("--handover", action="store_true",
                        help="only the callable runs (TCI's handover to least squares)")
    parser.add_argument("--tolerances",
                        help="only the default cross at these tolerances, e.g. 0.2,0.1,0.05")
    parser.add_argument("--quantics", action="store_true",
                        help="only the quantics runs (MNI152 T1 zero-padded to 256^3)")
    args = parser.parse_args()
    _threads = limit_threads()
    if args.memory:
        emit(memory_run(args.memory), args.out)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    volumes = load_volumes()
    command = "python benchmarks/bench_real.py " + " ".join(sys.argv[1:])
    if args.handover:
        emit(f"Command: `{command.strip()}`\n\n" + handover_table(volumes, seeds), args.out)
        return
    if args.tolerances:
        tolerances = [float(tol) for tol in args.tolerances.split(",")]
        emit(f"Command: `{command.strip()}`\n\n" + tolerance_table(volumes, seeds, tolerances),
             args.out)
        return
    if args.quantics:
        emit(f"Command: `{command.strip()}`\n\n" + quantics_table(volumes["MNI152 T1"], seeds),
             args.out)
        return
    fixed, adaptive, compress = [], [], []
    for name, volume in volumes.items():
        judge = Judge(volume)
        fixed += fixed_rank_rows(name, volume, judge, seeds,
                                 rank=40 if min(volume.shape) > 80 else 10)
        adaptive += adaptive_rows(name, volume, judge, seeds, 0.1)
        compress += compress_rows(name, volume, judge)
    sections = [
        "### Fixed rank (MNI152: 40; the motor map: 10)\n\n" + format_table(
            ["volume", "method", "error (min-max)", "/ TT-SVD", "read", "s"], fixed),
        "### Rank-adaptive, tol = 0.1\n\n" + format_table(
            ["volume", "tol", "method", "error", "parameters", "/ smallest", "read", "s"],
            adaptive),
        "### `compress --tol 0.15`: read everything (streaming TT-SVD) vs load + TensorLy "
        "TT-SVD\n\n" + format_table(
            ["volume", "tol", "error (independent; exact)", "parameters", "/ smallest",
             "stream s", "TensorLy s", "ratio"], compress),
    ]
    emit(f"Command: `{command.strip()}`\n\n" + "\n\n".join(sections), args.out)


if __name__ == "__main__":
    main()
