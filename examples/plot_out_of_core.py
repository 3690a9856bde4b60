"""
Out of core: a volume on disk, read a few pages at a time
=========================================================

A ``.npy`` volume is read page by page (4 KiB) and only where the cross asks. A page holds a
run of the file's contiguous (last) axis, so which pages a sweep touches depends on the TT's
mode order and on its index sets: here the same rank-8 ALS cross (``method="als"``; on
stored data ``method="auto"`` runs the least-squares cross, whose oversampled fibers the
mode order helps less) reads the volume in its own order, with the contiguous axis as the
middle TT mode (``TransposedTensor``), and with the outer fibers kept in 4 slices
(``max_slices=4``). The volume (a sum of 8 separable blobs)
has TT rank 8 in every mode order, so each cross meets its tolerance within two sweeps (one
in the transposed order); they differ in the pages they read. Some of those pages hold the
cross's held-out voxels, read wherever they fall. On the 1024^3 benchmark phantom the
sliced, transposed cross reads 1-2% of the file at ranks 8-32 (see :doc:`/choosing` and the
benchmarks page).
"""

import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import tensorly as tl

import tensorly_cross as tlc

# A smooth procedural volume: 8 Gaussian blobs, each the product of one profile per axis,
# so that a slice is one small matrix product and the 256 MiB file is written in seconds.
# Rows of 1024 float32 are one 4 KiB page each.
shape = (256, 256, 1024)
rng = np.random.default_rng(0)
centres, widths = rng.uniform(0.2, 0.8, (8, 3)), rng.uniform(0.05, 0.2, (8, 3))
weights = rng.uniform(0.3, 1.0, 8)
profiles = [np.exp(-0.5 * ((np.linspace(0.0, 1.0, n) - centres[:, [axis]])
                           / widths[:, [axis]]) ** 2) for axis, n in enumerate(shape)]


def function(indices):
    """The volume's values at (m, 3) multi-indices."""
    x, y, z = (profiles[axis][:, indices[:, axis]] for axis in range(3))
    return np.einsum("b,bm,bm,bm->m", weights, x, y, z)


folder = tempfile.mkdtemp()
path = os.path.join(folder, "blobs.npy")
volume = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
for i in range(shape[0]):
    volume[i] = (profiles[1] * (weights * profiles[0][:, i])[:, None]).T @ profiles[2]
volume.flush()
del volume
n_pages = os.path.getsize(path) / 4096

rng = np.random.default_rng(1)
test = np.stack([rng.integers(n, size=5000) for n in shape], axis=1)
exact = function(test)

runs = {"volume order": (None, {}), "order (x, z, y)": ((0, 2, 1), {}),
        "order (x, z, y), 4 slices": ((0, 2, 1), {"max_slices": 4})}
for name, (axes, options) in runs.items():
    lazy = tlc.open_volume(path)
    target = tlc.TransposedTensor(lazy, axes) if axes else lazy
    tt = tlc.tt_cross(target, rank=8, tol=1e-4, method="als", random_state=0, **options)
    query = target.from_original(test) if axes else test
    error = np.linalg.norm(tl.to_numpy(tlc.tt_entries(tt, query)) - exact) / np.linalg.norm(exact)
    print(f"{name:27s} pages read {lazy.pages_read:6d} ({lazy.pages_read / n_pages:5.1%} of the "
          f"file), error on fresh voxels {error:.1e}")

# The last TT (transposed order), one slice along the volume's first axis, against the file.
index = shape[0] // 2
plane = np.stack(np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij"), -1)
plane = np.insert(plane.reshape(-1, 2), 0, index, axis=1)
approx = tl.to_numpy(tlc.tt_entries(tt, target.from_original(plane))).reshape(shape[1:])
original = np.load(path, mmap_mode="r")[index]
figure, axes_ = plt.subplots(1, 3, figsize=(13, 3.4))
low, high = float(original.min()), float(original.max())
panels = [("file", original, "gray", (low, high)), ("TT", approx, "gray", (low, high)),
          ("|TT - file|", np.abs(approx - original), "magma", (None, None))]
for ax, (title, image, cmap, (vmin, vmax)) in zip(axes_, panels, strict=True):
    shown = ax.imshow(image, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    figure.colorbar(shown, ax=ax)
    ax.set_title(f"{title}, x = {index}")
    ax.set_xlabel("z (contiguous axis)")
    ax.set_ylabel("y")
figure.tight_layout()
os.remove(path)
os.rmdir(folder)

# %%
# Run as a script, the example saves its figure (the documentation shows it instead).
if "__file__" in globals():
    figure.savefig("out_of_core.png", dpi=120)
    print("figure saved to out_of_core.png")
    if plt.get_backend().lower() != "agg":  # an interactive session: show it too
        plt.show()
