"""Audit s20 of the command line and the readers, on real files: ``--rank`` stopped on the
hidden ``--tol`` default (and capped TCI's ranks), an output inside a zarr input destroyed
it, ``reconstruct --against`` printed nan for large voxels, a slice too large for memory
ended in a traceback, options were silently ignored, and NumPy's overflow warnings reached
the user. Each test failed before its fix."""

import os
import warnings

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross import cli


def _smooth(size=16, noise=1e-3, seed=0):
    grid = np.linspace(0.0, 1.0, size)
    values = 1.0 / (1.0 + np.add.outer(np.add.outer(grid, grid), grid))
    return values + noise * np.random.default_rng(seed).standard_normal(values.shape)


@pytest.fixture
def noisy(tmp_path):
    """A smooth volume plus noise: rank 1-2 meets --tol 0.1, any rank is below 1e-3."""
    path = tmp_path / "v.npy"
    np.save(path, _smooth())
    return path


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
    array[:] = _smooth(8)
    before = sorted(os.listdir(store))
    code = cli.main(["compress", str(store), "-o", str(store / inside), "--force", "-q"])
    assert code == cli.EXIT_USAGE
    assert "is inside the input" in capsys.readouterr().err
    assert sorted(os.listdir(store)) == before
    assert np.array_equal(tlc.open_volume(str(store)).evaluate(np.array([[1, 2, 3]])),
                          _smooth(8)[1:2, 2, 3])


def test_reconstruct_against_huge_voxels_prints_the_error_not_nan(tmp_path, capsys):
    path = tmp_path / "huge.npy"
    np.save(path, _smooth(noise=0) * 1e306)
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


def test_open_volume_refuses_a_dataset_for_a_volume_that_is_not_hdf5(noisy):
    with pytest.raises(ValueError, match="dataset='vol' names an HDF5 dataset"):
        tlc.open_volume(str(noisy), dataset="vol")
    with pytest.raises(ValueError, match="names an HDF5 dataset"):
        tlc.open_volume(np.ones((3, 3)), dataset="vol")


def test_save_tt_takes_numpy_ints_in_a_list_as_in_a_tuple(tmp_path):
    cores = [np.ones((1, 3, 2)), np.ones((2, 4, 1))]
    for name, shape in (("a", (np.int64(3), np.int64(4))), ("b", [np.int64(3), np.int64(4)])):
        tlc.save_tt(tmp_path / f"{name}.npz", cores, {"shape": shape})
        assert tlc.load_tt(tmp_path / f"{name}.npz")[1]["shape"] == [3, 4]


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
    np.save(path, _smooth(noise=0.01).astype(dtype))
    assert cli.main(["compress", str(path), "-o", str(tmp_path / "s.tt.npz"), "--method",
                     "stream", "--tol", "0.05"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert ("(exact: every voxel read)" in out) == exact
    assert ("plus the cores' rounding" in out) == (not exact)
