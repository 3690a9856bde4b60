"""``tensorly-cross info``, the summary printed after a run, and a run's exit code."""

import decimal
import math
import numbers
import os
import shlex
import sys

import numpy as np

from ._common import EXIT_OK, EXIT_TOL_MISSED, fill_nan_of


def tt_summary(tt, metadata):
    from .._reconstruct import volume_shape

    shape = volume_shape(tt, metadata)
    n_params = sum(int(np.prod(core.shape)) for core in tt)
    entries = math.prod(shape)
    n_evals = metadata.get("n_evals")
    return dict(shape=shape, ranks=[1] + [int(core.shape[2]) for core in tt],
                n_params=n_params, compression=entries / n_params,
                n_evals=n_evals, fraction=_share(n_evals, entries),
                val_error=metadata.get("val_error", metadata.get("error")),
                exact_error=bool(metadata.get("exact_error")),
                rounding_error=metadata.get("rounding_error"),
                n_heldout=metadata.get("n_heldout"),
                heldout_bound=metadata.get("heldout_bound"),
                quantics=metadata.get("quantics"), dtype=str(np.asarray(tt[0]).dtype))


def _share(n_evals, entries):
    """``n_evals / entries``, None where the file's ``n_evals`` is no number or an integer
    whose share overflows a float (a hand-written 10**400 raised OverflowError)."""
    if not _is_number(n_evals):
        return None
    try:
        return n_evals / entries
    except OverflowError:
        return None


def _read_whole(summary):
    """Whether the cross read every voxel of a volume small enough for its error to have
    been computed on all of them (``EXACT_SIZE``): no sample was left to describe."""
    from ..cross.stopping import EXACT_SIZE

    fraction, entries = summary.get("fraction"), math.prod(summary.get("shape") or (0,))
    return _is_number(fraction) and fraction >= 1 and 0 < entries <= EXACT_SIZE


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(value, spec):
    """``value`` formatted with ``spec`` if it is a number; else as it is (a TT file's
    metadata is the user's: a field written by hand is shown, not a traceback)."""
    if not _is_number(value):
        return str(value)
    try:
        return format(value, spec)
    except OverflowError:  # an int beyond float's range (JSON keeps 10**400 exact)
        return str(value)


def _percent_up(fraction):
    """``fraction`` as a percentage of two significant digits, rounded up: a bound rounded
    to the nearest (0.0749% shown as 0.07%) understated what a sample can miss. In decimal
    arithmetic: exact where ``100 * fraction`` in floats is not (0.07% read 7.000...1e-2),
    and a subnormal bound (a hand-written TT file) cannot overflow a power of ten."""
    if not _is_number(fraction) or not 0 < fraction < 1:
        return _number(fraction, ".2%")
    percent = decimal.Decimal(repr(float(fraction))).scaleb(2)
    exponent = percent.adjusted()  # of its leading digit
    rounded = percent.quantize(decimal.Decimal(1).scaleb(exponent - 1),
                               rounding=decimal.ROUND_CEILING)
    exponent = rounded.adjusted()  # one more where rounding up reached a power of ten
    if exponent < -4:  # 1e-10%, not ten zeros (300 for a hand-written 1e-300)
        return f"{rounded:.1e}%"
    return f"{rounded:.{max(1 - exponent, 0)}f}%"


def format_summary(summary):
    lines = [f"shape               {tuple(summary['shape'])}",
             f"TT ranks            {tuple(summary['ranks'])}"
             + ("  (quantics layout)" if summary.get("quantics") else ""),
             f"parameters          {summary['n_params']} {summary.get('dtype', '')} "
             f"(compression {summary['compression']:.1f}x: voxels per parameter)"]
    if summary.get("n_evals") is not None:
        fraction = summary.get("fraction")
        lines.append(f"entries evaluated   {summary['n_evals']}"
                     + (f" ({fraction:.3%} of the volume)" if fraction is not None else ""))
    if summary.get("read_remotely"):
        lines.append("bytes read          on the cluster's workers (not counted here)")
    elif summary.get("bytes_read") is not None:
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
        # The stored cores' rounding is estimated on a sample: a bound, not exact.
        how = ("every voxel read, plus the cores' rounding to the stored dtype estimated "
               "on a sample" if summary.get("rounding_error") else "exact: every voxel read")
        lines.append(f"relative error      {_number(summary['val_error'], '.3e')} ({how})")
    elif summary.get("val_error") is not None:
        heldout = ""
        if _read_whole(summary):
            # As for the stream: the cores' rounding is estimated on a sample, not exact.
            heldout = (" (every voxel was read, plus the cores' rounding to the stored dtype "
                       "estimated on a sample)" if summary.get("rounding_error")
                       else " (exact: every voxel was read)")
        elif summary.get("n_heldout"):
            # Not "95%: at most 0.04% of the entries off", which read as a claim that the
            # TT is wrong at 0.04% of the voxels: it is what a sample cannot see.
            heldout = (f" on {summary['n_heldout']} random entries (a sample: structure in "
                       f"under {_percent_up(summary.get('heldout_bound'))} of the volume "
                       "can go unseen)")
        lines.append(f"held-out rel. error {_number(summary['val_error'], '.3e')}{heldout}")
    rounding, error = summary.get("rounding_error"), summary.get("val_error")
    if _is_number(rounding) and _is_number(error) and rounding and rounding > 0.01 * error:
        lines.append(f"                    of which about {rounding:.1e} from storing the "
                     f"cores as {summary.get('dtype')} (--dtype)")
    if summary.get("seconds") is not None and summary.get("passes"):
        passes = summary["passes"]
        lines.append(f"time                {_number(summary['seconds'], '.1f')} s "
                     f"({passes} pass{'es' if passes != 1 else ''} over the volume)")
    elif summary.get("seconds") is not None:
        sweeps = summary["sweeps"]
        lines.append(f"time                {_number(summary['seconds'], '.1f')} s "
                     f"({sweeps} sweep{'s' if sweeps != 1 else ''}, stop: {summary['stop']})")
    if summary.get("output"):
        lines.append(f"written             {summary['output']}")
    return "\n".join(lines)


def outcome(summary, tol_driven, accept_miss, demo_volume=None, demo_method=None):
    """Warnings after a run, and its exit code: a missed --tol is not a success.

    ``demo_volume``: the path of the volume the demo compressed, for a remedy in the terms
    of the demo (which has no --max-rank, --n-iter-max or --max-evals); None for compress.
    ``demo_method``: the demo's --method where it was not auto, kept in that remedy.
    """
    _warn_if_larger(summary)
    if not tol_driven or summary["stop"] == "tol":
        return EXIT_OK
    kind = "exact error" if summary.get("exact_error") else "held-out error"
    # Below tol on the sample yet no pass: its upper 95% bound was above tol.
    unsure = (not summary.get("exact_error") and summary["val_error"] <= summary["tol"])
    print(f"{'warning' if accept_miss else 'error'}: --tol {summary['tol']:.1e} not met"
          + (" with confidence (the upper 95% bound of the error exceeds it)" if unsure else "")
          + f": {kind} {summary['val_error']:.2e} (stop: {summary['stop']}); the TT was "
          f"written to {summary['output']}. "
          + _remedy(summary["stop"], summary.get("passes"), demo_volume, summary["tol"],
                    demo_method, _stalled_below_cap(summary))
          + ("." if accept_miss else ", or pass --accept-miss to accept it."), file=sys.stderr)
    return EXIT_OK if accept_miss else EXIT_TOL_MISSED


def _warn_if_larger(summary):
    """Warn when the TT file is larger than the volume's voxels, or than its file on disk
    (a compressed .nii.gz or zarr store can be several times smaller than its voxels)."""
    if summary["tt_bytes"] > summary["input_bytes"]:
        tt_size, input_size, exact = _sizes(summary["tt_bytes"], summary["input_bytes"])
        print(f"warning: the TT file ({tt_size}) is larger than the input ({input_size})"
              f"{exact}: this volume does not compress at these settings.", file=sys.stderr)
    elif summary.get("file_bytes") and summary["tt_bytes"] > summary["file_bytes"]:
        tt_size, file_size, exact = _sizes(summary["tt_bytes"], summary["file_bytes"])
        print(f"warning: the TT file ({tt_size}) is larger than the input file "
              f"({file_size} on disk, compressed){exact}: keeping the "
              "input as it is stores it in less space; a TT pays for its random access to "
              "entries and slices, or at a larger --tol.", file=sys.stderr)


def _sizes(larger, smaller):
    """Two sizes in MiB, and where MiB with two decimals shows them equal or the smaller
    as nothing (a small volume's ``(0.00 MiB) is larger than the input (0.00 MiB)``),
    both in a unit that tells them apart.

    Parameters
    ----------
    larger, smaller : int
        Sizes in bytes.

    Returns
    -------
    tuple of str
        ``("0.01 MiB", "0.01 MiB", ", 12.09 KiB against 7.36 KiB")``; the last is empty
        where the MiB tell them apart.
    """
    in_mib = [f"{size / 2**20:.2f} MiB" for size in (larger, smaller)]
    if in_mib[0] != in_mib[1] and in_mib[1] != "0.00 MiB":
        return in_mib[0], in_mib[1], ""
    exact = [f"{size / 2**10:.2f} KiB" for size in (larger, smaller)]
    if exact[0] == exact[1]:
        exact = [f"{size} bytes" for size in (larger, smaller)]
    return in_mib[0], in_mib[1], f", {exact[0]} against {exact[1]}"


# What the demo, which has no rank, sweep or budget flags, offers instead of raising them:
# compress on its volume, with compress's defaults doubled.
DEMO_RERUN = "tensorly-cross compress {volume} -o OUT.tt.npz --tol {tol:g} --max-rank {rank}"


def _stalled_below_cap(summary):
    """``(patience, largest rank, max_rank)`` of a rank-adaptive cross that stalled below
    its ``--max-rank``, else None: each stalled sweep lowers its truncation (pivot cut), and
    only the sweeps after it raise the ranks, so more patience can meet --tol where more
    rank or sweeps cannot (MNI152's T1 with a bright blob at --tol 0.05: stalled at ranks
    (7, 5) and 0.072, where --patience 4 met it)."""
    patience, max_rank = summary.get("patience"), summary.get("max_rank")
    ranks = summary.get("ranks") or [1]
    if summary.get("stop") != "stalled" or not patience or max_rank is None:
        return None
    return (patience, max(ranks), max_rank) if max(ranks) < max_rank else None


def _remedy(stop, passes=None, demo_volume=None, tol=None, demo_method=None,
            stalled_below_cap=None):
    """What to do after a missed tolerance, in the flags of the command that ran: those of
    ``compress``, or (``demo_volume`` given) the demo's and a compress command line on the
    demo's volume (with the demo's ``--method`` where one was asked for: compress's auto
    could choose another). ``stalled_below_cap``: see :func:`_stalled_below_cap`."""
    if stop not in ("dtype", "max_width") and demo_volume is not None:
        from .compress import MAX_RANK, N_ITER_MAX

        rerun = DEMO_RERUN.format(volume=shlex.quote(os.fspath(demo_volume)), tol=tol,
                                  rank=2 * MAX_RANK)
        if not passes:  # a cross: its sweeps too
            rerun += f" --n-iter-max {2 * N_ITER_MAX}"
        if demo_method is not None:
            rerun += f" --method {demo_method}"
        return ("The demo has no rank, sweep or budget settings: give a larger --tol, or "
                f"compress its volume with more ({rerun})")
    if stop == "dtype":
        # "Met", not "below": the stream meets a --tol under round-off at the data's
        # precision (a constant volume at --tol 1e-17, error 1.8e-16).
        return ("Its error met --tol before its cores were rounded to the stored "
                "dtype: pass --dtype float64")
    if stop == "max_width":  # the stream's sketches, narrowed by its core budget
        return ("The stream's sketches were narrowed to fit its projected core in memory, "
                "which alone leaves an error above --tol (more rank cannot meet it): give "
                "a larger --tol, or try a cross (--method lsq)")
    if passes:  # the streaming TT-SVD: no sweeps to add
        return "Raise --max-rank"
    if stop == "max_evals":  # the budget ran out: more rank or sweeps would need more of it
        return "Raise --max-evals"
    if stalled_below_cap is not None:
        patience, largest, max_rank = stalled_below_cap
        return (f"Raise --patience (now {patience}: it stalled at rank {largest}, below "
                f"--max-rank {max_rank}, and each stalled sweep lowers the truncation, "
                "which only the sweeps after it turn into rank)")
    if stop == "stalled":  # sweeps stopped lowering the error: wait longer, or grow
        return "Raise --patience or --max-rank"
    return "Raise --max-rank or --n-iter-max"


def run_info(args):
    import tensorly_cross as tlc

    tt, metadata = tlc.load_tt(args.file)
    summary = tt_summary(list(tt), metadata)
    print(format_summary(summary))
    if metadata.get("source"):
        print(f"source              {metadata['source']}")
    fill = fill_nan_of(metadata)
    if fill is not None:
        print(f"NaN voxels read as  {fill:g} (--fill-nan)")
    if metadata.get("nifti"):
        print(f"NIfTI               {_nifti_kept(metadata['nifti'])} kept")
    axes = metadata.get("axes")
    if isinstance(axes, list) and axes != sorted(axes):  # compress --axes
        print(f"mode order          the source's axes {tuple(axes)} (--axes)")
    outcome_line = _stop_line(metadata)
    if outcome_line:
        print(outcome_line)
    if metadata.get("library_version"):  # absent from a file of save_tt
        print(f"library version     {metadata['library_version']}")
    return EXIT_OK


def _nifti_kept(nifti):
    """What a TT file keeps of a NIfTI input, in words: its affine and header, and how
    many of its header extensions (which reconstruct -o OUT.nii writes back)."""
    extensions = nifti.get("extensions") if isinstance(nifti, dict) else None
    count = len(extensions) if isinstance(extensions, list) else 0
    if not count:
        return "affine and header"
    return f"affine, header and {count} extension{'s' if count > 1 else ''}"


def _stop_line(metadata):
    """Why the run that wrote the file stopped, and whether it met its --tol: a TT that
    missed its tolerance (written with --accept-miss, or exit 3) looked like any other."""
    stop = metadata.get("stop_reason")
    if not isinstance(stop, str):
        return ""
    arguments = metadata.get("arguments")
    arguments = arguments if isinstance(arguments, dict) else {}
    tol = arguments.get("tol")
    line = f"stopped by          {stop}"
    if _is_number(tol) and arguments.get("rank") is None:  # with a rank, tol is a stop only
        line += f" (--tol {tol:g} {'met' if stop == 'tol' else 'NOT met'})"
    return line

