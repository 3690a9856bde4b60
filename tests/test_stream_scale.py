"""streaming_tt_svd is scale-invariant: a volume times ``s`` gives ``s`` times the TT.

Sums of squares of values near ``1e-200`` underflow and near ``1e160`` overflow; the blocks
are scaled by powers of two before any sum, so ranks and errors do not depend on ``s``.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorly_cross.stream import streaming_tt_svd

from .strategies import seeds
from .test_dask import loopback_cluster

# Width 8 may leave a projection error just above tol=1e-3 (a warning); invariance holds anyway.
pytestmark = pytest.mark.filterwarnings("ignore:relative error .* > tol:UserWarning")

# Whole volume in one block (no sketch pass), or sketched modes and many small blocks.
VARIANTS = {"whole": {}, "sketched": {"max_width": 8, "block_bytes": 4096}}


def _noisy_rank_3(seed, shape=(14, 12, 10), noise=1e-3):
    rng = np.random.default_rng(seed)
    factors = [rng.standard_normal((n, 3)) for n in shape]
    return np.einsum("ir,jr,kr->ijk", *factors) + noise * rng.standard_normal(shape)


def _true_error(tt, dense, scale):
    """``||tt / scale - dense|| / ||dense||``, dividing before any square (no overflow)."""
    return float(np.linalg.norm(np.asarray(tt.to_tensor()) / scale - dense)
                 / np.linalg.norm(dense))


@settings(max_examples=20)
@given(exponent=st.integers(-300, 300), seed=seeds, variant=st.sampled_from(sorted(VARIANTS)))
def test_a_scaled_volume_gives_the_scaled_tt(exponent, seed, variant):
    dense, scale = _noisy_rank_3(seed), 10.0**exponent
    options = dict(VARIANTS[variant], tol=1e-3, random_state=0, return_info=True)
    reference, reference_info = streaming_tt_svd(dense, **options)
    tt, info = streaming_tt_svd(dense * scale, **options)
    assert tt.rank == reference.rank
    assert abs(info.error - reference_info.error) <= 1e-8
    np.testing.assert_allclose(info.error, _true_error(tt, dense, scale), rtol=1e-6)
    np.testing.assert_allclose(_true_error(tt, dense, scale),
                               _true_error(reference, dense, 1.0), atol=1e-8)


@pytest.mark.parametrize("exponent", [-1000, 1000])
def test_a_power_of_two_scale_gives_the_same_error_bitwise(exponent):
    dense = _noisy_rank_3(1)
    _, reference = streaming_tt_svd(dense, tol=1e-3, return_info=True)
    tt, info = streaming_tt_svd(np.ldexp(dense, exponent), tol=1e-3, return_info=True)
    assert info.error == reference.error and info.ranks == reference.ranks
    assert np.isfinite(np.asarray(tt.to_tensor())).all()


def test_blocks_of_far_apart_magnitudes_keep_the_true_error():
    # The first slab alone would set a scale at which the others' squares overflow.
    dense = _noisy_rank_3(2)
    volume = dense * 1e250
    volume[0] *= 1e-550
    tt, info = streaming_tt_svd(volume, tol=1e-3, block_bytes=12 * 10 * 8, return_info=True)
    true = np.linalg.norm(np.asarray(tt.to_tensor()) / 1e250 - volume / 1e250) / \
        np.linalg.norm(volume / 1e250)
    assert np.isfinite(info.error)
    np.testing.assert_allclose(info.error, true, rtol=1e-6)


def test_a_volume_near_the_float64_limit_is_represented():
    volume = np.full((30, 20, 10), 1.7e308)
    tt, info = streaming_tt_svd(volume, tol=1e-6, return_info=True)
    assert tt.rank == (1, 1, 1, 1) and info.error < 1e-6
    np.testing.assert_allclose(np.asarray(tt.to_tensor()), volume, rtol=1e-12)


def test_an_all_zero_volume_gives_a_zero_tt():
    tt, info = streaming_tt_svd(np.zeros((6, 5, 4)), tol=1e-3, return_info=True)
    assert info.error == 0.0 and not np.asarray(tt.to_tensor()).any()


def test_a_dask_cluster_gives_the_scaled_tt():
    distributed = pytest.importorskip("distributed")
    dense, scale = _noisy_rank_3(3), 1e-200
    options = dict(VARIANTS["sketched"], tol=1e-3, random_state=0, return_info=True)
    reference, reference_info = streaming_tt_svd(dense, **options)
    with loopback_cluster() as cluster, distributed.Client(cluster) as client:
        tt, info = streaming_tt_svd(dense * scale, client=client, **options)
    assert tt.rank == reference.rank
    assert abs(info.error - reference_info.error) <= 1e-8
    np.testing.assert_allclose(info.error, _true_error(tt, dense, scale), rtol=1e-6)
