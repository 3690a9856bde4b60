"""PyTorch encoder integration: patches, encoded tensors, CrossEmbedding and TT heads.

Importing this package imports torch; nothing else in tensorly_cross does at import time.
"""

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without torch
    raise ImportError("tensorly_cross.nn needs PyTorch: pip install tensorly-cross[torch] "
                      "(on CPU: pip install torch==2.13.0 first).") from error

from .embedding import CrossEmbedding, TTPCAHead, TTProbeHead, tt_inner
from .encoded import EncodedTensor, default_encoder
from .patches import PatchGrid

__all__ = ["CrossEmbedding", "EncodedTensor", "PatchGrid", "TTPCAHead", "TTProbeHead",
           "default_encoder", "tt_inner"]
