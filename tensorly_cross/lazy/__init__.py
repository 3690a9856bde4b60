"""Where entries come from: the lazy-tensor interface and its implementations."""

from .array import ArrayTensor
from .base import LazyTensor
from .cache import CacheCounters, EvaluationCache
from .dask import DaskTensor
from .dispatch import lazy_tensor
from .function import FunctionTensor
from .quantics import QuanticsLayout, QuanticsTensor, qtt_to_tt
from .transpose import TransposedTensor

__all__ = [
    "ArrayTensor",
    "CacheCounters",
    "DaskTensor",
    "EvaluationCache",
    "FunctionTensor",
    "LazyTensor",
    "QuanticsLayout",
    "QuanticsTensor",
    "TransposedTensor",
    "lazy_tensor",
    "qtt_to_tt",
]
