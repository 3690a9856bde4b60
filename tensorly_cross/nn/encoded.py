"""EncodedTensor: the feature field of an encoder over a volume's patch grid, read lazily."""

import numpy as np
import tensorly as tl
import torch
from torch import nn

from ..lazy.base import LazyTensor
from ..lazy.cache import SortedKeys
from ..lazy.quantics import QuanticsLayout
from .patches import PatchGrid


def default_encoder(patch_size, n_features, width=8):
    """A small 3D CNN whose receptive field is exactly one patch: (m, 1, p, p, p) -> (m, F).

    Parameters
    ----------
    patch_size : int
        Edge ``p`` of the cubic patches (>= 3).
    n_features : int
        Number of output features ``F``.
    width : int, default 8
        Channels of the hidden layer.

    Returns
    -------
    encoder : torch.nn.Sequential
        A 3x3x3 convolution, GELU, then a convolution over the whole remaining patch.

    Examples
    --------
    >>> import torch
    >>> from tensorly_cross.nn import default_encoder
    >>> encoder = default_encoder(patch_size=5, n_features=4)
    >>> encoder(torch.zeros(10, 1, 5, 5, 5)).shape
    torch.Size([10, 4])
    """
    if patch_size < 3:
        raise ValueError(f"patch_size must be >= 3 for the default encoder, got {patch_size}.")
    return nn.Sequential(
        nn.Conv3d(1, width, kernel_size=3), nn.GELU(),
        nn.Conv3d(width, n_features, kernel_size=patch_size - 2), nn.Flatten(),
    )


class EncodedTensor(LazyTensor):
    """The lazy feature field of an encoder over the patch grid of a volume.

    Entry ``(g0, g1, g2, f)`` (or ``(f, g0, g1, g2)`` with ``feature_axis="first"``) is
    feature ``f`` of ``encoder(patch at grid position g)``. The encoder runs once per
    unique position for all ``F`` features, in mini-batches; the block cross
    (``method="block"``, features last) reads every position for all of them.
    Without gradient tracking (the index search) the features of every position seen are
    cached, so the cross's repeated requests cost nothing; with gradient tracking (the
    differentiable assembly) each call encodes afresh so that gradients reach the encoder
    through exactly the patches read.

    Parameters
    ----------
    volume : torch.Tensor, numpy array or LazyTensor (3-D)
        The volume (any lazy volume is read patch by patch, on demand).
    encoder : torch.nn.Module
        Maps (m, 1, p, p, p) patches to (m, F) features.
    patch_size : int
        Edge ``p`` of the cubic patches.
    n_features : int
        Number of features ``F`` the encoder returns.
    stride : int, default 1
        Voxels between neighbouring grid positions.
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

    Attributes
    ----------
    n_encoded : int
        Patches run through the encoder so far.
    n_encoder_calls : int
        Mini-batches run.

    Examples
    --------
    >>> import tensorly as tl
    >>> import torch
    >>> from tensorly_cross.nn import EncodedTensor, default_encoder
    >>> encoder = default_encoder(patch_size=3, n_features=2)
    >>> with tl.backend_context("pytorch"):
    ...     field = EncodedTensor(torch.rand(8, 8, 8), encoder, patch_size=3, n_features=2)
    ...     values = field.evaluate([[0, 0, 0, 1], [0, 0, 0, 0], [7, 7, 7, 1]])
    >>> field.shape, field.n_encoded  # two positions, each encoded once for both features
    ((8, 8, 8, 2), 2)
    """

    def __init__(self, volume, encoder, patch_size, n_features, stride=1, padding="reflect",
                 batch_size=4096, feature_axis="last", layout="tt", order="grouped"):
        if tl.get_backend() != "pytorch":
            raise RuntimeError("EncodedTensor needs the TensorLy 'pytorch' backend: "
                               "tl.set_backend('pytorch').")
        self.patches = PatchGrid(volume, patch_size, stride, padding)
        if feature_axis not in ("last", "first"):
            raise ValueError(f"feature_axis must be 'last' or 'first', got {feature_axis!r}.")
        if layout not in ("tt", "quantics"):
            raise ValueError(f"layout must be 'tt' or 'quantics', got {layout!r}.")
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
        self.n_encoded = 0
        self.n_encoder_calls = 0
        self._cached_positions = None  # SortedKeys: flat position id -> row of features
        self._cached_features = None

    def _evaluate(self, indices):
        if self.layout is not None:
            indices = self.layout.to_original(indices)
        if self.feature_axis == "first":
            channels, points = indices[:, 0], indices[:, 1:]
        else:
            channels, points = indices[:, 3], indices[:, :3]
        positions, features_of = np.unique(points, axis=0, return_inverse=True)
        features = self.features(positions)
        rows = torch.as_tensor(features_of.reshape(-1), device=features.device)
        cols = torch.as_tensor(channels, device=features.device)
        return features[rows, cols]

    def features(self, positions):
        """Encoder features at grid positions (cached while gradients are off).

        Parameters
        ----------
        positions : ndarray of int64, shape (u, 3)
            Distinct grid positions.

        Returns
        -------
        features : torch.Tensor of shape (u, F)
            With gradient to the encoder when gradients are on.
        """
        if torch.is_grad_enabled():
            return self._encode(positions)
        keys = np.ravel_multi_index(tuple(positions.T), self.patches.grid_shape)
        known = self._lookup(keys)
        missing = known < 0
        if missing.any():
            self._store(keys[missing], self._encode(positions[missing]).detach())
            known = self._lookup(keys)
        return self._cached_features[torch.as_tensor(known, device=self._cached_features.device)]

    def clear_cache(self):
        """Forget cached features (call after the encoder's parameters change)."""
        self._cached_positions = self._cached_features = None

    def _encode(self, positions):
        outputs = []
        device, dtype = _parameters_device_dtype(self.encoder, self.patches.volume)
        for start in range(0, len(positions), self.batch_size):
            batch = self.patches.patches(positions[start : start + self.batch_size],
                                         device=device, dtype=dtype)
            outputs.append(self.encoder(batch).reshape(len(batch), self.n_features))
            self.n_encoder_calls += 1
        self.n_encoded += len(positions)
        return torch.cat(outputs) if outputs else torch.zeros((0, self.n_features),
                                                              device=device, dtype=dtype)

    def _lookup(self, keys):
        if self._cached_positions is None:
            return np.full(keys.shape[0], -1, dtype=np.int64)
        return self._cached_positions.lookup(keys)

    def _store(self, keys, features):
        """Cache features of new positions; ``keys`` sorted (they come from np.unique)."""
        if self._cached_positions is None:
            self._cached_positions, self._cached_features = SortedKeys(), features
            slots = np.arange(keys.shape[0], dtype=np.int64)
        else:
            slots = np.arange(len(self._cached_positions),
                              len(self._cached_positions) + keys.shape[0], dtype=np.int64)
            self._cached_features = torch.cat([self._cached_features, features])
        self._cached_positions.insert(keys, slots)


def _parameters_device_dtype(module, volume):
    """Patches follow the encoder's parameters, else a torch volume, else the defaults."""
    for parameter in module.parameters():
        return parameter.device, parameter.dtype
    if isinstance(volume, torch.Tensor) and volume.is_floating_point():
        return volume.device, volume.dtype
    return torch.device("cpu"), torch.get_default_dtype()
