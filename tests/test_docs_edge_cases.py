"""Tests of the numbers and statements the documentation quotes."""

import os
import pathlib
import re
import statistics
import warnings

import numpy as np
import pytest

import tensorly_cross as tlc

from ._helpers_shared import _run_child

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- 7. the temporary file the docs name --------------------------------------------------

KILLED_SAVE = """
    import os, signal, sys
    from tensorly_cross._atomic import write_atomically
    def write(stream):
        stream.write(b"half a file")
        stream.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    write_atomically(sys.argv[1], write)
"""


def test_a_save_killed_outright_leaves_the_temporary_file_the_docs_name(tmp_path):
    child = _run_child(KILLED_SAVE, tmp_path / "out.tt.npz")
    assert child.returncode == -9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and re.fullmatch(r"\.tensorly-cross-[0-9a-f]{32}\.tmp", left[0])
    with open(os.path.join(ROOT, "docs", "cli.rst")) as docs:
        assert "``.tensorly-cross-<32 hex digits>.tmp``" in docs.read()


@pytest.mark.parametrize("dtype, size, rank, share", [
    ("f4", 1024, 8, 53), ("f4", 512, 8, 85), ("f8", 1024, 8, 31), ("f8", 512, 8, 78),
    ("f4", 2048, 8, 17), ("f4", 4096, 64, 90)])
def test_docs_cli_quotes_the_share_of_npy_pages_the_cost_model_estimates(dtype, size, rank,
                                                                         share):
    # docs/cli.rst said "at 1024^3 and --rank 8, 53% of the pages; the smaller volumes,
    # 99-100%": 53% is a float32 file's, and at 512^3 the estimate is 85% (float64: 31%, 78%).
    # It did not say where --method auto crosses at all: from 2048^3 at --rank 8 (17%),
    # and not even at 4096^3 without --rank (sized at --max-rank 64: 90%).
    # The estimate choose_path makes of a .npy file of that size, without writing one.
    import os

    from tensorly_cross.cost import PAGE, _Geometry, _page_block, cross_share

    shape = (size,) * 3
    geometry = _Geometry(shape, _page_block(shape, PAGE // np.dtype(dtype).itemsize))
    assert round(100 * cross_share(geometry, rank, 1.5)) == share
    docs = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "cli.rst")
    with open(docs, encoding="utf-8") as handle:
        text = " ".join(handle.read().split())
    assert f"{share}%" in text


def test_docs_say_where_tol_zero_is_met_without_a_warning():
    # docs/guarantees.rst: "at tol=0 meets the tolerance at that precision without a
    # warning"; a sketched rank-1 volume warned (a projection error of 2e-8, a difference
    # of squared norms). Read once it does not warn; the docs now say where it can.
    import os

    volume = np.ones((20, 21, 22))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tlc.streaming_tt_svd(volume, tol=0.0).rank == (1, 1, 1, 1)
    # Sketched, it can warn, depending on the sketch's draws: seed 1 does (0, 3 and 5 not).
    with pytest.warns(tlc.ToleranceNotMetWarning):
        tlc.streaming_tt_svd(volume, tol=0.0, max_width=5, random_state=1)
    docs = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "guarantees.rst")
    with open(docs, encoding="utf-8") as handle:
        text = " ".join(handle.read().split())
    assert "so there ``tol=0`` (or any ``tol`` under 1e-6) can warn" in text


def _parents(child, n_parent_modes, from_left):
    part = child[:, :n_parent_modes] if from_left else child[:, child.shape[1] - n_parent_modes:]
    return np.unique(part, axis=0).shape[0]


def test_max_slices_docs_say_where_a_set_is_chosen_freely():
    # The docs said every set extends at most max_slices parents; one of rank 4 over
    # modes of size 2 cannot (one parent extends 2 multi-indices), and is chosen freely
    # (slices.in_few_slices, a design decision): 4 parents at max_slices=1. They say so now.
    dense = np.random.default_rng(0).standard_normal((2,) * 6)
    indices = tlc.select_indices(dense, rank=[1, 2, 4, 4, 4, 2, 1], max_slices=1,
                                 method="als", random_state=0)
    widest = max(_parents(indices.left[k + 1], k, from_left=True) for k in range(1, 5))
    assert indices.rank[3] == 4 and widest > 1
    docs = tlc.tt_cross.__doc__.split("max_slices :")[1].split("checkpoint :")[0]
    assert "chosen freely" in " ".join(docs.split())


def _tolerance_warnings(**kwargs):
    import warnings

    import numpy as np

    import tensorly_cross as tlc

    noise = np.random.default_rng(0).standard_normal((10, 11, 12))  # no low rank
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = tlc.tt_cross(noise, tol=1e-3, random_state=0, return_info=True, **kwargs)
    return info, [w.message for w in caught if w.category is tlc.ToleranceNotMetWarning]


def test_a_given_rank_is_warned_about_only_as_the_guide_says():
    # docs/user_guide.rst said "With a given rank ... no warning"; TCI's rank= is a cap (a
    # rank-adaptive run, warned), and a fixed-rank TT no better than zero is warned too.
    info, missed = _tolerance_warnings(rank=2)  # the least-squares cross, error < 1
    assert info.val_error < 1 and not missed
    info, missed = _tolerance_warnings(rank=2, method="tci")
    assert info.val_error > 1e-3 and len(missed) == 1 and "not met" in str(missed[0])
    info, missed = _tolerance_warnings(rank=2, method="als")
    assert info.val_error >= 1 and len(missed) == 1
    assert "no better than the zero tensor" in str(missed[0])


ROOT_PATH = pathlib.Path(ROOT)


RESULTS = ROOT_PATH / "benchmarks" / "results"


def _prose(page):
    """A docs page with its line breaks and indentation folded into single spaces."""
    return " ".join((ROOT_PATH / "docs" / page).read_text(encoding="utf-8").split())


def _rows(name):
    """The data rows of a markdown results table, as lists of stripped cells."""
    rows = []
    for line in (RESULTS / name).read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and not set(cells[0]) <= set("-"):
            rows.append(cells)
    return rows[1:]  # without the header


def test_the_batched_search_wall_time_quoted_is_that_of_the_cheap_function_table():
    # docs/scale.rst called "P2 0.89x, P4 1.27x" the Cheap functions table's figures, and
    # "0.75x ttpy, against 0.99x" P1's, after the table was rerun (1.00x, 1.06x; 0.78x,
    # 1.02x); docs/choosing.rst quoted the same old run.
    ms = {row[0].split()[0]: [float(cell) for cell in row[1:4]]
          for row in _rows("scale_cheap.md") if row[0].startswith("P")}
    ratio = {problem: f"{batched / column:.2f}x"
             for problem, (column, batched, _) in ms.items()}
    scale, choosing = _prose("scale.rst"), _prose("choosing.rst")
    assert f"the `Cheap functions`_ table: P2 {ratio['P2']}, P4 {ratio['P4']}" in scale
    assert f"P2 {ratio['P2']}, P4 {ratio['P4']} the column search's wall time" in choosing
    column, batched, ttpy = ms["P1"]
    assert f"({batched / ttpy:.2f}x ttpy, against {column / ttpy:.2f}x)" in scale


def test_the_pipeline_summary_is_the_mean_of_the_training_tables():
    # The summary table of docs/pipeline.rst (and the README) quotes means over the seeds
    # of nn_training_64.md and nn_training_128.md: a rerun of those tables must move it.
    summary = _prose("pipeline.rst")
    for size in (64, 128):
        rows = _rows(f"nn_training_{size}.md")
        column = {}
        for model in ("cross", "dense"):
            mine = [row for row in rows if row[1] == model]
            column[model] = (statistics.mean(float(row[3]) for row in mine),
                             statistics.mean(float(row[5]) for row in mine),
                             statistics.mean(float(row[7].split()[0]) for row in mine))
        (cross_rmse, cross_cpu, cross_rss), (dense_rmse, dense_cpu, dense_rss) = (
            column["cross"], column["dense"])
        assert (f"{size}^3 {cross_rmse:.4f} {dense_rmse:.4f} "
                f"{cross_cpu / dense_cpu:.2f}x ({cross_cpu:.0f} / {dense_cpu:.0f} s) "
                f"{cross_rss / dense_rss:.2f}x ({cross_rss:.0f} / {dense_rss:.0f} MiB)") in summary


def test_the_readme_quotes_the_pipeline_results_of_the_tables():
    readme = " ".join((ROOT_PATH / "README.md").read_text(encoding="utf-8").split())
    rows = _rows("nn_training_64.md")
    rmse = {model: statistics.mean(float(row[3]) for row in rows if row[1] == model)
            for model in ("cross", "dense")}
    cpu = {model: statistics.mean(float(row[5]) for row in rows if row[1] == model)
           for model in ("cross", "dense")}
    assert (f"a test RMSE of {rmse['cross']:.3f} against {rmse['dense']:.3f} for the dense "
            f"encoder, in {cpu['cross'] / cpu['dense']:.2f}x its CPU time") in readme
    (cross, dense) = (next(row for row in _rows("nn_training_256.md") if row[1] == model)
                      for model in ("cross", "dense"))
    step = float(cross[4]) / float(dense[4])
    memory = float(cross[5].split()[0]) / float(dense[5].split()[0])
    assert f"takes {step:.3f}x the dense model's CPU time and {memory:.2f}x its memory" in readme


def test_the_pipeline_ablation_rows_are_the_means_of_the_ablation_tables():
    # The ablation table of docs/pipeline.rst is written by hand from two result files.
    rows = _rows("nn_ablation_64.md") + _rows("nn_ablation_64_pca.md")
    text = (ROOT_PATH / "docs" / "pipeline.rst").read_text(encoding="utf-8")
    labels = {"cross-issue": "issue 17's configuration",
              "cross-tiles": "+ tiles (pooled encoder, stride 4), quantics",
              "cross-tiles-tt": "+ TT layout", "cross-tiles-tt-r8": "+ rank 8",
              "cross-r6": "recipe at rank 6",
              "cross-pca": "recipe with the TT-PCA head (refit each epoch)",
              "dense-issue": "dense, the issue's encoder"}
    for model, label in labels.items():
        mine = [row for row in rows if row[1] == model]
        rmse = [float(row[3]) for row in mine]
        cpu = statistics.mean(float(row[5]) for row in mine)
        line = next(line for line in text.splitlines() if line.startswith(label + "  "))
        assert (f"{statistics.mean(rmse):.4f} ({min(rmse):.4f}-{max(rmse):.4f})" in line
                and f" {cpu:.0f} " in line), (model, line)


def test_the_large_d_counts_quoted_are_those_of_the_table():
    # "the same single-sweep counts as before at d=10-40" stood beside a table whose d=40
    # run read 42,365 entries against 42,239.
    evals = {(row[0].split()[0], int(row[2])): int(row[3])
             for row in _rows("scale_large_d.md") if row[1] == "column"}
    scale = _prose("scale.rst")
    same = [d for d in (10, 20, 40) if evals[("this", d)] == evals[("base", d)]]
    assert same == [10, 20]
    more = evals[("this", 40)] / evals[("base", 40)] - 1
    assert f"the same counts at d=10 and 20, {100 * more:.1f}% more at d=40" in scale


def test_the_fixed_rank_ratios_quoted_bound_those_of_the_real_volume_table():
    # "comes within 1.3x of TT-SVD's error" (README, docs/real_volumes.rst) stood beside
    # a table at 1.34x for MNI152 T1, and "the crosses come within 1.3x" of the motor
    # map's best TT beside 1.76x (ALS) and 2.27x (TCI).
    ratio = {(row[0], row[1]): float(row[3]) for row in _rows("real.md")
             if len(row) == 6 and row[3].replace(".", "").isdigit()}
    mni152 = [value for (volume, method), value in ratio.items()
              if volume.startswith("MNI152") and method.startswith("lsq")]
    assert 1.2 <= min(mni152) and max(mni152) <= 1.35
    readme = " ".join((ROOT_PATH / "README.md").read_text(encoding="utf-8").split())
    real_volumes = _prose("real_volumes.rst")
    assert "comes to 1.2-1.35x TT-SVD's error at rank 40" in readme
    assert "comes to 1.2-1.35x TT-SVD's error at the same rank" in real_volumes
    # cli.rst and the user guide said "1.2-1.3x" beside the same 1.34x.
    for page in ("cli.rst", "user_guide.rst", "choosing.rst"):
        prose = _prose(page)
        assert "1.2-1.3x" not in prose, page
        assert "1.2-1.35x" in prose, page
    motor = {method: value for (volume, method), value in ratio.items()
             if volume.startswith("motor")}
    assert (f"least-squares cross comes to {motor['lsq (4 sweeps)']:.1f}x that (the "
            f"interpolating crosses to {motor['als (paper)']:.1f}-"
            f"{motor['tci, rank cap']:.1f}x)") in real_volumes


def test_docs_cli_lists_where_oversample_is_refused(tmp_path, capsys):
    # docs/cli.rst: "It is refused with --method tci and stream (exit 2)"; compress refuses
    # --oversample without --rank on a volume of one axis too (exit 2), which it did not say.
    from tensorly_cross import cli

    np.save(tmp_path / "line.npy", np.cos(np.arange(50) / 7.0))
    assert cli.main(["compress", str(tmp_path / "line.npy"), "-o", str(tmp_path / "t.tt.npz"),
                     "--oversample", "2", "-q"]) == cli.EXIT_USAGE
    assert "--oversample on a volume of one axis needs --rank" in capsys.readouterr().err
    with open(os.path.join(ROOT, "docs", "cli.rst"), encoding="utf-8") as handle:
        text = " ".join(handle.read().split())
    assert "without ``--rank`` on a volume of one axis" in text
