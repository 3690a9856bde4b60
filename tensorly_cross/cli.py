"""The ``tensorly-cross`` command: compress volumes into TT files, inspect and view them.

Exit codes: 0 success, 1 an input could not be used (missing file, bad dataset, corrupt TT
file), 2 bad command-line arguments.
"""

import argparse
import math
import os
import sys
import time

import numpy as np

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"tensorly-cross {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, TypeError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"tensorly-cross {args.command}: error: {message}", file=sys.stderr)
        return EXIT_INPUT


class UsageError(Exception):
    """A combination of arguments that argparse cannot check by itself."""


def _parser():
    parser = argparse.ArgumentParser(
        prog="tensorly-cross",
        description="Tensor-train cross approximation of volumes that may not fit in memory.")
    commands = parser.add_subparsers(dest="command")

    compress = commands.add_parser("compress", help="compress a volume into a TT file")
    compress.add_argument("input", help=".zarr, .h5/.hdf5[:dataset], .npy or .nii/.nii.gz")
    compress.add_argument("-o", "--output", help="TT file to write (default: INPUT stem + .tt.npz)")
    group = compress.add_mutually_exclusive_group()
    group.add_argument("--rank", type=int, help="fixed TT rank (ALS-cross)")
    group.add_argument("--tol", type=float, default=None,
                       help="target relative error on held-out voxels (default 1e-3)")
    compress.add_argument("--method", choices=["auto", "als", "tci"], default="auto")
    compress.add_argument("--max-rank", type=int, default=64)
    compress.add_argument("--quantics", action="store_true", help="cross in the QTT layout")
    compress.add_argument("--axes", default=None,
                          help="mode order of the TT, e.g. 0,2,1: on a C-ordered .npy the "
                               "contiguous axis in the middle reads fewer pages")
    compress.add_argument("--max-slices", type=int, default=None,
                          help="with --rank: outer fibers in at most N slices (fewer pages)")
    compress.add_argument("--max-evals", type=int, default=None)
    compress.add_argument("--n-iter-max", type=int, default=20)
    compress.add_argument("--patience", type=int, default=2,
                          help="stop after N sweeps without a 1%% lower held-out error or a "
                               "rank change (0: never)")
    compress.add_argument("--oversample", type=float, default=1.0,
                          help="with --rank: right index sets OVERSAMPLE x the rank, cores "
                               "fitted in least squares (sharper volumes)")
    compress.add_argument("--cache-bytes", type=int, default=None,
                          help="chunk/page cache (default: 256 MiB of chunks, 64 MiB of "
                               ".npy pages)")
    compress.add_argument("--scheduler", help="dask.distributed scheduler address")
    compress.add_argument("--dataset", help="HDF5 dataset path")
    compress.add_argument("--seed", type=int, default=0)
    compress.add_argument("--force", action="store_true", help="overwrite the output file")
    _verbosity(compress)
    compress.set_defaults(handler=_compress)

    info = commands.add_parser("info", help="summary of a TT file")
    info.add_argument("file")
    info.set_defaults(handler=_info)

    reconstruct = commands.add_parser("reconstruct", help="a slice of a TT file")
    reconstruct.add_argument("file")
    reconstruct.add_argument("--slice", default=None, help="AXIS=INDEX (default: middle of 0)")
    reconstruct.add_argument("--png", help="write the slice as a PNG")
    reconstruct.add_argument("-o", "--output", help="write the slice as .npy")
    reconstruct.add_argument("--against", help="the original volume: side by side + error map")
    reconstruct.add_argument("--dataset", help="HDF5 dataset of --against")
    reconstruct.add_argument("--force", action="store_true")
    reconstruct.set_defaults(handler=_reconstruct)

    demo = commands.add_parser("demo", help="the embedded default: a procedural volume")
    demo.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache",
                                                        "tensorly-cross"))
    demo.add_argument("--size", type=int, default=384)
    demo.add_argument("--tol", type=float, default=1e-3)
    _verbosity(demo)
    demo.set_defaults(handler=_demo)
    return parser


def _verbosity(parser):
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per sweep")


def _compress(args):
    import tensorly_cross as tlc

    if args.rank is not None and args.rank < 1:
        raise UsageError(f"--rank must be >= 1, got {args.rank}.")
    tol = 1e-3 if args.tol is None else args.tol
    if not tol > 0:
        raise UsageError(f"--tol must be > 0, got {tol}.")
    if args.patience < 0:
        raise UsageError(f"--patience must be >= 0, got {args.patience}.")
    if args.oversample != 1.0 and args.rank is None:
        raise UsageError("--oversample needs --rank (a fixed-rank cross).")
    if args.max_slices is not None and args.rank is None:
        raise UsageError("--max-slices needs --rank (a fixed-rank cross).")
    axes = _parse_axes(args.axes, args.quantics)
    output = args.output or _default_output(args.input)
    if os.path.exists(output) and not args.force:
        raise FileExistsError(f"{output!r} exists; pass --force to replace it.")
    client = _client(args.scheduler)
    volume = tlc.open_volume(args.input, dataset=args.dataset, cache_bytes=args.cache_bytes,
                             client=client)
    summary = compress_volume(volume, output, tol=tol, rank=args.rank, method=args.method,
                              max_rank=args.max_rank, quantics=args.quantics,
                              max_evals=args.max_evals, n_iter_max=args.n_iter_max,
                              seed=args.seed, quiet=args.quiet, verbose=args.verbose,
                              source=args.input, force=args.force,
                              patience=args.patience or None, oversample=args.oversample,
                              axes=axes, max_slices=args.max_slices)
    if not args.quiet:
        print(format_summary(summary))
    return EXIT_OK


def compress_volume(volume, output, tol, rank=None, method="auto", max_rank=64, quantics=False,
                    max_evals=None, n_iter_max=20, seed=0, quiet=False, verbose=False,
                    source=None, force=False, patience=2, oversample=1.0, axes=None,
                    max_slices=None):
    """Cross ``volume`` (a LazyTensor), save the TT with its metadata; returns a summary.

    ``axes``: the TT's mode order (a permutation of the volume's axes; not with quantics).
    """
    import tensorly_cross as tlc

    target = tlc.TransposedTensor(volume, axes) if axes else volume
    target = tlc.QuanticsTensor(target) if quantics else target
    progress = _progress(n_iter_max, "sweeps", quiet)

    def report(tt, info):
        progress.set_postfix(rank=max(info.ranks[-1]), err=f"{info.val_errors[-1]:.1e}")
        progress.update(1)
        if verbose:
            progress.write(f"sweep {info.n_sweeps}: ranks {info.ranks[-1]}, "
                           f"evals {info.n_evals}, held-out error {info.val_errors[-1]:.2e}")
        return False

    start = time.perf_counter()
    tt, info = tlc.tt_cross(target, rank=rank, tol=tol, method=method, max_rank=max_rank,
                            max_evals=max_evals, n_iter_max=n_iter_max, random_state=seed,
                            callback=report, return_info=True, patience=patience,
                            oversample=oversample, max_slices=max_slices)
    progress.close()
    elapsed = time.perf_counter() - start
    metadata = dict(shape=list(volume.shape), source=source, val_error=info.val_error,
                    n_evals=info.n_evals, stop_reason=info.stop_reason,
                    quantics=_layout_meta(target) if quantics else None,
                    axes=list(target.axes) if axes else None,
                    arguments=dict(tol=tol, rank=rank, method=method, max_rank=max_rank,
                                   max_evals=max_evals, n_iter_max=n_iter_max, seed=seed,
                                   patience=patience, oversample=oversample,
                                   max_slices=max_slices),
                    library_version=tlc.__version__, seconds=elapsed)
    tlc.save_tt(output, tt, metadata, overwrite=force)
    summary = _tt_summary(tt, metadata)
    summary.update(output=output, bytes_read=getattr(volume, "bytes_read", None),
                   chunks_read=getattr(volume, "chunks_read", None), seconds=elapsed,
                   sweeps=info.n_sweeps, stop=info.stop_reason)
    return summary


def _parse_axes(text, quantics):
    if text is None:
        return None
    if quantics:
        raise UsageError("--axes and --quantics do not combine; choose one.")
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as error:
        raise UsageError(f"--axes must be comma-separated integers, got {text!r}.") from error


def _layout_meta(quantics_tensor):
    layout = quantics_tensor.layout
    return dict(order=layout.order, shape=list(layout.shape))


def _tt_summary(tt, metadata):
    shape = metadata["shape"]
    n_params = sum(int(np.prod(core.shape)) for core in tt)
    entries = math.prod(shape)
    return dict(shape=shape, ranks=[1] + [int(core.shape[2]) for core in tt],
                n_params=n_params, compression=entries / n_params,
                n_evals=metadata.get("n_evals"), fraction=(metadata.get("n_evals") or 0) / entries,
                val_error=metadata.get("val_error"), quantics=metadata.get("quantics"))


def format_summary(summary):
    lines = [f"shape               {tuple(summary['shape'])}",
             f"TT ranks            {tuple(summary['ranks'])}"
             + ("  (quantics layout)" if summary.get("quantics") else ""),
             f"parameters          {summary['n_params']} "
             f"(compression {summary['compression']:.1f}x)"]
    if summary.get("n_evals") is not None:
        lines.append(f"entries evaluated   {summary['n_evals']} "
                     f"({summary['fraction']:.3%} of the volume)")
    if summary.get("bytes_read") is not None:
        lines.append(f"bytes read          {summary['bytes_read'] / 2**20:.1f} MiB in "
                     f"{summary['chunks_read']} chunks")
    if summary.get("val_error") is not None:
        lines.append(f"held-out rel. error {summary['val_error']:.3e}")
    if summary.get("seconds") is not None:
        lines.append(f"time                {summary['seconds']:.1f} s "
                     f"({summary['sweeps']} sweeps, stop: {summary['stop']})")
    if summary.get("output"):
        lines.append(f"written             {summary['output']}")
    return "\n".join(lines)


def _info(args):
    import tensorly_cross as tlc

    tt, metadata = tlc.load_tt(args.file)
    summary = _tt_summary(tt, metadata)
    print(format_summary(summary))
    if metadata.get("source"):
        print(f"source              {metadata['source']}")
    print(f"library version     {metadata.get('library_version')}")
    return EXIT_OK


def _reconstruct(args):
    import tensorly_cross as tlc

    tt, metadata = tlc.load_tt(args.file)
    shape = tuple(metadata["shape"])
    axis, index = _parse_slice(args.slice, shape)
    image = tt_slice(tt, metadata, axis, index)
    if not (args.png or args.output):
        raise UsageError("give --png and/or -o/--output for the slice.")
    for path in (args.png, args.output):
        if path and os.path.exists(path) and not args.force:
            raise FileExistsError(f"{path!r} exists; pass --force to replace it.")
    if args.output:
        np.save(args.output, image, allow_pickle=False)
    original = None
    if args.against:
        volume = tlc.open_volume(args.against, dataset=args.dataset)
        if tuple(volume.shape) != shape:
            raise ValueError(f"--against has shape {volume.shape}, the TT has {shape}.")
        original = _volume_slice(volume, axis, index)
        error = np.linalg.norm(image - original) / max(np.linalg.norm(original), 1e-300)
        print(f"slice {axis}={index}: relative error {error:.3e}")
    if args.png:
        write_png(args.png, image, original, title=f"{os.path.basename(args.file)} {axis}={index}")
    return EXIT_OK


def _parse_slice(text, shape):
    if text is None:
        return 0, shape[0] // 2
    try:
        axis, index = (int(part) for part in text.split("="))
    except ValueError as error:
        raise UsageError(f"--slice must be AXIS=INDEX, got {text!r}.") from error
    if not 0 <= axis < len(shape) or not 0 <= index < shape[axis]:
        raise UsageError(f"--slice {text} is outside shape {shape}.")
    if len(shape) != 3:
        raise UsageError(f"slices are for 3-D volumes; this TT has shape {shape}.")
    return axis, index


def _slice_indices(shape, axis, index):
    others = [n for k, n in enumerate(shape) if k != axis]
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in others], indexing="ij"), -1)
    grid = grid.reshape(-1, 2)
    return np.insert(grid, axis, index, axis=1), others


def tt_slice(tt, metadata, axis, index):
    """One 2-D slice of a (possibly quantics) TT, evaluated entry-wise."""
    import tensorly as tl

    import tensorly_cross as tlc

    shape = tuple(metadata["shape"])
    indices, others = _slice_indices(shape, axis, index)
    if metadata.get("quantics"):
        layout = tlc.QuanticsLayout.create(shape, metadata["quantics"]["order"])
        indices = layout.to_quantics(indices)
    if metadata.get("axes"):  # the TT's modes are the volume's axes in this order
        indices = indices[:, metadata["axes"]]
    values = tl.to_numpy(tlc.tt_entries(tt, indices))
    return np.asarray(values, dtype=np.float64).reshape(others)


def _volume_slice(volume, axis, index):
    import tensorly as tl

    indices, others = _slice_indices(tuple(volume.shape), axis, index)
    return np.asarray(tl.to_numpy(volume.evaluate(indices)), dtype=np.float64).reshape(others)


def write_png(path, image, original=None, title=""):
    """The slice, or the original, the TT slice and the error map side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("TT", image)] if original is None else [
        ("original", original), ("TT", image), ("|error|", np.abs(image - original))]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, data) in zip(axes[0], panels, strict=True):
        shown = ax.imshow(data, cmap="magma" if name == "|error|" else "gray")
        ax.set_title(name)
        ax.axis("off")
        figure.colorbar(shown, ax=ax, fraction=0.046)
    figure.suptitle(title)
    figure.tight_layout()
    temporary = f"{path}.tmp.png"
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, path)


def _demo(args):
    import tensorly_cross as tlc
    from tensorly_cross.datasets import blob_phantom, write_volume

    if args.size < 16:
        raise UsageError(f"--size must be >= 16, got {args.size}.")
    os.makedirs(args.workdir, exist_ok=True)
    shape = (args.size,) * 3
    volume_path = os.path.join(args.workdir, f"blobs{args.size}.zarr")
    if not os.path.exists(volume_path):
        if not args.quiet:
            print(f"writing the demo volume {shape} (float32, once) to {volume_path}")
        write_volume(volume_path, blob_phantom(shape), shape, chunks=(32, 32, 32))
    volume = tlc.open_volume(volume_path)
    output = os.path.join(args.workdir, f"blobs{args.size}.tt.npz")
    summary = compress_volume(volume, output, tol=args.tol, quiet=args.quiet,
                              verbose=args.verbose, source=volume_path, force=True)
    summary["bytes_total"] = math.prod(shape) * 4
    tt, metadata = tlc.load_tt(output)
    axis, index = 2, args.size // 2
    image = tt_slice(tt, metadata, axis, index)
    original = _volume_slice(tlc.open_volume(volume_path), axis, index)
    png = os.path.join(args.workdir, f"blobs{args.size}_slice.png")
    write_png(png, image, original, title=f"demo volume {shape}, slice {axis}={index}")
    if not args.quiet:
        print(format_summary(summary))
        print(f"volume size         {summary['bytes_total'] / 2**20:.0f} MiB on disk "
              f"({summary['bytes_read'] / summary['bytes_total']:.1%} read)")
        print(f"picture             {png}")
    return EXIT_OK


def _default_output(path):
    stem = os.path.basename(os.path.normpath(path))
    for suffix in (".nii.gz", ".zarr", ".hdf5", ".h5", ".npy", ".nii"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem.split(":")[0] + ".tt.npz"


def _client(address):
    if not address:
        return None
    from distributed import Client

    return Client(address)


def _progress(total, unit, quiet):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, disable=quiet, leave=False, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
