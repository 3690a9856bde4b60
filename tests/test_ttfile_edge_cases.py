"""Tests of TT files: save_tt, load_tt and the checks of the file format."""

import os
import stat

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import TTFileError, load_tt, save_tt, ttfile

from ._helpers_shared import _jax, _masked_cores, _run_child, _torch

# A small rank-2 tensor, its complex companion, and the TT cores of a complex TT.
_RNG = np.random.default_rng(13)


CORE_SHAPES = [(1, 2, 2), (2, 3, 2), (2, 2, 1)]


COMPLEX_CORES = [_RNG.standard_normal(s) + 1j * _RNG.standard_normal(s) for s in CORE_SHAPES]


def _saved_and_loaded(tmp_path, cores):
    """``cores`` written with save_tt under the active backend, read back under NumPy."""
    path = tlc.save_tt(tmp_path / "tt.npz", cores)
    with tl.backend_context("numpy"):
        return tlc.load_tt(path)[0]


# PyTorch's lazy views: the negative bit ------------------------------------------------


@pytest.mark.parametrize("name", ["numpy", "pytorch"])
def test_save_tt_reads_torch_cores_with_the_negative_bit(tmp_path, name):
    """``c.conj().imag`` is a view with the negative bit set, which ``.numpy()`` refused."""
    torch = _torch()
    cores = [torch.tensor(core).conj().imag for core in COMPLEX_CORES]
    assert cores[0].is_neg()  # the kind of view this test is about
    with tl.backend_context(name):
        loaded = _saved_and_loaded(tmp_path, cores)
    for core, expected in zip(loaded, COMPLEX_CORES, strict=True):
        np.testing.assert_array_equal(core, -expected.imag)


# Tensors of another backend ------------------------------------------------------------


def test_save_tt_of_jax_cores_under_pytorch_jax(tmp_path):
    """Under PyTorch every tensor went down the torch path: a JAX core has no .detach()."""
    _torch()
    _jax()
    import jax.numpy as jnp

    cores = [jnp.asarray(core.real) for core in COMPLEX_CORES]
    with tl.backend_context("pytorch"):
        loaded = _saved_and_loaded(tmp_path, cores)
    for core, expected in zip(loaded, COMPLEX_CORES, strict=True):
        np.testing.assert_array_equal(core, expected.real)


def test_save_tt_of_a_torch_subclass_that_requires_grad_under_numpy(tmp_path):
    """A subclass of torch.Tensor defined outside torch was told from other tensors by its
    module name, and NumPy's to_numpy refused it for requiring grad."""
    torch = _torch()

    class Tagged(torch.Tensor):
        pass

    cores = [torch.tensor(core.real).as_subclass(Tagged).requires_grad_()
             for core in COMPLEX_CORES]
    with tl.backend_context("numpy"):
        loaded = _saved_and_loaded(tmp_path, cores)
    for core, expected in zip(loaded, COMPLEX_CORES, strict=True):
        np.testing.assert_array_equal(core, expected.real)


def test_save_tt_syncs_the_file_before_publishing_it(tmp_path, monkeypatch):
    # Without fsync before the rename/link, a power loss can publish an empty file under
    # the name: the old file is gone and the new one was never on disk.
    from tensorly_cross import ttfile

    events = []
    real_fsync, real_publish = os.fsync, ttfile._publish
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(ttfile, "_publish",
                        lambda *args: (events.append("publish"), real_publish(*args)))
    tlc.save_tt(tmp_path / "a.tt.npz", [np.ones((1, 3, 1))])
    assert "publish" in events and "fsync" in events[: events.index("publish")]
    tt, _ = tlc.load_tt(tmp_path / "a.tt.npz")
    assert tt.rank == (1, 1)


def _rewrite_headers(data, local_offset, central_offset, value, mask=None):
    """``data`` with a 2-byte field of every zip header set (or, with mask, or-ed)."""
    data = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        start = data.find(signature)
        while start != -1:
            old = int.from_bytes(data[start + offset : start + offset + 2], "little")
            new = old | value if mask else value
            data[start + offset : start + offset + 2] = new.to_bytes(2, "little")
            start = data.find(signature, start + 4)
    return bytes(data)


@pytest.mark.parametrize("what, fields, match", [
    ("encrypted", (6, 8, 0x1, True), "is encrypted"),
    ("deflate64", (8, 10, 9, False), "compressed with zip method 9"),
    ("unknown", (8, 10, 99, False), "compressed with zip method 99"),
])
def test_an_unreadable_zip_member_is_a_tt_file_error_naming_the_file(tmp_path, what, fields,
                                                                     match):
    # zipfile raised RuntimeError ("password required") or NotImplementedError, which
    # load_tt let through without naming the file.
    path = tlc.save_tt(tmp_path / "base.tt.npz", [np.ones((1, 3, 1))])
    forged = tmp_path / f"{what}.tt.npz"
    with open(path, "rb") as stream:
        forged.write_bytes(_rewrite_headers(stream.read(), *fields))
    with pytest.raises(tlc.TTFileError, match=rf"{what}\.tt\.npz.*{match}"):
        tlc.load_tt(forged)


# --- 2. a TT file that cannot be read -----------------------------------------------------


@pytest.mark.skipif(not os.path.isfile("/proc/self/mem"), reason="Linux /proc only")
def test_a_tt_file_whose_read_fails_raises_that_oserror_naming_it():
    # A regular file whose read fails, for root too: zipfile.is_zipfile said "not a zip".
    with pytest.raises(OSError, match=r"cannot read TT file '/proc/self/mem'"):
        tlc.load_tt("/proc/self/mem")


UNREADABLE_TT = """
    import sys
    import tensorly_cross as tlc
    try:
        tlc.load_tt(sys.argv[1])
    except OSError as error:
        print(type(error).__name__, error)
"""


def test_a_tt_file_without_read_permission_says_so_not_that_it_is_no_archive(tmp_path):
    path = tmp_path / "t.tt.npz"
    tlc.save_tt(path, [np.ones((1, 4, 2)), np.ones((2, 4, 1))])
    os.chmod(path, 0o200)
    child = _run_child(UNREADABLE_TT, path, bound_by_modes=True)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.startswith("PermissionError") and str(path) in child.stdout
    assert "not a .npz archive" not in child.stdout


def test_save_tt_through_a_link_replaces_its_target_and_keeps_the_link(tmp_path):
    target, link = tmp_path / "real.tt.npz", tmp_path / "link.tt.npz"
    tlc.save_tt(target, [np.ones((1, 3, 1))])
    link.symlink_to(target)
    tlc.save_tt(link, [np.full((1, 5, 1), 2.0)], overwrite=True)
    assert link.is_symlink()
    tt, _ = tlc.load_tt(target)
    np.testing.assert_array_equal(tl.to_numpy(tt[0]), np.full((1, 5, 1), 2.0))
    assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []


def test_save_tt_over_a_fifo_is_refused_and_leaves_the_fifo(tmp_path):
    fifo = tmp_path / "pipe.tt.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"pipe\.tt\.npz.*not a regular file"):
        tlc.save_tt(fifo, [np.ones((1, 3, 1))], overwrite=True)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


# --- 6. non-finite cores ------------------------------------------------------------------


def test_save_tt_refuses_non_finite_cores_naming_the_core_and_the_count(tmp_path):
    path = tmp_path / "t.tt.npz"
    second = np.ones((2, 4, 1))
    second[0, :3, 0] = [np.inf, np.nan, -np.inf]
    with pytest.raises(ValueError, match=r"core 1 .* holds 3 non-finite entries"):
        tlc.save_tt(path, [np.ones((1, 4, 2)), second])
    assert not path.exists()


def test_save_tt_takes_numpy_ints_in_a_list_as_in_a_tuple(tmp_path):
    cores = [np.ones((1, 3, 2)), np.ones((2, 4, 1))]
    for name, shape in (("a", (np.int64(3), np.int64(4))), ("b", [np.int64(3), np.int64(4)])):
        tlc.save_tt(tmp_path / f"{name}.npz", cores, {"shape": shape})
        assert tlc.load_tt(tmp_path / f"{name}.npz")[1]["shape"] == [3, 4]


# -- ttfile.py ---------------------------------------------------------------------------


# Mutant: the bound compared with slack (``total > max_bytes + 8``): cores a few bytes
# over max_bytes were loaded.
def test_load_tt_refuses_cores_one_byte_over_max_bytes(tmp_path):
    cores = [np.ones((1, 3, 2)), np.ones((2, 4, 1))]
    total = sum(core.nbytes for core in cores)  # 112
    path = save_tt(str(tmp_path / "bound.tt.npz"), cores)
    with pytest.raises(TTFileError, match=f"would take {total} bytes"):
        load_tt(path, max_bytes=total - 1)
    tt, _ = load_tt(path, max_bytes=total)
    assert tt.rank == (1, 2, 1)


# Mutant: a reserved key compared by value only: ``format_version=1.0`` or ``n_cores=True``
# (equal to the file's 1) was accepted and silently replaced by the file's int.
@pytest.mark.parametrize("key, value", [("format_version", 1.0), ("n_cores", True)])
def test_save_tt_refuses_a_reserved_key_of_another_type(tmp_path, key, value):
    with pytest.raises(TTFileError, match=f"metadata key '{key}' is set by the file format"):
        save_tt(str(tmp_path / "reserved.tt.npz"), [np.ones((1, 3, 1))], {key: value})
    assert not (tmp_path / "reserved.tt.npz").exists()


# Mutant: a metadata shape size above 2**63 - 1 let through its range check: refused
# later, or not, for another reason than the one the format states.
def test_a_metadata_shape_beyond_int64_is_refused_as_such(tmp_path):
    with pytest.raises(TTFileError, match=r"is not a list of ints in \[1, 2\*\*63 - 1\]"):
        save_tt(str(tmp_path / "huge.tt.npz"), [np.ones((1, 2, 1))],
                {"shape": [2**63], "quantics": {"order": "grouped"}})


# Mutant: the metadata record's size not compared with MAX_META_BYTES before it is read
# (a forged header of gigabytes was decoded).
def test_load_tt_refuses_a_metadata_record_over_the_bound_before_reading_it(tmp_path,
                                                                             monkeypatch):
    path = save_tt(str(tmp_path / "meta.tt.npz"), [np.ones((1, 2, 1))], {"note": "x" * 200})
    monkeypatch.setattr(ttfile, "MAX_META_BYTES", 100)
    with pytest.raises(TTFileError, match="is not a JSON text of at most 100 bytes"):
        load_tt(path)


# Mutant: a quantics shape of more modes than the file has cores not refused up front
# (the layout was worked out first, and the file refused for another reason).
def test_a_quantics_shape_with_more_modes_than_cores_is_refused_up_front(tmp_path):
    with pytest.raises(TTFileError, match="has 2 modes, more than its 1 cores"):
        save_tt(str(tmp_path / "q.tt.npz"), [np.ones((1, 2, 1))],
                {"shape": [2, 1], "quantics": {"order": "grouped"}})


# -- _atomic.py --------------------------------------------------------------------------


# Mutant: the temporary file created with mode 0o644 instead of 0o666: the umask no
# longer decided the mode (a group-writable umask gave a file the group cannot write).
def test_a_saved_file_gets_the_mode_the_umask_gives(tmp_path):
    previous = os.umask(0o002)
    try:
        path = save_tt(str(tmp_path / "mode.tt.npz"), [np.ones((1, 2, 1))])
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o664


# Mutant: only real cores checked for NaN and inf (``kind not in "f"``): a complex core
# holding NaN was saved (and loaded) as a result.
def test_a_complex_core_holding_nan_is_refused_on_saving_and_loading(tmp_path):
    core = np.ones((1, 3, 1), dtype=complex)
    core[0, 1, 0] = complex(1.0, np.nan)
    with pytest.raises(ValueError, match="core 0 .* holds 1 non-finite entry"):
        save_tt(str(tmp_path / "nan.tt.npz"), [core])
    path = tmp_path / "forged.tt.npz"
    meta = b'{"format": "tensorly-cross-tt", "format_version": 1, "n_cores": 1}'
    np.savez(path, core_0=core, meta=np.frombuffer(meta, dtype=np.uint8))
    with pytest.raises(TTFileError, match="holds 1 non-finite entry"):
        load_tt(str(path))


# Mutant: bools in a metadata shape converted to ints (``int(True)``) instead of refused:
# a shape (True, 3) was stored as [1, 3].
def test_save_tt_refuses_a_bool_in_the_metadata_shape(tmp_path):
    with pytest.raises(TTFileError, match="is not a list of ints"):
        save_tt(str(tmp_path / "bool.tt.npz"), [np.ones((1, 1, 1)), np.ones((1, 3, 1))],
                {"shape": (True, 3)})


@pytest.mark.parametrize("path", [None, 5, 2.5])
def test_load_tt_names_its_path_argument(path):
    # Before: os.fsdecode's "expected str, bytes or os.PathLike object, not NoneType".
    with pytest.raises(TypeError, match="path must be a str, bytes or os.PathLike"):
        tlc.load_tt(path)


# --- replacing a file keeps its permissions ----------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_save_tt_over_a_private_file_keeps_it_private(tmp_path):
    # overwrite=True published a new file whose mode came from the umask: a TT file made
    # private (chmod 600) became world-readable (0o644) once replaced.
    path = tmp_path / "a.tt.npz"
    tlc.save_tt(path, [np.ones((1, 3, 1))])
    os.chmod(path, 0o600)
    previous = os.umask(0o022)
    try:
        tlc.save_tt(path, [np.full((1, 3, 1), 2.0)], overwrite=True)
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == 0o600
    np.testing.assert_array_equal(np.asarray(tlc.load_tt(path)[0][0]), 2.0)


# --- TT files: cores of extended precision ------------------------------------------------


@pytest.mark.parametrize("dtype", [np.longdouble, np.clongdouble])
def test_save_tt_refuses_extended_precision_cores_as_not_portable(tmp_path, dtype):
    # A long double's bytes mean an 80-bit x86 float on one machine and an IEEE quad on
    # another (both "<f16"): a file of them was read elsewhere as other numbers, without a
    # word, and the PyTorch backend failed on it with a bare TypeError.
    if np.dtype(dtype).itemsize <= np.dtype(np.complex128 if dtype is np.clongdouble
                                            else np.float64).itemsize:
        pytest.skip("long double is double here")
    with pytest.raises(tlc.TTFileError, match="core 0 has dtype .*float64"):
        tlc.save_tt(tmp_path / "a.tt.npz", [np.ones((1, 3, 1), dtype=dtype)])
    assert os.listdir(tmp_path) == []


def test_load_tt_refuses_a_file_of_extended_precision_cores(tmp_path):
    from .test_ttfile_safety import valid_meta, write_npz

    path = write_npz(tmp_path / "a.npz", valid_meta(n_cores=1),
                     [np.ones((1, 3, 1), dtype=np.longdouble)])
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is double here")
    with pytest.raises(tlc.TTFileError, match="core 0 has dtype"):
        tlc.load_tt(path)


def test_save_tt_names_the_core_on_the_meta_device(tmp_path):
    # It said "a tensor is a PyTorch tensor on the 'meta' device": which one, of which
    # argument, went unsaid.
    torch = pytest.importorskip("torch")
    cores = [torch.ones((1, 3, 2)), torch.ones((2, 4, 1), device="meta")]
    with pytest.raises(ValueError, match="^tt core 1 is a PyTorch tensor on the 'meta'"):
        tlc.save_tt(tmp_path / "a.tt.npz", cores)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn"])
def test_save_tt_widens_low_precision_floats_as_it_does_pytorch_s(tmp_path, name):
    # A PyTorch bfloat16 TT was saved (widened to float32), a JAX one (ml_dtypes' bfloat16,
    # NumPy kind "V") refused: "dtype bfloat16; cores must be numbers (integer, real or
    # complex floating point)", which it is.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = [np.array([[[0.5, -1.5], [2.0, 0.25], [3.0, -0.125]]]), np.ones((2, 4, 1))]
    cores = [core.astype(getattr(ml_dtypes, name)) for core in values]
    tlc.save_tt(tmp_path / "a.tt.npz", cores)
    tt, _ = tlc.load_tt(tmp_path / "a.tt.npz")
    assert [core.dtype for core in tt] == [np.float32, np.float32]
    for loaded, core in zip(tt, values, strict=True):
        np.testing.assert_array_equal(np.asarray(loaded), core)


# --- TT files of ml_dtypes' floats: JAX's float8_e5m2 ------------------------------------


def test_save_tt_widens_float8_e5m2_which_ml_dtypes_gives_numpy_s_float_kind(tmp_path):
    # ml_dtypes registers float8_e5m2 with kind "f" (the other float8 types: "V"), so it
    # was not widened: save_tt wrote a file of "<f1" cores that load_tt (and np.load)
    # then refused, "descr is not a valid dtype descriptor".
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([[[0.5, -1.5], [2.0, 0.25], [3.0, -0.125]]])
    path = tmp_path / "a.tt.npz"
    tlc.save_tt(path, [values.astype(ml_dtypes.float8_e5m2), np.ones((2, 4, 1))])
    tt, _ = tlc.load_tt(path)
    assert tt[0].dtype == np.float32
    np.testing.assert_array_equal(np.asarray(tt[0]), values)


@pytest.mark.parametrize("name", ["complex32", "int4"])
def test_save_tt_refuses_other_ml_dtypes_types_by_name(tmp_path, name):
    # ml_dtypes' complex32 (kind "c") was written into a file load_tt refused; its int4 was
    # refused as "not numbers". Neither has a .npy description: refused, naming the dtype.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    core = np.ones((1, 3, 1)).astype(getattr(ml_dtypes, name))
    with pytest.raises(tlc.TTFileError, match=f"core 0 has dtype {name}, .*not one of NumPy"):
        tlc.save_tt(tmp_path / "a.tt.npz", [core])
    assert os.listdir(tmp_path) == []


def _tt():
    return [np.ones((1, 3, 2)), np.ones((2, 3, 1))]


def test_save_tt_refuses_a_nul_character_by_name(tmp_path):
    path = str(tmp_path / "a\0b.tt.npz")
    with pytest.raises(ValueError, match=r"path .*holds a NUL character"):
        tlc.save_tt(path, _tt())
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_load_tt_refuses_a_nul_character_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"holds a NUL character"):
        tlc.load_tt(str(tmp_path / "a\0b.tt.npz"))


def test_save_tt_refuses_a_masked_core_by_name(tmp_path):
    # It stored the raw data, masked entries included, and load_tt gave them back as
    # entries of the TT without a word.
    path = tmp_path / "masked.tt"
    with pytest.raises(TypeError, match=r"tt core 1 is a masked array"):
        tlc.save_tt(path, _masked_cores())
    assert not path.exists()
