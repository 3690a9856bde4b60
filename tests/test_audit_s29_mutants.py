"""Mutation audit 29: tests that kill hand-made mutants of ``nn/dense.py``,
``nn/mni152.py``, ``cli/compress.py``, ``stream/``, ``lazy/worker_groups.py``,
``lazy/dask.py``, ``cross/refine.py`` (and the refine step after ``max_time``) and
``Validation.warn_if_unseen`` that the earlier tests let through.

Each test names the mutant it kills; each asserts documented behaviour.
"""

import numpy as np
import pytest

# -- nn/dense.py ---------------------------------------------------------------------------


def test_the_dense_baseline_reads_a_boolean_mask_as_its_zeros_and_ones():
    # Mutant: ``_as_tensor`` refuses dtype kind "b" (a mask), which PatchGrid and
    # CrossEmbedding take as 0/1 ("patches need bool, integer or real").
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import DenseEmbedding, default_encoder

    torch.manual_seed(0)
    embedding = DenseEmbedding(default_encoder(patch_size=3, n_features=2))
    mask = np.random.default_rng(0).random((5, 5, 5)) > 0.5
    with torch.no_grad():
        torch.testing.assert_close(embedding([mask]), embedding([mask.astype(np.float32)]))


def test_the_dense_baseline_refuses_a_block_of_layers_of_its_own():
    # Mutant: a layer with children of its own (a custom block holding a convolution) is
    # run as if pointwise: the border leaves out its kernel, and the mean is taken over
    # fewer positions than voxels without a word.
    pytest.importorskip("torch")
    from torch import nn

    from tensorly_cross.nn import DenseEmbedding

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 2, 3)

        def forward(self, x):
            return self.conv(x)

    encoder = nn.Sequential(Block(), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten())
    with pytest.raises(ValueError, match=r"(?s)encoder\[0\].*cannot run over the whole volume"):
        DenseEmbedding(encoder)
