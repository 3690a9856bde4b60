"""The argument parser of ``tensorly-cross``: one function per subcommand."""

import argparse
import math

from ..options import LSQ_VAL_SIZE
from .compress import MAX_RANK, N_ITER_MAX, PATIENCE, VAL_SIZE, run_compress
from .demo import DEMO_SIZE, run_demo
from .reconstruct import run_reconstruct
from .summary import run_info


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


def _float_at_least(minimum, strict=False, below=None):
    """An argparse type: a finite float ``>= minimum`` (``> minimum`` if ``strict``), and
    ``< below`` if given."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be a finite number {relation} {minimum}, "
                                             f"got {text}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be below {below}, got {text}")
        return value

    return parse


def _finite_float(text):
    """An argparse type: any finite float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except the uninformative ones (None, a switch's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    """The parser of every subcommand; each sets ``args.handler``."""
    from .. import __version__

    formatter = _DefaultsFormatter
    parser = argparse.ArgumentParser(
        prog="tensorly-cross", formatter_class=formatter,
        description="Tensor-train cross approximation of volumes that may not fit in memory.",
        epilog="Exit codes: 0 success, 1 unusable input, 2 bad arguments, 3 --tol not met "
               "(see --accept-miss), 130 interrupted, 143 terminated (SIGTERM).")
    parser.add_argument("--version", action="version", version=f"tensorly-cross {__version__}")
    commands = parser.add_subparsers(dest="command")

    _add_compress(commands, formatter)
    _add_info(commands, formatter)
    _add_reconstruct(commands, formatter)
    _add_demo(commands, formatter)
    parser.subcommands = dict(commands.choices)  # name -> its parser, for its own errors
    return parser


def _add_compress(commands, formatter):
    """``compress INPUT``: the cross's and the stream's settings."""
    compress = commands.add_parser("compress", help="compress a volume into a TT file",
                                   formatter_class=formatter)
    compress.add_argument("input", help=".zarr, .h5/.hdf5[:dataset], .npy or .nii/.nii.gz")
    compress.add_argument("-o", "--output",
                          help="TT file to write, a .npz archive (default: INPUT stem + "
                               ".tt.npz; not .nii, .npy, .png, .zarr, .h5)")
    group = compress.add_mutually_exclusive_group()
    group.add_argument("--rank", type=_int_at_least(1),
                       help="fixed TT rank (of the stream or the cross that --method picks)")
    # 0.1, not 1e-3: real scans (MNI152) need ranks far above --max-rank for 1e-3 and
    # ended every default run with exit 3; smooth volumes ask for less with --tol.
    group.add_argument("--tol", type=_float_at_least(0, strict=True, below=1), default=0.1,
                       help="target relative error (Frobenius; on held-out voxels for a "
                            "cross, exact for the stream): 0.1 suits MRI scans, smooth "
                            "volumes compress to 1e-3 and below")
    compress.add_argument("--accept-miss", action="store_true",
                          help="exit 0 when the run ends above --tol (default: exit 3)")
    compress.add_argument("--method", choices=["auto", "lsq", "tci", "als", "stream"],
                          default="auto",
                          help="'stream': read everything, at most twice (streaming TT-SVD, exact "
                               "error); 'lsq', 'tci', 'als': a cross; 'auto': the stream or "
                               "the least-squares cross, from the storage (the choice and "
                               "its reason are printed)")
    compress.add_argument("--max-rank", type=_int_at_least(1), default=MAX_RANK,
                          help="rank cap of the adaptive cross and of the stream")
    compress.add_argument("--quantics", action="store_true", help="cross in the QTT layout")
    compress.add_argument("--axes", default=None,
                          help="mode order of the TT, e.g. 0,2,1: on a C-ordered .npy the "
                               "contiguous axis in the middle reads fewer pages")
    compress.add_argument("--max-slices", type=_int_at_least(1), default=None,
                          help="with --rank: outer fibers in at most N slices (fewer pages)")
    # Its floor, the held-out entries of the cross that runs (4000 for the least-squares
    # cross, 1000 for TCI and ALS), is checked once the volume's axes tell which one does.
    compress.add_argument("--max-evals", default=None, type=_int_at_least(1),
                          help="budget of distinct entries read (the held-out ones count: "
                               f"{LSQ_VAL_SIZE} for the least-squares cross, {VAL_SIZE} for "
                               "TCI and ALS)")
    compress.add_argument("--n-iter-max", type=_int_at_least(1), default=N_ITER_MAX,
                          help="maximum number of sweeps")
    compress.add_argument("--patience", type=_int_at_least(0), default=PATIENCE,
                          help="stop after N sweeps without a 1%% lower held-out error or a "
                               "rank change (0: never)")
    compress.add_argument("--oversample", type=_float_at_least(1.0), default=None,
                          help="index sets OVERSAMPLE x the rank, cores fitted in least "
                               "squares over all of them (sharper volumes; not with tci); "
                               "default: the method's own (1.5 for 'lsq', 1 for 'als')")
    compress.add_argument("--cache-bytes", type=_int_at_least(0), default=None,
                          help="chunk/page cache (default: 256 MiB of chunks, 64 MiB of "
                               ".npy pages)")
    compress.add_argument("--dtype", choices=["input", "float32", "float64"], default="input",
                          help="dtype of the stored cores; 'input': the input's floating "
                               "dtype (float32 for integers of 16 bits or fewer, else float64)")
    compress.add_argument("--scheduler",
                          help="dask.distributed scheduler address: the workers read the "
                               "chunks (a .npy or NIfTI input: for the stream only; the "
                               "cross reads those in this process)")
    compress.add_argument("--dataset", help="HDF5 dataset path")
    compress.add_argument("--strict", action="store_true",
                          help="refuse a zarr or HDF5 input with chunks never stored (they "
                               "read as the fill value: a partly written volume)")
    compress.add_argument("--fill-nan", type=_finite_float, default=None,
                          metavar="VALUE",
                          help="read NaN voxels as VALUE (a background of NaN outside the "
                               "brain: --fill-nan 0); without it a NaN is an error")
    compress.add_argument("--seed", type=_int_at_least(0), default=0,
                          help="random seed of the cross")
    compress.add_argument("--force", action="store_true", help="overwrite the output file")
    _verbosity(compress)
    compress.set_defaults(handler=run_compress)


def _add_info(commands, formatter):
    """``info FILE``."""
    info = commands.add_parser("info", help="summary of a TT file", formatter_class=formatter)
    info.add_argument("file", help="a TT file (.tt.npz)")
    info.set_defaults(handler=run_info)


def _add_reconstruct(commands, formatter):
    """``reconstruct FILE``: slices, the whole volume, the comparison."""
    reconstruct = commands.add_parser(
        "reconstruct", formatter_class=formatter,
        help="a slice of a TT file (PNG, .npy), or the whole volume (.nii/.nii.gz)")
    reconstruct.add_argument("file", help="a TT file (.tt.npz)")
    reconstruct.add_argument("--slice", default=None,
                             help="AXIS=INDEX[,AXIS=INDEX...]: fix all axes but two (default: "
                                  "the middle of every axis but the last two longer than 1)")
    reconstruct.add_argument("--png", help="write the slice as a PNG")
    reconstruct.add_argument("-o", "--output",
                             help="OUT.npy: the slice; OUT.nii or OUT.nii.gz: the whole "
                                  "volume (with --slice: that slice, as a one-voxel slab "
                                  "placed by its affine), written in slabs, with the input's "
                                  "affine for a NIfTI input")
    reconstruct.add_argument("--against", help="the original volume: side by side + error map")
    reconstruct.add_argument("--dataset", help="HDF5 dataset of --against")
    reconstruct.add_argument("--force", action="store_true", help="overwrite output files")
    reconstruct.set_defaults(handler=run_reconstruct)


def _add_demo(commands, formatter):
    """``demo``: the embedded volume and the method."""
    demo = commands.add_parser("demo", help="the embedded default: the MNI152 template "
                               "where nilearn is installed, else a procedural volume",
                               formatter_class=formatter)
    demo.add_argument("--volume", choices=["auto", "mni152", "procedural"], default="auto",
                      help="'mni152': nilearn's MNI152 T1 template (a real MRI volume, "
                           "shipped with nilearn); 'procedural': smooth Gaussian blobs; "
                           "'auto': the template where nilearn is installed")
    # No "als": it needs a fixed --rank, and the demo runs to a tolerance.
    demo.add_argument("--method", choices=["auto", "lsq", "tci", "stream"],
                      default="auto", help="as for compress (its 'als' needs --rank, "
                                           "which the demo, run to --tol, does not take)")
    demo.add_argument("--workdir", default=None,
                      help="where the volume, TT and PNG go (default: "
                           "$XDG_CACHE_HOME/tensorly-cross, else ~/.cache/tensorly-cross)")
    demo.add_argument("--size", type=_int_at_least(16), default=DEMO_SIZE,
                      help="edge of the cubic procedural volume (another value than the "
                           "default asks for that volume under --volume auto)")
    demo.add_argument("--tol", type=_float_at_least(0, strict=True, below=1), default=None,
                      help="target relative error (default: 0.1 for the template, 1e-3 for "
                           "the procedural volume)")
    demo.add_argument("--accept-miss", action="store_true",
                      help="exit 0 when the run ends above --tol (default: exit 3)")
    demo.add_argument("--dtype", choices=["input", "float32", "float64"], default="input",
                      help="dtype of the stored cores, as for compress ('input': float32, "
                           "the demo volume's)")
    _verbosity(demo)
    demo.set_defaults(handler=run_demo)


def _verbosity(parser):
    """``-q`` or ``-v``, not both: the synopsis says ``[-q | -v]``, and together --quiet
    printed every sweep (tqdm's write shows through a hidden bar)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    group.add_argument("-v", "--verbose", action="store_true", help="one line per sweep")

