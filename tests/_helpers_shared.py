"""Helpers shared by several test files: volumes, views, functions and runs they build."""

import ctypes
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
import warnings

import numpy as np
import pytest
import tensorly as tl
import zarr
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import FunctionTensor, QuanticsTensor, TransposedTensor
from tensorly_cross._backend import to_host
from tensorly_cross.cross.bond import BondMatrix
from tensorly_cross.cross.init import clip_ranks
from tensorly_cross.cross.stopping import Validation
from tensorly_cross.errors import UnseenStructureWarning
from tensorly_cross.lazy.cache import EvaluationCache
from tensorly_cross.lazy.squeezed import SqueezedTensor

from .strategies import random_tt_cores, seeds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# prctl(PR_CAPBSET_DROP, ...) and the two capabilities that let root ignore file modes.
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2

FEATURE_SHAPE = (8, 8, 8, 8)


def _torch():
    torch = pytest.importorskip("torch")
    return torch


# -- api.py (outside this audit's files): differentiable=True returns another TT -----------


def _smooth_noisy():
    grid = np.linspace(0, 1, 12)
    dense = 1 / (1 + np.add.outer(np.add.outer(grid, grid), grid)[..., None] + grid)
    return dense + 0.01 * np.random.default_rng(0).standard_normal(dense.shape)


# -- cross/prrlu.py ------------------------------------------------------------------------


def _bond(dense):
    """``dense`` read as a one-row-prefix bond matrix through a fresh cache."""
    dense = np.asarray(dense, dtype=np.float64)
    cache = EvaluationCache(FunctionTensor(lambda idx: tl.tensor(dense[idx[:, 0], idx[:, 1]]),
                                           dense.shape))
    empty = np.zeros((1, 0), dtype=np.int64)
    return BondMatrix(cache, empty, dense.shape[0], dense.shape[1], empty)


def _slow_copy(block):
    import time

    time.sleep(0.02)
    return block.copy()


def astype_view(dataset, dtype):
    """``dataset.astype(dtype)``, h5py's view; skips where it is h5py 3.8's ``AstypeWrapper``
    (our floor), which has no shape: refused as any object without one."""
    view = dataset.astype(dtype)
    if not hasattr(view, "shape"):
        pytest.skip(f"{type(view).__name__} (h5py < 3.9) is not an array view")
    return view


def _inverse_sum(d=5, n=16):
    grid = np.linspace(1.0, 2.0, n)
    return tlc.FunctionTensor.on_grid(lambda x: 1.0 / x.sum(axis=1), [grid] * d)


def ones_with(bright, scale=1.0):
    """A function of ones but ``value`` at ``(i, i, i)`` for each ``i: value`` of
    ``bright``, all times ``scale``: a tensor with a few bright entries."""

    def function(indices):
        values = np.ones(indices.shape[0])
        for index, value in bright.items():
            values[np.all(indices == index, axis=1)] = value
        return values * scale

    return function


# from test_cache_edge_cases.py (and others)
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


# from test_cache_edge_cases.py (and others)
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


# from test_cache_edge_cases.py (and others)
VIEWS = {
    "transposed": lambda tensor: TransposedTensor(tensor, (2, 0, 1)),
    "quantics": QuanticsTensor,
    "quantics_of_transposed": lambda tensor: QuanticsTensor(TransposedTensor(tensor, (1, 2, 0)),
                                                            order="interleaved"),
    "squeezed": lambda tensor: SqueezedTensor(tensor, [0, 2, 3]),
}


# from test_cache_edge_cases.py (and others)
def _function_for(view_name, dense, fail_at=None):
    function = FailingFunction(dense[:, None] if view_name == "squeezed" else dense, fail_at)
    return function, FunctionTensor(function, function.dense.shape, chunk_size=5)


# from test_ranks_edge_cases.py (and others)
def _run_als(sweeper_class, n_iter_max, patience=None):
    import tensorly as tl

    from tensorly_cross.cross.driver import run_sweeps
    from tensorly_cross.cross.init import random_indices
    from tensorly_cross.cross.stopping import CrossInfo, Validation
    from tensorly_cross.lazy.cache import EvaluationCache
    from tensorly_cross.options import cross_options

    rng = np.random.default_rng(0)
    dense = rng.standard_normal((6, 7, 8)) + 5.0
    lazy = tlc.lazy_tensor(tl.tensor(dense))
    options = cross_options(lazy.shape, rank=3, method="als", tol=0.0, n_iter_max=n_iter_max,
                            patience=patience)
    cache = EvaluationCache(lazy)
    info = CrossInfo(method="als")
    _, cores = run_sweeps(cache, random_indices(lazy.shape, [1, 3, 3, 1], rng),
                          sweeper_class(rng), Validation(cache, 200, rng), info, options)
    error = np.linalg.norm(tl.to_numpy(tl.tt_to_tensor(cores)) - dense) / np.linalg.norm(dense)
    return info, error


# from test_ranks_edge_cases.py (and others)
def _blowing_up_at(call, factor=1e3):
    """The real ALS sweep whose ``call``-th assembly is scaled by ``factor`` (near-singular
    pivot blocks would do that)."""
    from tensorly_cross.cross.als import ALSSweeper
    from tensorly_cross.cross.assemble import assemble_cores

    class BlowsUp(ALSSweeper):
        calls = 0

        def assemble(self, cache, indices, result):
            self.calls += 1
            cores = assemble_cores(cache, indices, result)
            return [cores[0] * factor] + cores[1:] if self.calls == call else cores

    return BlowsUp


# from test_backends_edge_cases.py (and others)
def _backend(name):
    if name != "numpy":
        pytest.importorskip({"pytorch": "torch", "jax": "jax"}[name])
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    return tl.backend_context(name)


# from test_api_edge_cases.py (and others)
class Calls:
    """Entries ``1 + sum(i_k * 10**k)`` (distinct, exact); records each batch's size."""

    def __init__(self):
        self.batches = []

    def __call__(self, indices):
        self.batches.append(indices.shape[0])
        return 1.0 + indices @ (10.0 ** np.arange(indices.shape[1]))


# from test_gradients_edge_cases.py (and others)
class TimedFunction:
    """1/(1+sum); sleeps ``seconds_per_entry`` and adds the time it spent to ``spent``."""

    def __init__(self, seconds_per_entry=2e-4):
        self.seconds_per_entry, self.spent = seconds_per_entry, 0.0

    def __call__(self, indices):
        start = time.perf_counter()
        time.sleep(self.seconds_per_entry * indices.shape[0])
        self.spent += time.perf_counter() - start
        return 1.0 / (1.0 + indices.sum(axis=1))


# from test_api_edge_cases.py (and others)
def _anatomical_callable():
    nibabel = pytest.importorskip("nibabel")
    from nibabel.testing import data_path

    image = nibabel.load(os.path.join(data_path, "anatomical.nii"))
    data = np.asarray(image.dataobj, dtype=np.float64)
    return data, lambda indices: data[tuple(np.asarray(indices).T)]


# from test_backends_edge_cases.py (and others)
def _rank_one(complex_valued=False):
    rng = np.random.default_rng(0)
    factors = [rng.uniform(0.5, 2.0, n) for n in (4, 5, 6)]
    if complex_valued:
        factors[0] = factors[0] * np.exp(1j * rng.uniform(0, 2 * np.pi, 4))
    return np.einsum("i,j,k->ijk", *factors)


# from test_lsq_and_refinement_edge_cases.py (and others)
def _random_tt_array(shape, ranks, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal((ranks[k], n, ranks[k + 1])) for k, n in enumerate(shape)]
    if np.issubdtype(dtype, np.complexfloating):
        cores = [core + 1j * rng.standard_normal(core.shape) for core in cores]
    dense = cores[0].reshape(shape[0], -1)
    for core in cores[1:]:
        dense = (dense @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[2])
    return dense.reshape(shape).astype(dtype)


# from test_precision_edge_cases.py (and others)
def _rank_two_plus_detail():
    """A float64 array of rank above 2 whose tail (1e-5 relative) float32 cannot hold to
    1e-10: a TT meets ``tol=1e-10`` in float64, none in float32."""
    rng = np.random.default_rng(0)
    low = np.einsum("ir,jr,kr->ijk", *[rng.random((n, 2)) for n in (12, 13, 14)])
    detail = np.einsum("i,j,k->ijk", np.sin(np.arange(12)), np.arange(13.0) ** 2 / 100,
                       np.cos(np.arange(14)))
    return low + 1e-3 * detail


# from test_api_with_dask.py (and others)
def _open_as(kind, volume, folder, fill):
    if kind == "npy":
        np.save(folder / "v.npy", volume)
        return tlc.open_volume(str(folder / "v.npy"), fill_nan=fill)
    store = zarr.open_array(str(folder / "v.zarr"), mode="w", shape=volume.shape,
                            chunks=(4, 4, 4), dtype=volume.dtype)
    store[...] = volume
    return tlc.open_volume(str(folder / "v.zarr"), fill_nan=fill)


# from test_api_with_dask.py (and others)
def _binary_blobs(seed, shape=(40, 44, 36)):
    """The brightest fifth of a blob phantom as 1, the rest 0: a binary mask."""
    from tensorly_cross.datasets import blob_phantom

    grid = np.stack(np.unravel_index(np.arange(np.prod(shape)), shape), axis=1)
    values = np.asarray(blob_phantom(shape, seed=seed)(grid), dtype=np.float64).reshape(shape)
    return (values > np.quantile(values, 0.8)).astype(np.float64)


# from test_precision_edge_cases.py (and others)
def _peak_bytes(function, *args):
    tracemalloc.start()
    try:
        result = function(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# from test_api_edge_cases.py (and others)
def _unseen_warnings(validation, error, residuals=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(error, residuals=residuals)
    return [w for w in caught if issubclass(w.category, UnseenStructureWarning)]


# from test_budgets_edge_cases.py (and others)
def _with_rank(config, rank):
    """``config`` with the problem's largest rank where the method fixes one."""
    config = dict(config)
    if config.get("rank", 0) is None:
        del config["rank"]  # the rank-adaptive least-squares cross
    elif config["method"] in ("als", "block") or (config["method"] == "lsq"):
        config["rank"] = max(rank)
    return config


# from test_backends_edge_cases.py (and others)
def _as_kind(core, kind):
    if kind == "numpy":
        return core
    if kind == "torch":
        return _torch().tensor(core)
    return _jax().numpy.asarray(core)


# from test_checkpoint_edge_cases.py (and others)
def _reference_cores():
    import tensorly_cross as tlc

    grid = np.linspace(1.0, 2.0, 16)
    function = tlc.FunctionTensor(lambda idx: 1.0 / grid[idx].sum(axis=1), (16,) * 6)
    return tlc.tt_cross(function, tol=1e-8, random_state=0).factors


# from test_dropin_edge_cases.py (and others)
def _low_rank_tensor(shape, rank, seed):
    """A NumPy tensor of TT rank at most ``rank`` (whatever the active backend)."""
    with tl.backend_context("numpy"):
        return tl.tt_to_tensor(random_tt_cores(shape, clip_ranks(shape, rank), seed))


# from test_stopping_edge_cases.py (and others)
@st.composite
def _small_tts(draw):
    """(shape, ranks, seed) of a random TT with modes of size 1 and 2 among others."""
    d = draw(st.integers(2, 5))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=d, max_size=d)))
    inner = draw(st.lists(st.integers(1, 3), min_size=d - 1, max_size=d - 1))
    return shape, tuple(clip_ranks(shape, [1, *inner, 1])), draw(seeds)


# from test_api_edge_cases.py (and others)
def _function_tensor():

    import tensorly_cross as tlc

    return tlc.FunctionTensor(lambda idx: 1.0 / (1.0 + idx.sum(axis=1)), (8,) * 3)


# from test_api_edge_cases.py (and others)
def _masked_cores():
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal(shape) for shape in [(1, 2, 2), (2, 2, 2), (2, 2, 1)]]
    cores[1] = np.ma.masked_array(cores[1], mask=cores[1] > 0)
    return cores


# from test_prrlu_edge_cases.py (and others)
def _corner_feature():
    """Zero but for the corner where every index is >= 4 (1/16 of the entries)."""
    dense = np.zeros(FEATURE_SHAPE)
    dense[4:, 4:, 4:, 4:] = 1.0
    return dense


# from test_views_edge_cases.py (and others)
def _noisy_smooth(shape, seed):
    grid = np.indices(shape)
    noise = np.random.default_rng(seed).standard_normal(shape)
    return np.sin(grid.sum(0) / 3.0) + 1.0 / (1.0 + grid[0] * grid[-1]) + 1e-3 * noise


# from test_api_edge_cases.py (and others)
def _nibabel_image(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    path = tmp_path / "scan.nii.gz"
    volume = np.random.default_rng(2).random((6, 7, 8)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)
    return nibabel.load(path), str(path)


# from test_backends_edge_cases.py (and others)
def _jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


# from test_checkpoint_edge_cases.py (and others)
FAILING_GRID = np.linspace(1.0, 2.0, 10)


FAILING_SHAPE = (10,) * 4


class Failing:
    """A smooth function of rank > 1 that counts what it computes and raises a
    RuntimeError on the call that would take its count past ``fail_after``."""

    def __init__(self, fail_after=None):
        self.computed, self.fail_after = 0, fail_after

    def __call__(self, indices):
        if self.fail_after is not None and self.computed + len(indices) > self.fail_after:
            raise RuntimeError("transient failure")
        self.computed += len(indices)
        x = FAILING_GRID[indices]
        return 1.0 / x.sum(axis=1) + 0.1 * np.sin(x[:, 0] * x[:, -1])


def _chunked(function):
    # In chunks: a failed batch's finished chunks go to the checkpoint, so the rerun's
    # batch at that point is read back in part.
    return tlc.FunctionTensor(function, FAILING_SHAPE, chunk_size=5)


# from the zarr/hdf5/dask modules and test_reliability.py
def save_npy(path, array):
    """``array`` saved as a .npy file at ``path``, whose name (a str) is returned."""
    np.save(path, array)
    return str(path)


# from test_cli_edge_cases.py and test_volumes_edge_cases.py
def _smooth_cube(size=16, noise=1e-3, seed=0):
    """A smooth ``size``^3 volume, ``1 / (1 + x + y + z)`` on [0, 1]^3, plus Gaussian noise of
    standard deviation ``noise``."""
    grid = np.linspace(0.0, 1.0, size)
    values = 1.0 / (1.0 + np.add.outer(np.add.outer(grid, grid), grid))
    return values + noise * np.random.default_rng(seed).standard_normal(values.shape)


# from test_api_edge_cases.py, test_cli_edge_cases.py and test_volumes_edge_cases.py
def _random_tt(shape, rank=2, seed=0):
    """NumPy cores of a random TT of ``shape`` and inner ranks ``rank``."""
    rng = np.random.default_rng(seed)
    ranks = [1] + [rank] * (len(shape) - 1) + [1]
    return [rng.standard_normal((ranks[k], n, ranks[k + 1])) for k, n in enumerate(shape)]


def _dense(cores):
    """The dense NumPy tensor of a TT given by its NumPy ``cores``."""
    result = np.ones((1, 1))
    for core in cores:
        result = result.reshape(-1, core.shape[0]) @ core.reshape(core.shape[0], -1)
    return result.reshape([core.shape[1] for core in cores])


# from test_gradients_edge_cases.py, test_stream_edge_cases.py and test_views_edge_cases.py
# A small rank-2 tensor of shape (3, 4, 2), and its complex companion.
_RNG_13 = np.random.default_rng(13)


TENSOR = sum(np.einsum("i,j,k->ijk", *(_RNG_13.standard_normal(n) for n in (3, 4, 2)))
             for _ in range(2))


COMPLEX = TENSOR + 1j * TENSOR[::-1]


def _full(tt):
    """The dense NumPy tensor of a TT (of any backend), from its host cores."""
    with tl.backend_context("numpy"):
        return tl.tt_to_tensor([to_host(core) for core in tt])


# from test_dask.py, test_parallel.py and the parallel, stream and volumes edge-case modules
def _same_tt(first, second):
    """Assert that two TTs (of any backend) have the same cores, to the bit."""
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(to_host(a), to_host(b))


# from test_views_edge_cases.py and test_volumes_edge_cases.py
def _same_cross_result(first, second):
    """Assert that two ``(tt, info)`` pairs of ``tt_cross(..., return_info=True)`` are the
    same: ranks, cores to the bit, evaluations, sweeps and stop reason."""
    (tt, info), (other, other_info) = first, second
    assert tt.rank == other.rank
    for core, other_core in zip(tt.factors, other.factors, strict=True):
        np.testing.assert_array_equal(tl.to_numpy(core), tl.to_numpy(other_core))
    assert (info.n_evals, info.n_sweeps, info.stop_reason) == (
        other_info.n_evals, other_info.n_sweeps, other_info.stop_reason)


# from the cache, checkpoint, lsq_and_refinement, stream and views edge-case modules
LOW_RANK_SHAPE = (6, 10, 9)


def _low_rank(shape=LOW_RANK_SHAPE, rank=2, seed=0):
    """A NumPy tensor of ``shape`` (up to 4 modes): a sum of ``rank`` random outer products."""
    rng = np.random.default_rng(seed)
    factors = [rng.standard_normal((n, rank)) for n in shape]
    letters = "ijkl"[: len(shape)]
    return np.einsum(",".join(f"{c}r" for c in letters) + "->" + letters, *factors)


# from test_budgets_edge_cases.py and test_stopping_edge_cases.py
# Every method and pivot search, as tt_cross takes them (rank filled in per problem).
CROSS_CONFIGS = [{"method": "tci", "pivot_search": search}
                 for search in ("column", "rook", "full", "auto", "batched")] + [
    {"method": "als"}, {"method": "lsq"}, {"method": "lsq", "rank": None}, {"method": "block"},
    {"method": "als", "oversample": 2.0}, {"method": "auto"}]


CROSS_CONFIG_IDS = ["-".join(str(value) for value in config.values())
                    for config in CROSS_CONFIGS]


# from test_error_estimates_edge_cases.py and test_tci_and_pivots_edge_cases.py
def _noisy_ramp(shape, seed, noise=0.01):
    """``1 / (1 + i + j + ...)`` on ``shape`` plus Gaussian noise of deviation ``noise``."""
    grid = np.indices(shape).astype(float)
    return 1.0 / (1.0 + grid.sum(0)) + noise * np.random.default_rng(seed).standard_normal(shape)


def _true_error(tt, dense):
    """The relative Frobenius error of ``tt`` against the NumPy array ``dense``."""
    approx = tl.to_numpy(tl.tt_to_tensor(tt)).reshape(dense.shape)
    return np.linalg.norm(approx - dense) / np.linalg.norm(dense)


# from the api, error_estimates and precision edge-case modules
VALIDATION_SHAPE = (40, 40, 40)


def _validation(function, tol=0.1, size=1000, seed=0):
    """An evaluation cache of ``function`` on ``VALIDATION_SHAPE`` and a held-out
    Validation of ``size`` entries drawn through it."""
    cache = EvaluationCache(FunctionTensor(function, VALIDATION_SHAPE))
    return cache, Validation(cache, size, np.random.default_rng(seed), tol=tol)


def _ones(indices):
    return np.ones(indices.shape[0])


def _ones_cores(scale=1.0):
    """Rank-1 cores of the all-``scale`` tensor of ``VALIDATION_SHAPE``."""
    return [np.full((1, n, 1), scale if k == 0 else 1.0) for k, n in enumerate(VALIDATION_SHAPE)]


# from test_backends_edge_cases.py and test_cache_edge_cases.py
def _numpy_of(tensor):
    """A backend tensor as a NumPy array (through ``tl.to_numpy``)."""
    return np.asarray(tl.to_numpy(tensor))


def _rank_one_cross(tensor, shape=None):
    """A rank-1 ALS cross of ``tensor`` (seed 0), its warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rank-1 TT of rounded data: no news here
        return tlc.tt_cross(tensor, shape=shape, rank=1, method="als", random_state=0)


# from test_cli_with_dask.py and test_volumes_with_dask.py
def _zarr_volume(path, shape, chunks):
    """A zarr array at ``path`` holding 0, 1, 2, ... in C order, and those values."""
    data = np.arange(float(np.prod(shape))).reshape(shape)
    array = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="f8")
    array[...] = data
    return array, data


# from test_api_edge_cases.py and test_checkpoint_edge_cases.py
SMOOTH_SHAPE = (12, 10, 8)


def smooth(idx):
    """A function of TT ranks (1, 10, 2, 1) on ``SMOOTH_SHAPE``."""
    return np.exp(-idx.sum(axis=1) / 10.0) + np.sin(idx[:, 0] * idx[:, 1] / 3.0)


# from test_backends_edge_cases.py, test_dtypes_and_reads_edge_cases.py and test_value_types.py
# sqrt(c - (i + j + k)) is real below the corner and imaginary at (15, 15, 15) only.
BRANCH = 43.5


def _scimath_sqrt(indices):
    """Real batches, and a complex one for a batch that holds the corner (as
    ``np.emath.sqrt`` returns them)."""
    return np.emath.sqrt(BRANCH - indices.sum(axis=1))


# from test_api_with_dask.py and test_volumes_with_dask.py
def _nan_volume(dtype):
    """A random 8^3 volume of ``dtype`` with NaN at (0, 0, 0) and (5, 3, 1)."""
    volume = np.random.default_rng(1).random((8, 8, 8)).astype(dtype)
    volume[0, 0, 0] = volume[5, 3, 1] = np.nan
    return volume


# from the backends, gradients and lsq_and_refinement edge-case modules
def _rank_three(shape, seed=0):
    """A rank-3 array of largest modulus 1."""
    rng = np.random.default_rng(seed)
    array = np.einsum("ir,jr,kr->ijk", *[rng.standard_normal((n, 3)) for n in shape])
    return array / np.abs(array).max()
