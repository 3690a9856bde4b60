"""Tests of the streaming TT-SVD: sketches, blocks, tolerances and its messages."""

import math
import os
import struct
import threading
import time
import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import (
    ArrayTensor,
    FunctionTensor,
    ToleranceNotMetWarning,
    TransposedTensor,
    choose_path,
)
from tensorly_cross.lazy.sources import ChunkReadError
from tensorly_cross.stream import streaming as streaming_module
from tensorly_cross.stream import streaming_tt_svd
from tensorly_cross.stream.blocks import MemmapSource, plan_blocks, volume_source

from ._helpers_shared import (
    COMPLEX,
    LOW_RANK_SHAPE,
    _full,
    _low_rank,
    _rank_two_plus_detail,
    _run_child,
    _same_tt,
    _slow_copy,
    _torch,
)

# B2 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", ["numpy", "pytorch"])
@pytest.mark.parametrize("wrap", [False, True], ids=["tensor", "ArrayTensor"])
def test_streaming_tt_svd_reads_a_torch_tensor(backend_name, wrap):
    torch = pytest.importorskip("torch")
    grid = np.linspace(0.0, 1.0, 12)
    data = np.exp(-np.add.outer(np.add.outer(grid, grid), grid))
    with tl.backend_context(backend_name):
        expected = tlc.streaming_tt_svd(data, tol=1e-6)
        # requires_grad: NumPy cannot read it without a detach.
        tensor = torch.tensor(data, requires_grad=True)
        result = tlc.streaming_tt_svd(ArrayTensor(tensor) if wrap else tensor, tol=1e-6)
        _same_tt(result, expected)


@pytest.mark.parametrize("name", ["numpy", "pytorch"])
def test_streaming_tt_svd_reads_a_torch_view_with_the_negative_bit(name):
    torch = _torch()
    view = torch.tensor(COMPLEX).conj().imag
    with tl.backend_context(name):
        tt = tlc.streaming_tt_svd(view, rank=[1, 3, 2, 1])
    np.testing.assert_allclose(_full(tt), -COMPLEX.imag, atol=1e-12)


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


# -- stream/ (streaming TT-SVD) ----------------------------------------------------------


def _stream_volume(shape, seed, noise):
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal((r0, n, r1)) for r0, n, r1 in
             zip((1, 4, 4), shape, (4, 4, 1), strict=True)]
    dense = tl.tt_to_tensor(cores)
    return dense + noise * np.linalg.norm(dense) / np.sqrt(dense.size) * rng.standard_normal(
        shape)


# Mutant: the truncation of the projected core given the whole budget ``tol**2 ||A||^2``,
# forgetting what the sketched bases already lost: the TT then missed tol.
@given(seed=st.integers(0, 50), share=st.sampled_from([0.5, 0.7, 0.85]))
@settings(max_examples=8, deadline=None)
def test_streaming_error_stays_within_tol_when_the_sketch_loses_much_of_it(seed, share):
    from tensorly_cross import streaming_tt_svd

    dense = _stream_volume((20, 18, 16), seed, noise=0.3)
    _, first = streaming_tt_svd(dense, tol=0.9, max_width=10, random_state=seed,
                                return_info=True)
    tol = first.projection_error / share  # the sketch alone takes share of the tolerance
    tt, info = streaming_tt_svd(dense, tol=tol, max_width=10, random_state=seed,
                                return_info=True)
    true = np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)
    np.testing.assert_allclose(info.error, true, rtol=1e-6)
    assert true <= tol * (1 + 1e-9)


# Mutant: the Gram shortcut used down to thresholds of 1e-12 of the norm (GRAM_FLOOR): its
# singular values and vectors are exact only to sqrt(eps) of the largest, and a volume
# compressed to 1e-10 missed it.
@given(seed=st.integers(0, 50))
@settings(max_examples=5, deadline=None)
def test_streaming_tt_svd_meets_a_tolerance_far_below_sqrt_eps(seed):
    from tensorly_cross import streaming_tt_svd

    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    v, _ = np.linalg.qr(rng.standard_normal((400, 6)))
    dense = ((u * np.logspace(0, -14, 6)) @ v.T).reshape(6, 20, 20)  # wide first unfolding
    tt, info = streaming_tt_svd(dense, tol=1e-11, return_info=True)
    true = np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)
    assert true <= 1e-11 and info.error <= 1e-11


# Mutant: the ``.gz`` suffix compared case-sensitively: ``SCAN.NII.GZ``, decompressed
# whole by any reader, was estimated as if read in place.
def test_an_upper_case_gzip_path_is_streamed():
    volume = FunctionTensor(lambda idx: idx.sum(axis=1) * 1.0, (64, 64, 64))
    choice = choose_path(volume, path="SCAN.NII.GZ")
    assert choice.method == "stream" and "gzip" in choice.reason


def _exact_rank_one_plus(weight, shape=(9, 8, 7), seed=0):
    """``u1 v1 w1 + weight * u2 v2 w2`` with orthonormal factor pairs: its relative error
    at TT rank 1 is ``weight / sqrt(1 + weight**2)``."""
    rng = np.random.default_rng(seed)
    factors = [np.linalg.qr(rng.standard_normal((n, 2)))[0] for n in shape]
    first = np.einsum("i,j,k->ijk", *(f[:, 0] for f in factors))
    second = np.einsum("i,j,k->ijk", *(f[:, 1] for f in factors))
    return first + weight * second


# -- stream/streaming.py ----------------------------------------------------------------


# Mutant: the middle mode of an odd number of modes never narrowed (``range(d // 2)``):
# the projected core then exceeds its documented budget of 2**24 entries.
@pytest.mark.parametrize("shape", [(2**13, 2**25, 2**13), (2**7, 2**7, 2**25, 2**7, 2**7)])
def test_the_projected_core_fits_its_budget_whatever_the_middle_mode(shape):
    widths = streaming_module._widths(shape, None, None)
    assert math.prod(widths) <= streaming_module.MAX_CORE_ENTRIES
    assert all(1 <= w <= n for w, n in zip(widths, shape, strict=True))


# Mutant: the memory check compares entries, not their 8 bytes each, with the memory.
def test_sketches_needing_more_bytes_than_the_machine_has_are_refused_before_any_read():
    physical = streaming_module._physical_memory()
    if physical is None:
        pytest.skip("the OS does not report its physical memory")
    entries = physical // 4  # 2x the memory in float64, half of it in entries
    with pytest.raises(MemoryError, match="Lower max_width"):
        streaming_module._check_memory((entries,), (entries,))
    streaming_module._check_memory((physical // 16,), (physical // 16,))  # 1/2: fits


# Mutant: the last core takes the whole scale while that rounds it by up to 2**-20 of its
# norm (not a unit roundoff): a volume near the subnormal range then lost 20 bits.
def test_a_volume_near_the_subnormal_range_keeps_full_precision_in_its_cores():
    rng = np.random.default_rng(0)
    shape = (6, 5, 4)
    dense = np.einsum("i,j,k->ijk", *(rng.integers(1, 64, n).astype(float) for n in shape))
    exponent = -1060
    tt = streaming_tt_svd(np.ldexp(dense, exponent), tol=1e-12, random_state=0)
    cores = [np.asarray(core) for core in tt.factors]
    # Undo the scale on the last core: exact where the cores kept every bit.
    cores[-1] = np.ldexp(cores[-1], -exponent)
    back = np.einsum("aib,bjc,ckd->ijk", *cores)
    assert np.linalg.norm(back - dense) <= 1e-13 * np.linalg.norm(dense)


# Mutant: ``max_rank`` named as what lowered a fixed rank when it equals the rank asked
# for (``>=``): the volume's own rank lowered it.
def test_a_fixed_rank_lowered_by_the_volume_does_not_blame_an_equal_max_rank():
    volume = np.zeros((5, 4, 3))  # two nonzero fibers: TT ranks (1, 2, 2, 1), exactly
    volume[0, 0], volume[1, 1] = [1.0, 2.0, 3.0], [1.0, 0.0, 2.0]
    with pytest.warns(UserWarning, match="lowered by") as record:
        tt = streaming_tt_svd(volume, rank=3, max_rank=3, random_state=0)
    assert tt.rank == (1, 2, 2, 1)
    message = str(record[0].message)
    assert "volume's own ranks" in message and "max_rank" not in message


# Mutant: a run warns (and sets ``limited_by``) only beyond twice ``tol``.
def test_an_error_between_tol_and_twice_tol_is_reported_as_a_miss():
    volume = _exact_rank_one_plus(0.1)  # error 0.0995 at rank 1
    with pytest.warns(UserWarning, match=r"relative error 0.0995 > tol=0.07"):
        tt, info = streaming_tt_svd(volume, tol=0.07, max_rank=1, random_state=0,
                                    return_info=True)
    assert max(tt.rank) == 1
    np.testing.assert_allclose(info.error, 0.1 / math.sqrt(1.01), rtol=1e-9)
    assert info.limited_by == "max_rank"


# -- stream/blocks.py -------------------------------------------------------------------


# Mutant: a block's scale taken from its largest value, not its largest modulus: a block of
# non-positive values whose largest is 0 was taken for an all-zero block and skipped.
def test_a_volume_of_non_positive_values_is_not_taken_for_zero():
    rng = np.random.default_rng(1)
    volume = -np.einsum("i,j,k->ijk", *(rng.random(n) + 0.5 for n in (6, 5, 4)))
    volume[0, 0, 0] = 0.0  # the largest value; the largest modulus is far from 0
    tt, info = streaming_tt_svd(volume, tol=1e-2, random_state=0, return_info=True)
    dense = np.asarray(tt.to_tensor())
    assert np.linalg.norm(dense - volume) <= 2e-2 * np.linalg.norm(volume)
    assert info.error <= 1e-2


# Mutant: sums of squares rescaled by the linear sums' shift when a later block sets a
# larger scale (``2**shift`` instead of ``2**(2 shift)``): ``||A||^2`` came out wrong.
def test_blocks_of_growing_magnitude_sum_their_squares_at_one_scale(tmp_path):
    from tensorly_cross.stream.blocks import map_reduce, plan_blocks, volume_source
    from tensorly_cross.stream.sketch import core_fold, core_start

    rng = np.random.default_rng(2)
    volume = rng.standard_normal((4, 6, 5)) * (10.0 ** np.arange(4))[:, None, None]
    np.save(tmp_path / "volume.npy", volume)
    source = volume_source(tmp_path / "volume.npy", block_bytes=8 * 30)  # slabs of 30 entries
    blocks = plan_blocks(source, block_bytes=8 * 30)
    assert len(blocks) == 4
    bases = [None, None, None]
    # One task: the blocks are added in order, each larger than the ones before.
    sums = map_reduce(source, blocks, core_fold(bases), core_start(volume.shape, bases),
                      n_tasks=1)
    np.testing.assert_allclose(np.ldexp(sums["core"], sums.exponent), volume, rtol=1e-14)
    np.testing.assert_allclose(np.ldexp(sums["squares"][0], 2 * sums.exponent),
                               np.vdot(volume, volume), rtol=1e-13)


# Mutant: a NaN named by its place in its block, not in the volume.
def test_a_nan_in_a_later_block_is_named_by_its_multi_index_in_the_volume(tmp_path):
    from tensorly_cross import NonFiniteValueError

    volume = np.ones((4, 6, 5))
    volume[3, 2, 1] = np.nan
    np.save(tmp_path / "volume.npy", volume)
    with pytest.raises(NonFiniteValueError, match=r"\(3, 2, 1\)") as caught:
        streaming_tt_svd(str(tmp_path / "volume.npy"), tol=1e-3, block_bytes=8 * 30)
    assert caught.value.index == (3, 2, 1)


def _rewrite(path, array):
    """Replace the file at ``path`` by a new one (another inode, size or time)."""
    os.remove(path)
    np.save(path, array)


def test_streaming_an_opened_npy_rewritten_since_raises_as_its_cross_does(tmp_path):
    """streaming_tt_svd(open_volume(x.npy)) reopened the file by path: a file rewritten in
    between, even with another shape, was streamed silently (a TT of shape 30^3 for a
    volume of shape 20^3), where tt_cross on the same object raised ChunkReadError."""
    path = str(tmp_path / "v.npy")
    np.save(path, np.random.default_rng(0).random((20, 20, 20)))
    volume = tlc.open_volume(path)
    _rewrite(path, np.ones((30, 30, 30)))
    with pytest.raises(ChunkReadError, match="rewritten after it was opened"):
        tlc.streaming_tt_svd(volume, tol=0.1)


def test_streaming_an_opened_npy_truncated_since_raises_chunk_read_error(tmp_path):
    """The docstring's ChunkReadError for a .npy changed after it was opened: a truncated
    file raised a ValueError from NumPy's memory map instead."""
    path = str(tmp_path / "v.npy")
    np.save(path, np.random.default_rng(0).random((40, 40, 40)))
    volume = tlc.open_volume(path)
    os.truncate(path, 200_000)
    with pytest.raises(ChunkReadError, match="truncated after it was opened"):
        tlc.streaming_tt_svd(volume, tol=0.1)


def test_streaming_an_unchanged_opened_npy_still_works(tmp_path):
    path = str(tmp_path / "v.npy")
    grid = np.linspace(0.0, 1.0, 12)
    np.save(path, np.add.outer(np.add.outer(grid, grid), grid))
    tt, info = tlc.streaming_tt_svd(tlc.open_volume(path), tol=1e-8, return_info=True)
    assert tt.rank == (1, 2, 2, 1) and info.error < 1e-8


def test_a_streaming_run_that_misses_tol_warns_tolerance_not_met():
    """The user guide's way to make a miss an error, ``warnings.simplefilter("error",
    ToleranceNotMetWarning)``, let a streaming TT-SVD stopped short of ``tol`` by
    ``max_rank`` through: it warned a plain UserWarning."""
    noise = np.random.default_rng(0).standard_normal((10, 10, 10))
    with pytest.warns(tlc.ToleranceNotMetWarning, match="max_rank") as caught:
        tlc.streaming_tt_svd(noise, tol=0.1, max_rank=2)
    missed = [w.message for w in caught if w.category is tlc.ToleranceNotMetWarning]
    assert missed[0].tol == 0.1 and missed[0].error > 0.1


# Set once the workers ran 10 blocks: the stream's pass is under way (the workers of a
# processes=False cluster run in this process; module-level, as a closure's event cannot be
# pickled).
_BLOCK_STARTED = threading.Event()
_BLOCKS_RUN = []


def _signalling_copy(block):
    _BLOCKS_RUN.append(1)
    if len(_BLOCKS_RUN) >= 10:
        _BLOCK_STARTED.set()
    return _slow_copy(block)


def test_a_stream_whose_client_is_closed_raises_the_run_s_error_not_the_cancel_s():
    # The cancellation added for a failed block asked the closed client to cancel: its
    # ClosedClientError ("Can't send cancel-keys message") replaced the run's own error
    # (the futures cancelled, reason: the client closed).
    distributed = pytest.importorskip("distributed")
    dask_array = pytest.importorskip("dask.array")
    _BLOCK_STARTED.clear()
    _BLOCKS_RUN.clear()

    def close_once_running():
        # Closed once a block runs, not after a fixed delay: on a loaded machine the
        # client was closed before the stream had sent its graph ("update-graph").
        _BLOCK_STARTED.wait(60)
        client.close()

    volume = dask_array.from_array(np.ones((400, 8, 8)), chunks=(1, 8, 8)).map_blocks(
        _signalling_copy)
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster:
        client = distributed.Client(cluster)
        closer = threading.Thread(target=close_once_running)
        closer.start()
        try:
            with pytest.raises(BaseException) as caught:
                tlc.streaming_tt_svd(volume, client=client, block_bytes=8 * 64)
        finally:
            _BLOCK_STARTED.set()
            closer.join()
            client.close()
    assert "cancel-keys" not in str(caught.value)
    assert "cancelled" in str(caught.value)


class _LoggedSlowArray:
    """A sliceable array that appends a byte to a log file per read and takes 20 ms: the
    log counts the reads wherever the workers run them."""

    def __init__(self, values, log):
        self.values, self.log = values, log
        self.shape, self.dtype, self.ndim = values.shape, values.dtype, values.ndim

    def __getitem__(self, key):
        with open(self.log, "ab") as handle:
            handle.write(b"x")
        time.sleep(0.02)
        return self.values[key]


def test_a_failed_stream_on_a_cluster_stops_the_reads_of_the_other_tasks(tmp_path):
    # fdeb2ab cancelled the other tasks' futures, but a cancelled task's thread runs on: a
    # task folds a whole group of blocks, and the other group was read to its end (a NaN in
    # the first block of a store: 151 of 156 blocks read after it). Its test read a
    # dask array, whose reads stopped with the futures. Now each task stops at its next
    # block once it is cancelled.
    distributed = pytest.importorskip("distributed")
    import os

    log = str(tmp_path / "reads.log")
    values = np.ones((10000, 8, 8), dtype=np.float32)  # 2.5 MiB sent: 78 blocks a task
    values[0, 0, 0] = np.nan
    volume = _LoggedSlowArray(values, log)
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(tlc.NonFiniteValueError, match=r"\(0, 0, 0\)"):
            tlc.streaming_tt_svd(volume, client=client, block_bytes=8 * 64)
        time.sleep(1.0)  # 50 blocks' time
        assert os.path.getsize(log) < 20


def _separable_rank_two(n):
    """``sin(x + 2y + 3z)`` on an ``n^3`` grid: TT ranks (1, 2, 2, 1) exactly."""
    grid = np.linspace(0, 1, n)
    return np.sin(np.add.outer(np.add.outer(grid, 2 * grid), 3 * grid))


def test_a_volume_read_in_many_blocks_but_not_sketched_has_no_projection_error():
    # Nothing is projected when every mode fits its sketch width (one pass): the core is the
    # volume. The sums of squares of 24 blocks differed from the core's own by round-off,
    # which was reported as a projection error of 1.6e-8, missed tol=1e-10 and blamed
    # sketches "narrowed by the projected core's budget" that were never made.
    dask_array = pytest.importorskip("dask.array")
    n = 24
    volume = dask_array.from_array(_separable_rank_two(n), chunks=(1, n, n))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tt, info = tlc.streaming_tt_svd(volume, tol=1e-10, block_bytes=8 * n * n,
                                        return_info=True)
    assert info.n_passes == 1 and info.n_blocks == n
    assert info.projection_error == 0.0 and info.limited_by is None
    assert info.error <= 1e-10 and tt.rank == (1, 2, 2, 1)


def test_choose_path_refuses_a_dask_array_whose_chunks_cannot_be_read_as_the_stream_does():
    # Its chunks unknown (after a boolean mask), a dask array was "an array in memory ...
    # read whole at no storage cost": "stream", which then raised; a virtual one of 2**83
    # chunks alike. Now choose_path raises the stream's own ValueError.
    dask_array = pytest.importorskip("dask.array")
    ones = dask_array.ones((10, 10, 10), chunks=5)
    masked = ones[ones[:, 0, 0] > 0]
    huge = dask_array.zeros((10**6,) * 6, chunks=64)
    for volume, says in [(masked, "compute_chunk_sizes"), (huge, "rechunk")]:
        with pytest.raises(ValueError, match=says):
            tlc.streaming_tt_svd(volume)
        with pytest.raises(ValueError, match=says):
            tlc.choose_path(volume)


def test_the_memory_check_counts_the_copies_numpy_s_qr_makes_of_a_sketch():
    # A (n, 8) volume sketched to widths (8, 8): its mode-0 sketch is n x 8, and NumPy's QR
    # of it holds four more copies at once (a 2**22 x 8 sketch: 256 MiB, the QR 1 GiB
    # more). The check counted the sketch once: a sketch of half the machine's memory
    # passed it, and the run was killed for memory after a full read.
    from tensorly_cross.stream.streaming import _check_memory, _physical_memory

    physical = _physical_memory()
    if physical is None:
        pytest.skip("the OS does not say how much memory this machine has")
    n = physical // (8 * 8 * 2)  # the sketch: half the memory, as float64
    with pytest.raises(MemoryError, match="GiB"):
        _check_memory((n, 8), (8, 8))
    _check_memory((n // 100, 8), (8, 8))  # a fiftieth of it fits


def test_a_transposed_array_in_memory_is_streamed_as_the_array_is():
    # It was "lsq": "a TransposedTensor of stored data: ... the streaming TT-SVD cannot read
    # this view", which it reads (as the array itself, "stream": in memory).
    values = np.random.default_rng(0).standard_normal((6, 7, 8))
    view = tlc.TransposedTensor(tlc.lazy_tensor(values), (0, 2, 1))
    choice = tlc.choose_path(view)
    assert choice.method == "stream" and "in memory" in choice.reason
    assert tlc.streaming_tt_svd(view, tol=0.5).shape == (6, 8, 7)
    # Views the stream cannot read still ask for a cross.
    quantics = tlc.QuanticsTensor(tlc.lazy_tensor(np.ones((4, 4, 4))))
    assert tlc.choose_path(quantics).method == "lsq"
    assert tlc.choose_path(tlc.TransposedTensor(quantics, (1, 0, 2, 3, 4, 5))).method == "lsq"


def test_a_stream_that_fails_on_a_cluster_leaves_no_task_reading_there():
    # A NaN in the first block raised at once, but the other task went on reading its
    # blocks, and the partial results stayed on the workers, for as long as the error (its
    # traceback holds them: a notebook keeps the last one) lived.
    distributed = pytest.importorskip("distributed")
    dask_array = pytest.importorskip("dask.array")
    values = np.ones((40, 8, 8))
    values[0, 0, 0] = np.nan
    volume = dask_array.from_array(values, chunks=(1, 8, 8)).map_blocks(_slow_copy)
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(tlc.NonFiniteValueError, match=r"\(0, 0, 0\)") as caught:
            tlc.streaming_tt_svd(volume, client=client, block_bytes=8 * 64)
        assert caught.value is not None  # the traceback is alive, as a notebook keeps it
        assert not client.who_has() and not any(client.processing().values())


def test_a_block_that_raises_stops_the_local_threads_reading_the_others():
    # The threads went on reading every block of their groups before the error surfaced:
    # a NaN in the first block of a volume was reported after a whole pass, and Ctrl-C
    # waited for it alike. Now each thread stops at its next block.
    dask_array = pytest.importorskip("dask.array")
    from tensorly_cross.lazy.sources import as_chunk_source
    from tensorly_cross.stream.blocks import map_reduce, plan_blocks
    from tensorly_cross.stream.sketch import core_fold, core_start

    reads = []

    def counted(block):
        import time

        reads.append(1)
        time.sleep(0.01)
        return block.copy()

    values = np.ones((60, 4, 4))
    values[0, 0, 0] = np.nan
    source = as_chunk_source(dask_array.from_array(values, chunks=(1, 4, 4))
                             .map_blocks(counted))
    blocks = plan_blocks(source, block_bytes=8 * 16)
    assert len(blocks) == 60
    bases = [None] * 3
    with pytest.raises(tlc.NonFiniteValueError, match=r"\(0, 0, 0\)"):
        map_reduce(source, blocks, core_fold(bases), core_start(values.shape, bases),
                   n_tasks=2)
    assert len(reads) < 10


def test_any_gzip_file_is_streamed(tmp_path):
    # Mutant: `endswith(".gz")` -> `endswith(".nii.gz")` (choose_path's `path`: a gzip
    # file is decompressed whole whatever is read, an Analyze .img.gz as a .nii.gz).
    import tensorly_cross as tlc

    function = tlc.FunctionTensor(lambda idx: np.exp(-idx.sum(axis=1) / 8.0), (8, 8, 8))
    choice = tlc.choose_path(function, path=str(tmp_path / "volume.img.gz"))
    assert choice.method == "stream" and "gzip" in choice.reason


def test_a_mode_sketched_to_its_full_size_gets_no_sketch():
    # Mutant: `width >= shape[k]` -> `width > shape[k]` in sketch_factors (a mode as wide
    # as its sketch is kept whole, as range_bases does: its Gaussian factors were drawn,
    # contracted against every block in pass 1, and thrown away).
    from tensorly_cross.stream.sketch import sketch_factors

    factors = sketch_factors((4, 5, 6), (4, 3, 6), np.random.default_rng(0))
    assert factors[0] is None and factors[2] is None
    assert [None if f is None else f.shape for f in factors[1]] == [(4, 3), None, (6, 3)]


def test_a_max_rank_equal_to_the_asked_rank_is_not_blamed():
    # Mutant: `max(ranks) > caps` -> `>=` in _lowered_by (a max_rank equal to the asked
    # rank, which lowered nothing, was named as a cause).
    from tensorly_cross.stream.streaming import _lowered_by

    cause = _lowered_by((1, 3, 1), (1, 2, 1), (4, 4), 3)
    assert cause.startswith("the volume's own ranks") and "max_rank" not in cause
    assert _lowered_by((1, 4, 1), (1, 3, 1), (4, 4), 3).startswith("max_rank=3")


def test_a_leading_mode_of_size_one_takes_no_share_of_the_budget():
    # Mutant: `1 < left` -> `1 <= left` in _bonds_that_truncate (a (1, X, Y) volume's
    # first bond has rank 1 and drops nothing, as a trailing mode of size 1's does).
    from tensorly_cross.stream.streaming import _bonds_that_truncate

    assert _bonds_that_truncate((1, 4, 5)) == 1
    assert _bonds_that_truncate((4, 5, 1)) == 1
    assert _bonds_that_truncate((3, 4, 5)) == 2


def test_a_box_of_whole_slabs_is_one_contiguous_run():
    # Mutant: `split > 0` -> `split > 1` in _contiguous_runs (a block of whole slabs was
    # read as one run per slab, not "a single run" as documented).
    from tensorly_cross.stream.blocks import _contiguous_runs

    box = (slice(1, 3), slice(0, 4), slice(0, 5))
    assert list(_contiguous_runs((3, 4, 5), box)) == [(20, 40)]
    part = (slice(1, 3), slice(1, 3), slice(0, 5))
    assert list(_contiguous_runs((3, 4, 5), part)) == [(25, 10), (45, 10)]


# -- stream/streaming.py -------------------------------------------------------------------


def test_the_memory_check_counts_the_test_matrices_and_every_copy_the_qr_holds():
    # Mutants: the random test matrices (width x sum(shape) per sketched mode) left out of
    # the estimate, or one QR working copy fewer: an (n, 8) volume sketched at widths (8, 8)
    # needs 40 n entries (sketch 8n, its test matrix 8n, three more copies in the QR);
    # counted as 32 n, one needing 10/9 of the machine passed the check, to be killed for
    # memory after a full read.
    from tensorly_cross.stream.streaming import _check_memory, _physical_memory

    physical = _physical_memory()
    if physical is None:
        pytest.skip("the OS does not say how much memory this machine has")
    n = physical // (8 * 36)  # 40 n float64 entries: 10/9 of the memory; 32 n: 8/9
    with pytest.raises(MemoryError, match="Lower max_width"):
        _check_memory((n, 8), (8, 8))


def test_a_fixed_rank_volume_filling_the_core_budget_exactly_is_read_once(monkeypatch):
    # Mutant: the default outer width 2 max(rank) + 10 applied from a smaller size than
    # the budget (``>=``, or half of it): a volume within the budget was sketched (two
    # reads, an approximate basis) instead of taken whole (documented: "A volume within the
    # budget is not sketched: TT-SVD").
    from tensorly_cross import streaming_tt_svd
    from tensorly_cross.stream import streaming

    monkeypatch.setattr(streaming, "MAX_CORE_ENTRIES", 20 * 20 * 15)
    volume = np.random.default_rng(0).standard_normal((20, 20, 15))
    _, info = streaming_tt_svd(volume, rank=2, random_state=0, return_info=True)
    assert info.widths == (20, 20, 15) and info.n_passes == 1


@pytest.mark.parametrize("suffix", ["npy", "zarr"])
def test_streaming_a_transposed_volume_names_the_stored_voxel_of_a_nan(tmp_path, suffix):
    # tt_cross of a TransposedTensor names a NaN by the volume's own multi-index (as
    # test_transpose promises); streaming_tt_svd of the same view named the view's, in a
    # message saying the file "holds nan at" it: the file held a finite value there.
    dense = np.random.default_rng(0).standard_normal((6, 10, 9))
    dense[4, 7, 5] = np.nan
    path = tmp_path / f"volume.{suffix}"
    if suffix == "npy":
        np.save(path, dense)
    else:
        zarr = pytest.importorskip("zarr")
        stored = zarr.open(str(path), mode="w", shape=dense.shape, chunks=(3, 4, 4),
                           dtype="f8")
        stored[...] = dense
    view = TransposedTensor(tlc.open_volume(path), (2, 0, 1))
    with pytest.raises(tlc.NonFiniteValueError) as crossed:
        tlc.tt_cross(view, tol=1e-6, random_state=0, method="lsq")
    with pytest.raises(tlc.NonFiniteValueError, match=r"holds nan at multi-index \(4, 7, 5\)"
                       ) as streamed:
        tlc.streaming_tt_svd(view, tol=1e-6)
    assert crossed.value.index == streamed.value.index == (4, 7, 5)
    assert "(5, 4, 7)" in str(streamed.value)  # the view's multi-index, named as such


def test_streaming_a_transposed_volume_names_the_stored_block_of_a_failed_read(tmp_path):
    # A chunk that fails to decode: the stream of a TransposedTensor named the block in
    # the view's axes ("block [0:9, 0:6, 0:10] of zarr array ...", past the array's first
    # axis of 6) where the cross names the stored chunk.
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "volume.zarr"
    stored = zarr.open(str(path), mode="w", shape=LOW_RANK_SHAPE, chunks=(3, 4, 4), dtype="f8")
    stored[...] = _low_rank()
    chunk_files = sorted(name for name in path.rglob("*") if name.is_file()
                         and not name.name.startswith((".z", "zarr.json")))
    chunk_files[-1].write_bytes(b"not a compressed chunk")
    view = TransposedTensor(tlc.open_volume(path), (2, 0, 1))
    with pytest.raises(ChunkReadError, match=r"block \[0:6, 0:10, 0:9\] \(18 chunks\)"):
        tlc.streaming_tt_svd(view, tol=1e-6)


def _npy_with_header(path, header):
    """A .npy file (format 1.0) whose header text is ``header``, padded as NumPy pads it."""
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as stream:
        stream.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little"))
        stream.write(header.encode("latin1") + b"\0" * 1024)


@pytest.mark.parametrize("header", [
    "{'descr': '<f8', ",  # cut short: NumPy's tokenizer raised tokenize.TokenError
    "{'descr': '<f8', 'fortran_order': False, 'shape': (2, (3,",
])
def test_a_npy_header_cut_short_is_a_value_error_naming_the_file(tmp_path, header):
    from tensorly_cross.stream.blocks import volume_source

    path = tmp_path / "cut.npy"
    _npy_with_header(path, header)
    for open_it in (tlc.open_volume, volume_source):  # the cross's reader, the stream's
        with pytest.raises(ValueError, match=r"cut\.npy.*cut short or malformed"):
            open_it(str(path))


def test_a_npy_header_declaring_a_size_too_large_says_so(tmp_path):
    # Before: "its header declares a negative size" for a positive one too large to map.
    from tensorly_cross.stream.blocks import volume_source

    path = tmp_path / "huge.npy"
    _npy_with_header(path, "{'descr': '<f8', 'fortran_order': False, "
                           "'shape': (99999999999999999999,), }")
    for open_it in (tlc.open_volume, volume_source):
        with pytest.raises(ValueError, match=r"huge\.npy.*too large") as caught:
            open_it(str(path))
        assert "negative" not in str(caught.value)


def _nan_volume():
    volume = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    volume[:2] = np.nan  # a masked background
    return volume


def _fill_nan_noted(error):
    return any("fill_nan" in note for note in getattr(error.value, "__notes__", []))


def test_streaming_nan_in_a_npy_file_names_fill_nan(tmp_path):
    # tt_cross(open_volume(path)) notes fill_nan on a NaN voxel; the README's other read of
    # a stored volume, streaming_tt_svd(path), raised the bare "values must be finite".
    path = tmp_path / "map.npy"
    np.save(path, _nan_volume())
    with pytest.raises(tlc.NonFiniteValueError) as error:
        tlc.streaming_tt_svd(str(path), tol=0.1)
    assert _fill_nan_noted(error)


def test_streaming_nan_in_a_nifti_file_names_fill_nan(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    path = tmp_path / "map.nii.gz"
    nibabel.save(nibabel.Nifti1Image(_nan_volume(), np.eye(4)), path)
    with pytest.raises(tlc.NonFiniteValueError) as error:
        tlc.streaming_tt_svd(str(path), tol=0.1)
    assert _fill_nan_noted(error)
    # and the remedy it names works
    tt = tlc.streaming_tt_svd(tlc.open_volume(str(path), fill_nan=0.0), tol=0.1)
    assert tt.rank[0] == 1


def test_streaming_inf_is_not_sent_to_fill_nan(tmp_path):
    volume = _nan_volume()
    volume[:2] = 1.0
    volume[3, 3, 3] = np.inf  # an overflow, not a background: fill_nan would not help
    path = tmp_path / "overflow.npy"
    np.save(path, volume)
    with pytest.raises(tlc.NonFiniteValueError) as error:
        tlc.streaming_tt_svd(str(path), tol=0.1)
    assert not _fill_nan_noted(error)


def _relative_error(tt, array):
    dense = np.asarray(tl.to_numpy(tl.tt_to_tensor(tt)), dtype=np.float64)
    return np.linalg.norm(dense - array) / np.linalg.norm(array)


def test_a_jax_x32_stream_that_float32_cores_take_past_tol_warns(jax_x32):
    # StreamInfo.error ("exact") was 3e-16 for a returned TT 6e-8 away from the volume.
    array = _rank_two_plus_detail()
    with pytest.warns(ToleranceNotMetWarning, match="jax_enable_x64"):
        tt = tlc.streaming_tt_svd(array, tol=1e-10)
    assert tt[0].dtype == np.float32
    assert _relative_error(tt, array) > 1e-10


def _volume():
    return np.random.default_rng(0).random((6, 7, 8))


def test_streaming_tt_svd_takes_a_random_state_as_documented():
    volume = _volume()
    doc = " ".join(tlc.streaming_tt_svd.__doc__.split())
    assert "None, int, numpy RandomState or Generator" in doc
    first = tlc.streaming_tt_svd(volume, rank=2, random_state=np.random.RandomState(0))
    again = tlc.streaming_tt_svd(volume, rank=2, random_state=np.random.RandomState(0))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("read", ["stream", "open_volume"])
@pytest.mark.parametrize("container", ["numpy", "dask"])
def test_ml_dtypes_floats_are_streamed_and_opened_as_tt_cross_reads_them(dtype, read,
                                                                        container):
    # JAX's bfloat16 and float8 arrays (ml_dtypes', NumPy kind "V") were refused as not
    # "bool, integer and real floating-point arrays", though tt_cross reads them (as
    # float32, exactly), as the stream reads PyTorch's bfloat16.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    narrow = np.einsum("i,j,k->ijk", *[rng.random(n) + 0.5 for n in (5, 6, 7)]).astype(
        getattr(ml_dtypes, dtype))
    exact = narrow.astype(np.float32)  # every value of those types is a float32
    if container == "dask":
        da = pytest.importorskip("dask.array")
        narrow, exact = (da.from_array(array, chunks=(2, 3, 4)) for array in (narrow, exact))
    if read == "stream":
        got, expected = (tlc.streaming_tt_svd(volume, rank=2) for volume in (narrow, exact))
    else:
        got, expected = (tlc.tt_cross(tlc.open_volume(volume), rank=2, method="lsq",
                                      random_state=0) for volume in (narrow, exact))
    for core, other in zip(got, expected, strict=True):
        assert core.dtype == other.dtype
        np.testing.assert_array_equal(core, other)
