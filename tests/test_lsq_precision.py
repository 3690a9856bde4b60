"""The least-squares refinement of single-precision data, fitted in double precision."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross._backend import narrowed, widened

SHAPE = (16, 17, 18, 19)


def _smooth():
    x = [np.linspace(0, 1, n) for n in SHAPE]
    return 1.0 / (1.0 + x[0][:, None, None, None] + x[1][None, :, None, None] ** 2
                  + x[2][None, None, :, None] + 2 * x[3][None, None, None, :])


def _error(tt, reference):
    dense = tl.to_numpy(tl.tt_to_tensor(tt)).astype(np.complex128)
    return np.linalg.norm(dense - reference) / np.linalg.norm(reference)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
def test_single_precision_reaches_its_tolerance(dtype):
    """Normal equations in float32 stalled this array at 3.4e-4 at every tol from 1e-4 to
    1e-6 (the float64 array: 6.3e-7 at 1e-6); in float64 they follow float64's fit."""
    reference = _smooth().astype(dtype)
    reference = reference * (1 + 1j) if np.iscomplexobj(reference) else reference
    tt = tlc.tt_cross(reference, tol=1e-6, method="lsq", random_state=0)
    assert tt.factors[0].dtype == dtype  # the cores keep the data's dtype
    assert _error(tt, reference.astype(np.complex128)) < 5e-6


def test_single_precision_on_pytorch(pytorch_backend):
    import torch

    reference = _smooth()
    tt = tlc.tt_cross(torch.tensor(reference, dtype=torch.float32), tol=1e-6, method="lsq",
                      random_state=0)
    assert tt.factors[0].dtype == torch.float32
    assert _error(tt, reference) < 5e-6


def test_widened_and_narrowed_round_trip_every_dtype():
    for dtype, wide in [(np.float32, np.float64), (np.float64, np.float64),
                        (np.complex64, np.complex128)]:
        tensor = np.ones(3, dtype=dtype)
        assert widened(tensor).dtype == wide
        assert narrowed(widened(tensor), tensor).dtype == dtype
