"""Audit s13 of the command line: end-to-end runs on real files, and what the user reads.

Each test failed before its fix: ``reconstruct -o OUT.NPY`` wrote ``OUT.NPY.npy``, an
interrupted ``.npy`` write left a partial file, a budget miss advised flags that do not
raise the budget, ``-q -v`` printed sweeps, small files were sized ``0.00 MiB``, an HDF5
input with several datasets asked for ``dataset=...``, and ``demo --workdir FILE`` said
only ``[Errno 17] File exists``.
"""

import re

import h5py
import numpy as np
import pytest

from tensorly_cross import cli


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
