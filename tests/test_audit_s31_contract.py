"""Session 31, the documentation as a contract: docstrings, the remedies error messages
suggest (followed literally), and the behaviour docs/*.rst and the README state."""

import re
import shlex

import pytest

from tensorly_cross.cli import main
from tensorly_cross.cli._parser import build_parser
from tensorly_cross.cli.summary import outcome


def _flags(parser):
    return {flag for action in parser._actions for flag in action.option_strings}


@pytest.mark.parametrize("stop, passes", [("max_rank", None), ("stalled", None),
                                          ("n_iter_max", None), ("max_evals", None),
                                          ("max_rank", 2), ("dtype", None),
                                          ("max_width", 2)])
def test_a_missed_tol_of_the_demo_advises_what_the_demo_or_compress_takes(
        tmp_path, monkeypatch, capsys, stop, passes):
    # `tensorly-cross demo --volume mni152 --tol 0.01 --method lsq` stalls at rank 64 and
    # said "Raise --max-rank or --n-iter-max": flags the demo has not (a usage error).
    pytest.importorskip("zarr")
    from tensorly_cross.datasets import blob_phantom, write_volume

    shape = (16, 16, 16)
    volume = write_volume(str(tmp_path / "blobs16.zarr"), blob_phantom(shape), shape,
                          chunks=(8, 8, 8))
    summary = dict(stop=stop, passes=passes, tol=1e-3, val_error=5e-3,
                   output=str(tmp_path / "blobs16.tt.npz"), tt_bytes=100,
                   input_bytes=1000, file_bytes=None)
    assert outcome(summary, True, False, demo_volume=volume) == 3
    message = capsys.readouterr().err
    command = re.search(r"\((tensorly-cross compress [^)]*)\)", message)
    demo_part = message.replace(command.group(0), "") if command else message
    parsers = build_parser().subcommands
    assert set(re.findall(r"--[a-z][a-z-]*", demo_part)) <= _flags(parsers["demo"])
    if command is None:
        return
    monkeypatch.chdir(tmp_path)  # the command writes OUT.tt.npz where it runs
    argv = shlex.split(command.group(1))[1:]
    assert main(argv + ["-q"]) in (0, 3)  # a run, not a usage error
    assert (tmp_path / "OUT.tt.npz").is_file()


def _tolerance_warnings(**kwargs):
    import warnings

    import numpy as np

    import tensorly_cross as tlc

    noise = np.random.default_rng(0).standard_normal((10, 11, 12))  # no low rank
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = tlc.tt_cross(noise, tol=1e-3, random_state=0, return_info=True, **kwargs)
    return info, [w.message for w in caught if w.category is tlc.ToleranceNotMetWarning]


def test_a_given_rank_is_warned_about_only_as_the_guide_says():
    # docs/user_guide.rst said "With a given rank ... no warning"; TCI's rank= is a cap (a
    # rank-adaptive run, warned), and a fixed-rank TT no better than zero is warned too.
    info, missed = _tolerance_warnings(rank=2)  # the least-squares cross, error < 1
    assert info.val_error < 1 and not missed
    info, missed = _tolerance_warnings(rank=2, method="tci")
    assert info.val_error > 1e-3 and len(missed) == 1 and "not met" in str(missed[0])
    info, missed = _tolerance_warnings(rank=2, method="als")
    assert info.val_error >= 1 and len(missed) == 1
    assert "no better than the zero tensor" in str(missed[0])


@pytest.mark.parametrize("flag", ["no", "False", 0, 1, None])
def test_default_encoder_pooled_must_be_a_bool(flag):
    # "Flags must be bools: 'no' is refused, not taken for True" (docs/guarantees.rst):
    # pooled="no" built the pooled encoder, pooled=None the other one, without a word.
    pytest.importorskip("torch")
    from tensorly_cross.nn import default_encoder

    with pytest.raises(TypeError, match="pooled must be True or False"):
        default_encoder(5, 4, pooled=flag)


@pytest.mark.parametrize("flag", ["no", "False", 0, 1, None])
def test_regressor_normalize_must_be_a_bool(flag):
    # normalize="no" added the BatchNorm1d it was meant to leave out.
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import Regressor

    with pytest.raises(TypeError, match="normalize must be True or False"):
        Regressor(torch.nn.Identity(), 4, normalize=flag)


def _small_training(torch):
    import numpy as np

    from tensorly_cross.nn import DenseEmbedding, VolumeDataset, default_encoder
    from tensorly_cross.nn.training import Regressor

    torch.manual_seed(0)
    model = Regressor(DenseEmbedding(default_encoder(3, 2)), n_inputs=2, normalize=False)
    rng = np.random.default_rng(0)
    volumes = [rng.random((5, 5, 5)).astype(np.float32) for _ in range(4)]
    return model, VolumeDataset(volumes, rng.standard_normal(4))


@pytest.mark.usefixtures("pytorch_backend")
def test_fit_refuses_a_callback_that_is_not_callable_before_training():
    # fit(callback=3) trained a whole epoch, then failed with "'int' object is not callable".
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import fit

    model, train = _small_training(torch)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TypeError, match="callback must be callable"):
        fit(model, train, epochs=2, batch_size=4, callback=3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.usefixtures("pytorch_backend")
def test_fit_stops_on_true_only_as_its_docstring_says():
    # "callback(epoch, log) after every epoch; True stops training": a callback that
    # returned the log (or a number) stopped after the first epoch without a word.
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import fit

    model, train = _small_training(torch)
    log = fit(model, train, epochs=3, batch_size=4, callback=lambda epoch, log: None)
    assert len(log.losses) == 3
    log = fit(model, train, epochs=3, batch_size=4, callback=lambda epoch, log: epoch == 1)
    assert len(log.losses) == 2
    with pytest.raises(TypeError, match="callback must return True"):
        fit(model, train, epochs=3, batch_size=4, callback=lambda epoch, log: log)


def _function_tensor():

    import tensorly_cross as tlc

    return tlc.FunctionTensor(lambda idx: 1.0 / (1.0 + idx.sum(axis=1)), (8,) * 3)


@pytest.mark.parametrize("first, second, named", [
    (dict(), dict(method="tci"), "method='auto' there, 'tci' here"),
    (dict(method="tci"), dict(), "method='tci' there, 'auto' here"),
])
def test_a_checkpoint_mismatch_names_the_arguments_tt_cross_takes(tmp_path, first, second,
                                                                  named):
    # "a checkpoint of ... other arguments raises CheckpointMismatchError, which names what
    # differs" (docs/scale.rst): method="auto" against "tci" was named "handover=True there,
    # False here", an argument tt_cross has not.
    import tensorly_cross as tlc

    path = tmp_path / "run.ckpt"
    tlc.tt_cross(_function_tensor(), tol=1e-8, random_state=0, checkpoint=path, **first)
    with pytest.raises(tlc.CheckpointMismatchError) as caught:
        tlc.tt_cross(_function_tensor(), tol=1e-8, random_state=0, checkpoint=path, **second)
    assert named in str(caught.value) and "handover" not in str(caught.value)


def test_a_checkpoint_mismatch_names_differentiable(tmp_path):
    # differentiable=True is part of the fingerprint (docs/scale.rst); its mismatch was
    # named "refine=None there, False here".
    torch = pytest.importorskip("torch")
    import tensorly as tl

    import tensorly_cross as tlc

    path = tmp_path / "run.ckpt"
    with tl.backend_context("pytorch"):
        f = tlc.FunctionTensor(
            lambda idx: 1.0 / (1.0 + torch.as_tensor(idx, dtype=torch.float64).sum(1)), (8,) * 3)
        tlc.tt_cross(f, tol=1e-8, random_state=0, checkpoint=path, method="tci")
        with pytest.raises(tlc.CheckpointMismatchError) as caught:
            tlc.tt_cross(f, tol=1e-8, random_state=0, checkpoint=path, method="tci",
                         differentiable=True)
    message = str(caught.value)
    assert "differentiable=False there, True here" in message and "refine" not in message


def test_a_checkpoint_of_tt_cross_refused_by_select_indices_says_why(tmp_path):
    # select_indices searches as differentiable=True does (no refinement): a plain
    # tt_cross's checkpoint is another run's; the message named "refine", no argument.
    import tensorly_cross as tlc

    path = tmp_path / "run.ckpt"
    tlc.tt_cross(_function_tensor(), tol=1e-8, random_state=0, checkpoint=path)
    with pytest.raises(tlc.CheckpointMismatchError) as caught:
        tlc.select_indices(_function_tensor(), tol=1e-8, random_state=0, checkpoint=path)
    message = str(caught.value)
    assert "refine" not in message
    assert "select_indices searches as tt_cross(..., differentiable=True) does" in message


def test_tt_inner_many_of_an_empty_stack_is_an_empty_vector():
    # "inner : torch.Tensor of shape (K,)": a stack of K = 0 TTs raised
    # "IndexError: index 0 is out of bounds for dimension 0 with size 0".
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import tt_inner_many

    tt = [torch.ones(1, 3, 2, dtype=torch.float64), torch.ones(2, 4, 1, dtype=torch.float64)]
    stacked = [torch.ones(0, 1, 3, 2, dtype=torch.float64),
               torch.ones(0, 2, 4, 1, dtype=torch.float64)]
    inner = tt_inner_many(tt, stacked)
    assert inner.shape == (0,) and inner.dtype == torch.float64
    with pytest.raises(ValueError, match="mode sizes"):  # still checked without a TT
        tt_inner_many(tt, [torch.ones(0, 1, 5, 2, dtype=torch.float64), stacked[1]])


def test_crossinfo_to_dict_holds_the_error_its_repr_shows():
    # to_dict ("for JSON or a table") had heldout_bound but not val_error, the error of
    # the TT returned, which the repr shows beside it: a table of runs lacked its result.
    import math

    import tensorly_cross as tlc

    _, info = tlc.tt_cross(_function_tensor(), tol=1e-8, random_state=0, return_info=True)
    data = info.to_dict()
    assert data["val_error"] == info.val_error and data["heldout_bound"] == info.heldout_bound
    assert math.isnan(tlc.CrossInfo(method="tci").to_dict()["val_error"])  # no sweep yet


def test_crossindices_dict_and_its_refusals_are_as_documented():
    # to_dict's docstring listed five keys of six ("ranks" left out), and from_dict's Raises
    # only ValueError, while a non-dict raises TypeError.
    import numpy as np

    import tensorly_cross as tlc

    indices = tlc.select_indices(np.ones((4, 5, 6)), rank=2, random_state=0)
    assert set(indices.to_dict()) == {"shape", "left", "right", "nested", "block", "ranks"}
    for key in indices.to_dict():
        assert f"``{key}``" in tlc.CrossIndices.to_dict.__doc__
    with pytest.raises(TypeError, match="must be a dict"):
        tlc.CrossIndices.from_dict([indices.to_dict()])
    assert "TypeError" in tlc.CrossIndices.from_dict.__doc__


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(cpu_batch=2.7), TypeError, "cpu_batch"),  # was int(2.7): 2, without a word
    (dict(cpu_batch=0), ValueError, "cpu_batch"),  # was 0 patches per call
    (dict(cpu_batch=True), TypeError, "cpu_batch"),
    (dict(memory_fraction=0.0), ValueError, "memory_fraction"),
    (dict(memory_fraction=1.5), ValueError, "memory_fraction"),
    (dict(memory_fraction="half"), TypeError, "memory_fraction"),
    (dict(patch_size=0), ValueError, "patch_size"),
])
def test_device_batch_size_checks_its_arguments_on_every_device(kwargs, error, name):
    # "Every public function validates its arguments first ... nothing is coerced
    # silently" (docs/guarantees.rst): on CPU every argument went unread or through int().
    pytest.importorskip("torch")
    from tensorly_cross.nn import default_encoder, device_batch_size

    arguments = dict(encoder=default_encoder(3, 2), patch_size=3, device="cpu")
    with pytest.raises(error, match=name):
        device_batch_size(**{**arguments, **kwargs})


@pytest.mark.parametrize("generator", [0, 3, "seed", __import__("numpy").random.default_rng(0)])
def test_tt_probe_head_names_a_generator_that_is_not_torch_s(generator):
    # "generator : torch.Generator, optional": an int seed failed in torch.randn with
    # "received an invalid combination of arguments", naming neither the head nor the fix.
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import TTProbeHead

    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None"):
        TTProbeHead((4, 4, 2), 3, generator=generator)
    seeded = torch.Generator().manual_seed(0)  # the remedy the message names
    assert TTProbeHead((4, 4, 2), 3, generator=seeded)(
        [torch.ones(1, 4, 1), torch.ones(1, 4, 1), torch.ones(1, 2, 1)]).shape == (3,)


def test_write_volume_over_a_file_raises_the_documented_file_exists_error(tmp_path):
    # "FileExistsError: If path already holds something else than this volume": a regular
    # file there raised NotADirectoryError naming the temporary folder, after the whole
    # volume was written.
    pytest.importorskip("zarr")
    from tensorly_cross.datasets import blob_phantom, write_volume

    path = tmp_path / "volume.zarr"
    path.write_text("not a volume")
    calls = []

    def function(points):
        calls.append(len(points))
        return blob_phantom((4, 4, 4))(points)

    with pytest.raises(FileExistsError, match="volume.zarr"):
        write_volume(str(path), function, (4, 4, 4), chunks=(4, 4, 4))
    assert path.read_text() == "not a volume" and not calls
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume.zarr"]


def test_write_volume_names_a_function_that_returns_the_wrong_number_of_values(tmp_path):
    # "function(indices) -> values for (m, 3) int multi-indices": three values for a slab
    # of 16 failed in NumPy, "cannot reshape array of size 3 into shape (4,4)".
    pytest.importorskip("zarr")
    import numpy as np

    from tensorly_cross.datasets import write_volume

    with pytest.raises(ValueError, match=r"function returned 3 values for 16 multi-indices"):
        write_volume(str(tmp_path / "v.zarr"), lambda points: np.zeros(3), (4, 4, 4),
                     chunks=(4, 4, 4))
    assert list(tmp_path.iterdir()) == []  # its temporary folder removed


def test_the_non_finite_index_named_is_the_first_as_its_docstring_says():
    # NonFiniteValueError.index was documented as "the first multi-index (in request
    # order)"; through an EvaluationCache (every cross's) it is the first in key order.
    import numpy as np

    import tensorly_cross as tlc

    f = tlc.FunctionTensor(lambda idx: np.where(idx[:, 0] % 3 == 0, np.nan, 1.0), (4, 4))
    request = np.array([[1, 1], [3, 0], [0, 3]])
    with pytest.raises(tlc.NonFiniteValueError) as direct:
        f.evaluate(request)
    assert direct.value.index == (3, 0)  # the request's first
    with pytest.raises(tlc.NonFiniteValueError) as cached:
        tlc.EvaluationCache(f).evaluate(request)
    assert cached.value.index in {(3, 0), (0, 3)}  # an offending entry of the request
    assert "not necessarily its first" in tlc.NonFiniteValueError.__doc__


@pytest.mark.parametrize("method", ["tci", "lsq"])
def test_the_demo_s_rerun_advice_keeps_the_method_it_was_asked_for(tmp_path, monkeypatch,
                                                                  capsys, method):
    # Without it the compress command line ran compress's auto (the stream or lsq) instead
    # of the TCI the user had asked the demo for.
    pytest.importorskip("zarr")
    from tensorly_cross.datasets import blob_phantom, write_volume

    shape = (16, 16, 16)
    volume = write_volume(str(tmp_path / "blobs16.zarr"), blob_phantom(shape), shape,
                          chunks=(8, 8, 8))
    summary = dict(stop="stalled", passes=None, tol=1e-3, val_error=5e-3,
                   output=str(tmp_path / "blobs16.tt.npz"), tt_bytes=100,
                   input_bytes=1000, file_bytes=None)
    assert outcome(summary, True, False, demo_volume=volume, demo_method=method) == 3
    command = re.search(r"\((tensorly-cross compress [^)]*)\)", capsys.readouterr().err)
    argv = shlex.split(command.group(1))[1:]
    assert argv[argv.index("--method") + 1] == method
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["-q"]) in (0, 3)
    assert (tmp_path / "OUT.tt.npz").is_file()


@pytest.mark.parametrize("stop, flag", [("stalled", "--patience"), ("n_iter_max", "--n-iter-max"),
                                        ("max_rank", "--max-rank"), ("max_evals", "--max-evals")])
def test_a_missed_tol_of_compress_names_the_flag_of_its_stop(tmp_path, capsys, stop, flag):
    # A stalled run was told to raise --max-rank or --n-iter-max, not the --patience that
    # stopped it.
    summary = dict(stop=stop, passes=None, tol=1e-3, val_error=5e-3,
                   output=str(tmp_path / "v.tt.npz"), tt_bytes=100, input_bytes=1000,
                   file_bytes=None)
    assert outcome(summary, True, False) == 3
    message = capsys.readouterr().err
    assert flag in message
    assert set(re.findall(r"--[a-z][a-z-]*", message)) <= _flags(build_parser().subcommands[
        "compress"])
