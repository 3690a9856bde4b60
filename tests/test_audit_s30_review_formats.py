"""Review of the s30 format fixes: what the fixes checked on an h5py dataset must hold for
the views of one (``dataset.astype``) too. Real files in tmp_path; each test failed before
its fix."""

import os

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.lazy.sources import ChunkReadError

from .test_audit_s30_formats import astype_view


def _volume():
    return np.arange(1.0, 1.0 + 6 * 5 * 4).reshape(6, 5, 4)


def _hdf5_with_raw_file(folder):
    """An HDF5 file whose dataset "x" keeps its data in the raw file ``folder/raw.bin``
    (named by its absolute path, so no working directory is involved)."""
    h5py = pytest.importorskip("h5py")
    path, raw = folder / "external.h5", folder / "raw.bin"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", shape=_volume().shape, dtype="f8",
                              external=[(str(raw), 0, _volume().nbytes)])
        handle["x"][...] = _volume()
    return path, raw


def test_a_view_of_a_dataset_whose_raw_file_was_cut_short_is_refused(tmp_path):
    # The dataset was refused, but its view (dataset.astype) read the missing bytes as
    # zeros: the cross compressed a volume whose last rows were zero.
    h5py = pytest.importorskip("h5py")
    path, raw = _hdf5_with_raw_file(tmp_path)
    os.truncate(raw, _volume().nbytes // 2)
    with h5py.File(path, "r") as handle:
        with pytest.raises(ValueError, match=r"raw\.bin.*shorter"):
            tlc.open_volume(astype_view(handle["x"], "f4"))


def test_a_view_of_a_dataset_notices_its_raw_file_rewritten(tmp_path):
    # Only the HDF5 file's stamp was checked by a view's reads: a raw file rewritten
    # meanwhile mixed two versions of the data.
    h5py = pytest.importorskip("h5py")
    path, raw = _hdf5_with_raw_file(tmp_path)
    with h5py.File(path, "r") as handle:
        volume = tlc.open_volume(astype_view(handle["x"], "f4"))
        raw.write_bytes((2.0 * _volume()).tobytes())
        with pytest.raises(ChunkReadError, match=r"raw\.bin.*changed"):
            volume.evaluate([[0, 0, 0]])


def test_an_extfile_prefix_of_origin_and_a_folder_name_finds_the_raw_file(tmp_path):
    # HDF5 replaces ${ORIGIN} by the HDF5 file's folder with its trailing separator:
    # "${ORIGIN}raw" is the folder "raw" next to the file. The check joined them as
    # ".../folderraw" and refused a file HDF5 reads. HDF5 reads HDF5_EXTFILE_PREFIX when
    # it starts: set for a fresh interpreter.
    import subprocess
    import sys

    h5py = pytest.importorskip("h5py")
    (tmp_path / "raw").mkdir()
    path = tmp_path / "external.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", shape=_volume().shape, dtype="f8",
                              external=[("data.bin", 0, _volume().nbytes)])
    (tmp_path / "raw" / "data.bin").write_bytes(_volume().tobytes())
    script = ("import sys, numpy as np, tensorly_cross as tlc; "
              "print(float(tlc.open_volume(sys.argv[1]).evaluate([[5, 4, 3]])[0]))")
    env = {**os.environ, "HDF5_EXTFILE_PREFIX": "${ORIGIN}raw",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script, str(path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-800:]
    assert float(done.stdout) == _volume()[5, 4, 3]


def test_a_prefix_set_in_os_environ_after_start_is_not_where_raw_files_are_checked(
        tmp_path, monkeypatch):
    # HDF5 reads HDF5_EXTFILE_PREFIX once, when it starts: set later (os.environ in a
    # notebook), HDF5 still reads the raw file from the working directory, while the check
    # looked in the prefix. A raw file there cut short read as zeros, unrefused.
    h5py = pytest.importorskip("h5py")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "external.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", shape=_volume().shape, dtype="f8",
                              external=[("raw.bin", 0, _volume().nbytes)])
    (tmp_path / "raw.bin").write_bytes(_volume().tobytes()[: _volume().nbytes // 2])
    (tmp_path / "prefix").mkdir()
    (tmp_path / "prefix" / "raw.bin").write_bytes(_volume().tobytes())
    monkeypatch.setenv("HDF5_EXTFILE_PREFIX", str(tmp_path / "prefix"))
    with pytest.raises(ValueError, match=r"raw\.bin.*shorter"):
        tlc.open_volume(str(path))


def test_a_vds_prefix_set_in_os_environ_after_start_is_not_where_sources_are_found(
        tmp_path, monkeypatch):
    # Likewise HDF5_VDS_PREFIX: HDF5 did not look there and read the region as the fill
    # value, while the check found the source there.
    h5py = pytest.importorskip("h5py")
    (tmp_path / "sources").mkdir()
    with h5py.File(tmp_path / "sources" / "src.h5", "w") as handle:
        handle["d"] = _volume()
    layout = h5py.VirtualLayout(shape=_volume().shape, dtype="f8")
    layout[...] = h5py.VirtualSource("src.h5", "d", shape=_volume().shape)
    with h5py.File(tmp_path / "vds.h5", "w") as handle:
        handle.create_virtual_dataset("v", layout, fillvalue=-1.0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HDF5_VDS_PREFIX", str(tmp_path / "sources"))
    with pytest.raises(ValueError, match=r"src\.h5.*missing"):
        tlc.open_volume(str(tmp_path / "vds.h5"))


def _hdf5_with_a_raw_file_per_frame(folder):
    """An HDF5 dataset "x" of 6 frames of 4 x 3, each frame in its own raw file (a
    detector's layout), the first after a 16-byte header; and those raw files."""
    h5py = pytest.importorskip("h5py")
    frame = 4 * 3 * 8
    raws = [folder / f"frame{number}.bin" for number in range(6)]
    external = [(str(raw), 16 if number == 0 else 0, frame) for number, raw in enumerate(raws)]
    path = folder / "frames.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", shape=(6, 4, 3), dtype="f8", external=external)
        handle["x"][...] = np.arange(72.0).reshape(6, 4, 3)
    return path, raws


def test_a_read_checks_the_raw_files_it_reads_and_only_those(tmp_path):
    # Every read checked the stamp of every raw file: with a raw file per frame, a chunk
    # read cost a stat per frame of the whole dataset (400 frames: 20 times slower than
    # before the raw files were checked). A read checks those holding its bytes, which is
    # enough: any of them changed since it was opened raises, and the others' bytes are
    # not read.
    h5py = pytest.importorskip("h5py")
    from tensorly_cross.lazy.sources import as_chunk_source

    path, raws = _hdf5_with_a_raw_file_per_frame(tmp_path)
    with h5py.File(path, "r") as handle:
        source = as_chunk_source(handle["x"])
        status = raws[3].stat()  # frame 3 rewritten
        os.utime(raws[3], ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
        first = (slice(0, 3), slice(0, 4), slice(0, 3))
        np.testing.assert_array_equal(source.read(first), np.arange(36.0).reshape(3, 4, 3))
        last = (slice(4, 6), slice(1, 2), slice(0, 3))  # frames 4 and 5 only
        np.testing.assert_array_equal(source.read(last),
                                      np.arange(72.0).reshape(6, 4, 3)[4:6, 1:2])
        for touching in [(slice(3, 4), slice(3, 4), slice(2, 3)),  # its last entry
                         (slice(2, 4), slice(3, 4), slice(2, 3)),  # and frame 2's
                         (slice(0, 6), slice(0, 1), slice(0, 1))]:  # every frame's first
            with pytest.raises(ChunkReadError, match=r"frame3\.bin.*changed"):
                source.read(touching)


def test_an_entry_straddling_two_raw_files_checks_both(tmp_path):
    # Raw files of 100 bytes hold 12.5 float64 entries: entry 12 is in both.
    h5py = pytest.importorskip("h5py")
    from tensorly_cross.lazy.sources import as_chunk_source

    raws = [tmp_path / "a.bin", tmp_path / "b.bin"]
    with h5py.File(tmp_path / "halves.h5", "w") as handle:
        handle.create_dataset("x", shape=(25,), dtype="f8",
                              external=[(str(raw), 0, 100) for raw in raws])
        handle["x"][...] = np.arange(25.0)
    with h5py.File(tmp_path / "halves.h5", "r") as handle:
        source = as_chunk_source(handle["x"])
        status = raws[1].stat()
        os.utime(raws[1], ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
        assert source.read((slice(0, 12),))[-1] == 11.0
        with pytest.raises(ChunkReadError, match=r"b\.bin.*changed"):
            source.read((slice(12, 13),))
