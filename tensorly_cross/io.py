"""Opening volumes by path: zarr, HDF5, npy (memory-mapped) and NIfTI, as lazy tensors."""

import os

import numpy as np

from .lazy.dask import DaskTensor
from .lazy.npy import NpyTensor
from .lazy.sources import SliceableSource

VOLUME_SUFFIXES = (".zarr", ".h5", ".hdf5", ".npy", ".nii", ".nii.gz")


def open_volume(path, dataset=None, cache_bytes=None, client=None):
    """A lazy tensor reading a volume on disk, without loading it.

    Parameters
    ----------
    path : str or os.PathLike
        ``.zarr`` (v2 or v3 array), ``.h5``/``.hdf5`` (with ``dataset``, or
        ``"file.h5:/group/name"``, or a file holding exactly one dataset), ``.npy``
        (read page by page), ``.nii``/``.nii.gz`` (nibabel's lazy proxy, scaling applied).
    dataset : str, optional
        The HDF5 dataset path.
    cache_bytes : int or None
        Chunk cache of the :class:`DaskTensor` (zarr, HDF5, NIfTI; default 256 MiB) or page
        cache of the :class:`NpyTensor` (.npy; default 64 MiB). Bound it to bound memory:
        it is the only buffer that grows with the volume.
    client : dask.distributed.Client, optional
        Read chunks on this cluster's workers (zarr, HDF5).

    Returns
    -------
    LazyTensor

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    KeyError
        If the HDF5 dataset is missing (the message lists the datasets there are).
    ValueError
        For an unknown suffix; TypeError for an unsupported dtype.
    """
    path = os.fspath(path)
    if dataset is None and (".h5:" in path or ".hdf5:" in path):
        path, dataset = path.rsplit(":", 1)
    if not os.path.exists(path):
        raise FileNotFoundError(f"path {path!r} does not exist.")
    lower = path.lower().rstrip("/")
    if lower.endswith(".zarr"):
        return _open_zarr(path, cache_bytes, client)
    if lower.endswith((".h5", ".hdf5")):
        return _open_hdf5(path, dataset, cache_bytes, client)
    if lower.endswith(".npy"):
        return _open_npy(path, cache_bytes)
    if lower.endswith((".nii", ".nii.gz")):
        return _open_nifti(path, cache_bytes)
    raise ValueError(f"path {path!r} has an unsupported suffix; supported: "
                     f"{', '.join(VOLUME_SUFFIXES)}.")


def _open_zarr(path, cache_bytes, client):
    import zarr

    array = zarr.open(path, mode="r")
    if not hasattr(array, "shape"):
        names = list(array.array_keys())
        raise ValueError(f"{path!r} is a zarr group, not an array; its arrays: {names}. "
                         f"Open one of them, e.g. '{path}/{names[0] if names else '...'}'.")
    return DaskTensor(array, client=client, **_cache(cache_bytes))


def _open_hdf5(path, dataset, cache_bytes, client):
    import h5py

    handle = h5py.File(path, "r")
    names = []
    handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset)
                      else None)
    if dataset is None:
        if len(names) != 1:
            handle.close()
            raise KeyError(f"{path!r} holds {len(names)} datasets {names}; pass dataset=... "
                           "or 'file.h5:/name'.")
        dataset = names[0]
    if dataset.strip("/") not in names:
        handle.close()
        raise KeyError(f"dataset {dataset!r} not found in {path!r}; datasets: {names}.")
    return DaskTensor(handle[dataset], client=client, **_cache(cache_bytes))


def _open_npy(path, cache_bytes):
    return NpyTensor(path, **_cache(cache_bytes))


def _cache(cache_bytes):
    """The reader's own default unless a size is given."""
    return {} if cache_bytes is None else {"cache_bytes": int(cache_bytes)}


def _open_nifti(path, cache_bytes):
    import nibabel

    image = nibabel.load(path)
    proxy = image.dataobj
    dtype = np.result_type(image.get_data_dtype(), np.float64 if _is_scaled(proxy) else
                           image.get_data_dtype())
    source = SliceableSource(proxy, chunks=None, name=f"NIfTI {path!r}", dtype=dtype)
    return DaskTensor(source, **_cache(cache_bytes))


def _is_scaled(proxy):
    slope = getattr(proxy, "slope", 1.0)
    inter = getattr(proxy, "inter", 0.0)
    return (slope not in (None, 1.0)) or (inter not in (None, 0.0))
