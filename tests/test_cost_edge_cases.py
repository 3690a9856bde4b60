"""Tests of the cost model and choose_path: how a volume is costed and which path is chosen."""

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross import QuanticsTensor, choose_path, open_volume
from tensorly_cross.cost import OUTER_FACTOR, SWEEPS, _Geometry, cross_share, storage_geometry

from ._helpers_shared import _nibabel_image

# -- cost.py -----------------------------------------------------------------------------


# Mutant: the fiber counts of the inner and the outer modes swapped: per sweep, a
# least-squares cross reads ``(oversample rank)^2`` fibers along an inner mode and
# ``OUTER_FACTOR oversample rank`` along the first and the last.
def test_cross_share_counts_square_fibers_inside_and_linear_ones_at_the_ends():
    geometry = _Geometry((64, 64, 64), (8, 8, 8))  # 64 columns of units along each mode
    side = 1.5 * 4
    fibers = SWEEPS * (2 * OUTER_FACTOR * side + side**2)
    expected = 1.0 - np.exp(-fibers / 64)
    assert cross_share(geometry, 4, 1.5, heldout=0) == pytest.approx(expected, rel=1e-12)
    skewed = _Geometry((64, 64, 64), (64, 1, 1))  # whole fibers along mode 0 only
    hit_first = 1.0 - np.exp(-SWEEPS * OUTER_FACTOR * side / 64**2)
    hit_inner = 1.0 - np.exp(-SWEEPS * side**2 / 64)
    hit_last = 1.0 - np.exp(-SWEEPS * OUTER_FACTOR * side / 64)
    missed = (1 - hit_first) * (1 - hit_inner) * (1 - hit_last)
    assert cross_share(skewed, 4, 1.5, heldout=0) == pytest.approx(1 - missed, rel=1e-12)


# Mutant: a store's unit taken as its smallest chunk (``min``), the short last one, not
# its chunk shape.
def test_storage_geometry_of_a_store_with_a_short_last_chunk_is_its_chunk_shape():
    zarr = pytest.importorskip("zarr")
    array = zarr.zeros((10, 12), chunks=(4, 5), dtype="f8")
    geometry = storage_geometry(open_volume(array))
    assert geometry.shape == (10, 12) and geometry.unit_shape == (4, 5)


# Mutant: a view of stored data whose reads are not modelled (a quantics view of a .npy)
# taken for data in memory: "stream" was chosen, which cannot read this view.
def test_a_quantics_view_of_a_stored_volume_is_not_taken_for_memory(tmp_path):
    path = tmp_path / "volume.npy"
    np.save(path, np.ones((16, 16)))
    choice = choose_path(QuanticsTensor(open_volume(str(path))))
    assert choice.method == "lsq" and "not estimated" in choice.reason


def test_choose_path_models_a_volume_transposed_twice_as_once():
    # A 4096^3 zarr store (256 GiB), transposed once, is a cross (6% of its chunks);
    # transposed twice (the identity) it became "an array in memory is read whole at no
    # storage cost": the stream, reading it all. storage_geometry followed one view only.
    zarr = pytest.importorskip("zarr")
    store = zarr.create(shape=(4096,) * 3, chunks=(32,) * 3, dtype="f4",
                        store=zarr.storage.MemoryStore())
    volume = tlc.open_volume(store)
    once = tlc.TransposedTensor(volume, (1, 0, 2))
    twice = tlc.TransposedTensor(once, (1, 0, 2))
    expected = tlc.choose_path(volume, rank=8)
    assert expected.method == "lsq"
    for view in (once, twice):
        choice = tlc.choose_path(view, rank=8)
        assert (choice.method, choice.cross_share) == (expected.method, expected.cross_share)
    # The composed permutation: mode m of the view is mode axes[m] of the store.
    chunks = (8, 16, 32)
    skewed = tlc.open_volume(zarr.create(shape=(64, 64, 64), chunks=chunks, dtype="f4",
                                         store=zarr.storage.MemoryStore()))
    view = tlc.TransposedTensor(tlc.TransposedTensor(skewed, (1, 0, 2)), (0, 2, 1))
    from tensorly_cross.cost import storage_geometry

    # View mode m is the inner view's mode (0, 2, 1)[m], the store's (1, 0, 2)[that].
    assert storage_geometry(view).unit_shape == (chunks[1], chunks[2], chunks[0])
    assert view.shape == skewed.shape  # all 64: the units alone tell the orders apart


def test_the_times_the_cost_model_quotes_are_those_of_the_tables_it_cites():
    # The reason printed for an array in memory, and docs/choosing.rst, kept "0.3-0.7 s
    # against 0.5-13 s" after the table in docs/real_volumes.rst was rerun (0.4-1.1 s
    # against 1.6-22 s).
    import os
    import re

    docs = os.path.join(os.path.dirname(__file__), os.pardir, "docs")
    with open(os.path.join(docs, "real_volumes.rst"), encoding="utf-8") as handle:
        real_volumes = " ".join(handle.read().split())
    with open(os.path.join(docs, "choosing.rst"), encoding="utf-8") as handle:
        choosing = " ".join(handle.read().split())
    reason = tlc.choose_path(np.ones((4, 4, 4))).reason
    stream, cross = re.search(r"\(([\d.-]+) s against ([\d.-]+) s\)", reason).groups()
    assert f"({stream} s against {cross} s" in real_volumes
    assert f"took {stream} s" in choosing and f"cross took {cross} s" in choosing


def test_choose_path_refuses_a_nibabel_image_as_tt_cross_does(tmp_path):
    # nilearn's load_mni152_template() and nibabel.load() give images: choose_path took one
    # for "an array in memory" (even one backed by a gzip file) and said "stream", which
    # streaming_tt_svd then refused; tt_cross refuses it naming open_volume(path).
    image, path = _nibabel_image(tmp_path)
    with pytest.raises(TypeError, match=r"volume is a nibabel Nifti1Image.*open_volume"):
        tlc.choose_path(image)
    assert tlc.choose_path(path).method == "stream"  # its file: the gzip reason
    with pytest.raises(TypeError, match=r"tensor is a nibabel Nifti1Image"):
        tlc.tt_cross(image, tol=0.1)
