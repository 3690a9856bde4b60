"""lazy_tensor(obj): one entry point that turns what users have into a LazyTensor."""

import os

import numpy as np

from .._backend import check_concrete
from .array import ArrayTensor, refuse_unindexable_torch
from .base import LazyTensor
from .dask import DaskTensor
from .function import FunctionTensor
from .sources import h5py_source, refuse_closed_hdf5, refuse_masked


def lazy_tensor(obj, shape=None):
    """A :class:`LazyTensor` for ``obj``.

    Parameters
    ----------
    obj : LazyTensor, array (not a list) or callable
        - a :class:`LazyTensor` is returned as is;
        - a tensor of any TensorLy backend, a NumPy array or memmap, or any array-like with
          integer-array indexing (zarr, dask) becomes an :class:`ArrayTensor`;
        - an h5py ``Dataset``, which has no integer-array indexing, is read chunk by chunk,
          as ``open_volume(dataset)`` reads it (a :class:`DaskTensor`);
        - a callable on (m, d) integer multi-indices becomes a :class:`FunctionTensor`
          (``shape`` is then required);
        - a TensorLy ``TTTensor`` becomes a :class:`FunctionTensor` of its entries (a cross
          of it rounds it to lower ranks without forming it).
    shape : tuple of int, optional
        Only for callables (for anything else it must match the shape, if given).

    Returns
    -------
    lazy : LazyTensor
        ``obj`` itself, an :class:`ArrayTensor`, a :class:`DaskTensor` (h5py) or a
        :class:`FunctionTensor`.

    Raises
    ------
    TypeError
        If ``obj`` is none of the above, a masked array, a sparse matrix or PyTorch
        tensor, a nested PyTorch tensor, a pandas object, another factorized tensor (CP,
        Tucker), or a callable without ``shape``.
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
    return as_lazy(obj, shape, "obj")


def as_lazy(obj, shape=None, name="obj"):
    """:func:`lazy_tensor`, whose messages call ``obj`` by the caller's argument ``name``
    (``tt_cross``'s is ``tensor``)."""
    refuse_closed_hdf5(obj, name)
    if shape is not None and not callable(obj) and hasattr(obj, "shape") and (
            tuple(np.atleast_1d(shape).tolist()) != tuple(obj.shape)):
        raise ValueError(f"shape={shape!r} does not match the shape {tuple(obj.shape)} "
                         "of the tensor given (shape is only needed for a callable).")
    if isinstance(obj, LazyTensor):
        return obj
    refuse_masked(obj, name)
    if isinstance(obj, np.matrix):  # its rows index as 2-D matrices, not entries
        return ArrayTensor(np.asarray(obj))
    factorized = _factorized_tensor(obj, name)
    if factorized is not None:
        return factorized
    _refuse_non_arrays(obj, name)
    if _is_h5py_dataset(obj):  # its [...] takes one sorted index list, not point lists
        return DaskTensor(h5py_source(obj))
    if hasattr(obj, "shape") and hasattr(obj, "__getitem__"):
        check_concrete(obj, name)  # a meta tensor or a JAX tracer failed deep in a read
        _refuse_no_entries(obj, name)
        return ArrayTensor(obj)
    if callable(obj):
        if shape is None:
            raise TypeError(f"shape is required when {name} is a callable (the tensor's mode "
                            "sizes).")
        return FunctionTensor(obj, shape)
    raise TypeError(f"{name} must be a LazyTensor, an array or tensor, or a callable; got "
                    f"{type(obj).__name__}.{_path_hint(obj)}")


def view_source(lazy, view, arguments):
    """The tensor a view (``QuanticsTensor``, ``TransposedTensor``) reads, from its ``lazy``
    argument, named so in messages; a callable is refused: a view cannot give its shape.

    Parameters
    ----------
    lazy : LazyTensor or anything :func:`lazy_tensor` accepts but a callable
        The view's argument.
    view : str
        The view's class name.
    arguments : str
        Its other arguments as the message writes them (``""`` or ``", axes"``).

    Returns
    -------
    LazyTensor
    """
    if callable(lazy) and not isinstance(lazy, LazyTensor):
        raise TypeError(f"{view} needs the shape of a callable: wrap it, as in "
                        f"{view}(FunctionTensor(function, shape){arguments}).")
    return as_lazy(lazy, name="lazy")


def _refuse_no_entries(array, name):
    """Raise ValueError, naming ``name``, for a 0-d array or one with an empty mode: the
    shape check of ArrayTensor named a ``shape`` argument (tt_cross's, for callables) that
    the caller had not given."""
    shape = tuple(array.shape)
    if not shape:
        raise ValueError(f"{name} is 0-d (a scalar): a tensor train needs at least one mode.")
    if 0 in shape:
        raise ValueError(f"{name} has shape {shape}, with an empty mode; every mode size must "
                         "be >= 1.")


def _path_hint(obj):
    """For a path: how to read the file it names (a cross never opens files by itself)."""
    if isinstance(obj, str | bytes | os.PathLike):
        return (f" To read the volume stored at {obj!r}, pass tensorly_cross.open_volume(path) "
                "(zarr, HDF5, .npy, NIfTI).")
    return ""


def _is_h5py_dataset(obj):
    """Whether ``obj`` is an h5py dataset, told by its type's module: h5py is not imported
    for it (a dataset exists only if h5py was imported already)."""
    return type(obj).__module__.startswith("h5py.") and hasattr(obj, "shape")


def _factorized_tensor(obj, name):
    """A lazy TTTensor (its entries by :func:`tt_entries`); TypeError for the other kinds
    of TensorLy factorized tensors; None for anything else."""
    from tensorly.cp_tensor import CPTensor
    from tensorly.tt_tensor import TTTensor
    from tensorly.tucker_tensor import TuckerTensor

    if isinstance(obj, TTTensor):
        return FunctionTensor(_TTEntries(obj), tuple(int(n) for n in obj.shape))
    if isinstance(obj, CPTensor | TuckerTensor):
        raise TypeError(f"{name} is a TensorLy {type(obj).__name__}: pass {name}.to_tensor() "
                        "(if it fits in memory) or a callable that computes its entries.")
    return None


def _refuse_non_arrays(obj, name):
    """Objects with a shape whose ``[...]`` is not integer-array indexing of entries."""
    refuse_unindexable_torch(obj, name)
    module = type(obj).__module__
    if module.startswith("scipy.sparse"):
        raise TypeError(f"{name} is a scipy.sparse {type(obj).__name__}: pass {name}.toarray() "
                        "(if it fits in memory) or a callable that reads its entries.")
    if module.startswith("pandas"):
        raise TypeError(f"{name} is a pandas {type(obj).__name__}: pass {name}.to_numpy().")
    if module.startswith("nibabel."):  # an image, or its dataobj: no point-wise indexing
        raise TypeError(_nibabel_refusal(obj, name))


def refuse_nibabel_image(obj, name):
    """A nibabel image (``nibabel.load``, nilearn's templates) where a volume is expected:
    refused naming ``name`` and the remedy, as :func:`lazy_tensor` does. It has a shape, so
    it passed for an array (``choose_path`` called it one in memory, even on a gzip file);
    its ``dataobj`` is left to the caller (``streaming_tt_svd`` reads a proxy in slabs)."""
    if type(obj).__module__.startswith("nibabel.") and hasattr(obj, "dataobj"):
        raise TypeError(_nibabel_refusal(obj, name))


def _nibabel_refusal(obj, name):
    return (f"{name} is a nibabel {type(obj).__name__}, whose entries cannot be read point "
            f"by point: {_nibabel_remedy(obj, name)}")


def _nibabel_remedy(obj, name):
    """What to pass instead of a nibabel image or proxy: ``open_volume`` of its file where
    that is NIfTI (the only format it opens by path: the advice for an MGH or PAR/REC file
    failed on its suffix), else of its array proxy, which reads any format nibabel loads
    lazily; an image in memory has no file to name."""
    path = _nibabel_path(obj)
    if path is not None and path.lower().endswith((".nii", ".nii.gz")):
        return (f"pass tensorly_cross.open_volume(path) for its file ({path!r}) (read chunk "
                "by chunk, scaling applied), or the image's get_fdata() if it fits in memory.")
    in_memory = "the image's get_fdata() if it fits in memory"
    proxy = getattr(obj, "dataobj", obj)
    if path is not None and hasattr(proxy, "shape") and hasattr(proxy, "dtype"):
        # open_volume reads an array proxy chunk by chunk, with the file's scaling.
        proxy_name = "image.dataobj" if proxy is not obj else name
        return (f"open_volume reads NIfTI files by path, not {os.path.basename(path)!r}: "
                f"pass tensorly_cross.open_volume({proxy_name}) (its array proxy, read chunk "
                f"by chunk, scaling applied), or {in_memory}.")
    save = ("save the image as NIfTI (nibabel.save(image, 'volume.nii')) and pass "
            "tensorly_cross.open_volume('volume.nii')")
    if proxy is obj:  # a proxy open_volume cannot read (MINC's: it has no dtype)
        return f"pass np.asarray({name}) if it fits in memory, or {save}."
    where = "it is in memory, with no file" if path is None else "its array proxy has no dtype"
    return f"{where}: pass {in_memory}, or {save}."


def _nibabel_path(obj):
    """The file behind a nibabel image or array proxy, as a str, or None."""
    get_filename = getattr(obj, "get_filename", None)
    path = get_filename() if callable(get_filename) else getattr(obj, "file_like", None)
    return os.fspath(path) if isinstance(path, str | os.PathLike) else None


class _TTEntries:
    """The entries of a TT at multi-indices (a picklable callable)."""

    # How messages name it (see function_name): not by this private class.
    message_name = "a TTTensor's entries"

    def __init__(self, tt):
        self.tt = tt

    def __call__(self, indices):
        from ..cross.tt_entries import tt_entries

        return tt_entries(self.tt, indices)
