"""Follow-up review of session 35's fixes: edge cases the fixes themselves introduced."""

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross import cli


@pytest.mark.parametrize("bound", [5e-324, 1e-310, 1e-300])
def test_info_shows_a_hand_written_tiny_held_out_bound_without_a_traceback(tmp_path, capsys,
                                                                          bound):
    # The bound rounded up to two digits scaled it by 10**digits: a subnormal bound in a
    # hand-written TT file (metadata is the user's) raised OverflowError in `info`, and
    # 1e-300 was printed with 300 zeros.
    tt = tlc.tt_cross(lambda index: np.ones(len(index)), shape=(8, 8, 8), random_state=0)
    path = str(tmp_path / "t.tt.npz")
    tlc.save_tt(path, tt, metadata=dict(n_evals=100, val_error=1e-3, n_heldout=50,
                                        heldout_bound=bound))
    capsys.readouterr()
    assert cli.main(["info", path]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines()
                if "can go unseen" in line)
    shown = line.split("under ", 1)[1].split("%", 1)[0]
    assert len(shown) < 12, line
    assert float(shown) >= 100 * bound * (1 - 1e-12)  # never below the bound


@pytest.mark.parametrize("bound, shown", [(1e-12, "1.0e-10%"), (0.0007, "0.070%"),
                                          (0.000749, "0.075%"), (0.999, "100%"),
                                          (9.99e-7, "0.00010%"), (0.0995, "10%")])
def test_the_held_out_bound_stays_rounded_up_at_every_scale(bound, shown):
    from tensorly_cross.cli.summary import _percent_up

    assert _percent_up(bound) == shown
