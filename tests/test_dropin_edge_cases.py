"""Tests of the TensorLy drop-in tensor_train_cross."""

import inspect
import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import tensor_train_cross

from ._helpers_shared import _as_kind, _jax, _low_rank_tensor, _torch
from .strategies import random_tt_cores, seeds

# tensor_train_cross ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["numpy", "pytorch", "jax"])
def test_drop_in_refuses_a_meta_tensor_by_name(name):
    torch = _torch()
    if name == "jax":
        _jax()
    tensor = torch.empty((4, 5, 3), dtype=torch.float64, device="meta")
    with tl.backend_context(name), pytest.raises(ValueError, match="meta") as error:
        tlc.tensor_train_cross(tensor, rank=2, random_state=0)
    assert str(error.value).startswith("input_tensor")


def test_drop_in_under_jax_grad_is_refused_by_name():
    jax = _jax()
    tensor = jax.numpy.asarray(np.random.default_rng(0).standard_normal((4, 5, 3)))
    with tl.backend_context("jax"), pytest.raises(TypeError, match="traced JAX") as error:
        jax.grad(lambda x: tl.tt_to_tensor(tlc.tensor_train_cross(x, rank=2)).sum())(tensor)
    assert str(error.value).startswith("input_tensor")


@pytest.mark.parametrize("kind", ["numpy", "torch", "jax"])
def test_drop_in_takes_a_rank_array_like_tensorly(kind):
    """TensorLy's ``tensor_train_cross`` takes any rank with ``len`` and ``list``."""
    rank = _as_kind(np.array([1, 2, 2, 1]), kind)
    tensor = tl.tensor(np.random.default_rng(0).standard_normal((4, 4, 4)))
    assert tlc.tensor_train_cross(tensor, rank, random_state=0).rank == (1, 2, 2, 1)


def test_drop_in_refuses_a_float_rank_array_by_name():
    tensor = tl.tensor(np.ones((4, 4, 4)))
    with pytest.raises(TypeError, match=r"rank\[0\] must be an integer, got 1.0"):
        tlc.tensor_train_cross(tensor, np.array([1.0, 2.0, 2.0, 1.0]))


# -- decomposition.py: refusals name the drop-in's own arguments ---------------------------


@pytest.mark.parametrize("make", [
    lambda m: np.ma.masked_array(m),
    lambda m: pytest.importorskip("pandas").DataFrame(m),
    lambda m: pytest.importorskip("scipy.sparse").csr_matrix(m),
], ids=["masked", "dataframe", "sparse"])
def test_dropin_refusals_name_input_tensor(make):
    # The messages came from tt_cross and named its argument, "tensor".
    matrix = np.arange(12.0).reshape(4, 3)
    with pytest.raises(TypeError, match="^input_tensor is"):
        tensor_train_cross(make(matrix), rank=2)


def test_dropin_refuses_an_empty_mode_by_its_argument_name():
    # Was: "shape[0]=0 must be >= 1", naming a "shape" the drop-in does not take.
    with pytest.raises(ValueError, match=r"input_tensor has shape \(0, 3\).*>= 1"):
        tensor_train_cross(np.zeros((0, 3)), rank=1)


def test_dropin_points_a_callable_to_tt_cross():
    # Was: "convert it with tl.tensor(...)", which a function cannot be.
    with pytest.raises(TypeError, match=r"input_tensor .*function.*tt_cross\(f, shape"):
        tensor_train_cross(lambda idx: idx.sum(axis=1), rank=1)


@pytest.mark.parametrize("decompose", [
    lambda tensor: tensor_train_cross(tensor, rank=2),
    lambda tensor: tlc.TensorTrainCross(rank=2).fit_transform(tensor),
], ids=["function", "estimator"])
def test_dropin_random_state_none_follows_numpys_global_seed(decompose):
    # TensorLy's None is NumPy's global RandomState (tl.check_random_state): code that calls
    # np.random.seed for reproducibility got different TTs from the drop-in (fresh entropy).
    tensor = np.random.default_rng(1).standard_normal((6, 7, 8))
    runs = []
    for _ in range(2):
        np.random.seed(0)  # noqa: NPY002 (the legacy global state is what is tested)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs.append(decompose(tensor))
    for first, second in zip(*runs, strict=True):
        np.testing.assert_array_equal(first, second)


# -- properties that hold (regression guards for the paths audited) -------------------------


@settings(max_examples=6)  # JAX compiles each new shape: about 1 s an example
@given(seed=seeds, extra=st.integers(0, 3))
def test_dropin_recovers_a_low_rank_tensor_on_every_backend(backend, seed, extra):
    # Ranks above the data's (and above the mode sizes, clipped) still give the tensor.
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 6, size=int(rng.integers(1, 5))))
    rank = [1] + [int(r) for r in rng.integers(1, 4, size=len(shape) - 1)] + [1]
    dense = _low_rank_tensor(shape, rank, seed)
    asked = [1] + [min(r + extra, int(np.prod(shape[k + 1:]))) for k, r in
                   enumerate(rank[1:-1])] + [1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt = tensor_train_cross(tl.tensor(dense), asked, random_state=seed)
    result = tl.to_numpy(tl.tt_to_tensor(tt))
    assert np.linalg.norm(result - dense) <= 1e-8 * max(np.linalg.norm(dense), 1e-300)


# -- decomposition.py -------------------------------------------------------------------


def _counting_tensor(shape, seed=0, noise=None):
    """A full-rank tensor (``noise``: a rank-2 tensor plus that much noise) behind a function
    that counts the entries it is asked for."""
    from tensorly_cross import FunctionTensor

    rng = np.random.default_rng(seed)
    dense = rng.standard_normal(shape)
    if noise is not None:
        low = np.einsum("ir,jr,kr->ijk", *(rng.standard_normal((n, 2)) for n in shape))
        dense = low + noise * dense
    asked = []

    def function(indices):
        asked.append(len(indices))
        return dense[tuple(np.asarray(indices).T)]

    return FunctionTensor(function, shape), asked


def _entries_asked(runs, noise=None):
    """Entries each run (name -> callable of the tensor) asks of a fresh counting tensor
    (20^3, NumPy backend, warnings silenced)."""
    import tensorly as tl

    counts = {}
    for name, run in runs.items():
        tensor, asked = _counting_tensor((20, 20, 20), noise=noise)
        with tl.backend_context("numpy"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run(tensor)
        counts[name] = sum(asked)
    return counts


# Mutant: ``n_iter_max`` passed on as the number of sweeps, not of sweep pairs (TensorLy's
# iteration is one left-to-right and one right-to-left pass).
def test_tensor_train_cross_iterations_are_pairs_of_sweeps():
    from tensorly_cross import tensor_train_cross, tt_cross

    counts = _entries_asked({
        "pairs": lambda t: tensor_train_cross(t, rank=2, tol=1e-12, n_iter_max=1,
                                              random_state=0),
        "two": lambda t: tt_cross(t, rank=2, tol=1e-12, method="als", n_iter_max=2,
                                  random_state=0, differentiable=True),
        "one": lambda t: tt_cross(t, rank=2, tol=1e-12, method="als", n_iter_max=1,
                                  random_state=0, differentiable=True)})
    assert counts["pairs"] == counts["two"] != counts["one"]


# Mutant: ``random_state=None`` drew fresh entropy instead of NumPy's global RandomState
# (TensorLy's None), so ``np.random.seed`` neither reproduced a run nor was consumed.
def test_tensor_train_cross_none_seed_is_numpys_global_random_state():
    from tensorly_cross import tensor_train_cross

    tensor = np.random.default_rng(3).standard_normal((5, 6, 4))
    runs, after = [], []
    for _ in range(2):
        np.random.seed(7)  # noqa: NPY002 (the legacy global state is what is tested)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs.append(tensor_train_cross(tensor, rank=2, n_iter_max=2))
        after.append(np.random.random())  # noqa: NPY002
    for first, second in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    np.random.seed(7)  # noqa: NPY002
    untouched = np.random.random()  # noqa: NPY002
    assert after[0] == after[1] != untouched  # the run drew from the global state


# Mutant: ``tol`` not passed on (the default 1e-4 used whatever was asked): a rank-2 tensor
# plus 1e-3 noise meets 1e-2 at once, never 1e-4.
def test_tensor_train_cross_stops_at_the_tol_it_is_given():
    from tensorly_cross import tensor_train_cross, tt_cross

    counts = _entries_asked({
        "given": lambda t: tensor_train_cross(t, rank=2, tol=1e-2, n_iter_max=5,
                                              random_state=0),
        "same": lambda t: tt_cross(t, rank=2, tol=1e-2, method="als", n_iter_max=10,
                                   random_state=0, differentiable=True),
        "default": lambda t: tt_cross(t, rank=2, tol=1e-4, method="als", n_iter_max=10,
                                      random_state=0, differentiable=True)}, noise=1e-3)
    assert counts["given"] == counts["same"] != counts["default"]


def test_dropin_has_tensorlys_signature_and_returns_its_cores():
    from tensorly.contrib.decomposition import tensor_train_cross as tensorly_cross

    assert (inspect.signature(tlc.tensor_train_cross)
            == inspect.signature(tensorly_cross))
    cores = random_tt_cores((4, 5, 6), (1, 2, 2, 1), 0)
    tensor = tl.tensor(tl.tt_to_tensor(cores))
    ours = tlc.tensor_train_cross(tensor, [1, 2, 2, 1], random_state=0)
    theirs = tensorly_cross(tensor, [1, 2, 2, 1], random_state=0)
    assert [tuple(core.shape) for core in ours] == [tuple(core.shape) for core in theirs]
    assert len(ours) == len(theirs) == 3
    for factors in (ours, theirs, list(ours)):
        np.testing.assert_allclose(tl.tt_to_tensor(factors), tensor, atol=1e-8)


def test_dropin_refuses_the_ranks_tensorly_refuses():
    from tensorly.contrib.decomposition import tensor_train_cross as tensorly_cross

    # TensorLy 0.9's own cross (our floor) runs forever on a rank its modes cannot hold.
    if tuple(int(part) for part in tl.__version__.split(".")[:2]) < (0, 10):
        pytest.skip(f"TensorLy {tl.__version__}'s tensor_train_cross never returns on them")
    tensor = tl.tensor(tl.tt_to_tensor(random_tt_cores((4, 5, 6), (1, 2, 2, 1), 0)))
    for bad in ([1, 2, 1], [2, 2, 2, 1], [1, 2, 7, 1]):  # TensorLy's refusals, as its own
        with pytest.raises(ValueError) as raised_theirs:
            tensorly_cross(tensor, bad, random_state=0)
        with pytest.raises(ValueError) as raised_ours:
            tlc.tensor_train_cross(tensor, bad, random_state=0)
        assert str(raised_ours.value).split()[:2] == str(raised_theirs.value).split()[:2]
