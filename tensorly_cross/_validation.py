"""Early argument checks shared by the public functions.

Every message names the argument, what it received and what is allowed.
"""

import numbers
import os
import stat

import numpy as np
import tensorly as tl

from ._backend import all_finite


def check_int(value, name, minimum=None, maximum=None):
    """``value`` as a Python int within ``[minimum, maximum]``; raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}.")
    return value


def check_float(value, name, minimum=None, strict=False):
    """``value`` as a finite Python float, ``> minimum`` if strict else ``>= minimum``."""
    # np.timedelta64 registers as an integer but float() refuses it: max_time=
    # np.timedelta64(5, "s") failed with "float() argument must be ... not 'datetime.timedelta'".
    if isinstance(value, bool | np.timedelta64) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__}).")
    given = value
    try:
        with np.errstate(over="ignore"):  # a long double past float's range: refused below
            value = float(value)
    except OverflowError:  # an int (or Fraction) past float's range, 10**400: not finite
        value = None
    # A long double of 1e400 casts to inf without an OverflowError: refused as too large
    # (it is finite), as an int of 10**400 is, not as the inf the cast made of it.
    if value is None or (value in (float("inf"), float("-inf"))
                         and isinstance(given, np.floating) and np.isfinite(given)):
        raise ValueError(f"{name} must be finite, got a number beyond the range of a float "
                         "(about 1.8e308).")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}.")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        got = value
        # A long double of 1e-400 is 0.0 as a float: shown as given (by str: its format()
        # is the float's), not as the 0.0 that it was not.
        if value == 0 and given != 0:
            got = f"{given!s}, which is 0.0 as a float (below about 4.9e-324)"
        raise ValueError(f"{name} must be {relation} {minimum}, got {got}.")
    return value


# Floating dtypes that no backend's LAPACK takes: half precision and NumPy's long double
# (float128 on x86-64 Linux: numpy.linalg raised "array type float128 is unsupported").
# The 8- and 4-bit floats (float8_e4m3fn, float8_e8m0fnu, float4_e2m1fn, ...) by prefix,
# and PyTorch's complex32: LU failed deep inside on the ones listed one by one before.
_NOT_LAPACK = ("float16", "float96", "float128", "complex32", "complex192", "complex256")
_NOT_LAPACK_PREFIXES = ("float8", "float4")


def check_tall_matrix(matrix, name="matrix"):
    """Shape ``(n, r)`` of a 2-D, finite tensor with ``n >= r``; raise ValueError otherwise."""
    if isinstance(matrix, np.ma.MaskedArray):
        # A NumPy tensor all the same: its rows were chosen by their raw entries, masked
        # or not, and the coefficients came back masked.
        raise TypeError(f"{name} is a masked array; maxvol reads every entry: pass "
                        f"{name}.filled(value).")
    if not tl.is_tensor(matrix):
        raise TypeError(
            f"{name} must be a tensor of the active TensorLy backend ({tl.get_backend()}), "
            f"got {type(matrix).__name__}."
        )
    shape = tuple(tl.shape(matrix))
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D of shape (n, r), got {len(shape)}-D shape {shape}.")
    n_rows, n_cols = shape
    if n_rows < n_cols:
        raise ValueError(
            f"{name} must have at least as many rows as columns (n >= r), got shape {shape}."
        )
    dtype_name = str(getattr(matrix, "dtype", "")).rsplit(".", 1)[-1]
    if dtype_name.endswith(_NOT_LAPACK) or dtype_name.startswith(_NOT_LAPACK_PREFIXES):
        raise TypeError(f"{name} has dtype {matrix.dtype}, which LAPACK does not support; "
                        "cast it to float32 or float64 (complex: complex64 or complex128) "
                        "first.")
    # Objects, strings and dates (ml_dtypes' bfloat16 and float8 are kind "V": numbers).
    if getattr(getattr(matrix, "dtype", None), "kind", "f") in "OUSMm":
        raise TypeError(f"{name} has dtype {matrix.dtype}; maxvol needs numbers (bool, integer, "
                        "real or complex floating point).")
    if not all_finite(matrix):
        raise ValueError(f"{name} holds NaN or infinite entries; maxvol needs finite values.")
    return n_rows, n_cols


def check_random_state(random_state, name="random_state"):
    """A NumPy Generator from None, an int, a RandomState or a Generator (deterministic)."""
    import numpy as np

    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"{name} must be a non-negative int, got {random_state}.")
        return np.random.default_rng(random_state)
    if random_state is None:
        return fresh_generator()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    hint = " (a bool is not a seed)" if isinstance(random_state, bool) else ""
    raise TypeError(
        f"{name} must be None, an int, a numpy RandomState or Generator; "
        f"got {type(random_state).__name__}{hint}."
    )


def fresh_generator():
    """The generator of ``random_state=None``: seeded from the operating system's entropy.
    (The test suite replaces it with a fixed sequence per test, so that CI reproduces.)"""
    import numpy as np

    return np.random.default_rng()


def check_bool(value, name):
    """``value`` as a bool if it is one (NumPy's too); raise TypeError otherwise: ``"no"``
    and other truthy objects are not silently taken for True."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r:.40}.")


def asks_to_stop(answer):
    """A stopping callback's answer as a bool (``tt_cross``'s and ``fit``'s): None and
    bools (NumPy's too) only, so that a callback returning a log or a number by mistake is
    named instead of stopping the run."""
    if answer is None or isinstance(answer, bool | np.bool_):
        return bool(answer)
    raise TypeError(f"callback must return True (stop), False or None; got "
                    f"{type(answer).__name__} {answer!r:.60}.")


def check_choice(value, name, allowed):
    """``value`` if it is one of ``allowed`` (strings); raise ValueError naming the options."""
    # A string first: ``in`` compared a NumPy array elementwise and raised NumPy's "truth
    # value of an array ... is ambiguous", which names neither the argument nor the options.
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(option) for option in allowed)
        raise ValueError(f"{name} must be one of {options}; got {value!r}.")
    return value


def check_no_nul(path, name="path"):
    """Refuse a path holding a NUL character: no file name can, and the OS's own error
    ("embedded null byte") names neither the argument nor the path."""
    if "\0" in os.fsdecode(path):
        raise ValueError(f"{name} {os.fsdecode(path)!r} holds a NUL character, which no "
                         "file name can.")


def check_regular_file(path):
    """Raise unless ``path`` is an existing regular file: reading a FIFO, socket or device
    can block forever or never end.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is not a regular file (a folder, FIFO, socket or device).
    """
    check_no_nul(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"path {path!r} does not exist.") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path!r} is not a regular file (a folder, FIFO, socket or device); "
                         "only regular files are read.")


def outside_stacklevel(*also_inside):
    """The ``stacklevel`` for ``warnings.warn``, called from the function that warns: that
    of the first frame outside this package (and the folders ``also_inside``, e.g.
    torch's), the user's line, whatever the depth of the calls in between.

    Parameters
    ----------
    *also_inside : str
        Folders whose frames are skipped too.

    Returns
    -------
    stacklevel : int
    """
    import os
    import sys

    inside = (os.path.dirname(os.path.abspath(__file__)), *also_inside)
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level
