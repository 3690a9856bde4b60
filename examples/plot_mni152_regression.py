"""
Learning from real volumes: grey-matter fraction of MNI152 crops
================================================================

Crops of nilearn's MNI152 template (shipped with nilearn: nothing is downloaded), each with
a random rotation, scale, intensity change, bias field and noise; the target is the crop's
grey-matter fraction (:func:`tensorly_cross.nn.mni152_crops`).

The cross model is the paper's pipeline: a small CNN encodes patches that tile the volume
(``default_encoder(pooled=True)`` with ``stride = patch_size - 2``), a block TT-cross of the
feature field reads only the tiles it needs, the TT cores are rebuilt with gradient, and TT
probes turn the TT into features for a linear readout. The dense model applies the same
encoder at every voxel and averages. Both train with the same recipe
(:mod:`tensorly_cross.nn.training`); a third baseline predicts the training mean.

This page runs a small version (32^3 crops, so that the documentation builds quickly);
``TLC_EXAMPLE_SIZE=64 TLC_EXAMPLE_EPOCHS=15`` runs it at the benchmark's crop size and
epochs, still on 32 crops at rank 4 (the benchmark's cross model trains on 30 of 40 crops
at rank 8), and ``benchmarks/bench_nn_training.py`` makes the full table (see
:doc:`/pipeline`). Run as a script,
it saves its figures (``TLC_EXAMPLE_FIGURES``, default: the current directory).
"""

import os
import sys
import time

import matplotlib.pyplot as plt
import numpy as np
import tensorly as tl
import torch

from tensorly_cross.nn import CrossEmbedding, default_encoder, mni152_crops
from tensorly_cross.nn.dense import DenseEmbedding
from tensorly_cross.nn.training import Regressor, fit, predict, rmse

tl.set_backend("pytorch")
SIZE = int(os.environ.get("TLC_EXAMPLE_SIZE", "32"))
EPOCHS = int(os.environ.get("TLC_EXAMPLE_EPOCHS", "10"))
# sphinx-gallery runs this file as __main__ too, and keeps the figures itself.
SAVE_FIGURES = __name__ == "__main__" and "sphinx_gallery" not in sys.modules

data = mni152_crops(32, SIZE, seed=0)
train, test = data.subset(range(24)), data.subset(range(24, 32))

figure, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for number, axis in enumerate(axes):
    axis.imshow(np.asarray(data.volume(number))[SIZE // 2], cmap="gray")
    axis.set_title(f"grey matter {float(data.targets[number]):.2f}")
    axis.axis("off")
figure.tight_layout()
if SAVE_FIGURES:
    figure.savefig(os.path.join(os.environ.get("TLC_EXAMPLE_FIGURES", "."), "mni152_crops.png"))

###############################################################################
# The cross model: tiles of 4^3 voxels (6^3 patches with their halo), a rank-4 TT of
# the tiles' 8 features; each training volume's indices are searched every third epoch
# (``refresh_every``), its tiles read once and kept.

torch.manual_seed(0)
cross = Regressor(CrossEmbedding(default_encoder(6, 8, pooled=True), patch_size=6, stride=4,
                                 n_features=8, rank=4, layout="tt", n_iter_max=2,
                                 refresh_every=3, n_outputs=8, volume_shape=(SIZE,) * 3), 8)
cross_log = fit(cross, train, epochs=EPOCHS, test=test)

###############################################################################
# The dense model: the same encoder architecture at every voxel, mean-pooled.

torch.manual_seed(0)
dense = Regressor(DenseEmbedding(default_encoder(6, 8, pooled=True)), 8)
dense_log = fit(dense, train, epochs=EPOCHS, test=test)

mean_rmse = float((test.targets - train.targets.mean()).pow(2).mean().sqrt())
counters = cross.embedding.counters
print(f"{SIZE}^3 crops, {len(train)} training / {len(test)} test, {EPOCHS} epochs")
print(f"predict the training mean : test RMSE {mean_rmse:.4f}")
print(f"dense encoder             : test RMSE {rmse(dense, test):.4f}, "
      f"{dense_log.total_seconds:.1f} s")
print(f"cross model               : test RMSE {rmse(cross, test):.4f}, "
      f"{cross_log.total_seconds:.1f} s, "
      f"{counters['encoder_calls'] / max(counters['forward_calls'], 1):.1f} encoder calls "
      "per pass")

###############################################################################
# Test error after each epoch, and the final predictions.

start = time.perf_counter()
figure, (curves, scatter) = plt.subplots(1, 2, figsize=(10, 4))
epochs = np.arange(1, EPOCHS + 1)
curves.plot(epochs, cross_log.test_rmse, "o-", label="cross")
curves.plot(epochs, dense_log.test_rmse, "s-", label="dense")
curves.axhline(mean_rmse, color="gray", linestyle=":", label="training mean")
curves.set(xlabel="epoch", ylabel="test RMSE", title="grey-matter fraction")
curves.legend()
truth = test.targets.numpy()
scatter.plot(truth, predict(cross, test).numpy(), "o", label="cross")
scatter.plot(truth, predict(dense, test).numpy(), "s", label="dense")
scatter.plot([truth.min(), truth.max()], [truth.min(), truth.max()], "k:")
scatter.set(xlabel="true", ylabel="predicted")
scatter.legend()
figure.tight_layout()
if SAVE_FIGURES:
    figure.savefig(os.path.join(os.environ.get("TLC_EXAMPLE_FIGURES", "."),
                                "mni152_training.png"))
plt.show()
