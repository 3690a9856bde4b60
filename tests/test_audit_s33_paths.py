"""A path holding a NUL character is refused by name (session 33 audit).

The OS's "embedded null byte" named neither the argument nor the path: ``save_tt`` raised
it bare, ``load_tt`` wrapped it as a file that is not a TT file.
"""

import numpy as np
import pytest

import tensorly_cross as tlc


def _tt():
    return [np.ones((1, 3, 2)), np.ones((2, 3, 1))]


def test_save_tt_refuses_a_nul_character_by_name(tmp_path):
    path = str(tmp_path / "a\0b.tt.npz")
    with pytest.raises(ValueError, match=r"path .*holds a NUL character"):
        tlc.save_tt(path, _tt())
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_load_tt_refuses_a_nul_character_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"holds a NUL character"):
        tlc.load_tt(str(tmp_path / "a\0b.tt.npz"))


def test_a_path_without_nul_still_round_trips(tmp_path):
    path = tlc.save_tt(tmp_path / "ok.tt.npz", _tt())
    tt, _ = tlc.load_tt(path)
    assert [np.asarray(core).shape for core in tt] == [(1, 3, 2), (2, 3, 1)]
