"""PyTorch encoder integration: patches, encoded tensors, CrossEmbedding and TT heads,
datasets of volumes and a training recipe.

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

from .dataset import VolumeDataset
from .dense import DenseEmbedding
from .embedding import CrossEmbedding
from .encoded import EncodedTensor, default_encoder
from .heads import TTPCAHead, TTProbeHead, tt_inner, tt_inner_many
from .lockstep import LockstepEncoder, device_batch_size
from .mni152 import mni152_crops
from .patches import PatchGrid

__all__ = ["CrossEmbedding", "DenseEmbedding", "EncodedTensor", "LockstepEncoder",
           "PatchGrid", "TTPCAHead", "TTProbeHead", "VolumeDataset", "default_encoder",
           "device_batch_size", "mni152_crops", "tt_inner", "tt_inner_many"]
