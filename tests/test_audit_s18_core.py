"""Session 18's audit of the core API: what a callback may do to the TT it is shown, and
messages that name the argument instead of failing inside NumPy or torch."""

import warnings

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc


def test_a_callback_that_edits_its_tt_in_place_leaves_the_result_alone():
    """Normalising the cores in place (for a plot) left a TT with error 0.107 reported as
    2.9e-16."""
    shape = (8, 9, 10)
    function = lambda indices: 1.0 / (1.0 + indices.sum(axis=1))  # noqa: E731
    dense = function(np.indices(shape).reshape(3, -1).T).reshape(shape)

    def normalise(tt, info):
        for core in tt:
            core /= np.abs(core).max()

    tt, info = tlc.tt_cross(function, shape=shape, tol=1e-12, random_state=0, return_info=True,
                            callback=normalise)
    error = np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)
    assert error < 1e-10 and info.val_error < 1e-10


def test_a_scalar_shape_beside_an_array_is_named():
    with pytest.raises(ValueError, match="shape=6 does not match the shape"):
        tlc.tt_cross(np.ones((2, 3)), shape=6)


@pytest.mark.parametrize("function", [tlc.maxvol, tlc.rect_maxvol])
def test_maxvol_of_an_object_matrix_names_its_dtype(function):
    with pytest.raises(TypeError, match="matrix has dtype object"):
        function(np.eye(4, 2).astype(object))


def test_transposed_axes_must_be_ints_not_flags():
    with pytest.raises(ValueError, match=r"\(True, False, 2\)"):
        tlc.TransposedTensor(np.zeros((2, 3, 4)), (True, False, 2))


def test_a_torch_grid_that_requires_grad_is_read_as_points():
    torch = pytest.importorskip("torch")
    grid = torch.linspace(0, 1, 5, requires_grad=True)
    tensor = tlc.FunctionTensor.on_grid(lambda points: points.sum(axis=1), [grid, grid])
    np.testing.assert_allclose(tl.to_numpy(tensor.evaluate([[1, 2]])), [0.75])


def test_patches_of_an_object_volume_are_refused_by_name():
    pytest.importorskip("torch")
    from tensorly_cross.nn import PatchGrid

    with pytest.raises(TypeError, match="volume has dtype object"):
        PatchGrid(np.zeros((4, 4, 4), object), 3)


def test_the_cli_says_why_a_tol_below_its_error_was_not_met(capsys):
    """A held-out error under --tol that never passed (its 95% bound was above) read as
    "--tol 1.0e-01 not met: held-out error 9.73e-02", a contradiction on its face."""
    from tensorly_cross.cli.summary import outcome

    summary = {"tol": 0.1, "val_error": 0.0973, "stop": "max_evals", "output": "x.tt.npz",
               "tt_bytes": 1, "input_bytes": 2}
    assert outcome(summary, tol_driven=True, accept_miss=True) == 0
    assert "not met with confidence (the upper 95% bound" in capsys.readouterr().err
    outcome(dict(summary, val_error=0.2), tol_driven=True, accept_miss=True)
    assert "with confidence" not in capsys.readouterr().err


def test_max_slices_under_auto_says_auto_chose_the_method():
    with pytest.raises(ValueError, match="method='auto' chose it without a rank"):
        tlc.tt_cross(np.ones((4, 5, 6)), tol=0.1, max_slices=4)


def test_the_summary_of_a_volume_read_whole_does_not_call_its_error_a_sample():
    from tensorly_cross.cli.summary import format_summary

    summary = {"shape": (4, 5, 7), "ranks": (1, 4, 5, 1), "n_params": 125,
               "compression": 1.12, "n_evals": 140, "fraction": 1.0, "val_error": 1e-15,
               "n_heldout": 794, "heldout_bound": 0.004}
    text = format_summary(summary)
    assert "exact: every voxel was read" in text and "a sample" not in text
    assert "a sample" in format_summary(dict(summary, n_evals=70, fraction=0.5))


def test_png_slices_have_square_voxels():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tensorly_cross.cli.reconstruct import _show

    figure, ax = plt.subplots()
    try:
        _show(ax, np.zeros((233, 189)))
        assert ax.get_aspect() == 1.0  # "auto" drew a 233x189 slice square
    finally:
        plt.close(figure)


def test_no_progress_bar_is_drawn_into_a_pipe(tmp_path):
    """Its carriage-return updates filled logs with one line per refresh."""
    import os
    import subprocess
    import sys

    path = tmp_path / "v.npy"
    x = np.linspace(0, 1, 20)
    np.save(path, np.exp(-np.add.outer(np.add.outer(x, x), x)))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    result = subprocess.run([sys.executable, "-m", "tensorly_cross.cli", "compress", str(path),
                             "-o", str(tmp_path / "v.tt.npz"), "--method", "lsq"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr


def test_a_budget_too_small_for_a_sweep_says_how_much_a_sweep_reads():
    x = np.linspace(0, 1, 30)
    volume = np.exp(-np.add.outer(np.add.outer(x, x), x))
    volume = volume + 0.01 * np.random.default_rng(0).standard_normal(volume.shape)
    with pytest.raises(ValueError, match=r"the first sweep reads up to about \d+ more\): raise"):
        tlc.tt_cross(volume, tol=1e-3, max_evals=8000, method="lsq", random_state=0)


@pytest.mark.parametrize("where", ["callback", "function"])
def test_switching_the_backend_mid_run_is_refused_and_undone(where):
    pytest.importorskip("torch")
    switch = lambda *args: tl.set_backend("pytorch")  # noqa: E731
    function = lambda indices: 1.0 / (1.0 + indices.sum(axis=1))  # noqa: E731
    if where == "function":
        function = lambda indices: switch() or 1.0 / (1.0 + indices.sum(axis=1))  # noqa: E731
    with tl.backend_context("numpy"):
        with pytest.raises(RuntimeError, match=f"the {where} switched TensorLy's backend"):
            tlc.tt_cross(function, shape=(6, 7, 8), tol=1e-10, random_state=0,
                         callback=switch if where == "callback" else None)
        assert tl.get_backend() == "numpy"


def test_info_says_whether_the_file_met_its_tolerance(tmp_path, capsys):
    """A TT written past a missed --tol (--accept-miss) looked like any other in `info`."""
    from tensorly_cross import cli

    x = np.linspace(0, 1, 16)
    volume = np.exp(-np.add.outer(np.add.outer(x, x), x))
    volume = volume + 0.05 * np.random.default_rng(0).standard_normal(volume.shape)
    path = tmp_path / "v.npy"
    np.save(path, volume)
    output = str(tmp_path / "v.tt.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli.main(["compress", str(path), "-o", output, "--tol", "1e-3", "--max-rank", "2",
                  "--method", "tci", "-q", "--accept-miss"])
    capsys.readouterr()
    assert cli.main(["info", output]) == 0
    assert "(--tol 0.001 NOT met)" in capsys.readouterr().out


@pytest.mark.parametrize("method, extra", [("block", {"rank": 4}), ("als", {"rank": 4}),
                                           ("lsq", {})])
def test_the_budget_a_failed_sweep_names_is_enough(method, extra):
    """The block cross's estimate left out its channels: 480 named, 2,400 needed."""
    import re

    grid = np.linspace(0, 1, 20)
    tensor = np.exp(-np.add.outer(np.add.outer(np.add.outer(grid, grid), grid),
                                  np.linspace(0, 1, 5)))
    kwargs = dict(method=method, val_size=100, random_state=0, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="raise max_evals") as caught:
            tlc.tt_cross(tensor, max_evals=300, **kwargs)
        already, more = map(int, re.search(r"already (\d+) evaluations; the first sweep reads "
                                           r"up to about (\d+) more", str(caught.value)).groups())
        tlc.tt_cross(tensor, max_evals=already + more, **kwargs)  # no ValueError


def test_a_switched_backend_is_restored_for_new_threads_too():
    import threading

    pytest.importorskip("torch")
    seen = []
    with tl.backend_context("numpy"):
        with pytest.raises(RuntimeError, match="switched TensorLy's backend"):
            tlc.tt_cross(lambda i: 1.0 / (1.0 + i.sum(axis=1)), shape=(5, 6, 7), tol=1e-10,
                         random_state=0, callback=lambda *a: tl.set_backend("pytorch"))
        thread = threading.Thread(target=lambda: seen.append(tl.get_backend()))
        thread.start()
        thread.join()
    assert seen == ["numpy"]
