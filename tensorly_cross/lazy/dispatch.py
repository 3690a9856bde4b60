"""lazy_tensor(obj): one entry point that turns what users have into a LazyTensor."""

import numpy as np

from .array import ArrayTensor
from .base import LazyTensor
from .function import FunctionTensor


def lazy_tensor(obj, shape=None):
    """A :class:`LazyTensor` for ``obj``.

    Parameters
    ----------
    obj : LazyTensor, array-like or callable
        - a :class:`LazyTensor` is returned as is;
        - a tensor of any TensorLy backend, a NumPy array or memmap, or any array-like with
          integer-array indexing (zarr, dask) becomes an :class:`ArrayTensor`;
        - a callable on (m, d) integer multi-indices becomes a :class:`FunctionTensor`
          (``shape`` is then required).
    shape : tuple of int, optional
        Only for callables (for anything else it must match the shape, if given).

    Returns
    -------
    lazy : LazyTensor
        ``obj`` itself, an :class:`ArrayTensor` or a :class:`FunctionTensor`.

    Raises
    ------
    TypeError
        If ``obj`` is none of the above, a masked array, or a callable without ``shape``.
    ValueError
        If ``shape`` differs from the shape of an array or lazy tensor.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import lazy_tensor
    >>> lazy_tensor(np.zeros((2, 3)))
    ArrayTensor(shape=(2, 3))
    >>> lazy_tensor(lambda idx: idx.sum(axis=1), shape=(4, 4, 4))
    FunctionTensor(shape=(4, 4, 4))
    """
    if shape is not None and not callable(obj) and hasattr(obj, "shape") and (
            tuple(np.atleast_1d(shape).tolist()) != tuple(obj.shape)):
        raise ValueError(f"shape={tuple(shape)} does not match the shape {tuple(obj.shape)} "
                         "of the tensor given (shape is only needed for a callable).")
    if isinstance(obj, LazyTensor):
        return obj
    if isinstance(obj, np.ma.MaskedArray):
        raise TypeError("obj is a masked array: a cross reads raw entries, masked or not. "
                        "Fill the masked entries first (obj.filled(value)).")
    if hasattr(obj, "shape") and hasattr(obj, "__getitem__"):
        return ArrayTensor(obj)
    if callable(obj):
        if shape is None:
            raise TypeError("shape is required when obj is a callable (the tensor's mode sizes).")
        return FunctionTensor(obj, shape)
    raise TypeError(
        f"obj must be a LazyTensor, an array or tensor, or a callable; got {type(obj).__name__}."
    )
