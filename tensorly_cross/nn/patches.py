"""PatchGrid: cubes of voxels around grid positions, cut in one vectorised gather."""

import numpy as np
import torch

from .._validation import check_int
from ..lazy.base import LazyTensor, check_indices

PADDINGS = ("reflect", "edge", "zeros")


def patch_grid(volume_shape, stride):
    """The grid of patch positions over a volume: ``ceil(volume_shape / stride)`` per axis
    (a position every ``stride`` voxels, the last one inside the volume)."""
    return tuple(-(-int(n) // int(stride)) for n in volume_shape)


class PatchGrid:
    """Patches of a volume on a regular grid of positions.

    Position ``g`` (a multi-index into ``grid_shape``) is the patch centred on voxel
    ``g * stride``. Voxels outside the volume are filled by ``padding``: ``"reflect"``
    (mirror without repeating the edge), ``"edge"`` (repeat the edge) or ``"zeros"``.

    Parameters
    ----------
    volume : torch.Tensor, numpy array, or LazyTensor
        A real 3-D volume in memory, or any lazy tensor (``open_volume``, ``DaskTensor``):
        then only the voxels of the requested patches are read, in one batched call.
    patch_size : int
        Edge of the cubic patch, at least 1 (odd sizes centre exactly).
    stride : int, default 1
        Voxels between neighbouring grid positions, at least 1.
    padding : {"reflect", "edge", "zeros"}
        How voxels outside the volume are filled.

    Raises
    ------
    TypeError
        If ``volume`` is not a tensor, array or lazy tensor, or is complex, or
        ``patch_size`` or ``stride`` is not an int.
    ValueError
        If ``volume`` is not 3-D, ``patch_size`` or ``stride`` is below 1, or ``padding`` is
        not one of the three.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross.nn import PatchGrid
    >>> grid = PatchGrid(np.arange(64.0).reshape(4, 4, 4), patch_size=3, stride=2)
    >>> grid.grid_shape
    (2, 2, 2)
    >>> patch = grid.patches([[1, 1, 1]])
    >>> tuple(patch.shape), float(patch[0, 0, 1, 1, 1])
    ((1, 1, 3, 3, 3), 42.0)
    """

    def __init__(self, volume, patch_size, stride=1, padding="reflect"):
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}.")
        patch_size = check_int(patch_size, "patch_size", minimum=1)
        stride = check_int(stride, "stride", minimum=1)
        _check_real_volume(volume)
        self.volume = volume
        self.shape = tuple(int(n) for n in volume.shape)
        if len(self.shape) != 3:
            raise ValueError(f"volume must be 3-D, got shape {self.shape}.")
        self.patch_size, self.stride, self.padding = patch_size, stride, padding
        self.grid_shape = patch_grid(self.shape, self.stride)
        half = (self.patch_size - 1) // 2
        self._offsets = np.arange(self.patch_size) - half

    def voxel_indices(self, positions):
        """Voxel multi-indices of the patches at grid positions, and where they are inside.

        Parameters
        ----------
        positions : array-like of int, shape (m, 3)
            Grid positions, each in ``0 <= g < grid_shape``.

        Returns
        -------
        voxels : ndarray of int64, shape (m, p, p, p, 3)
            The voxel read for each patch entry (padding already applied).
        inside : ndarray of bool, shape (m, p, p, p)
            False where ``padding="zeros"`` fills the entry with 0.

        Raises
        ------
        ValueError
            If ``positions`` is not an ``(m, 3)`` array of ints inside the grid.
        """
        positions = check_positions(positions, self.grid_shape)
        centres = positions * self.stride
        axes = [centres[:, axis, None] + self._offsets[None, :] for axis in range(3)]
        inside = [np.ones_like(a, dtype=bool) for a in axes]
        for axis, n in enumerate(self.shape):
            axes[axis], inside[axis] = _pad_index(axes[axis], n, self.padding)
        grid = np.stack(np.broadcast_arrays(axes[0][:, :, None, None], axes[1][:, None, :, None],
                                            axes[2][:, None, None, :]), axis=-1)
        mask = inside[0][:, :, None, None] & inside[1][:, None, :, None] & \
            inside[2][:, None, None, :]
        return grid, mask

    def patches(self, positions, device=None, dtype=torch.float32):
        """Patches at grid positions, read in one batched call.

        Parameters
        ----------
        positions : array-like of int, shape (m, 3)
            Grid positions, each in ``0 <= g < grid_shape``.
        device : torch.device or None
            Where to put the patches (default: where the values were read).
        dtype : torch.dtype, default torch.float32
            Their dtype.

        Returns
        -------
        patches : torch.Tensor of shape (m, 1, p, p, p)
            One channel per patch, ready for a 3D convolution.

        Raises
        ------
        ValueError
            If ``positions`` is not an ``(m, 3)`` array of ints inside the grid.
        """
        grid, mask = self.voxel_indices(positions)
        flat = grid.reshape(-1, 3)
        if isinstance(self.volume, LazyTensor):
            values = torch.as_tensor(np.asarray(_host(self.volume.evaluate(flat))))
        elif isinstance(self.volume, torch.Tensor):
            index = torch.as_tensor(flat, device=self.volume.device)
            values = self.volume[index[:, 0], index[:, 1], index[:, 2]]
        else:
            values = torch.as_tensor(self.volume[tuple(flat.T)])
        device = device if device is not None else values.device
        values = values.to(device=device, dtype=dtype).reshape(mask.shape)
        values = values * torch.as_tensor(mask, device=device, dtype=dtype)
        return values.unsqueeze(1)


def check_positions(positions, grid_shape):
    """Grid positions as an ``(m, 3)`` int64 array inside the grid; raise otherwise (a float
    position would be truncated, one outside the grid folded back in by the padding).

    Parameters
    ----------
    positions : array-like of int, shape (m, 3)
        The positions to check.
    grid_shape : tuple of 3 ints
        The grid they index.

    Returns
    -------
    positions : ndarray of int64, shape (m, 3)

    Raises
    ------
    ValueError
        If ``positions`` does not have shape ``(m, 3)``, holds non-integers, or a position
        outside ``0 <= g < grid_shape``.
    """
    try:
        return check_indices(positions, tuple(grid_shape))
    except ValueError as error:
        raise ValueError(f"positions (grid positions into the grid {tuple(grid_shape)}): "
                         f"{error}") from None


def _check_real_volume(volume):
    """A volume PatchGrid can cut: a tensor, array or lazy tensor of real values."""
    if not isinstance(volume, torch.Tensor | np.ndarray | LazyTensor):
        raise TypeError(f"volume must be a torch.Tensor, a NumPy array or a lazy tensor (e.g. "
                        f"tensorly_cross.open_volume's), got {type(volume).__name__}.")
    if isinstance(volume, torch.Tensor):
        complex_valued = volume.is_complex()
    else:  # a lazy tensor need not say its dtype
        dtype = getattr(volume, "dtype", None)
        complex_valued = isinstance(dtype, np.dtype) and dtype.kind == "c"
    if complex_valued:
        raise TypeError(f"volume is complex ({volume.dtype}); patches are real: pass its real "
                        "part or its magnitude (volume.real, abs(volume)).")


def _pad_index(index, size, padding):
    """Map out-of-range voxel indices into the volume; ``inside`` is False where a
    ``"zeros"`` padding must blank the voxel."""
    keep = np.ones(index.shape, dtype=bool)
    if padding == "reflect" and size > 1:
        period = 2 * (size - 1)
        folded = np.abs(index) % period
        return np.where(folded >= size, period - folded, folded), keep
    if padding == "zeros":
        keep = (index >= 0) & (index < size)
    return np.clip(index, 0, size - 1), keep


def _host(values):
    from .._backend import to_host

    return to_host(values)


def encode_patches(encoder, patches, n_features):
    """``encoder(patches)`` as ``(m, n_features)``, or a ValueError that says what the
    encoder returned for what it was given (a bare reshape error otherwise)."""
    output = encoder(patches)
    if output.numel() != patches.shape[0] * n_features:
        raise ValueError(
            f"the encoder returned shape {tuple(output.shape)} for {patches.shape[0]} patches "
            f"of shape {tuple(patches.shape[1:])}; expected {patches.shape[0]} rows of "
            f"n_features={n_features}: check n_features and patch_size against the encoder.")
    return output.reshape(patches.shape[0], n_features)
