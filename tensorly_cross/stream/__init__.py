"""Read-everything path: a TT of a whole stored volume in two passes over its blocks.

It chooses no entries (no cross): every block is read twice, chunk-aligned, locally or on
dask.distributed workers, and memory is bounded by the sketches and the projected core.
"""

from .streaming import StreamInfo, streaming_tt_svd

__all__ = ["StreamInfo", "streaming_tt_svd"]
