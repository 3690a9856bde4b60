"""Mutation audit (s25): properties of modules that earlier mutation rounds did not cover,
each written to kill a hand-made mutant that the existing tests let survive."""

import os

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross.cross.global_pivots import add_global_pivots
from tensorly_cross.cross.init import single_pivot_indices
from tensorly_cross.lazy.array import ArrayTensor

# --- global_pivots -------------------------------------------------------------------------

FEATURE_SHAPE = (8, 8, 8, 8)


def _corner_feature():
    """Zero but for the corner where every index is >= 4 (1/16 of the entries)."""
    dense = np.zeros(FEATURE_SHAPE)
    dense[4:, 4:, 4:, 4:] = 1.0
    return dense


def _zero_tt(shape):
    return [tl.zeros((1, n, 1)) for n in shape]


def _contains(block, row):
    return bool((block == np.asarray(row)).all(axis=1).any())


def test_global_pivots_join_every_index_set_and_keep_them_nested():
    indices = single_pivot_indices(FEATURE_SHAPE, (0, 0, 0, 0))
    added = add_global_pivots(ArrayTensor(_corner_feature()), indices,
                              _zero_tt(FEATURE_SHAPE), np.random.default_rng(0), abs_tol=0.5)
    # 200 probes, 1/16 of them in the corner: the default two pivots are found there.
    assert added == 2
    pivots = indices.left[-1]
    in_corner = [row for row in pivots if (row >= 4).all()]
    assert len(in_corner) == 2
    for k in range(1, indices.ndim):
        for row in indices.left[k]:  # left-nested: each prefix extends one of left[k - 1]
            assert _contains(indices.left[k - 1], row[:-1])
        for row in indices.right[k - 1]:  # right-nested likewise
            assert _contains(indices.right[k], row[1:])
    corner_pivot = indices.left[-1][-1]
    last = np.concatenate([corner_pivot, indices.right[-2][-1]])
    assert (last >= 4).all()
    for k in range(1, indices.ndim):
        assert _contains(indices.left[k], last[:k])
        assert _contains(indices.right[k - 1], last[k:])


def test_global_pivots_are_added_only_where_the_error_exceeds_the_tolerance():
    dense = 0.8 * _corner_feature()
    lazy = ArrayTensor(dense)
    for abs_tol, expected in ((0.7, 2), (0.9, 0)):
        indices = single_pivot_indices(FEATURE_SHAPE, (0, 0, 0, 0))
        added = add_global_pivots(lazy, indices, _zero_tt(FEATURE_SHAPE),
                                  np.random.default_rng(0), abs_tol=abs_tol)
        assert added == expected
        assert indices.left[-1].shape[0] == 1 + expected


# --- batched_search ------------------------------------------------------------------------


def test_batched_search_with_a_right_hint_takes_four_reads_on_a_rank_8_block():
    # The module's own figure: ranks 1, 8, a column and a row per round: 4 reads (6 when a
    # round was capped at twice the pivots found). A round that picked its pivots on
    # columns not cleared of the earlier pivots took more.
    from tensorly_cross.cross.prrlu import prrlu

    from .test_prrlu import cross_error, low_rank_block

    for seed in range(4):
        dense, cache, matrix = low_rank_block(40, 40, 8, seed)
        rows, cols = prrlu(matrix, 1e-10 * np.abs(dense).max(), 64,
                           np.random.default_rng(seed), "batched", rank_hint=8)
        assert len(rows) == 8 and cross_error(dense, rows, cols) < 1e-9
        assert cache.counters.calls == 4


def test_a_settled_bond_with_its_kept_pivots_takes_one_read():
    # The module's claim: where every kept pivot stays and the rank has settled, the column
    # read with the kept pivots' crosses ends the search, and the bond takes one read.
    from tensorly_cross.cross.prrlu import prrlu

    from .test_prrlu import cross_error, low_rank_block

    for seed in range(3):
        dense, _, matrix = low_rank_block(30, 30, 5, seed)
        cut = 1e-10 * np.abs(dense).max()
        kept = prrlu(matrix, cut, 64, np.random.default_rng(seed), "batched", rank_hint=5)
        dense, cache, matrix = low_rank_block(30, 30, 5, seed)  # the next sweep's bond
        rows, cols = prrlu(matrix, cut, 64, np.random.default_rng(seed + 1), "batched",
                           kept=kept, max_kept_growth=16.0, rank_hint=5)
        assert len(rows) == 5 and cross_error(dense, rows, cols) < 1e-9
        assert cache.counters.calls == 1


# --- handover ------------------------------------------------------------------------------


def _anatomical_callable():
    nibabel = pytest.importorskip("nibabel")
    from nibabel.testing import data_path

    image = nibabel.load(os.path.join(data_path, "anatomical.nii"))
    data = np.asarray(image.dataobj, dtype=np.float64)
    return data, lambda indices: data[tuple(np.asarray(indices).T)]


@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
def test_the_handover_holds_out_the_least_squares_sample_and_keeps_n_iter_max():
    data, function = _anatomical_callable()
    settings = dict(shape=data.shape, tol=0.1, max_rank=16, random_state=0, return_info=True)
    _, tci_info = tlc.tt_cross(function, method="tci", **settings)
    _, info = tlc.tt_cross(function, **settings)
    assert info.method == "tci+lsq"
    # The returned state's run held out the least-squares cross's own sample (4,000 at
    # least), not TCI's 1,000.
    assert info.n_heldout >= 4000 > tci_info.n_heldout
    # One sweep left after TCI's: the least-squares cross makes that one, no more.
    _, info = tlc.tt_cross(function, n_iter_max=tci_info.n_sweeps + 1, **settings)
    assert info.n_sweeps == tci_info.n_sweeps + 1 and info.stop_reason == "n_iter_max"


def test_a_tci_stall_at_a_small_error_still_hands_over():
    # TCI stalls at 3e-3 on a smooth function with noise 1e-3 (tol 1e-4): above round-off,
    # so the least-squares cross gets its turn, and comes closer.
    grid = np.linspace(0, 1, 24)
    x = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"))
    data = 1 / (1 + x.sum(0)) + 1e-3 * np.random.default_rng(0).standard_normal(x.shape[1:])

    def function(indices):
        return data[tuple(np.asarray(indices).T)]

    settings = dict(shape=data.shape, tol=1e-4, max_rank=8, random_state=0, return_info=True)
    with pytest.warns(tlc.ToleranceNotMetWarning):
        _, tci_info = tlc.tt_cross(function, method="tci", **settings)
    assert tci_info.stop_reason == "stalled" and 1e-3 < tci_info.val_error < 1e-2
    with pytest.warns(tlc.ToleranceNotMetWarning):
        _, info = tlc.tt_cross(function, **settings)
    assert info.method == "tci+lsq" and info.val_error < tci_info.val_error


# --- subnormal -----------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "scale"), [("complex128", 1e-315), ("float32", 2e-45),
                                              ("float64", 5e-324)])
def test_subnormal_values_are_warned_of_with_a_factor_that_makes_them_normal(dtype, scale):
    import re
    import warnings

    values = np.full((4, 5, 3), scale, dtype=dtype)
    if np.dtype(dtype).kind == "c":
        values = values * (1 + 1j)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tlc.tt_cross(tlc.lazy_tensor(values), rank=1, random_state=0)
    warned = [w for w in caught if issubclass(w.category, tlc.SubnormalValuesWarning)]
    assert len(warned) == 1 and warned[0].filename == __file__  # the caller's line
    factor = float(re.search(r"e\.g\. ([0-9.e+]+)\)", str(warned[0].message)).group(1))
    floats = np.finfo(dtype)
    # The suggested factor is a number of this dtype that makes the values normal.
    assert factor < float(floats.max)
    largest = float(np.abs(values).max())
    assert float(floats.smallest_normal) <= factor * largest < float(floats.max)


# --- progress ------------------------------------------------------------------------------


def test_the_progress_bar_counts_sweeps_out_of_n_iter_max_and_closes(capsys):
    from tensorly_cross import FunctionTensor

    def function(indices):
        return 1.0 / np.sum(1.0 + np.asarray(indices, dtype=float) / 63.0, axis=1)

    _, info = tlc.tt_cross(FunctionTensor(function, (64,) * 5), tol=1e-6, random_state=0,
                           n_iter_max=37, return_info=True, progress=True)
    shown = capsys.readouterr().err
    import re

    # One step a sweep, out of n_iter_max.
    assert [int(n) for n in re.findall(r"(\d+)/37", shown)][-1] == info.n_sweeps
    assert f"rank={max(info.ranks[-1])}," in shown  # the largest bond, not a boundary 1
    final = shown.rstrip("\n").split("\r")[-1]
    assert f"stop={info.stop_reason}" in final and shown.endswith("\n")  # closed


# --- block (its scaling of the pivot rows) -------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("scale", [1e-300, 1e-310, 1e300])
@pytest.mark.parametrize("settings", [dict(oversample=2.0), dict(method="block")])
def test_block_and_oversampled_crosses_recover_a_tt_at_any_scale(scale, settings):
    rng = np.random.default_rng(0)
    dense = tl.tt_to_tensor([rng.standard_normal(s) for s in [(1, 6, 3), (3, 7, 3), (3, 5, 1)]])
    if settings.get("method") == "block":
        dense = dense[..., None] * np.array([1.0, 2.0])
    tt = tlc.tt_cross(tlc.lazy_tensor(dense * scale), rank=3, random_state=0, tol=0.0,
                      n_iter_max=4, **settings)
    # Compared at unit scale: the TT's entries, divided back.
    approx = np.asarray(tl.tt_to_tensor([tl.to_numpy(core) for core in tt])) / scale
    assert np.linalg.norm(approx - dense) <= 1e-8 * np.linalg.norm(dense)


def test_block_sets_are_left_nested_after_a_cross():
    # The assembly interpolates on the left sets, nested since the first left-to-right half
    # sweep: the sets a block cross returns say so (and keep saying so through JSON).
    rng = np.random.default_rng(0)
    dense = tl.tt_to_tensor([rng.standard_normal(s) for s in [(1, 6, 3), (3, 7, 3), (3, 5, 1)]])
    dense = dense[..., None] * np.array([1.0, 2.0])
    indices = tlc.select_indices(tlc.lazy_tensor(dense), rank=3, method="block", tol=0.0,
                                 n_iter_max=2, random_state=0)
    assert indices.nested == "left"
    assert tlc.CrossIndices.from_json(indices.to_json()).nested == "left"


@pytest.mark.parametrize("settings", [dict(oversample=2.0), dict(method="block")])
def test_block_and_oversampled_crosses_recover_a_complex_tt(settings):
    rng = np.random.default_rng(1)
    shapes = [(1, 6, 3), (3, 7, 3), (3, 5, 1)]
    dense = tl.tt_to_tensor([rng.standard_normal(s) + 1j * rng.standard_normal(s)
                             for s in shapes])
    if settings.get("method") == "block":
        dense = dense[..., None] * np.array([1.0, 2.0 - 1.0j])
    tt = tlc.tt_cross(tlc.lazy_tensor(dense), rank=3, random_state=0, tol=0.0, n_iter_max=4,
                      **settings)
    approx = np.asarray(tl.tt_to_tensor([tl.to_numpy(core) for core in tt]))
    assert np.linalg.norm(approx - dense) <= 1e-8 * np.linalg.norm(dense)


def test_block_sets_of_several_channels_are_refused_for_a_tensor_without_them():
    rng = np.random.default_rng(0)
    dense = tl.tt_to_tensor([rng.standard_normal(s) for s in [(1, 6, 3), (3, 7, 3), (3, 5, 1)]])
    channels = dense[..., None] * np.array([1.0, 2.0])
    indices = tlc.select_indices(tlc.lazy_tensor(channels), rank=3, method="block", tol=0.0,
                                 n_iter_max=2, random_state=0)
    # Sets over the positions of a 2-channel tensor are not a one-channel view's.
    with pytest.raises(ValueError, match="indices are for shape"):
        tlc.cross_interpolate(tlc.lazy_tensor(dense), indices)


# --- missed --------------------------------------------------------------------------------


def _warnings_of(options, info):
    import warnings

    from tensorly_cross.cross.missed import warn_if_missed

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_missed(options, info)
    return [str(w.message) for w in caught if w.category is tlc.ToleranceNotMetWarning]


@pytest.mark.parametrize(("error", "stop", "tol", "expected"), [
    (float("nan"), "tol", 1e-3, "not met: held-out error nan"),  # NaN has met nothing
    (5e-4, "n_iter_max", 1e-3, "not met with confidence"),  # below tol, never passed
    (5e-4, "stalled", 1e-3, "not met with confidence"),
    (5e-4, "tol", 1e-3, None),  # passed
    (5e-2, "n_iter_max", 0.0, None),  # tol=0: no target to miss
])
def test_the_missed_tolerance_warning_cases(error, stop, tol, expected):
    from tensorly_cross.cross.stopping import CrossInfo
    from tensorly_cross.options import cross_options

    options = cross_options((8, 8, 8), tol=tol, method="tci")
    info = CrossInfo(method="tci", val_errors=[error], ranks=[(1, 3, 3, 1)], n_sweeps=1,
                     best_sweep=1, stop_reason=stop, n_heldout=500)
    messages = _warnings_of(options, info)
    if expected is None:
        assert messages == []
    else:
        assert len(messages) == 1 and expected in messages[0]


def test_a_one_entry_tensor_read_whole_is_not_warned_of():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tt, info = tlc.tt_cross(lambda indices: np.full(len(indices), 3.0), shape=(1, 1, 1),
                                tol=1e-6, return_info=True)
    assert not [w for w in caught if w.category is tlc.ToleranceNotMetWarning]
    assert np.isclose(float(np.asarray(tl.tt_to_tensor(list(tt))).ravel()[0]), 3.0)


# --- init ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
def test_tcis_start_probe_takes_at_most_a_tenth_of_a_small_budget():
    sizes = []

    def function(indices):
        sizes.append(len(indices))
        return 1.0 / (1.0 + np.asarray(indices).sum(axis=1))

    tlc.tt_cross(function, shape=(16,) * 4, val_size=0, max_evals=400, tol=1e-8,
                 method="tci", random_state=0)
    assert sizes[0] <= 40  # the start probe: 200 random entries, or a tenth of max_evals


@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
def test_tci_without_held_out_entries_starts_from_the_largest_probe():
    dense = _corner_feature()

    def function(indices):
        return dense[tuple(np.asarray(indices).T)]

    tt = tlc.tt_cross(function, shape=FEATURE_SHAPE, val_size=0, tol=1e-10, method="tci",
                      random_state=0)
    # A start in the zero background finds nothing to interpolate: the TT would be zero.
    approx = np.asarray(tl.tt_to_tensor([tl.to_numpy(core) for core in tt]))
    assert np.linalg.norm(approx - dense) <= 1e-8 * np.linalg.norm(dense)


@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
def test_tcis_start_pivot_is_not_held_out():
    data, function = _anatomical_callable()
    _, info = tlc.tt_cross(function, shape=data.shape, tol=0.1, max_rank=16, method="tci",
                           val_size=1000, random_state=0, return_info=True)
    assert info.n_heldout == 999  # the largest held-out entry became the start pivot


# --- slices --------------------------------------------------------------------------------


def test_in_few_slices_keeps_the_free_choice_or_rechooses_among_the_most_used_parents():
    from tensorly_cross.cross.slices import in_few_slices

    parents = np.array([0, 0, 0, 1, 1, 2, 2, 3])

    def choose(allowed):  # the free choice: rows 0, 1, 3, 5; among allowed ones: the first
        return np.array([0, 1, 3, 5]) if allowed is None else np.arange(2)

    free = np.array([0, 1, 3, 5])  # parents 0, 0, 1, 2
    assert in_few_slices(choose, parents, None).tolist() == free.tolist()
    # Without max_slices the free choice stands, though one parent would hold its rows.
    assert in_few_slices(lambda a: np.array([0, 3]) if a is None else np.arange(2),
                         parents, None).tolist() == [0, 3]
    assert in_few_slices(choose, parents, 3).tolist() == free.tolist()  # 3 parents: few enough
    # Two parents allowed: 0 (used twice) and the first of those used once (1).
    assert in_few_slices(lambda a: free if a is None else np.arange(4),
                         parents, 2).tolist() == [0, 1, 2, 3]
    # One parent: 0, the one used most; its three rows are fewer than the four to choose.
    assert in_few_slices(lambda a: free if a is None else np.arange(4),
                         parents, 1).tolist() == free.tolist()


def test_sliced_right_sets_of_a_rank_above_the_mode_size_extend_enough_parents():
    rng = np.random.default_rng(0)
    dense = tl.tt_to_tensor([rng.standard_normal(s)
                             for s in [(1, 4, 4), (4, 4, 6), (6, 4, 4), (4, 4, 1)]])
    tt = tlc.tt_cross(tlc.lazy_tensor(dense), rank=[1, 4, 6, 4, 1], max_slices=1, tol=1e-12,
                      random_state=0, n_iter_max=6)
    approx = np.asarray(tl.tt_to_tensor([tl.to_numpy(core) for core in tt]))
    assert np.linalg.norm(approx - dense) <= 1e-8 * np.linalg.norm(dense)


# --- confidence ----------------------------------------------------------------------------


def test_upper_bound_of_one_held_out_entry_is_the_error_without_numpy_warnings():
    import warnings

    from tensorly_cross.cross.confidence import upper_bound

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "degrees of freedom <= 0" from a spread of one
        assert upper_bound(0.5, np.array([0.3]), np.array([0.6])) == 0.5


def test_upper_bound_follows_halls_skewness_corrected_quantile():
    from tensorly_cross.cross.confidence import upper_bound

    residuals = np.array([0.1, 0.2, 0.1, 0.9, 0.3, 0.2, 0.1, 0.15])
    squares = (residuals / residuals.max()) ** 2
    n, z = squares.size, 1.645
    error = np.sqrt(np.mean(residuals**2))  # values' norm taken as known (weights 1)
    linear = squares - squares.mean()
    skew = np.mean(linear**3) / np.std(linear) ** 3
    quantile = z + skew * (2 * z**2 + 1) / (6 * np.sqrt(n))  # the module's formula
    upper = squares.mean() + quantile * np.std(linear, ddof=1) / np.sqrt(n)
    expected = error * np.sqrt(upper / squares.mean())
    assert np.isclose(upper_bound(error, residuals), expected, rtol=1e-12)


def test_upper_bound_is_never_below_the_error_however_skewed():
    from tensorly_cross.cross.confidence import upper_bound

    # One residual far below the others: a strong left skew, whose correction at a high
    # quantile (z = 3) would take the quantile below 0 unless it is floored there.
    residuals = np.ones(100)
    residuals[0] = 0.0
    error = float(np.sqrt(np.mean(residuals**2)))
    assert upper_bound(error, residuals, z=3.0) >= error


def test_residual_carriers_count_the_entries_that_carry_the_residual():
    from tensorly_cross.cross.confidence import residual_carriers

    assert np.isclose(residual_carriers(np.full(7, 0.3)), 7.0)
    assert np.isclose(residual_carriers(np.array([0.0, 2.0, 0.0, 0.0])), 1.0)
    assert np.isclose(residual_carriers(np.array([1.0, 1.0, 1e-9])), 2.0)
    assert residual_carriers(np.zeros(3)) == np.inf


def test_upper_bound_on_all_zero_values_treats_the_error_as_absolute():
    from tensorly_cross.cross.confidence import upper_bound

    residuals = np.array([0.1, 0.2, 0.1, 0.9, 0.3, 0.2, 0.1, 0.15])
    error = float(np.sqrt(np.mean(residuals**2)))
    bound = upper_bound(error, residuals, np.zeros(residuals.size))
    assert np.isfinite(bound) and bound == upper_bound(error, residuals)


def test_upper_bound_weighs_complex_values_by_their_moduli():
    from tensorly_cross.cross.confidence import upper_bound

    residuals = np.array([0.1, 0.2, 0.1, 0.9, 0.3, 0.2, 0.1, 0.15])
    values = np.array([5.0, 5.0, 5.0, 0.1, 5.0, 5.0, 5.0, 5.0])
    error = 0.2
    bound = upper_bound(error, residuals, values)
    assert bound != upper_bound(error, residuals)  # the values' spread counts
    for phase in (1j, np.exp(0.7j)):
        assert np.isclose(upper_bound(error, residuals * phase, values * phase), bound)


@pytest.mark.parametrize("max_slices", [None, 2])
def test_oversampled_right_sets_hold_oversample_times_their_bond_with_max_slices(max_slices):
    rng = np.random.default_rng(0)
    dense = tl.tt_to_tensor([rng.standard_normal(s)
                             for s in [(1, 6, 3), (3, 7, 3), (3, 8, 3), (3, 5, 1)]])
    indices = tlc.select_indices(tlc.lazy_tensor(dense), rank=3, method="als", oversample=2.0,
                                 tol=0.0, max_slices=max_slices, n_iter_max=3, random_state=0)
    # Six probes (2 x 3) wherever the positions to the right allow as many.
    assert [block.shape[0] for block in indices.right[:-1]] == [6, 6, 5]


# --- rounding ------------------------------------------------------------------------------


def _padded_tt():
    """An exact rank-(1, 2, 2, 2, 1) TT stored at ranks (1, 6, 6, 6, 1) (TT-SVD, no cut)."""
    from .strategies import random_tt_cores

    cores = random_tt_cores((6, 7, 6, 5), (1, 2, 2, 2, 1), 4)
    dense = tl.tt_to_tensor([tl.tensor(c) for c in cores])
    rng = np.random.default_rng(0)
    padded = []
    for k, core in enumerate(cores):  # pad every bond with zero directions, then mix them
        r_left, n, r_right = core.shape
        left, right = (1 if k == 0 else 6), (1 if k == len(cores) - 1 else 6)
        big = np.zeros((left, n, right))
        big[:r_left, :, :r_right] = core
        padded.append(big)
    for k in range(len(padded) - 1):  # an invertible mix on each bond keeps the tensor
        mix = rng.standard_normal((padded[k].shape[2],) * 2) + 3 * np.eye(padded[k].shape[2])
        padded[k] = np.einsum("anb,bc->anc", padded[k], mix)
        padded[k + 1] = np.einsum("cb,bnd->cnd", np.linalg.inv(mix), padded[k + 1])
    return [tl.tensor(c) for c in padded], dense


def test_rounding_cuts_every_bond_of_a_padded_tt_to_its_rank():
    from tensorly_cross.cross.rounding import round_cores

    cores, dense = _padded_tt()
    rounded = round_cores(cores, 1e-8)
    assert [int(tl.shape(c)[2]) for c in rounded] == [2, 2, 2, 1]
    error = np.linalg.norm(tl.to_numpy(tl.tt_to_tensor(rounded)) - tl.to_numpy(dense))
    assert error <= 1e-8 * np.linalg.norm(tl.to_numpy(dense))


def _halving_spectrum():
    """A 3-way tensor whose rank-one terms halve one by one (8 x 8 x 8)."""
    rng = np.random.default_rng(0)
    return sum(0.5**j * np.einsum("i,j,k->ijk", *[rng.standard_normal(8) for _ in range(3)])
               for j in range(7))


def test_rounding_keeps_the_relative_error_within_delta_over_all_bonds():
    from tensorly_cross.cross.rounding import round_cores

    dense = _halving_spectrum()
    cores = tl.decomposition.tensor_train(dense, [1, 8, 8, 1]).factors
    for delta in np.linspace(0.0, 1.0, 101):
        rounded = tl.tt_to_tensor(round_cores(cores, delta))
        assert np.linalg.norm(rounded - dense) <= (delta + 1e-12) * np.linalg.norm(dense)


@pytest.mark.parametrize("largest", [0.25, 0.5])
def test_rounding_to_a_tolerance_finds_the_threshold_a_fine_grid_finds(largest):
    from tensorly_cross.cross.rounding import round_cores, round_to_tolerance

    dense = _halving_spectrum()  # each threshold step drops a little more
    cores = tl.decomposition.tensor_train(dense, [1, 8, 8, 1]).factors

    def passes(candidate):
        return np.linalg.norm(tl.tt_to_tensor(candidate) - dense) <= 0.115 * np.linalg.norm(dense)

    def size(candidate):
        return sum(int(np.prod(tl.shape(c))) for c in candidate)

    best = min(size(round_cores(cores, t)) for t in np.linspace(0, largest, 401)
               if passes(round_cores(cores, t)))
    rounded = round_to_tolerance(cores, passes, largest)
    assert passes(rounded) and size(rounded) == best < size(cores)


def test_after_a_handover_the_val_size_hint_names_the_sample_the_returned_run_drew():
    # The least-squares cross draws max(val_size, 4000) held-out entries: its "not met with
    # confidence" warning named TCI's val_size (1000), and raising val_size to 2000, as that
    # suggested, would not have changed the sample.
    data, function = _anatomical_callable()
    settings = dict(shape=data.shape, tol=0.1, max_rank=16, random_state=0, return_info=True)
    with pytest.warns(tlc.ToleranceNotMetWarning):  # TCI stalls at 0.18
        _, tci_info = tlc.tt_cross(function, method="tci", **settings)
    with pytest.warns(tlc.ToleranceNotMetWarning, match="not met with confidence") as caught:
        _, info = tlc.tt_cross(function, n_iter_max=tci_info.n_sweeps + 1, **settings)
    assert info.method == "tci+lsq"
    message = str(caught[0].message)
    assert "val_size (now 4000" in message and "now 1000" not in message
