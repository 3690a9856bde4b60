"""Every public name and method passes numpydoc's checks (the set docs/conf.py enables for
the documentation build) and every public name shows an example (doctested by pytest)."""

import importlib
import inspect
import re
import runpy
from pathlib import Path

import pytest

import tensorly_cross

validate = pytest.importorskip("numpydoc.validate")  # the [docs] extra

CONF = runpy.run_path(str(Path(__file__).resolve().parent.parent / "docs" / "conf.py"))
CHECKS = CONF["numpydoc_validation_checks"]
EXCLUDE = [re.compile(pattern) for pattern in CONF.get("numpydoc_validation_exclude", ())]


def _public_modules():
    try:
        return [tensorly_cross, importlib.import_module("tensorly_cross.nn")]
    except ImportError:  # no torch
        return [tensorly_cross]


def _public_names():
    return [f"{module.__name__}.{name}" for module in _public_modules()
            for name in module.__all__ if not name.startswith("__")]


def _own_public_members(path):
    """``path`` and, for a class, the public methods and properties it defines itself."""
    module, _, name = path.rpartition(".")
    obj = getattr(__import__(module, fromlist=[name]), name)
    members = [path]
    if inspect.isclass(obj):
        members += [f"{path}.{member}" for member, value in vars(obj).items()
                    if not member.startswith("_")
                    and (callable(value) or isinstance(value, property | classmethod))]
    return members


def _checked(path):
    return not any(pattern.search(path) for pattern in EXCLUDE)


@pytest.mark.parametrize("path", [member for name in _public_names()
                                  for member in _own_public_members(name) if _checked(member)])
def test_docstring_passes_numpydoc_checks(path):
    errors = [f"{code}: {message}" for code, message in validate.validate(path)["errors"]
              if code in CHECKS]
    assert not errors, f"{path}: " + "; ".join(errors)


@pytest.mark.parametrize("path", [name for name in _public_names() if _checked(name)])
def test_public_name_has_an_example(path):
    module, _, name = path.rpartition(".")
    doc = inspect.getdoc(getattr(__import__(module, fromlist=[name]), name)) or ""
    assert "Examples\n--------\n>>> " in doc, path
