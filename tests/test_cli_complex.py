"""`tensorly-cross reconstruct` of a complex TT keeps the complex values (the .npy slice) and
shows the modulus in a PNG, saying so (it once wrote the real part: all zero when imaginary).
"""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross
from tensorly_cross import cli


def _complex_tt(path, imaginary_only=False):
    """A complex128 TT of shape (5, 6, 7) saved at ``path``, and its dense tensor."""
    rng = np.random.default_rng(0)
    ranks, shape = (1, 2, 3, 1), (5, 6, 7)
    cores = [rng.standard_normal((ranks[k], n, ranks[k + 1]))
             + 1j * rng.standard_normal((ranks[k], n, ranks[k + 1]))
             for k, n in enumerate(shape)]
    if imaginary_only:
        cores[0] = 1j * cores[0].real
        cores[1:] = [core.real.astype(np.complex128) for core in cores[1:]]
    tensorly_cross.save_tt(path, cores)
    return np.asarray(tl.tt_to_tensor([tl.tensor(core) for core in cores]))


@pytest.mark.parametrize("imaginary_only", [False, True])
def test_the_npy_slice_of_a_complex_tt_keeps_its_complex_values(tmp_path, imaginary_only):
    dense = _complex_tt(str(tmp_path / "c.tt.npz"), imaginary_only)
    output = str(tmp_path / "slice.npy")
    assert cli.main(["reconstruct", str(tmp_path / "c.tt.npz"), "-o", output]) == cli.EXIT_OK
    written = np.load(output)
    assert written.dtype == np.complex128
    np.testing.assert_allclose(written, dense[2], rtol=1e-12, atol=1e-12)
    assert np.abs(written).max() > 0


def test_the_png_of_a_complex_tt_shows_the_modulus_and_says_so(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _complex_tt(str(tmp_path / "c.tt.npz"))
    png = str(tmp_path / "slice.png")
    assert cli.main(["reconstruct", str(tmp_path / "c.tt.npz"), "--png", png]) == cli.EXIT_OK
    assert "modulus" in capsys.readouterr().err
    with open(png, "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"
