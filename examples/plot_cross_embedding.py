"""
Training an encoder through cross approximation
===============================================

A small 3D CNN encodes patches of a volume into ``F`` features; ``CrossEmbedding`` builds a
rank-``r`` TT of that feature field from the few patches that the cross picks (indices chosen
without gradient, cores rebuilt with gradient), and TT probes turn the TT into fixed-size,
gauge-invariant features. Gradients reach the encoder through the sampled patches only.

Task: count the Gaussian blobs in procedural volumes. Baseline: the same encoder applied
densely at every voxel, then averaged. Sizes are tiny so that this runs in CI; set
``TLC_EXAMPLE_SIZE=48`` (or more) for a longer run.
"""

import os
import time

import numpy as np
import tensorly as tl
import torch

from tensorly_cross.nn import CrossEmbedding, default_encoder

tl.set_backend("pytorch")
torch.manual_seed(0)
SIZE = int(os.environ.get("TLC_EXAMPLE_SIZE", "20"))
EPOCHS = int(os.environ.get("TLC_EXAMPLE_EPOCHS", "12"))


def make_volume(rng, size):
    count = int(rng.integers(1, 5))
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, size)] * 3, indexing="ij"), -1)
    volume = 0.05 * rng.standard_normal((size,) * 3)
    for centre in rng.uniform(0.2, 0.8, size=(count, 3)):
        volume += np.exp(-np.sum((grid - centre) ** 2, axis=-1) / (2 * 0.08**2))
    return torch.as_tensor(volume, dtype=torch.float32).unsqueeze(0), float(count)


rng = np.random.default_rng(0)
data = [make_volume(rng, SIZE) for _ in range(32)]
train, test = data[:24], data[24:]


def fit(model, readout, forward, epochs=EPOCHS):
    parameters = [*model.parameters(), *readout.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=3e-2)
    for _ in range(epochs):
        for start in range(0, len(train), 8):
            batch = train[start : start + 8]
            volumes = [v for v, _ in batch]
            targets = torch.tensor([t for _, t in batch])
            optimiser.zero_grad()
            loss = torch.mean((readout(forward(volumes, start)).squeeze(1) - targets) ** 2)
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        prediction = readout(forward([v for v, _ in test], None)).squeeze(1)
    return float(torch.mean((prediction - torch.tensor([t for _, t in test])) ** 2))


# Cross: indices of each training volume reused for 3 steps (keyed by its position).
cross = CrossEmbedding(patch_size=5, n_features=4, rank=3, n_outputs=8, refresh_every=3)
cross_readout = torch.nn.Linear(8, 1)
cross([train[0][0]])  # builds the probe head


def cross_forward(volumes, start):
    keys = None if start is None else range(start, start + len(volumes))
    return cross(volumes, keys=keys)


begin = time.perf_counter()
cross_mse = fit(cross, cross_readout, cross_forward)
cross_seconds = time.perf_counter() - begin
_, encoded = cross.tt(test[0][0])
cross_patches = encoded.n_encoded

# Dense baseline: the same encoder as a convolution over the whole (padded) volume.
dense_encoder = default_encoder(5, 4)
dense_readout = torch.nn.Linear(4, 1)


def dense_forward(volumes, start):
    batch = torch.nn.functional.pad(torch.stack(volumes), (2,) * 6, mode="reflect")
    return dense_encoder[:-1](batch).mean(dim=(2, 3, 4))


begin = time.perf_counter()
dense_mse = fit(dense_encoder, dense_readout, dense_forward)
dense_seconds = time.perf_counter() - begin

print(f"volumes {SIZE}^3, {EPOCHS} epochs, target: number of blobs (1-4)")
print(f"cross (rank 3, 4 features): test MSE {cross_mse:.3f}, {cross_patches} patches "
      f"encoded per volume (index search + differentiable pass), {cross_seconds:.1f} s")
print(f"dense baseline            : test MSE {dense_mse:.3f}, {SIZE**3} patches per volume, "
      f"{dense_seconds:.1f} s")
