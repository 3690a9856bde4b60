"""Audit s26 of the command line's data fidelity: what a user reads back after ``compress``
then ``reconstruct`` (a NIfTI slab's qform, a NIfTI of cores of mixed dtypes), an output
named as another format, and a command terminated mid-write. Each test failed before its
fix (scaled, big-endian, 4-D and 2-D NIfTI, Fortran-ordered, big-endian, float16, int8 and
bool .npy, zarr and HDF5 inputs round-tripped correctly)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tensorly_cross import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHAPE = (12, 10, 8)


def _smooth(shape=SHAPE):
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
    image = nibabel.Nifti1Image(_smooth(), sform)
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
    np.save(source, _smooth())
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
