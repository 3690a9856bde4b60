"""save_tt and load_tt check their arguments: by name, before any file is written or read."""

import json
import os

import numpy as np
import pytest

from tensorly_cross import TTFileError, load_tt, save_tt
from tensorly_cross.ttfile import MAX_META_BYTES


def cores():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, 2)), rng.standard_normal((2, 4, 1))]


@pytest.mark.parametrize("overwrite", ["no", 0, 1, None, [True]])
def test_overwrite_must_be_a_bool(tmp_path, overwrite):
    path = tmp_path / "x.tt.npz"
    save_tt(path, cores())
    before = path.read_bytes()
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        save_tt(path, [core + 1 for core in cores()], overwrite=overwrite)
    assert path.read_bytes() == before


def test_overwrite_accepts_a_numpy_bool(tmp_path):
    path = save_tt(tmp_path / "x.tt.npz", cores())
    save_tt(path, cores(), {"again": 1}, overwrite=np.bool_(True))
    assert load_tt(path)[1]["again"] == 1


def test_metadata_json_over_the_load_limit_is_refused(tmp_path):
    with pytest.raises(TTFileError, match=f"above the {MAX_META_BYTES} bytes load_tt reads"):
        save_tt(tmp_path / "x.tt.npz", cores(), {"text": "a" * MAX_META_BYTES})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("metadata", [{"format": "mine"}, {"format_version": 99},
                                      {"n_cores": 7}, {"ranks": [1, 9, 1]}])
def test_reserved_metadata_keys_are_refused_not_replaced(tmp_path, metadata):
    key = next(iter(metadata))
    with pytest.raises(TTFileError, match=f"metadata key '{key}' is set by the file format"):
        save_tt(tmp_path / "x.tt.npz", cores(), metadata)
    assert list(tmp_path.iterdir()) == []


def test_metadata_as_load_tt_returns_it_saves_again(tmp_path):
    first = save_tt(tmp_path / "a.tt.npz", cores(), {"shape": [3, 4], "source": "s"})
    tt, metadata = load_tt(first)
    second = save_tt(tmp_path / "b.tt.npz", tt, metadata)
    assert load_tt(second)[1] == metadata


@pytest.mark.parametrize("metadata, name", [({1: "a"}, "metadata keys"),
                                            ({"b": {2: 3}}, r"metadata\['b'\] keys"),
                                            ({"c": [{None: 1}]}, r"metadata\['c'\]\[0\] keys")])
def test_metadata_keys_json_would_turn_into_strings_are_refused(tmp_path, metadata, name):
    with pytest.raises(TypeError, match=f"{name} must be str"):
        save_tt(tmp_path / "x.tt.npz", cores(), metadata)
    assert list(tmp_path.iterdir()) == []


def test_circular_metadata_is_refused(tmp_path):
    metadata = {}
    metadata["self"] = metadata
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_tt(tmp_path / "x.tt.npz", cores(), metadata)


def test_a_missing_folder_is_named_not_the_temporary_file(tmp_path):
    target = tmp_path / "missing" / "x.tt.npz"
    with pytest.raises(FileNotFoundError, match=r"x\.tt\.npz.*its folder .*missing"):
        save_tt(target, cores())


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_directory_as_target_is_refused_by_name(tmp_path, overwrite):
    folder = tmp_path / "adir"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="adir' names a directory"):
        save_tt(folder, cores(), overwrite=overwrite)
    assert list(folder.iterdir()) == []


def test_a_path_ending_in_a_separator_names_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="slash/' names a directory"):
        save_tt(f"{tmp_path}/slash/", cores())
    assert list(tmp_path.iterdir()) == []


def test_an_empty_path_is_refused():
    with pytest.raises(ValueError, match="path must name a file, got ''"):
        save_tt("", cores())


def test_a_bytes_path_is_accepted_and_returned_as_str(tmp_path):
    path = save_tt(os.fsencode(tmp_path / "b.tt.npz"), cores())
    assert path == str(tmp_path / "b.tt.npz")
    assert load_tt(os.fsencode(path))[0].shape == (3, 4)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX non-root")
def test_an_unwritable_folder_is_named_not_the_temporary_file(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=r"cannot write '.*ro/x\.tt\.npz'"):
            save_tt(folder / "x.tt.npz", cores())
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("max_bytes, error", [(0, ValueError), (-1, ValueError),
                                              ("x", TypeError), (1.5, TypeError),
                                              (True, TypeError)])
def test_max_bytes_must_be_a_positive_int_or_none(tmp_path, max_bytes, error):
    path = save_tt(tmp_path / "x.tt.npz", cores())
    with pytest.raises(error, match="max_bytes"):
        load_tt(path, max_bytes=max_bytes)


@pytest.mark.parametrize("shape", [(1, 0, 1), (1, 3, 0)])
def test_a_zero_mode_size_or_rank_is_refused_on_save(tmp_path, shape):
    tt = [np.ones(shape)] if shape[2] == 1 else [np.ones(shape), np.ones((0, 3, 1))]
    with pytest.raises(TTFileError, match="every mode size and rank must be >= 1"):
        save_tt(tmp_path / "x.tt.npz", tt)


def forge(path, meta, core_shapes):
    arrays = {f"core_{k}": np.ones(shape) for k, shape in enumerate(core_shapes)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    return path


def test_a_zero_mode_size_or_rank_is_refused_on_load(tmp_path):
    meta = {"format": "tensorly-cross-tt", "format_version": 1, "n_cores": 2}
    path = forge(tmp_path / "z.tt.npz", meta, [(1, 3, 0), (0, 3, 1)])
    with pytest.raises(TTFileError, match=r"core 0 has shape \(1, 3, 0\)"):
        load_tt(path)


@pytest.mark.parametrize("shape", [[2**127 - 1], [2**61 - 1], [2**63], [5] * 10**5])
def test_a_forged_quantics_shape_is_refused_at_once(tmp_path, shape):
    # A 1 KB file once hung load_tt: factoring 2**127 - 1 by trial division.
    meta = {"format": "tensorly-cross-tt", "format_version": 1, "n_cores": 1,
            "shape": shape, "quantics": {"order": "grouped"}}
    path = forge(tmp_path / "forged.tt.npz", meta, [(1, 2, 1)])
    with pytest.raises(TTFileError, match="shape"):
        load_tt(path)
