"""Audit, session 31: review of the session's contract and state fixes (regressions and
the same defects where the fixes did not reach)."""

import numpy as np
import pytest

import tensorly_cross as tlc

from .test_audit_s31_state import _inverse_sum


@pytest.mark.parametrize("budget, stage", [(100, "held-out"), (300, "one sweep")])
def test_the_cache_that_refused_is_named_though_the_run_has_a_larger_budget(budget, stage):
    # The run's own max_evals=10**6 was named ("max_evals=1000000 is too small"): raising
    # it, as the message advised, changes nothing; the caller's cache refused the read.
    cache = tlc.EvaluationCache(_inverse_sum(), max_evals=budget)
    with pytest.raises(ValueError, match=stage) as raised:
        tlc.tt_cross(cache, tol=1e-8, max_evals=10**6, random_state=0)
    message = str(raised.value)
    assert "max_evals=1000000" not in message
    assert f"max_evals={budget} of the EvaluationCache" in message


def test_the_run_s_own_budget_is_named_when_it_is_the_one_that_ran_out():
    cache = tlc.EvaluationCache(_inverse_sum(), max_evals=10**6)
    with pytest.raises(ValueError, match="one sweep") as raised:
        tlc.tt_cross(cache, rank=8, method="als", max_evals=1001, random_state=0)
    message = str(raised.value)
    assert message.startswith("max_evals=1001 is too small") and "EvaluationCache" not in message


@pytest.mark.parametrize("flag", ["quantics", "quiet", "verbose", "force"])
def test_compress_volume_refuses_a_flag_that_is_not_a_bool_before_any_work(tmp_path, flag):
    # quantics="no" crossed the quantics folding (a string is truthy), and force="no" failed
    # in save_tt only after the whole cross: each is a bool or a TypeError naming it, as
    # default_encoder(pooled=) and Regressor(normalize=) now are.
    from tensorly_cross.cli import compress_volume

    reads = []
    volume = tlc.lazy_tensor(lambda idx: reads.append(len(idx)) or np.ones(len(idx)),
                             shape=(8, 8, 8))
    with pytest.raises(TypeError, match=f"{flag} must be True or False"):
        compress_volume(volume, str(tmp_path / "v.tt.npz"), tol=None, rank=2, method="als",
                        **{flag: "no"})
    assert not reads and not list(tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["force"])
def test_stream_volume_refuses_a_flag_that_is_not_a_bool_before_reading(tmp_path, flag):
    from tensorly_cross.cli import stream_volume

    volume = np.ones((8, 8, 8))
    with pytest.raises(TypeError, match=f"{flag} must be True or False"):
        stream_volume(_Unread(volume), str(tmp_path / "v.tt.npz"), tol=None, rank=2,
                      **{flag: "no"})
    assert not list(tmp_path.iterdir())


class _Unread(np.ndarray):
    """An array that fails the test if anything reads its values."""

    def __new__(cls, array):
        return np.asarray(array).view(cls)

    def __getitem__(self, key):
        raise AssertionError("read before the flags were checked")

    def __array__(self, *args, **kwargs):
        raise AssertionError("read before the flags were checked")
