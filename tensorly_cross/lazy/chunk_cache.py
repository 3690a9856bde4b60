"""A thread-safe LRU of decoded chunks, bounded in bytes."""

import threading
from collections import OrderedDict

from .._validation import check_int


class ChunkCache:
    """Least-recently-used chunks, at most ``max_bytes`` of them (0 disables caching).

    A batch that touches more chunks than fit and visits them in the same order every time
    would evict each chunk just before it is needed again (LRU thrashing); the
    :class:`DaskTensor` therefore serves a batch's cached chunks first. Across batches,
    size the cache to a sweep's working set, or accept that cold reads repeat.
    """

    def __init__(self, max_bytes):
        self.max_bytes = check_int(max_bytes, "cache_bytes", minimum=0)
        self.n_bytes = 0
        self._chunks = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            block = self._chunks.get(key)
            if block is not None:
                self._chunks.move_to_end(key)
            return block

    def put(self, key, block):
        if block.nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._chunks:
                return
            self._chunks[key] = block
            self.n_bytes += block.nbytes
            while self.n_bytes > self.max_bytes:
                _, evicted = self._chunks.popitem(last=False)
                self.n_bytes -= evicted.nbytes

    def __contains__(self, key):
        """Whether ``key`` is cached (without touching its recency)."""
        with self._lock:
            return key in self._chunks

    def __len__(self):
        return len(self._chunks)

    def clear(self):
        with self._lock:
            self._chunks.clear()
            self.n_bytes = 0

    def __getstate__(self):
        """An empty cache of the same size: a lock does not pickle, and a copy sent to a
        worker process (a DataLoader's) reads its own chunks."""
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__init__(state["max_bytes"])
