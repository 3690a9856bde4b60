"""Audit session 31, review of the shrinking of data near the top of its dtype
(``ShrunkTensor``): what the user is told about data the cross read scaled."""

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.errors import UnseenStructureWarning

from .test_reliability import HiddenSpike

BIG = 2.0**700  # beyond 2**512: the cross reads such data scaled to 1


def test_an_unseen_structure_warning_names_the_moduli_of_the_data_as_they_are():
    # Data at 2**700 is crossed scaled near 1; the warning named the scaled moduli
    # ("an entry of modulus 100, 201x the largest held-out one (0.5)").
    spike = HiddenSpike(200.0)
    with pytest.warns(UnseenStructureWarning) as record:
        tlc.tt_cross(lambda indices: spike(indices) * BIG, shape=(30, 30, 30), random_state=0)
    (message,) = [str(item.message) for item in record
                  if item.category is UnseenStructureWarning]
    assert f"an entry of modulus {201 * BIG:.3g}, 201x" in message
    assert f"largest held-out one ({BIG:.3g})" in message


def test_the_least_squares_overflow_error_names_the_moduli_of_the_data_as_they_are():
    from tensorly_cross.cross.lsq import _refuse_overflow
    from tensorly_cross.cross.scaling import ShrunkTensor
    from tensorly_cross.lazy.cache import EvaluationCache

    # The cache of a cross reads through the shrinking: 2**1020 is held as 0.5.
    cache = EvaluationCache(ShrunkTensor(tlc.lazy_tensor(np.full((3, 4), 2.0**1020))))
    cache.evaluate(np.array([[0, 0], [1, 2]]))
    with pytest.raises(OverflowError, match=r"moduli up to 1\.12e\+307"):
        _refuse_overflow([np.ones((1, 3, 2)), np.full((2, 4, 1), np.nan)], cache)
