"""Audit (session 29) of the differentiable cross (``tt_cross(..., differentiable=True)``,
``cross_interpolate``, the drop-in) and the TT evaluation helpers, with real autograd."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc


def _field(torch):
    rng = np.random.default_rng(0)
    return torch.tensor(rng.standard_normal((6, 5, 7)))


@pytest.mark.parametrize("backend", ["pytorch", "numpy"])
@pytest.mark.parametrize("fill_nan", [None, 0.0])
def test_an_opened_tensor_that_requires_grad_is_refused_where_its_gradient_is_lost(
        backend, fill_nan):
    """``open_volume(x)`` of a PyTorch tensor that requires grad reads it chunk by chunk,
    detached on the host. ``tt_cross(..., differentiable=True)``, ``cross_interpolate`` and
    the drop-in returned a TT without gradient (under PyTorch too), without a word, where
    ``x`` itself or ``lazy_tensor(x)`` carries it."""
    torch = pytest.importorskip("torch")
    volume = _field(torch).requires_grad_(True)
    with tl.backend_context(backend):
        opened = tlc.open_volume(volume, fill_nan=fill_nan)
        for wrapped in (opened, tlc.TransposedTensor(opened, (2, 0, 1))):
            with pytest.raises(ValueError, match="reads it detached"):
                tlc.tt_cross(wrapped, rank=2, method="als", random_state=0,
                             differentiable=True)
            with pytest.raises(ValueError, match="reads it detached"):
                tlc.tensor_train_cross(wrapped, rank=2, random_state=0)
            indices = tlc.select_indices(wrapped, rank=2, method="als", random_state=0)
            with pytest.raises(ValueError, match="reads it detached"):
                tlc.cross_interpolate(wrapped, indices)
        # Without gradient asked for, the opened tensor is read as before.
        tt = tlc.tt_cross(opened, rank=2, method="als", random_state=0)
        assert not any(getattr(core, "requires_grad", False) for core in tt.factors)
