"""Collection rules for the whole checkout (pytest's ``--doctest-modules`` walks the package).

``tensorly_cross.nn`` imports torch; without it (a core-only install, or CI's check of the
lowest supported versions) its doctests are left out instead of failing to import.
"""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["tensorly_cross/nn/*"]
