"""Tests of views of tensors: quantics, transposed and squeezed views."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import (
    ArrayTensor,
    FunctionTensor,
    QuanticsLayout,
    TransposedTensor,
)
from tensorly_cross.lazy.squeezed import SqueezedTensor

from ._helpers_shared import (
    COMPLEX,
    LOW_RANK_SHAPE,
    VIEWS,
    FailingFunction,
    _full,
    _low_rank,
    _noisy_smooth,
    _same_cross_result,
    _torch,
)
from .strategies import seeds

# lazy/base.py and cross/tt_entries.py read torch by hand (no resolve_neg, no meta check):
# both now read through _backend.to_host --------------------------------------------------


@pytest.mark.parametrize("view", ["conj", "neg"])
def test_function_tensor_of_torch_views_under_numpy(view):
    """The same FunctionTensor worked under PyTorch (and dense views under every backend)."""
    torch = _torch()
    source = torch.tensor(COMPLEX)
    expected = np.conj(COMPLEX) if view == "conj" else -COMPLEX.imag

    def entries(indices):
        values = source[tuple(torch.as_tensor(indices).T)].conj()
        return values if view == "conj" else values.imag

    function = tlc.FunctionTensor(entries, COMPLEX.shape)
    with tl.backend_context("numpy"):
        tt = tlc.tt_cross(function, rank=2, random_state=0)
    np.testing.assert_allclose(_full(tt), expected, atol=1e-10)


@pytest.mark.parametrize("view", ["quantics", "transposed"])
def test_views_refuse_what_they_cannot_read_naming_their_lazy_argument(view):
    # QuanticsTensor replaced the reason with "got MaskedArray" (a masked array is an
    # array); TransposedTensor named an argument "obj" it does not have, and asked a
    # callable for a "shape" it cannot take.
    from tensorly_cross.lazy import QuanticsTensor, TransposedTensor

    def make(lazy):
        return QuanticsTensor(lazy) if view == "quantics" else TransposedTensor(lazy, (1, 0))

    with pytest.raises(TypeError, match=r"lazy is a masked array.*filled"):
        make(np.ma.masked_array(np.ones((4, 4))))
    with pytest.raises(TypeError, match=r"wrap it.*FunctionTensor\(function, shape\)"):
        make(lambda indices: indices.sum(axis=1))


# -- lazy/quantics.py --------------------------------------------------------------------


# Mutants: a mode of size 1 given no digit (``radices(1) == []``); the channel digit of
# ``with_channels`` put on the grid's last digit's position.
@given(shape=st.lists(st.sampled_from([1, 2, 3, 4, 6, 9, 12]), min_size=1, max_size=3),
       channels=st.integers(1, 4), seed=seeds)
@settings(max_examples=20, deadline=None)
def test_quantics_layouts_with_unit_modes_and_channels_round_trip(shape, channels, seed):
    from tensorly_cross import QuanticsLayout, qtt_to_tt

    shape = tuple(shape)
    rng = np.random.default_rng(seed)
    for layout in (QuanticsLayout.create(shape),
                   QuanticsLayout.with_channels(shape, channels)):
        full = layout.shape
        assert [int(np.prod(digits)) for digits in layout.mode_radices] == list(full)
        assert all(len(digits) >= 1 for digits in layout.mode_radices)
        assert sorted(np.concatenate(layout.positions).tolist()) == list(
            range(len(layout.quantics_shape)))
        indices = np.stack([rng.integers(0, n, 20) for n in full], axis=1)
        np.testing.assert_array_equal(layout.to_original(layout.to_quantics(indices)), indices)
        # A TT over the quantics modes contracts back to the dense tensor they index.
        dense = rng.standard_normal(full)
        values = dense[tuple(layout.to_original(np.stack(np.unravel_index(
            np.arange(dense.size), layout.quantics_shape), 1)).T)]
        cores = ([values.reshape(1, -1, 1)] if len(layout.quantics_shape) == 1 else
                 tl.decomposition.tensor_train(values.reshape(layout.quantics_shape),
                                               rank=64).factors)
        np.testing.assert_allclose(tl.tt_to_tensor(qtt_to_tt(cores, layout)), dense,
                                   atol=1e-10)
    assert QuanticsLayout.with_channels(shape, channels).quantics_shape[-1] == channels


# Mutant: a mode of size 0 accepted by the layout (``0 <= size``): the suite did not fail
# on it, it ran out of memory (19 GB after 3 minutes: ``radices(0)`` appends digits 2
# forever) in a test that expected the refusal.
@pytest.mark.parametrize("shape", [(0,), (4, 0), (0, 3, 2)])
def test_quantics_layout_refuses_an_empty_mode(shape):
    from tensorly_cross import QuanticsLayout
    from tensorly_cross.lazy.quantics import check_mode_size

    # First the check alone: on the mutant, radices(0) never ends (0 is divisible by 2).
    with pytest.raises(ValueError, match=r"\[1, 2\*\*63 - 1\]"):
        check_mode_size(0, "shape[0]")
    with pytest.raises(ValueError, match=r"\[1, 2\*\*63 - 1\]"):
        QuanticsLayout.create(shape)


# -- lazy/squeezed.py, lazy/transpose.py -------------------------------------------------


# Mutant: ``kept`` not required to be increasing and distinct: [2, 0] made a view with
# its modes silently swapped, [0, 0] one that read mode 0 twice.
@pytest.mark.parametrize("kept", [[2, 0], [0, 0, 2]])
def test_squeezed_view_refuses_modes_out_of_order_or_repeated(kept):
    with pytest.raises(ValueError, match="kept must be increasing modes"):
        SqueezedTensor(ArrayTensor(np.arange(6.0).reshape(2, 1, 3)), kept)


# Mutant: a bool among int axes let through (its check dropped): ``(True, 0)`` passed as
# the permutation (1, 0).
def test_transposed_view_refuses_a_bool_among_its_axes():
    with pytest.raises(ValueError, match="axes must be a permutation"):
        TransposedTensor(ArrayTensor(np.zeros((2, 3))), (True, 0))


# Mutant: the channel mode placed on the grid's last digit (``n_digits - 1``), not after
# it.
def test_a_layout_with_channels_keeps_the_channel_mode_last_and_whole():
    layout = QuanticsLayout.with_channels((4, 6), 5)
    assert layout.quantics_shape == (2, 2, 2, 3, 5)
    indices = np.array([[3, 5, 4], [1, 2, 0], [0, 0, 3]])
    quantics = layout.to_quantics(indices)
    np.testing.assert_array_equal(quantics[:, -1], indices[:, -1])
    np.testing.assert_array_equal(layout.to_original(quantics), indices)


def _never_called(indices):
    raise AssertionError("the function was called before the shape was checked")


def test_a_prime_mode_left_whole_by_quantics_digits_is_refused_at_once():
    tensor = tlc.QuanticsTensor(tlc.FunctionTensor(_never_called, (2**31 - 1,)))
    with pytest.raises(ValueError, match="prime size stays one digit"):
        tlc.tt_cross(tensor, random_state=0)


@settings(max_examples=6, deadline=None)
@given(shape=st.lists(st.sampled_from([2, 3, 4, 6, 8]), min_size=2, max_size=3),
       seed=st.integers(0, 2**16), method=st.sampled_from(["lsq", "tci", "als"]),
       order=st.sampled_from(["grouped", "interleaved"]))
def test_views_give_the_tt_of_the_data_permuted_by_hand(shape, seed, method, order):
    array = _noisy_smooth(tuple(shape), seed)
    options = dict(method=method, tol=1e-6, random_state=seed, return_info=True,
                   rank=2 if method == "als" else None)
    axes = tuple(np.random.default_rng(seed).permutation(len(shape)).tolist())
    _same_cross_result(tlc.tt_cross(tlc.TransposedTensor(array, axes), **options),
             tlc.tt_cross(np.ascontiguousarray(array.transpose(axes)), **options))
    view = tlc.QuanticsTensor(array, order=order)
    digits = np.stack(np.unravel_index(np.arange(array.size), view.shape), axis=1)
    by_hand = array[tuple(view.layout.to_original(digits).T)].reshape(view.shape)
    _same_cross_result(tlc.tt_cross(view, **options), tlc.tt_cross(by_hand, **options))


def _rank_two(indices):
    """cos of the sum of the indices: TT rank 2 everywhere."""
    return np.cos(np.asarray(indices).sum(axis=1) / 5.0)


class _HoldsAnAttributeNamedLazy(tlc.LazyTensor):
    """A subclass whose own attribute is called ``lazy`` (the views' name for their
    tensor): here the array it reads."""

    def __init__(self, array):
        super().__init__(array.shape)
        self.lazy = array

    def _evaluate(self, indices):
        return self.lazy[tuple(indices.T)]


@pytest.mark.parametrize("rank", [None, 2])
def test_a_subclass_attribute_named_lazy_is_not_taken_for_a_view(rank):
    # Before: every cross failed with "'numpy.ndarray' object has no attribute 'stored'".
    array = _rank_two(np.indices((6, 7, 8)).reshape(3, -1).T).reshape(6, 7, 8)
    lazy = _HoldsAnAttributeNamedLazy(array)
    assert lazy.stored is False
    tt = tlc.tt_cross(lazy, rank=rank, tol=1e-10, random_state=0)
    np.testing.assert_allclose(tt.to_tensor(), array, atol=1e-9)


@pytest.mark.parametrize("order", [np.array(["grouped", "interleaved"]), ["grouped"], 0])
def test_a_quantics_order_that_is_not_a_string_is_refused_by_name(order):
    # Before: an array failed with NumPy's "truth value of an array ... is ambiguous".
    with pytest.raises(ValueError, match="order must be one of 'grouped', 'interleaved'"):
        tlc.QuanticsTensor(np.ones((4, 6)), order=order)


def test_equal_quantics_layouts_compare_equal():
    # Before: == raised NumPy's "truth value of an array ... is ambiguous".
    layout = tlc.QuanticsLayout.create((8, 12))
    assert layout == tlc.QuanticsLayout.create((8, 12))
    assert layout == tlc.QuanticsTensor(np.ones((8, 12))).layout
    assert layout != tlc.QuanticsLayout.create((8, 12), order="interleaved")
    assert layout != tlc.QuanticsLayout.create((12, 8))
    assert layout != tlc.QuanticsLayout.with_channels((8, 12), 1)
    assert layout != (8, 12)


def test_qtt_to_tt_promotes_cores_of_mixed_dtypes_as_tt_entries_does(pytorch_backend):
    """``qtt_to_tt`` takes its cores "as tt_entries takes them", but a float32 core among
    float64 ones failed in PyTorch's tensordot ("both inputs should have same dtype"),
    where ``tt_entries`` promotes them. Now promoted too, and the gradient reaches the
    float32 core."""
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    layout = tlc.QuanticsLayout.create((4, 6))
    shapes = [(1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 3, 1)]
    cores = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in shapes]
    cores[0] = cores[0].float().requires_grad_(True)
    tt = tlc.qtt_to_tt(cores, layout)
    indices = np.indices((4, 6)).reshape(2, -1).T
    expected = tlc.tt_entries(cores, layout.to_quantics(indices))
    values = tlc.tt_entries(tt, indices)
    assert values.dtype == torch.float64
    np.testing.assert_allclose(values.detach().numpy(), expected.detach().numpy(), rtol=1e-12)
    values.sum().backward()
    assert cores[0].grad is not None and cores[0].grad.dtype == torch.float32


@pytest.mark.parametrize("view_name", ["transposed", "quantics_of_transposed"])
def test_function_seconds_through_a_view_are_the_functions(view_name):
    # CrossInfo.function_seconds is the time inside a FunctionTensor's function (summed
    # over an executor's chunks); through a view the run reported its waits instead.
    from concurrent.futures import ThreadPoolExecutor

    dense = _low_rank()
    with ThreadPoolExecutor(2) as executor:
        tensor = FunctionTensor(FailingFunction(dense), LOW_RANK_SHAPE, executor=executor,
                                chunk_size=7)
        _, info = tlc.tt_cross(VIEWS[view_name](tensor), tol=1e-10, random_state=0,
                               return_info=True)
    assert tensor.function_seconds > 0
    assert info.function_seconds == pytest.approx(tensor.function_seconds, rel=1e-9)
