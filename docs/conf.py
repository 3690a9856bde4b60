"""Sphinx configuration (numpydoc + autosummary + sphinx-gallery, as TensorLy does)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "tensorly-cross"
author = "tensorly-cross developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "numpydoc",
              "sphinx_gallery.gen_gallery"]
autosummary_generate = True
templates_path = ["_templates"]  # class pages list their own public methods
numpydoc_show_class_members = False
# numpydoc checks every documented name and method; with -W (CI) a finding fails the build.
# GL08 no docstring, PR01/PR02 parameters missing from or unknown to the docstring, PR07
# a parameter without description, RT01/RT03 no Returns section or no description there,
# SS01/SS06 no summary or one longer than a line, GL02 closing quotes on the text's line.
numpydoc_validation_checks = {"GL02", "GL08", "PR01", "PR02", "PR07", "RT01", "RT03", "SS01",
                              "SS06"}
html_theme = "alabaster"
exclude_patterns = ["_build", "generated/*.examples"]
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "download_all_examples": False,
}

# Base classes that autodoc's :show-inheritance: names, documented by PyTorch (no
# intersphinx here: the build reads nothing from the network).
nitpick_ignore = [("py:class", "torch.nn.modules.module.Module"),
                  ("py:class", "torch.utils.data.dataset.Dataset")]
