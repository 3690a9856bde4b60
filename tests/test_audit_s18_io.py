"""Audit s18 of files changing under a run, unreadable and special paths, and the messages
that name a file: on real files, with real truncations and real permissions.

Each test failed before its fix. A process killed by a signal would kill pytest with it:
what crashed (SIGBUS) runs in a child process, so that a regression is a failed test.
"""

import ctypes
import mmap
import os
import re
import stat
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import cli
from tensorly_cross.errors import CheckpointError, NonFiniteValueError
from tensorly_cross.lazy.sources import ChunkReadError
from tensorly_cross.stream.blocks import MemmapSource, plan_blocks, volume_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# prctl(PR_CAPBSET_DROP, ...) and the two capabilities that let root ignore file modes.
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def _run_child(code, *arguments, bound_by_modes=False):
    """Run ``code`` in a fresh Python; with ``bound_by_modes``, one that file modes bind
    even when the tests run as root (it loses the capabilities that override them; a
    platform where that cannot be done skips the test)."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    drop = None
    if bound_by_modes and os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "prctl") or libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0,
                                                    0) != 0:
            pytest.skip("running as root, and cannot drop CAP_DAC_OVERRIDE: file modes "
                        "do not apply")

        def drop():  # in the child, before exec: it starts without the capabilities
            for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
                libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, arguments)],
                          capture_output=True, text=True, env=env, preexec_fn=drop,
                          timeout=120)


def _reciprocal_sum(n=8, d=3):
    grid = np.linspace(1.0, 2.0, n)
    return tlc.FunctionTensor.on_grid(lambda x: 1.0 / x.sum(axis=1), [grid] * d)


# --- 1a. NIfTI truncated during a cross ---------------------------------------------------

NIFTI_TRUNCATED = """
    import os, sys
    import numpy as np, nibabel
    import tensorly_cross as tlc
    from tensorly_cross.lazy.sources import ChunkReadError
    path = sys.argv[1]
    nibabel.save(nibabel.Nifti1Image(np.full((16, 16, 16), 2.0, np.float32), np.eye(4)), path)
    cached, uncached = tlc.open_volume(path), tlc.open_volume(path, cache_bytes=0)
    cached.evaluate([[0, 0, 0]]), uncached.evaluate([[0, 0, 0]])
    os.truncate(path, 400)  # rewritten or cut short meanwhile
    print("cached", float(cached.evaluate([[15, 15, 15]])[0]), flush=True)
    try:
        uncached.evaluate([[15, 15, 15]])
    except ChunkReadError as error:
        print("uncached ChunkReadError:", error)
"""


def test_a_nifti_truncated_after_a_read_raises_or_reads_its_cached_chunk_never_crashes(
        tmp_path):
    pytest.importorskip("nibabel")
    path = tmp_path / "scan.nii"
    child = _run_child(NIFTI_TRUNCATED, path)
    # Before: the cached chunk was a view into nibabel's memory map; SIGBUS (-7).
    assert child.returncode == 0, child.stderr[-2000:]
    assert "cached 2.0" in child.stdout
    assert "uncached ChunkReadError:" in child.stdout and str(path) in child.stdout


def test_a_nifti_chunk_is_read_into_memory_of_its_own(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    path = tmp_path / "scan.nii"
    values = np.arange(20 * 18 * 6, dtype=np.float32).reshape(20, 18, 6)
    nibabel.save(nibabel.Nifti1Image(values, np.eye(4)), path)
    volume = tlc.open_volume(path)
    block = volume.source.read(volume.chunk_slices(0))
    owner = block
    while isinstance(owner, np.ndarray) and not isinstance(owner, np.memmap):
        owner = owner.base  # the object whose memory the block is
    assert not isinstance(owner, np.memmap | mmap.mmap)
    np.testing.assert_array_equal(block, values)


# --- 1b. the streaming TT-SVD's .npy blocks -----------------------------------------------

NPY_TRUNCATED = """
    import os, sys
    import numpy as np
    from tensorly_cross.stream.blocks import plan_blocks, volume_source
    path = sys.argv[1]
    np.save(path, np.ones((32, 32, 32)))
    source = volume_source(path)
    block = source.read(plan_blocks(source)[0])  # the file is whole when it is read
    os.truncate(path, 128)  # and cut short while the block is used
    print("sum", block.sum(), flush=True)
"""


def test_a_streamed_npy_block_stays_valid_when_the_file_is_truncated_after_its_read(
        tmp_path):
    child = _run_child(NPY_TRUNCATED, tmp_path / "volume.npy")
    # Before: the block was a view into a memory map, faulted in later; SIGBUS (-7).
    assert child.returncode == 0, child.stderr[-2000:]
    assert "sum 32768.0" in child.stdout


def test_a_npy_file_cut_short_under_a_block_read_raises_naming_the_file(tmp_path):
    path = tmp_path / "volume.npy"
    np.save(path, np.ones((16, 8, 8)))
    source = MemmapSource(str(path), block_bytes=8 * 8 * 8 * 8)
    block = (slice(0, 16), slice(0, 8), slice(0, 8))
    os.truncate(path, 1000)  # after the stamp check, as a truncation racing the read
    with open(path, "rb") as handle, pytest.raises(ChunkReadError) as caught:
        source._read_box(handle.fileno(), block)
    message = str(caught.value)
    assert str(path) in message and "shorter than its header" in message
    assert "block [0:16, 0:8, 0:8] (2 chunks)" in message  # the block, said to be one


@pytest.mark.parametrize("order", ["C", "F"])
def test_streamed_npy_blocks_are_the_file_s_entries(tmp_path, order):
    values = np.asarray(np.random.default_rng(0).standard_normal((9, 7, 5, 3)), order=order)
    path = tmp_path / "volume.npy"
    np.save(path, values.astype(">f4"))  # a foreign byte order too
    for block_bytes in (8 * 3, 8 * 5 * 3 * 2, 8 * 7 * 5 * 3 * 4, 2**25):
        source = MemmapSource(str(path), block_bytes)
        for block in plan_blocks(source, block_bytes):
            read = source.read(block)
            assert read.dtype == np.dtype(">f4")
            np.testing.assert_array_equal(read, values.astype(">f4")[block])


@pytest.mark.parametrize("order", ["C", "F"])
def test_streaming_a_npy_file_gives_the_in_memory_result(tmp_path, order):
    grid = np.linspace(0.0, 1.0, 12)
    values = np.asarray(np.sin(np.add.outer(np.add.outer(grid, 2 * grid), grid ** 2)),
                        order=order)
    path = tmp_path / "volume.npy"
    np.save(path, values)
    rank = [1, 3, 3, 1]
    from_file = tlc.streaming_tt_svd(str(path), rank=rank, block_bytes=8 * 12 * 12 * 2,
                                     random_state=0)
    in_memory = tlc.streaming_tt_svd(values, rank=rank, random_state=0)
    np.testing.assert_allclose(tl.to_numpy(tl.tt_to_tensor(from_file)),
                               tl.to_numpy(tl.tt_to_tensor(in_memory)), rtol=0, atol=1e-12)


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


def test_info_on_a_tt_file_that_cannot_be_read_names_the_error(capsys):
    if not os.path.isfile("/proc/self/mem"):
        pytest.skip("Linux /proc only")
    assert cli.main(["info", "/proc/self/mem"]) == cli.EXIT_INPUT
    error = capsys.readouterr().err
    assert "cannot read TT file '/proc/self/mem'" in error and "not a .npz" not in error


# --- 3. links and FIFOs as destinations ---------------------------------------------------


def test_a_checkpoint_path_that_is_a_link_stays_a_link_and_its_target_gets_the_entries(
        tmp_path):
    target = tmp_path / "shared" / "run.ckpt"
    target.parent.mkdir()
    target.touch()  # an empty file: what a user creates on shared storage
    link = tmp_path / "run.ckpt"
    link.symlink_to(target)
    first = tlc.tt_cross(_reciprocal_sum(), tol=1e-8, random_state=0, checkpoint=link)
    assert link.is_symlink() and target.stat().st_size > 0
    again, info = tlc.tt_cross(_reciprocal_sum(), tol=1e-8, random_state=0, checkpoint=link,
                               return_info=True)
    assert info.n_restored > 0 and link.is_symlink()
    for core, core_again in zip(first, again, strict=True):
        np.testing.assert_array_equal(tl.to_numpy(core), tl.to_numpy(core_again))


def test_a_checkpoint_link_to_a_missing_file_creates_its_target(tmp_path):
    target, link = tmp_path / "target.ckpt", tmp_path / "run.ckpt"
    link.symlink_to(target)
    tlc.tt_cross(_reciprocal_sum(), tol=1e-8, random_state=0, checkpoint=link)
    assert link.is_symlink() and target.is_file() and target.stat().st_size > 0


def test_a_fifo_checkpoint_is_refused_and_left_a_fifo(tmp_path):
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match=r"pipe\.ckpt.*not a regular file"):
        tlc.tt_cross(_reciprocal_sum(), tol=1e-8, random_state=0, checkpoint=fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


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


# --- 4. a read-only checkpoint ------------------------------------------------------------

READ_ONLY_CHECKPOINT = """
    import sys
    import numpy as np
    import tensorly_cross as tlc
    grid = np.linspace(1.0, 2.0, 8)
    tensor = tlc.FunctionTensor.on_grid(lambda x: 1.0 / x.sum(axis=1), [grid] * 3)
    try:
        tlc.tt_cross(tensor, tol=1e-8, random_state=0, checkpoint=sys.argv[1])
    except OSError as error:
        print(type(error).__name__, error)
"""


def test_a_read_only_checkpoint_says_why_it_must_be_writable(tmp_path):
    path = tmp_path / "run.ckpt"
    tlc.tt_cross(_reciprocal_sum(), tol=1e-8, random_state=0, checkpoint=path)
    os.chmod(path, 0o444)
    child = _run_child(READ_ONLY_CHECKPOINT, path, bound_by_modes=True)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.startswith("PermissionError") and str(path) in child.stdout
    assert "reading and writing" in child.stdout and "appends" in child.stdout


# --- 5. messages that name the file -------------------------------------------------------


def test_a_nan_read_from_a_npy_volume_names_the_file(tmp_path):
    path = tmp_path / "masked.npy"
    np.save(path, np.full((4, 4, 4), np.nan))
    with pytest.raises(NonFiniteValueError, match=r"masked\.npy' returned nan"):
        tlc.open_volume(path).evaluate([[1, 2, 3]])


def test_a_nan_read_from_a_zarr_volume_names_the_store(tmp_path):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "masked.zarr"
    array = zarr.create_array(str(path), shape=(4, 4, 4), chunks=(2, 2, 2), dtype="f8")
    array[...] = np.nan
    with pytest.raises(NonFiniteValueError, match=r"masked\.zarr.* returned nan"):
        tlc.open_volume(path).evaluate([[1, 2, 3]])


def _npy_with_shape(path, shape_text):
    """A .npy file whose header declares ``shape_text``, as a forged header would."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape_text}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as stream:
        stream.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        stream.write(b"\0" * 1024)


def test_a_npy_header_with_a_negative_size_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "negative.npy"
    _npy_with_shape(path, "(-4, 4, 4)")
    for open_it in (tlc.open_volume, volume_source):  # the cross's reader, the stream's
        with pytest.raises(ValueError, match=r"negative\.npy.*negative size"):
            open_it(str(path))


def test_a_stream_read_error_says_it_read_a_block_of_several_chunks(tmp_path):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "damaged.zarr"
    array = zarr.create_array(str(path), shape=(8, 8, 8), chunks=(4, 4, 4), dtype="f8",
                              config={"write_empty_chunks": True})
    array[...] = 1.0
    chunk = next(os.path.join(folder, name) for folder, _, names in os.walk(path)
                 for name in names if name not in ("zarr.json", ".zarray", ".zattrs"))
    with open(chunk, "wb") as stream:
        stream.write(b"not a compressed chunk" * 4)
    with pytest.raises(ChunkReadError, match=r"reading block \[0:8, 0:8, 0:8\] \(8 chunks\)"):
        tlc.streaming_tt_svd(str(path), rank=[1, 2, 2, 1])


def test_an_hdf5_file_whose_one_dataset_is_a_broken_link_says_so(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "linked.h5"
    with h5py.File(path, "w") as handle:
        handle["volume"] = h5py.ExternalLink("elsewhere.h5", "/volume")
    with pytest.raises(KeyError, match=r"could not be resolved: /volume -> '/volume' in "
                                       r"'elsewhere\.h5'"):
        tlc.open_volume(path)


# --- 6. non-finite cores ------------------------------------------------------------------


def test_save_tt_refuses_non_finite_cores_naming_the_core_and_the_count(tmp_path):
    path = tmp_path / "t.tt.npz"
    second = np.ones((2, 4, 1))
    second[0, :3, 0] = [np.inf, np.nan, -np.inf]
    with pytest.raises(ValueError, match=r"core 1 .* holds 3 non-finite entries"):
        tlc.save_tt(path, [np.ones((1, 4, 2)), second])
    assert not path.exists()


def _nifti_scaled_by(path, slope):
    """An int16 NIfTI whose header scales it by ``slope`` (written into the header's
    scl_slope field: nibabel would rescale the data on saving)."""
    nibabel = pytest.importorskip("nibabel")
    grid = np.linspace(0.0, 1.0, 12)
    values = np.round(3e4 * np.add.outer(np.add.outer(grid, grid), grid) / 3).astype(np.int16)
    nibabel.save(nibabel.Nifti1Image(values, np.eye(4)), path)
    with open(path, "r+b") as stream:
        stream.seek(112)  # scl_slope, then scl_inter
        stream.write(struct.pack("<ff", slope, 0.0))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_compress_of_values_float32_cannot_hold_refuses_the_cores_and_names_the_fix(
        tmp_path, capsys):
    source, output = tmp_path / "huge.nii", tmp_path / "huge.tt.npz"
    _nifti_scaled_by(source, 1e36)  # entries up to 1e40: finite in float64 only
    code = cli.main(["compress", str(source), "-o", str(output), "--method", "stream",
                     "--rank", "1", "-q"])
    error = capsys.readouterr().err
    assert code == cli.EXIT_INPUT and not output.exists()
    assert "non-finite" in error and "--dtype float64" in error
    assert cli.main(["compress", str(source), "-o", str(output), "--method", "stream",
                     "--rank", "1", "--dtype", "float64", "-q"]) == cli.EXIT_OK
    _, metadata = tlc.load_tt(output)
    assert np.isfinite(metadata["error"])


# --- 7. the temporary file the docs name --------------------------------------------------

KILLED_SAVE = """
    import os, signal, sys
    from tensorly_cross._atomic import write_atomically
    def write(stream):
        stream.write(b"half a file")
        stream.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    write_atomically(sys.argv[1], write)
"""


def test_a_save_killed_outright_leaves_the_temporary_file_the_docs_name(tmp_path):
    child = _run_child(KILLED_SAVE, tmp_path / "out.tt.npz")
    assert child.returncode == -9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and re.fullmatch(r"\.tensorly-cross-[0-9a-f]{32}\.tmp", left[0])
    with open(os.path.join(ROOT, "docs", "cli.rst")) as docs:
        assert "``.tensorly-cross-<32 hex digits>.tmp``" in docs.read()
