"""Splits and folds by group: a subject's scans on one side only. Without ``groups``, two
sessions of one subject could land one in training and one in test, and a model that
recognises the subject scored as if it generalised."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from tensorly_cross.nn import VolumeDataset  # noqa: E402


def _dataset(n):
    volumes = [np.full((3, 3, 3), float(k), dtype=np.float32) for k in range(n)]
    return VolumeDataset(volumes, np.arange(n, dtype=np.float64))


def _items(dataset):  # each volume holds its own position as its value
    return [int(dataset.volumes[k][0, 0, 0]) for k in range(len(dataset))]


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.integers(0, 6), min_size=4, max_size=30), seed=st.integers(0, 99),
       n_folds=st.integers(2, 5))
def test_folds_keep_each_group_in_one_test_set(labels, seed, n_folds):
    groups = np.array(labels)
    data = _dataset(len(labels))
    if n_folds > len(set(labels)):
        expected = "n_folds must be an int in" if n_folds > len(labels) else "labels in groups"
        with pytest.raises(ValueError, match=expected):
            data.folds(n_folds, seed=seed, groups=groups)
        return
    folds = data.folds(n_folds, seed=seed, groups=groups)
    tested = [_items(test) for _, test in folds]
    assert sorted(sum(tested, [])) == list(range(len(labels)))  # each item tested once
    for (train, _), test_items in zip(folds, tested, strict=True):
        assert not set(groups[_items(train)]) & set(groups[test_items])
    sizes = [len(items) for items in tested]
    largest_group = max(np.bincount(groups))
    assert max(sizes) - min(sizes) <= largest_group


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.sampled_from("abcdefg"), min_size=2, max_size=30),
       fraction=st.floats(0.05, 0.95), seed=st.integers(0, 99))
def test_a_split_by_groups_keeps_each_group_on_one_side(labels, fraction, seed):
    groups = np.array(labels)
    data = _dataset(len(labels))
    if len(set(labels)) < 2:
        with pytest.raises(ValueError, match="single label"):
            data.split(fraction, seed=seed, groups=groups)
        return
    train, test = data.split(fraction, seed=seed, groups=groups)
    train_items, test_items = _items(train), _items(test)
    assert sorted(train_items + test_items) == list(range(len(labels)))
    assert train_items and test_items
    assert not set(groups[train_items]) & set(groups[test_items])


def test_without_groups_the_folds_and_split_are_unchanged():
    data = _dataset(10)
    order = np.random.default_rng(3).permutation(10)
    assert _items(data.split(0.7, seed=3)[1]) == list(order[7:])
    expected = np.array_split(np.random.default_rng(3).permutation(10), 4)
    assert [_items(test) for _, test in data.folds(4, seed=3)] == [list(p) for p in expected]


@pytest.mark.parametrize("groups, error, message", [
    ([0, 1, 2], ValueError, "one label per item"),
    (np.zeros((2, 3)), ValueError, "one label per item"),
    ([1, "a", None, 2, 3, 4], TypeError, "labels of one kind"),
])
def test_bad_groups_are_refused_by_name(groups, error, message):
    with pytest.raises(error, match=message):
        _dataset(6).folds(2, groups=groups)


@pytest.mark.usefixtures("pytorch_backend")
def test_cross_validate_passes_groups_to_its_folds():
    from tensorly_cross.nn import default_encoder
    from tensorly_cross.nn.dense import DenseEmbedding
    from tensorly_cross.nn.training import Regressor, cross_validate

    torch.manual_seed(0)
    groups = np.array([0, 0, 0, 1, 1, 2])  # 3 labels: 4 folds cannot be made
    with pytest.raises(ValueError, match="labels in groups"):
        cross_validate(lambda: Regressor(DenseEmbedding(default_encoder(3, 2)), 2),
                       _dataset(6), n_folds=4, groups=groups, epochs=1)
    scores = cross_validate(lambda: Regressor(DenseEmbedding(default_encoder(3, 2)), 2),
                            _dataset(6), n_folds=3, groups=groups, epochs=1, batch_size=2)
    assert len(scores) == 3 and all(np.isfinite(scores))
