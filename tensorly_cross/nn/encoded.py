"""EncodedTensor: the feature field of an encoder over a volume's patch grid, read lazily."""

import numpy as np
import tensorly as tl
import torch
from torch import nn

from .._validation import check_bool, check_choice, check_int
from ..api import _requires_grad
from ..errors import NonFiniteValueError
from ..lazy.base import LazyTensor
from ..lazy.cache import SortedKeys
from ..lazy.quantics import QuanticsLayout
from .keyed import content_digest
from .patches import (
    PatchGrid,
    check_concrete_module,
    check_features,
    check_positions,
    encode_patches,
)


def default_encoder(patch_size, n_features, width=8, pooled=False):
    """A small 3D CNN whose receptive field is exactly one patch: (m, 1, p, p, p) -> (m, F).

    ``pooled=False``: a 3^3 convolution, GELU, then a ``(p-2)^3`` convolution to the
    features. ``pooled=True``: a 3^3 convolution, GELU, a pointwise layer to the features,
    then their mean over the patch: the features of a patch are the mean local features of
    its ``(p-2)^3`` interior, so with ``stride = patch_size - 2`` the interiors tile the
    volume (but for one border layer) and the mean of the feature field is, to that layer,
    the mean over every voxel that a dense CNN pools; and the field is smooth (every value
    an average over a tile), which a low-rank TT approximates far better than the field
    of single voxels.

    Parameters
    ----------
    patch_size : int
        Edge ``p`` of the cubic patches it reads (at least 3).
    n_features : int
        Features ``F`` per patch.
    width : int, default 8
        Channels of the hidden layer.
    pooled : bool, default False
        The second layer: a ``(p-2)^3`` convolution (``False``), or a pointwise layer and
        the mean over the patch's interior (``True``).

    Returns
    -------
    encoder : torch.nn.Sequential
        Maps ``(m, 1, p, p, p)`` patches to ``(m, F)`` features.

    Raises
    ------
    TypeError
        If ``patch_size``, ``n_features`` or ``width`` is not an int, or ``pooled`` not a
        bool.
    ValueError
        If ``patch_size`` is less than 3, or ``n_features`` or ``width`` less than 1.

    Examples
    --------
    >>> import torch
    >>> from tensorly_cross.nn import default_encoder
    >>> encoder = default_encoder(patch_size=5, n_features=4)
    >>> encoder(torch.zeros(2, 1, 5, 5, 5)).shape
    torch.Size([2, 4])
    """
    # Checked here: None or a float failed deep inside torch's Conv3d, naming neither.
    patch_size = check_int(patch_size, "patch_size")
    if patch_size < 3:
        raise ValueError(f"patch_size must be >= 3 for the default encoder, got {patch_size}.")
    n_features = check_int(n_features, "n_features", minimum=1)
    width = check_int(width, "width", minimum=1)
    # pooled="no" built the pooled encoder: a string is truthy.
    if check_bool(pooled, "pooled"):
        return nn.Sequential(
            nn.Conv3d(1, width, kernel_size=3), nn.GELU(),
            nn.Conv3d(width, n_features, kernel_size=1), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        )
    return nn.Sequential(
        nn.Conv3d(1, width, kernel_size=3), nn.GELU(),
        nn.Conv3d(width, n_features, kernel_size=patch_size - 2), nn.Flatten(),
    )


class EncodedTensor(LazyTensor):
    """The feature field of an encoder over a volume's patch grid, as a lazy tensor.

    Entry ``(g0, g1, g2, f)`` (or ``(f, g0, g1, g2)`` with ``feature_axis="first"``) is
    feature ``f`` of ``encoder(patch at grid position g)``.

    The encoder runs once per unique position for all ``F`` features, in mini-batches; the
    block cross (``method="block"``, features last) reads every position for all of them.
    Without gradient tracking (the index search) the features of every position seen are
    cached, so the cross's repeated requests cost nothing; with gradient tracking (the
    differentiable assembly) each call encodes afresh so that gradients reach the encoder
    through exactly the patches read, re-using the patches cut during the search (no
    voxel is read twice). Cached features are dropped as soon as one of the encoder's
    parameters changes (an optimiser step, a loaded state, an in-place edit through
    ``.data``), or a layer is added, removed or replaced (``encoder[1] = nn.ReLU()``): they
    are reused only while they are what the encoder would compute. Cached patches and
    features are dropped too when a torch volume changes in place (``volume.mul_(5)``, seen
    by its version counter) or its storage is replaced (``volume.data = ...``). What the
    caches cannot see is a change of a layer's plain attributes (``GELU.approximate``,
    ``Dropout.p``) or of its hooks, an in-place change of a NumPy or lazy volume, or of a
    torch volume's memory through a NumPy view or ``.data`` (reading every voxel on every
    call to tell would cost more than the cache saves): call :meth:`clear_cache` after one.

    Parameters
    ----------
    volume : torch.Tensor, numpy array or LazyTensor (3-D)
        The volume; a lazy one is read only at the voxels of the patches encoded.
    encoder : torch.nn.Module
        Maps (m, 1, p, p, p) patches to (m, F) features.
    patch_size : int
        Edge ``p`` of the cubic patches (see :class:`PatchGrid`).
    n_features : int
        Features ``F`` per patch: the size of the feature mode.
    stride : int, default 1
        Voxels between neighbouring grid positions; the grid has
        ``ceil(volume.shape / stride)`` positions per axis.
    padding : {"reflect", "edge", "zeros"}
    batch_size : int, default 4096
        Patches per encoder call.
    feature_axis : {"last", "first"}
        Where the feature mode sits. With ``"first"`` and a TT rank ``r_1 = F`` after it,
        every later fiber asks each position for all ``F`` features at once (a block TT),
        so the encoder runs once for ``F`` entries.
    layout : {"tt", "quantics"}
        ``"quantics"``: the grid modes are split into their binary (then prime) digits, the
        feature mode stays whole and last: shape ``(*digits, F)`` (``self.layout`` maps it;
        ``qtt_to_tt(tt, self.layout)`` merges a grouped TT back to ``(*grid, F)``).
    order : {"grouped", "interleaved"}
        Digit order of the quantics layout.
    encode : callable or None
        ``encode(patches) -> (m, F) features`` in place of calling ``encoder`` in
        mini-batches (:class:`LockstepEncoder.encode` batches several volumes' calls).
    patch_cache_bytes : int, default 256 MiB
        Patches cut without gradient are kept (up to this size) for the differentiable
        read; 0 keeps none.

    Raises
    ------
    TypeError
        If ``encoder`` is not an ``nn.Module``, ``volume`` is not a tensor, array or lazy
        tensor (or is complex), or a size is not an int.
    ValueError
        If a size is out of range (``n_features``, ``batch_size``, ``patch_size`` and
        ``stride`` at least 1, ``patch_cache_bytes`` at least 0), an option is not one of
        its choices, or the volume or a parameter of the encoder is on the ``meta`` device.

    Attributes
    ----------
    n_encoded : int
        Patches run through the encoder so far.
    n_encoder_calls : int
        Mini-batches run.

    Examples
    --------
    >>> import numpy as np
    >>> import tensorly as tl
    >>> import torch
    >>> from tensorly_cross.nn import EncodedTensor, default_encoder
    >>> encoder = default_encoder(patch_size=3, n_features=2)
    >>> with tl.backend_context("pytorch"):
    ...     field = EncodedTensor(torch.rand(6, 6, 6), encoder, patch_size=3, n_features=2,
    ...                           stride=2)
    ...     entries = field.evaluate(np.array([[1, 2, 0, 1]]))  # feature 1 at (1, 2, 0)
    >>> field.shape
    (3, 3, 3, 2)
    >>> patch = field.patches.patches([[1, 2, 0]])  # centred on voxel (2, 4, 0)
    >>> bool(torch.allclose(entries, encoder(patch)[:, 1]))
    True
    """

    def __init__(self, volume, encoder, patch_size, n_features, stride=1, padding="reflect",
                 batch_size=4096, feature_axis="last", layout="tt", order="grouped",
                 encode=None, patch_cache_bytes=256 * 2**20):
        if tl.get_backend() != "pytorch":
            raise RuntimeError("EncodedTensor needs the TensorLy 'pytorch' backend: "
                               "tl.set_backend('pytorch').")
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}.")
        check_concrete_module(encoder, "encoder")
        n_features = check_int(n_features, "n_features", minimum=1)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        patch_cache_bytes = check_int(patch_cache_bytes, "patch_cache_bytes", minimum=0)
        self.patches = PatchGrid(volume, patch_size, stride, padding)
        check_choice(feature_axis, "feature_axis", ("last", "first"))
        check_choice(layout, "layout", ("tt", "quantics"))
        if layout == "quantics" and feature_axis != "last":
            raise ValueError("layout='quantics' keeps the features last: feature_axis='last'.")
        self.feature_axis = feature_axis
        grid = self.patches.grid_shape
        features = (int(n_features),)
        self.layout = (QuanticsLayout.with_channels(grid, n_features, order)
                       if layout == "quantics" else None)
        if self.layout is not None:
            super().__init__(self.layout.quantics_shape)
        else:
            super().__init__(features + grid if feature_axis == "first" else grid + features)
        self.encoder = encoder
        self.n_features = int(n_features)
        self.batch_size = int(batch_size)
        self.encode = encode
        self.patch_cache_bytes = int(patch_cache_bytes)
        self.n_encoded = 0
        self.n_encoder_calls = 0
        self._features = _KeyedRows()  # flat position id -> features (without gradient)
        self._patches = _KeyedRows(self.patch_cache_bytes)  # flat position id -> patch
        self._parameter_versions = None
        # Recorded now: patches adopted from an earlier pass were matched to this volume.
        self._volume_state = _volume_state(self.patches.volume)

    def _evaluate(self, indices):
        if self.layout is not None:
            indices = self.layout.to_original(indices)
        if self.feature_axis == "first":
            channels, points = indices[:, 0], indices[:, 1:]
        else:
            channels, points = indices[:, 3], indices[:, :3]
        positions, features_of = np.unique(points, axis=0, return_inverse=True)
        features = self.features(positions)
        _check_finite_features(features, positions, self.patches, self.encoder)
        rows = torch.as_tensor(features_of.reshape(-1), device=features.device)
        cols = torch.as_tensor(channels, device=features.device)
        return features[rows, cols]

    def features(self, positions):
        """Encoder features at grid positions, all ``F`` of them per position.

        Without gradient tracking the features of every position seen are cached (and
        reused while the encoder's parameters are unchanged); with it, each call encodes
        afresh so that gradients reach the encoder.

        Parameters
        ----------
        positions : array-like of int, shape (u, 3)
            Grid positions (repeats allowed), each in ``0 <= g < grid_shape``.

        Returns
        -------
        features : torch.Tensor of shape (u, F)
            Row ``i`` holds the features of the patch at ``positions[i]``.

        Raises
        ------
        ValueError
            If ``positions`` is not an ``(u, 3)`` array of ints inside the grid.
        """
        positions = check_positions(positions, self.patches.grid_shape)
        keys = np.ravel_multi_index(tuple(positions.T), self.patches.grid_shape)
        if keys.shape[0] > 1 and not (np.diff(keys) > 0).all():  # the caches need sorted keys
            keys, first, back = np.unique(keys, return_index=True, return_inverse=True)
            rows = self._distinct_features(positions[first], keys)
            return rows[torch.as_tensor(back.reshape(-1), device=rows.device)]
        return self._distinct_features(positions, keys)

    def _distinct_features(self, positions, keys):
        """Features of distinct positions whose keys are increasing."""
        if positions.shape[0] == 0:
            device, dtype = _parameters_device_dtype(self.encoder, self.patches.volume)
            return torch.zeros((0, self.n_features), dtype=dtype, device=device)
        self._drop_stale_cuts()
        self._drop_stale_features()
        if torch.is_grad_enabled():
            return self._encode(positions, self._patches_of(positions, keys))
        known = self._features.lookup(keys)
        missing = known < 0
        if missing.any():
            new = self._encode(positions[missing], self._patches_of(positions[missing],
                                                                    keys[missing]))
            self._features.add(keys[missing], new.detach())
            known = self._features.lookup(keys)
        return self._features.rows(known)

    @property
    def cut_patches(self):
        """The patches cut so far (to hand to a later EncodedTensor of the same volume)."""
        return self._patches

    def adopt_patches(self, patches):
        """Take over the patches another EncodedTensor of this volume cut.

        Nothing changes when they are on another device, or of another dtype, than the
        patches this tensor would cut now (those of the encoder's parameters). Adopted,
        the store is shared, not copied: patches cut later are added to it, within this
        tensor's ``patch_cache_bytes``.

        Parameters
        ----------
        patches : object
            The other tensor's :attr:`cut_patches`; it must have cut them from the same
            volume with the same patch size, stride and padding.
        """
        device, dtype = _parameters_device_dtype(self.encoder, self.patches.volume)
        if any(rows.device != device or rows.dtype != dtype for rows in patches._rows):
            return
        patches.max_bytes = self._patches.max_bytes
        self._patches = patches

    def clear_cache(self):
        """Forget cached features and patches."""
        self._features.clear()
        self._patches.clear()

    def _patches_of(self, positions, keys):
        """Patches of distinct positions: cached ones taken, the others cut (and cached
        while within ``patch_cache_bytes``).

        A volume that requires grad is cut afresh whenever grad is on: a patch cut during the
        search (no grad) has no history, and one cut with grad must not outlive its graph.
        """
        device, dtype = _parameters_device_dtype(self.encoder, self.patches.volume)
        # _requires_grad sees through lazy views (lazy_tensor(x), TransposedTensor) too
        if torch.is_grad_enabled() and _requires_grad(self.patches.volume):
            return self.patches.patches(positions, device=device, dtype=dtype)
        known = self._patches.lookup(keys)
        missing = known < 0
        if not missing.any():
            return self._patches.rows(known)
        cut = self.patches.patches(positions[missing], device=device, dtype=dtype)
        self._patches.add(keys[missing], cut)
        if not (~missing).any():
            # Not the cached rows themselves: an encoder may change its input in place
            # (x.mul_(3)), and later passes would read the changed patches.
            return cut.clone()
        patches = cut.new_empty((len(positions),) + tuple(cut.shape[1:]))
        patches[torch.as_tensor(np.flatnonzero(missing), device=cut.device)] = cut
        patches[torch.as_tensor(np.flatnonzero(~missing), device=cut.device)] = \
            self._patches.rows(known[~missing])
        return patches

    def _encode(self, positions, patches):
        """Features of the positions, from their patches."""
        self.n_encoded += len(positions)
        if self.encode is not None:
            self.n_encoder_calls += 1
            return check_features(self.encode(patches), patches, self.n_features)
        outputs = []
        for start in range(0, len(positions), self.batch_size):
            batch = patches[start : start + self.batch_size]
            outputs.append(encode_patches(self.encoder, batch, self.n_features))
            self.n_encoder_calls += 1
        return torch.cat(outputs) if outputs else patches.new_zeros((0, self.n_features))

    def _drop_stale_cuts(self):
        """Cached patches, and the features encoded from them, are valid for the voxels
        they were cut from: a torch volume changed in place since drops both."""
        state = _volume_state(self.patches.volume)
        if state != self._volume_state:
            self.clear_cache()
        self._volume_state = state

    def _drop_stale_features(self):
        """Cached features are valid for the encoder state they were computed with
        (patches do not depend on the encoder: they stay)."""
        versions = _encoder_state(self.encoder)
        if versions != self._parameter_versions:
            self._features.clear()
        self._parameter_versions = versions


def _volume_state(volume):
    """What tells cheaply that a torch volume's voxels may have changed: its storage and
    in-place version (``mul_``, ``copy_``, an index assignment, also through a view); None
    for a NumPy or lazy volume, whose in-place changes no counter records."""
    if not isinstance(volume, torch.Tensor):
        return None
    try:
        version = volume._version
    except RuntimeError:  # an inference tensor keeps no version counter (nor may change)
        version = None
    return volume.data_ptr(), version


def _encoder_state(encoder):
    """What the encoder's outputs depend on besides its input: each parameter's and
    buffer's identity, storage, in-place version, dtype and device (``.data =`` and
    ``.to()`` replace the storage without a new version; an optimiser step and
    ``load_state_dict`` bump the version), a SHA-256 of their values (an in-place edit
    through ``.data``, e.g. ``weight.data.mul_(2)``, bumps no version), the train/eval
    mode of every module, and the modules themselves by name: a parameter-free layer
    swapped (GELU for ReLU) changes the outputs and no tensor. The modules are held, not
    their ``id``: a new module cannot take the address of one that is gone. Encoders are
    small: hashing their values costs far less than one encoder call."""
    tensors = [*encoder.parameters(), *encoder.buffers()]
    return (tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in tensors),
            content_digest(*tensors),
            tuple((name, module, module.training) for name, module in encoder.named_modules()))


class _KeyedRows:
    """Rows of a tensor stored by integer key (sorted-key lookup), optionally within a
    byte budget (rows that would exceed it are not stored)."""

    def __init__(self, max_bytes=None):
        self.max_bytes = max_bytes
        self.clear()

    def clear(self):
        self._keys, self._rows, self.nbytes = SortedKeys(), [], 0
        self._count, self._joined = 0, None

    def lookup(self, keys):
        """Slot of each key, -1 where absent."""
        if self._count == 0:
            return np.full(keys.shape[0], -1, dtype=np.int64)
        return self._keys.lookup(keys)

    def add(self, keys, rows):
        """Store rows of new, sorted, distinct keys (skipped past the byte budget)."""
        size = rows.numel() * rows.element_size()
        if self.max_bytes is not None and self.nbytes + size > self.max_bytes:
            return
        self._keys.insert(keys, np.arange(self._count, self._count + keys.shape[0],
                                          dtype=np.int64))
        self._rows.append(rows)
        self._count += keys.shape[0]
        self.nbytes += size
        self._joined = None

    def rows(self, slots):
        if self._joined is None:
            self._joined = torch.cat(self._rows) if len(self._rows) > 1 else self._rows[0]
            self._rows = [self._joined]
        return self._joined[torch.as_tensor(slots, device=self._joined.device)]


def _check_finite_features(features, positions, patches, encoder):
    """Raise where the encoder gave NaN or inf, in the volume's terms: the grid position
    and the patch's centre voxel (a quantics layout's digits would say little), and the
    cause: the volume there, or, for a finite patch, the encoder itself."""
    finite = torch.isfinite(features).all(dim=1)
    if bool(finite.all()):
        return
    row = int(torch.nonzero(~finite)[0, 0])
    position = tuple(int(g) for g in positions[row])
    centre = tuple(g * patches.stride for g in position)
    value = float(features[row][~torch.isfinite(features[row])][0])
    where = (f"the encoder returned {value} for the patch at grid position {position}, "
             f"centred at voxel {centre} of the volume (patch_size {patches.patch_size})")
    # Re-cut in float64 (one patch): float32 would overflow large finite voxels to inf.
    patch = patches.patches([position], dtype=torch.float64)
    if not bool(torch.isfinite(patch).all()):
        raise NonFiniteValueError(f"{where}: is there NaN or inf in the volume there?",
                                  position, value)
    # Patches are cut in the encoder's dtype: a finite voxel beyond its range (100000.0 in
    # float16) reached the encoder as inf, which was blamed on the encoder's layers.
    dtype = _parameters_device_dtype(encoder, patches.volume)[1]
    largest = float(patch.abs().max())
    if dtype.is_floating_point and largest > torch.finfo(dtype).max:
        raise NonFiniteValueError(
            f"{where}: the patch holds a voxel of {largest} (in absolute value), beyond the "
            f"range of the dtype patches are cut in, {dtype} (largest "
            f"{torch.finfo(dtype).max:.6g}): scale the volume, or run the encoder in a wider "
            "dtype.", position, value)
    raise NonFiniteValueError(f"{where}, whose voxels are all finite: {_encoder_fault(encoder)}",
                              position, value)


def _encoder_fault(encoder):
    """What in the encoder gives non-finite features for a finite patch: its first NaN or
    inf parameter or buffer (a diverged optimiser step), else an overflow in its layers."""
    for name, tensor in (*encoder.named_parameters(), *encoder.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return (f"the encoder's {name!r} holds NaN or inf (a diverged optimiser step?); "
                    "reload a finite state or lower the learning rate.")
    return ("the encoder itself overflows or divides by zero on it (all its parameters "
            "are finite): check its layers, or its dtype's range.")


def _parameters_device_dtype(module, volume):
    """Patches follow the encoder's parameters, else a torch volume, else the defaults."""
    for parameter in module.parameters():
        return parameter.device, parameter.dtype
    if isinstance(volume, torch.Tensor) and volume.is_floating_point():
        return volume.device, volume.dtype
    return torch.device("cpu"), torch.get_default_dtype()
