"""Audit of the public API's argument combinations: tt_cross, select_indices,
cross_interpolate, CrossIndices and CrossInfo."""

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross import CrossIndices

SHAPE = (12, 10, 8)


def smooth(idx):
    """A function of TT ranks (1, 10, 2, 1) on ``SHAPE``."""
    return np.exp(-idx.sum(axis=1) / 10.0) + np.sin(idx[:, 0] * idx[:, 1] / 3.0)


def _block_dict():
    indices = tlc.select_indices(smooth, shape=SHAPE, rank=2, method="block", random_state=0)
    return indices.to_dict()


def _lsq_dict():
    return tlc.select_indices(smooth, shape=SHAPE, method="lsq", random_state=0).to_dict()


@pytest.mark.parametrize("block", [2.7, 8.5, True, "8"])
def test_from_dict_refuses_a_block_size_that_is_not_an_integer(block):
    # block=2.7 was read as 2 (and True as 1): the sets then described a tensor whose last
    # mode has 2 channels, and cross_interpolate refused the real one with a shape message.
    with pytest.raises(ValueError, match="block"):
        CrossIndices.from_dict(dict(_block_dict(), block=block))


def test_from_dict_keeps_an_integral_float_block_size():
    # JSON writers that emit 8.0 for 8 are still read (as shape entries are).
    assert CrossIndices.from_dict(dict(_block_dict(), block=8.0)).block == 8


@pytest.mark.parametrize("middle", [2.5, None, "2"])
def test_from_dict_refuses_ranks_that_are_not_integers(middle):
    # ranks=[1, 2.5, 2, 1] was read as (1, 2, 2, 1), and None failed inside int().
    data = _lsq_dict()
    ranks = list(data["ranks"])
    ranks[1] = middle
    with pytest.raises(ValueError, match="ranks"):
        CrossIndices.from_dict(dict(data, ranks=ranks))


@pytest.mark.parametrize("function", [tlc.tt_cross, tlc.select_indices])
def test_an_empty_checkpoint_path_is_refused_by_name(function):
    # checkpoint="" failed with FileNotFoundError on a temporary file's rename, after
    # the search had started.
    with pytest.raises(ValueError, match="checkpoint"):
        function(smooth, shape=SHAPE, random_state=0, checkpoint="")


def test_write_volume_does_not_return_another_shapes_volume_at_its_path(tmp_path):
    # A second write to the same path with another shape returned the path of the first
    # volume, silently: the caller then read data of the wrong shape.
    zarr = pytest.importorskip("zarr")
    from tensorly_cross.datasets import blob_phantom, write_volume

    path = str(tmp_path / "v.zarr")
    write_volume(path, blob_phantom((8, 8, 8), n_blobs=2), (8, 8, 8), chunks=(4, 4, 4))
    with pytest.raises(FileExistsError, match="shape"):
        write_volume(path, blob_phantom((6, 8, 8), n_blobs=2), (6, 8, 8), chunks=(4, 4, 4))
    assert zarr.open_array(path, mode="r").shape == (8, 8, 8)
    # The same shape again is another writer's copy of it: kept, as before.
    write_volume(path, blob_phantom((8, 8, 8), n_blobs=2), (8, 8, 8), chunks=(4, 4, 4))


def test_a_budget_that_stops_the_first_sweep_warns_even_without_held_out_entries():
    # max_evals=30, val_size=0: TCI returns its rank-1 starting TT (n_sweeps=0, best_sweep=0)
    # without a word, while the same stop with held-out entries warns "not checked".
    with pytest.warns(tlc.ToleranceNotMetWarning, match="before its first sweep"):
        _, info = tlc.tt_cross(smooth, shape=SHAPE, max_evals=30, val_size=0,
                               random_state=0, return_info=True)
    assert info.n_sweeps == 0


def test_each_callback_sees_the_record_of_its_own_sweep():
    # The callback got the live CrossInfo: records kept per sweep all turned into the
    # final one (every n_sweeps equal), and a callback that cleared a list crashed the run
    # with an IndexError after it.
    seen = []

    def keep(tt, info):
        seen.append(info)
        return False

    _, info = tlc.tt_cross(smooth, shape=SHAPE, rank=2, method="als", n_iter_max=3,
                           patience=None, callback=keep, random_state=0, return_info=True)
    assert [record.n_sweeps for record in seen] == [1, 2, 3]
    assert [len(record.ranks) for record in seen] == [1, 2, 3]
    assert seen[-1].n_evals == info.n_evals

    def clear(tt, info):
        info.ranks.clear()
        info.val_errors.clear()
        info.best_sweep = 99

    _, cleared = tlc.tt_cross(smooth, shape=SHAPE, callback=clear, random_state=0,
                              return_info=True)
    _, plain = tlc.tt_cross(smooth, shape=SHAPE, random_state=0, return_info=True)
    assert cleared.ranks == plain.ranks and cleared.best_sweep == plain.best_sweep
