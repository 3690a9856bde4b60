"""Second audit of the cross engine and its options (session 14).

Each test failed before its fix.
"""

import numpy as np
import pytest

import tensorly_cross as tlc


def _smooth(indices):
    return np.sin(indices.sum(axis=1) / 7.0) + 1.5


# -- options.py: pivot_search is TCI's; other methods ignored it without a word -----------


@pytest.mark.parametrize("search", ["rook", "full", "auto", "batched"])
@pytest.mark.parametrize("method, rank", [("als", 2), ("block", 2), ("lsq", None)])
def test_pivot_search_other_than_column_is_refused_by_methods_without_pivot_search(
        method, rank, search):
    with pytest.raises(ValueError, match=f"pivot_search='{search}' applies to method='tci'"):
        tlc.tt_cross(_smooth, shape=(6, 6, 6), method=method, rank=rank,
                     pivot_search=search, random_state=0)


def test_pivot_search_is_refused_where_auto_chooses_the_least_squares_cross():
    stored = np.add.outer(np.arange(6.0), np.arange(6.0))
    with pytest.raises(ValueError, match="method='auto' chose it"):
        tlc.tt_cross(stored, pivot_search="full", random_state=0)


def test_an_unknown_pivot_search_is_named_as_such_whatever_the_method():
    with pytest.raises(ValueError, match="pivot_search must be one of"):
        tlc.tt_cross(_smooth, shape=(6, 6), method="als", rank=2, pivot_search="diagonal")


@pytest.mark.parametrize("search", ["column", "rook", "full", "auto", "batched"])
def test_every_pivot_search_still_runs_tci(search):
    tt = tlc.tt_cross(_smooth, shape=(6, 6, 6), tol=1e-10, pivot_search=search,
                      random_state=0)
    grid = np.indices((6, 6, 6)).reshape(3, -1).T
    np.testing.assert_allclose(tlc.tt_entries(tt, grid), _smooth(grid), rtol=1e-8)
