"""DenseEmbedding: the baseline that applies the same encoder at every position, then pools."""

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .._backend import check_concrete
from .._validation import check_choice
from ..errors import NonFiniteValueError
from ..lazy.base import NAN_BACKGROUND
from .patches import PADDINGS, _pad_index, check_concrete_module, native_byte_order

_TORCH_PADDING = {"reflect": "reflect", "edge": "replicate", "zeros": "constant"}


class DenseEmbedding(nn.Module):
    """Mean over the whole volume of an encoder's features at every position (a dense CNN).

    The encoder's convolutional body (the encoder without its trailing
    ``AdaptiveAvgPool3d``/``Flatten``) runs over the padded volume in one call, so the
    features it averages are those of every patch the encoder would see (with pooling
    inside the encoder, the average of its local features over every voxel).

    Parameters
    ----------
    encoder : nn.Sequential
        A :func:`default_encoder` (or any ``Sequential``, nested ones included, of 3-D
        convolutions with stride 1 and padding 0, of any kernel sizes and dilations, and
        pointwise layers, optionally ending in ``AdaptiveAvgPool3d(1)`` and ``Flatten``),
        with parameters. Padded or strided convolutions and poolings inside are refused:
        run over the whole volume they would not give one position per voxel, nor the
        features the encoder gives a patch.
    padding : {"reflect", "edge", "zeros"}
        As :class:`PatchGrid` pads patches at the borders (``"reflect"`` reflects again and
        again where an axis of the volume is not longer than the border, as PatchGrid does).

    Raises
    ------
    TypeError
        If ``encoder`` is not an ``nn.Sequential``.
    ValueError
        If ``encoder`` has no parameters, or a layer it cannot run over the whole volume
        (a padded or strided convolution, a pooling before the end, a block of layers of its
        own), or ``padding`` is not one of the three.

    Notes
    -----
    It reads every voxel into memory: for the volumes that fit (see
    ``benchmarks/bench_nn_training.py`` for where it stops fitting).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from tensorly_cross.nn import DenseEmbedding, PatchGrid, default_encoder
    >>> encoder = default_encoder(patch_size=3, n_features=2)
    >>> volumes = torch.rand(2, 1, 5, 5, 5)
    >>> features = DenseEmbedding(encoder)(volumes)
    >>> features.shape
    torch.Size([2, 2])
    >>> every_patch = PatchGrid(volumes[0, 0], patch_size=3).patches(list(np.ndindex(5, 5, 5)))
    >>> bool(torch.allclose(features[0], encoder(every_patch).mean(dim=0), atol=1e-6))
    True
    """

    def __init__(self, encoder, padding="reflect"):
        super().__init__()
        check_choice(padding, "padding", PADDINGS)
        if not isinstance(encoder, nn.Sequential):
            raise TypeError(f"encoder must be an nn.Sequential (its layers run over the whole "
                            f"volume), got {type(encoder).__name__}.")
        if next(encoder.parameters(), None) is None:
            raise ValueError("encoder has no parameters: DenseEmbedding takes the device and "
                             "dtype of the volumes from them.")
        self.encoder, self.padding = encoder, padding
        layers = list(encoder)
        while layers and (isinstance(layers[-1], nn.Flatten) or _pools_to_one(layers[-1])):
            layers.pop()
        self._body = layers
        shrink = _body_shrink(layers)
        # As PatchGrid centres a patch: (p - 1) // 2 voxels before it, p // 2 after (an even
        # patch is off-centre), so that the body's output has one position per voxel.
        self.halo = tuple((n // 2, n - n // 2) for n in shrink)  # per axis: before, after
        # nn.functional.pad's order: the last axis first
        self._pad = tuple(side for before_after in reversed(self.halo) for side in before_after)

    def forward(self, volumes, keys=None):
        """Mean features of a batch of volumes, computed in one pass of the encoder's body.

        Parameters
        ----------
        volumes : torch.Tensor of shape (B, 1, D, H, W), or a sequence of volumes
            The batch: 3-D or ``(1, D, H, W)`` volumes of one shape (tensors or arrays,
            moved to the encoder's device and dtype).
        keys : object, optional
            Accepted and ignored (the interface of :class:`CrossEmbedding`).

        Returns
        -------
        features : torch.Tensor of shape (B, F)
            The mean over every voxel of the encoder's features there.

        Raises
        ------
        TypeError
            If ``volumes`` is a single volume or not a batch, or a volume is lazy (not in
            memory), complex, or neither a tensor nor an array.
        ValueError
            If ``volumes`` is empty, a volume or a parameter of the module is on the
            ``meta`` device, or the volumes are not all 3-D (or ``(1, D, H, W)``) of one
            shape.
        NonFiniteValueError
            If a volume holds NaN or inf (named by its place in the batch and its voxel),
            or a value beyond the range of the encoder's dtype (float16: 65504).
        """
        batch = self._batch(volumes)
        features = self._padded(batch)
        for layer in self._body:
            features = layer(features)
        return features.mean(dim=(2, 3, 4))

    def _padded(self, batch):
        """The batch with its border: torch's padding, or, for ``"reflect"`` on an axis not
        longer than its border (torch refuses it), PatchGrid's, which reflects again and
        again (and repeats a single voxel), as CrossEmbedding pads the same volume."""
        size = batch.shape[2:]
        if self.padding == "reflect" and any(max(halo) >= n for halo, n in
                                             zip(self.halo, size, strict=True)):
            for axis, ((before, after), n) in enumerate(zip(self.halo, size, strict=True)):
                index, _ = _pad_index(np.arange(-before, n + after), n, "reflect")
                batch = batch.index_select(2 + axis, torch.as_tensor(index,
                                                                     device=batch.device))
            return batch
        return nn.functional.pad(batch, self._pad, mode=_TORCH_PADDING[self.padding])

    def _batch(self, volumes):
        """The volumes as one ``(B, 1, D, H, W)`` tensor on the encoder's device and dtype."""
        if isinstance(volumes, torch.Tensor | np.ndarray) and volumes.ndim < 4:
            raise TypeError(f"volumes must be a batch, (B, 1, D, H, W) or a sequence of "
                            f"volumes, got one tensor of shape {tuple(volumes.shape)} (pass "
                            "[volume]).")
        if isinstance(volumes, str | bytes) or not isinstance(
                volumes, Sequence | torch.Tensor | np.ndarray):
            raise TypeError(f"volumes must be a tensor of shape (B, 1, D, H, W) or a sequence "
                            f"of volumes, got {type(volumes).__name__}.")
        if len(volumes) == 0:  # torch.stack refused it deep inside
            raise ValueError("volumes is empty: a batch needs at least one volume.")
        check_concrete_module(self, "DenseEmbedding")
        parameter = next(self.encoder.parameters())
        tensors = [_three_dimensional(_as_tensor(v, k), k) for k, v in enumerate(volumes)]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(f"the volumes of a batch must have one shape, got "
                             f"{sorted(shapes)}.")
        batch = torch.stack([t.to(device=parameter.device, dtype=parameter.dtype)
                             for t in tensors])
        _check_finite_volumes(batch, tensors)
        return batch[:, None]


def _pools_to_one(layer):
    """Whether ``layer`` is an ``AdaptiveAvgPool3d`` to one position: the mean the forward pass
    takes itself. One to more positions gives the encoder more features than its channels
    (``AdaptiveAvgPool3d(2)``: 8 per channel); it stays in the body, which refuses it."""
    if not isinstance(layer, nn.AdaptiveAvgPool3d):
        return False
    size = layer.output_size
    return all(n == 1 for n in (size if isinstance(size, tuple | list) else (size,) * 3))


def _three_dimensional(volume, number):
    """The volume as 3-D: a leading channel of size 1 dropped."""
    if volume.ndim == 4 and volume.shape[0] == 1:
        return volume[0]
    if volume.ndim != 3:
        raise ValueError(f"volume {number} of the batch must be 3-D or (1, D, H, W), got "
                         f"shape {tuple(volume.shape)}.")
    return volume


def _check_finite_volumes(batch, volumes):
    """Raise as CrossEmbedding does where a volume holds NaN or inf (the mean would be NaN
    without a word); ``batch`` is ``volumes`` cast to the encoder's dtype. A finite voxel
    beyond that dtype's range (100000.0 for a float16 encoder) was reported as the volume
    holding inf: it is named with its value and the dtype."""
    finite = torch.isfinite(batch)
    if bool(finite.all()):
        return
    number, *voxel = (int(i) for i in torch.nonzero(~finite)[0])
    value = float(batch[(number, *voxel)])
    stored = volumes[number][tuple(voxel)]
    if bool(torch.isfinite(stored)):
        raise NonFiniteValueError(
            f"volume {number} of the batch holds {float(stored)} at voxel {tuple(voxel)}, "
            f"beyond the range of the encoder's dtype {batch.dtype} (largest "
            f"{torch.finfo(batch.dtype).max:.6g}): scale the volumes, or run the encoder in "
            "a wider dtype.", tuple(voxel), value)
    error = NonFiniteValueError(f"volume {number} of the batch holds {value} at voxel "
                                f"{tuple(voxel)}.", tuple(voxel), value)
    if value != value:  # NaN: a masked background, noted as the cross model's reads note it
        error.add_note(NAN_BACKGROUND)
    raise error


def _as_tensor(volume, number):
    """Volume ``number`` of the batch as a real tensor (a complex one, cast to the encoder's
    dtype, lost its imaginary part with only torch's warning; CrossEmbedding refuses it)."""
    if hasattr(volume, "evaluate"):
        raise TypeError("DenseEmbedding needs volumes in memory (tensors or arrays); read "
                        "lazy volumes whole first, e.g. VolumeDataset(..., in_memory=True).")
    check_concrete(volume, f"volumes[{number}]")
    if not isinstance(volume, torch.Tensor):
        array = np.asarray(volume)
        if array.dtype.kind not in "biufc":  # a str, None, objects: torch's message said less
            raise TypeError(f"volume {number} of the batch must be a tensor or an array of "
                            f"numbers, got {type(volume).__name__} of dtype {array.dtype}.")
        array = native_byte_order(array)
        if any(step < 0 for step in array.strides) or not array.flags.writeable:
            # torch refuses negative strides (np.flip, arr[::-1]: a flip augmentation,
            # nibabel's reorientation) and warns on read-only memory (np.load's memmap):
            # a copy, as the batch's stack would make anyway
            array = np.array(array)
        volume = torch.as_tensor(array)
    if volume.is_complex():
        raise TypeError(f"volume {number} of the batch is complex ({volume.dtype}); volumes "
                        "are real: pass its real part or its magnitude (volume.real, "
                        "abs(volume)).")
    return volume


# Layers that mix positions other than as a stride-1 convolution does: run over the whole
# volume, their output has no longer one position per voxel.
_SPATIAL = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
            nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
            nn.modules.pooling._LPPoolNd, nn.modules.conv._ConvTransposeNd, nn.Upsample,
            nn.Flatten, nn.Unflatten, nn.Linear, nn.Conv1d, nn.Conv2d)


def _body_shrink(layers):
    """Voxels the body's stride-1, unpadded 3-D convolutions take off each axis,
    ``sum(dilation * (kernel_size - 1))``: the border that gives one output per voxel.

    Raises
    ------
    ValueError
        For a layer the border cannot account for: a padded or strided convolution (its
        output is not one position per voxel, and in a patch its padding fills other
        values than the volume's neighbours), a pooling, or a block with layers of its own.
    """
    shrink = np.zeros(3, dtype=np.int64)
    for name, layer in _flat(layers, "encoder"):
        if isinstance(layer, nn.Conv3d):
            _check_dense_conv(layer, name)
            shrink += np.asarray(layer.dilation) * (np.asarray(layer.kernel_size) - 1)
        elif isinstance(layer, _SPATIAL) or next(layer.children(), None) is not None:
            raise ValueError(
                f"{name} ({layer!r}) cannot run over the whole volume: "
                "DenseEmbedding takes 3-D convolutions with stride 1 and no padding, and "
                "pointwise layers (activations, normalisations), optionally followed by "
                "AdaptiveAvgPool3d(1) and Flatten at the end.")
    return tuple(int(n) for n in shrink)


def _flat(layers, name):
    """``(name, layer)`` for each layer, nested Sequentials opened (they run in order):
    ``encoder[1][0]`` is layer 0 of the Sequential at ``encoder[1]``."""
    for number, layer in enumerate(layers):
        if isinstance(layer, nn.Sequential):
            yield from _flat(layer, f"{name}[{number}]")
        else:
            yield f"{name}[{number}]", layer


def _check_dense_conv(conv, name):
    """A convolution whose output over the volume has one position per voxel of its
    input less its kernel's reach: stride 1, no padding."""
    unpadded = conv.padding == "valid" or (not isinstance(conv.padding, str)
                                           and not any(conv.padding))
    if tuple(conv.stride) != (1, 1, 1) or not unpadded:
        raise ValueError(
            f"{name} ({conv!r}) has stride {tuple(conv.stride)} and padding "
            f"{conv.padding!r}: DenseEmbedding takes convolutions with stride 1 and padding 0 "
            "(it pads the volume itself, with its padding argument, so that the features at "
            "every voxel are those of the patch centred there).")
