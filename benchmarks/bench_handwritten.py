"""The pieces written by hand where a library exists, measured against that library.

    python benchmarks/bench_handwritten.py [--parts keys,lru,rng,npy] [--out FILE.md]

- keys: the evaluation cache's key table (sorted key levels, ``SortedKeys``) against a
  Python dict and a pandas Index, replaying the lookups and inserts recorded from one
  ``tt_cross`` run (P2 Ackley and P4 1/sum of bench_cross, seed 0).
- lru: the byte-bounded chunk LRU (``ChunkCache``) against ``cachetools.LRUCache`` with
  ``getsizeof`` behind the same lock, replaying the chunk accesses of a cross over a zarr
  volume (the same hits, misses and evictions: checked).
- rng: ``check_random_state`` returns a NumPy ``Generator``; TensorLy's and
  scikit-learn's return a legacy ``RandomState``, whose ``choice(n, k, replace=False)``
  (the draw of random index sets) permutes all ``n``; and ``np.random.default_rng``
  alone rejects a ``RandomState`` on NumPy < 2.
- npy: the ``.npy`` page reader (``os.pread`` into a small page LRU) against a memory map
  (``np.load(mmap_mode="r")``): the batches one cross (rank 16; plain layout, and the
  layout docs/choosing.rst recommends for .npy) reads from bench_volume's 512^3 float32
  phantom are recorded, then replayed by each reader in a fresh process (peak resident
  memory, time). ``--base TREE`` adds the page reader of
  another source tree (e.g. ``git archive`` of an earlier commit) to the same replays.

Every comparison runs side by side in one invocation; read the ratios.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import _harness
import numpy as np
from problems import problems

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- keys
def record_key_stream(problem):
    """The (operation, keys, slots) calls one tt_cross makes on its key table."""
    import tensorly_cross as tlc
    from tensorly_cross.lazy import cache

    stream = []
    original_lookup, original_insert = cache.SortedKeys.lookup, cache.SortedKeys.insert

    def lookup(self, keys):
        stream.append(("lookup", keys.copy(), None))
        return original_lookup(self, keys)

    def insert(self, keys, slots):
        stream.append(("insert", keys.copy(), slots.copy()))
        return original_insert(self, keys, slots)

    cache.SortedKeys.lookup, cache.SortedKeys.insert = lookup, insert
    try:
        tlc.tt_cross(tlc.FunctionTensor(problem.function, problem.shape), tol=problem.target,
                     random_state=0)
    finally:
        cache.SortedKeys.lookup, cache.SortedKeys.insert = original_lookup, original_insert
    return stream


class DictTable:
    """A Python dict from key to slot, fed element by element."""

    def __init__(self):
        self.table = {}

    def lookup(self, keys):
        get = self.table.get
        return np.fromiter((get(key, -1) for key in keys.tolist()), dtype=np.int64,
                           count=keys.shape[0])

    def insert(self, keys, slots):
        self.table.update(zip(keys.tolist(), slots.tolist(), strict=True))


class PandasTable:
    """A pandas Index (a hash table in C) rebuilt on every insert: Index is immutable."""

    def __init__(self):
        import pandas as pd

        self.pd = pd
        self.keys = np.zeros(0, dtype=np.int64)
        self.slots = np.zeros(0, dtype=np.int64)
        self.index = pd.Index(self.keys)

    def lookup(self, keys):
        found = self.index.get_indexer(keys)
        return np.where(found >= 0, self.slots[found], -1)

    def insert(self, keys, slots):
        self.keys = np.concatenate([self.keys, keys])
        self.slots = np.concatenate([self.slots, slots])
        self.index = self.pd.Index(self.keys)


def replay(stream, make_table):
    table = make_table()
    start = time.perf_counter()
    results = []
    for operation, keys, slots in stream:
        if operation == "lookup":
            results.append(table.lookup(keys))
        else:
            table.insert(keys, slots)
    return time.perf_counter() - start, results


def measure_keys(repeats):
    from tensorly_cross.lazy.cache import SortedKeys

    rows = []
    tables = {"SortedKeys (ours)": SortedKeys, "dict": DictTable, "pandas Index": PandasTable}
    for problem in problems():
        if problem.name.split()[0] not in ("P2", "P4"):
            continue
        stream = record_key_stream(problem)
        n_lookups = sum(keys.shape[0] for op, keys, _ in stream if op == "lookup")
        n_inserts = sum(keys.shape[0] for op, keys, _ in stream if op == "insert")
        times = {name: [] for name in tables}
        reference = None
        for _ in range(repeats):  # the tables alternate within each repeat
            for name, make in tables.items():
                seconds, results = replay(stream, make)
                times[name].append(seconds)
                if reference is None:
                    reference = results
                assert all(np.array_equal(a, b) for a, b in zip(reference, results,
                                                                   strict=True)), name
        ours = float(np.median(times["SortedKeys (ours)"]))
        for name in tables:
            seconds = float(np.median(times[name]))
            rows.append([problem.name, f"{len(stream)} calls, {n_lookups} keys looked up, "
                         f"{n_inserts} inserted", name, f"{1e3 * seconds:.1f}",
                         f"{seconds / ours:.2f}"])
    return _harness.format_table(["problem", "recorded stream", "key table", "replay ms",
                                  "time / ours"], rows)


# ---------------------------------------------------------------- lru
class LockedCachetools:
    """cachetools.LRUCache bounded in bytes, behind the lock ChunkCache also takes."""

    def __init__(self, max_bytes):
        import cachetools

        self.cache = cachetools.LRUCache(max_bytes, getsizeof=lambda block: block.nbytes)
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            return self.cache.get(key)

    def put(self, key, block):
        if block.nbytes > self.cache.maxsize:  # cachetools raises on an oversized value
            return
        with self.lock:
            if key not in self.cache:
                self.cache[key] = block

    def __contains__(self, key):
        with self.lock:
            return key in self.cache


def record_chunk_trace(path, rank, cache_bytes):
    """The keys a cross asks its chunk (zarr) or page (.npy) cache for, in order."""
    import tensorly_cross as tlc

    volume = tlc.open_volume(path, cache_bytes=cache_bytes)
    trace = []
    original_get = volume.cache.get

    def get(key):
        trace.append(key)
        return original_get(key)

    volume.cache.get = get
    start = time.perf_counter()
    tlc.tt_cross(volume, rank=rank, n_iter_max=4, random_state=0)
    wall = time.perf_counter() - start
    reads = getattr(volume, "chunks_read", None) or volume.pages_read
    return trace, reads, wall


def replay_lru(trace, block, cache, asks_first):
    hits = 0
    start = time.perf_counter()
    for key in trace:
        if asks_first:  # DaskTensor asks which chunks are cached before reading a batch
            key in cache  # noqa: B015
        if cache.get(key) is not None:
            hits += 1
        else:
            cache.put(key, block)
    return time.perf_counter() - start, hits


def measure_lru(repeats):
    from tensorly_cross.lazy.chunk_cache import ChunkCache

    data = os.path.join(HERE, "_data")
    if not os.path.exists(os.path.join(data, "phantom128.npy")):
        raise SystemExit(f"{data}/phantom128.* are missing: run "
                         "benchmarks/bench_volume.py --size 128 once to write them.")
    cases = [("phantom128.zarr", 2**20, 16), ("phantom128.zarr", 4 * 2**20, 16),
             ("phantom128.npy", 2**20, 16), ("phantom128.npy", 4 * 2**20, 16)]
    caches = {"ChunkCache (ours)": ChunkCache, "cachetools.LRUCache + lock":
              LockedCachetools}
    rows = []
    for name, cache_bytes, rank in cases:
        trace, reads, wall = record_chunk_trace(os.path.join(data, name), rank, cache_bytes)
        zarr = name.endswith(".zarr")
        block = np.zeros(2**18 if zarr else 4096, dtype=np.float32 if zarr else np.uint8)
        times, hits = {cache: [] for cache in caches}, {}
        for _ in range(repeats):
            for cache, make in caches.items():
                seconds, hits[cache] = replay_lru(trace, block, make(cache_bytes), zarr)
                times[cache].append(seconds)
        assert len(set(hits.values())) == 1, hits  # the same LRU decisions
        ours = float(np.median(times["ChunkCache (ours)"]))
        for cache in caches:
            seconds = float(np.median(times[cache]))
            rows.append([f"{name} rank {rank}, {cache_bytes >> 20} MiB cache",
                         f"{len(trace)} gets, {hits[cache]} hits", cache,
                         f"{1e6 * seconds / len(trace):.2f}", f"{seconds / ours:.2f}",
                         f"{1e6 * wall / max(reads, 1):.0f}"])
    return _harness.format_table(["trace", "accesses", "cache", "us per access",
                                  "time / ours", "cross wall us per block read"], rows)


# ---------------------------------------------------------------- rng
def measure_rng(repeats):
    from tensorly_cross._validation import check_random_state

    rows = []
    total, count = 10**7, 1000
    generator = check_random_state(0)
    legacy = np.random.RandomState(0)
    draws = {
        "Generator (check_random_state)": lambda: generator.choice(total, count,
                                                                   replace=False),
        "RandomState (tensorly / sklearn)": lambda: legacy.choice(total, count,
                                                                  replace=False),
    }
    times = {name: [] for name in draws}
    for _ in range(repeats):
        for name, draw in draws.items():
            start = time.perf_counter()
            draw()
            times[name].append(time.perf_counter() - start)
    ours = float(np.median(times["Generator (check_random_state)"]))
    for name in draws:
        seconds = float(np.median(times[name]))
        rows.append([f"choice({total:.0e}, {count}, replace=False)", name,
                     f"{1e3 * seconds:.3f}", f"{seconds / ours:.0f}"])
    table = _harness.format_table(["draw", "random state", "ms", "time / ours"], rows)
    try:
        np.random.default_rng(np.random.RandomState(0))
        plain = "accepts a RandomState"
    except TypeError as error:
        plain = f"rejects a RandomState ({error})"
    return table + f"\n\nnp.random.default_rng on NumPy {np.__version__} {plain}."


# ---------------------------------------------------------------- npy
def npy_record(path, rank, layout, out):
    """Run the cross once through the page reader; save every batch of multi-indices it
    read (in a fresh subprocess, like the replays). ``layout``: "plain" or "xzy s4" (the
    contiguous axis in the middle of the TT, ``max_slices=4``)."""
    import tensorly_cross as tlc

    _harness.limit_threads()
    volume = tlc.open_volume(path)
    batches, original = [], volume.evaluate_checked

    def evaluate_checked(indices):
        batches.append(indices.copy())
        return original(indices)

    volume.evaluate_checked = evaluate_checked
    lazy, options = volume, {}
    if layout == "xzy s4":
        lazy, options = tlc.TransposedTensor(volume, (0, 2, 1)), {"max_slices": 4}
    tt, info = tlc.tt_cross(lazy, rank=rank, n_iter_max=4, random_state=0,
                            return_info=True, **options)
    np.savez(out, *batches)
    print(json.dumps(dict(evals=info.n_evals, error=info.val_error, batches=len(batches))))


def npy_replay(path, reader, batches_path):
    """Read the recorded batches with one reader; prints a JSON line."""
    import tensorly_cross as tlc

    _harness.limit_threads()
    with np.load(batches_path) as archive:
        batches = [archive[name] for name in archive.files]
    if reader == "memmap":
        mapped = np.load(path, mmap_mode="r")

        def read(indices):
            return mapped[tuple(indices.T)].astype(np.float64)
    else:
        read = tlc.open_volume(path).evaluate_checked
    before = _resident_mib()
    start = time.perf_counter()
    total = 0.0
    for indices in batches:
        total += float(np.sum(read(indices)))
    wall = time.perf_counter() - start
    peak = _harness.peak_rss() / 2**20  # VmHWM: ru_maxrss carries the parent's over exec
    print(json.dumps(dict(wall=wall, peak=peak, before=before, checksum=total)))


def _resident_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _json_of(*arguments, tree=None):
    """Run this script with ``arguments`` in a fresh process (importing tensorly_cross from
    ``tree`` when given, e.g. a ``git archive`` of an earlier commit); its JSON line."""
    env = None if tree is None else dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    output = subprocess.run([sys.executable, __file__, *arguments], check=True,
                            capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure_npy(repeats, size=512, rank=16, base=None):
    from bench_volume import write_phantom

    _, path = write_phantom(size)  # benchmarks/_data/phantom{size}.npy, written once
    folder = tempfile.mkdtemp(prefix="bench-npy-")
    batches = os.path.join(folder, "batches.npz")
    base_label = os.path.basename(os.path.normpath(base)) if base else None
    rows = []
    try:
        for layout in ("plain", "xzy s4"):
            cross = _json_of("--npy-record", path, str(rank), layout, batches)
            readers = {"pages (open_volume, ours)": ("pages", None),
                       "memmap (np.load mmap_mode='r')": ("memmap", None)}
            if base:
                readers[f"pages (open_volume, {base_label})"] = ("pages", base)
            results = {name: [] for name in readers}
            for _ in range(repeats):
                for name, (reader, tree) in readers.items():
                    results[name].append(_json_of("--npy-replay", path, reader, batches,
                                                  tree=tree))
            checksums = {run["checksum"] for runs in results.values() for run in runs}
            assert len(checksums) == 1, checksums  # the same values read
            for name, runs in results.items():
                rows.append([f"{layout}, rank {rank}: {cross['batches']} batches, "
                             f"{cross['evals']} entries", name,
                             f"{np.median([r['before'] for r in runs]):.0f} MiB",
                             f"{np.median([r['peak'] for r in runs]):.0f} MiB",
                             f"{np.median([r['wall'] for r in runs]):.2f}"])
    finally:
        if os.path.exists(batches):
            os.remove(batches)
        os.rmdir(folder)
    table = _harness.format_table(["reads of one cross (replayed)", "reader", "RSS before",
                                   "peak RSS", "read s"], rows)
    return (f"The phantom of bench_volume.py, {size}^3 float32 "
            f"({os.path.getsize(path) >> 20} MiB), warm in the page cache.\n\n{table}")


PARTS = {"keys": measure_keys, "lru": measure_lru, "rng": measure_rng, "npy": measure_npy}


def main():
    if sys.argv[1:2] == ["--npy-record"]:
        npy_record(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        return
    if sys.argv[1:2] == ["--npy-replay"]:
        npy_replay(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--base", default=None,
                        help="npy: also replay with the page reader of this source tree")
    args = parser.parse_args()
    controller = _harness.limit_threads()
    sections = []
    for part in args.parts.split(","):
        repeats = 2 if part == "npy" else args.repeats
        table = (measure_npy(repeats, base=args.base) if part == "npy" else
                 PARTS[part](repeats))
        print(f"## {part}\n\n{table}\n", flush=True)
        sections.append(f"## {part}\n\n{table}")
    _harness.emit("\n\n".join(sections), args.out)
    del controller


if __name__ == "__main__":
    main()
