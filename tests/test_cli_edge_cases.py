"""Tests of the command line (compress, reconstruct, demo, info): flags, outputs, messages and exit
codes."""

import os
import re
import shlex
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings

import h5py
import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross import cli, save_tt
from tensorly_cross.cli import main
from tensorly_cross.cli._parser import build_parser
from tensorly_cross.cli.summary import _stop_line, format_summary, outcome, run_info
from tensorly_cross.cross.stopping import EXACT_SIZE

from ._helpers_shared import _dense, _random_tt, _smooth_cube


@pytest.fixture
def volume(tmp_path):
    """A smooth 24^3 float32 volume as a C-ordered .npy."""
    grid = np.linspace(0.0, 1.0, 24)
    values = (np.sin(3 * grid)[:, None, None]
              + np.cos(2 * grid)[None, :, None] * grid[None, None, :]).astype(np.float32)
    path = tmp_path / "v.npy"
    np.save(path, values)
    return path


@pytest.fixture
def tt_file(volume, tmp_path):
    """The TT of ``volume`` (the stream: exact, fast)."""
    output = tmp_path / "v.tt.npz"
    assert cli.main(["compress", str(volume), "-o", str(output), "--method", "stream",
                     "-q"]) == cli.EXIT_OK
    return output


def test_reconstruct_npy_keeps_an_upper_case_name(tt_file, volume, tmp_path, capsys):
    """``-o OUT.NPY`` (accepted: the suffix check ignores case) is the file written and
    reported, and it is then refused without --force like any existing output."""
    output = tmp_path / "OUT.NPY"
    assert cli.main(["reconstruct", str(tt_file), "-o", str(output)]) == cli.EXIT_OK
    assert output.is_file()
    assert not (tmp_path / "OUT.NPY.npy").exists()
    expected = np.load(volume)[12].astype(np.float64)
    np.testing.assert_allclose(np.load(output), expected, rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert cli.main(["reconstruct", str(tt_file), "-o", str(output)]) == cli.EXIT_INPUT
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("existing", [False, True])
def test_reconstruct_interrupted_npy_leaves_no_partial_file(tt_file, tmp_path, capsys,
                                                             monkeypatch, existing):
    """Ctrl-C while the slice is written: exit 130, and the output is absent (or, with
    --force over an older file, that file intact), as for the PNG and NIfTI outputs."""
    output = tmp_path / "slice.npy"
    if existing:
        np.save(output, np.arange(3.0))
    before = output.read_bytes() if existing else None

    def interrupted(stream, array, *args, **kwargs):
        stream.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    code = cli.main(["reconstruct", str(tt_file), "-o", str(output), "--force"])
    assert code == cli.EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err
    if existing:
        assert output.read_bytes() == before
    else:
        assert not output.exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_budget_miss_advises_max_evals(volume, tmp_path, capsys):
    """A run stopped by --max-evals says to raise --max-evals, not --max-rank or
    --n-iter-max (which would spend no more of a spent budget)."""
    output = tmp_path / "b.tt.npz"
    code = cli.main(["compress", str(volume), "-o", str(output), "--method", "tci",
                     "--max-evals", "1500", "-q"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_TOL_MISSED
    assert "stop: max_evals" in err
    assert "Raise --max-evals" in err
    assert "--n-iter-max" not in err


def test_quiet_and_verbose_do_not_combine(volume, tmp_path, capsys):
    """``-q -v`` is a usage error (the synopsis says ``[-q | -v]``); before, --quiet
    printed every sweep."""
    output = tmp_path / "q.tt.npz"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compress", str(volume), "-o", str(output), "--method", "lsq", "-q", "-v"])
    assert exit_info.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "-q/--quiet" in err and "-v/--verbose" in err
    assert not output.exists()


def test_size_warning_tells_small_sizes_apart(tmp_path, capsys):
    """A TT larger than a small input says by how much: ``(0.00 MiB) is larger than the
    input (0.00 MiB)`` alone did not."""
    path = tmp_path / "mask.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.random((16, 16, 16)) > 0.5)  # noise: no compression
    output = tmp_path / "mask.tt.npz"
    code = cli.main(["compress", str(path), "-o", str(output), "--method", "stream",
                     "--accept-miss", "-q"])
    assert code == cli.EXIT_OK
    err = capsys.readouterr().err
    match = re.search(r"the TT file \([\d.]+ MiB\) is larger than the input \(0\.00 MiB\), "
                      r"([\d.]+) (KiB|bytes) against ([\d.]+) (KiB|bytes):", err)
    assert match, err
    tt_size, tt_unit, input_size, input_unit = match.groups()
    assert tt_unit == input_unit and float(tt_size) > float(input_size)
    assert float(input_size) == (4.0 if input_unit == "KiB" else 4096)  # 16^3 bools


def test_ambiguous_hdf5_names_the_flag(volume, tmp_path, capsys):
    """An HDF5 file with several datasets: the message names --dataset and FILE.h5:/NAME,
    the command's spellings, not the library's ``dataset=...``."""
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as handle:
        handle["a"] = np.load(volume)
        handle["b"] = np.load(volume)
    code = cli.main(["compress", str(path), "-o", str(tmp_path / "h.tt.npz"), "-q"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_INPUT
    assert "--dataset" in err and "dataset=" not in err
    assert "['a', 'b']" in err


def test_demo_workdir_that_is_a_file(tmp_path, capsys):
    """``demo --workdir FILE``: the message names --workdir and says it is not a folder."""
    path = tmp_path / "notadir"
    path.write_text("x")
    code = cli.main(["demo", "--volume", "procedural", "--size", "16", "--workdir",
                     str(path), "-q"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_INPUT
    assert "--workdir" in err and "not a folder" in err
    assert path.read_text() == "x"


@pytest.mark.parametrize("command", ["compress", "reconstruct"])
def test_hdf5_dataset_named_twice_is_a_usage_error(volume, tt_file, tmp_path, capsys,
                                                   command):
    """``FILE.h5:/a --dataset b`` names the dataset twice: a usage error naming both
    (before, ``path 'FILE.h5:/a' does not exist``, of a file that exists)."""
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as handle:
        handle["a"] = np.load(volume)
        handle["b"] = np.load(volume)
    if command == "compress":
        argv = ["compress", f"{path}:/a", "--dataset", "b", "-o", str(tmp_path / "h.tt.npz")]
    else:
        argv = ["reconstruct", str(tt_file), "--png", str(tmp_path / "h.png"), "--against",
                f"{path}:/a", "--dataset", "b"]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--dataset" in err and ":/a" in err and "does not exist" not in err
    assert not (tmp_path / "h.tt.npz").exists() and not (tmp_path / "h.png").exists()


@pytest.mark.parametrize("argv", [["compress", "VOLUME", "-o", ""],
                                  ["reconstruct", "TT", "-o", ""],
                                  ["reconstruct", "TT", "--png", ""]])
def test_an_empty_output_path_is_refused(volume, tt_file, tmp_path, monkeypatch, capsys,
                                         argv):
    """``-o "$OUT"`` with OUT unset: refused naming the flag (exit 2), not replaced by
    the default output in the current folder (compress) or by "give --png and/or -o"."""
    monkeypatch.chdir(tmp_path)
    argv = [{"VOLUME": str(volume), "TT": str(tt_file)}.get(item, item) for item in argv]
    before = sorted(path.name for path in tmp_path.iterdir())
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert argv[-2] in err and "empty" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == before


def test_a_reconstructed_nii_gz_names_itself_in_its_gzip_header(tt_file, tmp_path):
    """The gzip header held the temporary file's name (``.tt-XXXX.nii.tmp``), which
    ``gunzip -N`` restores; it holds the output's own name now, and the volume reads back."""
    nibabel = pytest.importorskip("nibabel")
    output = tmp_path / "out.nii.gz"
    assert cli.main(["reconstruct", str(tt_file), "-o", str(output)]) == cli.EXIT_OK
    header = output.read_bytes()
    flags = header[3]
    assert flags & 0x08  # FNAME: a name is stored after the 10-byte header
    stored = header[10:header.index(b"\0", 10)].decode()
    assert stored == "out.nii"
    assert nibabel.load(output).shape == (24, 24, 24)


def test_transposed_axes_must_be_ints_not_flags():
    with pytest.raises(ValueError, match=r"\(True, False, 2\)"):
        tlc.TransposedTensor(np.zeros((2, 3, 4)), (True, False, 2))


def test_the_cli_says_why_a_tol_below_its_error_was_not_met(capsys):
    """A held-out error under --tol that never passed (its 95% bound was above) read as
    "--tol 1.0e-01 not met: held-out error 9.73e-02", a contradiction on its face."""
    from tensorly_cross.cli.summary import outcome

    summary = {"tol": 0.1, "val_error": 0.0973, "stop": "max_evals", "output": "x.tt.npz",
               "tt_bytes": 1, "input_bytes": 2}
    assert outcome(summary, tol_driven=True, accept_miss=True) == 0
    assert "not met with confidence (the upper 95% bound" in capsys.readouterr().err
    outcome(dict(summary, val_error=0.2), tol_driven=True, accept_miss=True)
    assert "with confidence" not in capsys.readouterr().err


def test_the_summary_of_a_volume_read_whole_does_not_call_its_error_a_sample():
    from tensorly_cross.cli.summary import format_summary

    summary = {"shape": (4, 5, 7), "ranks": (1, 4, 5, 1), "n_params": 125,
               "compression": 1.12, "n_evals": 140, "fraction": 1.0, "val_error": 1e-15,
               "n_heldout": 794, "heldout_bound": 0.004}
    text = format_summary(summary)
    assert "exact: every voxel was read" in text and "a sample" not in text
    assert "a sample" in format_summary(dict(summary, n_evals=70, fraction=0.5))


def test_png_slices_have_square_voxels():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tensorly_cross.cli.reconstruct import _show

    figure, ax = plt.subplots()
    try:
        _show(ax, np.zeros((233, 189)))
        assert ax.get_aspect() == 1.0  # "auto" drew a 233x189 slice square
    finally:
        plt.close(figure)


def test_info_says_whether_the_file_met_its_tolerance(tmp_path, capsys):
    """A TT written past a missed --tol (--accept-miss) looked like any other in `info`."""
    from tensorly_cross import cli

    x = np.linspace(0, 1, 16)
    volume = np.exp(-np.add.outer(np.add.outer(x, x), x))
    volume = volume + 0.05 * np.random.default_rng(0).standard_normal(volume.shape)
    path = tmp_path / "v.npy"
    np.save(path, volume)
    output = str(tmp_path / "v.tt.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli.main(["compress", str(path), "-o", output, "--tol", "1e-3", "--max-rank", "2",
                  "--method", "tci", "-q", "--accept-miss"])
    capsys.readouterr()
    assert cli.main(["info", output]) == 0
    assert "(--tol 0.001 NOT met)" in capsys.readouterr().out


def test_info_on_a_tt_file_that_cannot_be_read_names_the_error(capsys):
    if not os.path.isfile("/proc/self/mem"):
        pytest.skip("Linux /proc only")
    assert cli.main(["info", "/proc/self/mem"]) == cli.EXIT_INPUT
    error = capsys.readouterr().err
    assert "cannot read TT file '/proc/self/mem'" in error and "not a .npz" not in error


def _nifti_scaled_by(path, slope):
    """An int16 NIfTI whose header scales it by ``slope`` (written into the header's
    scl_slope field: nibabel would rescale the data on saving)."""
    nibabel = pytest.importorskip("nibabel")
    grid = np.linspace(0.0, 1.0, 12)
    values = np.round(3e4 * np.add.outer(np.add.outer(grid, grid), grid) / 3).astype(np.int16)
    nibabel.save(nibabel.Nifti1Image(values, np.eye(4)), path)
    with open(path, "r+b") as stream:
        stream.seek(112)  # scl_slope, then scl_inter
        stream.write(struct.pack("<ff", slope, 0.0))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_compress_of_values_float32_cannot_hold_refuses_the_cores_and_names_the_fix(
        tmp_path, capsys):
    source, output = tmp_path / "huge.nii", tmp_path / "huge.tt.npz"
    _nifti_scaled_by(source, 1e36)  # entries up to 1e40: finite in float64 only
    code = cli.main(["compress", str(source), "-o", str(output), "--method", "stream",
                     "--rank", "1", "-q"])
    error = capsys.readouterr().err
    assert code == cli.EXIT_INPUT and not output.exists()
    assert "non-finite" in error and "--dtype float64" in error
    assert cli.main(["compress", str(source), "-o", str(output), "--method", "stream",
                     "--rank", "1", "--dtype", "float64", "-q"]) == cli.EXIT_OK
    _, metadata = tlc.load_tt(output)
    assert np.isfinite(metadata["error"])


@pytest.mark.parametrize("method", ["tci", "lsq"])
def test_a_fixed_rank_is_not_stopped_by_the_default_tol(noisy, tmp_path, method):
    output = tmp_path / "t.tt.npz"
    assert cli.main(["compress", str(noisy), "-o", str(output), "--rank", "5", "--method",
                     method, "-q", "--seed", "0"]) == cli.EXIT_OK
    cores, metadata = tlc.load_tt(output)
    assert max(core.shape[2] for core in cores) == 5  # TCI stopped at rank 1-2 on tol 0.1
    assert metadata["stop_reason"] != "tol" and metadata["arguments"]["tol"] is None


def test_a_fixed_rank_stream_records_stop_reason_rank(noisy, tmp_path, capsys):
    output = tmp_path / "s.tt.npz"
    assert cli.main(["compress", str(noisy), "-o", str(output), "--rank", "3", "--method",
                     "stream", "-q"]) == cli.EXIT_OK
    assert tlc.load_tt(output)[1]["stop_reason"] == "rank"
    assert cli.main(["info", str(output)]) == cli.EXIT_OK
    assert "stopped by          rank" in capsys.readouterr().out


@pytest.mark.parametrize("inside", ["zarr.json", "c/0/0/0", "new.tt.npz"])
def test_an_output_inside_a_zarr_input_is_refused(tmp_path, inside, capsys):
    zarr = pytest.importorskip("zarr")
    store = tmp_path / "v.zarr"
    array = zarr.create_array(store=str(store), shape=(8, 8, 8), chunks=(8, 8, 8),
                              dtype="f8")
    array[:] = _smooth_cube(8)
    before = sorted(os.listdir(store))
    code = cli.main(["compress", str(store), "-o", str(store / inside), "--force", "-q"])
    assert code == cli.EXIT_USAGE
    assert "is inside the input" in capsys.readouterr().err
    assert sorted(os.listdir(store)) == before
    assert np.array_equal(tlc.open_volume(str(store)).evaluate(np.array([[1, 2, 3]])),
                          _smooth_cube(8)[1:2, 2, 3])


def test_reconstruct_against_huge_voxels_prints_the_error_not_nan(tmp_path, capsys):
    path = tmp_path / "huge.npy"
    np.save(path, _smooth_cube(noise=0) * 1e306)
    output = tmp_path / "h.tt.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # NumPy's overflow noise included
        assert cli.main(["compress", str(path), "-o", str(output), "-q", "--method", "tci",
                         "--tol", "1e-6", "--dtype", "float64"]) == cli.EXIT_OK
        assert cli.main(["reconstruct", str(output), "--against", str(path), "-o",
                         str(tmp_path / "h.npy")]) == cli.EXIT_OK
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert float(line.rsplit(" ", 1)[1]) < 1e-5, line  # it read nan


def test_reconstruct_of_a_slice_too_large_for_memory_says_so_in_one_line(tmp_path, capsys):
    path = tmp_path / "b.tt.npz"
    tlc.save_tt(path, [np.ones((1, 2**21, 1))] * 2, {"shape": [2**21, 2**21]})
    assert cli.main(["reconstruct", str(path), "--png", str(tmp_path / "b.png")]) == \
        cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert "not enough memory" in err and "Traceback" not in err


def test_a_budget_miss_gives_one_advice_in_the_commands_terms(tmp_path, capsys):
    grid = np.linspace(0, 1, 32)
    x, y, z = np.meshgrid(grid, grid, grid, indexing="ij")
    path = tmp_path / "v.npy"
    np.save(path, np.exp(-((x - .5)**2 + (y - .4)**2 + (z - .6)**2) * 8)
            + 0.3 * np.sin(3 * x) * np.cos(2 * y))
    # Past the held-out entries, short of the first sweep of the least-squares cross.
    code = cli.main(["compress", str(path), "-o", str(tmp_path / "e.tt.npz"), "-q",
                     "--max-evals", "5000"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_INPUT and "raise max_evals" not in err
    assert err.count("--max-evals") == 2  # the value, and the one advice


@pytest.mark.parametrize("flags", [["--method", "stream", "--n-iter-max", "1"],
                                   ["--method", "stream", "--patience", "5"],
                                   ["--rank", "4", "--max-rank", "3"]])
def test_flags_that_would_be_ignored_are_refused(noisy, tmp_path, flags):
    assert cli.main(["compress", str(noisy), "-o", str(tmp_path / "x.tt.npz"), "-q",
                     *flags]) == cli.EXIT_USAGE


def test_demo_refuses_a_size_for_the_template(tmp_path, capsys):
    pytest.importorskip("nilearn")
    assert cli.main(["demo", "--volume", "mni152", "--size", "32", "--workdir",
                     str(tmp_path)]) == cli.EXIT_USAGE
    assert "--size 32 sets the procedural volume" in capsys.readouterr().err


def test_demo_with_a_size_under_auto_runs_the_procedural_volume(tmp_path, capsys):
    # With nilearn installed, --size was ignored and the 197x233x189 template ran.
    pytest.importorskip("nilearn")
    assert cli.main(["demo", "--size", "16", "--workdir", str(tmp_path), "-q"]) == cli.EXIT_OK
    assert cli.main(["demo", "--size", "16", "--workdir", str(tmp_path)]) == cli.EXIT_OK
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("volume: the procedural 16^3 volume") and "--size 16" in first


@pytest.mark.parametrize("dtype, exact", [("float64", True), ("float32", False)])
def test_the_stream_says_exact_only_where_no_rounding_was_estimated(tmp_path, capsys,
                                                                    dtype, exact):
    path = tmp_path / "v.npy"
    np.save(path, _smooth_cube(noise=0.01).astype(dtype))
    assert cli.main(["compress", str(path), "-o", str(tmp_path / "s.tt.npz"), "--method",
                     "stream", "--tol", "0.05"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert ("(exact: every voxel read)" in out) == exact
    assert ("plus the cores' rounding" in out) == (not exact)


# -- _reconstruct.py --------------------------------------------------------------------


# -- cli/compress.py --------------------------------------------------------------------


def _smooth_volume_file(tmp_path, shape=(12, 10, 9), dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    grids = [np.linspace(0, 1, n) for n in shape]
    volume = np.exp(-np.add.outer(np.add.outer(grids[0] ** 2, grids[1]), 2 * grids[2] ** 2))
    volume = volume + 1e-2 * rng.standard_normal(shape)
    path = str(tmp_path / "volume.npy")
    np.save(path, volume.astype(dtype))
    return path


# Mutants: --oversample and --max-slices recorded in the file's arguments but not passed on
# to the cross. The command's run is tt_cross's with its settings: the same evaluations.
@pytest.mark.parametrize("flags, options", [
    (["--oversample", "2"], dict(oversample=2.0)),
    (["--max-slices", "1"], dict(max_slices=1)),
])
def test_compress_passes_oversample_and_max_slices_to_the_cross(tmp_path, flags, options):
    import tensorly_cross as tlc
    from tensorly_cross import cli

    path = _smooth_volume_file(tmp_path)
    output = str(tmp_path / "v.tt.npz")
    assert cli.main(["compress", path, "-o", output, "--rank", "3", "--method", "als",
                     "-q", *flags]) == cli.EXIT_OK
    _, metadata = tlc.load_tt(output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, info = tlc.tt_cross(tlc.open_volume(path), rank=3, tol=1e-6, method="als",
                               n_iter_max=20, patience=2, random_state=0, return_info=True,
                               **options)
        _, plain = tlc.tt_cross(tlc.open_volume(path), rank=3, tol=1e-6, method="als",
                                n_iter_max=20, patience=2, random_state=0, return_info=True)
    assert metadata["n_evals"] == info.n_evals != plain.n_evals


# Mutant: a stream run recorded as meeting --tol whatever its error: a run capped by
# --max-rank then exited 0 with stop "tol".
def test_compress_stream_caps_the_ranks_at_max_rank_and_reports_the_miss(tmp_path, capsys):
    import tensorly_cross as tlc
    from tensorly_cross import cli

    path = _smooth_volume_file(tmp_path)
    output = str(tmp_path / "v.tt.npz")
    code = cli.main(["compress", path, "-o", output, "--method", "stream", "--tol", "1e-3",
                     "--max-rank", "1", "-q"])
    tt, metadata = tlc.load_tt(output)
    assert max(core.shape[2] for core in tt) == 1
    assert code == cli.EXIT_TOL_MISSED and metadata["stop_reason"] == "max_rank"
    assert "--tol 1.0e-03 not met" in capsys.readouterr().err


# Mutants: the stored cores' default dtype: float32 input kept as float64 (``itemsize < 4``),
# int32 input (more digits than float32 holds) stored as float32.
@pytest.mark.parametrize("dtype, stored", [(np.float32, np.float32), (np.float64, np.float64),
                                           (np.int16, np.float32), (np.int32, np.float64)])
def test_compress_stores_cores_in_the_inputs_floating_dtype(tmp_path, dtype, stored):
    import tensorly_cross as tlc
    from tensorly_cross import cli

    volume = np.add.outer(np.add.outer(np.arange(8), np.arange(7)), np.arange(6)) * 100
    path = str(tmp_path / "volume.npy")
    np.save(path, volume.astype(dtype))
    output = str(tmp_path / "v.tt.npz")
    assert cli.main(["compress", path, "-o", output, "--method", "stream", "--tol", "1e-3",
                     "-q"]) == cli.EXIT_OK
    tt, metadata = tlc.load_tt(output)
    assert {np.asarray(core).dtype for core in tt} == {np.dtype(stored)}
    assert metadata["input_dtype"] == np.dtype(dtype).name


# Mutant: a tolerance met by the computed TT but not by its cores rounded to --dtype is
# recorded as met (exit 0): the stored TT misses it.
def test_compress_reports_a_tol_missed_only_by_the_rounding_to_float32(tmp_path):
    import tensorly_cross as tlc
    from tensorly_cross import cli

    rng = np.random.default_rng(5)
    volume = np.einsum("i,j,k->ijk", *(rng.standard_normal(n) for n in (9, 8, 7)))
    path = str(tmp_path / "volume.npy")
    np.save(path, volume)
    output = str(tmp_path / "v.tt.npz")
    code = cli.main(["compress", path, "-o", output, "--method", "stream", "--tol", "1e-10",
                     "--dtype", "float32", "-q"])
    _, metadata = tlc.load_tt(output)
    assert code == cli.EXIT_TOL_MISSED
    assert metadata["stop_reason"] == "dtype" and metadata["error"] > 1e-10
    assert metadata["rounding_error"] > 1e-9


# Mutant: --max-rank accepted beside --rank (the fixed rank ignores it without a word).
def test_compress_refuses_max_rank_with_a_fixed_rank(tmp_path, capsys):
    from tensorly_cross import cli

    path = _smooth_volume_file(tmp_path)
    code = cli.main(["compress", path, "-o", str(tmp_path / "v.tt.npz"), "--rank", "3",
                     "--max-rank", "5", "-q"])
    assert code == cli.EXIT_USAGE
    assert "--max-rank 5 caps the ranks" in capsys.readouterr().err


# Mutant: a scaled NIfTI's dtype taken as the float64 its voxels read back as, not the
# stored integers' (which hold no more precision): float64 cores, twice the file.
def test_compress_stores_a_scaled_int16_nifti_in_float32(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    import tensorly_cross as tlc
    from tensorly_cross import cli

    voxels = np.add.outer(np.add.outer(np.arange(8), np.arange(7)), np.arange(6)).astype(np.int16)
    image = nibabel.Nifti1Image(voxels, np.eye(4))
    image.header.set_slope_inter(0.5, 3.0)
    path = str(tmp_path / "scaled.nii")
    nibabel.save(image, path)
    output = str(tmp_path / "v.tt.npz")
    assert cli.main(["compress", path, "-o", output, "--method", "stream", "--tol", "1e-3",
                     "-q"]) == cli.EXIT_OK
    tt, metadata = tlc.load_tt(output)
    assert metadata["input_dtype"] == "int16"
    assert {np.asarray(core).dtype for core in tt} == {np.dtype(np.float32)}


# -- cli/reconstruct.py -----------------------------------------------------------------


def _tt_file(tmp_path, shape=(6, 5, 4)):
    """A TT file of the CLI, with the dense volume its TT holds."""
    import tensorly_cross as tlc

    cores = _random_tt(shape)
    path = str(tmp_path / "v.tt.npz")
    tlc.save_tt(path, cores, {"shape": list(shape)})
    return path, _dense(cores)


# Mutant: an index equal to the axis' size accepted by --slice (an IndexError later: exit 1
# with a traceback's message instead of the usage error, exit 2).
def test_reconstruct_refuses_a_slice_index_one_past_the_end(tmp_path, capsys):
    from tensorly_cross import cli

    path, _ = _tt_file(tmp_path)
    code = cli.main(["reconstruct", path, "--slice", "0=6", "-o", str(tmp_path / "s.npy")])
    assert code == cli.EXIT_USAGE
    assert "--slice 0=6 is outside shape (6, 5, 4)" in capsys.readouterr().err


# Mutant: an --against volume of another shape compared all the same (its slice at the
# same indices: an error against another volume, reported as the TT's).
def test_reconstruct_refuses_an_against_volume_of_another_shape(tmp_path, capsys):
    from tensorly_cross import cli

    path, _ = _tt_file(tmp_path)
    against = str(tmp_path / "other.npy")
    np.save(against, np.zeros((7, 5, 4)))
    code = cli.main(["reconstruct", path, "--against", against, "-o",
                     str(tmp_path / "s.npy")])
    assert code == cli.EXIT_INPUT
    assert "--against has shape (7, 5, 4), the TT has (6, 5, 4)" in capsys.readouterr().err


# -- cli/summary.py ---------------------------------------------------------------------


# Mutant: a held-out error below --tol that did not pass (its upper 95% bound above tol)
# reported as a plain miss: the message said the error missed tol when the sample met it.
def test_a_miss_whose_sample_met_tol_says_it_was_not_met_with_confidence(capsys):
    from tensorly_cross.cli import EXIT_TOL_MISSED
    from tensorly_cross.cli.summary import outcome

    summary = dict(stop="stalled", val_error=0.08, tol=0.1, exact_error=False,
                   output="v.tt.npz", tt_bytes=10, input_bytes=1000)
    assert outcome(summary, tol_driven=True, accept_miss=False) == EXIT_TOL_MISSED
    err = capsys.readouterr().err
    assert "--tol 1.0e-01 not met with confidence (the upper 95% bound" in err
    summary.update(val_error=0.2)
    outcome(summary, tol_driven=True, accept_miss=False)
    assert "not met: held-out error 2.00e-01" in capsys.readouterr().err


# Mutant: a kept NIfTI affine with a non-finite entry taken as usable (a NaN affine written).
def test_reconstruct_refuses_a_nifti_affine_with_nan(tmp_path, capsys):
    pytest.importorskip("nibabel")
    import tensorly_cross as tlc
    from tensorly_cross import cli

    affine = np.eye(4)
    affine[0, 3] = np.nan
    path = str(tmp_path / "v.tt.npz")
    tlc.save_tt(path, _random_tt((4, 3, 5)), {"shape": [4, 3, 5],
                                             "nifti": {"affine": affine.tolist()}})
    output = str(tmp_path / "v.nii")
    assert cli.main(["reconstruct", path, "-o", output]) == cli.EXIT_INPUT
    assert "is not a 4x4 list of finite numbers" in capsys.readouterr().err
    assert not (tmp_path / "v.nii").exists()


# Mutant: an output inside the input's store folder accepted (writing it damages the input).
def test_compress_refuses_an_output_inside_the_input_store(tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    from tensorly_cross import cli

    store = str(tmp_path / "volume.zarr")
    zarr.create_array(store, shape=(6, 5, 4), chunks=(3, 5, 4), dtype="f8")[:] = 1.0
    code = cli.main(["compress", store, "-o", str(tmp_path / "volume.zarr" / "v.tt.npz"),
                     "--method", "stream", "-q"])
    assert code == cli.EXIT_USAGE
    assert "is inside the input" in capsys.readouterr().err


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SHAPE = (12, 10, 8)


def _smooth_float32(shape=SHAPE):
    grid = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return (np.sin(3 * grid[0]) + grid[1] ** 2 + np.cos(2 * grid[2])).astype(np.float32)


def test_a_nifti_slab_keeps_the_inputs_own_qform_moved_not_its_sform(tmp_path):
    """An input whose qform (scanner) differs from its sform (MNI): the slab's qform was
    set to the moved sform under the qform's code, so a viewer reading the qform put the
    slab in another place than the input's qform puts that voxel. Now each form is the
    input's own, moved to the slab's first voxel (nibabel's ``slicer`` moves both)."""
    nibabel = pytest.importorskip("nibabel")
    sform = np.array([[-2.0, 0, 0, 40], [0, 2.0, 0, -30], [0, 0, 3.0, -20], [0, 0, 0, 1]])
    qform = np.array([[1.5, 0, 0, -5], [0, 1.5, 0, -6], [0, 0, 1.5, -7], [0, 0, 0, 1]])
    image = nibabel.Nifti1Image(_smooth_float32(), sform)
    image.header.set_sform(sform, code="mni")
    image.header.set_qform(qform, code="scanner")
    source, tt_path = str(tmp_path / "v.nii"), str(tmp_path / "v.tt.npz")
    nibabel.save(image, source)
    assert cli.main(["compress", source, "-o", tt_path, "--rank", "4", "-q"]) == cli.EXIT_OK
    slab_path = str(tmp_path / "slab.nii")
    assert cli.main(["reconstruct", tt_path, "-o", slab_path, "--slice", "1=5"]) == cli.EXIT_OK
    slab = nibabel.load(slab_path)
    offset = np.array([0.0, 5.0, 0.0])
    for form, code, kept in (("sform", 4, sform), ("qform", 1, qform)):
        written, written_code = getattr(slab.header, f"get_{form}")(coded=True)
        assert written_code == code, form
        np.testing.assert_allclose(written[:3, :3], kept[:3, :3], err_msg=form)
        np.testing.assert_allclose(written[:3, 3], kept[:3, 3] + kept[:3, :3] @ offset,
                                   err_msg=form)


@pytest.mark.parametrize("name", ["out.nii.gz", "out.NII", "out.npy", "out.png", "out.h5",
                                  "out.zarr"])
def test_compress_refuses_an_output_named_as_another_format(tmp_path, capsys, name):
    """``compress v.nii -o out.nii.gz`` wrote the TT's zip archive under a NIfTI name
    (exit 0): every viewer then failed on it, and ``np.load('out.npy')`` gave an archive,
    not an array. ``reconstruct`` already refuses a PNG under another suffix; now
    ``compress`` refuses a volume's or a picture's suffix (exit 2) and names the command
    that writes one, before any work."""
    source = tmp_path / "v.npy"
    np.save(source, _smooth_float32())
    output = tmp_path / name
    code = cli.main(["compress", str(source), "-o", str(output), "-q"])
    assert code == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert "TT file" in error and "reconstruct" in error
    assert not output.exists()


@pytest.mark.parametrize("kind", ["complex", "float64"])
def test_a_nifti_of_a_tt_is_written_in_the_dtype_of_all_its_cores(tmp_path, kind):
    """A TT file whose first core is float32 and a later one complex (or float64 holding
    values beyond float32): ``reconstruct -o OUT.nii`` wrote float32, from the first
    core's dtype alone, dropping the imaginary part (or writing inf) with exit 0. Now the
    NIfTI's dtype holds every core's values."""
    nibabel = pytest.importorskip("nibabel")
    import tensorly as tl

    import tensorly_cross as tlc

    rng = np.random.default_rng(0)
    cores = [rng.standard_normal((1, 4, 2)).astype(np.float32), rng.standard_normal((2, 5, 2)),
             rng.standard_normal((2, 6, 1))]
    if kind == "complex":
        cores[1] = cores[1] + 1j * rng.standard_normal((2, 5, 2))
    else:
        cores[1] = cores[1] * 1e40
    path, output = str(tmp_path / "t.tt.npz"), str(tmp_path / "v.nii")
    tlc.save_tt(path, cores, {"shape": [4, 5, 6]})
    assert cli.main(["reconstruct", path, "-o", output]) == cli.EXIT_OK
    written = np.asarray(nibabel.load(output).dataobj)
    dense = np.asarray(tl.to_numpy(tl.tt_to_tensor([tl.tensor(core) for core in cores])))
    np.testing.assert_allclose(written, dense, rtol=1e-6)


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX")
def test_a_terminated_reconstruct_leaves_no_temporary_file(tmp_path):
    """SIGTERM (``timeout``, ``kill``, a job scheduler's time limit) while a whole NIfTI
    is written: Python's default handler ended the process on the spot, leaving the
    hidden ``.tensorly-cross-<hex>.tmp`` of gigabytes that the docs say only SIGKILL or a
    power cut leaves. Now SIGTERM ends the command as Ctrl-C does, its files cleaned up:
    one line, exit 143 (128 + SIGTERM)."""
    import tensorly_cross as tlc

    # 320 GB of float64, gzipped (ones: about 1000 to 1), so that it is still writing when
    # terminated and yet passes the check that the output's disk can hold it.
    shape = (20000, 20000, 100)
    tlc.save_tt(tmp_path / "huge.tt.npz", [np.ones((1, n, 1)) for n in shape],
                {"shape": list(shape)})
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorly_cross.cli", "reconstruct",
         str(tmp_path / "huge.tt.npz"), "-o", str(tmp_path / "huge.nii.gz")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".tensorly-cross-*.tmp")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the write never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, error = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, error
    assert error.strip().splitlines()[-1] == "tensorly-cross reconstruct: terminated"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["huge.tt.npz"]


def _paced_writes(monkeypatch):
    """Small blocks, each after a pause (at most about 24 MB a second on disk): the write of
    1.6 TB, unpaced, ran until the disk was full (ENOSPC, exit code 1) on a loaded machine
    before the signals were handled. The write still lasts far longer than they take."""
    from tensorly_cross import _reconstruct

    values = _reconstruct.volume_values

    def paced(*args):
        time.sleep(0.01)
        return values(*args)

    monkeypatch.setattr(_reconstruct, "BLOCK_ENTRIES", 2**16)
    monkeypatch.setattr(_reconstruct, "volume_values", paced)


def _terminate_while_writing(tmp_path, then, monkeypatch):
    """Run ``reconstruct`` of a huge NIfTI in this process, paced; once its temporary file
    exists, send this process SIGTERM, then call ``then()`` (from another thread). Returns
    main's exit code and what the thread saw as SIGTERM's handler during the command.
    ``then`` is not called once the command has ended (its signal would reach pytest)."""
    _paced_writes(monkeypatch)
    # 320 GB of float64, gzipped (ones: about 1000 to 1), so that it is still writing when
    # terminated and yet passes the check that the output's disk can hold it.
    shape = (20000, 20000, 100)
    tlc.save_tt(tmp_path / "huge.tt.npz", [np.ones((1, n, 1)) for n in shape],
                {"shape": list(shape)})
    seen, ended = {}, threading.Event()

    def signal_it():
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".tensorly-cross-*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.02)
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        if not ended.is_set():
            then()

    thread = threading.Thread(target=signal_it)
    thread.start()
    try:
        code = cli.main(["reconstruct", str(tmp_path / "huge.tt.npz"), "-o",
                         str(tmp_path / "huge.nii.gz")])
    finally:
        ended.set()
        thread.join()
    return code, seen["handler"]


class _Shutdown(BaseException):
    pass


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_main_keeps_an_embedding_programs_own_sigterm_handler(tmp_path, monkeypatch):
    received = []

    def shutdown(signum, frame):
        received.append(signum)
        raise _Shutdown

    previous = signal.signal(signal.SIGTERM, shutdown)
    try:
        with pytest.raises(_Shutdown):
            _terminate_while_writing(tmp_path, then=lambda: None, monkeypatch=monkeypatch)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["huge.tt.npz"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_main_keeps_sigterm_ignored_when_it_was(tmp_path, monkeypatch):
    # Ctrl-C must raise KeyboardInterrupt here: a shell without job control starts its
    # background jobs (`cmd &` in a script) with SIGINT ignored, and the write went on.
    interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        code, handler = _terminate_while_writing(
            tmp_path, then=lambda: os.kill(os.getpid(), signal.SIGINT), monkeypatch=monkeypatch)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, interrupt)
    assert handler is signal.SIG_IGN
    assert code == cli.EXIT_INTERRUPTED  # ended by the Ctrl-C, not by the ignored SIGTERM


def test_the_dtype_remedy_does_not_say_the_error_was_below_a_tol_met_at_round_off(tmp_path,
                                                                                  capsys):
    # Since the CLI takes the stream's verdict (c0aab1d), --tol 1e-17 is met on a constant
    # volume at an error of 1.8e-16; rounded to float32 it is a "dtype" miss whose remedy
    # said "Its error was below --tol before its cores were rounded", which it was not.
    from tensorly_cross import cli

    path, out = str(tmp_path / "c.npy"), str(tmp_path / "c.tt.npz")
    np.save(path, np.full((4, 5, 6), 3.0, dtype=np.float32))
    code = cli.main(["compress", path, "-o", out, "--tol", "1e-17", "--method", "stream",
                     "-q"])
    err = capsys.readouterr().err
    metadata = tlc.load_tt(out)[1]
    assert code == 3 and metadata["stop_reason"] == "dtype"
    assert metadata["error"] - metadata["rounding_error"] > 1e-17  # not below it
    assert "was below --tol" not in err and "--dtype float64" in err


def test_a_stream_that_meets_tol_at_the_data_s_precision_exits_0_with_stop_tol(tmp_path,
                                                                            capsys):
    # The library meets a tol below round-off (round-off is never kept as rank); the CLI
    # compared the error itself with --tol: a constant volume at --tol 1e-17 exited 3 with
    # "stop: None" and "Raise --max-rank", and info had no "stopped by" line.
    from tensorly_cross import cli

    path, out = str(tmp_path / "c.npy"), str(tmp_path / "c.tt.npz")
    np.save(path, np.full((4, 5, 6), 3.0))
    code = cli.main(["compress", path, "-o", out, "--tol", "1e-17", "--method", "stream",
                     "-q"])
    assert code == 0, capsys.readouterr().err
    assert tlc.load_tt(out)[1]["stop_reason"] == "tol"


def test_reconstruct_against_a_zero_slice_prints_no_made_up_relative_error(tmp_path, capsys):
    # A TT with round-off (1e-19) where the original slice is zero printed "relative
    # error 1.000e+281": ||TT|| over the 1e-300 floor. The relative error of a nonzero
    # slice against a zero one is inf; stderr says why and gives the largest |TT| there.
    from tensorly_cross import cli

    cores = [np.ones((1, 3, 1)), np.array([1.0, 1e-19]).reshape(1, 2, 1), np.ones((1, 2, 1))]
    path, original = str(tmp_path / "t.tt.npz"), str(tmp_path / "v.npy")
    tlc.save_tt(path, cores)
    volume = np.ones((3, 2, 2))
    volume[:, 1, :] = 0.0
    np.save(original, volume)
    common = [path, "--against", original, "-o", str(tmp_path / "s.npy"), "--force"]
    assert cli.main(["reconstruct", *common, "--slice", "1=1"]) == 0
    out, err = capsys.readouterr()
    assert float(out.split("relative error")[1]) == np.inf
    assert "zero" in err and "1e-19" in err
    assert cli.main(["reconstruct", *common, "--slice", "1=0"]) == 0  # unchanged elsewhere
    assert float(capsys.readouterr().out.split("relative error")[1]) < 1e-15


def _cosine(indices):
    return np.cos(indices.sum(axis=1) / 9.0)


# Mutant (_validation.check_bool): NumPy's bool refused (``isinstance(value, bool)`` only),
# though a flag read from an array is one.
def test_a_numpy_bool_flag_is_taken():
    tt, info = tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), random_state=0,
                            return_info=np.True_)
    assert info.n_sweeps >= 1
    with pytest.raises(TypeError, match="return_info must be True or False, got str"):
        tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), return_info="yes")


# Mutant (lazy.base.LazyTensor.stored): any ``lazy`` attribute taken for a view's tensor: a
# subclass's own flag of that name failed ("'bool' object has no attribute 'stored'").
def test_a_subclass_flag_named_lazy_is_not_a_view():
    class Flagged(tlc.LazyTensor):
        lazy = True

        def _evaluate(self, indices):
            return indices.sum(axis=1).astype(float)

    assert Flagged((3, 4)).stored is False


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


def _compressed_ramp(folder):
    """A 6^3 ramp saved as .npy and compressed exactly (stream): the TT file's path."""
    grid = np.arange(6.0)
    volume = folder / "v.npy"
    np.save(volume, np.add.outer(np.add.outer(grid, grid), grid))
    tt_file = folder / "v.tt.npz"
    assert cli.main(["compress", str(volume), "-o", str(tt_file), "--method", "stream",
                     "--tol", "1e-6", "-q"]) == cli.EXIT_OK
    return tt_file


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_reconstruct_force_over_a_private_slice_keeps_it_private(tmp_path, capsys):
    tt_file = _compressed_ramp(tmp_path)
    out = tmp_path / "s.npy"
    out.write_bytes(b"old")
    os.chmod(out, 0o600)
    previous = os.umask(0o022)
    try:
        assert cli.main(["reconstruct", str(tt_file), "-o", str(out), "--force"]) == cli.EXIT_OK
    finally:
        os.umask(previous)
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert np.load(out).shape == (6, 6)


# -- cli/compress.py -----------------------------------------------------------------------


def _compress(tmp_path, capsys, *flags, shape=(6, 6, 6)):
    """``tensorly-cross compress`` run in this process on a small .npy: (exit code, stderr)."""
    from tensorly_cross.cli import main

    path = tmp_path / "volume.npy"
    np.save(path, np.random.default_rng(0).random(shape))
    code = main(["compress", str(path), "-o", str(tmp_path / "out.tt.npz"), "-q", *flags])
    return code, capsys.readouterr().err


def test_compress_refuses_max_slices_with_tci_by_its_flags(tmp_path, capsys):
    # Mutant: only --method lsq is refused with --max-slices; TCI (which has no slice
    # budget) was then run, or failed in the library's terms, not the command's.
    code, err = _compress(tmp_path, capsys, "--rank", "2", "--max-slices", "2",
                          "--method", "tci")
    assert code == 2
    assert "--max-slices needs --method als or auto" in err and "not tci" in err


def test_compress_refuses_dataset_for_a_file_other_than_hdf5_as_a_usage_error(tmp_path, capsys):
    # Mutant: the command's own check dropped; the library refused it later, as an input
    # error (exit 1, not 2) naming its own argument ("dataset='vol'"), not the flag.
    code, err = _compress(tmp_path, capsys, "--dataset", "vol")
    assert code == 2
    assert "--dataset names an HDF5 dataset" in err and "is not .h5/.hdf5" in err


def test_compress_refuses_axes_that_repeat_one_beside_all_the_others(tmp_path, capsys):
    # Mutant: --axes checked as a set, so "0,1,2,2" (every axis, one twice) passed the
    # command's check and failed later, in the library's terms (exit 1).
    code, err = _compress(tmp_path, capsys, "--axes", "0,1,2,2", "--rank", "2")
    assert code == 2
    assert "--axes must be a permutation of the volume's 3 axes" in err


def test_compress_refuses_a_budget_the_held_out_entries_exhaust_on_a_2d_image(tmp_path, capsys):
    # Mutant: ``ndim > 2`` for the least-squares cross that auto runs: on an image the
    # budget went unchecked, and the library refused it later (exit 1, its own terms).
    code, err = _compress(tmp_path, capsys, "--max-evals", "2000", shape=(64, 64))
    assert code == 2
    assert "--max-evals 2000 is too small for the least-squares cross" in err


def test_compress_refuses_a_budget_equal_to_the_held_out_entries(tmp_path, capsys):
    # Mutant: ``max_evals < LSQ_VAL_SIZE``: a budget of exactly the 4000 held-out entries
    # leaves none for the cross ("Give more than 4000").
    from tensorly_cross.options import LSQ_VAL_SIZE

    code, err = _compress(tmp_path, capsys, "--max-evals", str(LSQ_VAL_SIZE),
                          shape=(20, 20, 20))  # more entries than the held-out ones
    assert code == 2
    assert f"--max-evals {LSQ_VAL_SIZE} is too small for the least-squares cross" in err


@pytest.mark.parametrize("suffix", [".npy", ".h5"])
def test_compress_refuses_a_budget_too_small_before_connecting_to_the_scheduler(
        tmp_path, capsys, suffix):
    # The budget was checked once connected: with a scheduler that cannot be reached the
    # user waited for dask's connect timeout (30 s) to hear of the scheduler, not of the
    # budget, which the volume's metadata alone refutes. The timeout is cut to 1 s here so
    # that a regression fails fast (exit 1, the scheduler's error) rather than waits.
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    values = np.random.default_rng(0).random((20, 20, 20))
    path = tmp_path / f"volume{suffix}"
    if suffix == ".npy":
        np.save(path, values)
    else:
        with h5py.File(path, "w") as file:
            file["vol"] = values
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main(["compress", str(path), "-o", str(tmp_path / "out.tt.npz"), "-q",
                     "--max-evals", "10", "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--max-evals 10 is too small for the least-squares cross" in err
    assert "--scheduler" not in err
    assert not (tmp_path / "out.tt.npz").exists()


def test_compress_says_the_cross_of_a_gzipped_nifti_does_not_use_the_scheduler(
        tmp_path, loopback_cluster, capsys):
    # Mutant: ".nii.gz" left out of the files the cross reads in this process: no warning
    # that --scheduler goes unused for it (as for .nii and .npy).
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross.cli import main

    grid = np.linspace(0, 1, 8)
    path = tmp_path / "v.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.add.outer(np.add.outer(grid, grid), grid),
                                     np.eye(4)), str(path))
    code = main(["compress", str(path), "-o", str(tmp_path / "c.tt.npz"), "--method", "tci",
                 "--scheduler", loopback_cluster.scheduler_address, "--tol", "1e-6", "-q"])
    assert code == 0
    assert "warning: --scheduler is not used by the cross for 'v.nii.gz'" in \
        capsys.readouterr().err


@pytest.mark.parametrize("dtype, stored", [(np.int16, np.float32), (np.int32, np.float64)])
def test_compress_stores_integer_volumes_in_the_documented_core_dtype(tmp_path, capsys, dtype,
                                                                    stored):
    # Mutant: ``itemsize <= 1``: an int16 volume (a CT, most NIfTI) was stored in float64
    # cores, twice the file, where --dtype's help says "float32 for integers of 16 bits or
    # fewer".
    from tensorly_cross import load_tt
    from tensorly_cross.cli import main

    grid = np.arange(8)
    path = tmp_path / "v.npy"
    np.save(path, np.add.outer(np.add.outer(grid, grid), grid).astype(dtype))
    output = tmp_path / "v.tt.npz"
    assert main(["compress", str(path), "-o", str(output), "--method", "stream", "-q"]) == 0
    tt, _ = load_tt(str(output))
    assert all(np.asarray(core).dtype == stored for core in tt.factors)


def test_the_command_line_does_not_advise_a_val_size_it_has_no_flag_for(tmp_path, capsys):
    # nibabel's own test volume; a TCI pass whose residual a handful of held-out voxels
    # carry warns (UnseenStructureWarning) with the library's advice "Raise val_size",
    # which compress has no flag for.
    pytest.importorskip("nibabel")
    from nibabel.testing import data_path

    from tensorly_cross import cli

    source = os.path.join(data_path, "reoriented_anat_moved.nii")
    output = str(tmp_path / "anat.tt.npz")
    code = cli.main(["compress", source, "--method", "tci", "--tol", "0.1", "-o", output,
                     "--accept-miss"])
    assert code == cli.EXIT_OK
    err = capsys.readouterr().err
    assert "UnseenStructureWarning" in err  # the warning itself is kept
    assert "val_size" not in err
    assert "reconstruct" in err and "--against" in err  # what the command line offers


def _flags(parser):
    return {flag for action in parser._actions for flag in action.option_strings}


@pytest.mark.parametrize("stop, passes", [("max_rank", None), ("stalled", None),
                                          ("n_iter_max", None), ("max_evals", None),
                                          ("max_rank", 2), ("dtype", None),
                                          ("max_width", 2)])
def test_a_missed_tol_of_the_demo_advises_what_the_demo_or_compress_takes(
        tmp_path, monkeypatch, capsys, stop, passes):
    # `tensorly-cross demo --volume mni152 --tol 0.01 --method lsq` stalls at rank 64 and
    # said "Raise --max-rank or --n-iter-max": flags the demo has not (a usage error).
    pytest.importorskip("zarr")
    from tensorly_cross.datasets import blob_phantom, write_volume

    shape = (16, 16, 16)
    volume = write_volume(str(tmp_path / "blobs16.zarr"), blob_phantom(shape), shape,
                          chunks=(8, 8, 8))
    summary = dict(stop=stop, passes=passes, tol=1e-3, val_error=5e-3,
                   output=str(tmp_path / "blobs16.tt.npz"), tt_bytes=100,
                   input_bytes=1000, file_bytes=None)
    assert outcome(summary, True, False, demo_volume=volume) == 3
    message = capsys.readouterr().err
    command = re.search(r"\((tensorly-cross compress [^)]*)\)", message)
    demo_part = message.replace(command.group(0), "") if command else message
    parsers = build_parser().subcommands
    assert set(re.findall(r"--[a-z][a-z-]*", demo_part)) <= _flags(parsers["demo"])
    if command is None:
        return
    monkeypatch.chdir(tmp_path)  # the command writes OUT.tt.npz where it runs
    argv = shlex.split(command.group(1))[1:]
    assert main(argv + ["-q"]) in (0, 3)  # a run, not a usage error
    assert (tmp_path / "OUT.tt.npz").is_file()


@pytest.mark.parametrize("method", ["tci", "lsq"])
def test_the_demo_s_rerun_advice_keeps_the_method_it_was_asked_for(tmp_path, monkeypatch,
                                                                  capsys, method):
    # Without it the compress command line ran compress's auto (the stream or lsq) instead
    # of the TCI the user had asked the demo for.
    pytest.importorskip("zarr")
    from tensorly_cross.datasets import blob_phantom, write_volume

    shape = (16, 16, 16)
    volume = write_volume(str(tmp_path / "blobs16.zarr"), blob_phantom(shape), shape,
                          chunks=(8, 8, 8))
    summary = dict(stop="stalled", passes=None, tol=1e-3, val_error=5e-3,
                   output=str(tmp_path / "blobs16.tt.npz"), tt_bytes=100,
                   input_bytes=1000, file_bytes=None)
    assert outcome(summary, True, False, demo_volume=volume, demo_method=method) == 3
    command = re.search(r"\((tensorly-cross compress [^)]*)\)", capsys.readouterr().err)
    argv = shlex.split(command.group(1))[1:]
    assert argv[argv.index("--method") + 1] == method
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["-q"]) in (0, 3)
    assert (tmp_path / "OUT.tt.npz").is_file()


@pytest.mark.parametrize("stop, flag", [("stalled", "--patience"), ("n_iter_max", "--n-iter-max"),
                                        ("max_rank", "--max-rank"), ("max_evals", "--max-evals")])
def test_a_missed_tol_of_compress_names_the_flag_of_its_stop(tmp_path, capsys, stop, flag):
    # A stalled run was told to raise --max-rank or --n-iter-max, not the --patience that
    # stopped it.
    summary = dict(stop=stop, passes=None, tol=1e-3, val_error=5e-3,
                   output=str(tmp_path / "v.tt.npz"), tt_bytes=100, input_bytes=1000,
                   file_bytes=None)
    assert outcome(summary, True, False) == 3
    message = capsys.readouterr().err
    assert flag in message
    assert set(re.findall(r"--[a-z][a-z-]*", message)) <= _flags(build_parser().subcommands[
        "compress"])


@pytest.mark.parametrize("order", [None, "interleaved"])
def test_reconstruct_writes_a_slice_of_a_tt_of_more_than_64_modes(tmp_path, order):
    # The slice went through an array with one axis per mode: NumPy's "maximum supported
    # dimension for an ndarray is currently 64" for a TT of 71 modes, most of size one.
    from tensorly_cross import cli

    shape = (3,) + (1,) * 69 + (4,)
    weights = np.arange(1.0, len(shape) + 1)

    def function(indices):
        return 1.0 + indices @ weights

    metadata = {}
    if order is None:
        tt = tlc.tt_cross(function, shape=shape, random_state=0)
    else:  # digits of an interleaved layout: read entry by entry
        quantics = tlc.QuanticsTensor(tlc.FunctionTensor(function, shape), order=order)
        tt = tlc.tt_cross(quantics, random_state=0)
        metadata = {"shape": list(shape), "quantics": {"order": order}}
    path = tmp_path / "wide.tt"
    tlc.save_tt(path, tt, metadata=metadata)
    output = tmp_path / "slice.npy"
    assert cli.main(["reconstruct", str(path), "-o", str(output)]) == cli.EXIT_OK
    # The default slice shows the last two axes longer than 1: (3, 4) here.
    expected = 1.0 + np.arange(3)[:, None] * weights[0] + np.arange(4) * weights[-1]
    np.testing.assert_allclose(np.load(output), expected, rtol=1e-10)


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


def test_compress_volume_reports_the_reads_of_its_own_run(tmp_path):
    # The volume's read counters run over its life: a second compress_volume of one open
    # volume reported both runs' bytes and pages as its own.
    from tensorly_cross.cli import compress_volume

    rng = np.random.default_rng(0)
    data = np.einsum("i,j,k->ijk", *(rng.random(n) for n in (24, 25, 26)))
    np.save(tmp_path / "v.npy", data)
    volume = tlc.open_volume(str(tmp_path / "v.npy"))
    summaries = [compress_volume(volume, str(tmp_path / f"v{k}.tt.npz"), tol=None, rank=2,
                                 method="als", quiet=True, seed=k) for k in range(2)]
    assert summaries[0]["bytes_read"] > 0
    assert sum(s["bytes_read"] for s in summaries) == volume.bytes_read
    assert sum(s["pages_read"] for s in summaries) == volume.pages_read


def test_compress_names_the_method_flag_when_lsq_refuses_a_1d_volume(tmp_path, capsys):
    # The least-squares cross refuses a volume of one axis; the command line said so in
    # the library's terms ("method='lsq' needs ..."), an argument it has no spelling for.
    code, err = _compress(tmp_path, capsys, "--method", "lsq", shape=(50,))
    assert code == 1
    assert "--method lsq needs a tensor with at least 2 modes, got shape (50,)" in err
    assert "method='lsq'" not in err


def test_compress_oversample_without_rank_on_a_1d_volume_is_refused_by_its_flags(tmp_path,
                                                                                capsys):
    # --method auto without --rank runs TCI on a volume of one axis (the least-squares
    # cross needs two), which does not oversample: the library refused it later, in its
    # own terms ("oversample=2.0 needs ... pass rank= ... or method='lsq'"), exit 1.
    code, err = _compress(tmp_path, capsys, "--oversample", "2", shape=(50,))
    assert code == 2
    assert "--oversample on a volume of one axis needs --rank" in err
    assert "oversample=" not in err and "method=" not in err


@pytest.mark.parametrize("flags, method", [((), "TCI"), (("--rank", "2"), "the ALS cross"),
                                           (("--method", "tci"), "TCI")])
def test_compress_budget_below_the_held_out_entries_of_a_1d_volume_names_the_cross_that_runs(
        tmp_path, capsys, flags, method):
    # On a volume of one axis --method auto runs TCI (the least-squares cross needs two
    # axes), or the ALS cross with --rank; --max-evals 10 was refused as "the least-squares
    # cross, the default, holds out 4000", a cross that does not run there.
    code, err = _compress(tmp_path, capsys, "--max-evals", "10", *flags, shape=(50,))
    assert code == 2
    assert f"--max-evals 10 is too small for {method}" in err
    assert "1000 held-out entries count as evaluations" in err
    assert "least-squares" not in err and "4000" not in err


def test_compress_budget_between_the_held_out_entries_of_tci_and_lsq_runs_tci_on_1d(
        tmp_path, capsys):
    # 2000 is enough for TCI's 1000 held-out entries: a 1-D volume is crossed (by TCI).
    code, err = _compress(tmp_path, capsys, "--max-evals", "2000", "--accept-miss",
                          shape=(50,))
    assert code == 0, err


def test_compress_budget_of_a_1d_volume_in_quantics_layout_names_the_least_squares_cross(
        tmp_path, capsys):
    # --quantics folds a volume of one axis into several modes, where auto runs the
    # least-squares cross (4000 held-out entries), not TCI: the library refused it later,
    # in its own terms (exit 1).
    code, err = _compress(tmp_path, capsys, "--max-evals", "2000", "--quantics",
                          shape=(8192,))
    assert code == 2
    assert "--max-evals 2000 is too small for the least-squares cross" in err


@pytest.mark.parametrize("flags, shape", [(("--quantics",), (1024,)), ((), (30, 30))])
def test_compress_budget_above_all_entries_of_a_small_volume_is_not_refused(
        tmp_path, capsys, flags, shape):
    # The held-out entries are drawn with replacement: they read at most all of a small
    # volume's entries, and the library takes any budget above that. --max-evals 2000 of a
    # 1-D volume of 1024 entries in quantics layout (the least-squares cross runs there)
    # was refused as below "its 4000 held-out entries", though it crossed before.
    code, err = _compress(tmp_path, capsys, "--max-evals", "2000", "--accept-miss", *flags,
                          shape=shape)
    assert code == 0, err


def test_compress_budget_within_all_entries_of_a_small_volume_says_they_are_all_read(
        tmp_path, capsys):
    code, err = _compress(tmp_path, capsys, "--max-evals", "900", shape=(30, 30))
    assert code == 2
    assert "--max-evals 900 is too small for the least-squares cross" in err
    assert "all 900 entries of this volume" in err


def _nifti_with_extensions(nibabel, path, endian="<"):
    """A small NIfTI-1 file at ``path`` carrying a comment and an AFNI extension."""
    from nibabel.nifti1 import Nifti1Extension

    header = nibabel.Nifti1Header().as_byteswapped(endian)
    image = nibabel.Nifti1Image(_smooth_float32(), np.diag([2.0, 2.0, 2.0, 1.0]), header)
    image.header.extensions.append(Nifti1Extension("comment", b"scanner notes: run 3"))
    afni = b'<?xml version="1.0" ?>\n<AFNI_attributes self_idcode="XYZ_1" />\n'
    image.header.extensions.append(Nifti1Extension("afni", afni))
    nibabel.save(image, path)
    return [(6, b"scanner notes: run 3"), (4, afni)]


@pytest.mark.parametrize("output, endian, flags", [
    ("v.nii.gz", "<", []), ("v.nii", ">", []), ("slab.nii", "<", ["--slice", "1=5"]),
    ("v.nii", "<", ["--method", "stream"])])
def test_reconstruct_to_nifti_keeps_the_input_s_header_extensions(tmp_path, output, endian,
                                                                  flags):
    # The TT file kept the input's header but not its extensions (comments, AFNI or DICOM
    # blocks): reconstruct -o OUT.nii wrote none of them.
    nibabel = pytest.importorskip("nibabel")
    source, tt_path = str(tmp_path / "in.nii"), str(tmp_path / "in.tt.npz")
    kept = _nifti_with_extensions(nibabel, source, endian)
    compress_flags = [flag for flag in flags if flag == "--method" or flag == "stream"]
    rank = [] if compress_flags else ["--rank", "4"]
    assert cli.main(["compress", source, "-o", tt_path, "-q", *rank,
                     *compress_flags]) == cli.EXIT_OK
    out = str(tmp_path / output)
    slice_flags = [flag for flag in flags if flag not in compress_flags]
    assert cli.main(["reconstruct", tt_path, "-o", out, *slice_flags]) == cli.EXIT_OK
    written = nibabel.load(out)
    assert [(int(ext.get_code()), ext.get_content()) for ext in written.header.extensions] == kept
    assert written.header.endianness == nibabel.load(source).header.endianness
    full = np.asarray(nibabel.load(source).dataobj)
    expected = full[:, 5:6] if slice_flags else full
    np.testing.assert_allclose(np.asarray(written.dataobj), expected, atol=1e-3)


def test_compress_keeps_the_header_extensions_that_fit_its_bound_in_order(tmp_path,
                                                                          monkeypatch):
    # The extensions ride in the TT file's JSON metadata: those past MAX_EXTENSION_BYTES of
    # contents in all (a file embedded whole) are left out, the others kept in order.
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross import _reconstruct

    source, tt_path = str(tmp_path / "in.nii"), str(tmp_path / "in.tt.npz")
    comment, afni = _nifti_with_extensions(nibabel, source)
    monkeypatch.setattr(_reconstruct, "MAX_EXTENSION_BYTES", len(comment[1]) + 10)
    assert cli.main(["compress", source, "-o", tt_path, "-q", "--rank", "4"]) == cli.EXIT_OK
    _, metadata = tlc.load_tt(tt_path)
    assert [code for code, _ in metadata["nifti"]["extensions"]] == [comment[0]]
    out = str(tmp_path / "out.nii")
    assert cli.main(["reconstruct", tt_path, "-o", out]) == cli.EXIT_OK
    written = nibabel.load(out).header.extensions
    assert [(int(ext.get_code()), ext.get_content()) for ext in written] == [comment]


def test_info_says_how_many_nifti_header_extensions_the_tt_file_keeps(tmp_path, capsys):
    # info said "affine and header kept" whether or not the TT file kept the input's
    # header extensions too (which reconstruct -o OUT.nii writes back).
    nibabel = pytest.importorskip("nibabel")
    source, tt_path = str(tmp_path / "in.nii"), str(tmp_path / "in.tt.npz")
    _nifti_with_extensions(nibabel, source)
    assert cli.main(["compress", source, "-o", tt_path, "-q", "--method", "stream"]) == \
        cli.EXIT_OK
    plain, plain_tt = str(tmp_path / "plain.nii"), str(tmp_path / "plain.tt.npz")
    nibabel.save(nibabel.Nifti1Image(_smooth_float32(), np.eye(4)), plain)
    assert cli.main(["compress", plain, "-o", plain_tt, "-q", "--method", "stream"]) == \
        cli.EXIT_OK
    capsys.readouterr()
    assert cli.main(["info", tt_path]) == cli.EXIT_OK
    assert "NIfTI               affine, header and 2 extensions kept" in capsys.readouterr().out
    assert cli.main(["info", plain_tt]) == cli.EXIT_OK
    assert "NIfTI               affine and header kept" in capsys.readouterr().out
