"""Audit s32, the docs against the result tables they quote: prose figures that a rerun of
a table left behind (a benchmark is rerun, the table copied in by sync_tables.py, and the
sentence that quoted the old run stays)."""

import pathlib
import statistics

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _prose(page):
    """A docs page with its line breaks and indentation folded into single spaces."""
    return " ".join((ROOT / "docs" / page).read_text(encoding="utf-8").split())


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
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
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
    text = (ROOT / "docs" / "pipeline.rst").read_text(encoding="utf-8")
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
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    real_volumes = _prose("real_volumes.rst")
    assert "comes to 1.2-1.35x TT-SVD's error at rank 40" in readme
    assert "comes to 1.2-1.35x TT-SVD's error at the same rank" in real_volumes
    motor = {method: value for (volume, method), value in ratio.items()
             if volume.startswith("motor")}
    assert (f"least-squares cross comes to {motor['lsq (4 sweeps)']:.1f}x that (the "
            f"interpolating crosses to {motor['als (paper)']:.1f}-"
            f"{motor['tci, rank cap']:.1f}x)") in real_volumes
