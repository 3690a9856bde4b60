"""tensorly-cross: tensor-train cross approximation for TensorLy."""

from .errors import NonFiniteValueError, RankDeficiencyWarning
from .maxvol import maxvol
from .rect_maxvol import rect_maxvol

__version__ = "0.1.0"

__all__ = ["maxvol", "rect_maxvol", "NonFiniteValueError", "RankDeficiencyWarning", "__version__"]
