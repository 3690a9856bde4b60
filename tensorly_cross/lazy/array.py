"""ArrayTensor: entries read from an array that is already somewhere."""

import math
import sys

import numpy as np
import tensorly as tl

from .._backend import backend_name, is_torch_tensor
from .base import LazyTensor
from .sources import refuse_masked, zarr_stamp

# Why an ArrayTensor cannot read an h5py dataset, and what can.
H5PY_POINTS = (
    "ArrayTensor cannot read an h5py Dataset: h5py has no integer-array (point-wise) "
    "indexing. Pass the dataset itself to tt_cross or lazy_tensor, or "
    "tensorly_cross.open_volume(dataset), which read it chunk by chunk."
)


class ArrayTensor(LazyTensor):
    """A lazy view of an array that is already somewhere (in memory, memory-mapped, on disk).

    Backend tensors (NumPy, PyTorch, JAX), ``np.memmap``, or any array-like with NumPy
    fancy indexing or a zarr/dask-style ``vindex``. Reading is one gather per batch;
    nothing is copied up front. A PyTorch tensor that requires grad keeps its graph:
    gradients reach exactly the entries that were read.

    Parameters
    ----------
    array : array-like
        Anything with ``shape`` that can be indexed by integer arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import ArrayTensor
    >>> lazy = ArrayTensor(np.arange(12.0).reshape(3, 4))
    >>> lazy.evaluate([[0, 1], [2, 3]])
    array([ 1., 11.])
    """

    stored = True

    def __init__(self, array):
        refuse_unindexable_torch(array, "array")  # first: a nested tensor has no shape
        if not hasattr(array, "shape"):
            raise TypeError(f"array must have a shape, got {type(array).__name__}.")
        refuse_masked(array, "array")  # as tt_cross refuses one
        if type(array).__module__.startswith("scipy.sparse"):  # as lazy_tensor refuses one
            raise TypeError(f"array is a scipy.sparse {type(array).__name__}: pass "
                            "array.toarray() (if it fits in memory) or a FunctionTensor that "
                            "reads its entries.")
        if isinstance(array, np.matrix):  # two index arrays give a (1, m) matrix, not m values
            array = np.asarray(array)
        _refuse_unknown_sizes(array.shape)
        super().__init__(tuple(array.shape))
        self.array = array
        # As a zarr array opened by path is read: zarr reads a deleted store as fill values.
        self._stamp = zarr_stamp(array) if type(array).__module__.startswith("zarr.") else None

    def _evaluate(self, indices):
        if self._stamp is not None:
            self._stamp.check()
        columns = tuple(indices.T)
        if tl.is_tensor(self.array):
            if backend_name() == "pytorch":
                import torch

                device = self.array.device
                columns = tuple(torch.as_tensor(column, device=device) for column in columns)
            return self.array[columns]
        if type(self.array).__module__.startswith("h5py."):
            raise TypeError(H5PY_POINTS)  # h5py's own message names neither cause nor cure
        if hasattr(self.array, "vindex"):  # zarr and dask arrays: point-wise selection
            return np.asarray(self.array.vindex[columns])
        if hasattr(self.array, "detach"):  # a PyTorch tensor under another backend
            return self.array[columns]  # check_values detaches and widens it
        return np.asarray(self.array[columns])


def refuse_unindexable_torch(array, name):
    """Raise TypeError for a PyTorch tensor without integer-array indexing of entries, as
    for a scipy.sparse matrix: a sparse one failed deep in torch ("Could not run
    'aten::index.Tensor' with arguments from the 'SparseCPU' backend"), a nested one on
    its shape ("Internal error: NestedTensorImpl doesn't support sizes")."""
    if not is_torch_tensor(array):
        return
    if array.is_nested:
        raise TypeError(f"{name} is a nested PyTorch tensor, whose entries have no common "
                        f"shape: pass torch.nested.to_padded_tensor({name}, 0.0), or a "
                        "callable that reads its entries.")
    if array.layout != sys.modules["torch"].strided:
        raise TypeError(f"{name} is a PyTorch tensor of layout {array.layout}, which has no "
                        f"point-wise indexing: pass {name}.to_dense() (if it fits in "
                        "memory) or a callable that reads its entries.")


def _refuse_unknown_sizes(shape):
    """Raise ValueError for a shape with sizes not known yet (NaN: a dask array after a
    boolean mask), which the shape check would call a float that is not an int."""
    if any(isinstance(size, float) and math.isnan(size) for size in shape):
        raise ValueError(f"array has shape {tuple(shape)}, of unknown size along some modes "
                         "(NaN: a dask array after a boolean mask, say); call its "
                         "compute_chunk_sizes() first.")
