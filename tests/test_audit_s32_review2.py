"""Audit s32 (second review): defects in this session's latest fixes, and next to them.

* ``Regressor.set_target_scale`` took targets that require grad (ages computed from a
  tensor in a graph) as they were: its buffers joined their graph (``CopyBackwards``), so
  the second training step failed with torch's "Trying to backward through the graph a
  second time" and ``copy.deepcopy(model)`` with "Only Tensors created explicitly by the
  user (graph leaves)". Targets are data: they are detached, as ``VolumeDataset`` does.
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.nn import CrossEmbedding  # noqa: E402
from tensorly_cross.nn.training import Regressor  # noqa: E402


def test_set_target_scale_takes_targets_that_require_grad_as_data():
    model = Regressor(CrossEmbedding(n_outputs=2), 2)
    ages = torch.tensor([30.0, 40.0, 50.0], requires_grad=True)
    model.set_target_scale(ages * 1.0)  # a tensor of a graph
    assert model.target_mean.grad_fn is None and not model.target_mean.requires_grad
    assert model.target_scale.grad_fn is None and not model.target_scale.requires_grad
    assert model.target_mean.tolist() == [40.0]
    assert model.target_scale.tolist() == pytest.approx([10.0])
    copied = copy.deepcopy(model)  # refused for buffers in a graph
    assert copied.target_mean.tolist() == [40.0]
    assert ages.grad is None


def test_set_target_scale_refuses_targets_whose_statistics_overflow_the_buffers():
    # Before: finite float64 targets beyond float32 gave a mean and a scale of inf in the
    # float32 buffers, and so every prediction.
    model = Regressor(CrossEmbedding(n_outputs=2), 2)
    with pytest.raises(ValueError, match="overflows torch.float32"):
        model.set_target_scale(np.array([1e39, 3e39]))
    assert model.target_mean.tolist() == [0.0] and model.target_scale.tolist() == [1.0]
    model.double().set_target_scale(np.array([1e39, 3e39]))  # a float64 model holds them
    assert model.target_mean.tolist() == [2e39]
