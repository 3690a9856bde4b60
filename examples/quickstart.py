"""
Quick start: maximum-volume rows of a tall matrix
=================================================

``maxvol`` picks the ``r`` rows of an ``(n, r)`` matrix whose square submatrix has
(locally) maximal volume; every row of the matrix is then a combination of those rows
with coefficients of modulus at most ``tol``. This is the pivoting kernel of every
cross approximation in tensorly-cross.
"""

import time

import numpy as np
import tensorly as tl

import tensorly_cross as tlc

rng = np.random.default_rng(0)
matrix = tl.tensor(rng.standard_normal((200_000, 24)))

start = time.perf_counter()
rows, coefficients = tlc.maxvol(matrix, tol=1.05)
elapsed = time.perf_counter() - start

print(f"maxvol on a {tl.shape(matrix)} matrix: {elapsed * 1e3:.1f} ms")
print(f"rows: {rows[:8]} ...")
print(f"max |B| = {float(tl.max(tl.abs(coefficients))):.4f} (<= 1.05)")
residual = tl.norm(matrix - tl.dot(coefficients, matrix[rows])) / tl.norm(matrix)
print(f"relative residual |A - B A[rows]| / |A| = {float(residual):.2e}")

rect_rows, rect_coefficients = tlc.rect_maxvol(matrix, tol=1.1)
longest = float(tl.max(tl.sqrt(tl.sum(tl.abs(rect_coefficients) ** 2, axis=1))))
print(f"rect_maxvol: {len(rect_rows)} rows, longest coefficient row {longest:.4f} (<= 1.1)")
