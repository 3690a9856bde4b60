"""The tensorly-cross command, end to end in a subprocess, on small volumes of each format."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tensorly_cross.datasets import blob_phantom

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")


# The package under test, whatever the subprocess's working folder (an installed copy
# elsewhere must not answer instead).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=None, env=None):
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "tensorly_cross.cli", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600, env=env)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("volumes")
    shape = (24, 20, 16)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    volume = blob_phantom(shape, n_blobs=3)(grid.reshape(-1, 3)).reshape(shape)
    paths = {"npy": str(folder / "v.npy"), "zarr": str(folder / "v.zarr"),
             "hdf5": str(folder / "v.h5")}
    np.save(paths["npy"], volume)
    zarr.create_array(paths["zarr"], shape=shape, chunks=(8, 8, 8), dtype="f4")[:] = volume
    with h5py.File(paths["hdf5"], "w") as handle:
        handle.create_dataset("scan", data=volume)
    nibabel = pytest.importorskip("nibabel")
    paths["nifti"] = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data",
                                  "anatomical.nii")
    return folder, paths


@pytest.mark.parametrize("fmt", ["npy", "zarr", "hdf5", "nifti"])
def test_compress_info_reconstruct(volumes, tmp_path, fmt):
    _, paths = volumes
    out = tmp_path / f"{fmt}.tt.npz"
    result = run("compress", paths[fmt], "-o", str(out), "--tol", "1e-2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert out.exists()
    info = run("info", str(out))
    assert info.returncode == 0 and "TT ranks" in info.stdout
    png, npy = tmp_path / "s.png", tmp_path / "s.npy"
    again = run("reconstruct", str(out), "--slice", "1=3", "--png", str(png), "-o", str(npy),
                "--against", paths[fmt])
    assert again.returncode == 0, again.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"
    error = float(again.stdout.split("relative error")[1])
    assert error < 0.1 if fmt != "nifti" else error < 1.0
    assert np.load(npy).ndim == 2


def test_compress_prints_a_summary_and_quantics_works(volumes, tmp_path):
    _, paths = volumes
    out = tmp_path / "q.tt.npz"
    result = run("compress", paths["zarr"], "-o", str(out), "--quantics", "--tol", "1e-2")
    assert result.returncode == 0, result.stderr
    for field in ("shape", "TT ranks", "entries evaluated", "bytes read", "held-out",
                  "compression"):
        assert field in result.stdout
    again = run("reconstruct", str(out), "--png", str(tmp_path / "q.png"))
    assert again.returncode == 0, again.stderr


def test_oversampled_fixed_rank_compress_records_its_arguments(volumes, tmp_path):
    from tensorly_cross import load_tt

    _, paths = volumes
    out = tmp_path / "o.tt.npz"
    result = run("compress", paths["npy"], "-o", str(out), "--rank", "3", "--oversample", "2",
                 "--patience", "0", "--n-iter-max", "3", "--quiet")
    assert result.returncode == 0, result.stderr
    tt, metadata = load_tt(out)
    assert max(tt.rank) == 3 and metadata["stop_reason"] in ("tol", "n_iter_max")
    assert metadata["arguments"]["oversample"] == 2.0
    assert metadata["arguments"]["patience"] is None


def test_oversampling_applies_to_the_least_squares_cross(volumes, tmp_path):
    # --oversample was refused with --method lsq, and under auto it switched to the ALS
    # cross, less accurate on stored volumes.
    from tensorly_cross import load_tt

    _, paths = volumes
    for method in ("lsq", "auto"):
        out = tmp_path / f"{method}.tt.npz"
        result = run("compress", paths["npy"], "-o", str(out), "--rank", "3", "--method",
                     method, "--oversample", "2", "--n-iter-max", "2", "--quiet")
        assert result.returncode in (0, 3), result.stderr
        _, metadata = load_tt(out)
        assert metadata["method"] == "lsq" and metadata["arguments"]["oversample"] == 2.0


def test_reconstruct_writes_a_1d_volume_in_its_own_shape(tmp_path):
    path = tmp_path / "line.npy"
    np.save(path, np.linspace(0.0, 1.0, 24))
    assert run("compress", str(path), "-o", str(tmp_path / "l.tt.npz"), "-q",
               "--accept-miss").returncode == 0
    result = run("reconstruct", str(tmp_path / "l.tt.npz"), "-o", str(tmp_path / "r.npy"))
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "r.npy").shape == (24,)  # was (1, 24)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_transposed_sliced_compress_reconstructs_in_the_volume_axes(volumes, tmp_path, axis):
    from tensorly_cross import load_tt

    _, paths = volumes
    out = tmp_path / "t.tt.npz"
    result = run("compress", paths["npy"], "-o", str(out), "--rank", "8", "--axes", "0,2,1",
                 "--max-slices", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    tt, metadata = load_tt(out)
    assert metadata["axes"] == [0, 2, 1] and tuple(tt.shape) == (24, 16, 20)
    again = run("reconstruct", str(out), "--slice", f"{axis}=5", "-o", str(tmp_path / "s.npy"),
                "--against", paths["npy"])
    assert again.returncode == 0, again.stderr
    assert float(again.stdout.split("relative error")[1]) < 0.05


def test_existing_output_is_refused_without_force(volumes, tmp_path):
    _, paths = volumes
    out = tmp_path / "a.tt.npz"
    assert run("compress", paths["npy"], "-o", str(out), "--rank", "2", "-q").returncode == 0
    refused = run("compress", paths["npy"], "-o", str(out), "--rank", "2", "-q")
    assert refused.returncode == 1 and "--force" in refused.stderr
    forced = run("compress", paths["npy"], "-o", str(out), "--rank", "2", "-q", "--force")
    assert forced.returncode == 0


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["compress", "missing.zarr"], 1, "does not exist"),
        (["compress", "{hdf5}", "--dataset", "nope"], 1, "not found"),
        (["compress", "{npy}", "--rank", "0"], 2, "argument --rank: must be >= 1"),
        (["compress", "{npy}", "--rank", "2", "--tol", "1e-3"], 2, "not allowed with"),
        (["compress", "{npy}", "--oversample", "2", "--method", "tci"], 2,
         "--oversample needs --method lsq, als or auto"),
        (["compress", "{npy}", "--rank", "2", "--oversample", "0.5"], 2,
         "argument --oversample: must be a finite number >= 1.0"),
        (["compress", "{npy}", "--patience", "-1"], 2, "argument --patience: must be >= 0"),
        (["compress", "{npy}", "--axes", "0,1,1", "--rank", "2"], 2,
         "axes must be a permutation"),
        (["compress", "{npy}", "--axes", "0,2,1", "--quantics"], 2, "do not combine"),
        (["compress", "{npy}", "--max-slices", "2"], 2, "--max-slices needs --rank"),
        (["info", "{npy}"], 1, "not a readable"),
        (["reconstruct", "missing.npz", "--png", "x.png"], 1, "does not exist"),
        (["reconstruct", "missing.npz", "--png", "x.jpg"], 2, "give a path ending in .png"),
        ([], 2, ""),
    ],
)
def test_bad_inputs_exit_with_clear_messages(volumes, tmp_path, args, code, message):
    _, paths = volumes
    args = [a.format(**paths) for a in args]
    result = run(*args, cwd=tmp_path)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr + result.stdout
