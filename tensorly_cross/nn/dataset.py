"""VolumeDataset: volumes on disk (or in memory) with their targets, read lazily."""

import numbers
import operator
import os

import numpy as np
import torch

from .._backend import to_host
from .._validation import check_bool, check_float, check_int
from ..io import VOLUME_SUFFIXES, open_volume, volume_file
from ..lazy.base import LazyTensor
from ..lazy.filled import fill_nan
from ..lazy.npy import NpyTensor


class VolumeDataset(torch.utils.data.Dataset):
    """Volumes and regression/classification targets, for :class:`CrossEmbedding` training.

    Item ``i`` is ``(volume, target)``. A volume given by path (``.nii``/``.nii.gz``,
    ``.zarr``, ``.npy``, ``.h5``/``.hdf5``, or ``"file.h5:/dataset"``) is opened with
    :func:`tensorly_cross.open_volume` when the item is read: a lazy tensor, of which a
    cross reads only the patches it needs. Arrays and tensors are returned as they are
    (but for a channel axis, below). Items pickle (a lazy volume's cache travels empty), so a
    ``DataLoader`` with worker processes can hand them out; lazy volumes are not tensors,
    so give it a ``collate_fn`` that keeps them in a list (or use :meth:`batches`).

    A volume is its stored voxel array: a NIfTI's affine (orientation, voxel size) is not
    applied, so a volume stored flipped or at another resolution is read as it is stored.
    Reorient and resample the volumes to one grid first (e.g. with nibabel's
    ``as_closest_canonical`` and nilearn's ``resample_to_img``).

    Parameters
    ----------
    volumes : sequence of path, ndarray or torch.Tensor
        3-D volumes (a 4-D volume's first or last axis of size 1, a channel, is dropped
        when read). A list even for one volume: a single path is refused, not split
        into characters.
    targets : array-like, shape (n,) or (n, t)
        One finite real target (or row of ``t`` targets) per volume, stored as float32 (a
        copy: a torch tensor is detached, as targets take no gradient).
    cache_bytes : int or None
        Chunk or page cache of each opened volume (see :func:`~tensorly_cross.open_volume`).
    in_memory : bool, default False
        Read each path's whole volume into a float32 tensor on first access and keep it:
        for volumes that fit, and for the dense baseline, which reads every voxel anyway.
    fill_nan : float or None
        Read the NaN voxels of each path's volume as this value (see
        :func:`~tensorly_cross.open_volume`): statistical maps and masked scans hold NaN
        outside the brain, which every read refuses by default, naming the voxel.
        Arrays and tensors are taken as they are.

    Raises
    ------
    TypeError
        If ``volumes`` is a single path (wrap it in a list), an item is neither a path,
        an array, a tensor nor a lazy tensor, ``targets`` holds values that are not
        real numbers (strings such as class labels, complex numbers, dates, None),
        ``in_memory`` is not a bool or ``cache_bytes`` not an int (or None).
    ValueError
        If ``volumes`` and ``targets`` differ in length, a target is not finite, a path
        has an unsupported suffix, or ``cache_bytes`` is negative.
    FileNotFoundError
        If a path does not exist.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross.nn import VolumeDataset
    >>> volumes = [np.full((4, 4, 4), k, dtype=np.float32) for k in range(4)]
    >>> data = VolumeDataset(volumes, [0.0, 0.1, 0.2, 0.3])
    >>> volume, target = data[2]
    >>> volume.shape, round(float(target), 6)
    ((4, 4, 4), 0.2)
    >>> train, test = data.split(0.75, seed=0)
    >>> len(train), len(test)
    (3, 1)

    Files are opened lazily when read (``open_volume``):

    >>> data = VolumeDataset(["a.nii.gz", "b.nii.gz"], [0.3, 0.5])  # doctest: +SKIP
    """

    def __init__(self, volumes, targets, cache_bytes=None, in_memory=False, fill_nan=None):
        if isinstance(volumes, (str, bytes, os.PathLike)):
            # list() would split a str into characters, each taken for a path
            raise TypeError(f"volumes must be a sequence of volumes (paths, arrays or "
                            f"tensors), got the single path {os.fsdecode(volumes)!r}: "
                            "for one volume, pass a list, [path].")
        self.volumes = _volume_list(volumes)
        self.targets = _float32_targets(targets, len(self.volumes))
        # A bytes path, as open_volume takes it, is decoded once here.
        self.volumes = [os.fsdecode(item) if isinstance(item, bytes) else item
                        for item in self.volumes]
        for k, item in enumerate(self.volumes):
            if isinstance(item, (str, os.PathLike)):
                _check_path(item)
            elif not isinstance(item, np.ndarray | torch.Tensor | LazyTensor):
                raise TypeError(f"volumes[{k}] must be a path, a NumPy array, a torch.Tensor "
                                f"or a lazy tensor, got {type(item).__name__}.")
        # Checked now: bool("no") read every volume whole, and a bad cache_bytes failed only
        # when a path was first read (and was never seen for arrays).
        self.in_memory = check_bool(in_memory, "in_memory")
        self.cache_bytes = (None if cache_bytes is None
                            else check_int(cache_bytes, "cache_bytes", minimum=0))
        self.fill_nan = None if fill_nan is None else check_float(fill_nan, "fill_nan")
        # Volumes read whole (in_memory), by path; one store for this dataset and all its
        # subsets, so that k-fold subsets made at once read (and hold) each file once.
        self._loaded = {}

    def __getstate__(self):
        """What pickling and ``copy.deepcopy`` take: all but the volumes of the shared
        store that are not this dataset's (a ``DataLoader`` worker started by spawn or
        forkserver got a test fold of one volume with every volume the other folds had read).

        Returns
        -------
        state : dict
            The dataset's attributes, its store holding its own items' volumes only.
        """
        state = dict(self.__dict__)
        own = {os.fspath(item) for item in self.volumes if isinstance(item, str | os.PathLike)}
        # A snapshot of the shared store: another thread may add a volume meanwhile.
        state["_loaded"] = {path: volume for path, volume in list(self._loaded.items())
                            if path in own}
        return state

    def __len__(self):
        return len(self.volumes)

    def __getitem__(self, index):
        """Item ``index``: ``(volume, target)``.

        Parameters
        ----------
        index : int
            Position of the item (negative counts from the end, as for a list).

        Returns
        -------
        volume : LazyTensor, ndarray or torch.Tensor
            As :meth:`volume` returns it.
        target : torch.Tensor
            Its target, 0-d (or ``(t,)``).

        Raises
        ------
        TypeError
            If ``index`` is not an int (a slice: use :meth:`subset`).
        IndexError
            If ``index`` is out of range.
        """
        try:  # an int, a NumPy int, or a one-element integer tensor a sampler gave
            if isinstance(index, bool):
                raise TypeError
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int, got {type(index).__name__} {index!r} "
                            "(several items: VolumeDataset.subset(indices)).") from None
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} items.")
        return self.volume(index), self.targets[index]

    def volume(self, index):
        """Volume ``index``: a lazy tensor for a path, else the array or tensor itself.

        Parameters
        ----------
        index : int
            Position of the volume in this dataset (negative counts from the end).

        Returns
        -------
        volume : LazyTensor, ndarray or torch.Tensor
            3-D (a channel axis of size 1 dropped). A path gives a lazy tensor, or with
            ``in_memory=True`` a float32 tensor read whole on first access and kept.

        Raises
        ------
        IndexError
            If ``index`` is out of range.
        ValueError
            If the volume is neither 3-D nor 4-D with an axis of size 1 first or last.
        """
        # A negative index is its position, as an error names the item.
        index = self._position(operator.index(index))
        item = self.volumes[index]
        try:
            return self._volume(index, item)
        except ValueError as error:  # name the item among the many a dataset holds
            where = f" ({os.fspath(item)!r})" if isinstance(item, (str, os.PathLike)) else ""
            raise ValueError(f"VolumeDataset item {index}{where}: {error}") from error

    def _volume(self, index, item):
        if not isinstance(item, (str, os.PathLike)):
            return _drop_channel(item)
        path = os.fspath(item)
        if self.in_memory and path in self._loaded:
            return self._loaded[path]
        lazy = open_volume(item, cache_bytes=self.cache_bytes, fill_nan=self.fill_nan)
        if not self.in_memory:
            volume = _drop_channel(lazy)
            volume.source_path = path  # one file, one volume, pass after pass
            return volume
        self._loaded[path] = _drop_channel(_read_whole(lazy))
        return self._loaded[path]

    def subset(self, indices):
        """A dataset of the items at ``indices`` (same options).

        Parameters
        ----------
        indices : array-like of int, array-like of bool, or slice
            Positions of the items in this dataset, in the order wanted; or a boolean mask
            with one entry per item (``data.subset(data.targets > 0.5)``); or a slice.

        Returns
        -------
        subset : VolumeDataset
            With the same ``cache_bytes`` and ``in_memory``; volumes read whole (by this
            dataset or any of its subsets, before or after) are shared, not read again.

        Raises
        ------
        IndexError
            If an index is out of range (negative ones count from the end, as for
            ``__getitem__``), or a mask does not have one entry per item.
        TypeError
            If ``indices`` holds values that are neither ints nor bools (a float such as
            ``1.7`` is refused, not truncated).
        """
        indices = self._selected(indices)
        subset = VolumeDataset([self.volumes[i] for i in indices],
                               self.targets[indices].numpy(), self.cache_bytes, self.in_memory,
                               self.fill_nan)
        # The same store: a volume read whole by either is read once for both (folds makes
        # its subsets before any is read).
        subset._loaded = self._loaded
        return subset

    def _selected(self, indices):
        """The positions ``indices`` selects (see :meth:`subset`)."""
        if isinstance(indices, slice):
            return list(range(len(self))[indices])
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        chosen = np.asarray(indices).reshape(-1)
        if chosen.dtype == bool:
            # NumPy's meaning of a mask: int() read its entries as the positions 0 and 1.
            if chosen.shape[0] != len(self):
                raise IndexError(f"a boolean mask must have one entry per item ({len(self)} "
                                 f"items), got {chosen.shape[0]}.")
            return [int(i) for i in np.flatnonzero(chosen)]
        if chosen.dtype.kind not in "iu":  # an object array of ints is ints too
            example = next((i for i in chosen if not _is_int(i)), None)
            if example is not None:
                example = example.item() if isinstance(example, np.generic) else example
                raise TypeError(f"indices must be ints (or a boolean mask, or a slice), got "
                                f"{chosen.dtype} values such as {example!r}.")
        return [self._position(int(i)) for i in chosen]

    def _position(self, index):
        """``index`` as a position in ``[0, len)``; an IndexError naming both otherwise."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} "
                             f"items (allowed: {-len(self)} to {len(self) - 1}).")
        # non-negative, as the messages name the item
        return index % len(self)

    def split(self, train_fraction, seed=0, groups=None):
        """A random split into a training and a test dataset.

        Parameters
        ----------
        train_fraction : float
            In ``(0, 1)``: ``round(train_fraction * n)`` items go to training (with
            ``groups``, as near to it as whole groups allow).
        seed : int, default 0
            Seed of the permutation (``numpy.random.default_rng``).
        groups : array-like of shape (n,), optional
            A label per item (a subject's id): the items of one label go to the same side,
            so that two scans of one subject are never one in training and one in test.

        Returns
        -------
        train, test : VolumeDataset
            Disjoint subsets covering every item.

        Raises
        ------
        TypeError
            If ``train_fraction`` is not a real number or ``seed`` not an int.
        ValueError
            If ``train_fraction`` is not in ``(0, 1)``, or leaves one side empty, or
            ``seed`` is negative, or ``groups`` does not hold one label per item.
        """
        train_fraction = check_float(train_fraction, "train_fraction")
        seed = check_int(seed, "seed", minimum=0)
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}.")
        rng = np.random.default_rng(seed)
        if groups is not None:
            return self._grouped_split(train_fraction, rng, _group_members(groups, len(self)))
        order = rng.permutation(len(self))
        cut = int(round(train_fraction * len(self)))
        if not 0 < cut < len(self):
            raise ValueError(f"train_fraction={train_fraction} of {len(self)} items gives "
                             f"{cut} training and {len(self) - cut} test items: both need at "
                             "least one.")
        return self.subset(order[:cut]), self.subset(order[cut:])

    def _grouped_split(self, train_fraction, rng, members):
        """:meth:`split` by whole groups (``members``: each group's item positions), in a
        random order: cut where the training items come nearest ``train_fraction``."""
        if len(members) < 2:
            raise ValueError("groups holds a single label: a split by groups needs at least "
                             "two, one for each side.")
        shuffled = [members[k] for k in rng.permutation(len(members))]
        counts = np.cumsum([part.size for part in shuffled])[:-1]  # both sides non-empty
        cut = int(np.argmin(np.abs(counts - train_fraction * len(self)))) + 1
        return (self.subset(np.concatenate(shuffled[:cut])),
                self.subset(np.concatenate(shuffled[cut:])))

    def folds(self, n_folds, seed=0, groups=None):
        """The ``(train, test)`` pairs of a shuffled k-fold split.

        Parameters
        ----------
        n_folds : int
            Number of folds, in ``[2, len(self)]`` (with ``groups``, at most the number of
            labels).
        seed : int, default 0
            Seed of the permutation (``numpy.random.default_rng``).
        groups : array-like of shape (n,), optional
            A label per item (a subject's id): the items of one label are in the same test
            set, so that no fold trains on one scan of a subject and tests on another.
            Groups go, largest first (ties in random order), to the fold with the fewest
            items so far.

        Returns
        -------
        folds : list of (VolumeDataset, VolumeDataset)
            ``n_folds`` pairs; each item is in exactly one test set, and the test sets'
            sizes differ by at most one (with ``groups``, by at most the largest group).

        Raises
        ------
        ValueError
            If ``n_folds`` is not an int in ``[2, len(self)]`` (or above the number of
            labels in ``groups``), ``seed`` is negative, or ``groups`` does not hold one
            label per item.
        TypeError
            If ``seed`` is not an int.
        """
        seed = check_int(seed, "seed", minimum=0)
        # None, strings and nan raised bare TypeErrors and ValueErrors from int().
        integral = (isinstance(n_folds, numbers.Integral) and not isinstance(n_folds, bool)
                    or isinstance(n_folds, float) and n_folds.is_integer())
        if not integral or not 2 <= n_folds <= len(self):
            raise ValueError(f"n_folds must be an int in [2, {len(self)}], got {n_folds!r}.")
        rng = np.random.default_rng(seed)
        if groups is None:
            parts = np.array_split(rng.permutation(len(self)), int(n_folds))
        else:
            parts = _grouped_parts(_group_members(groups, len(self)), int(n_folds), rng)
        return [(self.subset(np.concatenate(parts[:k] + parts[k + 1:])), self.subset(part))
                for k, part in enumerate(parts)]

    def batches(self, batch_size, shuffle=False, seed=None):
        """Batches of volumes and targets, for a training loop.

        Parameters
        ----------
        batch_size : int
            Items per batch (the last batch may hold fewer).
        shuffle : bool, default False
            Visit the items in a random order instead of in order.
        seed : int, optional
            Seed of that order; ``None``: a fresh one each call.

        Yields
        ------
        indices : list of int
            Positions of the batch's items in this dataset: they serve as
            :class:`CrossEmbedding` keys.
        volumes : list
            The volumes, as :meth:`volume` returns them.
        targets : torch.Tensor of shape (b,) or (b, t)
            Their targets.

        Raises
        ------
        TypeError
            If ``batch_size``, or a ``seed`` other than None, is not an int, or
            ``shuffle`` is not a bool.
        ValueError
            If ``batch_size`` is below 1, or ``seed`` negative.
        """
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        shuffle = check_bool(shuffle, "shuffle")  # "no" is truthy: it shuffled
        if seed is not None:
            seed = check_int(seed, "seed", minimum=0)
        order = (np.random.default_rng(seed).permutation(len(self)) if shuffle
                 else np.arange(len(self)))
        for start in range(0, len(self), batch_size):
            chosen = [int(i) for i in order[start : start + batch_size]]
            yield chosen, [self.volume(i) for i in chosen], self.targets[chosen]


def _group_members(groups, n_items):
    """Each label's item positions (a list of int64 arrays, in the labels' sorted order)."""
    labels = to_host(groups) if isinstance(groups, torch.Tensor) else np.asarray(groups)
    if labels.ndim != 1 or labels.shape[0] != n_items:
        raise ValueError(f"groups must hold one label per item ({n_items}), got shape "
                         f"{labels.shape}.")
    try:
        _, inverse = np.unique(labels, return_inverse=True)
    except TypeError as error:  # labels NumPy cannot order, such as None beside strings
        raise TypeError(f"groups must hold labels of one kind (ints or strings), got "
                        f"{labels.dtype} values such as {labels[0]!r}.") from error
    inverse = inverse.reshape(-1)
    return [np.flatnonzero(inverse == k) for k in range(int(inverse.max()) + 1)]


def _grouped_parts(members, n_folds, rng):
    """``n_folds`` test sets of whole groups: largest group first (ties in random order),
    each to the test set with the fewest items so far."""
    if n_folds > len(members):
        raise ValueError(f"n_folds={n_folds} is more than the {len(members)} labels in "
                         "groups: each fold's test set needs a group of its own.")
    shuffled = [members[k] for k in rng.permutation(len(members))]
    parts = [[] for _ in range(n_folds)]
    sizes = np.zeros(n_folds, dtype=np.int64)
    for group in sorted(shuffled, key=lambda part: -part.size):  # stable: ties stay shuffled
        fold = int(np.argmin(sizes))
        parts[fold].append(group)
        sizes[fold] += group.size
    return [np.sort(np.concatenate(part)) for part in parts]


def _is_int(value):
    """Whether ``value`` is an integer (Python's or NumPy's), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    """Whether ``value`` is a real number: a ``numbers.Real``, or a number that is not
    complex, such as ``decimal.Decimal`` (pandas' read_sql of a NUMERIC column), which
    ``numbers.Real`` does not include."""
    return isinstance(value, numbers.Real) or (isinstance(value, numbers.Number)
                                               and not isinstance(value, numbers.Complex))


def _volume_list(volumes):
    """``list(volumes)``; a TypeError naming ``volumes`` where it is not iterable.

    Asked of ``iter()``, not of ``collections.abc.Iterable``: a sequence by index alone
    (``__getitem__`` and ``__len__``, no ``__iter__``) is iterable to ``list()`` but not
    an ``Iterable``, and was refused. ``list(None)`` said "'NoneType' object is not
    iterable", naming no argument."""
    try:
        iterator = iter(volumes)
    except TypeError:
        raise TypeError(f"volumes must be a sequence of volumes (paths, arrays or tensors), "
                        f"got {type(volumes).__name__}.") from None
    return list(iterator)


def _float32_targets(targets, n_volumes):
    """Targets as a float32 ``(n,)`` or ``(n, t)`` tensor, each a real number, finite and
    within float32's range (checked before the cast, which would turn 1e300 into inf with
    only a warning)."""
    if isinstance(targets, torch.Tensor):
        # Targets are data, not a graph: NumPy cannot read a tensor that requires grad
        # (or one on a GPU, or in bfloat16), and the float32 copy kept here would not
        # carry it anyway.
        targets = targets.detach().cpu()
        if targets.dtype in (torch.bfloat16, torch.float16):
            targets = targets.float()
    try:
        values = np.asarray(targets)
    except ValueError:  # NumPy's "inhomogeneous shape" named neither targets nor volumes
        raise ValueError(f"targets must have shape (n,) or (n, t) with n = len(volumes) = "
                         f"{n_volumes}: its rows have different lengths.") from None
    # An object array of real numbers (a column of a mixed pandas frame's .values) is
    # numbers; a cast to float64 of anything else failed on class labels with NumPy's
    # bare "could not convert string to float", dropped a complex imaginary part and read
    # dates as day counts.
    real_objects = values.dtype == object and all(_is_real(value) for value in values.flat)
    if values.dtype.kind not in "biuf" and not real_objects:
        example = next((value for value in values.flat if not _is_real(value)), None)
        example = example.item() if isinstance(example, np.generic) else example
        raise TypeError(f"targets must be real numbers (bool, int or float), got "
                        f"{values.dtype} values such as {example!r}: encode class labels "
                        "as numbers first.")
    values = values.astype(np.float64)
    if values.ndim not in (1, 2) or values.shape[0] != n_volumes:
        raise ValueError(f"targets must have shape (n,) or (n, t) with n = len(volumes) = "
                         f"{n_volumes}, got {values.shape}.")
    bad = ~np.isfinite(values) | (np.abs(values) > np.finfo(np.float32).max)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise ValueError(f"targets[{row}] must be finite and within float32's range "
                         f"(|t| <= {np.finfo(np.float32).max:.3g}), got {values[row]}.")
    return torch.as_tensor(values.astype(np.float32))


def _check_path(path):
    text = os.fspath(path)
    # Split as open_volume splits it: at the last ':' (lower case only), 'scan.h5:/a:b',
    # 'SCAN.H5:/c' and a file in a folder 'run.h5:1' were refused, which it opens.
    base = volume_file(text)
    if not base.lower().rstrip("/").endswith(VOLUME_SUFFIXES):
        raise ValueError(f"volume path {text!r} has an unsupported suffix; supported: "
                         f"{', '.join(VOLUME_SUFFIXES)}.")
    if not os.path.exists(base):
        raise FileNotFoundError(f"volume path {text!r} does not exist.")


def _drop_channel(volume):
    """A 3-D volume: a leading or trailing axis of size 1 (a channel, NIfTI's 4th) dropped."""
    shape = tuple(int(n) for n in volume.shape)
    if len(shape) == 4 and 1 in (shape[0], shape[-1]):
        axis = 0 if shape[0] == 1 else 3
        if isinstance(volume, LazyTensor):
            return WithoutAxis(volume, axis)
        return volume[0] if axis == 0 else volume[..., 0]
    if len(shape) != 3:
        raise ValueError(f"volumes must be 3-D (or 4-D with one axis of size 1 first or "
                         f"last), got shape {shape}.")
    return volume


class WithoutAxis(LazyTensor):
    """A lazy tensor with one axis of size 1 removed (it reads index 0 there)."""

    def __init__(self, lazy, axis):
        super().__init__(tuple(n for k, n in enumerate(lazy.shape) if k != axis))
        self.lazy, self.axis = lazy, axis

    def _evaluate(self, indices):
        return self.lazy.evaluate(np.insert(indices, self.axis, 0, axis=1))


def _read_whole(lazy):
    """A lazy volume read in full, as a float32 tensor."""
    if isinstance(lazy, NpyTensor):
        # NaN is filled here: an NpyTensor fills only the pages its own gathers read.
        whole = np.load(lazy.path, mmap_mode="r").astype(np.float32)
        return torch.as_tensor(fill_nan(whole, getattr(lazy, "fill_nan", None)))
    source = getattr(lazy, "source", None)
    if source is not None and hasattr(source, "read"):
        whole = source.read(tuple(slice(0, n) for n in source.shape))
        return torch.as_tensor(np.asarray(whole, dtype=np.float32))
    positions = np.stack(np.unravel_index(np.arange(lazy.size), lazy.shape), axis=1)
    values = np.asarray(to_host(lazy.evaluate(positions)), dtype=np.float32)
    return torch.as_tensor(values.reshape(lazy.shape))
