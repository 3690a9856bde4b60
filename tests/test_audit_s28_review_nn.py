"""Review of audit 28's changes to the encoder module (tensorly_cross.nn).

* PatchGrid kept the gradient history of whatever a lazy volume's ``evaluate`` returned,
  while EncodedTensor cut afresh (never from its patch cache) only the volumes that
  ``_requires_grad`` recognises (a tensor, a lazy view of one, a TT). A callable volume
  whose values depend on a learnable tensor (``lazy_tensor(lambda idx: w * x[idx])``) then
  got a gradient from the patches the cache happened not to hold: ``w.grad`` depended on
  ``patch_cache_bytes`` (a value with ``patch_cache_bytes=0``, None with the default),
  where it was None whatever the budget before. The history is now kept for the volumes
  EncodedTensor cuts afresh, so the two agree.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tl = pytest.importorskip("tensorly")

import tensorly_cross as tlc  # noqa: E402
from tensorly_cross.nn import CrossEmbedding, default_encoder  # noqa: E402


def _callable_volume_gradient(patch_cache_bytes):
    torch.manual_seed(0)
    x = torch.rand(8, 8, 8)
    weight = torch.tensor(2.0, requires_grad=True)

    def values(indices):
        index = torch.as_tensor(np.asarray(indices))
        return weight * x[index[:, 0], index[:, 1], index[:, 2]]

    model = CrossEmbedding(default_encoder(3, 2), patch_size=3, n_features=2, rank=3,
                           n_outputs=2, patch_cache_bytes=patch_cache_bytes)
    with tl.backend_context("pytorch"):
        model([tlc.lazy_tensor(values, shape=(8, 8, 8))]).sum().backward()
    return weight.grad


def test_the_gradient_of_a_callable_volume_does_not_depend_on_the_patch_cache():
    without_cache, with_cache = _callable_volume_gradient(0), _callable_volume_gradient(2**20)
    if with_cache is None:
        assert without_cache is None
    else:
        torch.testing.assert_close(without_cache, with_cache)
