"""Audit (session 29) of the differentiable cross (``tt_cross(..., differentiable=True)``,
``cross_interpolate``, the drop-in) and the TT evaluation helpers, with real autograd."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc


def _field(torch):
    rng = np.random.default_rng(0)
    return torch.tensor(rng.standard_normal((6, 5, 7)))


@pytest.mark.parametrize("backend", ["pytorch", "numpy"])
@pytest.mark.parametrize("fill_nan", [None, 0.0])
def test_an_opened_tensor_that_requires_grad_is_refused_where_its_gradient_is_lost(
        backend, fill_nan):
    """``open_volume(x)`` of a PyTorch tensor that requires grad reads it chunk by chunk,
    detached on the host. ``tt_cross(..., differentiable=True)``, ``cross_interpolate`` and
    the drop-in returned a TT without gradient (under PyTorch too), without a word, where
    ``x`` itself or ``lazy_tensor(x)`` carries it."""
    torch = pytest.importorskip("torch")
    volume = _field(torch).requires_grad_(True)
    with tl.backend_context(backend):
        opened = tlc.open_volume(volume, fill_nan=fill_nan)
        for wrapped in (opened, tlc.TransposedTensor(opened, (2, 0, 1))):
            with pytest.raises(ValueError, match="reads it detached"):
                tlc.tt_cross(wrapped, rank=2, method="als", random_state=0,
                             differentiable=True)
            with pytest.raises(ValueError, match="reads it detached"):
                tlc.tensor_train_cross(wrapped, rank=2, random_state=0)
            indices = tlc.select_indices(wrapped, rank=2, method="als", random_state=0)
            with pytest.raises(ValueError, match="reads it detached"):
                tlc.cross_interpolate(wrapped, indices)
        # Without gradient asked for, the opened tensor is read as before.
        tt = tlc.tt_cross(opened, rank=2, method="als", random_state=0)
        assert not any(getattr(core, "requires_grad", False) for core in tt.factors)


def test_torch_compile_runs_the_cross_eagerly_with_its_gradient(pytorch_backend):
    """``torch.compile`` of a loss that calls the cross traced into its index search (host
    NumPy): every entry point failed inside TorchDynamo ("cumsum_out_cpu" not implemented
    for 'Bool', "Cannot interpret 'torch.float64' as a data type"). The cross now runs
    eagerly there (a graph break), with the value and gradient it has without compile."""
    torch = pytest.importorskip("torch")
    torch._dynamo.reset()
    dense = _field(torch)
    indices = tlc.select_indices(dense, rank=2, method="als", random_state=0)
    calls = {
        "tt_cross": lambda x: tlc.tt_cross(x, rank=2, method="als", random_state=0,
                                           differentiable=True),
        "cross_interpolate": lambda x: tlc.cross_interpolate(x, indices),
    }
    for name, call in calls.items():
        def loss(x, call=call):
            return call(x).factors[1].sum()

        compiled = torch.compile(loss, backend="eager")  # TorchDynamo only: fast
        variable = dense.clone().requires_grad_(True)
        value = compiled(variable)
        value.backward()
        eager = dense.clone().requires_grad_(True)
        loss(eager).backward()
        assert float(value.detach()) == pytest.approx(float(loss(dense)), rel=1e-12), name
        np.testing.assert_allclose(variable.grad.numpy(), eager.grad.numpy(), rtol=1e-12)
    compiled = torch.compile(lambda x: x.sum() + len(tlc.select_indices(
        x, rank=2, method="als", random_state=0).left), backend="eager")
    assert float(compiled(dense)) == pytest.approx(float(dense.sum()) + 3)


def test_the_pca_head_refuses_complex_tts_whose_imaginary_part_it_dropped():
    """``TTPCAHead`` computes its inner products in float64: complex TTs (a complex cross's)
    were cast to real, their imaginary parts dropped with only PyTorch's casting warning,
    and their coordinates silently wrong. They are refused by name now."""
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import TTPCAHead

    generator = torch.Generator().manual_seed(0)

    def random_tt(dtype):
        return [torch.randn(1, 5, 2, generator=generator, dtype=dtype),
                torch.randn(2, 3, 1, generator=generator, dtype=dtype)]

    with pytest.raises(TypeError, match="complex"):
        TTPCAHead(n_components=2).fit([random_tt(torch.complex128) for _ in range(4)])
    head = TTPCAHead(n_components=2).fit([random_tt(torch.float64) for _ in range(4)])
    with pytest.raises(TypeError, match="complex"):
        head(random_tt(torch.complex128))


def test_an_executor_runs_the_index_search_without_gradient(pytorch_backend):
    """``tt_cross(..., differentiable=True)`` searches under ``torch.no_grad()``, which is
    thread-local: a FunctionTensor's executor threads ran every search batch with autograd
    on, so the cache held values with graphs (and grew by concatenation, not in place).
    Only the final read records a graph now, as without an executor, and the gradient is
    the same."""
    torch = pytest.importorskip("torch")
    from concurrent.futures import ThreadPoolExecutor

    grid = torch.linspace(0, 1, 12, dtype=torch.float64)
    reads = []

    def make_tensor(weights, executor):
        def function(indices):
            reads.append((torch.is_grad_enabled(), len(indices)))
            return torch.exp(grid[torch.as_tensor(indices)] @ weights)

        return tlc.FunctionTensor(function, (12, 12, 12), executor=executor, chunk_size=16)

    gradients, with_grad = [], []
    with ThreadPoolExecutor(2) as pool:
        for executor in (None, pool):
            reads.clear()
            weights = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
            tt = tlc.tt_cross(make_tensor(weights, executor), rank=2, method="als",
                              random_state=0, differentiable=True)
            tt.to_tensor().sum().backward()
            gradients.append(weights.grad.numpy())
            with_grad.append(sum(size for enabled, size in reads if enabled))
    assert with_grad[1] == with_grad[0]  # the cores' fresh read only
    np.testing.assert_allclose(gradients[1], gradients[0], rtol=1e-12)


def test_least_squares_assembly_with_gradient_of_a_rank_deficient_interface(pytorch_backend):
    """Indices of a least-squares cross reused on a tensor that is zero on most of their
    fibers (a background, a mask): with gradient, the pseudo-inverse of the rank-deficient
    interface recursed without end (RecursionError), where the same read without gradient
    gave the TT. Now the same TT, with finite gradients."""
    torch = pytest.importorskip("torch")
    dense = torch.randn((6, 5, 7, 4), generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    indices = tlc.select_indices(dense, rank=3, method="lsq", random_state=0)
    mask = torch.zeros(5, dtype=torch.float64)
    mask[0] = 1.0
    masked = dense * mask[None, :, None, None]
    without_gradient = tlc.cross_interpolate(masked, indices).to_tensor()
    variable = masked.clone().requires_grad_(True)
    values = tlc.cross_interpolate(variable, indices).to_tensor()
    np.testing.assert_allclose(values.detach().numpy(), without_gradient.numpy(), atol=1e-12)
    values.sum().backward()
    assert torch.isfinite(variable.grad).all()


@pytest.mark.filterwarnings("ignore::tensorly_cross.SubnormalValuesWarning")
@pytest.mark.parametrize("exponent", [1000, -1030])
def test_least_squares_cross_with_gradient_of_data_near_the_float64_limits(pytorch_backend,
                                                                          exponent):
    """The least-squares cross holds data up to 2**1022 and down in the subnormals
    (docs/guarantees.rst), but with gradient its fits formed normal equations ``A^H A``,
    which overflowed (underflowed) and failed in SciPy ("array must not contain infs or
    NaNs"). Now the TT and gradient are those of the data at scale 1, times the scale."""
    torch = pytest.importorskip("torch")
    from tensorly_cross.cross.scaling import times_power_of_two

    rng = np.random.default_rng(0)
    dense = torch.tensor(rng.standard_normal((6, 5, 7, 4)))
    probe = torch.tensor(rng.standard_normal(dense.shape))
    results = []
    for data in (dense, times_power_of_two(dense, exponent)):
        variable = data.clone().requires_grad_(True)
        tt = tlc.tt_cross(variable, rank=2, method="lsq", random_state=0,
                          differentiable=True)
        values = tt.to_tensor()
        (values * probe).sum().backward()
        results.append((values.detach(), variable.grad))
    (values, gradient), (scaled_values, scaled_gradient) = results
    np.testing.assert_allclose(times_power_of_two(scaled_values, -exponent).numpy(),
                               values.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(scaled_gradient.numpy(), gradient.numpy(), rtol=1e-9,
                               atol=1e-9)


@pytest.mark.filterwarnings("ignore::tensorly_cross.SubnormalValuesWarning")
@pytest.mark.parametrize("method", ["tci", "als"])
def test_interpolating_cross_with_gradient_of_subnormal_data_of_lower_rank(pytorch_backend,
                                                                          method):
    """A field of rank 1 read at rank 3, in the subnormals: without gradient the TT was
    right; with gradient the basis of its singular fiber blocks divided by subnormal
    singular values (inf), and the TT came back NaN (a rank-2 field: "SVD did not
    converge"). Now the same TT, with finite gradients."""
    torch = pytest.importorskip("torch")
    from tensorly_cross.cross.scaling import times_power_of_two

    grids = [torch.linspace(0.5, 1.5, n, dtype=torch.float64) for n in (5, 4, 6, 3)]
    field = times_power_of_two(torch.einsum("i,j,k,l->ijkl", *grids), -1030)
    expected = tlc.tt_cross(field, rank=3, method=method, random_state=0).to_tensor()
    variable = field.clone().requires_grad_(True)
    values = tlc.tt_cross(variable, rank=3, method=method, random_state=0,
                          differentiable=True).to_tensor()
    np.testing.assert_allclose(times_power_of_two(values.detach(), 1030).numpy(),
                               times_power_of_two(expected, 1030).numpy(), rtol=1e-10)
    values.sum().backward()
    assert torch.isfinite(variable.grad).all()


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
