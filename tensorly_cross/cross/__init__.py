"""How entries are chosen: index sets, sweeps (ALS, TCI), assembly and stopping."""

from .indices import CrossIndices
from .stopping import CrossInfo

__all__ = ["CrossIndices", "CrossInfo"]
