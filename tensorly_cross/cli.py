"""The ``tensorly-cross`` command: compress volumes into TT files, inspect and view them.

Exit codes: 0 success; 1 an input could not be used (missing file, bad dataset, corrupt TT
file, missing output folder); 2 bad command-line arguments; 3 the run ended without meeting
``--tol`` (the TT file is written all the same; ``--accept-miss`` exits 0 instead); 130
interrupted (Ctrl-C).
"""

import argparse
import contextlib
import math
import os
import sys
import time
import warnings

import numpy as np

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_TOL_MISSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# tt_cross's default number of held-out entries: they count as evaluations.
VAL_SIZE = 1000


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
    except KeyboardInterrupt:
        print(f"tensorly-cross {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, TypeError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"tensorly-cross {args.command}: error: {message}", file=sys.stderr)
        return EXIT_INPUT


class UsageError(Exception):
    """A combination of arguments that argparse cannot check by itself."""


def _int_at_least(minimum, why=""):
    """An argparse type: an int ``>= minimum`` (argparse names the flag when it fails)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}{why}, got {value}")
        return value

    return parse


def _float_at_least(minimum, strict=False):
    """An argparse type: a finite float ``>= minimum`` (``> minimum`` if ``strict``)."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be a finite number {relation} {minimum}, "
                                             f"got {text}")
        return value

    return parse


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except the uninformative ones (None, a switch's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _parser():
    from . import __version__

    formatter = _DefaultsFormatter
    parser = argparse.ArgumentParser(
        prog="tensorly-cross", formatter_class=formatter,
        description="Tensor-train cross approximation of volumes that may not fit in memory.",
        epilog="Exit codes: 0 success, 1 unusable input, 2 bad arguments, 3 --tol not met "
               "(see --accept-miss), 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"tensorly-cross {__version__}")
    commands = parser.add_subparsers(dest="command")

    compress = commands.add_parser("compress", help="compress a volume into a TT file",
                                   formatter_class=formatter)
    compress.add_argument("input", help=".zarr, .h5/.hdf5[:dataset], .npy or .nii/.nii.gz")
    compress.add_argument("-o", "--output",
                          help="TT file to write (default: INPUT stem + .tt.npz)")
    group = compress.add_mutually_exclusive_group()
    group.add_argument("--rank", type=_int_at_least(1), help="fixed TT rank (ALS-cross)")
    group.add_argument("--tol", type=_float_at_least(0, strict=True), default=1e-3,
                       help="target relative error on held-out voxels")
    compress.add_argument("--accept-miss", action="store_true",
                          help="exit 0 when the run ends above --tol (default: exit 3)")
    compress.add_argument("--method", choices=["auto", "lsq", "tci", "als", "stream"],
                          default="auto",
                          help="'stream': read everything twice (streaming TT-SVD, exact "
                               "error); 'lsq', 'tci', 'als': a cross; 'auto': the stream or "
                               "the least-squares cross, from the storage (the choice and "
                               "its reason are printed)")
    compress.add_argument("--max-rank", type=_int_at_least(1), default=64,
                          help="rank cap of the adaptive cross")
    compress.add_argument("--quantics", action="store_true", help="cross in the QTT layout")
    compress.add_argument("--axes", default=None,
                          help="mode order of the TT, e.g. 0,2,1: on a C-ordered .npy the "
                               "contiguous axis in the middle reads fewer pages")
    compress.add_argument("--max-slices", type=_int_at_least(1), default=None,
                          help="with --rank: outer fibers in at most N slices (fewer pages)")
    compress.add_argument("--max-evals", default=None,
                          type=_int_at_least(VAL_SIZE + 1, f" (the {VAL_SIZE} held-out "
                                                            "entries count as evaluations)"),
                          help="budget of distinct entries read")
    compress.add_argument("--n-iter-max", type=_int_at_least(1), default=20,
                          help="maximum number of sweeps")
    compress.add_argument("--patience", type=_int_at_least(0), default=2,
                          help="stop after N sweeps without a 1%% lower held-out error or a "
                               "rank change (0: never)")
    compress.add_argument("--oversample", type=_float_at_least(1.0), default=1.0,
                          help="with --rank: right index sets OVERSAMPLE x the rank, cores "
                               "fitted in least squares (sharper volumes)")
    compress.add_argument("--cache-bytes", type=_int_at_least(0), default=None,
                          help="chunk/page cache (default: 256 MiB of chunks, 64 MiB of "
                               ".npy pages)")
    compress.add_argument("--dtype", choices=["input", "float32", "float64"], default="input",
                          help="dtype of the stored cores; 'input': the input's floating "
                               "dtype (float32 for integers of 16 bits or fewer, else float64)")
    compress.add_argument("--scheduler", help="dask.distributed scheduler address")
    compress.add_argument("--dataset", help="HDF5 dataset path")
    compress.add_argument("--seed", type=_int_at_least(0), default=0,
                          help="random seed of the cross")
    compress.add_argument("--force", action="store_true", help="overwrite the output file")
    _verbosity(compress)
    compress.set_defaults(handler=_compress)

    info = commands.add_parser("info", help="summary of a TT file", formatter_class=formatter)
    info.add_argument("file", help="a TT file (.tt.npz)")
    info.set_defaults(handler=_info)

    reconstruct = commands.add_parser(
        "reconstruct", formatter_class=formatter,
        help="a slice of a TT file (PNG, .npy), or the whole volume (.nii/.nii.gz)")
    reconstruct.add_argument("file", help="a TT file (.tt.npz)")
    reconstruct.add_argument("--slice", default=None,
                             help="AXIS=INDEX[,AXIS=INDEX...]: fix all axes but two (default: "
                                  "the middle of every axis but the last two)")
    reconstruct.add_argument("--png", help="write the slice as a PNG")
    reconstruct.add_argument("-o", "--output",
                             help="OUT.npy: the slice; OUT.nii or OUT.nii.gz: the whole volume, "
                                  "written in slabs, with the input's affine for a NIfTI input")
    reconstruct.add_argument("--against", help="the original volume: side by side + error map")
    reconstruct.add_argument("--dataset", help="HDF5 dataset of --against")
    reconstruct.add_argument("--force", action="store_true", help="overwrite output files")
    reconstruct.set_defaults(handler=_reconstruct)

    demo = commands.add_parser("demo", help="the embedded default: the MNI152 template "
                               "where nilearn is installed, else a procedural volume",
                               formatter_class=formatter)
    demo.add_argument("--volume", choices=["auto", "mni152", "procedural"], default="auto",
                      help="'mni152': nilearn's MNI152 T1 template (a real MRI volume, "
                           "shipped with nilearn); 'procedural': smooth Gaussian blobs; "
                           "'auto': the template where nilearn is installed")
    demo.add_argument("--method", choices=["auto", "lsq", "tci", "als", "stream"],
                      default="auto", help="as for compress")
    demo.add_argument("--workdir", default=None,
                      help="where the volume, TT and PNG go (default: "
                           "$XDG_CACHE_HOME/tensorly-cross, else ~/.cache/tensorly-cross)")
    demo.add_argument("--size", type=_int_at_least(16), default=384,
                      help="edge of the cubic procedural volume")
    demo.add_argument("--tol", type=_float_at_least(0, strict=True), default=None,
                      help="target relative error (default: 0.1 for the template, 1e-3 for "
                           "the procedural volume)")
    demo.add_argument("--accept-miss", action="store_true",
                      help="exit 0 when the run ends above --tol (default: exit 3)")
    _verbosity(demo)
    demo.set_defaults(handler=_demo)
    return parser


def _verbosity(parser):
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per sweep")


def _compress(args):
    import tensorly_cross as tlc

    if args.oversample != 1.0 and args.rank is None:
        raise UsageError("--oversample needs --rank (a fixed-rank cross).")
    if args.max_slices is not None and args.rank is None:
        raise UsageError("--max-slices needs --rank (a fixed-rank cross).")
    if args.method in ("als", "block") and args.rank is None:
        raise UsageError(f"--method {args.method} needs --rank (a fixed-rank cross).")
    axes = _parse_axes(args.axes, args.quantics)
    output = args.output or _default_output(args.input)
    _check_output(output, args.force)
    client = _client(args.scheduler)
    volume = tlc.open_volume(args.input, dataset=args.dataset, cache_bytes=args.cache_bytes,
                             client=client)
    method, reason = _choose_method(args, volume)
    if not args.quiet:
        print(f"method: {method} ({reason})")
    if method == "stream":
        summary = stream_volume(volume, output, tol=args.tol, rank=args.rank, client=client,
                                seed=args.seed, source=args.input, force=args.force,
                                dtype=args.dtype, max_rank=args.max_rank)
        if not args.quiet:
            print(format_summary(summary))
        return _outcome(summary, args.rank is None, args.accept_miss)
    summary = compress_volume(volume, output, tol=args.tol, rank=args.rank, method=method,
                              max_rank=args.max_rank, quantics=args.quantics,
                              max_evals=args.max_evals, n_iter_max=args.n_iter_max,
                              seed=args.seed, quiet=args.quiet, verbose=args.verbose,
                              source=args.input, force=args.force,
                              patience=args.patience or None, oversample=args.oversample,
                              axes=axes, max_slices=args.max_slices, dtype=args.dtype)
    if not args.quiet:
        print(format_summary(summary))
    return _outcome(summary, args.rank is None, args.accept_miss)


def _choose_method(args, volume):
    """The method ``--method`` names, or for ``auto`` the cost model's choice (with why)."""
    from .cost import choose_path

    if args.method != "auto":
        return args.method, "asked for"
    cross_only = [flag for flag, given in [("--quantics", args.quantics),
                                           ("--axes", args.axes is not None),
                                           ("--max-slices", args.max_slices is not None),
                                           ("--oversample", args.oversample != 1.0),
                                           ("--max-evals", args.max_evals is not None)]
                  if given]
    if cross_only:
        return "auto", f"{', '.join(cross_only)} ask for a cross"
    choice = choose_path(volume, path=args.input, rank=args.rank, max_rank=args.max_rank)
    return choice.method, choice.reason


def _check_output(path, force):
    """Refuse an output before any work: its folder must exist, the file only with force."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"the folder of the output {path!r} does not exist "
                                f"({folder!r}).")
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path!r} exists; pass --force to replace it.")


def _outcome(summary, tol_driven, accept_miss):
    """Warnings after a run, and its exit code: a missed --tol is not a success."""
    if summary["tt_bytes"] > summary["input_bytes"]:
        print(f"warning: the TT file ({summary['tt_bytes'] / 2**20:.2f} MiB) is larger than the "
              f"input ({summary['input_bytes'] / 2**20:.2f} MiB): this volume does not "
              "compress at these settings.", file=sys.stderr)
    if not tol_driven or summary["stop"] == "tol":
        return EXIT_OK
    kind = "exact error" if summary.get("exact_error") else "held-out error"
    print(f"{'warning' if accept_miss else 'error'}: --tol {summary['tol']:.1e} not met: "
          f"{kind} {summary['val_error']:.2e} (stop: {summary['stop']}); the TT was "
          f"written to {summary['output']}. Raise --max-rank or --n-iter-max, or pass "
          "--accept-miss to accept it.", file=sys.stderr)
    return EXIT_OK if accept_miss else EXIT_TOL_MISSED


def compress_volume(volume, output, tol, rank=None, method="auto", max_rank=64, quantics=False,
                    max_evals=None, n_iter_max=20, seed=0, quiet=False, verbose=False,
                    source=None, force=False, patience=2, oversample=1.0, axes=None,
                    max_slices=None, dtype="input"):
    """Cross ``volume`` (a LazyTensor), save the TT with its metadata; returns a summary.

    ``axes``: the TT's mode order (a permutation of the volume's axes; not with quantics).
    ``dtype``: of the stored cores, ``"input"`` for the input's floating dtype.
    """
    import tensorly_cross as tlc

    from ._reconstruct import nifti_metadata

    target = tlc.TransposedTensor(volume, axes) if axes else volume
    target = tlc.QuanticsTensor(target) if quantics else target
    input_dtype = _input_dtype(volume)
    start = time.perf_counter()
    with _progress(n_iter_max, "sweeps", quiet) as progress:

        def report(tt, info):
            progress.set_postfix(rank=max(info.ranks[-1]), err=f"{info.val_errors[-1]:.1e}")
            progress.update(1)
            if verbose:
                progress.write(f"sweep {info.n_sweeps}: ranks {info.ranks[-1]}, "
                               f"evals {info.n_evals}, held-out error {info.val_errors[-1]:.2e}")
            return False

        with warnings.catch_warnings():  # a missed tolerance is reported by the exit code
            warnings.simplefilter("ignore", tlc.ToleranceNotMetWarning)
            tt, info = tlc.tt_cross(target, rank=rank, tol=tol, method=method,
                                    max_rank=max_rank, max_evals=max_evals,
                                    n_iter_max=n_iter_max, random_state=seed, callback=report,
                                    return_info=True, patience=patience,
                                    oversample=oversample, max_slices=max_slices)
    elapsed = time.perf_counter() - start
    metadata = dict(shape=list(volume.shape), source=source, val_error=info.val_error,
                    n_heldout=info.n_heldout, heldout_bound=info.heldout_bound,
                    n_evals=info.n_evals, stop_reason=info.stop_reason,
                    quantics=_layout_meta(target) if quantics else None,
                    axes=list(target.axes) if axes else None,
                    input_dtype=None if input_dtype is None else str(input_dtype),
                    nifti=nifti_metadata(volume),
                    arguments=dict(tol=tol, rank=rank, method=method, max_rank=max_rank,
                                   max_evals=max_evals, n_iter_max=n_iter_max, seed=seed,
                                   patience=patience, oversample=oversample,
                                   max_slices=max_slices, dtype=dtype),
                    library_version=tlc.__version__, seconds=elapsed)
    summary = _save(volume, output, tt, metadata, dtype, force)
    summary.update(bytes_read=getattr(volume, "bytes_read", None),
                   chunks_read=getattr(volume, "chunks_read", None),
                   pages_read=getattr(volume, "pages_read", None),
                   sweeps=info.n_sweeps, stop=info.stop_reason, tol=tol)
    return summary


def stream_volume(volume, output, tol, rank=None, client=None, seed=0, source=None,
                  force=False, dtype="input", max_rank=None):
    """Read ``volume`` whole twice (:func:`tensorly_cross.streaming_tt_svd`), save the TT
    with its metadata; returns a summary like :func:`compress_volume`'s."""
    import tensorly_cross as tlc

    from ._reconstruct import nifti_metadata

    start = time.perf_counter()
    with warnings.catch_warnings():  # a missed tolerance is reported by the exit code
        warnings.simplefilter("ignore", UserWarning)
        tt, info = tlc.streaming_tt_svd(volume, tol=None if rank is not None else tol,
                                        rank=rank, client=client, random_state=seed,
                                        max_rank=None if rank is not None else max_rank,
                                        return_info=True)
    met = rank is not None or info.error <= tol
    metadata = dict(shape=list(volume.shape), source=source, method="stream",
                    error=info.error, exact_error=True,
                    stop_reason="tol" if met else info.limited_by,
                    n_passes=info.n_passes, widths=list(info.widths),
                    input_dtype=_dtype_name(_input_dtype(volume)),
                    nifti=nifti_metadata(volume),
                    arguments=dict(tol=tol, rank=rank, method="stream", seed=seed,
                                   dtype=dtype, max_rank=max_rank),
                    library_version=tlc.__version__, seconds=time.perf_counter() - start)
    summary = _save(volume, output, tt, metadata, dtype, force)
    summary.update(val_error=info.error, exact_error=True, bytes_read=info.bytes_read,
                   passes=info.n_passes, sweeps=0, stop=metadata["stop_reason"], tol=tol)
    return summary


def _save(volume, output, tt, metadata, dtype, force):
    """Store the cores (in the chosen dtype) and the metadata; the summary of the file."""
    import tensorly_cross as tlc

    from ._backend import to_host

    input_dtype = _input_dtype(volume)
    cores = [np.asarray(to_host(core)).astype(_core_dtype(dtype, input_dtype)) for core in tt]
    tlc.save_tt(output, cores, metadata, overwrite=force)
    summary = _tt_summary(cores, metadata)
    summary.update(output=output, seconds=metadata["seconds"],
                   tt_bytes=os.path.getsize(output),
                   input_bytes=math.prod(volume.shape) * (input_dtype or np.dtype("f8")).itemsize)
    return summary


def _dtype_name(dtype):
    return None if dtype is None else str(dtype)


def _input_dtype(volume):
    """The dtype a volume is stored in (None when it does not say)."""
    dtype = getattr(volume, "dtype", None)
    if dtype is None:
        dtype = getattr(getattr(volume, "source", None), "dtype", None)
    return None if dtype is None else np.dtype(dtype)


def _core_dtype(choice, input_dtype):
    """The dtype of the stored cores: the input's floating dtype unless another is asked."""
    if choice != "input":
        return np.dtype(choice)
    if input_dtype is None:
        return np.dtype(np.float64)
    if input_dtype.kind == "f":
        return np.dtype(np.float32) if input_dtype.itemsize <= 4 else np.dtype(np.float64)
    return np.dtype(np.float32) if input_dtype.itemsize <= 2 else np.dtype(np.float64)


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
    from ._reconstruct import volume_shape

    shape = volume_shape(tt, metadata)
    n_params = sum(int(np.prod(core.shape)) for core in tt)
    entries = math.prod(shape)
    n_evals = metadata.get("n_evals")
    return dict(shape=shape, ranks=[1] + [int(core.shape[2]) for core in tt],
                n_params=n_params, compression=entries / n_params,
                n_evals=n_evals, fraction=(n_evals or 0) / entries,
                val_error=metadata.get("val_error", metadata.get("error")),
                exact_error=bool(metadata.get("exact_error")),
                n_heldout=metadata.get("n_heldout"),
                heldout_bound=metadata.get("heldout_bound"),
                quantics=metadata.get("quantics"), dtype=str(np.asarray(tt[0]).dtype))


def format_summary(summary):
    lines = [f"shape               {tuple(summary['shape'])}",
             f"TT ranks            {tuple(summary['ranks'])}"
             + ("  (quantics layout)" if summary.get("quantics") else ""),
             f"parameters          {summary['n_params']} {summary.get('dtype', '')} "
             f"(compression {summary['compression']:.1f}x)"]
    if summary.get("n_evals") is not None:
        lines.append(f"entries evaluated   {summary['n_evals']} "
                     f"({summary['fraction']:.3%} of the volume)")
    if summary.get("bytes_read") is not None:
        if summary.get("chunks_read") is not None:
            unit = f"{summary['chunks_read']} chunks"
        elif summary.get("pages_read") is not None:
            unit = f"{summary['pages_read']} pages"
        elif summary.get("passes"):
            unit = "whole passes"
        else:
            unit = "reads"
        lines.append(f"bytes read          {summary['bytes_read'] / 2**20:.1f} MiB in {unit}")
    if summary.get("exact_error"):
        lines.append(f"relative error      {summary['val_error']:.3e} (exact: every voxel "
                     "read)")
    elif summary.get("val_error") is not None:
        heldout = ""
        if summary.get("n_heldout"):
            heldout = (f" on {summary['n_heldout']} held-out entries (95%: at most "
                       f"{summary['heldout_bound']:.2%} of the entries off unseen)")
        lines.append(f"held-out rel. error {summary['val_error']:.3e}{heldout}")
    if summary.get("seconds") is not None and summary.get("passes"):
        passes = summary["passes"]
        lines.append(f"time                {summary['seconds']:.1f} s "
                     f"({passes} pass{'es' if passes != 1 else ''} over the volume)")
    elif summary.get("seconds") is not None:
        lines.append(f"time                {summary['seconds']:.1f} s "
                     f"({summary['sweeps']} sweeps, stop: {summary['stop']})")
    if summary.get("output"):
        lines.append(f"written             {summary['output']}")
    return "\n".join(lines)


def _info(args):
    import tensorly_cross as tlc

    tt, metadata = tlc.load_tt(args.file)
    summary = _tt_summary(list(tt), metadata)
    print(format_summary(summary))
    if metadata.get("source"):
        print(f"source              {metadata['source']}")
    if metadata.get("nifti"):
        print("NIfTI               affine and header kept")
    print(f"library version     {metadata.get('library_version')}")
    return EXIT_OK


def _reconstruct(args):
    import tensorly_cross as tlc

    from ._reconstruct import volume_shape, volume_values, write_nifti

    if not (args.png or args.output):
        raise UsageError("give --png and/or -o/--output.")
    whole = bool(args.output) and args.output.lower().endswith((".nii", ".nii.gz"))
    if args.output and not whole and not args.output.lower().endswith(".npy"):
        raise UsageError(f"-o/--output must end in .npy (a slice) or .nii/.nii.gz (the whole "
                         f"volume), got {args.output!r}.")
    for path in (args.png, args.output):
        if path:
            _check_output(path, args.force)
    tt, metadata = tlc.load_tt(args.file)
    shape = volume_shape(tt, metadata)
    fixed = _parse_slice(args.slice, shape)
    selection = tuple(fixed.get(axis, slice(None)) for axis in range(len(shape)))
    where = ",".join(f"{axis}={index}" for axis, index in sorted(fixed.items())) or "all"
    if whole:
        write_nifti(args.output, tt, metadata)
    image = _as_slice(volume_values(tt, metadata, selection))
    if args.output and not whole:
        np.save(args.output, image, allow_pickle=False)
    original = None
    if args.against:
        volume = tlc.open_volume(args.against, dataset=args.dataset)
        if tuple(volume.shape) != shape:
            raise ValueError(f"--against has shape {volume.shape}, the TT has {shape}.")
        original = _as_image(_volume_slice(volume, selection))
        error = np.linalg.norm(image - original) / max(np.linalg.norm(original), 1e-300)
        print(f"slice {where}: relative error {error:.3e}")
    if args.png:
        if np.iscomplexobj(image):
            print(f"tensorly-cross reconstruct: the TT is complex: {args.png} shows the "
                  "modulus |TT| (-o OUT.npy keeps the complex values).", file=sys.stderr)
        write_png(args.png, image, original, title=f"{os.path.basename(args.file)} {where}")
    return EXIT_OK


def _parse_slice(text, shape):
    """``{axis: index}`` for the fixed axes: all but two (a 1-D or 2-D volume: none)."""
    n_fixed = max(len(shape) - 2, 0)
    if text is None:
        return {axis: shape[axis] // 2 for axis in range(n_fixed)}
    fixed = {}
    for part in text.split(","):
        try:
            axis, index = (int(item) for item in part.split("="))
        except ValueError as error:
            raise UsageError(f"--slice must be AXIS=INDEX[,AXIS=INDEX...], got {text!r}.") \
                from error
        if not 0 <= axis < len(shape) or not 0 <= index < shape[axis]:
            raise UsageError(f"--slice {part} is outside shape {shape}.")
        if axis in fixed:
            raise UsageError(f"--slice fixes axis {axis} twice.")
        fixed[axis] = index
    if len(fixed) != n_fixed:
        raise UsageError(f"--slice must fix {n_fixed} of the {len(shape)} axes of shape {shape} "
                         f"(a slice is 2-D), got {len(fixed)}.")
    return fixed


def _as_image(values):
    """A 2-D float64 array (a 1-D volume becomes one row)."""
    values = np.asarray(values)
    values = values.real if np.iscomplexobj(values) else values
    return np.atleast_2d(values.astype(np.float64))


def _as_slice(values):
    """A 2-D float64 array, complex128 for a complex TT (a 1-D volume becomes one row)."""
    values = np.atleast_2d(np.asarray(values))
    return values.astype(np.complex128 if np.iscomplexobj(values) else np.float64)


def tt_slice(tt, metadata, axis, index):
    """One 2-D slice (``axis`` fixed at ``index``) of a 3-D volume's TT (any layout)."""
    from ._reconstruct import volume_shape, volume_values

    shape = volume_shape(tt, metadata)
    selection = tuple(index if k == axis else slice(None) for k in range(len(shape)))
    return _as_image(volume_values(tt, metadata, selection))


def _volume_slice(volume, selection):
    import tensorly as tl

    ranges = [np.arange(n)[item] for item, n in zip(selection, volume.shape, strict=True)]
    grid = np.stack(np.meshgrid(*[np.atleast_1d(r) for r in ranges], indexing="ij"), -1)
    values = np.asarray(tl.to_numpy(volume.evaluate(grid.reshape(-1, len(ranges)))))
    kept = [np.size(r) for r, item in zip(ranges, selection, strict=True)
            if isinstance(item, slice)]
    return values.astype(np.float64).reshape(kept)


def write_png(path, image, original=None, title=""):
    """The slice, or the original, the TT slice and the error map side by side; a complex
    slice is shown as its modulus (titled ``|TT|``), its error map from the complex values."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tt_panel = ("|TT|", np.abs(image)) if np.iscomplexobj(image) else ("TT", image)
    panels = [tt_panel] if original is None else [
        ("original", original), tt_panel, ("|error|", np.abs(image - original))]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, data) in zip(axes[0], panels, strict=True):
        shown = ax.imshow(data, cmap="magma" if name == "|error|" else "gray", aspect="auto")
        ax.set_title(name)
        ax.axis("off")
        figure.colorbar(shown, ax=ax, fraction=0.046)
    figure.suptitle(title)
    figure.tight_layout()
    # A unique temporary name: two runs writing the same PNG must not share one.
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                         prefix=".png-", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, dpi=100, format="png")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.remove(temporary)


def demo_workdir():
    """``$XDG_CACHE_HOME/tensorly-cross``, else ``~/.cache/tensorly-cross``."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "tensorly-cross")


def _demo(args):
    import tensorly_cross as tlc

    workdir = args.workdir or demo_workdir()
    os.makedirs(workdir, exist_ok=True)
    name, shape, function, tol = _demo_volume(args)
    volume_path = os.path.join(workdir, f"{name}.zarr")
    # One writer at a time: a second demo waits for the first's volume instead of writing
    # its own over it (and write_volume publishes atomically either way).
    with _exclusive(os.path.join(workdir, f".{name}.lock")):
        if not os.path.exists(volume_path):
            from tensorly_cross.datasets import write_volume

            if not args.quiet:
                print(f"writing the demo volume {shape} (float32, once) to {volume_path}")
            write_volume(volume_path, function, shape, chunks=(32, 32, 32))
    volume = tlc.open_volume(volume_path, strict=True)
    output = os.path.join(workdir, f"{name}.tt.npz")
    method, reason = _demo_method(args.method, volume, volume_path)
    if not args.quiet:
        print(f"method: {method} ({reason})")
    if method == "stream":
        summary = stream_volume(volume, output, tol=tol, source=volume_path, force=True)
    else:
        summary = compress_volume(volume, output, tol=tol, method=method, quiet=args.quiet,
                                  verbose=args.verbose, source=volume_path, force=True)
    summary["bytes_total"] = math.prod(shape) * 4
    png = _demo_picture(volume_path, output, name, shape, workdir)
    if not args.quiet:
        print(format_summary(summary))
        if summary.get("bytes_read") is not None:
            print(f"volume size         {summary['bytes_total'] / 2**20:.0f} MiB on disk "
                  f"({summary['bytes_read'] / summary['bytes_total']:.1%} read)")
        print(f"picture             {png}")
    return _outcome(summary, True, args.accept_miss)


def _demo_volume(args):
    """(name, shape, function of multi-indices, tol) of the demo's volume."""
    from tensorly_cross.datasets import blob_phantom

    real = args.volume == "mni152"
    if args.volume == "auto":
        import importlib.util

        real = importlib.util.find_spec("nilearn") is not None
    if real:
        from nilearn.datasets import load_mni152_template

        template = np.asarray(load_mni152_template().get_fdata(), dtype=np.float32)
        return ("mni152_t1", template.shape, lambda indices: template[tuple(indices.T)],
                0.1 if args.tol is None else args.tol)
    shape = (args.size,) * 3
    return (f"blobs{args.size}", shape, blob_phantom(shape),
            1e-3 if args.tol is None else args.tol)


def _demo_method(method, volume, path):
    if method != "auto":
        return method, "asked for"
    from .cost import choose_path

    choice = choose_path(volume, path=path)
    return choice.method, choice.reason


def _demo_picture(volume_path, output, name, shape, workdir):
    """The middle slice along the last axis: the original, the TT and the error map."""
    import tensorly_cross as tlc

    tt, metadata = tlc.load_tt(output)
    axis, index = 2, shape[2] // 2
    image = tt_slice(tt, metadata, axis, index)
    selection = (slice(None), slice(None), index)
    original = _as_image(_volume_slice(tlc.open_volume(volume_path), selection))
    png = os.path.join(workdir, f"{name}_slice.png")
    write_png(png, image, original, title=f"demo volume {shape}, slice {axis}={index}")
    return png


@contextlib.contextmanager
def _exclusive(lock_path):
    """An exclusive advisory lock on ``lock_path`` (POSIX; elsewhere no lock, and the
    atomic publication alone keeps the volume whole)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


@contextlib.contextmanager
def _progress(total, unit, quiet):
    """A progress bar on stderr, cleared on the way out, errors and Ctrl-C included: the
    message that follows starts on a clean line."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit=unit, disable=quiet, leave=False, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
