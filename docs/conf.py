"""Sphinx configuration (numpydoc + autosummary + sphinx-gallery, as TensorLy does)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "tensorly-cross"
author = "tensorly-cross developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "numpydoc",
              "sphinx_gallery.gen_gallery"]
autosummary_generate = True
numpydoc_show_class_members = False
numpydoc_validation_checks = set()
html_theme = "alabaster"
exclude_patterns = ["_build", "generated/*.examples"]
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "download_all_examples": False,
}
