"""What a new user meets first: ``reconstruct --slice`` with a NIfTI output writes that
slab where it lay, every output written is reported, the demo says which volume and method
it runs and why, and the PNG shows the original and the TT on one scale, oriented as
NIfTI viewers show slices."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (12, 10, 8)


@pytest.fixture(scope="module")
def nifti_tt(tmp_path_factory):
    """A TT file compressed from an oblique NIfTI (MNI sform, scanner qform); its path and
    the whole volume it reconstructs to (path)."""
    nibabel = pytest.importorskip("nibabel")
    folder = tmp_path_factory.mktemp("nifti")
    grid = np.meshgrid(*[np.linspace(0, 1, n) for n in SHAPE], indexing="ij")
    data = (np.sin(3 * grid[0]) + grid[1] ** 2 + np.cos(2 * grid[2])).astype(np.float32)
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([2.0, 3.0, 4.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    image = nibabel.Nifti1Image(data, affine)
    image.header.set_sform(affine, code="mni")
    image.header.set_qform(affine, code="scanner")
    source = str(folder / "v.nii")
    nibabel.save(image, source)
    output, whole = str(folder / "v.tt.npz"), str(folder / "whole.nii.gz")
    assert cli.main(["compress", source, "-o", output, "--rank", "4", "-q"]) == cli.EXIT_OK
    assert cli.main(["reconstruct", output, "-o", whole]) == cli.EXIT_OK
    return output, whole


# --- (a) reconstruct --slice with a NIfTI output -----------------------------------------


@pytest.mark.parametrize("axis, index", [(0, 5), (1, 0), (2, 7)])
def test_a_nifti_output_with_slice_is_that_slab_where_it_lay(nifti_tt, tmp_path, capsys,
                                                            axis, index):
    nibabel = pytest.importorskip("nibabel")
    output, whole = nifti_tt
    slab_path = str(tmp_path / "slab.nii.gz")
    capsys.readouterr()
    code = cli.main(["reconstruct", output, "-o", slab_path, "--slice", f"{axis}={index}"])
    assert code == cli.EXIT_OK
    volume, slab = nibabel.load(whole), nibabel.load(slab_path)
    expected = volume.slicer[tuple(slice(index, index + 1) if k == axis else slice(None)
                                   for k in range(3))]  # nibabel's own slab
    assert slab.shape == expected.shape
    np.testing.assert_allclose(slab.affine, expected.affine, atol=1e-6)
    np.testing.assert_allclose(slab.get_fdata(), expected.get_fdata(), rtol=1e-6, atol=1e-6)
    assert (int(slab.header["sform_code"]), int(slab.header["qform_code"])) == (4, 1)
    shape = tuple(1 if k == axis else n for k, n in enumerate(SHAPE))
    assert capsys.readouterr().out == (f"written             {slab_path} (slice {axis}={index}, "
                                       f"shape {shape}, float32)\n")


def test_a_nifti_slab_of_a_4d_tt_keeps_every_axis(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    shape = (6, 7, 8, 5)
    cores = [rng.standard_normal((1 if k == 0 else 2, n, 1 if k == 3 else 2))
             for k, n in enumerate(shape)]
    output, slab_path = str(tmp_path / "v.tt.npz"), str(tmp_path / "slab.nii")
    tlc.save_tt(output, cores, {"shape": list(shape)})
    code = cli.main(["reconstruct", output, "-o", slab_path, "--slice", "1=2,3=4"])
    assert code == cli.EXIT_OK
    slab = nibabel.load(slab_path)
    dense = tl.to_numpy(tl.tt_to_tensor(cores))
    np.testing.assert_allclose(slab.get_fdata(), dense[:, 2:3, :, 4:5], rtol=1e-5, atol=1e-5)
    expected = np.eye(4)
    expected[1, 3] = 2.0  # the identity affine moved to voxel (0, 2, 0); time has no place
    np.testing.assert_array_equal(slab.affine, expected)


def test_a_nifti_output_without_slice_is_still_the_whole_volume(nifti_tt, tmp_path, capsys):
    nibabel = pytest.importorskip("nibabel")
    output, _ = nifti_tt
    path = str(tmp_path / "all.nii")
    capsys.readouterr()
    assert cli.main(["reconstruct", output, "-o", path, "--png",
                     str(tmp_path / "s.png")]) == cli.EXIT_OK
    assert nibabel.load(path).shape == SHAPE
    assert f"written             {path} (shape {SHAPE}, float32)" in capsys.readouterr().out


# --- (b) reconstruct reports what it wrote -----------------------------------------------


def test_reconstruct_reports_each_file_it_writes_and_the_error_last(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    cores = [rng.standard_normal((1, 4, 2)), rng.standard_normal((2, 5, 2)),
             rng.standard_normal((2, 6, 1))]
    output, source = str(tmp_path / "t.tt.npz"), str(tmp_path / "v.npy")
    tlc.save_tt(output, cores, {"shape": [4, 5, 6]})
    np.save(source, tl.to_numpy(tl.tt_to_tensor(cores)))
    npy, png = str(tmp_path / "s.npy"), str(tmp_path / "s.png")
    code = cli.main(["reconstruct", output, "--slice", "1=3", "-o", npy, "--png", png,
                     "--against", source])
    assert code == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"written             {npy} (slice 1=3, shape (4, 6), float64)",
                         f"written             {png} (slice 1=3, shape (4, 6), PNG)"]
    # Scripts (and tests) read the error as the number that ends the output.
    assert len(lines) == 3 and lines[2].startswith("slice 1=3: relative error ")


# --- (c) the demo says which volume and which method, and why ----------------------------


@pytest.fixture
def no_nilearn(monkeypatch):
    """nilearn as if not installed: find_spec answers None, importing it fails."""
    monkeypatch.setitem(sys.modules, "nilearn", None)
    monkeypatch.setitem(sys.modules, "nilearn.datasets", None)


def test_the_demo_says_it_falls_back_without_nilearn_and_how_to_see_a_cross(
        no_nilearn, tmp_path, capsys):
    code = cli.main(["demo", "--size", "16", "--workdir", str(tmp_path)])
    assert code == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("volume: the procedural 16^3 volume of Gaussian blobs, 0.0156 MiB of "
                        "float32 (nilearn is not installed; pip install nilearn for the MNI152 "
                        "T1 template)")
    method = next(k for k, line in enumerate(lines) if line.startswith("method: "))
    assert lines[method].startswith("method: stream (")  # 16^3 in one 32^3 chunk
    assert "--method lsq" in lines[method + 1] and lines[method + 1].startswith("hint: ")


def test_the_demo_gives_no_hint_for_a_method_asked_for_and_says_nothing_when_quiet(
        no_nilearn, tmp_path, capsys):
    common = ["demo", "--size", "16", "--workdir", str(tmp_path)]
    assert cli.main([*common, "--method", "stream"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "method: stream (asked for)" in out and "\nhint: " not in out
    assert "nilearn is not installed" in out
    assert cli.main([*common, "-q"]) == cli.EXIT_OK
    assert capsys.readouterr().out == ""


def test_the_demo_s_template_without_nilearn_exits_2_saying_how_to_install_it(
        no_nilearn, tmp_path, capsys):
    code = cli.main(["demo", "--volume", "mni152", "--workdir", str(tmp_path)])
    assert code == cli.EXIT_USAGE
    assert "pip install nilearn" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_the_demo_names_the_template_and_why_where_nilearn_is_installed():
    pytest.importorskip("nilearn")
    from tensorly_cross.cli._parser import build_parser
    from tensorly_cross.cli.demo import _demo_volume

    args = build_parser().parse_args(["demo"])
    name, shape, _, tol, why = _demo_volume(args)
    assert (name, shape, tol) == ("mni152_t1", (197, 233, 189), 0.1)
    assert why == (f"nilearn's MNI152 T1 template, shape {shape} (nilearn is installed; "
                   "--volume procedural for the procedural one)")


# --- (d) the PNG: one scale for the original and the TT, slices oriented alike -----------


def test_shared_limits_span_every_image_s_finite_values():
    from tensorly_cross.cli.reconstruct import shared_limits

    original = np.array([[0.0, 1.0], [0.5, np.nan]])
    tt = np.array([[-0.1, 0.9], [np.inf, 0.2]])
    assert shared_limits(original, tt) == (-0.1, 1.0)
    assert shared_limits(np.full((2, 2), np.nan)) == (None, None)


def test_the_png_shares_one_scale_and_shows_slices_transposed_from_below(tmp_path,
                                                                         monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from tensorly_cross.cli.reconstruct import write_png

    shown, imshow = [], Axes.imshow

    def record(self, data, **kwargs):
        shown.append((np.array(data), kwargs))
        return imshow(self, data, **kwargs)

    monkeypatch.setattr(Axes, "imshow", record)
    original = np.arange(12.0).reshape(3, 4) / 11  # 0 .. 1
    image = original - 0.1  # -0.1 .. 0.9: a scale each would hide the offset
    write_png(str(tmp_path / "s.png"), image, original)
    assert matplotlib.get_backend().lower() == "agg"
    assert len(shown) == 3
    for (data, kwargs), panel in zip(shown, [original, image, np.abs(image - original)],
                                     strict=True):
        np.testing.assert_array_equal(data, panel.T)
        assert kwargs["origin"] == "lower"
    limits = [(kwargs.get("vmin"), kwargs.get("vmax")) for _, kwargs in shown]
    assert limits[0] == limits[1] == (-0.1, 1.0)
    assert limits[2] == (None, None)  # the error map: its own scale, its own colorbar
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_png_runs_headless(tmp_path):
    pytest.importorskip("matplotlib")
    env = {key: value for key, value in os.environ.items()
           if key not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    env["PYTHONPATH"] = ROOT
    png = str(tmp_path / "s.png")
    script = ("import numpy as np; from tensorly_cross.cli.reconstruct import write_png; "
              f"write_png({png!r}, np.eye(5), np.ones((5, 5)), title='t')")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
