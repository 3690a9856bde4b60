"""PyTorch encoder integration: patches, encoded tensors, CrossEmbedding and TT heads.

Importing this package imports torch; nothing else in tensorly_cross does at import time.
"""

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "tensorly_cross.nn needs PyTorch. For the CPU build: pip install torch --index-url "
        "https://download.pytorch.org/whl/cpu (a plain 'pip install torch' brings the CUDA "
        "build on Linux; other builds: https://pytorch.org/get-started/locally/). "
        "tensorly-cross is not on PyPI yet: from a clone of its repository, "
        "pip install '.[torch]' keeps that torch (docs/installation.rst)."
    ) from error

from .embedding import CrossEmbedding, TTPCAHead, TTProbeHead, tt_inner
from .encoded import EncodedTensor, default_encoder
from .patches import PatchGrid

__all__ = ["CrossEmbedding", "EncodedTensor", "PatchGrid", "TTPCAHead", "TTProbeHead",
           "default_encoder", "tt_inner"]
