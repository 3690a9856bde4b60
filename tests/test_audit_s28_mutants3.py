"""Session 28, mutation audit of the read-everything path and the CLI (third round).

Each test kills a hand-made mutant that survived the existing tests; the comment names it.
"""

import numpy as np

from tensorly_cross import save_tt
from tensorly_cross.cli.summary import _stop_line, format_summary, run_info
from tensorly_cross.cross.stopping import EXACT_SIZE


def _summary(**fields):
    base = dict(shape=(4, 4), ranks=(1, 2, 1), n_params=16, compression=1.0, dtype="float64")
    base.update(fields)
    return base


def test_a_cross_that_read_exactly_every_voxel_says_so():
    # Mutant: `fraction >= 1` -> `fraction > 1` in _read_whole (a cross that evaluated
    # exactly the volume's entries, fraction 1.0, was described as a sample).
    text = format_summary(_summary(shape=(8, 8), n_evals=64, fraction=1.0, val_error=1e-9,
                                   n_heldout=50, heldout_bound=0.06))
    assert "exact: every voxel was read" in text
    assert "random entries" not in text


def test_a_volume_larger_than_exact_size_read_whole_is_still_a_sample():
    # The other side of the _read_whole boundary: above EXACT_SIZE the error was held out.
    text = format_summary(_summary(shape=(EXACT_SIZE + 1,), n_evals=EXACT_SIZE + 1,
                                   fraction=1.0, val_error=1e-3, n_heldout=50,
                                   heldout_bound=0.06))
    assert "on 50 random entries" in text


def test_the_rounding_share_is_shown_above_one_percent_of_the_error():
    # Mutant: `rounding > 0.01 * error` -> `rounding > 0.1 * error` (a rounding of 5% of
    # the error, worth a --dtype hint, went unmentioned).
    text = format_summary(_summary(val_error=1e-3, rounding_error=5e-5, dtype="float16",
                                   exact_error=True))
    assert "of which about 5.0e-05 from storing the cores as float16" in text
    small = format_summary(_summary(val_error=1e-3, rounding_error=5e-6, exact_error=True))
    assert "of which about" not in small


def test_one_pass_is_singular_and_two_plural():
    # The plural of the passes line (`passes != 1` -> `passes > 1` is equivalent: 0 passes
    # takes the sweeps branch).
    one = format_summary(_summary(seconds=1.0, passes=1))
    two = format_summary(_summary(seconds=1.0, passes=2))
    assert "(1 pass over the volume)" in one
    assert "(2 passes over the volume)" in two


def test_with_a_rank_tol_is_a_stop_not_a_target_so_no_met_claim():
    # Mutant: dropped `arguments.get("rank") is None` in _stop_line (a run with --rank
    # and --tol was said to have "NOT met" a tol that only served as a stop).
    with_rank = _stop_line({"stop_reason": "max_rank",
                            "arguments": {"tol": 1e-3, "rank": 8}})
    assert with_rank == "stopped by          max_rank"
    without = _stop_line({"stop_reason": "max_rank", "arguments": {"tol": 1e-3}})
    assert without.endswith("(--tol 0.001 NOT met)")


class _Args:
    def __init__(self, file):
        self.file = file


def test_info_names_the_mode_order_only_when_axes_were_permuted(tmp_path, capsys):
    # Mutant: `axes != sorted(axes)` dropped in run_info (every file with the identity
    # --axes got a "mode order" line, as if its modes had been permuted).
    rng = np.random.default_rng(0)
    tt = [rng.standard_normal((1, 3, 2)), rng.standard_normal((2, 4, 1))]
    for axes, shape, shown in (([0, 1], [3, 4], False), ([1, 0], [4, 3], True)):
        path = tmp_path / f"tt_{axes[0]}.npz"
        save_tt(path, tt, {"axes": axes, "shape": shape})
        run_info(_Args(str(path)))
        assert ("mode order" in capsys.readouterr().out) is shown


def test_a_quantics_view_of_a_function_is_not_called_stored_data():
    # Mutant: `and volume.stored` dropped from choose_path's quantics-view branch (a view of
    # entries computed one by one was "a QuanticsTensor of stored data").
    import tensorly_cross as tlc

    function = tlc.FunctionTensor(lambda idx: np.exp(-idx.sum(axis=1) / 8.0), (8, 8, 8))
    choice = tlc.choose_path(tlc.QuanticsTensor(function))
    assert choice.method == "lsq"
    assert "computed one by one" in choice.reason and "stored data" not in choice.reason


def test_any_gzip_file_is_streamed(tmp_path):
    # Mutant: `endswith(".gz")` -> `endswith(".nii.gz")` (choose_path's `path`: a gzip
    # file is decompressed whole whatever is read, an Analyze .img.gz as a .nii.gz).
    import tensorly_cross as tlc

    function = tlc.FunctionTensor(lambda idx: np.exp(-idx.sum(axis=1) / 8.0), (8, 8, 8))
    choice = tlc.choose_path(function, path=str(tmp_path / "volume.img.gz"))
    assert choice.method == "stream" and "gzip" in choice.reason


def _run_summary(**fields):
    base = dict(stop="max_rank", tol=1e-3, val_error=5e-4, output="out.npz",
                tt_bytes=100, input_bytes=1000, file_bytes=None)
    base.update(fields)
    return base


def test_an_exact_error_below_tol_is_not_blamed_on_a_95_percent_bound(capsys):
    # Mutant: `not summary.get("exact_error")` dropped from outcome's `unsure` (an exact
    # error has no 95% bound: "not met with confidence" was said of the stream's error).
    from tensorly_cross.cli.summary import outcome

    assert outcome(_run_summary(exact_error=True, stop="max_width"), True, False) == 3
    assert "with confidence" not in capsys.readouterr().err
    assert outcome(_run_summary(), True, False) == 3
    assert "with confidence" in capsys.readouterr().err


def test_a_missed_tol_of_the_stream_advises_max_rank_only():
    # Mutant: `if passes:` dropped in _remedy (the streaming TT-SVD, which has no sweeps,
    # was told to raise --n-iter-max).
    from tensorly_cross.cli.summary import _remedy

    assert _remedy("max_rank", passes=2) == "Raise --max-rank"
    assert "--n-iter-max" in _remedy("max_rank")


def test_a_tt_file_as_large_as_its_input_is_no_warning(capsys):
    # Mutants: `tt_bytes > input_bytes` / `tt_bytes > file_bytes` -> `>=` (a TT exactly
    # as large as its input was reported as "larger than the input").
    from tensorly_cross.cli.summary import outcome

    outcome(_run_summary(tt_bytes=1000, input_bytes=1000), False, False)
    outcome(_run_summary(tt_bytes=500, file_bytes=500), False, False)
    assert "larger" not in capsys.readouterr().err
    outcome(_run_summary(tt_bytes=501, file_bytes=500), False, False)
    assert "larger than the input file" in capsys.readouterr().err


def test_a_mode_sketched_to_its_full_size_gets_no_sketch():
    # Mutant: `width >= shape[k]` -> `width > shape[k]` in sketch_factors (a mode as wide
    # as its sketch is kept whole, as range_bases does: its Gaussian factors were drawn,
    # contracted against every block in pass 1, and thrown away).
    from tensorly_cross.stream.sketch import sketch_factors

    factors = sketch_factors((4, 5, 6), (4, 3, 6), np.random.default_rng(0))
    assert factors[0] is None and factors[2] is None
    assert [None if f is None else f.shape for f in factors[1]] == [(4, 3), None, (6, 3)]


def test_a_max_rank_equal_to_the_asked_rank_is_not_blamed():
    # Mutant: `max(ranks) > caps` -> `>=` in _lowered_by (a max_rank equal to the asked
    # rank, which lowered nothing, was named as a cause).
    from tensorly_cross.stream.streaming import _lowered_by

    cause = _lowered_by((1, 3, 1), (1, 2, 1), (4, 4), 3)
    assert cause.startswith("the volume's own ranks") and "max_rank" not in cause
    assert _lowered_by((1, 4, 1), (1, 3, 1), (4, 4), 3).startswith("max_rank=3")


def test_a_leading_mode_of_size_one_takes_no_share_of_the_budget():
    # Mutant: `1 < left` -> `1 <= left` in _bonds_that_truncate (a (1, X, Y) volume's
    # first bond has rank 1 and drops nothing, as a trailing mode of size 1's does).
    from tensorly_cross.stream.streaming import _bonds_that_truncate

    assert _bonds_that_truncate((1, 4, 5)) == 1
    assert _bonds_that_truncate((4, 5, 1)) == 1
    assert _bonds_that_truncate((3, 4, 5)) == 2


def test_a_box_of_whole_slabs_is_one_contiguous_run():
    # Mutant: `split > 0` -> `split > 1` in _contiguous_runs (a block of whole slabs was
    # read as one run per slab, not "a single run" as documented).
    from tensorly_cross.stream.blocks import _contiguous_runs

    box = (slice(1, 3), slice(0, 4), slice(0, 5))
    assert list(_contiguous_runs((3, 4, 5), box)) == [(20, 40)]
    part = (slice(1, 3), slice(1, 3), slice(0, 5))
    assert list(_contiguous_runs((3, 4, 5), part)) == [(25, 10), (45, 10)]


def test_slab_chunks_keep_the_fastest_axes_whole_while_they_fit():
    # Mutant: `chunks[axis] < shape[axis]` -> `<=` in _slab_chunks (every block was cut
    # after the fastest axis: a small .npy was read one row at a time).
    from tensorly_cross.stream.blocks import _slab_chunks

    assert _slab_chunks((3, 4, 5), False, 10**6) == [3, 4, 5]
    assert _slab_chunks((3, 4, 5), True, 10**6) == [3, 4, 5]
    assert _slab_chunks((3, 4, 5), False, 8 * 40) == [2, 4, 5]


def test_reconstruct_error_against_a_zero_slice_is_inf_or_zero():
    # Mutant: `math.inf if difference else 0.0` -> `0.0` in _relative_error (a nonzero TT
    # slice against a zero original read as exact).
    from tensorly_cross.cli.reconstruct import _relative_error

    zero = np.zeros((3, 3))
    assert _relative_error(np.full((3, 3), 1e-19), zero) == float("inf")
    assert _relative_error(zero, zero) == 0.0


def test_a_zero_tt_slice_against_a_zero_original_is_no_note(capsys):
    # Mutant: `and largest > 0` dropped in _note_zero_original (a zero TT slice, error 0,
    # was told its error is inf).
    from tensorly_cross.cli.reconstruct import _note_zero_original

    zero = np.zeros((3, 3))
    _note_zero_original(zero, zero, "2=1")
    assert capsys.readouterr().err == ""
    _note_zero_original(np.full((3, 3), 2.0), zero, "2=1")
    assert "largest |TT| there is 2" in capsys.readouterr().err


def test_a_boolean_fill_nan_in_metadata_is_not_a_fill_value():
    # Mutant: `not isinstance(value, bool)` dropped in fill_nan_of (a hand-written
    # "fill_nan": true was shown as "NaN voxels read as 1").
    from tensorly_cross.cli._common import fill_nan_of

    assert fill_nan_of({"arguments": {"fill_nan": True}}) is None
    assert fill_nan_of({"arguments": {"fill_nan": 0}}) == 0.0


def test_an_error_equal_to_tol_after_rounding_still_meets_it():
    # Mutant: `metadata[key] > tol` -> `>=` in compress's _account_for_rounding (a stored
    # TT whose error, rounding included, equals --tol was a "dtype" miss; --tol is met at
    # an error at most tol, as for every stop).
    from tensorly_cross.cli.compress import _account_for_rounding

    met = {"error": 5e-4, "stop_reason": "tol", "arguments": {"tol": 1e-3}}
    _account_for_rounding(met, 5e-4)
    assert met["error"] == 1e-3 and met["stop_reason"] == "tol"
    missed = {"val_error": 6e-4, "stop_reason": "tol", "arguments": {"tol": 1e-3}}
    _account_for_rounding(missed, 5e-4)
    assert missed["stop_reason"] == "dtype"
