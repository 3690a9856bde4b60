"""One module, one grid of patch positions: kept through a saved state and fit_pca,
checked at construction; lazy ``(1, D, H, W)`` volumes read lazily."""

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorly_cross as tlc  # noqa: E402

from .nn_helpers import small_embedding  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


_embedding = small_embedding


def test_a_loaded_quantics_module_refuses_a_permuted_grid():
    # (8, 8, 4) and (8, 4, 8) have the same quantics digits: the head's shape cannot tell.
    trained = _embedding(layout="quantics", volume_shape=(8, 8, 4))
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    loaded = _embedding(layout="quantics")
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert loaded.grid_shape == (8, 8, 4)
    with pytest.raises(ValueError, match="one module takes one volume shape"):
        loaded(torch.rand(1, 1, 8, 4, 8))
    with pytest.raises(ValueError, match=r"saved for a grid of patch positions \(8, 8, 4\)"):
        _embedding(layout="quantics", volume_shape=(8, 4, 8)).load_state_dict(
            trained.state_dict())


def test_a_state_saved_without_the_grid_loads():
    trained = _embedding(volume_shape=(8, 8, 8))
    state = trained.state_dict()
    del state["_extra_state"]
    _embedding().load_state_dict(state)


def test_fit_pca_keeps_its_grid_and_refuses_others():
    model = _embedding(head="pca", n_outputs=2, layout="quantics")
    model.fit_pca([torch.rand(8, 8, 4) for _ in range(3)])
    with pytest.raises(ValueError, match="one module takes one volume shape"):
        model([torch.rand(8, 4, 8)])
    with pytest.raises(ValueError, match="one module takes one volume shape"):
        _embedding(head="pca").fit_pca([torch.rand(8, 8, 8), torch.rand(6, 6, 6)])
    with pytest.raises(ValueError, match="one module takes one volume shape"):
        _embedding(head="pca", volume_shape=(8, 8, 8)).fit_pca([torch.rand(6, 6, 6)] * 2)
    with pytest.raises(ValueError, match="fit_pca needs at least 2 volumes"):
        _embedding(head="pca").fit_pca([torch.rand(6, 6, 6)])


@pytest.mark.parametrize("options, error, message", [
    (dict(volume_shape=(8, 8)), ValueError, "volume_shape must have 3 entries"),
    (dict(volume_shape=(2, 8, 8, 8)), ValueError, "volume_shape must have 3 entries"),
    (dict(volume_shape=(0, 8, 8)), ValueError, r"volume_shape\[0\] must be >= 1"),
    (dict(volume_shape=(-8, 8, 8)), ValueError, r"volume_shape\[0\] must be >= 1"),
    (dict(volume_shape=(8.5, 8, 8)), TypeError, r"volume_shape\[0\]"),
    (dict(volume_shape=8), TypeError, "volume_shape must be a tuple"),
    (dict(grid_shape=(2, 2)), ValueError, "grid_shape must have 3 entries"),
    (dict(grid_shape=(0, 8, 8)), ValueError, r"grid_shape\[0\] must be >= 1"),
    (dict(volume_shape=(8, 8, 8), grid_shape=(4, 4, 4)), ValueError,
     "volume_shape .* but grid_shape is"),
])
def test_bad_volume_and_grid_shapes_are_refused_at_construction(options, error, message):
    with pytest.raises(error, match=message):
        _embedding(**options)


def test_a_volume_shape_with_a_leading_channel_is_the_volume_s_shape():
    assert _embedding(volume_shape=(1, 8, 8, 8)).grid_shape == (8, 8, 8)
    assert _embedding(volume_shape=(8, 8, 8), grid_shape=(8, 8, 8)).grid_shape == (8, 8, 8)


def test_a_lazy_volume_with_a_leading_axis_of_one_is_read_lazily(tmp_path):
    volume = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    np.save(tmp_path / "v4.npy", volume[None])
    lazy = tlc.open_volume(str(tmp_path / "v4.npy"))
    model = _embedding()
    with torch.no_grad():
        torch.testing.assert_close(model([lazy]), model([volume]))
        cores, _ = model.tt(lazy)
    assert len(cores) == 4
