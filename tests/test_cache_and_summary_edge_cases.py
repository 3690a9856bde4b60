"""A full cache that restarts under another backend than it was filled under, and the
summary of a hand-written TT file's numbers (tiny held-out bounds, integers too large
for a float)."""

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


@pytest.mark.parametrize("first, then", [("numpy", "pytorch"), ("pytorch", "numpy"),
                                         ("pytorch", "jax"), ("numpy", "jax")])
def test_a_full_cache_restarts_under_another_backend_than_it_was_filled_under(first, then):
    # A cache outlives tl.set_backend. Emptied on restart, its store copied its buffer with
    # the active backend's tl.copy: a NumPy buffer under PyTorch raised AttributeError
    # ("'numpy.ndarray' object has no attribute 'clone'"), a PyTorch one under JAX too.
    import tensorly as tl

    from tensorly_cross.lazy.cache import EvaluationCache
    from tensorly_cross.lazy.function import FunctionTensor

    for name in (first, then):
        pytest.importorskip({"pytorch": "torch"}.get(name, name))

    def function(indices):
        return 1.0 + np.asarray(indices, dtype=np.float64).sum(axis=1)

    cache = EvaluationCache(FunctionTensor(function, (8, 8)), max_entries=4)
    with tl.backend_context(first):
        cache.evaluate(np.array([[3, 3], [4, 4], [5, 5]]))
    with tl.backend_context(then):
        values = cache.evaluate(np.array([[4, 4], [1, 1], [2, 2]]))  # over 4: a restart
        assert tl.is_tensor(values)
        assert np.array_equal(np.asarray(tl.to_numpy(values)), [9.0, 3.0, 5.0])
        again = cache.evaluate(np.array([[1, 1], [6, 6]]))
        assert np.array_equal(np.asarray(tl.to_numpy(again)), [3.0, 13.0])
        assert cache.dtype_widenings == 0


@pytest.mark.parametrize("field", ["heldout_bound", "val_error", "n_evals"])
def test_info_shows_a_hand_written_huge_integer_as_it_is(tmp_path, capsys, field):
    # Metadata is the user's: an integer beyond float's range (JSON keeps it exact) made
    # `format(value, '.2%')` raise OverflowError in `info`, a traceback where the field
    # was to be shown as written.
    tt = tlc.tt_cross(lambda index: np.ones(len(index)), shape=(8, 8, 8), random_state=0)
    path = str(tmp_path / "t.tt.npz")
    metadata = dict(n_evals=100, val_error=1e-3, n_heldout=50, heldout_bound=0.01)
    metadata[field] = 10**400
    tlc.save_tt(path, tt, metadata=metadata)
    capsys.readouterr()
    assert cli.main(["info", path]) == 0
    assert str(10**400) in capsys.readouterr().out
