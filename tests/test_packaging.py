"""Packaging: stated floors are the tested ones, extras do not repeat requirements, the
license ships, and a missing torch is met with install instructions."""

import importlib
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name_and_floor(requirement):
    match = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*(?:>=\s*([0-9][^,;\s]*))?", requirement)
    return match.group(1).lower(), match.group(2)


def _pins():
    pins = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def _floors(requirements):
    return dict(_name_and_floor(r) for r in requirements if not r.startswith("tensorly-cross"))


def test_every_tested_floor_is_the_one_pyproject_states():
    extras = PROJECT["optional-dependencies"]
    stated = _floors(PROJECT["dependencies"])
    for extra in ("dask", "nifti", "test"):
        stated.update(_floors(extras[extra]))
    pins = _pins()
    assert set(pins) == set(stated)
    for name, floor in stated.items():
        # "1.26" is tested as 1.26.0: the pin must be the floor, padded with zeros.
        assert pins[name].split(".")[: len(floor.split("."))] == floor.split("."), name
        assert all(part == "0" for part in pins[name].split(".")[len(floor.split(".")):]), name


def test_no_extra_repeats_a_required_dependency():
    required = set(_floors(PROJECT["dependencies"]))
    for extra, requirements in PROJECT["optional-dependencies"].items():
        assert not required & set(_floors(requirements)), extra


def test_all_installs_every_feature_extra():
    extras = PROJECT["optional-dependencies"]
    (everything,) = extras["all"]
    named = set(re.search(r"\[(.*)\]", everything).group(1).split(","))
    assert {"torch", "jax", "dask", "nifti", "dev"} <= named


def test_the_license_file_is_shipped():
    assert PROJECT["license"] == "BSD-3-Clause"
    assert "BSD 3-Clause License" in (ROOT / PROJECT["license-files"][0]).read_text()


def test_nn_without_torch_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # what an interpreter without torch sees
    for name in [name for name in sys.modules if name.startswith("tensorly_cross.nn")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError) as error:
        importlib.import_module("tensorly_cross.nn")
    message = str(error.value)
    assert "--index-url https://download.pytorch.org/whl/cpu" in message
    assert "not on PyPI" in message and "pip install '.[torch]'" in message
