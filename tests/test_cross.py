"""tt_cross: exact recovery, interpolation, budgets, determinism, backends, edge cases."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import example, given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import CrossIndices, FunctionTensor, NonFiniteValueError

from .conftest import host
from .strategies import (
    random_tt_cores,
    relative_error_on_samples,
    seeds,
    tt_function,
    tt_problems,
)


@given(problem=tt_problems())
def test_fixed_rank_als_recovers_an_exact_rank_tt(backend, problem):
    shape, rank, seed = problem
    function = tt_function(random_tt_cores(shape, rank, seed))
    tt = tlc.tt_cross(FunctionTensor(function, shape), rank=list(rank), tol=1e-12,
                      random_state=seed)
    assert relative_error_on_samples(tt, function, shape, seed) < 1e-10


@given(problem=tt_problems(), search=st.sampled_from(["column", "rook", "full", "batched"]))
# Column search once took an ill-conditioned third pivot on a rank-3 block, and the round-off
# it left as a fourth (rank 4 at a bond of rank 3).
@example(problem=((17, 14, 6, 13, 15, 3), (1, 5, 4, 6, 3, 3, 1), 4294967294), search="column")
def test_adaptive_tci_recovers_an_exact_rank_tt_without_a_rank(backend, problem, search):
    shape, rank, seed = problem
    function = tt_function(random_tt_cores(shape, rank, seed))
    tt = tlc.tt_cross(FunctionTensor(function, shape), tol=1e-12, random_state=seed,
                      pivot_search=search)
    assert relative_error_on_samples(tt, function, shape, seed) < 1e-10
    assert all(found <= true for found, true in zip(tt.rank, rank, strict=True))


@given(shape=st.lists(st.integers(2, 5), min_size=2, max_size=4), rank=st.integers(1, 3),
       seed=seeds)
def test_als_interpolates_the_tensor_on_every_fiber(backend, shape, rank, seed):
    dense = np.random.default_rng(seed).standard_normal(shape)
    indices = tlc.select_indices(tl.tensor(dense), rank=rank, tol=0.0, n_iter_max=3,
                                 random_state=seed, method="als")
    tt = host(tl.tt_to_tensor(tlc.cross_interpolate(tl.tensor(dense), indices)))
    from tensorly_cross.cross.indices import fiber_indices

    for k, size in enumerate(shape):
        fibers = fiber_indices(indices.left[k], size, indices.right[k])
        np.testing.assert_allclose(tt[tuple(fibers.T)], dense[tuple(fibers.T)], atol=1e-9)


@given(problem=tt_problems(max_modes=5, max_size=8, max_rank=4),
       method=st.sampled_from(["als", "tci"]))
def test_numpy_and_pytorch_agree_on_indices_and_cores(problem, method):
    # The exact rank keeps every fiber block full-rank, so no pivot depends on rounding.
    pytest.importorskip("torch")
    shape, rank, seed = problem
    dense = tl.tt_to_tensor(random_tt_cores(shape, rank, seed))
    kwargs = dict(rank=list(rank) if method == "als" else None, method=method, tol=1e-12,
                  random_state=seed)
    results = {}
    for name in ("numpy", "pytorch"):
        with tl.backend_context(name):
            indices = tlc.select_indices(tl.tensor(dense), **kwargs)
            tt = tlc.cross_interpolate(tl.tensor(dense), indices)
            results[name] = indices, [host(core) for core in tt]
    (np_indices, np_cores), (pt_indices, pt_cores) = results["numpy"], results["pytorch"]
    assert np_indices.to_dict() == pt_indices.to_dict()
    for np_core, pt_core in zip(np_cores, pt_cores, strict=True):
        np.testing.assert_allclose(np_core, pt_core, atol=1e-9)


@given(budget=st.integers(1001, 6000), method=st.sampled_from(["als", "tci"]), seed=seeds)
def test_max_evals_is_never_exceeded(backend, budget, method, seed):
    grid = np.linspace(-1, 1, 24)
    function = FunctionTensor.on_grid(lambda x: np.exp(-np.sum(x**2, axis=1)) + x[:, 0] ** 3,
                                      [grid] * 5)
    try:
        _, info = tlc.tt_cross(function, rank=4 if method == "als" else None, method=method,
                               tol=1e-14, max_evals=budget, random_state=seed, return_info=True)
    except ValueError as error:  # budget below one sweep: refused, not exceeded
        assert "too small" in str(error)
        return
    assert info.n_evals <= budget
    assert info.stop_reason in ("max_evals", "tol", "n_iter_max")


def test_zero_tensor_gives_a_zero_tt(backend):
    for method, rank in (("tci", None), ("als", 3)):
        tt = tlc.tt_cross(tl.tensor(np.zeros((4, 5, 6))), rank=rank, method=method,
                          random_state=0)
        assert np.abs(host(tl.tt_to_tensor(tt))).max() == 0.0


def test_nan_entry_is_reported_with_its_multi_index(backend):
    dense = np.ones((6, 6, 6))
    dense[2, 3, 4] = np.nan
    with pytest.raises(NonFiniteValueError, match=r"\(2, 3, 4\)"):
        tlc.tt_cross(tl.tensor(dense), rank=6, method="als", random_state=0, val_size=0)


@given(seed=seeds, method=st.sampled_from(["als", "tci"]))
def test_same_seed_gives_the_same_result(backend, seed, method):
    grid = np.linspace(0, 1, 16)
    function = FunctionTensor.on_grid(lambda x: 1.0 / (1.0 + x.sum(axis=1)), [grid] * 4)
    kwargs = dict(rank=3 if method == "als" else None, method=method, tol=1e-8)
    first = tlc.tt_cross(function, random_state=seed, **kwargs)
    second = tlc.tt_cross(function, random_state=np.random.default_rng(seed), **kwargs)
    third = tlc.tt_cross(function, random_state=seed, **kwargs)
    for a, c in zip(first, third, strict=True):
        np.testing.assert_array_equal(host(a), host(c))
    assert len(second) == len(first)


def test_legacy_random_state_is_deterministic(backend):
    dense = tl.tensor(np.random.default_rng(0).standard_normal((5, 6, 7)))
    a = tlc.select_indices(dense, rank=2, random_state=np.random.RandomState(3))
    b = tlc.select_indices(dense, rank=2, random_state=np.random.RandomState(3))
    assert a.to_dict() == b.to_dict()


def test_info_reports_counts_and_stop_reason(backend):
    grid = np.linspace(0, 1, 32)
    function = FunctionTensor.on_grid(lambda x: np.sin(x.sum(axis=1)), [grid] * 6)
    tt, info = tlc.tt_cross(function, tol=1e-10, random_state=0, return_info=True)
    assert info.stop_reason == "tol" and info.val_error <= 1e-10
    assert info.n_requested == info.n_evals + info.n_cached
    assert info.n_evals == info.evals_per_sweep[-1] and info.n_sweeps == len(info.ranks)
    assert tt.rank == (1, 2, 2, 2, 2, 2, 1)
    assert 0 < info.function_seconds <= info.total_seconds


def test_callback_stops_the_sweeps(backend):
    dense = tl.tensor(np.random.default_rng(0).standard_normal((6, 6, 6)))
    seen = []

    def stop_after_two(tt, info):
        seen.append(info.n_sweeps)
        return info.n_sweeps == 2

    _, info = tlc.tt_cross(dense, rank=2, tol=0.0, callback=stop_after_two, random_state=0,
                           return_info=True)
    assert seen == [1, 2] and info.stop_reason == "callback"


def test_a_callback_answer_that_is_not_a_bool_is_refused(backend):
    dense = tl.tensor(np.random.default_rng(0).standard_normal((6, 6, 6)))
    _, info = tlc.tt_cross(dense, rank=2, callback=lambda tt, info: np.bool_(True),
                           random_state=0, return_info=True)
    assert info.stop_reason == "callback"
    with pytest.raises(TypeError, match="callback must return True"):
        tlc.tt_cross(dense, rank=2, callback=lambda tt, info: np.array([1, 0]), random_state=0)


def test_n_iter_max_bounds_the_sweeps(backend):
    dense = tl.tensor(np.random.default_rng(0).standard_normal((6, 6, 6)))
    _, info = tlc.tt_cross(dense, rank=2, tol=0.0, n_iter_max=3, random_state=0,
                           return_info=True, patience=None)
    assert info.n_sweeps == 3 and info.stop_reason == "n_iter_max"


@given(seed=seeds, patience=st.integers(1, 3), method=st.sampled_from(["als", "tci"]))
def test_stalled_sweeps_stop_and_the_best_sweep_is_returned(backend, seed, patience, method):
    dense = tl.tensor(np.random.default_rng(seed).standard_normal((7, 7, 7, 7)))
    seen = []

    def keep(tt, info):
        seen.append([host(core) for core in tt])
        return False

    tt, info = tlc.tt_cross(dense, rank=2 if method == "als" else None, method=method,
                            max_rank=3, tol=0.0, n_iter_max=100, patience=patience,
                            callback=keep, random_state=seed, return_info=True)
    # A missed tolerance may end with a least-squares refinement: one more entry, after the
    # sweeps, kept only when it lowers the held-out error.
    swept = len(seen)
    errors, all_ranks = info.val_errors[:swept], info.ranks[:swept]
    assert info.stop_reason == "stalled" and swept < 100
    reference = min(errors[: -patience])
    assert all(error >= 0.99 * reference for error in errors[-patience:])
    ranks = all_ranks[-patience - 1 :]  # and no rank changed in those sweeps
    assert all(rank == ranks[0] for rank in ranks)
    if info.refined:
        assert info.n_sweeps == swept + 1 and info.best_sweep == info.n_sweeps
        assert info.val_error < 0.99 * min(errors[1:])
        return
    if info.n_sweeps > 1:  # the first sweep is never returned: its right sets are random
        assert info.best_sweep > 1 and info.val_error == min(errors[1:])
    for returned, kept in zip(tt, seen[info.best_sweep - 1], strict=True):
        np.testing.assert_array_equal(host(returned), kept)


def test_patience_is_validated(backend):
    with pytest.raises(ValueError, match="patience must be >= 1"):
        tlc.tt_cross(tl.tensor(np.ones((3, 3))), rank=1, patience=0)


def test_too_large_rank_is_clipped_with_a_warning(backend):
    dense = tl.tensor(np.random.default_rng(0).standard_normal((2, 3, 4)))
    with pytest.warns(UserWarning, match=r"rank\[1\]=5 exceeds"):
        tt = tlc.tt_cross(dense, rank=5, random_state=0)
    assert tt.rank == (1, 2, 4, 1)


def test_indices_round_trip_through_json_and_rebuild_the_same_tt(backend):
    dense = tl.tensor(np.random.default_rng(0).standard_normal((4, 5, 6, 3)))
    indices = tlc.select_indices(dense, rank=3, random_state=0)
    restored = CrossIndices.from_json(indices.to_json())
    a = host(tl.tt_to_tensor(tlc.cross_interpolate(dense, indices)))
    b = host(tl.tt_to_tensor(tlc.cross_interpolate(dense, restored)))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(method="svd"), ValueError, "method must be one of"),
        (dict(method="als"), ValueError, "rank is required"),
        (dict(max_evals=20, val_size=1000), ValueError,  # 27 entries: 100 would do
         "max_evals=20 must exceed val_size=1000, which read all 27 entries"),
        (dict(tol=-1.0), ValueError, "tol must be >= 0"),
        (dict(n_iter_max=0), ValueError, "n_iter_max must be >= 1"),
        (dict(pivot_search="diagonal"), ValueError, "pivot_search must be one of"),
        (dict(rank=[1, 2, 1]), ValueError, "rank must have 4 entries"),
        (dict(random_state="seed"), TypeError, "random_state must be"),
    ],
)
def test_invalid_arguments_are_named(backend, kwargs, error, message):
    dense = tl.tensor(np.ones((3, 3, 3)))
    with pytest.raises(error, match=message):
        tlc.tt_cross(dense, **kwargs)


def test_cross_interpolate_rejects_mismatched_indices(backend):
    dense = tl.tensor(np.ones((3, 3, 3)))
    indices = tlc.select_indices(dense, rank=1, random_state=0)
    with pytest.raises(ValueError, match="indices are for shape"):
        tlc.cross_interpolate(tl.tensor(np.ones((3, 3, 4))), indices)
    broken = indices.to_dict()
    broken["left"][1] = [[7]]
    with pytest.raises(ValueError, match="out of range"):
        CrossIndices.from_dict(broken)


@given(seed=st.integers(0, 50))
def test_tci_finds_a_distant_narrow_feature_through_global_pivots(seed):
    grid = np.linspace(0, 1, 32)
    near, far = np.full(5, 0.2), np.array([0.8, 0.7, 0.8, 0.75, 0.8])

    def function(x):
        return (np.exp(-np.sum((x - near) ** 2, axis=1) / 0.02)
                + 0.5 * np.exp(-np.sum((x - far) ** 2, axis=1) / 0.01))

    tensor = FunctionTensor.on_grid(function, [grid] * 5)
    tt = tlc.tt_cross(tensor, tol=1e-8, random_state=seed)
    around_far = np.clip(np.round(far * 31).astype(int)
                         + np.random.default_rng(seed).integers(-3, 4, size=(500, 5)), 0, 31)
    exact = function(grid[around_far])
    approx = host(tlc.tt_entries(tt, around_far))
    assert np.linalg.norm(approx - exact) / np.linalg.norm(exact) < 1e-6


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["right"].__setitem__(0, [d["right"][0][0]] * 3), "holds a multi-index twice"),
    (lambda d: d["left"].__setitem__(1, [d["left"][1][0]] * 3), "holds a multi-index twice"),
    (lambda d: d.pop("right"), "missing: \\['right'\\]"),
    (lambda d: d.__setitem__("shape", [8, 9.5, 10]), "integers >= 1"),
    (lambda d: d.__setitem__("shape", [8, 0, 10]), "integers >= 1"),
])
def test_edited_index_sets_are_refused_not_interpolated_through(edit, message):
    # A duplicated pivot made the pivot block singular: rank (1, 3, 3, 1) with 35% error.
    dense = np.random.default_rng(0).standard_normal((8, 9, 10))
    data = tlc.select_indices(dense, rank=3, method="als", random_state=0).to_dict()
    edit(data)
    with pytest.raises(ValueError, match=message):
        tlc.cross_interpolate(dense, data)


def test_least_squares_ranks_must_be_positive_with_unit_boundaries():
    dense = np.random.default_rng(0).standard_normal((8, 9, 10))
    data = tlc.select_indices(dense, rank=2, method="lsq", random_state=0).to_dict()
    for ranks in ([1, 0, 2, 1], [3, 2, 2, 3]):
        with pytest.raises(ValueError, match="ranks must be positive"):
            CrossIndices.from_dict({**data, "ranks": ranks})


def test_index_sets_of_no_mode_are_refused_by_name():
    # from_dict({"shape": [], ...}) failed with an IndexError (left[0] of no sets).
    for data in ({"shape": [], "left": [], "right": []},
                 {"shape": [], "left": [[[]]], "right": [[[]]]}):
        with pytest.raises(ValueError, match="'shape' must have at least one mode"):
            CrossIndices.from_dict(data)


@pytest.mark.parametrize(("change", "message"), [
    (dict(shape=(4.0, 5.0, 6.0)), r"indices.shape must hold integers, got 4.0"),
    (dict(ranks=(1, 1.5, 1, 1)), r"indices.ranks must hold integers, got 1.5"),
    (dict(shape=(4, 5), block=6.0), r"indices.block must hold integers, got 6.0"),
    (dict(shape=(4, 5), block="6"), r"indices.block must hold integers, got '6'"),
    (dict(shape=4), r"indices.shape must be a tuple of ints"),
])
def test_hand_built_index_sets_with_sizes_that_are_not_integers_are_named(change, message):
    # A float shape failed in NumPy's reshape, a float rank in a slice ("slice indices
    # must be integers"), a string block in a comparison: none named the attribute.
    dense = np.einsum("i,j,k->ijk", np.arange(1.0, 5.0), np.arange(1.0, 6.0),
                      np.arange(1.0, 7.0))
    indices = tlc.select_indices(dense, rank=1, method="als", random_state=0)
    fields = dict(shape=indices.shape, left=indices.left, right=indices.right,
                  nested=indices.nested)
    if "block" in change:
        fields.update(left=indices.left[:2], right=[indices.right[0][:, :1],
                                                    indices.right[2]])
    fields.update(change)
    with pytest.raises(TypeError, match=message):
        tlc.cross_interpolate(dense, CrossIndices(**fields))


def test_uint64_index_sets_are_refused_by_name_not_as_float64():
    # uint64 joined to int64 columns promotes to float64: the refusal said "indices must
    # be integers, got dtype float64", a dtype none of the sets had.
    dense = np.einsum("i,j,k->ijk", np.arange(1.0, 5.0), np.arange(1.0, 6.0),
                      np.arange(1.0, 7.0))
    indices = tlc.select_indices(dense, rank=1, method="als", random_state=0)
    unsigned = CrossIndices(indices.shape, [b.astype(np.uint64) for b in indices.left],
                            [b.astype(np.uint64) for b in indices.right], indices.nested)
    with pytest.raises(TypeError, match=r"indices.left\[0\] .*casts safely to int64.* "
                                        r"uint64"):
        tlc.cross_interpolate(dense, unsigned)
    narrow = CrossIndices(indices.shape, [b.astype(np.uint32) for b in indices.left],
                          [b.astype(np.uint32) for b in indices.right], indices.nested)
    np.testing.assert_allclose(tlc.tt_entries(tlc.cross_interpolate(dense, narrow),
                                              [[3, 4, 5]]), [120.0])


def test_hand_built_index_sets_of_numpy_integers_serialise_to_json():
    # to_json failed with json's "Object of type int64 is not JSON serializable".
    dense = np.einsum("i,j,k->ijk", np.arange(1.0, 5.0), np.arange(1.0, 6.0),
                      np.arange(1.0, 7.0))
    indices = tlc.select_indices(dense, rank=1, method="lsq", random_state=0)
    hand = CrossIndices(np.array(indices.shape), indices.left, indices.right,
                        indices.nested, ranks=tuple(np.array(indices.ranks)))
    restored = CrossIndices.from_json(hand.to_json())
    assert restored.tensor_shape == (4, 5, 6) and restored.rank == indices.rank
    block = tlc.select_indices(dense, rank=1, method="block", random_state=0)
    block.block = np.int64(block.block)
    assert CrossIndices.from_json(block.to_json()).block == 6
