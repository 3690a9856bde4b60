"""``tensorly-cross compress``: a cross or a streaming TT-SVD of a stored volume, saved
with its metadata (shape, layout, NIfTI affine, the run's arguments and outcome)."""

import contextlib
import math
import os
import sys
import time
import warnings

import numpy as np

from .._validation import check_bool
from ..io import VOLUME_SUFFIXES
from ..options import DEFAULT_MAX_RANK, LSQ_VAL_SIZE
from ._common import (
    UsageError,
    check_dataset_once,
    check_given,
    check_output,
    default_output,
    is_hdf5,
    open_client,
    open_input,
    progress_bar,
    source_file,
)
from .summary import format_summary, outcome, tt_summary

# tt_cross's default number of held-out entries: they count as evaluations.
VAL_SIZE = 1000


def run_compress(args):
    """``tensorly-cross compress``: check the arguments, open the volume, run, report."""
    if args.max_slices is not None and args.rank is None:
        raise UsageError("--max-slices needs --rank (a fixed-rank cross).")
    if args.method in ("als", "block") and args.rank is None:
        raise UsageError(f"--method {args.method} needs --rank (a fixed-rank cross).")
    if args.max_slices is not None and args.method in ("lsq", "tci"):
        raise UsageError(f"--max-slices needs --method als or auto (the fixed-rank ALS "
                         f"cross), not {args.method}.")
    if args.oversample is not None and args.method == "tci":
        raise UsageError("--oversample needs --method lsq, als or auto (a cross that fits "
                         "its cores over more entries), not tci.")
    if args.rank is not None and args.max_rank != MAX_RANK:
        raise UsageError(f"--max-rank {args.max_rank} caps the ranks that --tol asks for; "
                         f"--rank {args.rank} fixes them: give one of the two.")
    if args.method == "stream":
        asked = _cross_only_flags(args) + _sweep_flags(args)
        if asked:
            raise UsageError(f"{', '.join(asked)} ask{'s' if len(asked) == 1 else ''} for a "
                             "cross; --method stream reads the volume whole.")
    if args.dataset is not None and not is_hdf5(args.input):
        raise UsageError(f"--dataset names an HDF5 dataset; the input {args.input!r} is not "
                         ".h5/.hdf5.")
    check_dataset_once(args.input, args.dataset)
    check_given("-o/--output", args.output)
    axes = _parse_axes(args.axes, args.quantics)
    output = args.output or default_output(args.input)
    check_output(output, args.force, inputs=[args.input])
    _check_tt_suffix(output)
    in_process = _read_in_process(args.input)
    local = None
    if args.max_evals is not None:
        # The budget is refuted by the volume's shape alone, read here from its metadata:
        # checked once connected, a scheduler that cannot be reached made the user wait
        # for dask's connect timeout (30 s) before hearing of a budget refused at once.
        local = _open(args, client=None)
        _check_axes(axes, local.ndim)
        _check_max_evals(args, _choose_method(args, local)[0], local.shape)
    with open_client(args.scheduler) as client:
        # The cross reads .npy and NIfTI files in this process, the stream on the workers:
        # which one runs is known only below, so the client is not given to open_volume
        # (it would warn that the workers are not used, also before a stream that uses them).
        if local is not None and (in_process or client is None):
            volume = local  # opened as below: without a client
        else:
            volume = _open(args, client=None if in_process else client)
        _check_axes(axes, volume.ndim)
        method, reason = _choose_method(args, volume)
        _check_max_evals(args, method, volume.shape)
        _check_oversample(args, method, volume.ndim)
        if not args.quiet:
            print(f"method: {method} ({reason})")
        if in_process and client is not None and method != "stream":
            print(f"warning: --scheduler is not used by the cross for "
                  f"{os.path.basename(args.input)!r}: it reads .npy and NIfTI files in this "
                  "process (--method stream sends their blocks to the workers).",
                  file=sys.stderr)
        # --rank: no tolerance (argparse still holds --tol's default, which would stop the
        # cross early and cap TCI's ranks far below the rank asked for).
        tol = args.tol if args.rank is None else None
        source = _source_name(args.input, args.dataset)
        if method == "stream":
            summary = stream_volume(volume, output, tol=tol, rank=args.rank,
                                    client=client, seed=args.seed, source=source,
                                    force=args.force, dtype=args.dtype,
                                    max_rank=args.max_rank)
        else:
            summary = compress_volume(
                volume, output, tol=tol, rank=args.rank, method=method,
                max_rank=args.max_rank, quantics=args.quantics, max_evals=args.max_evals,
                n_iter_max=args.n_iter_max, seed=args.seed, quiet=args.quiet,
                verbose=args.verbose, source=source, force=args.force,
                patience=args.patience or None, oversample=args.oversample, axes=axes,
                max_slices=args.max_slices, dtype=args.dtype)
    if not args.quiet:
        print(format_summary(summary))
    return outcome(summary, args.rank is None, args.accept_miss)


def _open(args, client):
    """The input volume, opened as the arguments ask, read by ``client``'s workers."""
    return open_input(args.input, dataset=args.dataset, cache_bytes=args.cache_bytes,
                      client=client, strict=args.strict, fill_nan=args.fill_nan)


def _source_name(path, dataset):
    """The input as the TT file records it: an HDF5 dataset given by ``--dataset`` as
    ``FILE.h5:/NAME``, as that spelling records it (``FILE.h5`` alone did not say which of
    the file's datasets the TT holds)."""
    return path if dataset is None else f"{path}:/{dataset.lstrip('/')}"


# Suffixes of the files compress reads and reconstruct writes: a TT file (a zip archive)
# under one of them is taken for that format by every program that trusts the name.
FOREIGN_SUFFIXES = (*VOLUME_SUFFIXES, ".png")


def _check_tt_suffix(output):
    """Refuse an output named as a volume or a picture (``out.nii.gz``, ``out.npy``): the TT
    file written under it is a zip archive, which viewers fail on and ``np.load`` reads as
    an archive, not an array."""
    lower = output.lower().rstrip("/")
    suffix = next((suffix for suffix in FOREIGN_SUFFIXES if lower.endswith(suffix)), None)
    if suffix is not None:
        raise UsageError(f"-o/--output {output!r} ends in {suffix}, but compress writes a TT "
                         "file (a .npz archive: give OUT.tt.npz); reconstruct then writes "
                         "from it slices (--png OUT.png, -o OUT.npy) or the volume (-o "
                         "OUT.nii.gz).")


def _read_in_process(path):
    """Whether the cross reads ``path`` in this process whatever the client (a ``.npy`` or
    NIfTI file; zarr and HDF5 are read on the workers)."""
    lower = path.lower()
    return os.path.isfile(path) and lower.endswith((".npy", ".nii", ".nii.gz"))


def _choose_method(args, volume):
    """The method ``--method`` names, or for ``auto`` the cost model's choice (with why)."""
    from ..cost import choose_path

    if args.method != "auto":
        return args.method, "asked for"
    cross_only = _cross_only_flags(args)
    if cross_only:
        verb = "asks" if len(cross_only) == 1 else "ask"
        return "auto", f"{', '.join(cross_only)} {verb} for a cross; tt_cross chooses which"
    choice = choose_path(volume, path=args.input, rank=args.rank, max_rank=args.max_rank)
    return choice.method, choice.reason


# tt_cross's own default tolerance, for a cross at a fixed --rank.
FIXED_RANK_TOL = 1e-6
# Defaults of --n-iter-max and --patience; --max-rank's is the library's.
N_ITER_MAX, PATIENCE = 20, 2
MAX_RANK = DEFAULT_MAX_RANK


def compress_volume(volume, output, tol, rank=None, method="auto", max_rank=MAX_RANK,
                    quantics=False, max_evals=None, n_iter_max=N_ITER_MAX, seed=0,
                    quiet=False, verbose=False, source=None, force=False,
                    patience=PATIENCE, oversample=None, axes=None,
                    max_slices=None, dtype="input"):
    """Cross ``volume`` (a LazyTensor), save the TT with its metadata; returns a summary.

    ``tol``: None with a ``rank``, which then runs as ``tt_cross(volume, rank=rank)`` does
    (its default tolerance, below what a real volume reaches at a fixed rank).

    ``axes``: the TT's mode order (a permutation of the volume's axes; not with quantics).
    ``dtype``: of the stored cores, ``"input"`` for the input's floating dtype.
    ``quantics``, ``quiet``, ``verbose``, ``force``: bools (a TypeError before any read).
    """
    import tensorly_cross as tlc

    from .._reconstruct import nifti_metadata

    # Before any read: quantics="no" crossed the quantics folding (a string is truthy), and
    # force="no" failed in save_tt, as overwrite=, only after the whole cross.
    quantics, quiet, verbose, force = (check_bool(value, name) for value, name in (
        (quantics, "quantics"), (quiet, "quiet"), (verbose, "verbose"), (force, "force")))
    target = tlc.TransposedTensor(volume, axes) if axes else volume
    target = tlc.QuanticsTensor(target) if quantics else target
    input_dtype = _input_dtype(volume)
    reads_before = _read_counts(volume)
    start = time.perf_counter()
    with progress_bar(n_iter_max, "sweeps", quiet) as progress:

        def report(tt, info):
            progress.set_postfix(rank=max(info.ranks[-1]), err=f"{info.val_errors[-1]:.1e}")
            progress.update(1)
            if verbose:
                progress.write(f"sweep {info.n_sweeps}: ranks {info.ranks[-1]}, "
                               f"evals {info.n_evals}, held-out error {info.val_errors[-1]:.2e}")
            return False

        with (warnings.catch_warnings(), _budget_in_flag_terms(max_evals),
              _method_in_flag_terms(method)):
            # A missed tolerance is reported by the exit code, not a warning.
            warnings.simplefilter("ignore", tlc.ToleranceNotMetWarning)
            tt, info = tlc.tt_cross(target, rank=rank,
                                    tol=FIXED_RANK_TOL if tol is None else tol, method=method,
                                    max_rank=max_rank, max_evals=max_evals,
                                    n_iter_max=n_iter_max, random_state=seed, callback=report,
                                    return_info=True, patience=patience,
                                    oversample=oversample, max_slices=max_slices)
    elapsed = time.perf_counter() - start
    # "method": the one that ran (auto resolves to one), as the stream's files record it.
    metadata = dict(shape=list(volume.shape), source=source, method=info.method,
                    val_error=info.val_error,
                    n_heldout=info.n_heldout, heldout_bound=info.heldout_bound,
                    n_evals=info.n_evals, stop_reason=info.stop_reason,
                    quantics=_layout_meta(target) if quantics else None,
                    axes=list(target.axes) if axes else None,
                    input_dtype=None if input_dtype is None else str(input_dtype),
                    nifti=nifti_metadata(volume),
                    arguments=dict(tol=tol, rank=rank, method=method, max_rank=max_rank,
                                   max_evals=max_evals, n_iter_max=n_iter_max, seed=seed,
                                   patience=patience, oversample=oversample,
                                   max_slices=max_slices, dtype=dtype,
                                   fill_nan=getattr(volume, "fill_nan", None)),
                    library_version=tlc.__version__, seconds=elapsed)
    summary = _save(volume, output, tt, metadata, dtype, force)
    # On a cluster the workers read the chunks: the volume's own counts stay at 0.
    remote = getattr(volume, "client", None) is not None
    reads = _read_counts(volume, since=reads_before)
    summary.update(bytes_read=None if remote else reads["bytes_read"],
                   chunks_read=reads["chunks_read"], pages_read=reads["pages_read"],
                   read_remotely=remote, sweeps=info.n_sweeps, stop=metadata["stop_reason"],
                   tol=tol, max_rank=None if rank is not None else max_rank,
                   patience=patience)
    return summary


# The read counters of a volume (a DaskTensor's chunks, a .npy volume's pages, their bytes).
READ_COUNTERS = ("bytes_read", "chunks_read", "pages_read")


def _read_counts(volume, since=None):
    """The volume's read counters (None where it keeps none), less those of ``since``: they
    run over the volume's life, and a second run on one open volume reported both runs'
    reads as its own."""
    counts = {name: getattr(volume, name, None) for name in READ_COUNTERS}
    if since is not None:
        counts = {name: None if count is None else count - (since[name] or 0)
                  for name, count in counts.items()}
    return counts


@contextlib.contextmanager
def _budget_in_flag_terms(max_evals):
    """tt_cross's "max_evals=N is too small" in the command's terms: it has no max_evals=
    or val_size= to give. Still exit 1 (documented): what is too small depends on the
    volume, not on the flag alone."""
    try:
        yield
    except ValueError as error:
        text = str(error)
        if max_evals is None or not text.startswith(f"max_evals={max_evals} is too small"):
            raise
        text = text.replace(f"max_evals={max_evals}", f"--max-evals {max_evals}", 1)
        for advice in ("; raise max_evals or lower val_size.", ": raise max_evals."):
            text = text.replace(advice, ".")  # the library's advice, in its own terms
        text = text.rstrip(".")
        raise ValueError(f"{text}; give a larger --max-evals.") from error


@contextlib.contextmanager
def _method_in_flag_terms(method):
    """tt_cross's refusal of what ``method='lsq'`` (or another) needs, in the command's
    terms: the command line spells the argument ``--method lsq``."""
    try:
        yield
    except ValueError as error:
        text = str(error)
        if not text.startswith(f"method={method!r} needs"):
            raise
        raise ValueError(text.replace(f"method={method!r}", f"--method {method}", 1)) from error


def stream_volume(volume, output, tol, rank=None, client=None, seed=0, source=None,
                  force=False, dtype="input", max_rank=None):
    """Read ``volume`` whole, at most twice (:func:`tensorly_cross.streaming_tt_svd`), save the TT
    with its metadata; returns a summary like :func:`compress_volume`'s."""
    import tensorly_cross as tlc

    from .._reconstruct import nifti_metadata

    force = check_bool(force, "force")  # not as overwrite=, in save_tt after both passes
    start = time.perf_counter()
    # A missed tolerance is reported by the exit code; other warnings (a clipped --rank)
    # are shown as on the cross path, one line each (the bar itself stays hidden).
    with progress_bar(None, "passes", quiet=True), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"relative error .* > tol=",
                                category=UserWarning)
        tt, info = tlc.streaming_tt_svd(volume, tol=None if rank is not None else tol,
                                        rank=rank, client=client, random_state=seed,
                                        max_rank=None if rank is not None else max_rank,
                                        return_info=True)
    # The library's verdict: round-off is never kept as rank, so a tol below the data's
    # precision is met (an error of 1.8e-16 at --tol 1e-17 was a miss with no stop reason).
    met = rank is None and info.limited_by is None
    metadata = dict(shape=list(volume.shape), source=source, method="stream",
                    error=info.error, exact_error=True,
                    stop_reason="rank" if rank is not None else
                    ("tol" if met else info.limited_by),
                    n_passes=info.n_passes, widths=list(info.widths),
                    input_dtype=_dtype_name(_input_dtype(volume)),
                    nifti=nifti_metadata(volume),
                    arguments=dict(tol=tol, rank=rank, method="stream", seed=seed,
                                   dtype=dtype, max_rank=max_rank,
                                   fill_nan=getattr(volume, "fill_nan", None)),
                    library_version=tlc.__version__, seconds=time.perf_counter() - start)
    summary = _save(volume, output, tt, metadata, dtype, force)
    summary.update(val_error=metadata["error"], exact_error=True, bytes_read=info.bytes_read,
                   passes=info.n_passes, sweeps=0, stop=metadata["stop_reason"], tol=tol)
    return summary


def _save(volume, output, tt, metadata, dtype, force):
    """Store the cores (in the chosen dtype) and the metadata; the summary of the file."""
    import tensorly_cross as tlc

    from .._backend import to_host

    input_dtype = _input_dtype(volume)
    computed = [np.asarray(to_host(core)) for core in tt]
    with np.errstate(over="ignore"):  # cores beyond float32: save_tt refuses them by name
        cores = [core.astype(_core_dtype(dtype, input_dtype)) for core in computed]
    # Cores that overflowed float32 make the estimate inf/nan: NumPy's warnings about it
    # would precede save_tt's one-line refusal, which names the problem.
    with np.errstate(all="ignore"):
        rounding = _rounding_error(computed, cores)
    _account_for_rounding(metadata, rounding)
    tlc.save_tt(output, cores, metadata, overwrite=force)
    summary = tt_summary(cores, metadata)
    summary.update(output=output, seconds=metadata["seconds"],
                   tt_bytes=os.path.getsize(output),
                   input_bytes=math.prod(volume.shape) * (input_dtype or np.dtype("f8")).itemsize,
                   file_bytes=_disk_bytes(metadata.get("source")))
    return summary


def _disk_bytes(path):
    """Bytes a file, a folder (a zarr store) or an HDF5 dataset (``FILE.h5:/NAME``) takes on
    disk; None without a path."""
    if not isinstance(path, str):
        return None
    file = source_file(path)
    if file != path:
        return _hdf5_dataset_bytes(file, path[len(file) + 1:])
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


def _hdf5_dataset_bytes(path, name):
    """Bytes the dataset ``name`` of the HDF5 file ``path`` takes in it (after its filters),
    None where HDF5 does not say (0: external or virtual data, kept in other files).

    The dataset's own, not the file's: the path ``FILE.h5:/NAME`` is no file (no size was
    found, and no warning given), and the file may hold other, larger datasets.
    """
    import h5py

    try:
        with h5py.File(path, "r") as file:
            return int(file[name].id.get_storage_size()) or None
    except (OSError, KeyError, TypeError, AttributeError):  # a group, a link gone since
        return None


def _rounding_error(computed, stored, n_samples=10_000):
    """Relative change of the TT's entries from storing its cores in a narrower dtype,
    on random entries (0.0 when nothing was rounded)."""
    if all(a.dtype == b.dtype for a, b in zip(computed, stored, strict=True)):
        return 0.0
    from ..cross.tt_entries import tt_entries

    rng = np.random.default_rng(0)
    indices = np.stack([rng.integers(core.shape[1], size=n_samples) for core in computed],
                       axis=1)
    exact = np.asarray(tt_entries(computed, indices))
    change = np.asarray(tt_entries([core.astype(a.dtype) for core, a in
                                    zip(stored, computed, strict=True)], indices)) - exact
    return float(np.linalg.norm(change) / max(np.linalg.norm(exact), 1e-300))


def _account_for_rounding(metadata, rounding):
    """The recorded error describes the stored TT: the computed TT's error plus the
    rounding of its cores; a tolerance met only before rounding is a miss."""
    if not rounding:
        return
    key = "error" if "error" in metadata else "val_error"
    if metadata.get(key) is None:
        return
    metadata["rounding_error"] = rounding
    metadata[key] = float(metadata[key]) + rounding
    tol = metadata["arguments"].get("tol")
    if metadata.get("stop_reason") == "tol" and tol is not None and metadata[key] > tol:
        metadata["stop_reason"] = "dtype"


def _dtype_name(dtype):
    return None if dtype is None else str(dtype)


def _input_dtype(volume):
    """The dtype a volume is stored in (None when it does not say): for a scaled NIfTI the
    stored integers', not the float64 they read back as (they hold no more precision)."""
    source = getattr(volume, "source", None)
    dtype = getattr(source, "stored_dtype", None)
    if dtype is None:
        dtype = getattr(volume, "dtype", None)
    if dtype is None:
        dtype = getattr(source, "dtype", None)
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


def _cross_only_flags(args):
    """The flags given that only a cross uses."""
    return [flag for flag, given in [("--quantics", args.quantics),
                                     ("--axes", args.axes is not None),
                                     ("--max-slices", args.max_slices is not None),
                                     ("--oversample", args.oversample is not None),
                                     ("--max-evals", args.max_evals is not None)] if given]


def _sweep_flags(args):
    """The sweep settings given other values than their defaults: the stream has no
    sweeps (under ``--method auto`` they apply if a cross is chosen, and do not choose)."""
    return [flag for flag, value, default in [("--n-iter-max", args.n_iter_max, N_ITER_MAX),
                                              ("--patience", args.patience, PATIENCE)]
            if value != default]


def _check_axes(axes, ndim):
    if axes is not None and sorted(axes) != list(range(ndim)):
        raise UsageError(f"--axes must be a permutation of the volume's {ndim} axes "
                         f"(0 to {ndim - 1}, each once), got {','.join(map(str, axes))}.")


def _check_max_evals(args, method, shape):
    """A budget the held-out entries alone would exhaust is a bad argument, said in the
    command's terms (it has no --val-size) and naming the cross that runs: on a volume of
    one axis --method auto runs TCI, or the ALS cross with --rank, not the least-squares
    cross (which needs two axes). Drawn with replacement, the held-out entries read at most
    all of a small volume's entries: a budget above that is taken, as the library takes it."""
    if args.max_evals is None:
        return
    run_shape = tuple(shape)
    if args.quantics:  # the cross runs on the quantics layout's modes
        from ..lazy.quantics import QuanticsLayout

        run_shape = QuanticsLayout.create(shape, "grouped").quantics_shape
    ran = _cross_that_runs(args, method, len(run_shape))
    held_out = LSQ_VAL_SIZE if ran == "lsq" else VAL_SIZE
    entries = math.prod(run_shape)
    if args.max_evals > min(held_out, entries):
        return
    read = (f" (they read all {entries} entries of this volume)" if entries <= held_out
            else "")
    if ran == "lsq":
        raise UsageError(f"--max-evals {args.max_evals} is too small for the least-squares "
                         f"cross: its {LSQ_VAL_SIZE} held-out entries count as evaluations"
                         f"{read}. Give more than {min(held_out, entries)} plus what its "
                         f"sweeps read (the first one alone reads tens of thousands of "
                         f"entries of a large volume), or --method tci ({VAL_SIZE} held-out "
                         f"entries).")
    name = "TCI" if ran == "tci" else "the ALS cross"
    chosen = ""
    if method == "auto":
        where = ("with --max-slices" if args.max_slices is not None else
                 "on a volume of one axis" + (" with --rank" if ran == "als" else ""))
        chosen = f" (which --method auto runs {where})"
    raise UsageError(f"--max-evals {args.max_evals} is too small for {name}{chosen}: its "
                     f"{VAL_SIZE} held-out entries count as evaluations{read}. Give more "
                     f"than {min(held_out, entries)} plus what its sweeps read.")


def _cross_that_runs(args, method, ndim):
    """``"lsq"``, ``"tci"`` or ``"als"``: ``method``, or the one tt_cross runs for
    ``"auto"`` (the least-squares cross where it applies, else TCI without a rank and
    ALS with one)."""
    if method != "auto":
        return method
    if ndim >= 2 and args.max_slices is None:
        return "lsq"
    return "tci" if args.rank is None else "als"


def _check_oversample(args, method, ndim):
    """--oversample under auto without --rank, on a volume of one axis, said in the
    command's terms: auto runs TCI there (the least-squares cross needs 2 axes), which
    does not oversample, and the library's refusal named its own arguments."""
    if (method == "auto" and ndim < 2 and not args.quantics and args.rank is None
            and args.oversample is not None and args.oversample > 1):
        raise UsageError("--oversample on a volume of one axis needs --rank (the "
                         "oversampled ALS cross): the least-squares cross needs 2 axes, and "
                         "TCI, which --method auto runs without --rank, chooses its own "
                         "pivots.")


def _layout_meta(quantics_tensor):
    layout = quantics_tensor.layout
    return dict(order=layout.order, shape=list(layout.shape))

