"""tensorly-cross: tensor-train cross approximation for TensorLy."""

from .api import cross_interpolate, select_indices, tt_cross
from .cost import PathChoice, choose_path
from .cross import CrossIndices, CrossInfo
from .cross.tt_entries import tt_entries
from .decomposition import TensorTrainCross, tensor_train_cross
from .errors import (
    CheckpointError,
    CheckpointMismatchError,
    EvaluationBudgetExceeded,
    KeyCollisionError,
    MaxTimeReached,
    NonFiniteValueError,
    RankDeficiencyWarning,
    SubnormalValuesWarning,
    ToleranceNotMetWarning,
    UnseenStructureWarning,
)
from .io import open_volume
from .lazy import (
    ArrayTensor,
    CacheCounters,
    DaskTensor,
    EvaluationCache,
    FunctionTensor,
    LazyTensor,
    QuanticsLayout,
    QuanticsTensor,
    TransposedTensor,
    lazy_tensor,
    qtt_to_tt,
)
from .maxvol import maxvol
from .rect_maxvol import rect_maxvol
from .stream import StreamInfo, streaming_tt_svd
from .ttfile import TTFileError, load_tt, save_tt

__version__ = "0.1.0"

__all__ = [
    "ArrayTensor",
    "CacheCounters",
    "CheckpointError",
    "CheckpointMismatchError",
    "CrossIndices",
    "CrossInfo",
    "DaskTensor",
    "EvaluationBudgetExceeded",
    "EvaluationCache",
    "FunctionTensor",
    "KeyCollisionError",
    "LazyTensor",
    "MaxTimeReached",
    "NonFiniteValueError",
    "PathChoice",
    "QuanticsLayout",
    "QuanticsTensor",
    "RankDeficiencyWarning",
    "ToleranceNotMetWarning",
    "SubnormalValuesWarning",
    "UnseenStructureWarning",
    "StreamInfo",
    "TTFileError",
    "TensorTrainCross",
    "TransposedTensor",
    "__version__",
    "choose_path",
    "cross_interpolate",
    "lazy_tensor",
    "load_tt",
    "maxvol",
    "open_volume",
    "qtt_to_tt",
    "rect_maxvol",
    "save_tt",
    "select_indices",
    "streaming_tt_svd",
    "tensor_train_cross",
    "tt_cross",
    "tt_entries",
]
