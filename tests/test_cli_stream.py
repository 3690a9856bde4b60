"""compress chooses between the streaming TT-SVD and a cross, says which and why."""

import numpy as np
import pytest

import tensorly_cross as tlc

from .test_cli import run

nibabel = pytest.importorskip("nibabel")
zarr = pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in (30, 26, 22)], indexing="ij")
    rng = np.random.default_rng(0)
    volume = (np.sin(3 * grids[0] + grids[1]) * np.cos(2 * grids[2])
              + 0.02 * rng.standard_normal(grids[0].shape)).astype(np.float32)
    paths = {"gz": str(folder / "v.nii.gz"), "zarr": str(folder / "v.zarr"),
             "npy": str(folder / "v.npy")}
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), paths["gz"])
    zarr.create_array(paths["zarr"], shape=volume.shape, chunks=(16, 16, 16),
                      dtype="f4")[:] = volume
    np.save(paths["npy"], volume)
    return volume, paths


def _error(path, volume):
    tt, _ = tlc.load_tt(path)
    return np.linalg.norm(np.asarray(tt.to_tensor()) - volume) / np.linalg.norm(volume)


def test_a_gzip_nifti_is_streamed_and_its_exact_error_reported(files, tmp_path):
    volume, paths = files
    out = tmp_path / "gz.tt.npz"
    result = run("compress", paths["gz"], "-o", str(out), "--tol", "0.05")
    assert result.returncode == 0, result.stderr
    assert "method: stream (a gzip file" in result.stdout
    # float32 in, float32 cores: the rounding of the cores is an estimate, said as one.
    assert ("(every voxel read, plus the cores' rounding to the stored dtype estimated on a "
            "sample)") in result.stdout
    _, metadata = tlc.load_tt(str(out))
    assert metadata["method"] == "stream" and metadata["exact_error"]
    np.testing.assert_allclose(metadata["error"], _error(str(out), volume), rtol=1e-3)
    assert metadata["error"] <= 0.05


def test_the_method_can_be_forced_either_way(files, tmp_path):
    volume, paths = files
    cross = run("compress", paths["gz"], "-o", str(tmp_path / "a.tt.npz"), "--tol", "0.05",
                "--method", "lsq", "--accept-miss")
    assert cross.returncode == 0, cross.stderr
    assert "method: lsq (asked for)" in cross.stdout
    assert "held-out rel. error" in cross.stdout
    stream = run("compress", paths["npy"], "-o", str(tmp_path / "b.tt.npz"), "--rank", "3",
                 "--method", "stream", "--quiet")
    assert stream.returncode == 0, stream.stderr
    tt, _ = tlc.load_tt(str(tmp_path / "b.tt.npz"))
    assert tt.rank == (1, 3, 3, 1)


def test_cross_layouts_ask_for_a_cross(files, tmp_path):
    _, paths = files
    result = run("compress", paths["zarr"], "-o", str(tmp_path / "c.tt.npz"), "--tol", "0.05",
                 "--axes", "0,2,1", "--accept-miss")
    assert result.returncode == 0, result.stderr
    assert "method: auto (--axes asks for a cross; tt_cross chooses which)" in result.stdout


def test_a_chunked_store_that_a_cross_would_read_whole_is_streamed(files, tmp_path):
    _, paths = files
    result = run("compress", paths["zarr"], "-o", str(tmp_path / "d.tt.npz"), "--tol", "0.05")
    assert result.returncode == 0, result.stderr
    assert "method: stream (a cross would read about" in result.stdout


def test_the_demo_shows_the_mni152_template_where_nilearn_is_installed(tmp_path):
    pytest.importorskip("nilearn")
    result = run("demo", "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "(197, 233, 189)" in result.stdout and "method: stream" in result.stdout
    tt, metadata = tlc.load_tt(str(tmp_path / "mni152_t1.tt.npz"))
    assert metadata["error"] <= 0.1
    assert (tmp_path / "mni152_t1_slice.png").read_bytes()[:4] == b"\x89PNG"


def test_a_stream_capped_by_max_rank_misses_the_tolerance_with_exit_3(files, tmp_path):
    _, paths = files
    result = run("compress", paths["gz"], "-o", str(tmp_path / "e.tt.npz"), "--tol", "1e-4",
                 "--max-rank", "2", "-q")
    assert result.returncode == 3
    assert "not met: exact error" in result.stderr and "--accept-miss" in result.stderr


def test_compress_runs_the_library_s_cross_with_its_defaults(files, tmp_path, capsys):
    # The command's lsq cross is tt_cross's: the same oversampling (1.5 unless --oversample
    # is given), so the same TT as the API at the command's settings.
    from tensorly_cross import cli

    volume, paths = files
    out = str(tmp_path / "lsq.tt.npz")
    code = cli.main(["compress", paths["npy"], "-o", out, "--tol", "0.05", "--method", "lsq",
                     "--quiet", "--accept-miss"])
    assert code == cli.EXIT_OK, capsys.readouterr().err
    stored, _ = tlc.load_tt(out)
    api = tlc.tt_cross(tlc.open_volume(paths["npy"]), tol=0.05, method="lsq", max_rank=64,
                       n_iter_max=20, patience=2, random_state=0)
    assert stored.rank == api.rank
    for saved, core in zip(stored, api, strict=True):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(core).astype(np.float32))


def test_a_stream_with_a_rank_it_cannot_hold_says_so(files, tmp_path):
    # The stream path silenced every UserWarning, so the clipped rank went unsaid (the
    # cross path shows it).
    _, paths = files
    result = run("compress", paths["gz"], "-o", str(tmp_path / "r.tt.npz"), "--rank", "1000",
                 "--method", "stream", "-q")
    assert result.returncode == 0, result.stderr
    assert "warning: rank[1]=1000 exceeds what the unfoldings" in result.stderr
