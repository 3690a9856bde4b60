"""Audit s32 (second review): defects in this session's latest fixes, and next to them.

* ``Regressor.set_target_scale`` took targets that require grad (ages computed from a
  tensor in a graph) as they were: its buffers joined their graph (``CopyBackwards``), so
  the second training step failed with torch's "Trying to backward through the graph a
  second time" and ``copy.deepcopy(model)`` with "Only Tensors created explicitly by the
  user (graph leaves)". Targets are data: they are detached, as ``VolumeDataset`` does.
  Finite targets whose mean overflows the float32 buffers (1e39) made every prediction
  inf; they are refused by name.
* Once a small tensor was read whole, TCI swept to ``n_iter_max`` with ranks going back
  and forth between two tuples and the exact error unchanged (a 7x2x4 mask: 50 sweeps at
  0.5145, every entry cached): a change of ranks counted as progress for the stall rule
  even back to ranks an earlier sweep had. Once the errors are exact, ranks seen before
  are no progress; runs that have not read the whole tensor are unchanged.
* The missed-read-entry sign of ``UnseenStructureWarning``, now named at the data's own
  scale, raised ``OverflowError: math range error`` out of the cross where the TT's miss
  at an entry near 2**1021 is beyond float64 at that scale; it is named as inf.
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.nn import CrossEmbedding  # noqa: E402
from tensorly_cross.nn.training import Regressor  # noqa: E402


def test_set_target_scale_takes_targets_that_require_grad_as_data():
    model = Regressor(CrossEmbedding(n_outputs=2), 2)
    ages = torch.tensor([30.0, 40.0, 50.0], requires_grad=True)
    model.set_target_scale(ages * 1.0)  # a tensor of a graph
    assert model.target_mean.grad_fn is None and not model.target_mean.requires_grad
    assert model.target_scale.grad_fn is None and not model.target_scale.requires_grad
    assert model.target_mean.tolist() == [40.0]
    assert model.target_scale.tolist() == pytest.approx([10.0])
    copied = copy.deepcopy(model)  # refused for buffers in a graph
    assert copied.target_mean.tolist() == [40.0]
    assert ages.grad is None


def test_set_target_scale_refuses_targets_whose_statistics_overflow_the_buffers():
    # Before: finite float64 targets beyond float32 gave a mean and a scale of inf in the
    # float32 buffers, and so every prediction.
    model = Regressor(CrossEmbedding(n_outputs=2), 2)
    with pytest.raises(ValueError, match="overflows torch.float32"):
        model.set_target_scale(np.array([1e39, 3e39]))
    assert model.target_mean.tolist() == [0.0] and model.target_scale.tolist() == [1.0]
    model.double().set_target_scale(np.array([1e39, 3e39]))  # a float64 model holds them
    assert model.target_mean.tolist() == [2e39]


def _mask_719():
    rng = np.random.default_rng(719)
    shape = tuple(int(x) for x in rng.integers(2, 9, size=rng.integers(2, 5)))
    return (rng.random(shape) > 0.7).astype(float)


def test_tci_stalls_on_ranks_going_back_and_forth_once_its_errors_are_exact():
    import tensorly as tl

    import tensorly_cross as tlc

    dense = _mask_719()
    assert dense.shape == (7, 2, 4)
    tt, info = tlc.tt_cross(dense, method="tci", tol=0.01, val_size=10, max_rank=4,
                            random_state=719, return_info=True)
    assert info.n_evals == dense.size  # read whole: the errors are exact
    # Before: 50 sweeps ("n_iter_max"), ranks (4, 4), (4, 3), (4, 4), ... at 0.5145.
    assert info.stop_reason == "stalled" and info.n_sweeps < 10
    # Not worse than after 50 sweeps (0.4851, sweep 3): here the refinement over the last
    # sweeps' fibers, then run, lowers it (0.4310).
    assert info.val_error <= 0.48507126
    approx = tl.to_numpy(tl.tt_to_tensor(tt))
    assert np.linalg.norm(approx - dense) / np.linalg.norm(dense) == pytest.approx(
        info.val_error, rel=1e-9)


def test_a_miss_beyond_float64_at_the_data_s_scale_is_named_not_raised():
    import warnings

    from tensorly_cross import FunctionTensor
    from tensorly_cross.cross.scaling import ShrunkTensor
    from tensorly_cross.cross.stopping import Validation
    from tensorly_cross.errors import UnseenStructureWarning
    from tensorly_cross.lazy.cache import EvaluationCache

    from .test_audit_s32_mutants import ones_with

    shape = (40, 40, 40)

    # Ones and one entry of 40, near float64's top (2**1021.3).
    corner = ones_with({39: 40.0}, scale=2.0**1016)

    cache = EvaluationCache(ShrunkTensor(FunctionTensor(corner, shape)))
    validation = Validation(cache, 1000, np.random.default_rng(0), tol=0.1)
    cache.evaluate(np.array([[39, 39, 39]]))
    one = validation.max_abs  # a data 1 * 2**1016, at the scale the cross ran at
    # The TT of -300 there: it misses the corner by 340 * 2**1016, past float64.
    cores = [np.full((1, n, 1), -300.0 * one if k == 0 else 1.0) for k, n in enumerate(shape)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(0.0, cores=cores)  # before: OverflowError
    messages = [str(w.message) for w in caught if w.category is UnseenStructureWarning]
    assert len(messages) == 1
    assert f"(39, 39, 39), {40 * 2.0**1016:.3g}, and the TT missed by inf" in messages[0]
