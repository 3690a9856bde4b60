"""
Quick start: a tensor train from a few entries
==============================================

``tt_cross`` builds a tensor-train (TT) approximation of a tensor that is never formed:
here a function on a 64^10 grid (1.2e18 entries), of which the cross reads a few
thousand. The rank is found adaptively (TCI with partial rank-revealing LU); the stop is
the relative error on held-out entries.
"""

import time

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
