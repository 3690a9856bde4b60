"""Optional dependencies, imported where a format or a feature needs them.

The base install (``pip install .`` in a checkout) reads zarr and ``.npy``; NIfTI needs
nibabel (the ``[nifti]`` extra), HDF5 h5py and clusters distributed (the ``[dask]`` extra).
"""

import importlib


def require(module, purpose, extra):
    """``import module``, or an ImportError that says what needs it and how to get it.

    Parameters
    ----------
    module : str
        The module, named as its package is on PyPI (``"nibabel"``, ``"h5py"``).
    purpose : str
        What needs it, for the message (``"the NIfTI volume 'scan.nii.gz'"``).
    extra : str
        The extra of tensorly-cross that installs it.

    Returns
    -------
    module
        The imported module.

    Raises
    ------
    ImportError
        Where it cannot be imported (not installed, or broken): Python's own ``No module
        named 'nibabel'`` names neither the format that needs it nor the extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        # Its own text kept: a package installed but broken (built for another NumPy) says
        # why there, where "not installed" would mislead.
        # The extra as a checkout installs it: tensorly-cross is not on PyPI yet.
        raise ImportError(f"{purpose} needs {module}, which could not be imported ({error}): "
                          f"pip install {module} (or, in a checkout of tensorly-cross, "
                          f"pip install '.[{extra}]', the [{extra}] extra).") from error
