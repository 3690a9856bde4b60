"""The command line on the inputs a new user has: HDF5 datasets (names with ':', --dataset,
their size on disk), volumes whose reader is not installed, a --scheduler it cannot reach,
outputs larger than the free disk; and what a stream read once reports as its error."""

import os

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import cli

h5py = pytest.importorskip("h5py")


def _small_volume():
    """A smooth 12x10x8 volume, float32 (the size does not matter to what is tested)."""
    grid = np.meshgrid(*[np.linspace(0.0, 1.0, n) for n in (12, 10, 8)], indexing="ij")
    return (1.0 + np.sin(3 * grid[0]) * np.cos(2 * grid[1]) + grid[2]).astype(np.float32)


def _hdf5(path, datasets):
    with h5py.File(path, "w") as file:
        for name, array in datasets.items():
            file[name] = array
    return str(path)


def test_an_output_linked_to_an_hdf5_input_whose_dataset_name_holds_a_colon_is_refused(
        tmp_path, monkeypatch, capsys):
    """HDF5 names may hold ':' ('a:b'); the command line split FILE.h5:/a:b at its last ':',
    took 'FILE.h5:/a' for the input's file, and did not see that an output linked to
    FILE.h5 is the input: --force replaced the HDF5 file with the TT archive."""
    monkeypatch.chdir(tmp_path)
    volume = _small_volume()
    source = _hdf5(tmp_path / "scan.h5", {"a:b": volume, "c": volume})
    before = open(source, "rb").read()
    os.symlink("scan.h5", "out.tt.npz")
    code = cli.main(["compress", "scan.h5:/a:b", "-o", "out.tt.npz", "--force", "-q"])
    assert code == 2
    assert "is the input" in capsys.readouterr().err
    assert open(source, "rb").read() == before


def test_the_default_output_of_an_hdf5_dataset_whose_name_holds_a_colon_is_the_file_stem(
        tmp_path, monkeypatch):
    """docs/cli.rst: without -o, the input's name with .tt.npz; an HDF5 input's :/NAME
    suffix is no part of it (FILE.h5:/a:b wrote 'a.tt.npz', FILE.h5:/c 'scan.tt.npz')."""
    monkeypatch.chdir(tmp_path)
    volume = _small_volume()
    _hdf5(tmp_path / "scan.h5", {"a:b": volume})
    assert cli.main(["compress", "scan.h5:/a:b", "--tol", "0.3", "-q"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["scan.h5", "scan.tt.npz"]


def _two_dataset_file(path):
    """An HDF5 file of a gzip-compressed ball (a few KiB on disk, smaller than its TT at
    tol=0.05) beside a larger uncompressed dataset."""
    grid = np.meshgrid(*[np.arange(40)] * 3, indexing="ij")
    ball = (((grid[0] - 20) ** 2 + (grid[1] - 18) ** 2 + (grid[2] - 21) ** 2) < 100)
    with h5py.File(path, "w") as file:
        file.create_dataset("vol", data=ball.astype(np.float32), compression="gzip",
                            chunks=(20, 20, 20))
        file["other"] = np.random.default_rng(0).random((64, 64, 64), dtype=np.float32)
    return str(path)


@pytest.mark.parametrize("spelling", [["scan.h5", "--dataset", "vol"], ["scan.h5:/vol"]])
def test_a_tt_file_of_an_hdf5_dataset_names_the_dataset_as_its_source(
        tmp_path, monkeypatch, capsys, spelling):
    """With --dataset, the file recorded (and info showed) 'source scan.h5' alone, which
    does not say which of its datasets the TT holds; FILE.h5:/NAME recorded it."""
    monkeypatch.chdir(tmp_path)
    _two_dataset_file(tmp_path / "scan.h5")
    assert cli.main(["compress", *spelling, "--tol", "0.3", "-o", "t.tt.npz", "-q"]) == 0
    _, metadata = tlc.load_tt("t.tt.npz")
    assert metadata["source"] == "scan.h5:/vol"
    capsys.readouterr()
    assert cli.main(["info", "t.tt.npz"]) == 0
    assert "source              scan.h5:/vol\n" in capsys.readouterr().out


@pytest.mark.parametrize("spelling", [["scan.h5", "--dataset", "vol"], ["scan.h5:/vol"]])
def test_a_tt_larger_than_its_hdf5_dataset_on_disk_is_warned_of_in_both_spellings(
        tmp_path, monkeypatch, capsys, spelling):
    """docs/cli.rst: a TT file larger than the input on disk is warned of. For FILE.h5:/NAME
    no size was found (the path is no file), and with --dataset the whole file's was taken,
    other datasets included: neither warned of a TT twice the dataset's compressed size."""
    monkeypatch.chdir(tmp_path)
    _two_dataset_file(tmp_path / "scan.h5")
    assert cli.main(["compress", *spelling, "--tol", "0.05", "-o", "t.tt.npz"]) == 0
    with h5py.File("scan.h5", "r") as file:
        stored = file["vol"].id.get_storage_size()
    assert os.path.getsize("t.tt.npz") > stored  # what the warning is about
    assert "stores it in less space" in capsys.readouterr().err


def test_an_unusable_scheduler_address_is_named_by_its_flag(tmp_path, monkeypatch, capsys):
    """--scheduler notanaddress printed dask's 'missing port number in address
    'notanaddress'' alone, which names no flag (docs/guarantees.rst: messages name the
    argument)."""
    pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)
    np.save("v.npy", _small_volume())
    code = cli.main(["compress", "v.npy", "--scheduler", "notanaddress", "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--scheduler 'notanaddress'" in err and "port" in err
    assert not os.path.exists("v.tt.npz")


# README's first command installs no extra (pip install -e .): NIfTI needs nibabel (the
# [nifti] extra), HDF5 h5py and a cluster distributed (the [dask] extra). A missing one
# ended compress in Python's traceback, "ModuleNotFoundError: No module named 'nibabel'",
# which names neither the extra nor the format that needs it.
MISSING = [("nibabel", "scan.nii", "nifti"), ("h5py", "scan.h5", "dask")]


def _write(path):
    volume = _small_volume()
    if path.endswith(".nii"):
        nibabel = pytest.importorskip("nibabel")
        nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)
    else:
        _hdf5(path, {"vol": volume})


@pytest.mark.parametrize("module, name, extra", MISSING)
def test_a_volume_whose_reader_is_not_installed_names_the_package_and_extra(
        tmp_path, monkeypatch, module, name, extra):
    path = str(tmp_path / name)
    _write(path)
    monkeypatch.setitem(__import__("sys").modules, module, None)  # import fails
    with pytest.raises(ImportError) as error:
        tlc.open_volume(path)
    message = str(error.value)
    assert f"pip install {module}" in message and f"'.[{extra}]'" in message
    assert name.rsplit(".", 1)[1] in message  # the format that needs it


@pytest.mark.parametrize("module, name, extra", MISSING)
def test_compress_says_in_one_line_which_package_its_input_needs(
        tmp_path, monkeypatch, capsys, module, name, extra):
    monkeypatch.chdir(tmp_path)
    _write(name)
    monkeypatch.setitem(__import__("sys").modules, module, None)
    assert cli.main(["compress", name, "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tensorly-cross compress: error: ") and err.count("\n") == 1
    assert f"pip install {module}" in err and "Traceback" not in err


def test_reconstruct_to_nifti_without_nibabel_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save("v.npy", _small_volume())
    assert cli.main(["compress", "v.npy", "--tol", "0.3", "-q"]) == 0
    monkeypatch.setitem(__import__("sys").modules, "nibabel", None)
    assert cli.main(["reconstruct", "v.tt.npz", "-o", "v.nii.gz"]) == 1
    err = capsys.readouterr().err
    assert "pip install nibabel" in err and "'.[nifti]'" in err
    assert err.count("\n") == 1 and not os.path.exists("v.nii.gz")


@pytest.mark.parametrize("tol, largest", [(0.1, 1e-7), (1e-3, 1e-7), (1e-7, 1e-13)])
def test_the_error_a_stream_read_once_reports_resolves_what_its_docstring_says(tol, largest):
    """StreamInfo.error said a volume read once (no mode sketched) has no floor; from
    tol=1e-6 up its short, wide unfoldings go through their Gram matrices, whose
    eigenvalues resolve the error to about 1e-8 of the norm only: an exact rank-3 volume,
    reconstructed to 1e-15, reported 2.5e-8 (an over-estimate). Below 1e-6, an SVD: no
    floor. The docstring says both now."""
    rng = np.random.default_rng(0)
    factors = [rng.standard_normal((3, n)) for n in (40, 50, 60)]
    volume = np.einsum("ri,rj,rk->ijk", *factors)
    tt, info = tlc.streaming_tt_svd(volume, tol=tol, return_info=True)
    true = np.linalg.norm(tl.tt_to_tensor(tt) - volume) / np.linalg.norm(volume)
    assert info.n_passes == 1 and tt.rank == (1, 3, 3, 1) and true < 1e-13
    assert info.error < largest
    if tol >= 1e-6:  # the Gram route: an over-estimate, at its floor
        assert info.error > 1e3 * true
    floor = "about ``1e-8``" in tlc.StreamInfo.__doc__ and "Gram" in tlc.StreamInfo.__doc__
    assert floor and "and no such floor" not in tlc.StreamInfo.__doc__  # the old claim


def test_a_demo_volume_larger_than_the_free_disk_is_refused_before_it_is_written(
        tmp_path, capsys):
    """demo --size N wrote an N^3 float32 volume without asking whether it fits: --size 4096
    (256 GiB) filled the disk before failing; a larger one failed on its first slab's
    memory. The free space of --workdir is checked first, naming --size."""
    import shutil

    size = 20_000  # 32 TB of float32
    if shutil.disk_usage(tmp_path).free >= size**3 * 4:
        pytest.skip("this disk holds the volume")
    code = cli.main(["demo", "--volume", "procedural", "--size", str(size),
                     "--workdir", str(tmp_path), "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--size 20000" in err and "free" in err and "--workdir" in err
    assert [name for name in os.listdir(tmp_path) if not name.endswith(".lock")] == []


@pytest.mark.parametrize("output", ["huge.nii", "huge.nii.gz"])
def test_reconstructing_a_volume_its_disk_cannot_hold_is_refused_before_writing(
        tmp_path, monkeypatch, capsys, output):
    """reconstruct -o OUT.nii writes the whole volume: a TT file of a 100000^3 grid (4 PB
    of float32, a function's TT saved with save_tt) wrote 2.5 GB in 12 s and went on until
    the disk was full. A .nii that does not fit the output's folder is refused first (a
    .nii.gz where even deflate's best ratio, 1032:1, would not fit)."""
    import shutil

    size = 100_000
    if shutil.disk_usage(tmp_path).free >= size**3 * 4 / 1032:
        pytest.skip("this disk holds the volume")
    monkeypatch.chdir(tmp_path)
    tlc.save_tt("huge.tt.npz", [np.ones((1, size, 1), dtype=np.float32)] * 3,
                {"shape": [size] * 3})
    assert cli.main(["reconstruct", "huge.tt.npz", "-o", output]) == 1
    err = capsys.readouterr().err
    assert "GiB free" in err and "--slice" in err
    assert sorted(os.listdir(tmp_path)) == ["huge.tt.npz"]  # nothing written, no temporary
