"""Session 32 audit, real volume files: nibabel's test data and nilearn's MNI152 template
through the Python API and the command line (see docs/real_volumes.rst, docs/cli.rst)."""

import os
import re

import numpy as np
import pytest

import tensorly_cross as tlc

nibabel = pytest.importorskip("nibabel")
from nibabel.testing import data_path  # noqa: E402

MGZ = os.path.join(data_path, "test.mgz")
PARREC = os.path.join(data_path, "phantom_varscale.PAR")


def _all_entries(volume):
    """Every entry of a lazy tensor, read through ``evaluate``, in its shape."""
    grid = np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij")
    indices = np.stack(grid, axis=-1).reshape(-1, len(volume.shape))
    return np.asarray(volume.evaluate(indices)).reshape(volume.shape)


@pytest.mark.parametrize("path", [MGZ, PARREC])
@pytest.mark.parametrize("call", [tlc.tt_cross, tlc.open_volume, tlc.streaming_tt_svd])
def test_a_non_nifti_image_is_refused_with_a_remedy_that_works(path, call):
    """An MGH or PAR/REC image was refused with 'pass open_volume(path) for its file
    (test.mgz)', which open_volume refuses in turn (unsupported suffix); its proxy opens."""
    image = nibabel.load(path)
    with pytest.raises(TypeError) as error:
        call(image)
    message = str(error.value)
    assert "open_volume(path)" not in message
    assert "open_volume(image.dataobj)" in message
    with pytest.raises(ValueError, match="unsupported suffix"):
        tlc.open_volume(path)  # what the message no longer advises
    np.testing.assert_array_equal(_all_entries(tlc.open_volume(image.dataobj)),
                                  image.get_fdata())


def test_a_non_nifti_proxy_crossed_directly_names_open_volume_of_itself():
    proxy = nibabel.load(MGZ).dataobj
    with pytest.raises(TypeError) as error:
        tlc.tt_cross(proxy, rank=2)
    message = str(error.value)
    assert "open_volume(path)" not in message
    assert "open_volume(tensor)" in message


def test_an_image_in_memory_is_told_to_save_it_or_load_it_not_to_open_its_file():
    image = nibabel.Nifti1Image(np.ones((3, 4, 5), dtype=np.float32), np.eye(4))
    with pytest.raises(TypeError) as error:
        tlc.tt_cross(image, rank=1)
    message = str(error.value)
    assert "open_volume(path)" not in message
    assert re.search(r"get_fdata\(\)", message) and "nibabel.save" in message


def test_a_nifti_image_still_names_open_volume_of_its_file(tmp_path):
    path = str(tmp_path / "v.nii.gz")
    nibabel.save(nibabel.Nifti1Image(np.ones((3, 4, 5), dtype=np.float32), np.eye(4)), path)
    with pytest.raises(TypeError, match=r"open_volume\(path\) for its file.*v\.nii\.gz"):
        tlc.tt_cross(nibabel.load(path), rank=1)


@pytest.mark.parametrize("name", ["test.mgz", "phantom_varscale.PAR", "tiny.mnc"])
def test_a_file_nibabel_reads_but_open_volume_does_not_is_told_how_to_convert_it(name):
    """FreeSurfer's .mgz, Philips' PAR/REC, MINC: 'unsupported suffix' alone left a user
    with no way in; the message says how to convert the file to NIfTI, which opens."""
    with pytest.raises(ValueError, match="unsupported suffix") as error:
        tlc.open_volume(os.path.join(data_path, name))
    assert "nibabel.save(nibabel.load(" in str(error.value)


def test_a_suffix_nothing_reads_is_not_sent_to_nibabel(tmp_path):
    path = tmp_path / "volume.raw"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="unsupported suffix") as error:
        tlc.open_volume(str(path))
    assert "nibabel" not in str(error.value)
