"""
Quick start: a tensor train from a few entries
==============================================

``tt_cross`` builds a tensor-train (TT) approximation of a tensor that is never formed:
here a function on a 64^10 grid (1.2e18 entries), of which the cross reads 14,321
(seed 0). The rank is found adaptively (TCI with partial rank-revealing LU); the stop is
the relative error on held-out entries.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
import tensorly as tl

import tensorly_cross as tlc

# A function on a tensor-product grid: f(x) = 1 / (x_1 + ... + x_d) on [1, 2]^10.
grid = np.linspace(1.0, 2.0, 64)
tensor = tlc.FunctionTensor.on_grid(lambda x: 1.0 / x.sum(axis=1), [grid] * 10)

start = time.perf_counter()
tt, info = tlc.tt_cross(tensor, tol=1e-8, random_state=0, return_info=True)
elapsed = time.perf_counter() - start

print(f"tensor of shape {tensor.shape}: {float(tensor.size):.2e} entries")
print(f"TT ranks {tt.rank}, {sum(np.prod(core.shape) for core in tt)} parameters")
print(f"entries evaluated: {info.n_evals} ({info.n_evals / tensor.size:.1e} of the tensor), "
      f"in {info.n_calls} batched calls")
print(f"held-out relative error {info.val_error:.2e} after {info.n_sweeps} sweeps "
      f"(stop: {info.stop_reason}), {elapsed:.2f} s")

# %%
# How the cross went: the held-out error after each sweep, and the TT ranks it found.
figure, (error_axes, rank_axes) = plt.subplots(1, 2, figsize=(9, 3.2))
sweeps = np.arange(1, info.n_sweeps + 1)
error_axes.semilogy(sweeps, info.val_errors, marker="o", label="held-out error")
error_axes.axhline(1e-8, color="gray", linestyle="--", label="tol")
error_axes.set_xticks(sweeps)
error_axes.set_xlabel("sweep")
error_axes.set_ylabel("relative error")
error_axes.legend()
rank_axes.bar(np.arange(1, tensor.ndim), tt.rank[1:-1])
rank_axes.set_xticks(np.arange(1, tensor.ndim))
rank_axes.set_xlabel("bond k (between modes k-1 and k)")
rank_axes.set_ylabel("TT rank r_k")
figure.tight_layout()

# %%
# Check on fresh random entries, never seen by the cross.
rng = np.random.default_rng(1)
points = np.stack([rng.integers(64, size=5000) for _ in range(10)], axis=1)
exact = 1.0 / grid[points].sum(axis=1)
approx = tl.to_numpy(tlc.tt_entries(tt, points))
print(f"error on 5000 fresh entries: {np.linalg.norm(approx - exact) / np.linalg.norm(exact):.2e}")

# The pivoting kernel underneath: maximum-volume rows of a tall matrix.
matrix = tl.tensor(rng.standard_normal((200_000, 24)))
rows, coefficients = tlc.maxvol(matrix, tol=1.05)
print(f"maxvol on {tl.shape(matrix)}: max |B| = {float(tl.max(tl.abs(coefficients))):.3f}")

# %%
# Run as a script, the example saves its figure (the documentation shows it instead).
if "__file__" in globals():
    figure.savefig("quickstart.png", dpi=120)
    print("figure saved to quickstart.png")
    if plt.get_backend().lower() != "agg":  # an interactive session: show it too
        plt.show()
