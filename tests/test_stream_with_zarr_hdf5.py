"""Tests of the streaming TT-SVD: sketches, blocks, tolerances and its messages (needing zarr and
h5py)."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import _reconstruct
from tensorly_cross.cost import choose_path
from tensorly_cross.stream import streaming, streaming_tt_svd
from tensorly_cross.stream.blocks import plan_blocks, volume_source

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")


def _dense(tt):
    return np.asarray(tl.to_numpy(tl.tt_to_tensor(tt)))


def _smooth(shape):
    grids = np.meshgrid(*[np.linspace(0.0, 1.0, n) for n in shape], indexing="ij")
    return np.sin(sum((k + 1) * grid for k, grid in enumerate(grids)))


def _random_tt(shape, rank, seed=0):
    rng = np.random.default_rng(seed)
    ranks = [1] + [rank] * (len(shape) - 1) + [1]
    return [rng.standard_normal((ranks[k], n, ranks[k + 1])) for k, n in enumerate(shape)]


# --- cost model --------------------------------------------------------------------------


@pytest.mark.parametrize(("oversample", "rank"), [(1e300, 10**18), (1.5, 10**400)])
def test_choose_path_with_a_side_beyond_float_range_reads_everything(tmp_path, oversample,
                                                                     rank):
    # oversample * rank overflowed to inf (math.ceil(inf) raised OverflowError), and a rank
    # beyond float64 raised "int too large to convert to float".
    path = tmp_path / "v.npy"
    np.save(path, np.ones((32, 32, 32)))
    choice = choose_path(tlc.open_volume(path), rank=rank, oversample=oversample)
    assert choice.method == "stream" and choice.cross_share == 1.0


@pytest.mark.parametrize("wrap", ["raw", "lazy_tensor"])
@pytest.mark.parametrize("kind", ["zarr", "h5py"])
def test_choose_path_measures_the_chunks_of_a_stored_array_given_as_is(tmp_path, wrap, kind):
    # A zarr array or h5py dataset (or lazy_tensor of one) was said to be read "one by one
    # at no storage cost": the cross was chosen for a store it would read all of.
    volume = np.ones((64, 64, 64))
    if kind == "zarr":
        array = zarr.open(str(tmp_path / "v.zarr"), mode="w", shape=volume.shape,
                          chunks=(8, 8, 8), dtype="f8")
        array[:] = volume
    else:
        handle = h5py.File(tmp_path / "v.h5", "w")
        array = handle.create_dataset("v", data=volume, chunks=(8, 8, 8))
    given = array if wrap == "raw" else tlc.lazy_tensor(array)
    choice = choose_path(given)
    opened = choose_path(tlc.open_volume(array))
    assert choice.method == opened.method == "stream"
    assert choice.cross_share == pytest.approx(opened.cross_share)


# --- streaming ---------------------------------------------------------------------------


def test_a_given_max_width_is_kept_with_a_rank_on_a_volume_over_the_budget(monkeypatch):
    # With rank= on a volume of more than MAX_CORE_ENTRIES entries, the default outer width
    # 2 * rank + 10 replaced the max_width the user gave (silently: 14 instead of 18).
    monkeypatch.setattr(streaming, "MAX_CORE_ENTRIES", 7000)
    assert streaming._widths((20, 20, 20), (1, 2, 2, 1), None) == (14, 20, 14)
    assert streaming._widths((20, 20, 20), (1, 2, 2, 1), 18) == (18, 20, 18)
    assert streaming._widths((20, 20, 20), (1, 2, 2, 1), 3) == (3, 20, 3)
    volume = _smooth((20, 20, 20))
    _, info = streaming_tt_svd(volume, rank=2, max_width=18, random_state=0,
                               return_info=True)
    assert info.widths == (18, 20, 18)


def test_npy_blocks_stay_within_block_bytes_when_one_layer_is_larger(tmp_path):
    # A .npy file was cut only along its slowest axis: one layer of (2, 60, 80) float64 is
    # 38400 bytes, read whole whatever block_bytes said (a (2, 10**9) file: 8 GB a block).
    volume = _smooth((2, 60, 80))
    for order in ("C", "F"):
        path = tmp_path / f"v{order}.npy"
        np.save(path, np.asarray(volume, order=order))
        block_bytes = 8 * 80 * 7
        source = volume_source(str(path), block_bytes)
        blocks = plan_blocks(source, block_bytes)
        sizes = [np.prod([s.stop - s.start for s in block]) for block in blocks]
        assert max(sizes) * 8 <= block_bytes
        assert sum(sizes) == volume.size  # the blocks still cover the volume once
        tt, info = streaming_tt_svd(str(path), tol=1e-10, max_width=6, random_state=0,
                                    block_bytes=block_bytes, return_info=True)
        expected = streaming_tt_svd(volume, tol=1e-10, max_width=6, random_state=0)
        assert info.n_blocks == len(blocks) > 2
        assert np.allclose(_dense(tt), _dense(expected), atol=1e-10)


# --- reconstruction ----------------------------------------------------------------------


def test_volume_values_takes_negative_indices_as_numpy_does():
    # A negative index gave an empty range and "cannot reshape array of size 0".
    cores = _random_tt((4, 5, 6), 2)
    dense = _dense(cores)
    metadata = {"shape": [4, 5, 6]}
    got = _reconstruct.volume_values(cores, metadata, (-1, slice(None), -2))
    assert np.allclose(got, dense[-1, :, -2])


@pytest.mark.parametrize("selection", [(4, slice(None), 0), (slice(0, 4, 2), 0, 0),
                                       (0, 0, 1.5)])
def test_volume_values_refuses_what_it_cannot_select_by_name(selection):
    # Out of range: an empty result and a reshape error; a step of 2 was ignored silently
    # (every entry returned); a float failed inside range().
    cores = _random_tt((4, 5, 6), 2)
    with pytest.raises((IndexError, ValueError, TypeError), match="selection"):
        _reconstruct.volume_values(cores, {"shape": [4, 5, 6]}, selection)


@pytest.mark.parametrize(("options", "blames", "not_blamed"), [
    (dict(rank=3), "the volume's own ranks", "max_rank"),
    (dict(rank=3, max_rank=2), "max_rank=2", "sketch widths"),
    (dict(rank=3, max_width=2), "sketch widths", "max_rank"),
])
def test_a_lowered_fixed_rank_blames_what_lowered_it(options, blames, not_blamed):
    # A rank-1 volume asked for rank 3 was said to be "lowered by max_rank=None or the
    # sketch widths (6, 5, 4)": neither was given or narrowed anything.
    volume = np.zeros((6, 5, 4))
    volume[2, 3, 1] = 5.0  # unfoldings of rank 1, exactly
    if "max_rank" in options or "max_width" in options:
        volume = np.random.default_rng(0).random((6, 5, 4))  # of full rank
    with pytest.warns(UserWarning, match="was asked for") as caught:
        streaming_tt_svd(volume, random_state=0, **options)
    message = " ".join(str(item.message) for item in caught)
    assert blames in message and not_blamed not in message


@pytest.mark.parametrize("fixed", [None, {2: 3}])
def test_write_nifti_evaluates_blocks_within_block_entries_when_a_slab_is_larger(
        tmp_path, monkeypatch, fixed):
    # One slab of the last axis was evaluated whole however large: a (8192, 8192, 100)
    # volume evaluated 67M entries (times the rank) at once, BLOCK_ENTRIES being 4M.
    nibabel = pytest.importorskip("nibabel")
    cores = _random_tt((6, 7, 5), 3)
    dense = _dense(cores)
    monkeypatch.setattr(_reconstruct, "BLOCK_ENTRIES", 10)
    evaluate, sizes = _reconstruct.volume_values, []

    def recording(tt, metadata, selection):
        block = evaluate(tt, metadata, selection)
        sizes.append(block.size)
        return block

    monkeypatch.setattr(_reconstruct, "volume_values", recording)
    path = str(tmp_path / "v.nii.gz")
    shape, _ = _reconstruct.write_nifti(path, cores, {"shape": [6, 7, 5]}, fixed=fixed)
    expected = dense if fixed is None else dense[:, :, 3:4]
    assert shape == expected.shape and max(sizes) <= 10 and sum(sizes) == expected.size
    written = np.asarray(nibabel.load(path).dataobj)
    np.testing.assert_allclose(written, expected, rtol=1e-6, atol=1e-6)
