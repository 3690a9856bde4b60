"""A real-data regression task: grey-matter fraction of transformed crops of MNI152.

Each crop of nilearn's MNI152 template (1 mm, shipped with nilearn: nothing is downloaded)
is resampled on a ``size^3`` grid after a random rotation, scale and centre, then given a
random intensity change, a smooth multiplicative bias field and Gaussian noise. Its target
is the crop's grey-matter fraction: the mean of nilearn's grey-matter probability map (the
map its grey-matter mask is thresholded and dilated from) resampled with the same transform.
"""

import json
import math
import numbers
import os

import numpy as np

from .._atomic import write_atomically
from .dataset import VolumeDataset

MAX_ANGLE = np.pi / 6  # rotations up to 30 degrees about a random axis
SCALES = (0.8, 1.25)  # mm per voxel of the crop
GAINS, OFFSETS = (0.6, 1.5), (-0.15, 0.15)
BIAS, NOISE = 0.3, 0.04  # bias-field amplitude (log scale), noise std (template max: 1)


def mni152_crops(n_volumes, size, seed=0, directory=None):
    """Transformed crops of the MNI152 template and their grey-matter fractions.

    Parameters
    ----------
    n_volumes : int
        Number of crops.
    size : int
        Edge of each crop in voxels (a crop spans ``size`` times 0.8-1.25 mm).
    seed : int, default 0
        At least 0. Crops and targets are a function of ``(seed, size)``: the same seed
        at two sizes gives two different sets of crops.
    directory : str or os.PathLike, optional
        Write each crop to ``directory/crop_XXX.npy`` (float32; written atomically) and
        the targets to ``targets.json``, then return a dataset that reads them lazily.
        Crops already there for the same parameters are reused; a directory holding the
        crops of another seed or size is refused (one directory per seed and size).
        ``None``: in memory.

    Returns
    -------
    dataset : VolumeDataset
        ``(volume, target)`` pairs; the target is a float in ``[0, 1]``.

    Raises
    ------
    TypeError
        If ``n_volumes``, ``size`` or ``seed`` is not a number.
    ValueError
        If ``n_volumes`` or ``size`` is not a positive whole number, or ``seed`` a
        non-negative one, or ``directory`` holds the crops of another seed or size, or a
        ``targets.json`` that is not a JSON object (not a manifest of this function's).

    Examples
    --------
    >>> from tensorly_cross.nn import mni152_crops
    >>> # loading nilearn and its template takes seconds: the doctest skips the lines below
    >>> data = mni152_crops(2, size=8)  # doctest: +SKIP
    >>> volume, target = data[0]  # doctest: +SKIP
    >>> volume.shape, 0.0 <= float(target) <= 1.0  # doctest: +SKIP
    ((8, 8, 8), True)
    """
    n_volumes, size = _positive_int(n_volumes, "n_volumes"), _positive_int(size, "size")
    # Checked: int() read seed=1.5 and seed=True as 1 (seed 1's crops, without a word) and
    # NumPy refused a negative seed with a message that did not name it.
    seed = _positive_int(seed, "seed", minimum=0)
    parameters = dict(n_volumes=n_volumes, size=size, seed=seed, version=2)
    if directory is not None:
        cached = _load_manifest(directory, parameters)
        if cached is not None:
            return cached
        _refuse_other_crops(directory, parameters)
    template, grey = _mni152_arrays()
    rng = np.random.default_rng([seed, size])
    volumes, targets = [], []
    for number in range(n_volumes):
        crop, target = _crop(template, grey, size, rng)
        targets.append(target)
        if directory is None:
            volumes.append(crop)
        else:
            volumes.append(_save_atomically(directory, f"crop_{number:03d}.npy", crop))
    if directory is not None:
        _write_manifest(directory, parameters, volumes, targets)
    return VolumeDataset(volumes, np.asarray(targets, dtype=np.float32))


def _positive_int(value, name, minimum=1):
    """``value`` as an int >= ``minimum`` (a whole float such as 8.0 too); None, a str or a
    bool failed inside ``int()`` (a TypeError naming neither argument) or passed as 1."""
    kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {kind}, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be {kind}, got {value!r}.")
    return int(value)


def _mni152_arrays():
    try:
        from nilearn import datasets
    except ImportError as error:  # pragma: no cover - exercised only without nilearn
        raise ImportError("mni152_crops needs nilearn (pip install nilearn); it ships the "
                          "MNI152 template, nothing is downloaded.") from error
    template = datasets.load_mni152_template(resolution=1).get_fdata(dtype=np.float32)
    grey = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    return template / template.max(), grey


def _crop(template, grey, size, rng):
    """One transformed crop (float32) and its grey-matter fraction."""
    from scipy.ndimage import map_coordinates

    brain = np.argwhere(template[::4, ::4, ::4] > 0.3) * 4
    centre = brain[rng.integers(len(brain))] + rng.uniform(-2, 2, size=3)
    rotation = _random_rotation(rng) * rng.uniform(*SCALES)
    gain, offset = rng.uniform(*GAINS), rng.uniform(*OFFSETS)
    bias_coefficients = rng.normal(0.0, BIAS, size=(3, 3))  # 1, x, x^2 per axis
    axis = (np.arange(size) - (size - 1) / 2) / size
    crop = np.empty((size,) * 3, dtype=np.float32)
    covered = 0.0
    for i in range(size):  # one slice at a time: bounded memory at 256^3 and beyond
        local = np.stack(np.meshgrid([axis[i]], axis, axis, indexing="ij"), -1).reshape(-1, 3)
        points = (local * size) @ rotation.T + centre
        values = map_coordinates(template, points.T, order=1, cval=0.0)
        covered += float(map_coordinates(grey, points.T, order=1, cval=0.0).sum())
        bias = np.exp(sum(bias_coefficients[a, 1] * local[:, a]
                          + bias_coefficients[a, 2] * (local[:, a] ** 2 - 1 / 12)
                          for a in range(3)))
        noisy = gain * values * bias + offset + rng.normal(0.0, NOISE, size=values.shape)
        crop[i] = noisy.reshape(size, size).astype(np.float32)
    return crop, covered / size**3


def _random_rotation(rng):
    """A rotation about a uniformly random axis by an angle up to MAX_ANGLE (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-MAX_ANGLE, MAX_ANGLE)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _save_atomically(directory, name, array):
    # Through a unique, synced temporary file: a fixed ".tmp" name let two processes
    # filling the same cache folder write into each other's file.
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    write_atomically(path, lambda stream: np.save(stream, array, allow_pickle=False))
    return path


def _write_manifest(directory, parameters, paths, targets):
    manifest = dict(parameters, files=[os.path.basename(p) for p in paths],
                    targets=[float(t) for t in targets])
    text = json.dumps(manifest).encode()
    write_atomically(os.path.join(directory, "targets.json"), lambda stream: stream.write(text))


def _refuse_other_crops(directory, parameters):
    """Raise if ``directory`` holds the crops of another seed or size: writing these over
    them (the same file names) changed the volumes of a dataset made from them, which then
    read this call's crops under its own targets (a test set made into the training set's
    folder with another seed became the first training volumes, under their targets).
    Another ``n_volumes`` (the same crops, more or fewer of them) or an older version of
    the crops is rewritten."""
    path = os.path.join(directory, "targets.json")
    manifest = _read_manifest(directory)
    if manifest is None or manifest.get("version") != parameters["version"]:
        return  # none, or an older version of the crops: nothing to keep
    other = {key: manifest.get(key) for key in ("seed", "size")}
    if other != {key: parameters[key] for key in ("seed", "size")}:
        raise ValueError(f"directory {os.fspath(directory)!r} holds the crops of seed "
                         f"{other['seed']!r} and size {other['size']!r} ({path}); writing "
                         f"those of seed {parameters['seed']} and size {parameters['size']} "
                         "over them would change the volumes of every dataset made from "
                         "them: give each seed and size a directory of its own.")


def _read_manifest(directory):
    """The manifest in ``directory`` (a dict), or None where there is none (or the
    directory cannot be read: creating it says why).

    A ``targets.json`` that is not a JSON object cannot be this function's manifest (it is
    written atomically, never torn): it is refused, not written over. It crashed with a
    bare ``AttributeError`` or ``JSONDecodeError`` that named neither the file nor what to
    do."""
    path = os.path.join(directory, "targets.json")
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return None
    try:
        manifest = json.loads(text)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict):
        raise ValueError(f"directory {os.fspath(directory)!r} holds {path}, which is not a "
                         "manifest of mni152_crops (a JSON object): give the crops a "
                         "directory of their own, or remove that file.")
    return manifest


def _load_manifest(directory, parameters):
    manifest = _read_manifest(directory)
    if manifest is None:
        return None
    if any(manifest.get(key) != value for key, value in parameters.items()):
        return None
    files = [os.path.join(directory, name) for name in manifest["files"]]
    if not all(os.path.exists(file) for file in files):
        return None
    return VolumeDataset(files, np.asarray(manifest["targets"], dtype=np.float32))
