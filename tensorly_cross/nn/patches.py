"""PatchGrid: cubes of voxels around grid positions, cut in one vectorised gather."""

import numpy as np
import torch
from torch import nn

from .._backend import check_concrete
from .._validation import check_choice, check_int
from ..api import _requires_grad
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
        If ``volume`` is not 3-D or is on the ``meta`` device, ``patch_size`` or ``stride``
        is below 1, or ``padding`` is not one of the three.

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
        check_choice(padding, "padding", PADDINGS)
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
            values = self.volume.evaluate(flat)
            # A lazy view of a tensor that requires grad reads a tensor with its history:
            # through the host it lost the gradient without a word. Only for the volumes
            # that EncodedTensor cuts afresh (_requires_grad): a callable's values with a
            # history would carry it only where its patch cache missed.
            if not (isinstance(values, torch.Tensor) and values.requires_grad
                    and _requires_grad(self.volume)):
                values = torch.as_tensor(native_byte_order(np.asarray(_host(values))))
        elif isinstance(self.volume, torch.Tensor):
            index = torch.as_tensor(flat, device=self.volume.device)
            values = self.volume[index[:, 0], index[:, 1], index[:, 2]]
        else:
            values = torch.as_tensor(native_byte_order(self.volume[tuple(flat.T)]))
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
    check_concrete(volume, "volume")  # torch's "Cannot copy out of meta tensor" named nothing
    if isinstance(volume, torch.Tensor):
        complex_valued = volume.is_complex()
    else:  # a lazy tensor need not say its dtype
        dtype = getattr(volume, "dtype", None)
        complex_valued = isinstance(dtype, np.dtype) and dtype.kind == "c"
    if complex_valued:
        raise TypeError(f"volume is complex ({volume.dtype}); patches are real: pass its real "
                        "part or its magnitude (volume.real, abs(volume)).")
    if isinstance(volume, np.ndarray) and volume.dtype.kind not in "biuf":
        raise TypeError(f"volume has dtype {volume.dtype}; patches need bool, integer or real "
                        "floating-point values.")


def check_concrete_module(module, name):
    """Raise a ``ValueError`` naming the first parameter or buffer of ``module`` on the
    ``meta`` device (``module.to("meta")``), as :func:`check_concrete` does for a volume: the
    encoder failed deep inside the search with torch's bare ``NotImplementedError``."""
    for tensor_name, tensor in (*module.named_parameters(), *module.named_buffers()):
        check_concrete(tensor, f"{name}'s {tensor_name!r}")


def native_byte_order(array):
    """``array`` in the machine's byte order (torch refuses any other), with the same values:
    a big-endian NIfTI's ``dataobj`` or a ``'>f4'`` ``.npy`` is big-endian on most machines.

    Parameters
    ----------
    array : numpy.ndarray

    Returns
    -------
    array : numpy.ndarray
        ``array`` itself when already native, else a converted copy.
    """
    if array.dtype.isnative:
        return array
    return array.astype(array.dtype.newbyteorder("="))


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
    encoder returned for what it was given (a bare reshape error, or rows silently mixed,
    otherwise).

    Parameters
    ----------
    encoder : callable
        Maps ``(m, 1, p, p, p)`` patches to ``(m, n_features)`` features; trailing axes of
        size 1 (``(m, n_features, 1, 1, 1)``, a convolution without ``Flatten``) are
        accepted too.
    patches : torch.Tensor of shape (m, 1, p, p, p)
        The patches.
    n_features : int
        Features per patch.

    Returns
    -------
    features : torch.Tensor of shape (m, n_features)

    Raises
    ------
    TypeError
        If the encoder returns something other than a tensor.
    ValueError
        If the encoder's kernels do not fit in the patches, a BatchNorm in train mode is
        given a call of one patch, or the encoder returns another shape (e.g.
        ``(n_features, m)``: features first) or features on another device.
    """
    try:
        output = encoder(patches)
    except ValueError as error:
        if _BATCH_OF_ONE not in str(error):
            raise
        # The cross asks for as few patches as a step needs, often one: torch's message
        # named neither the call's size nor why it had one patch.
        count = patches.shape[0]
        raise ValueError(
            f"the encoder cannot read a call of {count} patch{'es' * (count != 1)} in train "
            "mode: a BatchNorm in it needs more than one value per channel, and the cross "
            "asks for the patches each of its steps needs, which may be one. Put the encoder's "
            "BatchNorm layers in eval mode, or use a per-sample normalisation such as "
            f"GroupNorm (docs/pipeline.rst) (torch: {error})") from error
    except RuntimeError as error:
        if not _patch_too_small(error):
            raise
        raise ValueError(
            f"the encoder cannot read {patches.shape[0]} patches of shape "
            f"{tuple(patches.shape[1:])} (patch_size={patches.shape[-1]}): its kernels do not "
            f"fit in them{_needs(encoder)}. Check patch_size against the encoder "
            f"(torch: {error})") from error
    return check_features(output, patches, n_features)


def check_features(output, patches, n_features):
    """The encoder's ``output`` for ``patches`` as ``(m, n_features)``; a ValueError unless its
    shape is ``(m, n_features)`` or that with trailing axes of size 1. Checking only the
    number of elements would take ``(n_features, m)`` (features first) and mix the features
    of different patches without a word.

    Parameters
    ----------
    output : torch.Tensor
        What the encoder (or an ``encode`` callable) returned.
    patches : torch.Tensor of shape (m, 1, p, p, p)
        What it was given.
    n_features : int
        Features per patch.

    Returns
    -------
    features : torch.Tensor of shape (m, n_features)

    Raises
    ------
    TypeError
        If ``output`` is not a tensor (a tuple of features and more, a dict, None).
    ValueError
        If ``output`` has another shape (naming the shape got and the one expected), or is
        on another device than ``patches``.
    """
    if not isinstance(output, torch.Tensor):
        # output.shape failed with a bare AttributeError that named neither the encoder
        # nor what it should return
        raise TypeError(f"the encoder returned a {type(output).__name__} for "
                        f"{patches.shape[0]} patches; it must return one torch.Tensor of "
                        f"features, ({patches.shape[0]}, {n_features}) (for an encoder that "
                        "returns more, wrap it in a module that returns the features only).")
    if output.device != patches.device:
        # The TT read from them, and the head on the module's device, would meet in a bare
        # "Expected all tensors to be on the same device" (or a meta tensor's .item()).
        raise ValueError(f"the encoder returned features on {output.device} for patches on "
                         f"{patches.device}: it must return them on the device of its "
                         "input (the patches follow the encoder's parameters).")
    m, shape = patches.shape[0], tuple(output.shape)
    if shape[:2] != (m, n_features) or any(n != 1 for n in shape[2:]):
        raise ValueError(
            f"the encoder returned shape {shape} for {m} patches of shape "
            f"{tuple(patches.shape[1:])}; expected ({m}, {n_features}) (one row of "
            f"n_features={n_features} per patch, optionally followed by axes of size 1): "
            "check n_features and patch_size against the encoder, and that it returns the "
            "patches first.")
    return output.reshape(m, n_features)


# torch's message when a BatchNorm in train mode gets one value per channel
_BATCH_OF_ONE = "Expected more than 1 value per channel when training"

# torch's messages when a convolution's or pooling's kernel is larger than its input
_TOO_SMALL = ("Kernel size can't be greater than actual input size", "Output size is too small")


def _patch_too_small(error):
    return any(text in str(error) for text in _TOO_SMALL)


def _needs(encoder):
    """``": it needs patches of at least N voxels"`` where N can be worked out (a chain of
    3-D convolutions, poolings and layers without children, in nested Sequentials), else
    ``""``."""
    if not isinstance(encoder, nn.Sequential):
        return ""
    layers = [m for m in encoder.modules() if not isinstance(m, nn.Sequential)]
    if any(next(layer.children(), None) is not None for layer in layers):
        return ""  # a block of its own: the order of its layers is its forward's
    size = np.ones(3, dtype=np.int64)  # smallest input, per axis, for one output position
    for layer in reversed(layers):
        if not isinstance(layer, nn.Conv3d | nn.MaxPool3d | nn.AvgPool3d):
            continue
        if isinstance(layer.padding, str):  # "same" or "valid" on a convolution
            return ""
        kernel, stride, padding, dilation = (
            np.broadcast_to(np.asarray(getattr(layer, name, 1)), 3)
            for name in ("kernel_size", "stride", "padding", "dilation"))
        size = np.maximum((size - 1) * stride + dilation * (kernel - 1) + 1 - 2 * padding, 1)
    return f": it needs patches of at least {tuple(int(n) for n in size)} voxels"
