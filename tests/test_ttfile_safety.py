"""TT files that are inconsistent, hostile or raced for are refused, never half-believed."""

import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from tensorly.random import random_tt

from tensorly_cross import TTFileError, load_tt, save_tt


def write_npz(path, meta, cores):
    """A .npz as save_tt lays it out, with whatever metadata and cores the test wants."""
    arrays = {f"core_{k}": core for k, core in enumerate(cores)}
    text = meta if isinstance(meta, str) else json.dumps(meta)
    arrays["meta"] = np.frombuffer(text.encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    return path


def valid_cores(shape=(3, 4, 5), ranks=(1, 2, 2, 1), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((ranks[k], n, ranks[k + 1])) for k, n in enumerate(shape)]


def valid_meta(n_cores=3, **extra):
    return {"format": "tensorly-cross-tt", "format_version": 1, "n_cores": n_cores, **extra}


@pytest.mark.parametrize(
    "meta, message",
    [
        (valid_meta(format_version=99), "format_version 99"),
        (valid_meta(format_version="1"), "format_version '1'"),
        (valid_meta(n_cores=2), r"n_cores=2 but the file holds cores \['core_0', 'core_1', "
                                r"'core_2'\]"),
        (valid_meta(n_cores="3"), "n_cores must be an int"),
        (valid_meta(shape=[3, 4, 6]), r"means TT modes \[3, 4, 6\], the cores have \[3, 4, 5\]"),
        (valid_meta(shape=[5, 4, 3], axes=[0, 1, 1]), "axes"),
        (valid_meta(shape=[5, 3, 4], axes=[1, 2.0, 0]), "not a permutation"),  # TypeError
        (valid_meta(ranks=[1, 3, 2, 1]), r"ranks \[1, 3, 2, 1\]"),
        ([1, 2, 3], "JSON list, not an object"),
        ('"text"', "JSON str, not an object"),
        ("{not json", "not JSON"),
    ],
)
def test_inconsistent_metadata_is_refused(tmp_path, meta, message):
    path = write_npz(tmp_path / "bad.tt.npz", meta, valid_cores())
    with pytest.raises(TTFileError, match=message):
        load_tt(path)


def test_metadata_agreeing_with_cores_through_axes_and_quantics_loads(tmp_path):
    axes = write_npz(tmp_path / "a.npz", valid_meta(shape=[5, 3, 4], axes=[1, 2, 0]),
                     valid_cores())
    assert load_tt(axes)[1]["axes"] == [1, 2, 0]
    # (4, 6) in quantics digits, grouped: 2, 2 | 2, 3.
    quantics = write_npz(tmp_path / "q.npz",
                         valid_meta(4, shape=[4, 6], quantics={"order": "grouped"}),
                         valid_cores((2, 2, 2, 3), (1, 2, 2, 2, 1)))
    assert load_tt(quantics)[0].shape == (2, 2, 2, 3)


@pytest.mark.parametrize("dtype", ["<U3", "S2", "datetime64[s]"])
def test_non_numeric_cores_are_refused(tmp_path, dtype):
    cores = valid_cores()
    cores[1] = np.zeros(cores[1].shape, dtype=dtype)
    path = write_npz(tmp_path / "s.npz", valid_meta(), cores)
    with pytest.raises(TTFileError, match=re.escape(f"core 1 has dtype {np.dtype(dtype)}")):
        load_tt(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_cores_are_refused_on_loading_as_on_saving(tmp_path, bad):
    # save_tt refuses such cores; a file written elsewhere (or edited) loaded silently,
    # and every entry through the core was unusable.
    cores = valid_cores()
    cores[1] = cores[1].astype(np.float64)
    cores[1].flat[3] = bad
    path = write_npz(tmp_path / "n.npz", valid_meta(), cores)
    with pytest.raises(TTFileError, match=r"core 1 .* holds 1 non-finite entry") as caught:
        load_tt(path)
    # The file is named once: the finiteness check's message already starts with it.
    assert str(caught.value).count("is not a readable tensorly-cross TT file") == 1


@pytest.mark.parametrize(
    "cores, metadata, message",
    [
        (valid_cores((3, 4)) + [np.zeros((3, 2, 1))], None, "do not chain"),
        ([np.zeros((1, 3, 1), dtype="<U2")], None, "dtype <U2"),
        ([np.zeros((1, 3))], None, "3-D"),
        (valid_cores(), {"shape": [3, 4, 6]}, r"\[3, 4, 6\]"),
    ],
)
def test_save_refuses_files_that_load_would_refuse(tmp_path, cores, metadata, message):
    path = tmp_path / "x.tt.npz"
    with pytest.raises(TTFileError, match=message):
        save_tt(path, cores, metadata)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_metadata_json_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="metadata"):
        save_tt(tmp_path / "x.npz", valid_cores(), {"when": object()})
    with pytest.raises(TypeError, match="metadata must be a dict"):
        save_tt(tmp_path / "x.npz", valid_cores(), [("shape", [3, 4, 5])])
    assert list(tmp_path.iterdir()) == []


def test_a_writer_that_loses_the_race_for_a_new_name_fails(tmp_path, monkeypatch):
    """Another writer publishes the same name while this one writes: exactly one wins and
    the winner's file is intact (check-then-rename silently replaced it)."""
    path = tmp_path / "a.tt.npz"
    winner = random_tt((3, 3), rank=[1, 2, 1], random_state=0)
    savez = np.savez

    def slow_savez(stream, **arrays):
        monkeypatch.setattr(np, "savez", savez)
        save_tt(path, winner)  # the other writer, done while this one is mid-write
        savez(stream, **arrays)

    monkeypatch.setattr(np, "savez", slow_savez)
    with pytest.raises(FileExistsError, match="another writer"):
        save_tt(path, random_tt((3, 3), rank=[1, 2, 1], random_state=1))
    monkeypatch.undo()
    loaded, _ = load_tt(path)
    np.testing.assert_array_equal(loaded[0], winner[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tt.npz"]


def npy_header(shape, dtype="<f8"):
    """A version 1.0 .npy header declaring ``shape``."""
    text = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


def test_a_core_header_declaring_a_huge_shape_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.npz"
    meta = json.dumps(valid_meta(1)).encode()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("core_0.npy", npy_header((1, 2**45, 1)) + b"\0" * 64)
        archive.writestr("meta.npy", npy_header((len(meta),), "|u1") + meta)
    with pytest.raises(TTFileError, match=r"max_bytes=4294967296"):
        load_tt(path)


def deflate_bomb(path, n_bytes):
    """A TT file of one zero core of ``n_bytes`` float64 bytes, deflated (a few KiB)."""
    meta = json.dumps(valid_meta(1)).encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("core_0.npy", "w", force_zip64=True) as stream:
            stream.write(npy_header((1, n_bytes // 8, 1)))
            zeros = bytes(2**20)
            for _ in range(n_bytes // len(zeros)):
                stream.write(zeros)
        archive.writestr("meta.npy", npy_header((len(meta),), "|u1") + meta)
    return path


def test_a_deflate_bomb_is_refused_unless_allowed(tmp_path):
    path = deflate_bomb(tmp_path / "bomb.npz", 2**26)
    assert os.path.getsize(path) < 2**20 < 2**26
    with pytest.raises(TTFileError, match=r"67108864 bytes in memory, above max_bytes=1048576"):
        load_tt(path, max_bytes=2**20)
    tt, _ = load_tt(path, max_bytes=None)
    assert tt.shape == (2**23,)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.tt.npz"
    os.mkfifo(fifo)
    code = "import sys; from tensorly_cross import load_tt; load_tt(sys.argv[1])"
    # In a subprocess with a timeout: a regression must fail, not hang the suite.
    result = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True,
                            text=True, timeout=60)
    assert "TTFileError" in result.stderr and "not a regular file" in result.stderr


@pytest.mark.parametrize("content", [os.urandom(4096), b"\x93NUMPY" + os.urandom(200)])
def test_random_bytes_are_not_offered_to_pickle(tmp_path, content):
    path = tmp_path / "noise.tt.npz"
    path.write_bytes(content)
    with pytest.raises(TTFileError, match="not a .npz archive") as caught:
        load_tt(path)
    assert "pickle" not in str(caught.value)


def test_a_crc_error_in_a_core_is_a_tt_file_error(tmp_path):
    path = tmp_path / "c.npz"
    save_tt(path, valid_cores())
    data = bytearray(path.read_bytes())
    start = data.index(b"core_1.npy") + 200  # inside core_1's data (stored, not deflated)
    data[start] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TTFileError, match="c.npz"):
        load_tt(path)



@pytest.mark.parametrize("metadata", [{"axes": [0, 0, 0]}, {"quantics": {"x": 1}},
                                      {"axes": [2, 1, 0]}])
def test_a_layout_without_the_shape_it_maps_to_is_refused(tmp_path, metadata):
    # Saved and loaded before; reconstruct then failed with a reshape error.
    tt = random_tt((3, 4, 5), rank=[1, 2, 2, 1], random_state=0)
    with pytest.raises(TTFileError, match="without 'shape'"):
        save_tt(tmp_path / "m.tt.npz", tt, metadata=metadata)


def test_an_array_s_shape_and_tuple_axes_are_saved_as_json_lists(tmp_path):
    tt = random_tt((3, 4, 5), rank=[1, 2, 2, 1], random_state=0)
    volume_shape = np.zeros((4, 5, 3)).shape  # a tuple, as every array gives it
    path = save_tt(tmp_path / "t.tt.npz", tt, metadata={"shape": volume_shape,
                                                        "axes": (2, 0, 1)})
    _, metadata = load_tt(path)
    assert metadata["shape"] == [4, 5, 3] and metadata["axes"] == [2, 0, 1]
