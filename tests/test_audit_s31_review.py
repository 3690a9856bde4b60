"""Audit, session 31: review of the session's contract and state fixes (regressions and
the same defects where the fixes did not reach)."""

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
