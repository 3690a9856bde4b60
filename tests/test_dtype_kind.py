"""``dtype_kind``: NumPy's kind letter of any backend's dtype, the same on every path."""

import numpy as np
import pytest

from tensorly_cross._backend import dtype_kind

NUMPY_DTYPES = ["bool", "int8", "uint16", "int64", "float16", "float32", "float64",
                "complex64", "complex128", "object", "U3", "S2", "datetime64[s]",
                "timedelta64[ms]", "V8"]


@pytest.mark.parametrize("name", NUMPY_DTYPES)
def test_numpy_arrays_give_their_dtype_kind(name):
    assert dtype_kind(np.zeros(2, dtype=name)) == np.dtype(name).kind


@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn"])
def test_ml_dtypes_floats_are_floating_not_void(name):
    # ml_dtypes (JAX's) registers these with NumPy as kind "V": NumPy dtypes, not NumPy's
    # float kind. The fast path for NumPy dtypes must not report them as void.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert dtype_kind(np.zeros(2, dtype=getattr(ml_dtypes, name))) == "f"


def test_torch_dtypes():
    torch = pytest.importorskip("torch")
    kinds = {torch.bfloat16: "f", torch.float32: "f", torch.int64: "i", torch.uint8: "u",
             torch.bool: "b", torch.complex64: "c"}
    for dtype, kind in kinds.items():
        assert dtype_kind(torch.zeros(2, dtype=dtype)) == kind
