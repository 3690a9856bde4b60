"""Session 30, a new user's path through the docs on real volumes (nibabel's and
nilearn's files): what the snippets and the command line do on real-world quirks."""

import os

import numpy as np
import pytest

import tensorly_cross as tlc


def _nan_volume():
    volume = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    volume[:2] = np.nan  # a masked background
    return volume


def _fill_nan_noted(error):
    return any("fill_nan" in note for note in getattr(error.value, "__notes__", []))


def test_streaming_nan_in_a_npy_file_names_fill_nan(tmp_path):
    # tt_cross(open_volume(path)) notes fill_nan on a NaN voxel; the README's other read of
    # a stored volume, streaming_tt_svd(path), raised the bare "values must be finite".
    path = tmp_path / "map.npy"
    np.save(path, _nan_volume())
    with pytest.raises(tlc.NonFiniteValueError) as error:
        tlc.streaming_tt_svd(str(path), tol=0.1)
    assert _fill_nan_noted(error)


def test_streaming_nan_in_a_nifti_file_names_fill_nan(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    path = tmp_path / "map.nii.gz"
    nibabel.save(nibabel.Nifti1Image(_nan_volume(), np.eye(4)), path)
    with pytest.raises(tlc.NonFiniteValueError) as error:
        tlc.streaming_tt_svd(str(path), tol=0.1)
    assert _fill_nan_noted(error)
    # and the remedy it names works
    tt = tlc.streaming_tt_svd(tlc.open_volume(str(path), fill_nan=0.0), tol=0.1)
    assert tt.rank[0] == 1


def test_streaming_inf_is_not_sent_to_fill_nan(tmp_path):
    volume = _nan_volume()
    volume[:2] = 1.0
    volume[3, 3, 3] = np.inf  # an overflow, not a background: fill_nan would not help
    path = tmp_path / "overflow.npy"
    np.save(path, volume)
    with pytest.raises(tlc.NonFiniteValueError) as error:
        tlc.streaming_tt_svd(str(path), tol=0.1)
    assert not _fill_nan_noted(error)


def _nan_dataset(tmp_path, in_memory):
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross.nn import VolumeDataset

    path = tmp_path / "zmap.nii"
    volume = np.random.default_rng(1).random((12, 12, 12)).astype(np.float32)
    volume[:3] = np.nan
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)
    return VolumeDataset([str(path)], [0.0], in_memory=in_memory)


def test_a_nan_map_in_a_volume_dataset_names_its_remedy_for_the_cross_model(tmp_path):
    # docs/pipeline.rst: such maps need VolumeDataset(..., fill_nan=0.0); the error's note
    # named open_volume's fill_nan only, which a VolumeDataset user does not call.
    torch = pytest.importorskip("torch")
    import tensorly as tl

    from tensorly_cross.nn import CrossEmbedding, default_encoder

    data = _nan_dataset(tmp_path, in_memory=False)
    torch.manual_seed(0)
    embedding = CrossEmbedding(default_encoder(4, 2, pooled=True), patch_size=4, stride=2,
                               n_features=2, rank=2, layout="tt", n_iter_max=1)
    with tl.backend_context("pytorch"), pytest.raises(tlc.NonFiniteValueError) as error:
        embedding([data[0][0]])
    assert any("VolumeDataset(..., fill_nan=" in note for note in error.value.__notes__)


def test_a_nan_map_in_a_volume_dataset_names_its_remedy_for_the_dense_model(tmp_path):
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import default_encoder
    from tensorly_cross.nn.dense import DenseEmbedding

    data = _nan_dataset(tmp_path, in_memory=True)
    torch.manual_seed(0)
    with pytest.raises(tlc.NonFiniteValueError, match=r"voxel \(0, 0, 0\)") as error:
        DenseEmbedding(default_encoder(4, 2, pooled=True))([data[0][0]])
    assert any("VolumeDataset(..., fill_nan=" in note
               for note in getattr(error.value, "__notes__", []))


def _nibabel_image(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    path = tmp_path / "scan.nii.gz"
    volume = np.random.default_rng(2).random((6, 7, 8)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)
    return nibabel.load(path), str(path)


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


@pytest.mark.parametrize("call", [
    lambda image: tlc.open_volume(image),
    lambda image: tlc.streaming_tt_svd(image, tol=0.1),
], ids=["open_volume", "streaming_tt_svd"])
def test_a_nibabel_image_is_refused_with_its_remedy(tmp_path, call):
    # open_volume and streaming_tt_svd said only that an image is not a path or an array.
    image, path = _nibabel_image(tmp_path)
    with pytest.raises(TypeError, match=r"nibabel Nifti1Image.*open_volume\(path\)") as error:
        call(image)
    assert "scan.nii.gz" in str(error.value)  # the file it came from


def test_the_command_line_does_not_advise_a_val_size_it_has_no_flag_for(tmp_path, capsys):
    # nibabel's own test volume; a TCI pass whose residual a handful of held-out voxels
    # carry warns (UnseenStructureWarning) with the library's advice "Raise val_size",
    # which compress has no flag for.
    pytest.importorskip("nibabel")
    from nibabel.testing import data_path

    from tensorly_cross import cli

    source = os.path.join(data_path, "reoriented_anat_moved.nii")
    output = str(tmp_path / "anat.tt.npz")
    code = cli.main(["compress", source, "--method", "tci", "--tol", "0.1", "-o", output,
                     "--accept-miss"])
    assert code == cli.EXIT_OK
    err = capsys.readouterr().err
    assert "UnseenStructureWarning" in err  # the warning itself is kept
    assert "val_size" not in err
    assert "reconstruct" in err and "--against" in err  # what the command line offers
