"""Audit s30 of the cross engine and the drop-in API: differential and property tests.

The first tests failed before their fix; the property tests hold the engine to what its
docs promise (exact recovery, budgets counted by the function itself, interpolation on
nested sets, maxvol dominance, the drop-in's TensorLy signature and estimator protocol).
"""

import functools
import inspect
import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc

from .strategies import matrix_with_condition, random_tt_cores, tt_function, tt_problems


def energy_of_state(indices):
    """A function whose values are one short: a user's off-by-one."""
    return 1.0 / (1.0 + indices.sum(axis=1))[:-1]


class Model:
    def __call__(self, indices):
        return np.ones((indices.shape[0], 2))  # a column too many

    def predict(self, indices):
        return np.where(indices[:, 0] == 2, np.nan, 1.0)


@pytest.mark.parametrize("function, name, error", [
    (energy_of_state, "energy_of_state", ValueError),
    (Model(), "Model", ValueError),
    (Model().predict, "Model.predict", tlc.NonFiniteValueError),
    (functools.partial(lambda indices, scale: scale * indices[:, :1], scale=2.0), "<lambda>",
     ValueError),
])
def test_a_functions_bad_values_are_refused_naming_the_function(function, name, error):
    # "FunctionTensor returned values of shape (96,) for 97 multi-indices": the message
    # named the wrapper tt_cross made, never the function the caller passed, so a run over
    # several functions (a pipeline, a model's methods) did not say which one was wrong.
    with pytest.raises(error, match=f"FunctionTensor of {name} returned") as raised:
        tlc.tt_cross(function, shape=(4, 5, 6), random_state=0)
    assert "FunctionTensor" in str(raised.value)


def test_a_grid_functions_bad_values_name_the_users_function_not_the_grid_wrapper():
    def potential(points):
        return np.where(points[:, 0] > 0.5, np.inf, points.sum(axis=1))

    grid = np.linspace(0.0, 1.0, 6)
    tensor = tlc.FunctionTensor.on_grid(potential, [grid, grid])
    with pytest.raises(tlc.NonFiniteValueError, match="FunctionTensor of potential returned inf"):
        tlc.tt_cross(tensor, random_state=0)


@pytest.mark.parametrize("chunks", [{"chunk_size": 7}, {"executor": "threads"}])
def test_a_chunked_functions_wrong_shape_names_the_function(chunks):
    # In chunks (serially or on an executor) the message said "the function returned
    # values of shape (8,) for a chunk of 7 multi-indices", which function unsaid.
    from concurrent.futures import ThreadPoolExecutor

    def energy_of_state(indices):
        return np.ones(indices.shape[0] + 1)

    with ThreadPoolExecutor(2) as pool:
        options = {"executor": pool} if "executor" in chunks else chunks
        tensor = tlc.FunctionTensor(energy_of_state, (4, 5, 6), **options)
        with pytest.raises(ValueError, match="function energy_of_state returned values of "
                                             r"shape \(\d+,\) for a chunk"):
            tlc.tt_cross(tensor, random_state=0)



def test_a_tttensor_with_a_nan_core_is_named_as_a_tt_not_by_an_internal_class():
    # Its entries are read through a FunctionTensor of a private wrapper: naming the
    # function must not show that wrapper's class ("FunctionTensor of _TTEntries").
    from tensorly.tt_tensor import TTTensor

    cores = [np.ones((1, 3, 2)), np.ones((2, 4, 1))]
    cores[1][0, 2, 0] = np.nan
    with pytest.raises(tlc.NonFiniteValueError, match="TTTensor's entries returned nan") as raised:
        tlc.tt_cross(TTTensor(cores), random_state=0)
    assert "_TTEntries" not in str(raised.value)

# Every method and pivot search, as tt_cross takes them (rank filled in per problem).
CONFIGS = [{"method": "tci", "pivot_search": search}
           for search in ("column", "rook", "full", "auto", "batched")] + [
    {"method": "als"}, {"method": "lsq"}, {"method": "lsq", "rank": None}, {"method": "block"},
    {"method": "als", "oversample": 2.0}, {"method": "auto"}]
CONFIG_IDS = ["-".join(str(value) for value in config.values()) for config in CONFIGS]


def _with_rank(config, rank):
    """``config`` with the problem's largest rank where the method fixes one."""
    config = dict(config)
    if config.get("rank", 0) is None:
        del config["rank"]  # the rank-adaptive least-squares cross
    elif config["method"] in ("als", "block") or (config["method"] == "lsq"):
        config["rank"] = max(rank)
    return config


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@settings(max_examples=6)
@given(problem=tt_problems(max_modes=4, max_size=6, max_rank=3))
def test_every_method_recovers_an_exact_tt_through_a_function_and_an_array(config, problem):
    shape, rank, seed = problem
    cores = random_tt_cores(shape, rank, seed)
    dense = tl.tt_to_tensor(cores)
    config = _with_rank(config, rank)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a fixed rank clipped at a small mode
        for tensor in (tt_function(cores), dense):
            tt = tlc.tt_cross(tensor, shape=shape if callable(tensor) else None, tol=1e-12,
                              random_state=seed % 2**31, **config)
            error = np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)
            assert error < 1e-8


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@settings(max_examples=5)
@given(shape=st.lists(st.integers(1, 9), min_size=2, max_size=4).map(tuple),
       val_size=st.integers(0, 40), extra=st.integers(1, 400), n_iter_max=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_budgets_and_counts_are_those_of_the_function_itself(config, shape, val_size, extra,
                                                               n_iter_max, seed):
    # Counted here, by the function: distinct entries never above max_evals, and the
    # report's n_evals, n_calls and n_requested - n_cached are what it was asked.
    weights = np.random.default_rng(seed).standard_normal(len(shape))
    seen, calls = set(), [0]

    def function(indices):
        calls[0] += 1
        seen.update(map(tuple, indices.tolist()))
        return np.sin(indices @ weights / 3.0) + 1.0 / (1.0 + indices.sum(axis=1))

    max_evals = val_size + extra
    config = _with_rank(config, (1, 3, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, info = tlc.tt_cross(function, shape=shape, tol=0.0, max_evals=max_evals,
                                   val_size=val_size, n_iter_max=n_iter_max,
                                   random_state=seed, return_info=True, **config)
        except ValueError as error:  # a budget too small for the first sweep, by name
            assert "max_evals" in str(error)
            assert len(seen) <= max_evals
            return
    assert len(seen) <= max_evals
    assert info.n_evals == len(seen)
    assert info.n_calls == calls[0]
    assert info.n_requested - info.n_cached == info.n_evals
    # A handover to the least-squares cross counts its sweeps in the same n_iter_max.
    assert info.n_sweeps <= n_iter_max + info.refined


def _nested(sets, prefix):
    """Whether every multi-index of ``sets[k + 1]`` extends one of ``sets[k]`` (``prefix``:
    the part that should be found in the neighbouring set)."""
    return all({tuple(row) for row in sets[k]} >= {tuple(prefix(row)) for row in sets[k + 1]}
               for k in range(len(sets) - 1))


@pytest.mark.parametrize("search", ["column", "rook", "full", "batched", "als"])
@settings(max_examples=8)
@given(shape=st.lists(st.integers(1, 7), min_size=2, max_size=4).map(tuple),
       cap=st.integers(1, 3), n_iter_max=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_sets_nested_both_ways_are_interpolated_on_every_fiber(search, shape, cap, n_iter_max,
                                                                seed):
    # cross_interpolate's promise: on full-rank data (so no approximation can be exact),
    # the TT equals the tensor on every fiber A[left[k], :, right[k]] once both families
    # of sets are nested.
    data = np.random.default_rng(seed).standard_normal(shape)
    config = ({"method": "als", "rank": cap} if search == "als"
              else {"method": "tci", "pivot_search": search, "rank": cap})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        indices = tlc.select_indices(data, tol=1e-3, n_iter_max=n_iter_max, random_state=seed,
                                     **config)
    left_nested = _nested(indices.left, lambda row: row[:-1])
    right_nested = _nested(indices.right[::-1], lambda row: row[1:])
    if not (left_nested and right_nested):
        return
    full = tl.tt_to_tensor(tlc.cross_interpolate(data, indices))
    for k, size in enumerate(shape):
        left, right = indices.left[k], indices.right[k]
        rows = np.array([[*a, i, *b] for a in left for i in range(size) for b in right],
                        dtype=np.int64).reshape(-1, len(shape))
        np.testing.assert_allclose(full[tuple(rows.T)], data[tuple(rows.T)], atol=1e-9)


@settings(max_examples=40)
@given(n_cols=st.integers(1, 8), extra_rows=st.integers(0, 60),
       log_condition=st.floats(0, 4), deficiency=st.integers(0, 2),
       dtype=st.sampled_from([np.float32, np.float64]), tol=st.sampled_from([1.01, 1.05, 1.5]),
       seed=st.integers(0, 2**16))
def test_maxvol_and_rect_maxvol_bounds_hold_or_the_deficiency_is_warned(
        n_cols, extra_rows, log_condition, deficiency, dtype, tol, seed):
    matrix = matrix_with_condition((n_cols + extra_rows, n_cols), log_condition, seed)
    if deficiency and n_cols > deficiency:  # exact rank n_cols - deficiency
        matrix[:, :deficiency] = matrix[:, deficiency:2 * deficiency] if (
            2 * deficiency <= n_cols) else 0.0
    matrix = matrix.astype(dtype)
    eps = np.finfo(dtype).eps
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, coefficients = tlc.maxvol(matrix, tol=tol)
        wide_rows, wide = tlc.rect_maxvol(matrix, tol=tol)
    warned = any(issubclass(w.category, tlc.RankDeficiencyWarning) for w in caught)
    assert len(set(rows.tolist())) == n_cols
    assert len(set(wide_rows.tolist())) == len(wide_rows) >= n_cols
    assert np.isfinite(coefficients).all() and np.isfinite(wide).all()
    # Both reproduce the matrix from their rows, deficient or not.
    scale = np.abs(matrix).max()
    for chosen, weights in ((rows, coefficients), (wide_rows, wide)):
        residual = np.abs(weights.astype(np.float64) @ matrix[chosen].astype(np.float64)
                          - matrix).max()
        assert residual <= 1e4 * eps * scale * 10**log_condition
    if warned:
        return
    assert np.abs(coefficients).max() <= tol * (1 + 100 * eps)
    np.testing.assert_allclose(coefficients[rows], np.eye(n_cols), atol=1e3 * eps)
    if len(wide_rows) < matrix.shape[0]:  # stopped by its bound, not by running out of rows
        assert np.linalg.norm(wide.astype(np.float64), axis=1).max() <= tol * (1 + 100 * eps)


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


def test_the_estimator_clones_fits_and_refits_as_scikit_learn_expects():
    base = pytest.importorskip("sklearn.base")
    estimator = tlc.TensorTrainCross(rank=[1, 2, 2, 1], tol=1e-6, random_state=3)
    tensor = tl.tt_to_tensor(random_tt_cores((4, 5, 6), (1, 2, 2, 1), 1))
    assert estimator.fit(tensor) is estimator
    twin = base.clone(estimator)
    assert twin.get_params() == estimator.get_params()
    assert not hasattr(twin, "decomposition_")  # a clone is unfitted
    factors = twin.fit_transform(tensor)
    assert factors is twin.decomposition_
    np.testing.assert_allclose(tl.tt_to_tensor(factors), estimator.to_tensor())
    np.testing.assert_allclose(twin.to_tensor(), tensor, atol=1e-8)
    twin.set_params(rank=[1, 1, 1, 1])
    assert twin.fit(tensor).decomposition_.rank == (1, 1, 1, 1)
    with pytest.raises(RuntimeError, match="not fitted"):
        tlc.TensorTrainCross(rank=2).to_tensor()
