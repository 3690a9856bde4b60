"""TensorLy drop-in: ``tensor_train_cross`` and ``TensorTrainCross``.

Same signature, argument semantics and rank errors as
``tensorly.contrib.decomposition.tensor_train_cross``, but the tensor is read entry by
entry through the cross (never densified), and the stop is the held-out error.

``TensorTrainCross`` writes out the two methods of TensorLy's ``DecompositionMixin``
(``fit`` and ``__repr__``) instead of inheriting them: the mixin lives in the private
module ``tensorly.decomposition._base_decomposition``, with no public import path.
"""

import math
import numbers
import os

import numpy as np
import tensorly as tl

from ._backend import check_concrete, eager_under_torch_compile
from ._validation import check_int
from .api import refuse_lost_gradient, tt_cross
from .lazy.base import LazyTensor
from .lazy.dispatch import as_lazy
from .lazy.sources import refuse_closed_hdf5


@eager_under_torch_compile
def tensor_train_cross(input_tensor, rank, tol=1e-4, n_iter_max=100, random_state=None):
    """TT decomposition by cross approximation (fixed rank, maxvol ALS-cross).

    Parameters
    ----------
    input_tensor : tensor
        Any TensorLy-backend tensor (or anything :func:`tensorly_cross.lazy_tensor` reads).
    rank : int or list of int
        Maximal TT rank: an int ``r`` (``[1, r, ..., r, 1]``, each clipped with a warning
        to what the tensor's unfoldings can hold) or a list (or 1-D integer array) of
        ``ndim + 1`` ints with ``rank[0] == rank[-1] == 1``.
    tol : float, default 1e-4
        Stop when the relative error on 1000 held-out entries is below ``tol``.
    n_iter_max : int, default 100
        Maximum number of sweeps, each one left-to-right and one right-to-left pass.
    random_state : None, int, numpy RandomState or Generator
        Seed of the random starting indices and held-out entries; ``None`` draws from
        NumPy's global random state, as TensorLy's does (``np.random.seed`` then makes a
        run reproducible).

    Returns
    -------
    factors : tensorly.tt_tensor.TTTensor
        The TT, on the active backend; differentiable with respect to the tensor's
        entries on PyTorch (a tensor that requires grad under another backend raises a
        ValueError, as does ``open_volume(x)`` of one, which reads it detached).

    Raises
    ------
    TypeError
        If ``input_tensor`` is not a tensor (a list, None) or is a traced JAX value (under
        ``jax.grad``/``jax.jit``), or ``rank`` is not an int or a list of ints (``2.0`` is
        refused).
    ValueError
        If ``len(rank) != ndim + 1``, the boundary ranks are not 1, or a rank in the list
        exceeds the number of available column indices (TensorLy's messages), or
        ``input_tensor`` is 0-d, has a mode of size 0 or is a PyTorch tensor on the
        ``meta`` device; or ``tol`` is not in ``[0, 1)``; or an entry read is NaN or infinite
        (:class:`NonFiniteValueError`, naming it: TensorLy's returns NaN cores).

    Notes
    -----
    Where it differs from TensorLy 0.10's: it returns a ``TTTensor`` where TensorLy's
    returns a plain list of the cores (indexing, iteration, ``len`` and
    ``tl.tt_to_tensor`` work on both; ``list(factors)`` gives the list), and ``tol`` must
    be below 1 (a relative error of 1 is the zero tensor's; TensorLy's accepts any). It
    accepts what TensorLy's refuses in three places: an int ``rank`` other than 1
    (TensorLy's repeats it at the boundaries too, then refuses them; here a cap, clipped
    on both sides of every bond as TensorLy's ``tensor_train`` clips it), a NumPy integer
    ``random_state`` or a ``numpy.random.Generator``, and a rank above the rows of its
    unfolding, the product of the mode sizes before it (clipped with a warning;
    TensorLy's fails with an IndexError).

    Examples
    --------
    >>> import numpy as np
    >>> import tensorly as tl
    >>> from tensorly_cross import tensor_train_cross
    >>> rng = np.random.default_rng(0)
    >>> tensor = tl.tensor(np.einsum("i,j,k->ijk", *(rng.random(n) for n in (4, 5, 6))))
    >>> factors = tensor_train_cross(tensor, rank=[1, 1, 1, 1], random_state=0)
    >>> factors.rank
    (1, 1, 1, 1)
    >>> bool(np.allclose(tl.tt_to_tensor(factors), tensor))
    True
    """
    refuse_lost_gradient(input_tensor, "tensor_train_cross")  # before it is wrapped
    shape = _input_shape(input_tensor)
    rank = _tensorly_rank(rank, shape)
    n_iter_max = check_int(n_iter_max, "n_iter_max", minimum=1)
    # Read here, so that a refusal (a DataFrame, a sparse or masked matrix) names this
    # function's argument; tt_cross's messages said "tensor".
    lazy = as_lazy(input_tensor, None, "input_tensor")
    # differentiable: the search runs without gradient, the cores come from one
    # autograd-visible read, so gradients are exact (TensorLy's own detaches an inverse).
    if random_state is None:
        # TensorLy's None (tl.check_random_state): NumPy's global RandomState, which
        # np.random.seed controls; tt_cross's None drew fresh OS entropy instead.
        random_state = np.random.mtrand._rand
    return tt_cross(lazy, rank=rank, tol=tol, method="als", n_iter_max=2 * n_iter_max,
                    random_state=random_state, differentiable=True)


def _input_shape(input_tensor):
    """The shape of a tensor, a LazyTensor or an array-like with integer-array indexing."""
    refuse_closed_hdf5(input_tensor, "input_tensor")
    if not (isinstance(input_tensor, LazyTensor) or tl.is_tensor(input_tensor)
            or (hasattr(input_tensor, "shape") and hasattr(input_tensor, "__getitem__"))):
        # A function of multi-indices has no shape here: tt_cross takes it with one. A path
        # is opened by open_volume (tl.tensor of a file name, as the hint said, is no tensor).
        if callable(input_tensor):
            hint = "pass a function of multi-indices to tensorly_cross.tt_cross(f, shape=...)"
        elif isinstance(input_tensor, str | bytes | os.PathLike):
            hint = (f"to read the volume stored at {input_tensor!r}, pass "
                    "tensorly_cross.open_volume(path) (zarr, HDF5, .npy, NIfTI)")
        else:
            hint = "convert it with tl.tensor(...)"
        raise TypeError(f"input_tensor must be a tensor (of any TensorLy backend: NumPy, "
                        f"PyTorch, JAX) or a LazyTensor, got "
                        f"{type(input_tensor).__name__}; {hint}.")
    if not isinstance(input_tensor, LazyTensor):
        # A meta tensor or a JAX tracer has no entries to read: refused here by name, not
        # deep in the first read.
        check_concrete(input_tensor, "input_tensor")
    shape = tuple(input_tensor.shape)
    if not shape:
        raise ValueError("input_tensor is 0-d (a scalar): a tensor train needs at least one "
                         "mode.")
    if 0 in shape:  # named here: tt_cross's message named a "shape" this function has not
        raise ValueError(f"input_tensor has shape {shape}, with an empty mode; every mode "
                         "size must be >= 1.")
    return shape


def _tensorly_rank(rank, shape):
    """TensorLy's rank checks, with its messages."""
    tensor_order = len(shape)
    if getattr(rank, "ndim", None) == 1 and hasattr(rank, "tolist"):
        # A 1-D array of ranks (NumPy, PyTorch, JAX): TensorLy takes it through len() and
        # list(); its entries are checked as ints below (a float array is refused).
        rank = rank.tolist()
    if isinstance(rank, numbers.Integral) and not isinstance(rank, bool):
        # A cap for every bond, as TensorLy's tensor_train takes an int (its cross refuses
        # every int but 1, so no message of its to keep): tt_cross clips it, with a
        # warning, where an unfolding has fewer rows or columns. The column check below
        # refused an (8, 8, 3) tensor at rank=5 and clipped a (3, 8, 8) one.
        return [1] + [int(rank)] * (tensor_order - 1) + [1]
    if not isinstance(rank, list | tuple):
        raise TypeError(f"rank must be an int or a list of tl.ndim(tensor) + 1 ints, got "
                        f"{rank!r} ({type(rank).__name__}).")
    else:
        rank = [check_int(r, f"rank[{k}]") for k, r in enumerate(rank)]
    if tensor_order + 1 != len(rank):
        raise ValueError(
            "Provided incorrect number of ranks. Should verify "
            f"len(rank) == tl.ndim(tensor)+1, but len(rank) = {len(rank)} "
            f"while tl.ndim(tensor) + 1  = {tensor_order + 1}"
        )
    rank = list(rank)
    for end in (0, -1):
        if rank[end] != 1:
            raise ValueError(
                f"Provided rank[{end}] == {rank[end]} but boundary conditions dictate "
                "rank[0] == rank[-1] == 1."
            )
    for k in range(tensor_order - 1):
        n_columns = math.prod(shape[k + 1 :])
        if rank[k + 1] > n_columns:
            raise ValueError(
                f"rank[{k + 1}]={rank[k + 1]} exceeds the number of available column "
                f"indices ({n_columns})."
            )
    return rank


_ESTIMATOR_PARAMETERS = ("rank", "tol", "n_iter_max", "random_state")


class TensorTrainCross:
    """TT decomposition by cross approximation, scikit-learn style.

    Parameters
    ----------
    rank : int or list of int
        Maximal TT rank, as for :func:`tensor_train_cross`.
    tol : float, default 1e-4
        Held-out relative error at which to stop.
    n_iter_max : int, default 100
        Maximum number of sweeps (each a pass in both directions).
    random_state : None, int, numpy RandomState or Generator
        Seed of the random choices (``None``: NumPy's global random state).

    Attributes
    ----------
    decomposition_ : tensorly.tt_tensor.TTTensor
        Set by :meth:`fit` and :meth:`fit_transform`.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import TensorTrainCross
    >>> tensor = np.add.outer(np.arange(4.0), np.arange(5.0))[:, :, None] * np.ones(3)
    >>> estimator = TensorTrainCross(rank=[1, 2, 2, 1], random_state=0).fit(tensor)
    >>> estimator
    TensorTrainCross decomposition of rank [1, 2, 2, 1].
    >>> bool(np.allclose(estimator.to_tensor(), tensor))
    True
    """

    def __init__(self, rank, tol=1e-4, n_iter_max=100, random_state=None):
        self.rank = rank
        self.tol = tol
        self.n_iter_max = n_iter_max
        self.random_state = random_state

    def fit_transform(self, tensor, y=None):
        """Decompose ``tensor``, store the TT in ``decomposition_`` and return it.

        Parameters
        ----------
        tensor : tensor
            Anything :func:`tensor_train_cross` accepts.
        y : None
            Ignored: scikit-learn passes ``y=None`` to unsupervised estimators (a
            ``Pipeline`` does), which failed without it.

        Returns
        -------
        factors : tensorly.tt_tensor.TTTensor
            The TT, also stored as ``decomposition_``.
        """
        self.decomposition_ = tensor_train_cross(
            tensor, rank=self.rank, tol=self.tol, n_iter_max=self.n_iter_max,
            random_state=self.random_state,
        )
        return self.decomposition_

    def fit(self, tensor, y=None):
        """Decompose ``tensor`` and store the TT in ``decomposition_``.

        Parameters
        ----------
        tensor : tensor
            Anything :func:`tensor_train_cross` accepts.
        y : None
            Ignored (scikit-learn's convention for unsupervised estimators).

        Returns
        -------
        self : TensorTrainCross
            The fitted estimator.
        """
        self.fit_transform(tensor)
        return self

    def to_tensor(self):
        """Return the dense tensor of the fitted TT (for tensors that fit in memory).

        Returns
        -------
        tensor : tensor
            ``tl.tt_to_tensor(self.decomposition_)``.
        """
        if not hasattr(self, "decomposition_"):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet: call fit(tensor) "
                               "first.")
        return tl.tt_to_tensor(self.decomposition_)

    def get_params(self, deep=True):
        """The constructor's parameters (scikit-learn's estimator protocol: ``clone`` works).

        Parameters
        ----------
        deep : bool, default True
            Unused: no parameter is itself an estimator.

        Returns
        -------
        params : dict
            ``rank``, ``tol``, ``n_iter_max`` and ``random_state``.
        """
        return {name: getattr(self, name) for name in _ESTIMATOR_PARAMETERS}

    def set_params(self, **params):
        """Set constructor parameters by name (scikit-learn's estimator protocol).

        Parameters
        ----------
        **params
            Any of ``rank``, ``tol``, ``n_iter_max`` and ``random_state``.

        Returns
        -------
        self : TensorTrainCross
            The estimator, with the new parameters.

        Raises
        ------
        ValueError
            For a name that is not a parameter.
        """
        unknown = sorted(set(params) - set(_ESTIMATOR_PARAMETERS))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter {unknown[0]!r}; its "
                             f"parameters are {', '.join(_ESTIMATOR_PARAMETERS)}.")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        # scikit-learn >= 1.6 asks every estimator for its tags (is_regressor, check
        # utilities): without them they failed with an AttributeError. Not a classifier,
        # regressor or transformer of 2-D data: a decomposition of a tensor, which sklearn
        # does not validate.
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    no_validation=True)

    def __repr__(self):
        return f"{type(self).__name__} decomposition of rank {self.rank}."
