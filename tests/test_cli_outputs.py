"""The CLI refuses outputs it would destroy or cannot write, advice it cannot follow, and
shows a TT file's hand-written metadata instead of failing on it."""

import json
import os
import re

import numpy as np
import pytest

from tensorly_cross import cli, save_tt
from tensorly_cross.cli._parser import build_parser


@pytest.fixture
def volume(tmp_path):
    """A smooth 24^3 float64 volume as .npy."""
    grid = np.linspace(0.0, 1.0, 24)
    path = tmp_path / "v.npy"
    np.save(path, np.add.outer(np.add.outer(np.sin(3 * grid), grid**2), np.cos(2 * grid)))
    return path


@pytest.fixture
def tt_file(tmp_path):
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal((1, 4, 2)), rng.standard_normal((2, 5, 2)),
             rng.standard_normal((2, 6, 1))]
    return save_tt(tmp_path / "t.tt.npz", cores, {"shape": [4, 5, 6]})


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink"])
def test_compress_refuses_to_write_over_its_input(volume, capsys, spelling):
    output = {"same": str(volume), "dot": os.path.join(str(volume.parent), ".", "v.npy"),
              "symlink": str(volume.parent / "link.npy")}[spelling]
    if spelling == "symlink":
        os.symlink(volume, output)
    before = volume.read_bytes()
    assert cli.main(["compress", str(volume), "-o", output, "--force", "-q"]) == cli.EXIT_USAGE
    assert "is the input" in capsys.readouterr().err
    assert volume.read_bytes() == before


def test_compress_to_an_existing_directory_names_it(volume, tmp_path, capsys):
    folder = tmp_path / "adir"
    folder.mkdir()
    assert cli.main(["compress", str(volume), "-o", str(folder), "--force", "-q"]) == \
        cli.EXIT_INPUT
    assert f"the output {str(folder)!r} is a directory" in capsys.readouterr().err


def test_reconstruct_to_an_existing_directory_names_it(tt_file, tmp_path, capsys):
    folder = tmp_path / "adir.png"
    folder.mkdir()
    assert cli.main(["reconstruct", tt_file, "--png", str(folder), "--force"]) == \
        cli.EXIT_INPUT
    error = capsys.readouterr().err
    assert f"the output {str(folder)!r} is a directory" in error and ".png-" not in error


def test_a_dataset_for_a_file_that_is_not_hdf5_exits_2(volume, tmp_path, capsys):
    output = str(tmp_path / "x.tt.npz")
    assert cli.main(["compress", str(volume), "-o", output, "--dataset", "foo"]) == \
        cli.EXIT_USAGE
    assert "--dataset names an HDF5 dataset" in capsys.readouterr().err
    assert not os.path.exists(output)


def test_a_budget_too_small_for_a_sweep_is_reported_as_the_flag(volume, tmp_path, capsys):
    args = ["compress", str(volume), "-o", str(tmp_path / "x.tt.npz"), "--max-evals",
            "4001", "--method", "lsq", "--tol", "1e-12", "-q"]
    assert cli.main(args) == cli.EXIT_INPUT
    error = capsys.readouterr().err
    assert "--max-evals 4001 is too small" in error and "max_evals=" not in error


def test_info_shows_hand_written_metadata_as_it_is(tt_file, tmp_path, capsys):
    tt_path = save_tt(tmp_path / "w.tt.npz", [np.ones((1, 4, 1))],
                      {"val_error": "abc", "n_evals": "many", "source": 5,
                       "rounding_error": "x", "n_heldout": 3, "heldout_bound": "y"})
    assert cli.main(["info", tt_path]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "held-out rel. error abc" in out and "entries evaluated   many" in out


def test_info_names_the_mode_order_and_no_missing_library_version(tmp_path, capsys):
    # A file of save_tt printed "library version     None"; the --axes order of a
    # compressed file was recorded but not shown.
    plain = save_tt(tmp_path / "p.tt.npz", [np.ones((1, 4, 1))])
    assert cli.main(["info", plain]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "library version" not in out and "mode order" not in out
    cores = [np.ones((1, 4, 1)), np.ones((1, 3, 1)), np.ones((1, 2, 1))]
    ordered = save_tt(tmp_path / "o.tt.npz", cores,
                      {"axes": [0, 2, 1], "shape": [4, 2, 3], "library_version": "9.9"})
    assert cli.main(["info", ordered]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "mode order          the source's axes (0, 2, 1) (--axes)" in out
    assert "library version     9.9" in out


@pytest.mark.parametrize("nifti, problem", [({"affine": "x"}, "its affine 'x'"),
                                            ({"affine": np.eye(3).tolist()}, "its affine"),
                                            ({"header": "!!"}, "its header"),
                                            ([1, 2], "a JSON list"),
                                            ({"extensions": "x"}, "its extensions 'x'"),
                                            ({"extensions": [[6, "!!"]]}, "its extensions"),
                                            ({"extensions": [[2**31, ""]]}, "its extensions"),
                                            ({"extensions": [[6]]}, "its extensions")])
def test_unusable_nifti_metadata_is_named_before_writing(tmp_path, capsys, nifti, problem):
    tt_path = save_tt(tmp_path / "n.tt.npz", [np.ones((1, 4, 2)), np.ones((2, 5, 1))],
                      {"nifti": nifti})
    output = tmp_path / "out.nii.gz"
    assert cli.main(["reconstruct", tt_path, "-o", str(output)]) == cli.EXIT_INPUT
    error = capsys.readouterr().err
    assert f"{tt_path!r}: its 'nifti' metadata is unusable ({problem}" in error
    assert not output.exists()


def test_a_tt_file_with_a_zero_size_mode_is_refused_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "z.tt.npz"
    meta = {"format": "tensorly-cross-tt", "format_version": 1, "n_cores": 1}
    np.savez(path, core_0=np.ones((1, 0, 1)),
             meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    for command in (["info", str(path)], ["reconstruct", str(path), "-o",
                                           str(tmp_path / "z.npy")]):
        assert cli.main(command) == cli.EXIT_INPUT
        assert "every mode size and rank must be >= 1" in capsys.readouterr().err


def test_the_demo_offers_no_method_that_needs_a_rank(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["demo", "--method", "als"])
    assert caught.value.code == cli.EXIT_USAGE
    assert "argument --method: invalid choice: 'als'" in capsys.readouterr().err


def test_the_demo_takes_the_dtype_its_advice_names():
    # A missed --tol from rounding advises "pass --dtype float64": the demo must take it.
    args = build_parser().parse_args(["demo", "--dtype", "float64"])
    assert args.dtype == "float64"


@pytest.mark.parametrize(("sweeps", "said"),
                         [(1, "(1 sweep, stop: tol)"), (3, "(3 sweeps, stop: tol)")])
def test_the_summary_counts_sweeps_in_words(sweeps, said):
    from tensorly_cross.cli.summary import format_summary

    summary = {"shape": (4, 4), "ranks": (1, 2, 1), "n_params": 16, "compression": 1.0,
               "seconds": 0.5, "sweeps": sweeps, "stop": "tol"}
    assert said in format_summary(summary)


@pytest.fixture
def unread(monkeypatch):
    """Fail a test that opens the volume: an output refusal must come before any reading."""
    import tensorly_cross

    def refuse(*args, **kwargs):
        raise AssertionError("the volume was opened before the output was refused")

    monkeypatch.setattr(tensorly_cross, "open_volume", refuse)


def _refused_before_reading(volume, output, capsys):
    """Exit code and the one-line message of ``compress volume -o output --force``."""
    code = cli.main(["compress", str(volume), "-o", str(output), "--force", "-q"])
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    return code, error


def test_a_trailing_slash_on_a_missing_folder_is_refused_before_reading(
        volume, tmp_path, capsys, unread):
    output = str(tmp_path / "newdir") + "/"
    code, error = _refused_before_reading(volume, output, capsys)
    assert code == cli.EXIT_INPUT
    assert f"the output {output!r} ends in '/': it names a folder, which does not exist" \
        in error


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_output_is_refused_before_reading(volume, tmp_path, capsys, unread):
    output = tmp_path / "fifo.npz"
    os.mkfifo(output)
    code, error = _refused_before_reading(volume, output, capsys)
    assert code == cli.EXIT_INPUT and "is not a regular file" in error


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="a POSIX device")
def test_a_device_output_is_refused_before_reading(volume, capsys, unread):
    code, error = _refused_before_reading(volume, "/dev/null", capsys)
    assert code == cli.EXIT_INPUT and "'/dev/null' is not a regular file" in error


def test_a_dangling_link_output_is_refused_before_reading(volume, tmp_path, capsys, unread):
    output = tmp_path / "dangling.npz"
    os.symlink(tmp_path / "missing" / "x.npz", output)
    code, error = _refused_before_reading(volume, output, capsys)
    assert code == cli.EXIT_INPUT
    assert "whose folder does not exist" in error and str(output) in error


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_an_output_in_an_unwritable_folder_is_refused_before_reading(
        volume, tmp_path, capsys, unread):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, error = _refused_before_reading(volume, folder / "x.npz", capsys)
    finally:
        folder.chmod(0o700)
    assert code == cli.EXIT_INPUT and "cannot write" in error
    assert os.listdir(folder) == []


def test_an_output_that_root_cannot_write_either_is_refused_before_reading(
        volume, capsys, monkeypatch, unread):
    # As root (containers, CI) permissions do not refuse: the probe's own failure does.
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT and ".tensorly-cross-" in str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    code, error = _refused_before_reading(volume, volume.parent / "x.npz", capsys)
    assert code == cli.EXIT_INPUT
    assert f"cannot write {str(volume.parent / 'x.npz')!r}: Permission denied" in error


def test_the_writability_probe_leaves_nothing_behind(volume, tmp_path):
    output = tmp_path / "x.tt.npz"
    assert cli.main(["compress", str(volume), "-o", str(output), "-q", "--tol", "0.1"]) == \
        cli.EXIT_OK
    assert sorted(os.listdir(tmp_path)) == ["v.npy", "x.tt.npz"]


@pytest.mark.parametrize("where", ["sub/x.npz", "x.npz"])
def test_an_output_anywhere_in_a_zarr_inputs_store_exits_2(tmp_path, capsys, where):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "grp.zarr"), mode="w")
    group.create_array("sub/vol", shape=(8, 8, 8), chunks=(4, 4, 4), dtype="f4")[:] = 1.0
    output = tmp_path / "grp.zarr" / where
    args = ["compress", str(tmp_path / "grp.zarr" / "sub" / "vol"), "-o", str(output), "-q"]
    assert cli.main(args) == cli.EXIT_USAGE
    assert "is inside the input" in capsys.readouterr().err
    assert not output.exists()


def test_an_output_beside_a_zarr_store_is_written(tmp_path):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "grp.zarr"), mode="w")
    group.create_array("sub/vol", shape=(8, 8, 8), chunks=(4, 4, 4), dtype="f4")[:] = 1.0
    output = tmp_path / "grp.zarr.tt.npz"
    args = ["compress", str(tmp_path / "grp.zarr" / "sub" / "vol"), "-o", str(output), "-q"]
    assert cli.main(args) == cli.EXIT_OK and output.exists()


def test_float32_cores_beyond_range_are_refused_in_one_line_without_warnings(
        tmp_path, capsys):
    import warnings

    grid = np.linspace(0.0, 1.0, 16)
    path = tmp_path / "huge.npy"
    np.save(path, 1e300 * (np.add.outer(np.add.outer(grid, grid), grid) + 1))
    output = tmp_path / "out.npz"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main(["compress", str(path), "-o", str(output), "-q", "--dtype",
                         "float32"])
    assert code == cli.EXIT_INPUT and not output.exists()
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == []
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "non-finite" in error


@pytest.mark.parametrize("nifti, problem", [
    ({"affine": np.eye(4).tolist(), "header": "A" * 464},  # 348 zero bytes
     "nibabel cannot use it: data code 0 not supported"),
    ({"affine": [[0.0] * 4] * 3 + [[0.0, 0.0, 0.0, 1.0]]},
     # "SVD did not converge" with the floors' nibabel and NumPy
     "nibabel cannot use it: (Could not decompose affine|SVD did not converge)")])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_metadata_nibabel_refuses_is_named_in_one_line(tmp_path, capsys, caplog,
                                                            nifti, problem, suffix):
    tt_path = save_tt(tmp_path / "n.tt.npz", [np.ones((1, 4, 2)), np.ones((2, 5, 1))],
                      {"nifti": nifti})
    output = tmp_path / f"out{suffix}"
    assert cli.main(["reconstruct", tt_path, "-o", str(output)]) == cli.EXIT_INPUT
    error = capsys.readouterr().err
    assert re.search(re.escape(f"{tt_path!r}: its 'nifti' metadata is unusable (")
                     + problem + r"\)", error)
    assert error.count("\n") == 1
    assert not [record for record in caplog.records if record.name.startswith("nibabel")]
    assert not output.exists() and os.listdir(tmp_path) == ["n.tt.npz"]


def _run_with_stdout_closed(args, cwd, lines_read=0):
    """Run the command with its stdout a pipe whose reader goes after ``lines_read`` lines
    (``| head -1`` exiting); its exit code and stderr."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    process = subprocess.Popen([sys.executable, "-m", "tensorly_cross.cli", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                               env=env)
    for _ in range(lines_read):
        process.stdout.readline()
    process.stdout.close()  # the command's next write meets EPIPE
    error = process.stderr.read().decode()
    return process.wait(timeout=300), error


@pytest.mark.skipif(os.name != "posix", reason="SIGPIPE and its exit code are POSIX")
def test_compress_piped_to_head_exits_141_quietly_with_the_file_written(volume, tmp_path):
    # The reader takes the "method:" line and goes: the summary finds the pipe closed.
    output = tmp_path / "out.tt.npz"
    code, error = _run_with_stdout_closed(
        ["compress", str(volume), "-o", str(output), "--tol", "0.1"], tmp_path, 1)
    assert (code, error) == (cli.EXIT_STDOUT_CLOSED, "") and output.exists()


@pytest.mark.skipif(os.name != "posix", reason="SIGPIPE and its exit code are POSIX")
def test_compress_whose_reader_is_gone_stops_quietly_at_its_first_line(volume, tmp_path):
    # As a command killed by SIGPIPE: stopped before the work, and no file left behind.
    code, error = _run_with_stdout_closed(
        ["compress", str(volume), "-o", str(tmp_path / "out.tt.npz"), "--tol", "0.1"],
        tmp_path)
    assert (code, error) == (cli.EXIT_STDOUT_CLOSED, "")
    assert sorted(os.listdir(tmp_path)) == ["v.npy"]


@pytest.mark.skipif(os.name != "posix", reason="SIGPIPE and its exit code are POSIX")
def test_info_into_a_closed_pipe_exits_141_quietly(tt_file, tmp_path):
    assert _run_with_stdout_closed(["info", tt_file], tmp_path) == \
        (cli.EXIT_STDOUT_CLOSED, "")


@pytest.mark.parametrize("extra", [[], ["--png", "p.png"]])
def test_a_nifti_output_alone_is_evaluated_in_blocks_only(tmp_path, monkeypatch, capsys, extra):
    # After writing a NIfTI block by block, reconstruct evaluated its selection in memory
    # again for nothing: a volume too large to hold ran out of memory there, after its
    # file was complete, and the command exited 1. Only a PNG (or --against) needs it.
    pytest.importorskip("nibabel")
    from tensorly_cross import _reconstruct

    monkeypatch.setattr(_reconstruct, "BLOCK_ENTRIES", 2**10)
    sizes, values = [], _reconstruct.volume_values

    def counted(tt, metadata, selection):
        result = values(tt, metadata, selection)
        sizes.append(np.asarray(result).size)
        return result

    monkeypatch.setattr(_reconstruct, "volume_values", counted)
    shape = (16, 16, 12)
    save_tt(tmp_path / "v.tt.npz", [np.ones((1, n, 1)) for n in shape], {"shape": list(shape)})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["reconstruct", "v.tt.npz", "-o", "v.nii", *extra]) == 0
    assert max(sizes) <= 2**10  # blocks, and the PNG's slice (16 x 12) where asked
    assert sum(sizes) == 16 * 16 * 12 + (16 * 12 if extra else 0)
    assert "v.nii" in capsys.readouterr().out


@pytest.mark.parametrize("shape, selection", [
    ((6, 5, 1), (slice(None), slice(None), 0)),
    ((6, 5, 4), (3, slice(None), slice(None))),
    ((6, 5, 4, 1), (3, slice(None), slice(None), 0)),
    ((1, 5, 1), (0, slice(None), slice(None))),
])
def test_the_default_slice_shows_the_last_two_axes_longer_than_one(tmp_path, monkeypatch,
                                                                    shape, selection):
    # A single-slice (X, Y, 1) scan was shown as an X x 1 strip (the middle of every axis
    # but the last two), a (X, Y, Z, 1) one as a Z x 1 strip.
    cores = [np.arange(1.0, n + 1).reshape(1, n, 1) for n in shape]
    save_tt(tmp_path / "v.tt.npz", cores, {"shape": list(shape)})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["reconstruct", "v.tt.npz", "-o", "s.npy"]) == 0
    dense = np.ones(shape)
    for axis, n in enumerate(shape):
        dense = dense * np.arange(1.0, n + 1).reshape([-1 if k == axis else 1
                                                       for k in range(len(shape))])
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), dense[selection])
