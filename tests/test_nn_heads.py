"""TT heads: PCA coordinates free of round-off, always ``n_components`` of them, old saved
states, and TT arguments checked by name."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    TTPCAHead,
    TTProbeHead,
    VolumeDataset,
    tt_inner,
    tt_inner_many,
)
from tensorly_cross.nn.training import Regressor, fit  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


def _random_tt(seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 4, 2, generator=generator, dtype=dtype),
            torch.randn(2, 3, 1, generator=generator, dtype=dtype)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_training_tts_give_zero_coordinates(dtype):
    # The cut was relative to the largest eigenvalue, itself round-off here: [-8, 0] before.
    tt = _random_tt(0, dtype)
    head = TTPCAHead(2).fit([tt, tt, tt])
    assert torch.all(head(tt) == 0)
    assert torch.all(head(_random_tt(1, dtype)) == 0)  # no direction to project on


def test_float32_pca_coordinates_agree_with_float64_for_volumes_that_differ_by_one_percent():
    # The centred Gram matrix cancels the volumes' common part: in float32 its round-off
    # was 18% of the coordinates.
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(10, 10, 10, generator=generator, dtype=torch.float64)
    volumes = [base + 1e-2 * torch.rand(10, 10, 10, generator=generator, dtype=torch.float64)
               for _ in range(6)]
    coordinates = {}
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = CrossEmbedding(patch_size=3, n_features=2, rank=3, n_outputs=3, n_iter_max=2,
                               head="pca").to(dtype)
        batch = [volume.to(dtype) for volume in volumes]
        model.fit_pca(batch, keys=range(6))
        with torch.no_grad():
            coordinates[dtype] = model(batch, keys=range(6)).double()
    exact, single = coordinates[torch.float64], coordinates[torch.float32]
    signs = torch.sign((exact * single).sum(dim=0))
    signs[signs == 0] = 1
    assert float((exact - single * signs).abs().max()) <= 1e-3 * float(exact.abs().max())


def test_the_pca_head_gives_n_outputs_columns_with_few_training_volumes():
    volumes = [np.random.default_rng(k).random((8, 8, 8)).astype(np.float32) for k in range(6)]
    torch.manual_seed(0)
    embedding = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=8, n_iter_max=2,
                               head="pca")
    embedding.fit_pca(volumes[:3])
    features = embedding(volumes[:2])
    assert features.shape == (2, 8) and torch.all(features[:, 2:] == 0)
    model = Regressor(embedding, n_inputs=8)  # refit on 6 volumes: 5 live columns of 8
    log = fit(model, VolumeDataset(volumes, np.arange(6) * 0.1), epochs=1, batch_size=2)
    assert log.steps == 3


def test_a_pca_refit_keeps_components_beyond_the_span_at_zero():
    tts = [_random_tt(seed, torch.float64) for seed in range(3)]
    head = TTPCAHead(4).fit(tts)
    head.fit([_random_tt(seed + 10, torch.float64) for seed in range(3)])  # rotated refit
    coordinates = torch.stack([head(tt) for tt in tts])
    assert torch.all(coordinates[:, 2:] == 0)


def test_a_pca_state_saved_with_row_means_and_grand_mean_loads():
    tts = [_random_tt(seed, torch.float64) for seed in range(4)]
    head = TTPCAHead(2).fit(tts)
    state = head.state_dict()
    grand_mean = torch.tensor(7.0, dtype=torch.float64)
    state["row_means"] = state.pop("centred_row_means") + grand_mean
    state["grand_mean"] = grand_mean
    old = TTPCAHead(2).double()
    old.load_state_dict(state)
    torch.testing.assert_close(old(tts[0]), head(tts[0]))


def test_nan_in_a_tt_is_named_by_the_pca_head():
    head = TTPCAHead(2).fit([_random_tt(seed) for seed in range(3)])
    broken = [torch.full((1, 4, 2), float("nan")), torch.randn(2, 3, 1)]
    with pytest.raises(ValueError, match=r"tts\[1\] holds NaN or inf \(in core 0\)"):
        TTPCAHead(2).fit([_random_tt(0), broken])
    with pytest.raises(ValueError, match="tt holds NaN or inf"):
        head(broken)


@pytest.mark.parametrize("call, error, message", [
    (lambda: TTProbeHead((), 3), ValueError, "shape must be a non-empty tuple"),
    (lambda: TTProbeHead((4, 4, 2), 0), ValueError, "n_probes must be >= 1"),
    (lambda: TTProbeHead((4, 4, 2), 3, rank=0), ValueError, "rank must be >= 1"),
    (lambda: TTProbeHead((4, 4, 2), 2.5), TypeError, "n_probes"),
    (lambda: TTProbeHead((4, 4, 2), 3)([torch.ones(1, 4, 1), torch.ones(1, 5, 1),
                                        torch.ones(1, 2, 1)]),
     ValueError, r"tt has mode sizes \(4, 5, 2\)"),
    (lambda: tt_inner([torch.ones(1, 3, 1)], [torch.ones(1, 4, 1)]),
     ValueError, "first and second must have the same mode sizes"),
    (lambda: tt_inner([torch.ones(1, 3, 1)] * 2, [torch.ones(1, 3, 1)]),
     ValueError, "same mode sizes"),
    (lambda: tt_inner([], []), ValueError, "first must be a non-empty list"),
    (lambda: tt_inner([torch.ones(1, 3, 2)], [torch.ones(1, 3, 1)]),
     ValueError, "boundary ranks 1"),
    (lambda: tt_inner([torch.ones(1, 3, 1)], [torch.ones(1, 3, 1, dtype=torch.float64)]),
     TypeError, "one dtype"),
    (lambda: tt_inner_many([torch.ones(1, 3, 1)], [torch.ones(2, 1, 4, 1)]),
     ValueError, "stacked must hold TTs of tt's mode sizes"),
    (lambda: TTPCAHead(2.5), TypeError, "n_components"),
    (lambda: TTPCAHead(2, gradient_through_fit=1), TypeError, "gradient_through_fit"),
    (lambda: TTPCAHead(2).fit([_random_tt(0), _random_tt(1)], keys=[0]),
     ValueError, r"keys must have one entry per TT \(2\)"),
    (lambda: TTPCAHead(2).fit([_random_tt(0), _random_tt(1)], keys=[3, 3]),
     ValueError, "keys names 3 twice"),
    (lambda: TTPCAHead(2).fit([_random_tt(0), _random_tt(1)], keys=[0, 1]).forward_batch(
        [_random_tt(0), _random_tt(1)], keys=[0]), ValueError, "one entry per TT"),
    (lambda: TTPCAHead(2).fit([_random_tt(0), _random_tt(1)]).forward_batch([]),
     ValueError, "forward_batch needs at least 1 TT, got 0"),
    (lambda: TTPCAHead(2).fit([_random_tt(0), [torch.randn(1, 4, 3), torch.randn(3, 3, 1)]]),
     ValueError, r"tts\[1\] has core shapes"),
    (lambda: TTPCAHead(2).fit([_random_tt(0), _random_tt(1)])(
        [torch.randn(1, 5, 2), torch.randn(2, 3, 1)]),
     ValueError, r"tt has mode sizes \(5, 3\)"),
])
def test_tt_arguments_are_checked_by_name(call, error, message):
    with pytest.raises(error, match=message):
        call()


def _tt3(seed, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(1, 4, 2, generator=generator, dtype=torch.float64),
            torch.randn(2, 3, 2, generator=generator, dtype=torch.float64),
            torch.randn(2, 3, 1, generator=generator, dtype=torch.float64)]


def _grad_head(n_train=5, n_components=3):
    tts = [_tt3(seed) for seed in range(n_train)]
    return tts, TTPCAHead(n_components, gradient_through_fit=True).fit(tts, keys=range(n_train))


def test_pca_gradient_through_fit_passes_gradcheck():
    # a training TT moved from its kept copy (key 1) and a query of no training TT: both
    # reach the coordinates through the refit components and their rotation
    tts, head = _grad_head()
    batch = [[core + 0.1 * torch.randn_like(core) for core in tts[1]], _tt3(9)]
    cores = [core.clone().requires_grad_() for tt in batch for core in tt]

    def coordinates(*cores):
        return head.forward_batch([list(cores[:3]), list(cores[3:])], keys=[1, None])

    assert torch.autograd.gradcheck(coordinates, cores)


def test_pca_gradient_through_fit_reaches_a_batch_tt_through_the_fit_too():
    tts, head = _grad_head()
    plain = TTPCAHead(3).fit(tts)
    batch = [[core + 0.1 * torch.randn_like(core) for core in tt] for tt in tts[:2]]
    gradients = {}
    for name, project in (("fit", lambda tts: head.forward_batch(tts, keys=[0, 1])),
                          ("projection", lambda tts: torch.stack([plain(tt) for tt in tts]))):
        leaves = [[core.clone().requires_grad_() for core in tt] for tt in batch]
        project(leaves).square().sum().backward()
        gradients[name] = leaves[0][0].grad
    assert torch.isfinite(gradients["fit"]).all()
    difference = (gradients["fit"] - gradients["projection"]).abs().max()
    assert float(difference) > 1e-3 * float(gradients["projection"].abs().max())


def test_pca_gradient_through_fit_keeps_the_fit_coordinates_and_projects_plainly_in_eval():
    tts, head = _grad_head()
    plain = TTPCAHead(3).fit(tts)
    expected = torch.stack([plain(tt) for tt in tts])
    # the kept TTs themselves: the refit is the fit, rotated back onto its coordinates
    torch.testing.assert_close(head.forward_batch(tts, keys=range(5)), expected,
                               rtol=0, atol=1e-10)
    queries = [_tt3(seed) for seed in (7, 8)]
    for mode in ("eval", "no_grad"):
        head.train(mode != "eval")
        with torch.set_grad_enabled(mode != "no_grad"):
            assert torch.equal(head.forward_batch(queries, keys=[0, 1]),
                               torch.stack([plain(tt) for tt in queries]))


def test_the_default_pca_head_projects_a_batch_as_forward_does_in_training():
    tts = [_tt3(seed) for seed in range(5)]
    head = TTPCAHead(3).fit(tts, keys=range(5))
    moved = [[core + 0.1 for core in tt] for tt in tts[:2]]
    assert torch.equal(head.forward_batch(moved, keys=[0, 1]),
                       torch.stack([head(tt) for tt in moved]))


def test_pca_gradient_through_fit_stays_bounded_for_near_equal_eigenvalues():
    # +-a, +-b with a, b orthogonal, b longer by 1e-9: one component picks b over a by a
    # gap of 1e-9, and moving a towards b turns it by 1/gap (3.5e8 undamped)
    basis = torch.eye(3, dtype=torch.float64)
    ones = torch.ones(1, 2, 1, dtype=torch.float64)

    def tt(vector):
        return [vector.reshape(1, 3, 1), ones]

    longer = 1 + 1e-9
    tts = [tt(basis[0]), tt(-basis[0]), tt(longer * basis[1]), tt(-longer * basis[1])]
    head = TTPCAHead(1, gradient_through_fit=True).fit(tts, keys=range(4))
    leaves = [core.clone().requires_grad_() for core in tts[0]]
    head.forward_batch([leaves], keys=[0]).sum().backward()
    assert all(torch.isfinite(core.grad).all() for core in leaves)
    assert float(leaves[0].grad.abs().max()) < 1e3


def test_pca_gradient_through_fit_reaches_the_encoder_of_a_cross_embedding():
    volumes = [np.random.default_rng(k).random((6, 6, 6)) for k in range(4)]
    gradients = {}
    for gradient_through_fit in (True, False):
        torch.manual_seed(0)
        head = TTPCAHead(2, gradient_through_fit=gradient_through_fit)
        embedding = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=2,
                                   n_iter_max=1, head=head).double()
        embedding.fit_pca(volumes, keys=range(4))
        embedding(volumes[:2], keys=[0, 1]).square().sum().backward()
        gradients[gradient_through_fit] = embedding.encoder[0].weight.grad.clone()
    assert torch.isfinite(gradients[True]).all()
    assert not torch.allclose(gradients[True], gradients[False])


def test_a_pca_head_with_gradient_through_fit_round_trips_its_state():
    tts, head = _grad_head()
    loaded = TTPCAHead(3, gradient_through_fit=True).double()
    loaded.load_state_dict(head.state_dict())
    query = _tt3(7)
    assert torch.equal(loaded(query), head(query))
    # the keys are not state: a loaded head projects plainly until it is fitted again
    moved = [[core + 0.1 for core in tt] for tt in tts[:2]]
    assert torch.equal(loaded.forward_batch(moved, keys=[0, 1]),
                       torch.stack([loaded(tt) for tt in moved]))
    loaded.fit(tts, keys=range(5))
    torch.testing.assert_close(loaded.forward_batch(moved, keys=[0, 1]),
                               head.forward_batch(moved, keys=[0, 1]), rtol=0, atol=1e-10)


def test_a_state_loaded_into_a_keyed_pca_head_drops_that_heads_keys():
    # The keys of the head's own earlier fit named rows of its old training TTs: kept, they
    # put a batch TT in the place of a loaded TT of another volume (or past the last row).
    tts, head = _grad_head()
    saved = TTPCAHead(3, gradient_through_fit=True).fit([_tt3(seed + 20) for seed in range(3)])
    head.load_state_dict(saved.state_dict())
    moved = [[core + 0.1 for core in _tt3(20)], [core + 0.1 for core in _tt3(21)]]
    assert torch.equal(head.forward_batch(moved, keys=[0, 4]),
                       torch.stack([head(tt) for tt in moved]))


def test_pca_head_keys_are_compared_by_value():
    # A tensor hashes by identity: tensor keys (a DataLoader's indices) never matched.
    tts, head = _grad_head()
    by_tensor = TTPCAHead(3, gradient_through_fit=True).fit(tts, keys=torch.arange(5))
    moved = [[core + 0.1 for core in tt] for tt in tts[:2]]
    torch.testing.assert_close(by_tensor.forward_batch(moved, keys=torch.tensor([0, 1])),
                               head.forward_batch(moved, keys=[0, 1]), rtol=0, atol=1e-12)
    assert not torch.equal(by_tensor.forward_batch(moved, keys=torch.tensor([0, 1])),
                           torch.stack([by_tensor(tt) for tt in moved]))
    with pytest.raises(ValueError, match="keys names 1 twice"):
        TTPCAHead(2).fit(tts[:2], keys=[torch.tensor(1), np.int64(1)])


@pytest.mark.parametrize(("n_components", "keys"), [
    (4, [4, 0, 2]),  # n - 1 components, three training TTs moved, out of order
    (2, [3]),  # a batch of one
    (7, [1, 99]),  # components past the span, and a key that no fit gave
])
def test_pca_gradient_through_fit_passes_gradcheck_at_the_edges(n_components, keys):
    tts = [_tt3(seed) for seed in range(5)]
    head = TTPCAHead(n_components, gradient_through_fit=True).fit(tts, keys=range(5))
    generator = torch.Generator().manual_seed(1)
    batch = [[core + 0.1 * torch.randn(core.shape, generator=generator, dtype=core.dtype)
              for core in (tts[key] if key < 5 else _tt3(key))] for key in keys]
    cores = [core.clone().requires_grad_() for tt in batch for core in tt]

    def coordinates(*cores):
        return head.forward_batch([list(cores[3 * b:3 * b + 3]) for b in range(len(keys))],
                                  keys=keys)

    assert coordinates(*cores).shape == (len(keys), n_components)
    assert torch.autograd.gradcheck(coordinates, cores)


def test_pca_head_takes_numpy_bools_for_gradient_through_fit():
    # as every other bool option of the package (check_bool): a config's np.True_ was refused
    head = TTPCAHead(2, gradient_through_fit=np.True_)
    assert head.gradient_through_fit is True


def test_fit_pca_without_keys_on_a_head_with_gradient_through_fit_warns_once():
    # Without keys no training step's batch TT can take a training TT's place, so the
    # refit with gradient that gradient_through_fit=True asks for never happened, silently.
    volumes = [np.random.default_rng(k).random((6, 6, 6)) for k in range(3)]

    def embedding_with(head):
        torch.manual_seed(0)
        return CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=2,
                              n_iter_max=1, head=head).double()

    embedding = embedding_with(TTPCAHead(2, gradient_through_fit=True))
    with pytest.warns(UserWarning, match=r"keys.*gradient_through_fit") as caught:
        embedding.fit_pca(volumes)
    ours = [w for w in caught if "gradient_through_fit" in str(w.message)]
    assert len(ours) == 1 and ours[0].filename == __file__  # points at the caller
    for module, keys in [(embedding, None), (embedding, [None] * 3),
                         (embedding_with(TTPCAHead(2, gradient_through_fit=True)), range(3)),
                         (embedding_with("pca"), None)]:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*gradient_through_fit")
            module.fit_pca(volumes, keys=keys)  # warned once per module; or keys; or no refit
