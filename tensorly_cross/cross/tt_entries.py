"""Entries of a tensor train at a batch of multi-indices."""

import functools

import numpy as np
import tensorly as tl

from .._backend import (
    backend_name,
    check_concrete,
    contiguous,
    dtype_kind,
    narrowed,
    single_precision,
    take_rows,
    to_host,
)
from ..lazy.base import (
    check_indices,
    low_precision,
    ml_float,
    sub_byte_integer,
    sub_byte_note,
)

# Work-block bound, in entries (32 MiB in float64): the batch is cut into chunks whose
# running products ``(chunk, r_k)`` stay under a sixteenth of it, and a mode whose per-entry
# core slices ``(chunk, r_k, r_{k+1})`` would exceed it is contracted value by value.
WORK_ENTRIES = 2**22


def tt_entries(cores, indices):
    """Entries of a tensor train at a batch of multi-indices, without forming the tensor.

    Parameters
    ----------
    cores : TTTensor or list of tensors of shape (r_k, n_k, r_{k+1})
    indices : array-like of int, shape (m, d)
        The multi-indices, one per row, every index within its mode
        (``0 <= indices[:, k] < n_k``): negative indices are refused, not wrapped around.

    Returns
    -------
    values : tensor of shape (m,)
        Costs ``O(m sum_k r_k r_{k+1})`` operations in bounded memory (chunks of entries,
        see ``WORK_ENTRIES``); autograd-visible.

    Raises
    ------
    TypeError
        If ``cores`` is not a TTTensor or a list of tensors, or a core holds objects,
        strings, dates or PyTorch's sub-byte integers (``torch.uint4``, ...), or is a
        masked array.
    ValueError
        If ``indices`` is not an (m, d) integer array, an index is out of range (the
        message names the first such multi-index), the cores do not form a TT, or
        ``indices`` is a PyTorch tensor on the ``meta`` device.

    Notes
    -----
    Cores of another backend are copied to the active one (without their gradient), and
    cores of different dtypes are promoted to a common one (as NumPy and JAX do; PyTorch's
    matmul refused them), 8-bit floats among others as float32 (which neither PyTorch nor
    JAX promotes). Cores of one half-precision dtype (float16, bfloat16, the 8-bit
    floats) are multiplied in float32 and the entries returned in their dtype: each one
    the rounding of a float32 product, not of a product rounded at every core.

    Examples
    --------
    >>> import numpy as np
    >>> import tensorly as tl
    >>> from tensorly_cross import tt_entries
    >>> tensor = np.arange(24.0).reshape(2, 3, 4)
    >>> tt = tl.decomposition.tensor_train(tl.tensor(tensor), rank=[1, 2, 4, 1])
    >>> np.round(tt_entries(tt, [[0, 0, 1], [1, 2, 3]]), 8)
    array([ 1., 23.])
    """
    _check_ranks(cores)
    cores = common_dtype([core_in_backend(core, k) for k, core in enumerate(cores)])
    narrow = _half_precision(cores)
    if narrow is not None:
        cores = [single_precision(core) for core in cores]
    shape = tuple(int(tl.shape(core)[1]) for core in cores)
    try:
        indices = check_indices(_host_indices(indices), shape)
    except ValueError as error:
        raise ValueError(f"tt_entries: {error}") from None
    chunk = _chunk_size(cores)
    values = [_chunk_entries(cores, indices[start : start + chunk])
              for start in range(0, max(indices.shape[0], 1), chunk)]
    values = values[0] if len(values) == 1 else tl.concatenate(values, axis=0)
    return values if narrow is None else narrowed(values, narrow)


def _half_precision(cores):
    """The first core if every core has one and the same floating dtype narrower than
    float32 (float16, bfloat16, the 8-bit floats), else None: its products are taken in
    float32, as rounding after each of them lost a few ulps per core of a long chain, and
    an intermediate product past 65504 overflowed float16 on its way to a finite entry."""
    dtypes = {str(core.dtype) for core in cores}
    return cores[0] if len(dtypes) == 1 and low_precision(cores[0].dtype) else None


def _check_ranks(cores):
    """Boundary ranks 1 and matching neighbours (else entries would be silently wrong)."""
    other, tt_tensor = _factorized_kinds()
    if isinstance(cores, other) or not isinstance(cores, list | tuple | tt_tensor):
        raise TypeError(f"tt_entries: cores must be a TTTensor or a list of 3-D cores, got "
                        f"{type(cores).__name__}.")
    shapeless = [k for k, core in enumerate(cores) if not hasattr(core, "shape")]
    if shapeless:
        raise TypeError(
            f"tt_entries: cores must be tensors (r_k, n_k, r_k+1); "
            f"cores[{shapeless[0]}] is a {type(cores[shapeless[0]]).__name__}."
        )
    shapes = [tuple(tl.shape(core)) for core in cores]
    if not shapes or any(len(shape) != 3 for shape in shapes):
        raise ValueError(f"tt_entries: cores must be 3-D (r_k, n_k, r_k+1), got {shapes}.")
    ranks = [shapes[0][0]] + [shape[2] for shape in shapes]
    mismatch = [k for k in range(len(shapes) - 1) if shapes[k][2] != shapes[k + 1][0]]
    if ranks[0] != 1 or ranks[-1] != 1 or mismatch:
        raise ValueError(f"tt_entries: cores do not form a TT (boundary ranks 1, each core's "
                         f"last rank the next one's first), got core shapes {shapes}.")


def core_in_backend(core, k, where="tt_entries"):
    """``core`` as a tensor of the active backend: another backend's tensor (a JAX core
    under the NumPy search of a JAX cross, a PyTorch core under NumPy) is copied over
    through the host, where it crashed deep in the products. ``where`` names the caller
    in messages."""
    if isinstance(core, np.ma.MaskedArray):
        # NumPy's masked products failed ("cannot reshape array of size 2 into shape
        # (1,1)"); its raw entries, masked or not, are not what the mask says either.
        raise TypeError(f"{where}: cores[{k}] is a masked array; cores hold every entry: "
                        f"pass cores[{k}].filled(value).")
    if sub_byte_integer(getattr(core, "dtype", None)) and str(core.dtype).startswith("torch."):
        # PyTorch cannot copy its own (no .numpy(), no .to()): they failed in its terms
        # ("Got unsupported ScalarType UInt4"). ml_dtypes' are multiplied in float64.
        raise TypeError(f"{where}: cores[{k}] has dtype {core.dtype}"
                        f"{sub_byte_note(core.dtype)}.")
    if tl.is_tensor(core):
        return _numeric(core, k, where)
    if hasattr(core, "detach") and hasattr(core, "cpu"):  # torch, under another backend
        check_concrete(core, f"{where}: cores[{k}]")
        return tl.tensor(to_host(core))  # detached, conjugate and negative views resolved
    # Checked, and put in native byte order, before the backend sees it: PyTorch and JAX
    # refused a big-endian core (a foreign .npy) or an object one in messages naming none.
    array = _numeric(np.asarray(core), k, where)
    if sub_byte_integer(array.dtype):  # PyTorch refused them ("can't convert np.ndarray")
        array = array.astype(np.float64)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if ml_float(array.dtype) and backend_name() == "pytorch":
        return _ml_float_in_torch(array)
    if ml_float(array.dtype) and backend_name() == "jax":
        return _ml_float_in_jax(array)
    return tl.tensor(array)


def _ml_float_in_jax(array):
    """A NumPy array of ml_dtypes' floats in JAX: in its own dtype, or float32 (exactly)
    where XLA holds none of it (JAX names the 6-bit floats, but transferring them failed
    on the CPU: "Invalid XLA PrimitiveType: 36 (F6E2M3FN)"), or JAX none at all (newer
    ml_dtypes' float8_e5m3fnu: "Error interpreting argument to stage as a JAX value")."""
    try:
        return tl.tensor(array)
    except (RuntimeError, TypeError):  # jax.errors.JaxRuntimeError; a dtype JAX lacks
        return tl.tensor(array.astype(np.float32))


def _ml_float_in_torch(array):
    """A NumPy array of ml_dtypes' floats (bfloat16, float8_*: JAX's, through the host),
    which PyTorch refused ("can't convert np.ndarray of type ml_dtypes.bfloat16"), in
    PyTorch's dtype of the same name (exactly, through float32), or float32 where PyTorch
    has none of that name."""
    import torch

    tensor = torch.from_numpy(array.astype(np.float32))
    dtype = getattr(torch, str(array.dtype), None)
    return tensor.to(dtype) if isinstance(dtype, torch.dtype) else tensor


def _numeric(core, k, where):
    """``core``, unless it holds objects, strings or dates: a string core failed in
    NumPy's matmul ("did not contain a loop with signature"), an object core returned an
    object array."""
    if dtype_kind(core) in "OUSMm":
        raise TypeError(f"{where}: cores[{k}] has dtype {core.dtype}; cores must hold "
                        "numbers (bool, integer, real or complex floating point).")
    return core


def common_dtype(cores):
    """The cores, cast to their common dtype where they differ (on PyTorch only: NumPy and
    JAX promote in the products themselves), and bool or integer cores to float64."""
    cores = [_floating(core) for core in cores]
    dtypes = {core.dtype for core in cores}
    if len(dtypes) == 1:
        return cores
    # PyTorch and JAX promote their 8-, 6- and 4-bit floats with no other dtype ("Promotion
    # for Float8 Types is not supported"): as float32, which holds them exactly, as NumPy
    # promotes them. Autograd-visible.
    cores = [single_precision(core) if _unpromotable(core.dtype) else core for core in cores]
    dtypes = {core.dtype for core in cores}
    if len(dtypes) == 1 or backend_name() != "pytorch":
        return cores
    import torch

    common = functools.reduce(torch.promote_types, dtypes)
    return [core.to(common) for core in cores]  # autograd-visible


def _unpromotable(dtype):
    """Whether ``dtype`` is one of the floats narrower than 16 bits, which PyTorch and JAX
    promote with no other dtype."""
    return low_precision(dtype) and not str(dtype).endswith("float16")


def _floating(core):
    """A bool or integer core as float64: products in its own dtype were logical (bool
    matmul: 1*1 + 1*1 gave True) or wrapped around (uint8: 200*2 + 200*2 gave 32), and
    PyTorch had no bool matmul. Such cores carry no gradient: the host copy loses none.
    ml_dtypes' sub-byte integers too (NumPy's kind "V"): int4 products wrapped (3*3*3 gave
    -5 under JAX), and JAX refused to promote int4 with uint4."""
    if dtype_kind(core) not in "biu" and not sub_byte_integer(core.dtype):
        return core
    # The dtype follows the float64 host copy (tl.float64 is NumPy's on every backend).
    context = {key: value for key, value in tl.context(core).items() if key != "dtype"}
    return tl.tensor(to_host(core).astype(np.float64), **context)


def _host_indices(indices):
    """``indices`` readable by NumPy: a PyTorch tensor detached and on the CPU (NumPy
    refused one that requires grad or lives on a GPU); a meta tensor refused by name."""
    if hasattr(indices, "detach") and hasattr(indices, "cpu"):
        check_concrete(indices, "indices")
        return to_host(indices)
    return indices


def _chunk_size(cores):
    largest_rank = max(max(tl.shape(core)[0], tl.shape(core)[2]) for core in cores)
    return max(1, WORK_ENTRIES // (16 * largest_rank))


def _chunk_entries(cores, indices):
    result = None
    for mode, core in enumerate(cores):
        result = _contract_mode(result, core, indices[:, mode])
    return result[:, 0]


def _contract_mode(result, core, mode_indices):
    """``result[j] @ core[:, mode_indices[j], :]`` for every entry ``j`` (``result`` None:
    the first core's rows)."""
    r_left, _, r_right = tl.shape(core)
    if result is None:  # r_0 = 1: rows of the first core, (m, r_1)
        return take_rows(_in_c_order_if_cheap(core[0], mode_indices.shape[0]), mode_indices)
    if mode_indices.shape[0] * r_left * r_right <= WORK_ENTRIES:
        picked = take_rows(_slices_first(core, mode_indices.shape[0]), mode_indices)
        # A batch of (1, r_k) @ (r_k, r_{k+1}) products: faster than einsum here.
        return tl.matmul(result[:, None, :], picked)[:, 0, :]
    return _contract_by_value(result, core, mode_indices)


def _slices_first(core, n_entries):
    """``core`` as ``(n_k, r_k, r_{k+1})``, for a gather of ``n_entries`` slices.

    In C order when the mode holds no more slices than are gathered, so that one gather
    picks each multi-index's slice from consecutive memory (2-3x faster than from the
    strided view). A larger mode stays a view: its copy, ``O(n_k r_k r_{k+1})`` in time
    and memory, cost more than the gather it sped up (10 entries of a (4, 400000, 4) core
    copied all its 51 MB), once per chunk of a batch.
    """
    return _in_c_order_if_cheap(tl.moveaxis(core, 1, 0), n_entries)


def _in_c_order_if_cheap(slices, n_entries):
    """``slices`` (indexed along its first axis) in C order when it holds no more of them
    than ``n_entries`` are gathered: the copy then costs no more than the gather."""
    return contiguous(slices) if tl.shape(slices)[0] <= n_entries else slices


def _contract_by_value(result, core, mode_indices):
    """The entries grouped by their index in this mode: one ``(m_i, r_k) @ (r_k, r_{k+1})``
    product per index value present (at most ``n_k``), no per-entry slice of the core."""
    order = np.argsort(mode_indices, kind="stable")
    values, starts = np.unique(mode_indices[order], return_index=True)
    bounds = np.append(starts, order.shape[0])
    pieces = [tl.dot(take_rows(result, order[start:stop]), core[:, int(value), :])
              for value, start, stop in zip(values, bounds[:-1], bounds[1:], strict=True)]
    return take_rows(tl.concatenate(pieces, axis=0), np.argsort(order, kind="stable"))


def _factorized_kinds():
    """TensorLy's factorized tensors that are not TTs (a CPTensor is a tuple too), and
    the TT class."""
    from tensorly.cp_tensor import CPTensor
    from tensorly.tt_tensor import TTTensor
    from tensorly.tucker_tensor import TuckerTensor

    return (CPTensor, TuckerTensor), TTTensor
