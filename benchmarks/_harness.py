"""Shared helpers for the benchmark scripts: one BLAS thread, medians, tables."""

import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def limit_threads():
    """Pin every BLAS/OpenMP pool to one thread; returns the controller to keep alive."""
    from threadpoolctl import threadpool_limits

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    return threadpool_limits(limits=1)


def peak_rss():
    """This process's peak resident memory in bytes (VmHWM): unlike ru_maxrss it is not
    inherited from the parent across exec. File-backed memmap pages count too."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def median_time(function, repeats=5):
    """Median wall time of ``repeats`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def format_table(header, rows):
    """A GitHub/Sphinx-friendly pipe table."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        + " |"
        for line in [header, *rows]
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def emit(text, path=None):
    """Print a report and, when ``path`` is given, write it there too."""
    print(text)
    if path:
        with open(path, "w") as handle:
            handle.write(text + "\n")
