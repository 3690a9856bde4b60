"""Audit (session 30) of the torch path: gradients through an EvaluationCache, and datasets
given bad arguments.

* ``tt_cross(EvaluationCache(f), ..., differentiable=True)`` (and ``cross_interpolate`` of a
  cache the search filled) built the cores from the values the search had cached without
  gradient: the cores did not require grad and ``.grad`` of the function's parameters
  stayed None, without a word (``loss * w`` still trained ``w``).

* ``mni152_crops(..., directory=d)`` where ``d/targets.json`` is not a manifest it wrote (a
  JSON list, or no JSON at all) crashed with a bare ``AttributeError`` (``'list' object has
  no attribute 'get'``) or ``JSONDecodeError``, naming neither the file nor the directory.
* ``VolumeDataset(..., in_memory="no")`` read every volume whole (``bool("no")`` is True),
  and a bad ``cache_bytes`` (a str, a negative number) was accepted, to fail only when a
  volume was first read (an in-memory volume never: it was silently ignored).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorly as tl  # noqa: E402

import tensorly_cross as tlc  # noqa: E402
from tensorly_cross.nn import VolumeDataset, mni152_crops  # noqa: E402


def _function(theta):
    """A function tensor whose entries depend on the parameter ``theta`` (2 entries)."""
    def entries(indices):
        x = torch.as_tensor(indices, dtype=torch.float64)
        return torch.exp(-theta[0] * x[:, 0] / 6) * torch.cos(theta[1] * x[:, 1] / 5 + x[:, 2] / 7)

    return tlc.FunctionTensor(entries, (6, 5, 7))


@pytest.mark.parametrize("method", ["als", "tci", "lsq"])
def test_a_cached_tensor_passes_the_gradient_to_the_function_parameters(method):
    options = dict(rank=3, method=method, random_state=0, tol=0.0, n_iter_max=3)
    with tl.backend_context("pytorch"):
        expected = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
        tlc.tt_cross(_function(expected), differentiable=True, **options).to_tensor().sum() \
            .backward()
        theta = expected.detach().clone().requires_grad_(True)
        cache = tlc.EvaluationCache(_function(theta))
        tt = tlc.tt_cross(cache, differentiable=True, **options)
        assert all(core.requires_grad for core in tt)
        tt.to_tensor().sum().backward()
        torch.testing.assert_close(theta.grad, expected.grad)

        # the two phases, the search filling the cache without gradient
        theta.grad = None
        with torch.no_grad():
            indices = tlc.select_indices(cache, **options)
        tlc.cross_interpolate(cache, indices).to_tensor().sum().backward()
        torch.testing.assert_close(theta.grad, expected.grad)

        # a training step changed theta: the read with gradient computes the entries anew
        with torch.no_grad():
            theta.mul_(1.1)
        tt = tlc.cross_interpolate(cache, indices)
        fresh = tlc.cross_interpolate(_function(theta.detach()), indices)
        torch.testing.assert_close(tt.to_tensor().detach(), fresh.to_tensor())


def test_a_cached_volume_passes_the_gradient_through_the_patches():
    # The search cached the voxels without gradient; PatchGrid read them back detached, and
    # the volume's .grad stayed None.
    from tensorly_cross.nn import EncodedTensor, default_encoder

    torch.manual_seed(0)
    encoder = default_encoder(3, 2).double()
    raw = torch.rand(5, 6, 7, dtype=torch.float64)
    options = dict(rank=[1, 2, 2, 2, 1], method="als", tol=0.0, n_iter_max=2, random_state=0,
                   differentiable=True)
    gradients = []
    with tl.backend_context("pytorch"):
        for wrap in (tlc.ArrayTensor, lambda v: tlc.EvaluationCache(tlc.ArrayTensor(v))):
            volume = raw.clone().requires_grad_(True)
            field = EncodedTensor(wrap(volume), encoder, 3, 2, stride=2)
            tlc.tt_cross(field, **options).to_tensor().sum().backward()
            assert volume.grad is not None
            gradients.append(volume.grad)
    torch.testing.assert_close(gradients[1], gradients[0])


@pytest.mark.parametrize("method", ["als", "tci", "lsq"])
def test_a_cache_of_values_without_graph_is_read_back_not_recomputed(method):
    # The fix above recomputed every entry of a read with gradient, also where the function
    # gives values without a graph (a NumPy function under the PyTorch backend, grad
    # enabled, as torch runs by default): cross_interpolate of a filled cache, meant as
    # "the cores in one batched read" of what the search read, evaluated them all again.
    grid = np.linspace(1.0, 2.0, 6)
    cache = tlc.EvaluationCache(tlc.FunctionTensor(
        lambda i: 1.0 / grid[i].sum(axis=1), (6, 6, 6, 6)))
    options = dict(rank=3, method=method, random_state=0, tol=0.0, n_iter_max=3)
    with tl.backend_context("pytorch"):
        indices = tlc.select_indices(cache, **options)
        evaluated, calls = cache.counters.unique, cache.counters.calls
        tt = tlc.cross_interpolate(cache, indices)
        # One entry per read, to learn whether fresh values carry a graph (they do not).
        assert cache.counters.unique - evaluated <= cache.counters.calls - calls
        reference = tlc.cross_interpolate(tlc.FunctionTensor(
            lambda i: 1.0 / grid[i].sum(axis=1), (6, 6, 6, 6)), indices)
        for core, expected in zip(tt, reference, strict=True):
            torch.testing.assert_close(core, expected)


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '"crops"'],
                         ids=["list", "not-json", "string"])
def test_a_targets_file_that_is_not_a_manifest_is_refused_by_name(tmp_path, content):
    path = tmp_path / "targets.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="targets.json.*not a manifest"):
        mni152_crops(1, 4, directory=tmp_path)
    assert path.read_text() == content  # the file is left as it was


@pytest.mark.parametrize("in_memory", ["no", 0.0, None])
def test_in_memory_must_be_a_bool(tmp_path, in_memory):
    path = tmp_path / "v.npy"
    np.save(path, np.zeros((3, 3, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="in_memory must be True or False"):
        VolumeDataset([str(path)], [0.0], in_memory=in_memory)


@pytest.mark.parametrize("cache_bytes, error", [("big", TypeError), (-1, ValueError),
                                                (1.5, TypeError)])
def test_cache_bytes_is_checked_when_the_dataset_is_made(cache_bytes, error):
    with pytest.raises(error, match="cache_bytes"):
        VolumeDataset([np.zeros((3, 3, 3))], [0.0], cache_bytes=cache_bytes)


@pytest.mark.parametrize("shuffle", ["no", 1, None])
def test_batches_shuffle_must_be_a_bool(shuffle):
    # "no" is truthy: the items came back shuffled
    data = VolumeDataset([np.zeros((3, 3, 3))] * 4, [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="shuffle must be True or False"):
        next(data.batches(2, shuffle=shuffle))


@pytest.mark.parametrize("volumes", [None, 5])
def test_volumes_that_are_not_a_sequence_are_refused_by_name(volumes):
    # list(None) raised "'NoneType' object is not iterable", naming no argument
    with pytest.raises(TypeError, match="volumes must be a sequence"):
        VolumeDataset(volumes, [0.0])
