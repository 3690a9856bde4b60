"""Audit s26, real volumes: what a run reports against the true error over every voxel.

The volumes are nilearn's MNI152 T1 template, downsampled (skipped without nilearn).
"""

import numpy as np
import pytest

from tensorly_cross import cli
from tensorly_cross.stream import streaming

nilearn_datasets = pytest.importorskip("nilearn.datasets")


@pytest.fixture(scope="module")
def t1_every_fourth_voxel():
    """MNI152's T1 template at a quarter resolution (50x59x48), float32."""
    image = nilearn_datasets.load_mni152_template()
    return np.asarray(image.get_fdata()[::4, ::4, ::4], dtype=np.float32)


def test_a_stream_narrowed_by_its_core_budget_is_not_told_to_raise_max_rank(
        t1_every_fourth_voxel, tmp_path, monkeypatch, capsys):
    # The stream's core budget (2**24 entries, lowered here so that a small volume meets
    # it) narrowed the sketches, which alone left an error above --tol: stop "max_width".
    # compress hid the library's warning that said so and advised "Raise --max-rank",
    # which cannot help: the rank is already capped by the narrowed widths.
    monkeypatch.setattr(streaming, "MAX_CORE_ENTRIES", 8 * 59 * 8)
    path = tmp_path / "t1.npy"
    np.save(path, t1_every_fourth_voxel)
    code = cli.main(["compress", str(path), "-o", str(tmp_path / "t1.tt.npz"), "--method",
                     "stream", "--tol", "0.1", "--max-rank", "1000", "-q"])
    assert code == cli.EXIT_TOL_MISSED
    message = capsys.readouterr().err
    assert "(stop: max_width)" in message
    assert "Raise --max-rank" not in message
    assert "--tol" in message.split("the TT was written to")[1]


@pytest.mark.parametrize(("dtype", "exact"), [(np.float64, True), (np.float32, False)])
def test_a_cross_read_whole_says_exact_only_where_no_rounding_was_estimated(
        t1_every_fourth_voxel, tmp_path, capsys, dtype, exact):
    # A cross that read every voxel of a float32 crop said "(exact: every voxel was read)"
    # though the error it printed included the float32 cores' rounding, estimated on a
    # sample (the stream's summary already said so).
    path = tmp_path / "crop.npy"
    np.save(path, t1_every_fourth_voxel[20:30, 20:30, 20:30].astype(dtype))
    assert cli.main(["compress", str(path), "-o", str(tmp_path / "c.tt.npz"), "--method",
                     "lsq", "--tol", "0.05"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "(100.000% of the volume)" in out
    assert ("(exact: every voxel was read)" in out) == exact
    assert ("plus the cores' rounding" in out) == (not exact)


@pytest.mark.parametrize("where", [(..., None), (None,)])
def test_a_mode_of_size_one_does_not_tighten_the_stream(t1_every_fourth_voxel, where):
    # NIfTI maps and masks are often stored 4-D with one volume, (X, Y, Z, 1). The stream
    # split tol over the d - 1 = 3 bonds, one of them beside the size-1 mode only (rank 1,
    # nothing to drop): error 0.077 for tol 0.1, with 34% more parameters than the same
    # volume in 3-D got.
    from tensorly_cross import streaming_tt_svd

    volume = t1_every_fourth_voxel.astype(np.float64)
    tt3, info3 = streaming_tt_svd(volume, tol=0.1, return_info=True)
    tt4, info4 = streaming_tt_svd(volume[where], tol=0.1, return_info=True)
    assert [r for r in info4.ranks if r > 1] == [r for r in info3.ranks if r > 1]
    assert info4.error == pytest.approx(info3.error, rel=1e-9)
    assert info4.error <= 0.1
