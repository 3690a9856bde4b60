"""Audit (session 30) review of this session's changes for regressions they introduced.

* A read with gradient through an :class:`EvaluationCache` (``tt_cross(...,
  differentiable=True)``) computed the batch's first entry twice (a probe, then the whole
  batch afresh): the function computed one entry per batch more than ``CrossInfo.n_evals``
  counted.
"""
import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc


def _counting_function(weight, seen):
    torch = pytest.importorskip("torch")

    def function(indices):
        seen.append(np.asarray(indices).copy())
        x = torch.as_tensor(np.asarray(indices), dtype=torch.float64)
        return torch.sin(weight * x.sum(1) / 10) + 1

    return function


def _weighted_cache():
    """A cache over a function of a parameter ``weight``, recording every batch it sees."""
    torch = pytest.importorskip("torch")
    weight = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    seen = []
    cache = tlc.EvaluationCache(tlc.FunctionTensor(_counting_function(weight, seen), (8, 8, 8)))
    return torch, weight, seen, cache


def test_cache_read_with_graph_computes_each_entry_once():
    torch, weight, seen, cache = _weighted_cache()
    with tl.backend_context("pytorch"):
        tt, info = tlc.tt_cross(cache, rank=3, differentiable=True, return_info=True,
                                random_state=0)
        tl.sum(tt.to_tensor()).backward()
    n_seen = sum(rows.shape[0] for rows in seen)
    assert weight.grad is not None and float(weight.grad) != 0.0
    assert n_seen == info.n_evals == cache.counters.unique
    counters = cache.counters
    assert counters.requested - counters.cache_hits == counters.unique


def test_cache_read_with_graph_returns_the_batch_in_order():
    torch, weight, seen, cache = _weighted_cache()
    with tl.backend_context("pytorch"):
        index_sets = tlc.select_indices(cache, rank=2, random_state=0)
        with torch.no_grad():
            cached = tlc.cross_interpolate(cache, index_sets).to_tensor()
        seen.clear()
        before = cache.counters.unique
        fresh = tlc.cross_interpolate(cache, index_sets).to_tensor()
    assert fresh.requires_grad
    assert sum(rows.shape[0] for rows in seen) == cache.counters.unique - before
    np.testing.assert_allclose(fresh.detach().numpy(), cached.numpy(), atol=1e-10)


class _ParameterModel:
    """A callable whose attributes are looked up in a dict: an unknown one is a KeyError."""

    def __init__(self):
        self.__dict__["params"] = {"scale": 1.0}

    def __getattr__(self, name):
        return self.params[name]

    def __call__(self, indices):
        return 1.0 / (1.0 + self.scale * np.asarray(indices, dtype=float).sum(1))


@pytest.mark.parametrize("chunk_size", [None, 50])
def test_function_whose_getattr_raises_is_still_evaluated(chunk_size):
    # Naming the function for messages looked up attributes it lacks on every read: a
    # KeyError from its __getattr__ failed a run that worked before.
    tensor = tlc.FunctionTensor(_ParameterModel(), (6,) * 4, chunk_size=chunk_size)
    tt = tlc.tt_cross(tensor, rank=6, random_state=0)
    indices = np.array([[0, 1, 2, 3], [5, 5, 5, 5]])
    np.testing.assert_allclose(tlc.tt_entries(tt, indices), 1.0 / (1.0 + indices.sum(1)),
                               rtol=1e-6)


class _NaNModel(_ParameterModel):
    def __call__(self, indices):
        return np.full(np.asarray(indices).shape[0], np.nan)


def test_function_whose_getattr_raises_is_named_by_its_class():
    tensor = tlc.FunctionTensor(_NaNModel(), (3, 3))
    with pytest.raises(ValueError, match="FunctionTensor of _NaNModel returned"):
        tensor.evaluate(np.array([[0, 0]]))


class _IndexedVolumes:
    """Volumes by index (``__getitem__`` and ``__len__``, no ``__iter__``): a sequence to
    ``list()``, through Python's old sequence protocol."""

    def __init__(self, volumes):
        self._volumes = volumes

    def __getitem__(self, k):
        return self._volumes[k]

    def __len__(self):
        return len(self._volumes)


def test_volume_dataset_takes_a_sequence_without_iter():
    pytest.importorskip("torch")
    from tensorly_cross.nn.dataset import VolumeDataset

    volumes = [np.full((4, 4, 4), float(k), dtype=np.float32) for k in range(3)]
    dataset = VolumeDataset(_IndexedVolumes(volumes), [0.0, 1.0, 2.0])
    assert len(dataset) == 3
    np.testing.assert_array_equal(np.asarray(dataset[2][0]), volumes[2])
    with pytest.raises(TypeError, match="volumes must be a sequence"):
        VolumeDataset(None, [])
