"""The CLI on bad flags, faults, interruptions and concurrent runs; exit codes; the TT file
it writes (dtype, NIfTI affine) and what ``reconstruct`` makes of it, in any dimension.

Argument checks run ``main`` in this process (argparse's own exit); runs that must not
hang, or that need a signal, run in a subprocess with a timeout.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import ToleranceNotMetWarning, _reconstruct, cli
from tensorly_cross.datasets import blob_phantom, write_volume

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, env=None, timeout=300):
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "tensorly_cross.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def grid_indices(shape):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return grid.reshape(-1, len(shape))


def grid_values(function, shape):
    return function(grid_indices(shape)).reshape(shape)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """A smooth float32 volume as .npy (C order): it compresses well."""
    path = tmp_path_factory.mktemp("v") / "blobs.npy"
    np.save(path, grid_values(blob_phantom((24, 20, 16), n_blobs=3), (24, 20, 16)))
    return str(path)


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    """Random float64 noise: it does not compress."""
    path = tmp_path_factory.mktemp("v") / "noise.npy"
    np.save(path, np.random.default_rng(0).standard_normal((12, 12, 12)))
    return str(path)


def nifti_path():
    nibabel = pytest.importorskip("nibabel")
    return os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")


# --- arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("args, flag, allowed", [
    (["--max-rank", "0"], "--max-rank", "must be >= 1"),
    (["--max-evals", "0"], "--max-evals", "must be >= 1"),
    (["--n-iter-max", "0"], "--n-iter-max", "must be >= 1"),
    (["--rank", "2", "--max-slices", "0"], "--max-slices", "must be >= 1"),
    (["--seed", "-1"], "--seed", "must be >= 0"),
    (["--cache-bytes", "-1"], "--cache-bytes", "must be >= 0"),
    (["--tol", "0"], "--tol", "must be a finite number > 0"),
    (["--tol", "nan"], "--tol", "must be a finite number > 0"),
    (["--tol", "1"], "--tol", "must be below 1, got 1"),
    (["--max-rank", "two"], "--max-rank", "must be an integer"),
])
def test_out_of_range_numeric_flags_exit_2_naming_the_flag(blobs, capsys, args, flag, allowed):
    with pytest.raises(SystemExit) as caught:
        cli.main(["compress", blobs, *args])
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert f"tensorly-cross compress: error: argument {flag}: {allowed}" in error


def test_demo_size_below_16_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["demo", "--size", "8"])
    assert caught.value.code == 2
    assert "argument --size: must be >= 16, got 8" in capsys.readouterr().err


def test_version_prints_the_library_version(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"tensorly-cross {tlc.__version__}"


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["compress", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 64)", "(default: 0.1)", "(default: 20)", "(default: input)"):
        assert shown in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_a_missing_output_folder_is_reported_before_the_cross(blobs, tmp_path, capsys):
    output = str(tmp_path / "missing" / "x.tt.npz")
    assert cli.main(["compress", blobs, "-o", output, "-v"]) == cli.EXIT_INPUT
    captured = capsys.readouterr()
    assert f"the folder of the output {output!r} does not exist" in captured.err
    assert "sweep" not in captured.out + captured.err and ".tt-" not in captured.err


def test_the_progress_bar_is_cleared_before_an_error(tmp_path, capsys):
    path = tmp_path / "nan.npy"
    np.save(path, np.full((8, 8, 8), np.nan))
    assert cli.main(["compress", str(path), "-o", str(tmp_path / "x.tt.npz"),
                     "--method", "tci"]) == 1
    err = capsys.readouterr().err
    # The bar draws with carriage returns; the error must start a clean segment of its own.
    segments = [part for line in err.split("\n") for part in line.split("\r") if part.strip()]
    error_segments = [part for part in segments if "error:" in part]
    assert error_segments and all(part.startswith("tensorly-cross compress: error:")
                                  for part in error_segments)
    assert "returned nan" in error_segments[0]


def _default_sigint():
    """In the child: SIGINT's default disposition. A suite run in the background (``&``
    in a shell without job control) ignores SIGINT, the child inherits that, and Python
    then installs no KeyboardInterrupt handler: the run went on to its 500 sweeps."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_ends_with_one_line(tmp_path):
    path = tmp_path / "big_noise.npy"
    np.save(path, np.random.default_rng(0).standard_normal((100, 100, 100)))
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorly_cross.cli", "compress", str(path), "-o",
         str(tmp_path / "x.tt.npz"), "--tol", "1e-12", "--patience", "0", "--n-iter-max", "500",
         "--method", "tci", "-v"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=env, preexec_fn=_default_sigint)
    seen = ""
    while "sweep 1:" not in seen:  # interrupt in the middle of the cross (-v: on stdout)
        line = process.stdout.readline()
        assert line, f"the run ended before its first sweep: {seen}"
        seen += line
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130  # 128 + SIGINT, as shells report it
    assert "Traceback" not in rest
    assert rest.strip().splitlines()[-1] == "tensorly-cross compress: interrupted"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_info_on_a_fifo_exits_1_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.tt.npz"
    os.mkfifo(fifo)
    result = run("info", fifo, timeout=60)
    assert result.returncode == 1 and "not a regular file" in result.stderr


# --- the tolerance, and what the run leaves ---------------------------------------------


def test_a_missed_tol_exits_3_and_says_so_unless_accepted(noise, tmp_path, capsys):
    output = str(tmp_path / "n.tt.npz")
    args = ["compress", noise, "-o", output, "--tol", "1e-6", "--max-rank", "2", "-q",
            "--method", "tci"]
    with warnings.catch_warnings():  # the exit code and the message say it, not a warning
        warnings.simplefilter("error", ToleranceNotMetWarning)
        assert cli.main(args) == cli.EXIT_TOL_MISSED
    err = capsys.readouterr().err
    assert "error: --tol 1.0e-06 not met: held-out error" in err and "--accept-miss" in err
    assert os.path.exists(output)  # written all the same
    assert cli.main([*args, "--force", "--accept-miss"]) == cli.EXIT_OK
    assert "warning: --tol 1.0e-06 not met" in capsys.readouterr().err


def test_a_fixed_rank_run_has_no_tolerance_to_miss(noise, tmp_path, capsys):
    output = str(tmp_path / "r.tt.npz")
    assert cli.main(["compress", noise, "-o", output, "--rank", "2", "-q"]) == cli.EXIT_OK
    assert "not met" not in capsys.readouterr().err


def test_a_tt_file_larger_than_its_input_is_warned_about(noise, blobs, tmp_path, capsys):
    cli.main(["compress", noise, "-o", str(tmp_path / "n.tt.npz"), "--rank", "12", "-q"])
    assert "is larger than the input" in capsys.readouterr().err
    assert cli.main(["compress", blobs, "-o", str(tmp_path / "b.tt.npz"), "--tol", "1e-2",
                     "-q"]) == cli.EXIT_OK
    assert "larger than the input" not in capsys.readouterr().err


@pytest.mark.parametrize("stored, option, expected", [
    (np.float32, "input", np.float32), (np.float64, "input", np.float64),
    (np.int16, "input", np.float32), (np.int32, "input", np.float64),
    (np.float32, "float64", np.float64), (np.float64, "float32", np.float32)])
def test_cores_are_stored_in_the_input_floating_dtype_unless_asked(tmp_path, stored, option,
                                                                    expected):
    path = tmp_path / "v.npy"
    np.save(path, (100 * grid_values(blob_phantom((12, 10, 8), n_blobs=2), (12, 10, 8)))
            .astype(stored))
    output = str(tmp_path / "v.tt.npz")
    assert cli.main(["compress", str(path), "-o", output, "--rank", "3", "--dtype", option,
                     "-q"]) == cli.EXIT_OK
    tt, metadata = tlc.load_tt(output)
    assert all(tl.to_numpy(core).dtype == expected for core in tt)
    assert metadata["input_dtype"] == str(np.dtype(stored))


def test_npy_reads_are_reported_in_pages(blobs, tmp_path, capsys):
    cli.main(["compress", blobs, "-o", str(tmp_path / "b.tt.npz"), "--tol", "1e-2",
              "--method", "tci"])
    out = capsys.readouterr().out
    assert "pages" in out.split("bytes read")[1].splitlines()[0]
    assert "None" not in out


# --- NIfTI, and reconstruct in any dimension ---------------------------------------------


def test_the_nifti_affine_and_header_are_kept_and_restored_in_the_whole_volume(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    source = nifti_path()
    image = nibabel.load(source)
    output = str(tmp_path / "a.tt.npz")
    assert cli.main(["compress", source, "-o", output, "--rank", "6", "-q"]) == cli.EXIT_OK
    tt, metadata = tlc.load_tt(output)
    np.testing.assert_array_equal(metadata["nifti"]["affine"], image.affine)
    volume = str(tmp_path / "a.nii.gz")
    assert cli.main(["reconstruct", output, "-o", volume]) == cli.EXIT_OK
    written = nibabel.load(volume)
    assert written.shape == image.shape
    np.testing.assert_allclose(written.affine, image.affine, atol=1e-6)
    assert written.header.get_zooms() == image.header.get_zooms()
    np.testing.assert_allclose(written.get_fdata(), tl.to_numpy(tl.tt_to_tensor(tt)),
                               rtol=1e-6, atol=1e-6 * np.abs(written.get_fdata()).max())


@pytest.mark.parametrize("layout", [[], ["--quantics"], ["--axes", "2,0,1"]])
def test_reconstruct_writes_the_whole_volume_as_nifti_in_any_layout(blobs, tmp_path, layout,
                                                                     monkeypatch):
    nibabel = pytest.importorskip("nibabel")
    # Slabs of at most 1000 entries: 24 x 20 = 480 per index of the last axis, so the 16
    # indices go out in 8 blocks of 2 (the path a large volume takes).
    monkeypatch.setattr(_reconstruct, "BLOCK_ENTRIES", 1000)
    output = str(tmp_path / "b.tt.npz")
    rank = ["--tol", "1e-3"] if layout == ["--quantics"] else ["--rank", "6"]
    assert cli.main(["compress", blobs, "-o", output, *rank, *layout, "-q",
                     "--accept-miss"]) == cli.EXIT_OK
    tt, metadata = tlc.load_tt(output)
    volume = str(tmp_path / "b.nii")
    assert cli.main(["reconstruct", output, "-o", volume]) == cli.EXIT_OK
    written = nibabel.load(volume)
    np.testing.assert_array_equal(written.affine, np.eye(4))
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in written.shape], indexing="ij"), -1)
    points = grid.reshape(-1, 3)[::97]
    if metadata.get("quantics"):
        layout_q = tlc.QuanticsLayout.create(written.shape, metadata["quantics"]["order"])
        tt_points = layout_q.to_quantics(points)
    elif metadata.get("axes"):
        tt_points = points[:, metadata["axes"]]
    else:
        tt_points = points
    pointwise = tl.to_numpy(tlc.tt_entries(tt, tt_points))
    np.testing.assert_allclose(np.asarray(written.dataobj)[tuple(points.T)], pointwise,
                               rtol=1e-5, atol=1e-6)
    original = np.load(blobs)
    error = np.linalg.norm(written.get_fdata() - original) / np.linalg.norm(original)
    assert error < 0.05


@pytest.mark.parametrize("shape, slice_arg", [((30,), None), ((9, 11), None),
                                              ((6, 7, 8, 5), None), ((6, 7, 8, 5), "1=2,3=4")])
def test_reconstruct_works_for_any_number_of_dimensions(tmp_path, capsys, shape, slice_arg):
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal((1 if k == 0 else 2, n, 1 if k == len(shape) - 1 else 2))
             for k, n in enumerate(shape)]
    dense = tl.to_numpy(tl.tt_to_tensor(cores))
    source = tmp_path / "v.npy"
    np.save(source, dense)
    output = str(tmp_path / "v.tt.npz")
    tlc.save_tt(output, cores, {"shape": list(shape)})
    args = ["reconstruct", output, "-o", str(tmp_path / "s.npy"), "--png",
            str(tmp_path / "s.png"), "--against", str(source)]
    if slice_arg:
        args += ["--slice", slice_arg]
    assert cli.main(args) == cli.EXIT_OK
    assert float(capsys.readouterr().out.split("relative error")[1]) < 1e-10
    image = np.load(tmp_path / "s.npy")
    if len(shape) == 4:
        fixed = dict(item.split("=") for item in (slice_arg or "0=3,1=3").split(","))
        index = tuple(int(fixed[str(a)]) if str(a) in fixed else slice(None) for a in range(4))
        np.testing.assert_allclose(image, dense[index], atol=1e-12)
    else:
        np.testing.assert_allclose(image, dense, atol=1e-12)  # in the volume's own shape
        assert image.shape == dense.shape
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("slice_arg, message", [
    ("0=1", "must fix 2 of the 4 axes"), ("0=1,0=2", "fixes axis 0 twice"),
    ("0=99,1=1", "outside shape"), ("x", "AXIS=INDEX")])
def test_reconstruct_checks_the_slice_of_any_tt(tmp_path, capsys, slice_arg, message):
    output = str(tmp_path / "v.tt.npz")
    tlc.save_tt(output, [np.ones((1, 6, 2)), np.ones((2, 7, 2)), np.ones((2, 8, 2)),
                         np.ones((2, 5, 1))], {"shape": [6, 7, 8, 5]})
    code = cli.main(["reconstruct", output, "--png", str(tmp_path / "s.png"), "--slice",
                     slice_arg])
    assert code == cli.EXIT_USAGE and message in capsys.readouterr().err


def test_reconstruct_refuses_a_tt_whose_metadata_disagrees_with_its_cores(tmp_path, capsys):
    path = tmp_path / "bad.tt.npz"
    meta = {"format": "tensorly-cross-tt", "format_version": 1, "n_cores": 2, "shape": [5, 5, 5]}
    np.savez(path, core_0=np.ones((1, 5, 2)), core_1=np.ones((2, 5, 1)),
             meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    code = cli.main(["reconstruct", str(path), "--png", str(tmp_path / "s.png")])
    assert code == cli.EXIT_INPUT
    assert "means TT modes [5, 5, 5], the cores have [5, 5]" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


# --- the demo, twice at once -------------------------------------------------------------


def test_two_writers_of_one_volume_both_succeed_and_leave_it_whole(tmp_path):
    shape = (16, 16, 16)
    function = blob_phantom(shape, n_blobs=3)
    both_writing = threading.Barrier(2, timeout=60)
    errors = []

    def slow(points):
        if points[0, 0] == 0:  # the first slab: wait until the other writer is writing too
            both_writing.wait()
        return function(points)

    def write():
        try:
            write_volume(str(tmp_path / "v.zarr"), slow, shape, chunks=(8, 8, 8))
        except Exception as error:  # collected: a thread's exception would be lost
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(os.listdir(tmp_path)) == ["v.zarr"]
    volume = tlc.open_volume(tmp_path / "v.zarr", strict=True)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    np.testing.assert_array_equal(tl.to_numpy(volume.evaluate(grid.reshape(-1, 3))),
                                  function(grid.reshape(-1, 3)).astype(np.float64))


def test_two_demos_at_once_share_one_cache_honouring_xdg_cache_home(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=ROOT)
    command = [sys.executable, "-m", "tensorly_cross.cli", "demo", "--volume", "procedural",
               "--size", "32", "-q"]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], results
    workdir = tmp_path / "cache" / "tensorly-cross"
    assert sorted(p.name for p in workdir.iterdir() if not p.name.startswith(".blobs")) == [
        "blobs32.tt.npz", "blobs32.zarr", "blobs32_slice.png"]
    assert not [p for p in workdir.iterdir() if p.name.endswith(".tmp")]
    tlc.open_volume(workdir / "blobs32.zarr", strict=True)  # every chunk stored


def test_a_fixed_rank_method_without_rank_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "v.npy"
    np.save(path, np.ones((6, 6, 6)))
    code = cli.main(["compress", str(path), "-o", str(tmp_path / "v.tt.npz"), "--method", "als"])
    assert code == cli.EXIT_USAGE and "--method als needs --rank" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--max-evals", "2000"], "--max-evals 2000 is too small for the least-squares cross"),
    (["--rank", "4", "--max-slices", "2", "--method", "lsq"],
     "--max-slices needs --method als or auto"),
    (["--rank", "4", "--oversample", "2", "--method", "tci"],
     "--oversample needs --method lsq, als or auto"),
    (["--axes", "0,0,1"], "--axes must be a permutation of the volume's 3 axes"),
    (["--axes", "0,1"], "--axes must be a permutation of the volume's 3 axes")])
def test_settings_a_run_would_refuse_are_usage_errors_in_the_command_s_terms(
        blobs, tmp_path, capsys, flags, message):
    output = tmp_path / "v.tt.npz"
    code = cli.main(["compress", blobs, "-o", str(output), "--quiet", *flags])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and message in err, err
    assert "val_size" not in err and not output.exists()


def test_an_accepted_miss_does_not_suggest_accepting_it(noise, tmp_path, capsys):
    code = cli.main(["compress", noise, "-o", str(tmp_path / "n.tt.npz"), "--quiet",
                     "--method", "stream", "--max-rank", "2", "--accept-miss"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK and "not met" in err and "--accept-miss" not in err


@pytest.mark.parametrize("method", ["stream", "tci"])
def test_the_recorded_error_is_the_stored_tt_s_after_rounding_its_cores(tmp_path, capsys,
                                                                        method):
    x = np.linspace(1.0, 2.0, 30)
    volume = 1.0 / (x[:, None, None] + x[None, :, None] ** 2 + x[None, None, :] ** 3)
    path = tmp_path / "smooth.npy"
    np.save(path, volume)
    codes, metadata = {}, {}
    for dtype in ("float32", "float64"):
        output = str(tmp_path / f"{dtype}.tt.npz")
        codes[dtype] = cli.main(["compress", str(path), "-o", output, "--tol", "1e-9",
                                 "--dtype", dtype, "--method", method, "--quiet"])
        tt, metadata[dtype] = tlc.load_tt(output)
        stored = np.asarray(tlc.tt_entries([np.asarray(c, np.float64) for c in tt],
                                           grid_indices(volume.shape)))
        true_error = np.linalg.norm(stored - volume.ravel()) / np.linalg.norm(volume)
        recorded = metadata[dtype].get("error", metadata[dtype].get("val_error"))
        assert recorded == pytest.approx(true_error, rel=0.5, abs=1e-11)
    # float32 cores cannot hold 1e-9: said, and the exit code says the tol was missed.
    assert codes == {"float32": cli.EXIT_TOL_MISSED, "float64": cli.EXIT_OK}
    assert metadata["float32"]["stop_reason"] == "dtype"
    assert "rounding_error" not in metadata["float64"]
    assert "--dtype float64" in capsys.readouterr().err


def test_a_nifti_2_input_comes_back_as_nifti_2_without_header_warnings(tmp_path, capfd):
    nibabel = pytest.importorskip("nibabel")
    volume = grid_values(blob_phantom((12, 10, 8), n_blobs=2), (12, 10, 8)).astype(np.float32)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [5.0, -6.0, 7.0]
    source = str(tmp_path / "n2.nii")
    nibabel.save(nibabel.Nifti2Image(volume, affine), source)
    output, back = str(tmp_path / "n2.tt.npz"), str(tmp_path / "back.nii.gz")
    assert cli.main(["compress", source, "-o", output, "--rank", "6", "-q"]) == cli.EXIT_OK
    capfd.readouterr()
    assert cli.main(["reconstruct", output, "-o", back]) == cli.EXIT_OK
    assert "sizeof_hdr" not in capfd.readouterr().err  # a NIfTI-2 header fed to NIfTI-1
    written = nibabel.load(back)
    assert isinstance(written, nibabel.Nifti2Image)
    np.testing.assert_array_equal(written.affine, affine)


@pytest.mark.parametrize("shape, kind", [((40000, 3), "Nifti2Image"), ((2,) * 8, None)])
def test_reconstruct_to_nifti_beyond_nifti_1_s_fields(tmp_path, capsys, shape, kind):
    nibabel = pytest.importorskip("nibabel")
    cores = [np.ones((1, n, 1)) * (k + 1) for k, n in enumerate(shape)]
    output, volume = str(tmp_path / "v.tt.npz"), str(tmp_path / "v.nii")
    tlc.save_tt(output, cores, {"shape": list(shape)})
    code = cli.main(["reconstruct", output, "-o", volume])
    if kind is None:  # 8 axes: no NIfTI holds them, said in one line
        assert code == cli.EXIT_INPUT
        assert "NIfTI holds at most 7 axes" in capsys.readouterr().err
        assert not os.path.exists(volume)
        return
    assert code == cli.EXIT_OK  # an axis past 32767: NIfTI-2's 64-bit fields
    written = nibabel.load(volume)
    assert type(written).__name__ == kind and written.shape == shape
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.full(shape, 2.0))


def test_library_warnings_are_one_line_above_the_progress_bar(tmp_path, capsys):
    path = tmp_path / "zeros.npy"
    np.save(path, np.zeros((20, 18, 16), dtype=np.float32))
    code = cli.main(["compress", str(path), "-o", str(tmp_path / "z.tt.npz"), "--method",
                     "lsq", "--tol", "0.1"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK
    assert "warning: held-out error 0 <= tol" in err and "(UnseenStructureWarning)" in err
    assert "driver.py" not in err and "warn_if_unseen" not in err  # no source lines


def test_a_scaled_integer_nifti_is_stored_in_float32(tmp_path):
    # nilearn's MNI152 is uint8 with a slope of 1/255: it reads back as float64, but holds
    # 8 bits; its cores were stored in float64 (a TT file 4.6x the .nii.gz) while the docs
    # promise float32 for integers of 16 bits or fewer.
    nibabel = pytest.importorskip("nibabel")
    data = (200 * grid_values(blob_phantom((12, 10, 8), n_blobs=2), (12, 10, 8)))
    image = nibabel.Nifti1Image(np.clip(data, 0, 255).astype(np.uint8), np.eye(4))
    image.header.set_slope_inter(1 / 255, 0.0)
    path = str(tmp_path / "scaled.nii.gz")
    image.to_filename(path)
    output = str(tmp_path / "scaled.tt.npz")
    for method in ("stream", "lsq"):
        assert cli.main(["compress", path, "-o", output, "--rank", "3", "--method", method,
                         "--force", "-q"]) == cli.EXIT_OK
        tt, metadata = tlc.load_tt(output)
        assert all(tl.to_numpy(core).dtype == np.float32 for core in tt)
        assert metadata["input_dtype"] == "uint8"
        assert metadata["method"] == method  # only the stream's files said it


def test_a_tt_file_larger_than_the_gzipped_input_is_warned_about(tmp_path, capsys):
    # A 1.7 MiB .nii.gz gave a 7.8 MiB TT file without a word (it was compared with the
    # voxels' 8.3 MiB only), and the summary said "compression 8.9x".
    nibabel = pytest.importorskip("nibabel")
    data = 200 * grid_values(blob_phantom((32, 32, 32), n_blobs=3), (32, 32, 32))
    path = str(tmp_path / "scan.nii.gz")
    nibabel.Nifti1Image(np.clip(data, 0, 255).astype(np.uint8), np.eye(4)).to_filename(path)
    output = str(tmp_path / "scan.tt.npz")
    assert cli.main(["compress", path, "-o", output, "--rank", "8"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    on_disk = os.path.getsize(path)
    assert os.path.getsize(output) > on_disk and os.path.getsize(output) < 32**3
    assert (f"is larger than the input file ({on_disk / 2**20:.2f} MiB on disk, compressed)"
            in captured.err)
    assert "voxels per parameter" in captured.out


def test_the_held_out_line_says_what_a_sample_cannot_see(blobs, tmp_path, capsys):
    # "(95%: at most 0.04% of the entries off unseen)" read as a claim that 0.04% of the
    # voxels are wrong.
    cli.main(["compress", blobs, "-o", str(tmp_path / "b.tt.npz"), "--method", "lsq"])
    line = next(text for text in capsys.readouterr().out.splitlines()
                if text.startswith("held-out rel. error"))
    assert "random entries (a sample: structure in under" in line and "can go unseen" in line
    assert "off unseen" not in line


def test_a_stream_that_misses_tol_suggests_only_what_helps_it(noise, tmp_path, capsys):
    code = cli.main(["compress", noise, "-o", str(tmp_path / "n.tt.npz"), "--quiet",
                     "--method", "stream", "--max-rank", "2"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_TOL_MISSED and "Raise --max-rank" in err
    assert "--n-iter-max" not in err  # the stream has no sweeps


def test_an_unknown_flag_is_reported_with_the_subcommand_s_usage(blobs, capsys):
    # It printed the top-level usage ("tensorly-cross [-h] [--version] {compress,...}").
    with pytest.raises(SystemExit) as caught:
        cli.main(["compress", blobs, "--tolerance", "0.1"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tensorly-cross compress")
    assert "tensorly-cross compress: error: unrecognized arguments: --tolerance 0.1" in err


@pytest.mark.parametrize("bound, shown", [(0.000749, "0.075%"), (0.0007, "0.070%"),
                                          (0.0123, "1.3%"), (0.5, "50%"), (3e-6, "0.00030%")])
def test_the_held_out_bound_is_shown_rounded_up(bound, shown):
    # "structure in under 0.07% of the volume can go unseen" was printed for a bound of
    # 0.0749%: rounded to the nearest, it understated what the sample can miss.
    from tensorly_cross.cli.summary import _percent_up

    assert _percent_up(bound) == shown
    assert float(shown[:-1]) >= 100 * bound * (1 - 1e-12)  # never below the bound
