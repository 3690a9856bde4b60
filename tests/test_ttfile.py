"""TT files: round trip, atomic writes, refusal to overwrite, no pickle."""

import os

import numpy as np
import pytest
import tensorly as tl
from tensorly.random import random_tt

import tensorly_cross as tlc
from tensorly_cross import TTFileError, load_tt, save_tt

from .conftest import host


def test_round_trip_keeps_cores_and_metadata(backend, tmp_path):
    tt = random_tt((4, 5, 6), rank=[1, 2, 3, 1], random_state=0)
    path = tmp_path / "a.tt.npz"
    save_tt(path, tt, {"shape": [4, 5, 6], "val_error": 1e-3})
    loaded, meta = load_tt(path)
    for a, b in zip(tt, loaded, strict=True):
        np.testing.assert_array_equal(host(a), host(b))
    assert meta["shape"] == [4, 5, 6] and meta["ranks"] == [1, 2, 3, 1]
    assert meta["val_error"] == 1e-3


def test_existing_file_is_not_overwritten_without_permission(tmp_path):
    tt = random_tt((3, 3), rank=[1, 2, 1], random_state=0)
    path = tmp_path / "a.tt.npz"
    save_tt(path, tt)
    with pytest.raises(FileExistsError, match="--force"):
        save_tt(path, tt)
    save_tt(path, tt, overwrite=True)


def test_interrupted_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    old = random_tt((3, 3), rank=[1, 2, 1], random_state=0)
    path = tmp_path / "a.tt.npz"
    save_tt(path, old)
    before = path.read_bytes()

    def crash(stream, **arrays):
        stream.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save_tt(path, random_tt((3, 3), rank=[1, 2, 1], random_state=1), overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.tt.npz"]


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    payload = np.array([{"boom": 1}], dtype=object)
    np.savez(path, meta=np.frombuffer(b'{"format": "tensorly-cross-tt", "n_cores": 1}',
                                      dtype=np.uint8), core_0=payload)
    with pytest.raises(TTFileError, match="not a readable"):
        load_tt(path)


@pytest.mark.parametrize("content", [b"garbage", b"PK\x03\x04 broken zip"])
def test_corrupt_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.tt.npz"
    path.write_bytes(content)
    with pytest.raises(TTFileError, match="bad.tt.npz"):
        load_tt(path)


def test_foreign_npz_is_refused(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, x=np.ones(3))
    with pytest.raises(TTFileError, match="no metadata"):
        load_tt(path)
    with pytest.raises(FileNotFoundError):
        load_tt(tmp_path / "missing.npz")


def test_cross_result_survives_a_round_trip(backend, tmp_path):
    dense = tl.tensor(np.random.default_rng(0).standard_normal((5, 6, 7)))
    tt = tlc.tt_cross(dense, rank=3, random_state=0)
    save_tt(os.fspath(tmp_path / "x.npz"), tt)
    loaded, _ = load_tt(tmp_path / "x.npz")
    np.testing.assert_allclose(host(tl.tt_to_tensor(loaded)), host(tl.tt_to_tensor(tt)))
