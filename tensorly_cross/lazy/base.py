"""The lazy-tensor interface: a shape and a batched ``evaluate(indices)``."""

import functools
import math
import operator
import re

import numpy as np
import tensorly as tl

from .._backend import all_finite, numpy_dtype, to_host
from ..errors import NonFiniteValueError


class _CheckedShape:
    """``LazyTensor.shape``: checked by :func:`check_shape` wherever it is set, and kept in
    the instance's ``__dict__`` under its own name, as a plain attribute was.

    Not a property, for two reasons. A property kept it in ``self._shape``, which a
    subclass's own ``_shape`` (the array it reshapes) replaced without a word. And a
    property is a class attribute: a dataclass subclass with a ``shape`` field took it for
    the field's default, and failed where a field without a default followed
    ("non-default argument follows default argument"); read on the class, this one raises
    AttributeError, which dataclasses read as "no default".
    """

    def __get__(self, instance, owner=None):
        if instance is None:
            raise AttributeError(f"shape is an attribute of {owner.__name__} instances.")
        try:
            return instance.__dict__["shape"]
        except KeyError:
            raise AttributeError(f"{type(instance).__name__} has no shape: a LazyTensor "
                                 "subclass sets it, by super().__init__(shape) or "
                                 "self.shape = ...") from None

    def __set__(self, instance, shape):
        # Checked wherever it is set: a subclass that set an array (or None) kept it, and
        # the crosses failed deep inside (NumPy's "truth value of an array is ambiguous").
        instance.__dict__["shape"] = check_shape(shape, "shape")


class LazyTensor:
    """A tensor known only through batched evaluation of its entries.

    Subclasses set ``shape`` (by ``super().__init__(shape)`` or ``self.shape = ...``,
    checked either way) and implement ``_evaluate(indices)``; users call
    :meth:`evaluate`, which validates the request and the values that come back.

    Parameters
    ----------
    shape : tuple of int
        The size of each mode (every size >= 1).

    Attributes
    ----------
    shape : tuple of int
        The size of each mode: a tuple of ints, each >= 1 (checked wherever it is set).

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import LazyTensor
    >>> class Sum(LazyTensor):
    ...     def _evaluate(self, indices):
    ...         return indices.sum(axis=1).astype(float)
    >>> Sum((3, 4)).evaluate([[1, 2], [2, 3]])
    array([3., 5.])
    """

    shape = _CheckedShape()  # the size of each mode: a tuple of ints, each >= 1

    def __init__(self, shape):
        self.shape = shape

    @property
    def stored(self):
        """Whether the entries are stored data rather than computed by a function.

        Arrays and files are stored; a view of another lazy tensor (``.lazy``) is what that
        one is. ``method="auto"`` runs the least-squares cross on stored data.
        """
        inner = getattr(self, "lazy", None)
        # Only a LazyTensor is a view's tensor: a subclass's own attribute of that name (an
        # array it wraps, a flag) failed every cross ("'bool' object has no attribute").
        return bool(isinstance(inner, LazyTensor) and inner.stored)

    @property
    def ndim(self):
        """Number of modes."""
        return len(self.shape)

    @property
    def size(self):
        """Number of entries, as an exact Python int (it may exceed 2**63)."""
        return math.prod(self.shape)

    def evaluate(self, indices):
        """Entries at a batch of multi-indices, in one call.

        Parameters
        ----------
        indices : array-like of int, shape (m, ndim)
            The multi-indices, one per row.

        Returns
        -------
        values : tensor of shape (m,)
            In the active TensorLy backend.

        Raises
        ------
        ValueError
            If ``indices`` has the wrong shape or an index is out of range, or if the
            values do not have shape ``(m,)``.
        NonFiniteValueError
            If a value is NaN or inf; the exception names the first such multi-index.
        """
        return self.evaluate_checked(check_indices(indices, self.shape))

    def evaluate_checked(self, indices):
        """Entries at multi-indices that are known to be valid, without checking them again.

        What a cache in front of this tensor calls for its misses: the values are still
        checked, the indices are not.

        Parameters
        ----------
        indices : ndarray of int64, shape (m, ndim)
            Multi-indices in range (as ``check_indices`` returns them).

        Returns
        -------
        values : tensor of shape (m,)
            In the active TensorLy backend.
        """
        values = self._evaluate(indices)
        try:
            # The name is built only for a message: described_as formats the function's
            # name or the file's path, 3% of a d=80 cross's overhead when built per batch.
            return check_values(values, indices, self._described)
        except NonFiniteValueError as error:
            self._keep_finite(error, indices, values)
            if self.stored and np.isnan(error.value):  # stored data: a masked background
                error.add_note(NAN_BACKGROUND)
            raise

    def _keep_finite(self, error, indices, values):
        """Hook: attach what a checkpoint may keep of a batch that met a NaN or inf (its
        finite entries) to ``error``. Nothing here; a function's batches are worth it."""

    def _described(self):
        return self.described_as

    @property
    def described_as(self):
        """How messages name this tensor.

        Its class; a stored volume adds its file, so that a NaN names the volume it is in.
        """
        return type(self).__name__

    def _evaluate(self, indices):
        # A subclass that overrides evaluate instead is never called by a cross, which
        # reads through evaluate_checked: it got a NotImplementedError without a word.
        raise NotImplementedError(
            f"{type(self).__name__} does not implement _evaluate(indices), which computes a "
            "LazyTensor's entries (evaluate checks the request and the values around it, "
            "and a cross calls it through evaluate_checked): define _evaluate, not evaluate."
        )

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape})"


def views_of(volume):
    """``volume``, then the tensor each view wraps (its ``.lazy``), down to the source.

    Parameters
    ----------
    volume : object
        A lazy tensor, or anything else (which yields itself alone).

    Yields
    ------
    object
        ``volume``, ``volume.lazy``, ``volume.lazy.lazy``, ... while there is one.
    """
    while volume is not None:
        yield volume
        volume = getattr(volume, "lazy", None)


def check_shape(shape, name):
    """A tuple of positive Python ints; raise otherwise (a float size is refused, never
    truncated: ``(4.7, 4)`` is an error, not ``(4, 4)``)."""
    try:
        sizes = list(shape)
    except TypeError as error:
        raise TypeError(f"{name} must be a sequence of ints, got {shape!r}.") from error
    for mode, size in enumerate(sizes):
        if not _is_size(size):
            raise TypeError(f"{name}[{mode}] must be an int, got {size!r} "
                            f"({type(size).__name__}) in {name} {shape!r}.")
    shape = tuple(operator.index(size) for size in sizes)
    if not shape:
        raise ValueError(f"{name} must have at least one mode, got {shape}.")
    bad = [mode for mode, size in enumerate(shape) if size < 1]
    if bad:
        raise ValueError(f"{name}[{bad[0]}]={shape[bad[0]]} must be >= 1 (shape {shape}).")
    huge = [mode for mode, size in enumerate(shape) if size > np.iinfo(np.int64).max]
    if huge:  # multi-indices are int64
        raise ValueError(f"{name}[{huge[0]}]={shape[huge[0]]} exceeds the int64 range of "
                         f"indices (at most 2**63 - 1 per mode; shape {shape}).")
    return shape


def _is_size(size):
    """Whether ``size`` is an integer (Python, NumPy, or a PyTorch or JAX integer scalar):
    not a bool of any kind (a PyTorch bool scalar's ``__index__`` gave 1), nor a float
    (whose ``__index__`` raised PyTorch's or JAX's own message, naming no argument)."""
    if isinstance(size, bool) or "bool" in str(getattr(size, "dtype", "")):
        return False
    try:
        operator.index(size)
    except TypeError:
        return False
    return True


def check_indices(indices, shape):
    """An (m, d) int64 host array of in-range multi-indices; raise otherwise."""
    if isinstance(indices, np.ma.MaskedArray):  # np.asarray would read the masked values
        raise TypeError("indices is a masked array: pass the multi-indices to read, unmasked.")
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != len(shape):
        raise ValueError(
            f"indices must have shape (m, {len(shape)}) for a tensor of shape {shape}, "
            f"got {indices.shape}."
        )
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {indices.dtype}.")
    if indices.size and indices.dtype.kind == "u" and indices.max() > np.iinfo(np.int64).max:
        # int64 would wrap it to a negative index, named wrong in the message below.
        raise ValueError(f"indices: {int(indices.max())} is out of range for a tensor of "
                         f"shape {shape}.")
    indices = indices.astype(np.int64, copy=False)
    if indices.size:
        bounds = np.asarray(shape, dtype=np.int64)
        # Two reductions find whether anything is out of range; only then look for it.
        if indices.min() < 0 or (indices.max(axis=0) >= bounds).any():
            outside = np.flatnonzero(((indices < 0) | (indices >= bounds)).any(axis=1))
            bad = tuple(int(i) for i in indices[outside[0]])
            raise ValueError(f"indices: multi-index {bad} is out of range for a tensor of shape "
                             f"{shape} (each index k in 0 <= k < n, no negative indices).")
    return indices


# Value dtypes a lazy tensor may return: bool, signed and unsigned ints, floats, complex.
NUMERIC_KINDS = "biufc"


# Noted on a NaN read from stored data: the usual cause, and its remedy.
NAN_BACKGROUND = (
    "Masked scans and statistical maps hold NaN outside the brain: "
    "tensorly_cross.open_volume(path_or_array, fill_nan=0.0), or for training "
    "tensorly_cross.nn.VolumeDataset(..., fill_nan=0.0), reads such voxels as 0 "
    "(infinities still raise). VolumeDataset fills the volumes it reads from paths only: "
    "fill arrays and tensors first (numpy.nan_to_num(volume, nan=0.0))."
)


def check_values(values, indices, source):
    """Values as an (m,) floating backend tensor, finite; raise with the offending
    multi-index. Bool and integer values become float64: the cores interpolate between
    them, and integer arithmetic would truncate (or, for bools, fail). ``source`` names
    what returned them in messages: a str, or a callable returning one (called only when
    there is a message to write)."""
    if isinstance(values, np.ma.MaskedArray):
        raise TypeError(f"{_name(source)} returned a masked array; a cross reads raw entries, "
                        "masked or not: fill the masked ones (values.filled(...)) or return "
                        "them.")
    if sub_byte_integer(getattr(values, "dtype", None)):
        # Before any conversion: NumPy refused PyTorch's ("Got unsupported ScalarType
        # UInt4"), and JAX's failed in its own products ("abs does not accept dtype int4").
        _refuse_dtype(source, values.dtype)
    if isinstance(values, np.ndarray) or not tl.is_tensor(values):
        host = host_values(values)
        if host.dtype.kind not in NUMERIC_KINDS:  # strings, objects: no silent conversion
            _refuse_dtype(source, host.dtype)
        values = values if tl.is_tensor(values) and host is values else tl.tensor(host)
    elif _kind(values.dtype) in "biu":
        context = {key: value for key, value in tl.context(values).items() if key != "dtype"}
        values = tl.tensor(to_host(values).astype(np.float64), **context)
    elif low_precision(values.dtype):  # no LAPACK for them: widened, exactly
        values = values.float() if hasattr(values, "float") else values.astype("float32")
    elif str(values.dtype) == "torch.complex32":  # nor for PyTorch's complex half
        values = numpy_dtype(values)
    expected = (indices.shape[0],)
    if tuple(values.shape) != expected:
        raise ValueError(
            f"{_name(source)} returned values of shape {tuple(values.shape)} for "
            f"{expected[0]} multi-indices; expected shape {expected}."
        )
    if not all_finite(values):
        host = to_host(values)
        first = int(np.flatnonzero(~np.isfinite(host))[0])
        index = tuple(int(i) for i in indices[first])
        raise NonFiniteValueError(
            f"{_name(source)} returned {host[first]} at multi-index {index}; values must be "
            "finite.",
            index,
            host[first],
        )
    return values


def _refuse_dtype(source, dtype):
    """Raise the TypeError of values of ``dtype``, which a cross does not read."""
    raise TypeError(f"{_name(source)} returned values of dtype {dtype}{sub_byte_note(dtype)}; "
                    "values must be numbers (bool, integer, real or complex floating point).")


def host_values(values):
    """Values that are not a tensor of the active backend (lists, arrays, PyTorch tensors
    under another backend) as a NumPy array in a dtype every backend and LAPACK take:
    native byte order, bool and integers as float64, half precision and ml_dtypes' floats
    as float32, long double as double. Values that are not numbers are returned as read,
    for the caller to refuse by name."""
    host = _host_numbers(values)
    if host.dtype.kind == "V" and low_precision(host.dtype):
        host = host.astype(np.float32)  # ml_dtypes' bfloat16 and float8 (JAX's): exact
    if host.dtype.kind not in NUMERIC_KINDS:
        return host
    if not host.dtype.isnative:  # FITS, foreign .npy: PyTorch and JAX refuse them
        host = host.astype(host.dtype.newbyteorder("="))
    if host.dtype.kind in "biu":
        host = host.astype(np.float64)
    elif host.dtype.kind == "f" and host.dtype.itemsize < 4:
        host = host.astype(np.float32)  # LAPACK has no half precision
    elif host.dtype.kind in "fc" and host.dtype.itemsize > (8 if host.dtype.kind == "f" else 16):
        host = host.astype(np.float64 if host.dtype.kind == "f" else np.complex128)
        # nor long double: rounded to double, the widest LAPACK computes in
    return host


def _name(source):
    return source() if callable(source) else source


def _host_numbers(values):
    """A NumPy array of values that are not a tensor of the active backend: lists, arrays,
    and PyTorch tensors under another backend (detached: a NumPy TT carries no gradient;
    half precision widened, which NumPy may not hold)."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        # to_host resolves conjugate and negative views (.numpy() refuses them) and names
        # a meta-device tensor; float16 is widened by check_values.
        return to_host(values)
    return np.asarray(values)


def low_precision(dtype):
    """Whether ``dtype`` (of any backend) is a real floating type that LAPACK lacks: half
    precision, bfloat16 and the 8-, 6- and 4-bit floats (PyTorch's, and ml_dtypes' that
    JAX uses, NumPy's kind "V")."""
    name = str(dtype).rsplit(".", 1)[-1]
    # "float6_", not "float6": float64 is not one of them.
    return name.endswith("float16") or name.startswith(("float8", "float6_", "float4"))


def ml_float(dtype):
    """Whether ``dtype`` is a NumPy dtype of ml_dtypes' floats (bfloat16, float8_*,
    float6_*, float4_*: JAX's, on the host), which LAPACK and PyTorch cannot read. By name,
    not by NumPy's kind "V": ml_dtypes' float8_e5m2 is of kind "f"."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:  # a dtype NumPy cannot read (PyTorch's): not ml_dtypes'
        return False
    return dtype != np.float16 and low_precision(dtype)


def sub_byte_note(dtype):
    """What a refusal of ``dtype`` adds for ml_dtypes' integers of fewer than 8 bits (int2,
    int4, uint4, ...): NumPy counts them as no integer (kind "V"), so "supported are
    integers" alone read as if they were one; empty for any other dtype."""
    if not sub_byte_integer(dtype):
        return ""
    library = "PyTorch" if str(dtype).startswith("torch.") else "ml_dtypes"
    return (f" (a sub-byte integer of {library}): not supported; cast it to int8 or uint8, "
            "or to a floating dtype, first")


def sub_byte_integer(dtype):
    """Whether ``dtype`` is an integer of fewer than 8 bits: ml_dtypes' (int2, int4, uint4,
    ..., NumPy's and JAX's), which NumPy counts as no integer (kind "V"), or PyTorch's
    (torch.uint4, ...)."""
    if dtype is None or (isinstance(dtype, np.dtype) and dtype.kind != "V"):
        # NumPy's own dtypes (and JAX's) by kind: str() of one took 4 us, more than the
        # rest of the check of a small batch of values, which calls this on every batch.
        return False
    try:
        return _sub_byte_name(dtype)
    except TypeError:  # an unhashable dtype: not cached
        return _sub_byte_name.__wrapped__(dtype)


@functools.lru_cache(maxsize=64)
def _sub_byte_name(dtype):
    """Whether ``dtype``'s name is that of an integer of fewer than 8 bits; cached, as
    str() of a PyTorch dtype and the match cost more than the rest of a batch's check."""
    return re.fullmatch(r"u?int[1-7]", str(dtype).rsplit(".", 1)[-1]) is not None


def _kind(dtype):
    """NumPy's kind letter of a backend dtype (``torch.int64`` -> ``"i"``); ``"f"`` for
    floating types NumPy lacks (bfloat16)."""
    try:
        return np.dtype(dtype).kind
    except TypeError:
        try:
            return np.dtype(str(dtype).rsplit(".", 1)[-1]).kind
        except TypeError:
            return "f"


def c_order_strides(shape):
    """Strides of a C-ordered array of ``shape``, in entries (int64): also the weight of
    each digit, most significant first, of a mixed-radix number with digits ``shape``."""
    strides = np.ones(len(shape), dtype=np.int64)
    for mode in range(len(shape) - 2, -1, -1):
        strides[mode] = strides[mode + 1] * shape[mode + 1]
    return strides


def unravel_c_order(flat, shape):
    """The multi-indices (``(m, len(shape))`` int64) of flat C-order positions ``flat``.

    ``np.stack(np.unravel_index(flat, shape), axis=1)`` for any number of modes: NumPy's
    own (and ``np.indices``) make arrays with one axis per mode, at most 64 of them (32
    under NumPy 1), and raised "maximum supported dimension for an ndarray is currently
    64" on tensors of more modes (size-one modes mostly) with few entries.
    """
    rest = np.asarray(flat, dtype=np.int64).reshape(-1)
    columns = np.empty((rest.shape[0], len(shape)), dtype=np.int64)
    for mode in range(len(shape) - 1, -1, -1):
        rest, columns[:, mode] = np.divmod(rest, shape[mode])
    return columns
