"""Lockstep search and read: one encoder call per step for a whole batch, and the same
indices, TTs and gradients as one volume at a time."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import tensorly_cross as tlc  # noqa: E402
from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    EncodedTensor,
    LockstepEncoder,
    default_encoder,
    device_batch_size,
)

from .strategies import seeds  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


class CountingEncoder(torch.nn.Module):
    """An encoder that records the size of every call it gets."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.calls = encoder, []

    def forward(self, patches):
        self.calls.append(patches.shape[0])
        return self.encoder(patches)


def _volumes(count, shape=(10, 9, 8), seed=0):
    rng = np.random.default_rng(seed)
    return [torch.as_tensor(rng.standard_normal(shape)) for _ in range(count)]


def _model(layout="tt", **options):
    torch.manual_seed(0)
    encoder = CountingEncoder(default_encoder(3, 3).double())
    defaults = dict(patch_size=3, n_features=3, rank=3, n_outputs=4, n_iter_max=3,
                    layout=layout)
    return CrossEmbedding(encoder, **dict(defaults, **options)).double()


@settings(max_examples=5, deadline=None)
@given(layout=st.sampled_from(["tt", "quantics"]), seed=seeds, count=st.integers(2, 4))
def test_lockstep_indices_and_tts_equal_one_volume_at_a_time(layout, seed, count):
    volumes = _volumes(count, seed=seed % 1000)
    model = _model(layout)
    with torch.no_grad():
        batch, _ = model._tts(volumes, [None] * count)
        for volume, tt in zip(volumes, batch, strict=True):
            alone = model.encoded(volume)
            indices = tlc.select_indices(alone, rank=model._feasible_rank(alone.shape),
                                         method="block", tol=0.0, n_iter_max=3, val_size=0,
                                         random_state=0)
            for core, expected in zip(tt, tlc.cross_interpolate(alone, indices), strict=True):
                torch.testing.assert_close(core, expected)


def test_one_encoder_call_per_search_step_for_the_whole_batch():
    volumes = _volumes(4)
    model = _model()
    model(volumes)  # with gradient: the differentiable read is one more call
    batched_calls = len(model.encoder.calls)
    model.encoder.calls.clear()
    model(volumes[:1])
    single_calls = len(model.encoder.calls)
    # The batch makes the calls of its longest search, not one series per volume: at most
    # one per search step (3 sweeps of 3 reads: 2 fibers and the assembly) and the read.
    assert batched_calls <= 3 * 3 + 1
    assert batched_calls <= single_calls + 2
    assert model.counters["encoder_calls"] == batched_calls + single_calls
    assert model.counters["searches"] == 5


def test_the_differentiable_read_reuses_the_search_patches_and_encodes_once():
    volumes = _volumes(3)
    model = _model()
    cut = []
    original = tlc.nn.PatchGrid.patches

    def counting(self, positions, **options):
        cut.append(len(positions))
        return original(self, positions, **options)

    tlc.nn.PatchGrid.patches = counting
    try:
        model(volumes)
    finally:
        tlc.nn.PatchGrid.patches = original
    read = model.encoder.calls[-1]  # the differentiable read: one call, with gradient
    assert read > 0 and model.counters["patches_encoded"] > read
    # Every patch was cut once, by the search: the read cut none.
    assert sum(cut) == model.counters["patches_encoded"] - read


def test_lockstep_gradients_equal_one_volume_at_a_time():
    volumes = _volumes(3)
    model = _model()
    model(volumes).sum().backward()
    batched = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    sum(model([volume]).sum() for volume in volumes).backward()
    for first, second in zip(batched, [p.grad for p in model.encoder.parameters()],
                             strict=True):
        torch.testing.assert_close(first, second)


def test_refresh_every_reuses_indices_and_skips_the_search():
    volumes = _volumes(2)
    model = _model(refresh_every=3)
    for _ in range(3):
        model(volumes, keys=["a", "b"])
    assert model.counters["searches"] == 2
    model(volumes, keys=["a", "b"])
    assert model.counters["searches"] == 4


def test_an_error_in_one_run_stops_the_batch_and_is_raised():
    class Failing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(()))
            self.calls = 0

        def forward(self, patches):
            self.calls += 1
            if self.calls == 3:
                raise FloatingPointError("encoder failed on call 3")
            return patches.flatten(1)[:, :2] * self.weight

    lockstep = LockstepEncoder(Failing(), 2, max_batch=64)
    volume = torch.ones((6, 5, 4))
    lazies = [EncodedTensor(volume + k, lockstep.encoder, 3, 2, encode=lockstep.encode)
              for k in range(3)]
    jobs = [lambda lazy=lazy: tlc.select_indices(lazy, rank=2, method="block", tol=0.0,
                                                 n_iter_max=3, val_size=0, random_state=0)
            for lazy in lazies]
    with torch.no_grad(), pytest.raises(FloatingPointError, match="call 3"):
        lockstep.run(jobs)


def test_calls_are_cut_at_max_batch():
    encoder = CountingEncoder(default_encoder(3, 2).double())
    lockstep = LockstepEncoder(encoder, 2, max_batch=7)
    patches = torch.randn(20, 1, 3, 3, 3, dtype=torch.float64)
    features = lockstep.encode(patches)
    assert encoder.calls == [7, 7, 6]
    torch.testing.assert_close(features, encoder.encoder(patches))
    with pytest.raises(ValueError, match="max_batch"):
        LockstepEncoder(encoder, 2, max_batch=0)


def test_device_batch_size_on_cpu_is_the_cpu_batch():
    assert device_batch_size(default_encoder(3, 2), 3, cpu_batch=1234) == 1234


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_device_batch_size_on_cuda_fits_the_free_memory():
    encoder = default_encoder(5, 8).cuda()
    size = device_batch_size(encoder, 5)
    free, _ = torch.cuda.mem_get_info()
    assert 256 <= size <= 2**20
    patches = torch.zeros((min(size, 65536), 1, 5, 5, 5), device="cuda")
    encoder(patches).sum().backward()  # a call of that size runs
    assert torch.cuda.max_memory_allocated() < free


def test_a_pass_that_reuses_keyed_indices_cuts_no_patch_and_encodes_once():
    volumes = _volumes(3)
    model = _model(refresh_every=2)
    model(volumes, keys=[0, 1, 2])
    cut = []
    original = tlc.nn.PatchGrid.patches

    def counting(self, positions, **options):
        cut.append(len(positions))
        return original(self, positions, **options)

    model.encoder.calls.clear()
    with torch.no_grad():
        for parameter in model.encoder.parameters():
            parameter.mul_(1.5)  # the encoder changed: features are recomputed, patches kept
    tlc.nn.PatchGrid.patches = counting
    try:
        features = model(volumes, keys=[0, 1, 2])
    finally:
        tlc.nn.PatchGrid.patches = original
    assert cut == [] and len(model.encoder.calls) == 1
    # The same features as a fresh read of those volumes at those indices.
    for k, volume in enumerate(volumes):
        tt = tlc.cross_interpolate(model.encoded(volume), model._indices[k][0])
        torch.testing.assert_close(features[k], model.head(list(tt)))


def test_an_interrupted_run_leaves_no_waiting_thread_and_the_next_run_works():
    import signal
    import threading
    import time

    class Interrupt(Exception):
        pass

    def interrupt(*_):
        raise Interrupt

    lockstep = LockstepEncoder(torch.nn.Flatten(), n_features=1, max_batch=64)
    ones = torch.ones(2, 1, 1, 1, 1)

    def job(scale, delay):
        def run():
            time.sleep(delay)
            return lockstep.encode(ones * scale)
        return run

    previous = signal.signal(signal.SIGALRM, interrupt)  # as Ctrl-C would, in the server
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupt):
            lockstep.run([job(1, 0.0), job(2, 0.6)])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not [t for t in threading.enumerate() if t.name.startswith("lockstep")]
    outputs = lockstep.run([job(10, 0.0), job(20, 0.0)])
    assert [float(output[0, 0]) for output in outputs] == [10.0, 20.0]
