"""fit checks every volume's shape before the first step: a volume of another shape in a
dataset of files failed only when its batch came up, epochs into a run."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    VolumeDataset,
    default_encoder,  # noqa: E402
)
from tensorly_cross.nn.dense import DenseEmbedding  # noqa: E402
from tensorly_cross.nn.training import Regressor, fit  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


def _files(tmp_path, shapes, in_memory=False):
    paths = []
    for k, shape in enumerate(shapes):
        path = tmp_path / f"sub-{k:02d}.npy"
        np.save(path, np.random.default_rng(k).standard_normal(shape).astype(np.float32))
        paths.append(str(path))
    return VolumeDataset(paths, np.arange(len(shapes), dtype=np.float32), in_memory=in_memory)


def _cross_model():
    embedding = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_iter_max=1)
    return Regressor(embedding, 2)


def test_a_training_volume_of_another_shape_is_named_before_any_step(tmp_path):
    train = _files(tmp_path, [(12, 12, 12)] * 5 + [(15, 12, 12)])
    model = _cross_model()
    steps = []
    with pytest.raises(ValueError, match=r"volume 5 of train \(key 5, file .*sub-05.npy"):
        fit(model, train, epochs=2, batch_size=2, callback=lambda *a: steps.append(a))
    assert not steps and model.embedding.counters["volumes"] == 0


def test_a_test_volume_of_another_shape_is_named_too(tmp_path):
    data = _files(tmp_path, [(12, 12, 12)] * 4 + [(12, 15, 12)])
    train, test = data.subset([0, 1, 2, 3]), data.subset([4])
    with pytest.raises(ValueError, match="volume 0 of test"):
        fit(_cross_model(), train, epochs=1, batch_size=2, test=test)


def test_a_dense_model_still_takes_mixed_shapes(tmp_path):
    train = _files(tmp_path, [(10, 10, 10), (12, 10, 10)], in_memory=True)
    log = fit(Regressor(DenseEmbedding(default_encoder(3, 2)), 2, normalize=False), train,
              epochs=1, batch_size=1)
    assert log.steps == 2
