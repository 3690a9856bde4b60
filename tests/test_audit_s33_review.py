"""Audit s33 (review): the session's performance and checkpoint edits, at their edges: a
key table lookup that must find what the two-level search found, and checkpoint paths
that name a folder or come as bytes."""

import numpy as np

from tensorly_cross.lazy.cache import _KEY_SENTINEL, SortedKeys


def test_a_key_equal_to_the_sentinel_in_the_small_level_is_found():
    # The sentinel (int64's largest) closes each level; a hashed key may equal it. The
    # main level's search stops on the sentinel and read it as a hit of slot -1, and the
    # small level, searched for the main's misses only, was not searched for that key:
    # found before the lookup searched the small level for the misses alone, a miss after
    # it (evaluated again, stored twice).
    keys = SortedKeys()
    keys.insert(np.array([3, 7, 11], dtype=np.int64), np.array([0, 1, 2]))
    keys.insert(np.array([5, _KEY_SENTINEL], dtype=np.int64), np.array([3, 4]))
    assert len(keys.levels) == 2
    found = keys.lookup(np.array([_KEY_SENTINEL, 5, 7, 8], dtype=np.int64))
    np.testing.assert_array_equal(found, [4, 3, 1, -1])
