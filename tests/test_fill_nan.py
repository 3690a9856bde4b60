"""``open_volume(..., fill_nan=)`` and ``compress --fill-nan``: volumes whose background is
NaN (statistical maps, masked scans) read as if that background held the value given, on
every path, and nothing else changes."""

import json

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import NonFiniteValueError, cli
from tensorly_cross.ttfile import load_tt

from .test_dask import loopback_cluster

FORMATS = ["npy", "nii.gz", "zarr", "h5", "dask"]


def _masked_volume(seed=0):
    """A smooth float32 volume whose corner beyond a plane is NaN (the "background")."""
    grid = np.linspace(0.0, 1.0, 12)
    volume = (np.add.outer(np.add.outer(grid, 2 * grid), grid) + 1).astype(np.float32)
    rng = np.random.default_rng(seed)
    volume[volume > 3.0 + rng.uniform(-0.3, 0.3)] = np.nan
    return volume


def _write(folder, kind, volume):
    """``volume`` stored as ``kind``; the path (or, for "dask", the array) to open."""
    path = folder / f"v.{kind}"
    if kind == "npy":
        np.save(path, volume)
    elif kind == "nii.gz":
        nibabel = pytest.importorskip("nibabel")
        nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)
    elif kind == "zarr":
        zarr = pytest.importorskip("zarr")
        array = zarr.create_array(str(path), shape=volume.shape, chunks=(5, 5, 5), dtype="f4")
        array[...] = volume
    elif kind == "h5":
        h5py = pytest.importorskip("h5py")
        with h5py.File(path, "w") as handle:
            handle.create_dataset("x", data=volume, chunks=(5, 5, 5))
    else:
        dask_array = pytest.importorskip("dask.array")
        return dask_array.from_array(volume, chunks=(5, 5, 5))
    return str(path)


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("fill", [0.0, -2.5])
def test_a_filled_volume_crosses_and_streams_as_its_filled_array_in_memory(tmp_path, kind,
                                                                             fill):
    volume = _masked_volume()
    filled = np.nan_to_num(volume.astype(np.float64), nan=fill)
    lazy = tlc.open_volume(_write(tmp_path, kind, volume), fill_nan=fill)
    assert lazy.fill_nan == fill
    cross = tlc.tt_cross(lazy, rank=4, method="als", random_state=0)
    expected = tlc.tt_cross(filled, rank=4, method="als", random_state=0)
    np.testing.assert_allclose(cross.to_tensor(), expected.to_tensor(), rtol=1e-12,
                               atol=1e-12)
    stream = tlc.streaming_tt_svd(lazy, tol=1e-10)
    np.testing.assert_allclose(stream.to_tensor(), filled, atol=1e-8)


@pytest.mark.parametrize("kind", FORMATS)
def test_without_fill_nan_the_nan_voxel_is_named(tmp_path, kind):
    volume = _masked_volume()
    with pytest.raises(NonFiniteValueError) as caught:
        tlc.tt_cross(tlc.open_volume(_write(tmp_path, kind, volume)), rank=2, method="als",
                     random_state=0, val_size=200)
    assert np.isnan(volume[caught.value.index])


@pytest.mark.parametrize("kind", ["npy", "zarr"])
def test_fill_nan_leaves_infinities_an_error(tmp_path, kind):
    volume = _masked_volume()
    volume[0, 0, 0] = np.inf
    lazy = tlc.open_volume(_write(tmp_path, kind, volume), fill_nan=0.0)
    with pytest.raises(NonFiniteValueError) as caught:
        tlc.streaming_tt_svd(lazy, tol=0.1)
    assert caught.value.index == (0, 0, 0)


@given(seed=st.integers(0, 2**16), fill=st.floats(-1e3, 1e3))
@settings(max_examples=10, deadline=None)
def test_a_filled_npy_reads_every_entry_as_the_filled_array(tmp_path_factory, seed, fill):
    volume = _masked_volume(seed)
    path = _write(tmp_path_factory.mktemp("npy"), "npy", volume)
    lazy = tlc.open_volume(path, fill_nan=fill)
    everything = np.indices(volume.shape).reshape(3, -1).T
    np.testing.assert_array_equal(np.asarray(lazy.evaluate(everything)),
                                  np.nan_to_num(volume.astype(np.float64), nan=fill).ravel())


def test_filled_chunks_are_read_on_the_workers_of_a_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    volume = _masked_volume()
    path = _write(tmp_path, "zarr", volume)
    filled = np.nan_to_num(volume.astype(np.float64), nan=0.0)
    with loopback_cluster() as cluster, distributed.Client(cluster) as client:
        lazy = tlc.open_volume(path, client=client, fill_nan=0.0)
        cross = tlc.tt_cross(lazy, rank=4, method="als", random_state=0)
        stream = tlc.streaming_tt_svd(lazy, tol=1e-10, client=client)
    expected = tlc.tt_cross(filled, rank=4, method="als", random_state=0)
    np.testing.assert_allclose(cross.to_tensor(), expected.to_tensor(), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(stream.to_tensor(), filled, atol=1e-8)


@pytest.mark.parametrize("value, error", [("0", TypeError), (True, TypeError),
                                          (float("nan"), ValueError),
                                          (float("inf"), ValueError)])
def test_fill_nan_must_be_a_finite_number(tmp_path, value, error):
    path = _write(tmp_path, "npy", _masked_volume())
    with pytest.raises(error, match="fill_nan"):
        tlc.open_volume(path, fill_nan=value)


@pytest.mark.parametrize("method", ["stream", "lsq"])
def test_compress_fill_nan_writes_the_filled_volume_and_records_it(tmp_path, capsys, method):
    volume = _masked_volume()
    path = _write(tmp_path, "npy", volume)
    output = tmp_path / "v.tt.npz"
    assert cli.main(["compress", path, "-o", str(output), "--fill-nan", "0", "--method",
                     method, "--tol", "1e-3", "-q"]) in (cli.EXIT_OK, cli.EXIT_TOL_MISSED)
    cores, metadata = load_tt(str(output))
    assert metadata["arguments"]["fill_nan"] == 0.0
    approx = tl.tt_to_tensor([np.asarray(core, dtype=np.float64) for core in cores])
    filled = np.nan_to_num(volume.astype(np.float64), nan=0.0)
    assert np.linalg.norm(approx - filled) <= 0.05 * np.linalg.norm(filled)
    assert cli.main(["info", str(output)]) == cli.EXIT_OK
    assert "NaN voxels read as  0" in capsys.readouterr().out
    assert json.dumps(metadata["arguments"])  # still plain JSON


def test_compress_of_a_nan_volume_says_how_to_fill_it(tmp_path, capsys):
    path = _write(tmp_path, "npy", _masked_volume())
    assert cli.main(["compress", path, "-o", str(tmp_path / "v.tt.npz"), "-q"]) == \
        cli.EXIT_INPUT
    assert "--fill-nan VALUE" in capsys.readouterr().err


def test_reconstruct_against_reads_the_input_as_compress_filled_it(tmp_path, capsys):
    # The TT approximates the filled volume: --against read the NaN input unfilled and
    # stopped on its first NaN voxel.
    volume = _masked_volume()
    path = _write(tmp_path, "npy", volume)
    output = tmp_path / "v.tt.npz"
    assert cli.main(["compress", path, "-o", str(output), "--fill-nan", "0", "--method",
                     "stream", "--tol", "1e-6", "-q"]) == cli.EXIT_OK
    assert cli.main(["reconstruct", str(output), "--against", path, "--slice", "2=11",
                     "-o", str(tmp_path / "s.npy")]) == cli.EXIT_OK
    error = float(capsys.readouterr().out.split("relative error")[1].split()[0])
    assert error < 1e-5


def test_a_filled_float32_block_stays_float32_and_the_source_is_untouched():
    # Every float block was copied to float64, doubling the chunk cache's memory for
    # float32 volumes, NaN or not.
    from tensorly_cross.lazy.filled import FilledSource
    from tensorly_cross.lazy.sources import as_chunk_source

    volume = _masked_volume()
    source = FilledSource(as_chunk_source(volume), 0.0)
    whole = tuple(slice(0, n) for n in volume.shape)
    block = source.read(whole)
    assert block.dtype == np.float32 and not np.isnan(block).any()
    assert np.isnan(volume).any()  # the array read is not filled in place
    clean = tuple(slice(0, 2) for _ in volume.shape)
    assert source.read(clean).dtype == np.float32


def test_an_npy_tensor_checks_fill_nan_itself(tmp_path):
    from tensorly_cross.lazy.npy import NpyTensor

    path = _write(tmp_path, "npy", _masked_volume())
    with pytest.raises(ValueError, match="fill_nan"):
        NpyTensor(path, fill_nan=float("nan"))
