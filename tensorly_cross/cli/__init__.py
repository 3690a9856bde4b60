"""The ``tensorly-cross`` command: compress volumes into TT files, inspect and view them.

Exit codes: 0 success; 1 an input could not be used (missing file, bad dataset, corrupt TT
file, missing output folder); 2 bad command-line arguments; 3 the run ended without meeting
``--tol`` (the TT file is written all the same; ``--accept-miss`` exits 0 instead); 130
interrupted (Ctrl-C); 141 stdout closed early (``| head -1``), quietly, as a command
killed by SIGPIPE; 143 terminated (SIGTERM), its temporary files removed.

One module per subcommand (:mod:`.compress`, :mod:`.summary` for ``info``,
:mod:`.reconstruct`, :mod:`.demo`), the argument parser in :mod:`._parser`, and what they
share (exit codes, output checks, the progress bar) in :mod:`._common`.
"""

import contextlib
import os
import signal
import sys
import threading

from ..errors import NonFiniteValueError
from ._common import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STDOUT_CLOSED,
    EXIT_TERMINATED,
    EXIT_TOL_MISSED,
    EXIT_USAGE,
    UsageError,
)
from .compress import compress_volume, stream_volume
from .summary import format_summary

__all__ = ["main", "compress_volume", "stream_volume", "format_summary", "UsageError",
           "EXIT_OK", "EXIT_INPUT", "EXIT_USAGE", "EXIT_TOL_MISSED", "EXIT_INTERRUPTED",
           "EXIT_STDOUT_CLOSED", "EXIT_TERMINATED"]


def main(argv=None):
    from ._parser import build_parser

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # The subcommand's parser says it, with its own usage line (the top-level one
        # showed "tensorly-cross [-h] [--version] {compress,...}", which helps no one).
        command = parser.subcommands.get(args.command, parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        with _terminate_as_an_exception():
            code = args.handler(args)
        sys.stdout.flush()  # a closed pipe is met here, not in the interpreter's exit
        return code
    except Terminated:
        print(f"tensorly-cross {args.command}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except UsageError as error:
        print(f"tensorly-cross {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"tensorly-cross {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError as error:
        advice = (" the slice does not fit: read the entries you need in Python "
                  "(tensorly_cross.tt_entries)" if args.command == "reconstruct"
                  else " use a smaller volume or settings")
        print(f"tensorly-cross {args.command}: error: not enough memory for this run "
              f"({error or 'MemoryError'});{advice}.", file=sys.stderr)
        return EXIT_INPUT
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, TypeError, OSError,
            ImportError) as error:  # an optional reader not installed (nibabel, h5py)
        # Another broken pipe (a scheduler's connection) is reported as any OSError.
        if isinstance(error, BrokenPipeError) and _stdout_closed():
            return _quit_on_closed_stdout()
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"tensorly-cross {args.command}: error: {message}{_hint(args, error)}",
              file=sys.stderr)
        return EXIT_INPUT


class Terminated(BaseException):
    """SIGTERM received: a BaseException, as KeyboardInterrupt is, so that no ``except
    Exception`` on the way swallows it and every ``finally`` runs."""


@contextlib.contextmanager
def _terminate_as_an_exception():
    """Turn SIGTERM (``timeout``, ``kill``, a job scheduler's time limit) into
    :class:`Terminated` while the command runs. Python's default ends the process on the
    spot, skipping the ``finally`` blocks that remove a write's temporary file: a
    terminated ``reconstruct -o OUT.nii`` left gigabytes in a hidden file. Only in the
    main thread (the only one that may set a handler), and only over the default action: a
    program embedding :func:`main` with a handler of its own must still get its SIGTERM,
    and a process started with SIGTERM ignored must still ignore it. The default is
    restored."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _hint(args, error):
    """What the command line offers for ``error``: a volume whose background is NaN
    (statistical maps, masked scans) compresses with ``--fill-nan``."""
    value = getattr(error, "value", None)
    if (args.command == "compress" and isinstance(error, NonFiniteValueError)
            and isinstance(value, float) and value != value):
        return " (--fill-nan VALUE reads NaN voxels as VALUE, e.g. 0 for a background)"
    return ""


def _stdout_closed():
    """Whether stdout is a pipe whose reader has gone (``| head -1`` exited): a
    BrokenPipeError from elsewhere (a socket) is an error to report."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no file descriptor
        return True


def _quit_on_closed_stdout():
    """Exit as a command killed by SIGPIPE does, without a message: the reader asked for
    no more output. Python's exit would flush stdout again and print "Exception ignored"
    (the Python docs' recipe): stdout is pointed at the null device first."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (AttributeError, OSError, ValueError):  # stdout without a file descriptor
        pass
    return EXIT_STDOUT_CLOSED
