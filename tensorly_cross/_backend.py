"""The few linear-algebra kernels TensorLy does not expose, dispatched per backend.

TensorLy offers ``qr``, ``solve`` and ``svd`` on every backend but no pivoted LU and no
in-place rank-1 update. Both sit on the hot path of maxvol, so each backend gets its
native LAPACK/BLAS call here; everything else in the package uses ``tl.*`` only.
"""

import contextlib
import functools
import sys

import numpy as np
import tensorly as tl


def eager_under_torch_compile(function):
    """``function``, run eagerly (a graph break) where ``torch.compile`` traces it.

    A cross searches its indices on concrete values, on the host (NumPy), which TorchDynamo
    cannot trace: it failed deep inside ("cumsum_out_cpu" not implemented for 'Bool').
    Eager, the cores keep their gradient. torch is not imported here: a cross never needs it.
    """
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        torch = sys.modules.get("torch")
        if torch is not None and _is_compiling(torch):
            return torch.compiler.disable(function)(*args, **kwargs)
        return function(*args, **kwargs)

    return wrapper


def _is_compiling(torch):
    """Whether TorchDynamo is tracing (``torch.compiler.is_compiling`` from PyTorch 2.3)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling() if is_compiling is not None else torch._dynamo.is_compiling())


def backend_name():
    """Name of the active TensorLy backend (``"numpy"``, ``"pytorch"``, ``"jax"``, ...)."""
    return tl.get_backend()


@contextlib.contextmanager
def thread_backend(name):
    """``name`` as this thread's TensorLy backend inside, then this thread's state as it
    was: its own backend, or none of its own (following the process-wide one).

    ``tl.set_backend(previous, local_threadsafe=True)`` on leaving gave a thread that had
    followed the process-wide backend one of its own: a pool thread that ran a JAX cross
    stayed on JAX after ``tl.set_backend("numpy")``, which every other thread followed.
    Where TensorLy keeps its per-thread state elsewhere than ``_THREAD_LOCAL_DATA`` (a
    version not known here), the previous backend is set back as the thread's own.

    Parameters
    ----------
    name : str
        The backend to run the block under, in this thread only.
    """
    local = getattr(tl.backend.BackendManager, "_THREAD_LOCAL_DATA", None)
    own = None if local is None else local.__dict__.get("backend")
    previous = tl.get_backend()
    tl.set_backend(name, local_threadsafe=True)
    try:
        yield
    finally:
        if local is not None and own is None:
            local.__dict__.pop("backend", None)  # follows the process-wide backend again
        else:
            tl.set_backend(own if own is not None else previous, local_threadsafe=True)


def to_host(tensor):
    """A NumPy array of a backend tensor, detached from any autograd graph (a NumPy
    array is returned as it is: treat the result as read-only).

    Raises
    ------
    TypeError
        For a traced JAX value (under ``jax.grad``, ``jax.jit``, ``jax.vmap``), or a
        PyTorch tensor under a ``torch.func`` transform.
    ValueError
        For a PyTorch tensor on the ``meta`` device.
    """
    if isinstance(tensor, np.ndarray):
        return tensor  # already on the host: the NumPy backend's hot path, no dispatch
    check_concrete(tensor, "a tensor")
    # Dispatch on the tensor's own type, not on the active backend: a torch tensor under
    # another backend (save_tt of torch cores that require grad, a subclass of
    # torch.Tensor defined outside torch), and a JAX array or list under PyTorch.
    if is_torch_tensor(tensor):
        # resolve_conj/resolve_neg: a tl.conj of a complex tensor, and the .imag of one,
        # are lazy views (conjugate or negative bit) that .numpy() refuses to read.
        host = tensor.detach().cpu().resolve_conj().resolve_neg()
        return numpy_dtype(host).numpy()
    return tl.to_numpy(tensor)


def backend_state():
    """A snapshot of TensorLy's backends: the calling thread's, and the process-wide one
    (what new threads get), for :func:`check_backend_kept`."""
    manager = tl.backend.BackendManager
    # The process-wide backend has no public getter; None where TensorLy renamed it.
    return manager.current_backend(), getattr(manager, "_backend", None)


def check_backend_kept(state, who):
    """Raise (restoring both backends of ``state``) when ``who`` switched TensorLy's active
    backend: the run's tensors are the snapshot's, and the next operation on them failed
    deep inside TensorLy (``abs(): argument 'input' must be Tensor, not numpy.ndarray``),
    leaving the backend switched."""
    thread, process = state
    now = tl.get_backend()
    if now == thread.backend_name:
        _restore_process_backend(process, thread)
        return
    if process is not None:
        tl.set_backend(process)  # the process-wide backend (and this thread's) first ...
    tl.set_backend(thread, local_threadsafe=True)  # ... then this thread's own, if other
    raise RuntimeError(f"{who} switched TensorLy's backend from {thread.backend_name!r} to "
                       f"{now!r} during the cross, which runs on the backend active when it "
                       f"was called (restored). Switch back before returning, or use "
                       "tl.backend_context(...) inside it.")


def _restore_process_backend(process, thread):
    """Put back the process-wide backend ``process`` where a call left it switched to this
    thread's backend ``thread``: ``tl.backend_context`` restores, on leaving, the backend it
    found in this thread as every thread's default. A function that entered one during a
    JAX cross (whose search runs in NumPy, in this thread only) left new threads on NumPy."""
    now = getattr(tl.backend.BackendManager, "_backend", None)
    if process is None or now is None or now.backend_name == process.backend_name:
        return
    if now.backend_name == thread.backend_name:
        tl.set_backend(process)  # every thread's default (and, for now, this thread's) ...
        tl.set_backend(thread, local_threadsafe=True)  # ... then this thread's own again


def widened(tensor):
    """``tensor`` in double precision (float32 to float64, complex64 to complex128) on its
    own backend, device and autograd graph; unchanged when it is double already, and under
    JAX without ``jax_enable_x64`` (which has no double precision to widen to)."""
    if is_torch_tensor(tensor):
        torch = sys.modules["torch"]
        return tensor.to(torch.promote_types(tensor.dtype, torch.float64))
    if isinstance(tensor, np.ndarray):
        return tensor.astype(np.promote_types(tensor.dtype, np.float64), copy=False)
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(tensor, jax.Array) and jax.config.jax_enable_x64:
        return tensor.astype(jax.numpy.promote_types(tensor.dtype, jax.numpy.float64))
    return tensor


def single_precision(tensor):
    """``tensor`` in float32 on its own backend, device and autograd graph (a half
    precision tensor's products accumulate there, then :func:`narrowed` returns them)."""
    if is_torch_tensor(tensor):
        return tensor.float()
    return tensor.astype(np.float32)  # NumPy's and JAX's arrays alike


def narrowed(tensor, like):
    """``tensor`` back in the precision of ``like`` (the inverse of :func:`widened`): in
    ``like``'s dtype, or its complex counterpart for a complex ``tensor``. A fit of a real
    core to fibers that turned complex (a function past a branch point, under NumPy or JAX,
    which promote) is complex: cast to the real core's dtype, it lost its imaginary part."""
    if is_torch_tensor(tensor):
        torch = sys.modules["torch"]
        dtype = like.dtype
        if tensor.is_complex():
            dtype = torch.promote_types(dtype, torch.complex64)
        return tensor.to(dtype)
    if not hasattr(tensor, "astype"):
        return tensor
    dtype = like.dtype
    if tensor.dtype.kind == "c":
        dtype = np.result_type(dtype, np.complex64)
    return tensor.astype(dtype)


def is_torch_tensor(tensor):
    """Whether ``tensor`` is a PyTorch tensor, subclasses included (without importing
    PyTorch when it is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(tensor, torch.Tensor)


def check_concrete(tensor, name):
    """Raise unless ``tensor`` holds values that can be read: a PyTorch tensor on the
    ``meta`` device holds a shape only, and a traced JAX value (under ``jax.grad`` or
    ``jax.jit``) none either; both used to fail deep inside, with the backend's message.

    Raises
    ------
    TypeError
        For a traced JAX value: pivots are chosen from concrete values on the host, so
        ``jax.grad``/``jax.jit`` cannot trace through (the PyTorch backend's
        ``differentiable=True`` gives gradients); likewise for a PyTorch tensor under a
        ``torch.func`` transform (autograd gives the gradients).
    ValueError
        For a PyTorch tensor on the ``meta`` device.
    """
    if getattr(tensor, "is_meta", False):
        raise ValueError(
            f"{name} is a PyTorch tensor on the 'meta' device, which holds a shape "
            "but no values; move it to a real device first (.to('cpu'))."
        )
    if is_functorch_wrapped(tensor):
        raise TypeError(
            f"{name} is a PyTorch tensor under a torch.func transform (grad, vmap, jacrev), "
            "which has no storage to read: tensorly-cross picks its pivots from values on "
            "the host. Use autograd instead: x.requires_grad_(), then backward() of a loss "
            "of the TT (tt_cross(..., differentiable=True) or cross_interpolate)."
        )
    if is_traced(tensor):
        raise TypeError(
            f"{name} is a traced JAX value (under jax.grad, jax.jit or jax.vmap): "
            "tensorly-cross picks its pivots from concrete values on the host, so "
            "it cannot be traced; call it outside the transformation (gradients: "
            "the PyTorch backend with differentiable=True)."
        )


def is_functorch_wrapped(tensor):
    """Whether ``tensor`` is a PyTorch tensor wrapped by a ``torch.func`` transform (its
    values have no storage: ``.numpy()`` failed with "Cannot access data pointer of Tensor
    that doesn't have storage"); False where PyTorch lacks the (private) check."""
    if not is_torch_tensor(tensor):
        return False
    functorch = getattr(sys.modules["torch"]._C, "_functorch", None)
    is_wrapped = getattr(functorch, "is_functorch_wrapped_tensor", None)
    return bool(is_wrapped(tensor)) if is_wrapped is not None else False


def is_traced(tensor):
    """Whether ``tensor`` is a JAX tracer (without importing JAX when it is not loaded)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(tensor, jax.core.Tracer)


def dtype_kind(tensor):
    """NumPy's kind letter of a backend tensor's dtype (``torch.int64`` -> ``"i"``); ``"f"``
    for floating types NumPy lacks (bfloat16)."""
    dtype = tensor.dtype
    # A NumPy dtype (NumPy's, JAX's) needs no round trip through its name.
    kind = dtype.kind if isinstance(dtype, np.dtype) else _kind_by_name(dtype)
    # ml_dtypes (JAX's) registers bfloat16 and the float8 types with NumPy as kind "V",
    # the name of torch.bfloat16 with them: floating all the same.
    return "f" if kind == "V" and "float" in str(dtype) else kind


def _kind_by_name(dtype):
    try:
        return np.dtype(str(dtype).rsplit(".", 1)[-1]).kind
    except TypeError:  # a floating type NumPy lacks, without ml_dtypes loaded
        return "f"


def numpy_dtype(tensor):
    """A PyTorch tensor in a dtype NumPy has, widened exactly where NumPy lacks its own:
    bfloat16 (autocast's) and the float8 types (a quantized model's) to float32, complex32
    to complex64 (``.numpy()`` raised "Got unsupported ScalarType"); others unchanged."""
    torch = sys.modules["torch"]
    if tensor.dtype == torch.complex32:
        return tensor.to(torch.complex64)
    if tensor.dtype == torch.bfloat16 or (tensor.dtype.is_floating_point
                                          and tensor.dtype.itemsize < 2):
        return tensor.float()
    return tensor


def svd(matrix, full_matrices=False):
    """``tl.svd``, falling back to LAPACK's ``gesvd`` on the host where the default driver
    (``gesdd``) does not converge: it fails on some matrices of few distinct values (the
    fibers of a piecewise-constant phantom). NumPy and PyTorch raise there; JAX returns
    NaNs, so a non-finite result of a finite matrix falls back too. The fallback carries
    no gradient."""
    try:
        parts = tl.svd(matrix, full_matrices=full_matrices)
    except (np.linalg.LinAlgError, RuntimeError) as error:
        if not isinstance(error, np.linalg.LinAlgError) and "converge" not in str(error):
            raise
    else:
        if backend_name() != "jax" or not _failed_silently(matrix, parts[1]):
            return parts
    left, singular, right = host_svd(to_host(matrix), full_matrices=full_matrices)
    # No requires_grad: leaves that required it took the gradient meant for ``matrix``
    # (backward ran, matrix.grad stayed None); constants say that none flows here.
    context = {key: value for key, value in tl.context(matrix).items()
               if key != "requires_grad"}
    return tl.tensor(left, **context), tl.tensor(singular, **context), tl.tensor(right, **context)


def _failed_silently(matrix, singular):
    """Whether an SVD returned non-finite singular values for a finite matrix (False for
    traced JAX values, which have none to check)."""
    try:
        singular, matrix = to_host(singular), to_host(matrix)
    except TypeError:  # jax.errors.TracerArrayConversionError under jax.grad or jax.jit
        return False
    return not np.isfinite(singular).all() and np.isfinite(matrix).all()


def host_svd(array, full_matrices=False, compute_uv=True):
    """``np.linalg.svd`` of a host array, with the same ``gesvd`` fallback as :func:`svd`."""
    try:
        return np.linalg.svd(array, full_matrices=full_matrices, compute_uv=compute_uv)
    except np.linalg.LinAlgError:
        import scipy.linalg

        return scipy.linalg.svd(array, full_matrices=full_matrices, compute_uv=compute_uv,
                                lapack_driver="gesvd")


def carries_gradient(tensor):
    """Whether ``tensor`` may carry a gradient: a PyTorch tensor that requires one, or any
    JAX array (a tracer under ``jax.grad`` looks like one); never a NumPy array."""
    if isinstance(tensor, np.ndarray):
        return False
    name = backend_name()
    if name == "pytorch":
        return bool(tensor.requires_grad)
    return name == "jax"


def stop_gradient(tensor):
    """``tensor`` cut from the autograd graph (the same values)."""
    name = backend_name()
    if name == "pytorch":
        return tensor.detach()
    if name == "jax":
        import jax

        return jax.lax.stop_gradient(tensor)
    return tensor


def straight_through(value, surrogate):
    """``value`` in the forward pass, with the gradient of ``surrogate``: for a value
    computed by a step whose own gradient is unstable (an SVD) and a surrogate that is
    equal to first order."""
    return stop_gradient(value) + (surrogate - stop_gradient(surrogate))


def lu_pivot_rows(matrix):
    """Rows picked by LU with (tournament) partial pivoting of a tall matrix, and ``|diag(U)|``.

    Parameters
    ----------
    matrix : tensor of shape (n, r), n >= r

    Returns
    -------
    rows : ndarray of int64, shape (r,)
        Pivot rows, in pivot order.
    pivot_sizes : ndarray of float, shape (r,)
        ``|U[k, k]|`` of the final LU; tiny values reveal a (numerically) rank-deficient
        matrix.
    candidates : ndarray of int64 or None
        The rows that reached the final round of the tournament (``None`` without one).

    Notes
    -----
    LAPACK's getrf on a tall, thin matrix is memory-bound (one pass over the matrix per
    column). Above one cache-sized block of rows the pivots come from a tournament instead
    (Grigori, Demmel, Xiang 2011, "CALU"): LU of row blocks, then LU of the union of their
    pivot rows. The result spans the same row space; maxvol then polishes it.
    """
    n_rows, n_cols = tl.shape(matrix)
    candidates = np.arange(n_rows, dtype=np.int64)
    block_rows = max(4 * n_cols, TOURNAMENT_BYTES // (8 * max(n_cols, 1)))
    while candidates.size > block_rows:
        winners = []
        for start in range(0, candidates.size, block_rows):
            block = candidates[start : start + block_rows]
            winners.append(block[_lu_rows(take_rows(matrix, block))[0]])
        candidates = np.concatenate(winners)
    if candidates.size == n_rows:
        rows, pivot_sizes = _lu_rows(matrix)
        return rows, pivot_sizes, None
    rows, pivot_sizes = _lu_rows(take_rows(matrix, candidates))
    return candidates[rows], pivot_sizes, candidates


# Row blocks of about this many bytes stay in cache during their LU.
TOURNAMENT_BYTES = 2**20


def _lu_rows(matrix):
    """First ``r`` pivot rows of getrf on an ``(m, r)`` block, and ``|diag(U)|``."""
    n_rows, n_cols = tl.shape(matrix)
    n_pivots = min(n_rows, n_cols)
    name = backend_name()
    if name == "pytorch":
        import torch

        # lu_factor_ex: a singular block is information (rank), not an error.
        factor, pivots, _ = torch.linalg.lu_factor_ex(matrix.detach())
        swaps = pivots.cpu().numpy().astype(np.int64) - 1  # LAPACK ipiv is 1-based
    elif name == "jax":
        import jax.scipy.linalg as jsl

        factor, pivots = jsl.lu_factor(matrix)
        swaps = np.asarray(pivots, dtype=np.int64)
    else:
        from scipy.linalg import lapack

        host = np.asarray(tl.to_numpy(matrix))
        (getrf,) = lapack.get_lapack_funcs(("getrf",), (host,))
        factor, swaps, _ = getrf(host)
        swaps = np.asarray(swaps, dtype=np.int64)
    diagonal = np.abs(np.diagonal(to_host(factor[:n_pivots, :n_pivots])))
    return _swaps_to_rows(swaps, n_pivots), diagonal


def _swaps_to_rows(swaps, n_pivots):
    """Turn LAPACK's sequential row interchanges into the first ``n_pivots`` pivot rows."""
    # Only the rows touched by the interchanges move; a dict keeps this O(r), not O(n).
    moved = {}
    for position in range(n_pivots):
        target = int(swaps[position])
        moved_position = moved.get(position, position)
        moved[position] = moved.get(target, target)
        moved[target] = moved_position
    return np.array([moved.get(k, k) for k in range(n_pivots)], dtype=np.int64)


def argmax_abs(matrix):
    """``(row, col)`` of the entry of largest modulus."""
    n_cols = tl.shape(matrix)[1]
    if _is_contiguous_real_numpy(matrix):
        # BLAS i?amax scans the contiguous buffer once, with no |matrix| temporary.
        from scipy.linalg import blas

        iamax = blas.idamax if matrix.dtype.char == "d" else blas.isamax
        return divmod(int(iamax(matrix.reshape(-1))), n_cols)
    flat = int(to_host(tl.argmax(tl.reshape(tl.abs(matrix), (-1,)))))
    return divmod(flat, n_cols)


def subtract_outer_and_argmax_(matrix, column, row):
    """``matrix -= outer(column, row)`` (in place where possible), then :func:`argmax_abs`.

    Returns ``(matrix, (row, col))``: one maxvol swap, two passes over the matrix.
    """
    matrix = subtract_outer_(matrix, column, row)
    return matrix, argmax_abs(matrix)


def _is_contiguous_real_numpy(matrix):
    return (backend_name() == "numpy" and isinstance(matrix, np.ndarray)
            and matrix.flags.c_contiguous and matrix.dtype.char in "fd")


def subtract_outer_(matrix, column, row):
    """``matrix -= outer(column, row)``, in place where the backend allows it.

    Returns the updated matrix (a new array on functional backends such as JAX).
    """
    name = backend_name()
    if name == "numpy":
        return _numpy_subtract_outer_(matrix, column, row)
    if name == "pytorch":
        return matrix.addr_(column, row, alpha=-1)
    return matrix - tl.reshape(column, (-1, 1)) * tl.reshape(row, (1, -1))


def _numpy_subtract_outer_(matrix, column, row):
    # BLAS ger updates a Fortran-ordered matrix in place in one pass over memory;
    # a C-ordered (n, r) matrix is the Fortran-ordered (r, n) transpose, so update that.
    from scipy.linalg import blas

    if not (matrix.dtype.isnative and matrix.flags.aligned and matrix.flags.writeable):
        # f2py would hand ger a native-order or aligned copy (its update lost, the stale
        # matrix returned) or write into memory marked read-only: return a new array.
        return matrix - np.multiply.outer(column, row)
    if matrix.dtype.char in "fdFD" and (matrix.flags.f_contiguous or matrix.flags.c_contiguous):
        (ger,) = blas.get_blas_funcs(("geru",) if matrix.dtype.kind == "c" else ("ger",),
                                     (matrix,))
        if matrix.flags.f_contiguous:
            ger(-1.0, column, row, a=matrix, overwrite_a=True)
        else:
            ger(-1.0, row, column, a=matrix.T, overwrite_a=True)
        return matrix
    matrix -= np.multiply.outer(column, row)
    return matrix


def all_finite(tensor):
    """True when no entry of ``tensor`` is NaN or infinite."""
    name = backend_name()
    if name == "numpy":
        return bool(np.isfinite(tensor).all())
    if name == "pytorch":
        import torch

        check_concrete(tensor, "a tensor")  # bool() of a meta tensor fails deep in torch
        return bool(torch.isfinite(tensor).all())
    # inf * 0 and nan * 0 are nan, finite * 0 is 0: one reduction, any backend.
    return bool(to_host(tl.sum(tl.abs(tensor) * 0)) == 0)


def take_rows(tensor, rows):
    """``tensor[rows]`` for host int64 ``rows``, on the tensor's own device."""
    rows = np.asarray(rows, dtype=np.int64)  # JAX takes no list as an index
    if backend_name() == "pytorch":
        import torch

        # A read-only array (np.asarray of a JAX array) made torch warn on every call.
        rows = np.require(rows, requirements="W")
        return tensor[torch.as_tensor(rows, device=tensor.device)]
    return tensor[rows]


def contiguous(tensor):
    """``tensor`` laid out in C order (a copy only when it is not): gathers of whole
    slices then read consecutive memory instead of strides."""
    name = backend_name()
    if name == "numpy":
        return np.ascontiguousarray(tensor)
    if name == "pytorch":
        return tensor.contiguous()
    return tensor


def take_cols(tensor, cols):
    """``tensor[:, cols]`` for host int64 ``cols`` (a 2-D tensor), on its own device."""
    return tl.transpose(take_rows(tl.transpose(tensor), cols))


def argmax_host(values):
    """Index of the largest entry of a host NumPy vector, as a Python int."""
    return int(np.argmax(values))
