"""Eigen-decomposition and polar factor whose backward passes stay finite where their
usual ones divide by a near-zero gap: the differentiable refit of
:class:`~tensorly_cross.nn.TTPCAHead` (``gradient_through_fit=True``)."""

import torch

# The eigenvectors' backward damps 1 / gap to gap / (gap^2 + b^2), b this fraction of the
# largest eigenvalue: a near-degenerate pair's basis is arbitrary (the alignment removes
# it), and an undamped 1 / gap grows without bound as two eigenvalues meet.
EIGEN_GAP_DAMPING = 1e-4


class DampedEigh(torch.autograd.Function):
    """``torch.linalg.eigh`` of a symmetric matrix, whose backward damps ``1 / gap``."""

    @staticmethod
    def forward(ctx, matrix):
        values, vectors = torch.linalg.eigh(matrix)
        ctx.save_for_backward(values, vectors)
        return values, vectors

    @staticmethod
    def backward(ctx, grad_values, grad_vectors):
        values, vectors = ctx.saved_tensors
        gaps = values[None, :] - values[:, None]  # lambda_j - lambda_i
        damping = (EIGEN_GAP_DAMPING * values.abs().max()) ** 2 + torch.finfo(
            values.dtype).tiny
        inner = torch.diag(grad_values) + gaps / (gaps**2 + damping) * (
            vectors.T @ grad_vectors)
        grad = vectors @ inner @ vectors.T
        return (grad + grad.T) / 2


class PolarFactor(torch.autograd.Function):
    """The orthogonal polar factor ``U V^T`` of ``M = U S V^T`` (the Procrustes rotation),
    whose backward divides by sums of singular values ``s_i + s_j``, never by their
    differences as the backward of an SVD does."""

    @staticmethod
    def forward(ctx, matrix):
        left, values, right_t = torch.linalg.svd(matrix)
        ctx.save_for_backward(left, values, right_t)
        return left @ right_t

    @staticmethod
    def backward(ctx, grad):
        left, values, right_t = ctx.saved_tensors
        sums = values[:, None] + values[None, :]
        sums = sums.clamp_min(torch.finfo(sums.dtype).eps * float(sums.max()) + torch.finfo(
            sums.dtype).tiny)
        rotated = left.T @ grad @ right_t.T
        return left @ ((rotated - rotated.T) / sums) @ right_t
