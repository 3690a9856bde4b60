"""Audit s30 (compose): the lazy-tensor views composed with each other and with the run's
options (checkpoint, chunked functions, counts)."""

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross import EvaluationCache, FunctionTensor, QuanticsTensor, TransposedTensor
from tensorly_cross.lazy.sources import ChunkReadError
from tensorly_cross.lazy.squeezed import SqueezedTensor

SHAPE = (6, 10, 9)


def _low_rank(shape=SHAPE, rank=2, seed=0):
    rng = np.random.default_rng(seed)
    factors = [rng.standard_normal((n, rank)) for n in shape]
    letters = "ijkl"[: len(shape)]
    return np.einsum(",".join(f"{c}r" for c in letters) + "->" + letters, *factors)


class FailingFunction:
    """Entries of ``dense``, recording every multi-index computed; the call numbered
    ``fail_at`` (from 1) raises instead."""

    def __init__(self, dense, fail_at=None):
        self.dense, self.fail_at, self.calls, self.computed = dense, fail_at, 0, []

    def __call__(self, indices):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("lost a node")
        self.computed.append(indices.copy())
        return self.dense[tuple(indices.T)]

    @property
    def n_computed(self):
        return sum(len(part) for part in self.computed)


VIEWS = {
    "transposed": lambda tensor: TransposedTensor(tensor, (2, 0, 1)),
    "quantics": QuanticsTensor,
    "quantics_of_transposed": lambda tensor: QuanticsTensor(TransposedTensor(tensor, (1, 2, 0)),
                                                            order="interleaved"),
    "squeezed": lambda tensor: SqueezedTensor(tensor, [0, 2, 3]),
}


def _function_for(view_name, dense, fail_at=None):
    function = FailingFunction(dense[:, None] if view_name == "squeezed" else dense, fail_at)
    return function, FunctionTensor(function, function.dense.shape, chunk_size=5)


@pytest.mark.parametrize("view_name", sorted(VIEWS))
def test_cache_counts_finished_chunks_through_a_view(view_name):
    # A batch in chunks that fails part way: the cache counts the chunks the function
    # finished (they were computed). Through a view they went uncounted: TransposedTensor
    # under max_time reported "after 220 evaluations" when the function had run 235.
    dense = _low_rank()
    function, tensor = _function_for(view_name, dense, fail_at=4)
    view = VIEWS[view_name](tensor)
    cache = EvaluationCache(view)
    rng = np.random.default_rng(1)
    flat = rng.choice(view.size, size=40, replace=False)
    indices = np.stack(np.unravel_index(flat, view.shape), axis=1)
    with pytest.raises(RuntimeError, match="lost a node"):
        cache.evaluate(indices)
    assert function.n_computed == 15
    assert cache.counters.unique == function.n_computed


@pytest.mark.parametrize("view_name", ["transposed", "quantics_of_transposed"])
def test_checkpoint_keeps_finished_chunks_through_a_view(tmp_path, view_name):
    # The chunks a function finished before a failure are kept by a checkpoint, so that
    # the rerun does not compute them again; through a view they were all lost.
    dense = _low_rank()
    path = tmp_path / "run.ckpt"
    reference = FailingFunction(dense)
    expected = tlc.tt_cross(VIEWS[view_name](FunctionTensor(reference, SHAPE)), tol=1e-10,
                            random_state=2)
    function, tensor = _function_for(view_name, dense, fail_at=30)
    with pytest.raises(RuntimeError, match="lost a node"):
        tlc.tt_cross(VIEWS[view_name](tensor), tol=1e-10, random_state=2, checkpoint=path)
    first = {tuple(row) for row in np.concatenate(function.computed)}
    rerun, tensor = _function_for(view_name, dense)
    tt, info = tlc.tt_cross(VIEWS[view_name](tensor), tol=1e-10, random_state=2,
                            checkpoint=path, return_info=True)
    second = {tuple(row) for row in np.concatenate(rerun.computed)}
    assert not first & second  # nothing computed twice
    assert info.n_restored == len(first)
    assert info.n_evals == len(first) + len(second)
    for core, expected_core in zip(tt.factors, expected.factors, strict=True):
        np.testing.assert_array_equal(core, expected_core)


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


def test_oversampled_als_keeps_and_counts_finished_chunks(tmp_path):
    # method="als" with oversample > 1 runs on a one-channel view of the tensor: the
    # finished chunks of a failed batch were neither kept by the checkpoint nor counted,
    # even without a view of the user's.
    dense = _low_rank()
    settings = dict(rank=2, method="als", oversample=2, random_state=4)
    reference = FailingFunction(dense)
    expected = tlc.tt_cross(FunctionTensor(reference, SHAPE), **settings)
    function = FailingFunction(dense, fail_at=12)
    path = tmp_path / "als.ckpt"
    with pytest.raises(RuntimeError, match="lost a node"):
        tlc.tt_cross(FunctionTensor(function, SHAPE, chunk_size=5), checkpoint=path, **settings)
    first = {tuple(row) for row in np.concatenate(function.computed)}
    rerun = FailingFunction(dense)
    tt, info = tlc.tt_cross(FunctionTensor(rerun, SHAPE, chunk_size=5), checkpoint=path,
                            return_info=True, **settings)
    second = {tuple(row) for row in np.concatenate(rerun.computed)}
    assert not first & second
    assert info.n_restored == len(first)
    for core, expected_core in zip(tt.factors, expected.factors, strict=True):
        np.testing.assert_array_equal(core, expected_core)


def test_oversampled_als_cache_counts_finished_chunks():
    from tensorly_cross.cross.oversampled import OneChannel

    function = FailingFunction(_low_rank(), fail_at=4)
    cache = EvaluationCache(OneChannel(FunctionTensor(function, SHAPE, chunk_size=5)))
    indices = np.stack(np.unravel_index(np.arange(0, 400, 7), cache.shape), axis=1)
    with pytest.raises(RuntimeError, match="lost a node"):
        cache.evaluate(indices)
    assert cache.counters.unique == function.n_computed == 15


def test_streaming_a_transposed_volume_names_the_stored_block_of_a_failed_read(tmp_path):
    # A chunk that fails to decode: the stream of a TransposedTensor named the block in
    # the view's axes ("block [0:9, 0:6, 0:10] of zarr array ...", past the array's first
    # axis of 6) where the cross names the stored chunk.
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "volume.zarr"
    stored = zarr.open(str(path), mode="w", shape=SHAPE, chunks=(3, 4, 4), dtype="f8")
    stored[...] = _low_rank()
    chunk_files = sorted(name for name in path.rglob("*") if name.is_file()
                         and not name.name.startswith((".z", "zarr.json")))
    chunk_files[-1].write_bytes(b"not a compressed chunk")
    view = TransposedTensor(tlc.open_volume(path), (2, 0, 1))
    with pytest.raises(ChunkReadError, match=r"block \[0:6, 0:10, 0:9\] \(18 chunks\)"):
        tlc.streaming_tt_svd(view, tol=1e-6)


class Doubled(tlc.LazyTensor):
    """A view of the user's own (``.lazy``, as the library's views): twice the entries."""

    def __init__(self, lazy):
        super().__init__(lazy.shape)
        self.lazy = lazy

    def _evaluate(self, indices):
        return 2.0 * np.asarray(self.lazy.evaluate_checked(indices))


@pytest.mark.parametrize("first, second", [
    (lambda x: QuanticsTensor(x, "grouped"), lambda x: QuanticsTensor(x, "interleaved")),
    (lambda x: TransposedTensor(x, (1, 0, 2)), lambda x: TransposedTensor(x, (0, 1, 2))),
])
def test_checkpoint_sees_views_below_a_view_of_the_users(tmp_path, first, second):
    # The views bound into a checkpoint were looked for at the top only: under a view of
    # the user's own, a checkpoint of the grouped digits resumed as interleaved ones gave
    # a TT with error 1.33 reported as 1.6e-15.
    dense = _low_rank((8, 8, 8))
    path = tmp_path / "run.ckpt"
    tlc.tt_cross(Doubled(first(tlc.ArrayTensor(dense))), tol=1e-10, random_state=0,
                 checkpoint=path)
    with pytest.raises(tlc.CheckpointMismatchError, match="views"):
        tlc.tt_cross(Doubled(second(tlc.ArrayTensor(dense))), tol=1e-10, random_state=0,
                     checkpoint=path)


@pytest.mark.parametrize("view_name", ["transposed", "quantics_of_transposed"])
def test_function_seconds_through_a_view_are_the_functions(view_name):
    # CrossInfo.function_seconds is the time inside a FunctionTensor's function (summed
    # over an executor's chunks); through a view the run reported its waits instead.
    from concurrent.futures import ThreadPoolExecutor

    dense = _low_rank()
    with ThreadPoolExecutor(2) as executor:
        tensor = FunctionTensor(FailingFunction(dense), SHAPE, executor=executor,
                                chunk_size=7)
        _, info = tlc.tt_cross(VIEWS[view_name](tensor), tol=1e-10, random_state=0,
                               return_info=True)
    assert tensor.function_seconds > 0
    assert info.function_seconds == pytest.approx(tensor.function_seconds, rel=1e-9)
