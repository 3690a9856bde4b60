"""Procedural volumes: the embedded default data (nothing is downloaded)."""

import numbers

import numpy as np

from ._validation import check_int


def blob_phantom(shape=(256, 256, 256), n_blobs=12, seed=0):
    """A smooth 3D phantom: a sum of anisotropic Gaussian blobs, as a function of indices.

    Parameters
    ----------
    shape : tuple of 3 ints, default (256, 256, 256)
        The volume's shape (every size >= 1).
    n_blobs : int >= 0, default 12
        How many blobs.
    seed : int >= 0, default 0
        Seed of their centres, widths and weights.

    Returns
    -------
    function : callable
        ``function(indices) -> values`` for (m, 3) int multi-indices (float32 values).

    Raises
    ------
    TypeError, ValueError
        If ``shape`` is not 3 ints >= 1, or ``n_blobs`` or ``seed`` is not an int >= 0.
    """
    shape = _three_sizes(shape, "shape")
    # Named here: NumPy's refusals ("negative dimensions are not allowed", "SeedSequence
    # expects int ...") named neither argument.
    n_blobs = check_int(n_blobs, "n_blobs", minimum=0)
    seed = check_int(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.2, 0.8, size=(n_blobs, 3))
    widths = rng.uniform(0.05, 0.2, size=(n_blobs, 3))
    weights = rng.uniform(0.3, 1.0, size=n_blobs)
    scale = np.asarray(shape, dtype=float) - 1.0

    def function(indices):
        points = np.asarray(indices, dtype=float) / np.maximum(scale, 1.0)
        values = np.zeros(points.shape[0])
        for centre, width, weight in zip(centres, widths, weights, strict=True):
            values += weight * np.exp(-0.5 * np.sum(((points - centre) / width) ** 2, axis=1))
        return values.astype(np.float32)

    return function


def write_volume(path, function, shape, chunks=(64, 64, 64)):
    """Write ``function`` sampled on ``shape`` to a zarr array, slab by slab, atomically.

    The array is written under a unique temporary name in the same folder, every chunk
    stored (none left out as fill value), then renamed to ``path``. Several writers of one
    path (two ``tensorly-cross demo`` at once) never share a temporary folder; the first to
    finish publishes, the others discard theirs and keep its volume, if it holds the same
    values.

    Parameters
    ----------
    path : str
        The zarr folder to create.
    function : callable
        ``function(indices) -> values`` for (m, 3) int multi-indices.
    shape, chunks : tuple of 3 ints
        The volume's shape and its chunks' (every size >= 1).

    Returns
    -------
    path : str

    Raises
    ------
    TypeError, ValueError
        If ``shape`` or ``chunks`` is not 3 ints >= 1.
    FileExistsError
        If ``path`` already holds something else than this volume (another shape, other
        values, or no zarr array); a file there is refused before anything is written.
    """
    import os
    import shutil
    import tempfile

    import zarr

    shape, chunks = _three_sizes(shape, "shape"), _three_sizes(chunks, "chunks")
    # Before any work: a file there raised NotADirectoryError, naming the temporary
    # folder, once the whole volume was written.
    _refuse_a_file_at(path)
    folder = os.path.dirname(os.path.abspath(path))
    temporary = tempfile.mkdtemp(dir=folder, prefix=f".{os.path.basename(path)}-",
                                 suffix=".tmp")
    try:
        array = zarr.create_array(temporary, shape=shape, chunks=chunks, dtype="f4",
                                  overwrite=True, config={"write_empty_chunks": True})
        j, k = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
        for start in range(0, shape[0], chunks[0]):
            stop = min(start + chunks[0], shape[0])
            slab = np.empty((stop - start, shape[1], shape[2]), dtype=np.float32)
            for i in range(start, stop):
                points = np.stack([np.full(j.size, i), j.ravel(), k.ravel()], axis=1)
                slab[i - start] = _one_per_row(function(points), points).reshape(j.shape)
            array[start:stop] = slab
        _publish_folder(temporary, path, tuple(shape))
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return path


def _publish_folder(temporary, path, shape):
    """Rename a complete folder to ``path``, unless another writer's is there already.

    Raises
    ------
    FileExistsError
        If the volume already at ``path`` has another shape: it is not another writer's
        copy of this one, and returning its path handed the caller the wrong data.
    """
    import os

    try:
        os.rename(temporary, path)  # atomic; fails onto an existing, non-empty folder
    except OSError:
        _refuse_a_file_at(path)  # one created since the start
        if not os.path.isdir(path):
            raise
        existing = _stored_shape(path)
        if existing != shape:
            held = "no zarr array" if existing is None else f"a volume of shape {existing}"
            raise FileExistsError(f"{path!r} already holds {held}, not one of shape {shape}; "
                                  "remove it or write to another path.") from None
        if not _same_values(temporary, path):
            # Another writer's copy of this volume holds these values; a volume of another
            # function (or seed) does not, and returning its path handed over its data.
            raise FileExistsError(f"{path!r} already holds a volume of shape {shape} with other "
                                  "values than this function's; remove it or write to "
                                  "another path.") from None


def _one_per_row(values, points):
    """``values`` as a vector, one per row of ``points``; a ValueError naming
    the function otherwise (NumPy's "cannot reshape array of size 3" named nothing)."""
    values = np.asarray(values)
    if values.size != points.shape[0]:
        raise ValueError(f"function returned {values.size} values for {points.shape[0]} "
                         "multi-indices; it must return one value per row of its (m, 3) "
                         "argument.")
    return values.reshape(-1)


def _refuse_a_file_at(path):
    """Raise FileExistsError if ``path`` exists and is not a folder (a file, a FIFO, a link
    to either): no zarr volume, and not one to replace."""
    import os

    if os.path.lexists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{os.fspath(path)!r} already holds a file, not a zarr volume; "
                              "remove it or write to another path.")


def _same_values(first, second):
    """Whether two zarr arrays of one shape hold the same values (compared slab by slab:
    memory stays bounded as when they were written)."""
    import zarr

    first, second = zarr.open_array(first, mode="r"), zarr.open_array(second, mode="r")
    step = max(1, first.chunks[0])
    return all(np.array_equal(first[start:start + step], second[start:start + step],
                              equal_nan=True)
               for start in range(0, first.shape[0], step))


def _three_sizes(sizes, name):
    """``sizes`` as a tuple of 3 Python ints >= 1; raise naming ``name`` otherwise (a 2-D
    or 4-D shape failed deep in zarr or NumPy)."""
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise TypeError(f"{name} must be 3 ints >= 1, got {sizes!r}.") from None
    if not all(isinstance(size, numbers.Integral) and not isinstance(size, bool)
               for size in sizes):
        raise TypeError(f"{name} must be 3 ints >= 1, got {sizes!r}.")
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(f"{name} must be 3 ints >= 1 (a 3-D volume), got {sizes!r}.")
    return tuple(int(size) for size in sizes)


def _stored_shape(path):
    """The shape of the zarr array at ``path``; None where none can be read."""
    import zarr

    try:
        return tuple(zarr.open_array(path, mode="r").shape)
    except Exception:  # noqa: BLE001 - not a zarr array: no shape to compare
        return None
