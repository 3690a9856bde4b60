"""A training recipe: regression on volumes with any embedding, evaluation, k-fold.

The recipe is the same for :class:`~tensorly_cross.nn.CrossEmbedding` and the dense baseline
(:class:`~tensorly_cross.nn.DenseEmbedding`), so that their comparison measures the embeddings only:
features standardised by ``BatchNorm1d`` (no affine part; optional), a linear readout,
targets standardised with the training set's mean and scale, Adam, mean squared error.
"""

import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .._validation import asks_to_stop, check_bool, check_float, check_int
from ._modes import evaluating


class Regressor(nn.Module):
    """``embedding`` -> standardised features -> linear readout, in target units.

    Parameters
    ----------
    embedding : nn.Module
        ``embedding(volumes, keys=None) -> (B, n_inputs)``
        (:class:`~tensorly_cross.nn.CrossEmbedding`,
        :class:`~tensorly_cross.nn.DenseEmbedding`).
    n_inputs : int
        Features the embedding returns.
    n_targets : int, default 1
        Targets per volume (outputs of the readout).
    normalize : bool, default True
        Standardise the features with ``BatchNorm1d`` (no affine part): features of
        different scales and offsets (TT-PCA coordinates, probes) train at one rate. Its
        running statistics lag behind features that move fast over few steps, and batches
        of a few volumes make its batch statistics noisy: ``False`` for short runs on small
        batches (the readout then sees the features as they are).

    Raises
    ------
    TypeError
        ``n_inputs`` or ``n_targets`` not an int, or ``normalize`` not a bool.
    ValueError
        ``n_inputs`` or ``n_targets`` below 1.

    Notes
    -----
    The features are cast to the readout's dtype before the norm and the readout: a
    float16 or bfloat16 :class:`~tensorly_cross.nn.CrossEmbedding` returns float32
    features, which a Regressor moved to that dtype (``model.to(torch.bfloat16)``)
    could not otherwise take. A float32 or float64 Regressor, whose embedding returns
    features of its own dtype, is unchanged by the cast.
    """

    def __init__(self, embedding, n_inputs, n_targets=1, normalize=True):
        super().__init__()
        n_inputs = check_int(n_inputs, "n_inputs", minimum=1)
        n_targets = check_int(n_targets, "n_targets", minimum=1)
        self.n_inputs, self.n_targets = n_inputs, n_targets
        self.embedding = embedding
        # normalize="no" added the norm it meant to leave out: a string is truthy.
        normalize = check_bool(normalize, "normalize")
        self.norm = nn.BatchNorm1d(n_inputs, affine=False) if normalize else nn.Identity()
        self.readout = nn.Linear(n_inputs, n_targets)
        self.register_buffer("target_mean", torch.zeros(n_targets))
        self.register_buffer("target_scale", torch.ones(n_targets))

    def set_target_scale(self, targets):
        """Predict targets as ``mean + scale * readout``, with the given targets' statistics.

        Parameters
        ----------
        targets : array-like, shape (n,) or (n, t)
            The training targets: at least one row, ``t = n_targets`` (``(n,)`` is one
            target a volume), all finite; integers are read as floats.

        Raises
        ------
        ValueError
            If ``targets`` is empty, has another number of targets per volume than
            ``n_targets``, holds NaN or inf, or its mean or scale overflows the
            model's dtype.
        TypeError
            If ``targets`` is complex.
        """
        targets = _checked_targets(targets, self.n_targets)
        mean = targets.mean(dim=0).to(self.target_mean)
        scale = (targets.std(dim=0).clamp_min(1e-12).to(self.target_scale) if len(targets) > 1
                 else torch.ones_like(self.target_scale))
        # Finite targets may still overflow here (1e300 in float32 buffers, or a float32
        # variance past 3.4e38): every prediction was inf, without a word.
        if not bool(torch.isfinite(mean).all() and torch.isfinite(scale).all()):
            raise ValueError(f"the targets' mean or scale overflows {self.target_mean.dtype} "
                             f"(targets up to {float(targets.abs().max()):.3g} in modulus): "
                             "rescale the targets (e.g. to other units) first.")
        self.target_mean.copy_(mean)
        self.target_scale.copy_(scale)

    def forward(self, volumes, keys=None):
        """Predictions for a batch of volumes, in target units.

        Parameters
        ----------
        volumes : torch.Tensor or sequence of volumes
            As the embedding takes them.
        keys : sequence of hashable, optional
            Passed to the embedding (index reuse across steps).

        Returns
        -------
        predictions : torch.Tensor
            ``(B,)`` for one target, ``(B, t)`` for ``t``.

        Raises
        ------
        ValueError
            If the embedding does not return ``(B, n_inputs)`` features.
        """
        features = self.embedding(volumes, keys=keys)
        if features.ndim != 2 or features.shape[1] != self.n_inputs:
            raise ValueError(f"the embedding returned features of shape "
                             f"{tuple(features.shape)}; this Regressor was built with "
                             f"n_inputs={self.n_inputs} (features per volume).")
        # A half-precision embedding returns float32 features (its documented output);
        # the norm and readout refuse mixed dtypes, so the features take theirs.
        features = features.to(self.readout.weight.dtype)
        standardised = self.readout(self.norm(features))
        prediction = self.target_mean + self.target_scale * standardised.to(self.target_mean)
        return prediction[:, 0] if prediction.shape[1] == 1 else prediction


def _checked_targets(targets, n_targets):
    """Targets as a floating ``(n, n_targets)`` tensor; an error naming the fault otherwise.

    ``copy_`` broadcast one target column over every target of a multi-target model (a
    ``(n,)`` array for three targets gave all three its mean), and a NaN target made the
    mean, and so every prediction, NaN without a word."""
    targets = torch.as_tensor(targets)  # a float in its own dtype: the statistics as before
    # Data, not a graph: targets that required grad made the buffers part of theirs (the
    # second training step's backward failed, and so did copy.deepcopy of the model).
    targets = targets.detach()
    if targets.is_complex():  # copy_ into the real buffers dropped the imaginary part
        raise TypeError(f"targets must be real numbers, got {targets.dtype}.")
    if not targets.is_floating_point():
        # Integer targets (ages in years, labels 0/1): torch's mean refused them.
        targets = targets.to(torch.float64)
    if targets.ndim not in (1, 2) or targets.shape[0] == 0:
        raise ValueError(f"targets must have shape (n,) or (n, t) with n >= 1, got "
                         f"{tuple(targets.shape)}.")
    targets = targets.reshape(targets.shape[0], -1)
    if targets.shape[1] != n_targets:
        raise ValueError(f"targets has {targets.shape[1]} target(s) per volume; this "
                         f"Regressor predicts n_targets={n_targets}.")
    if not bool(torch.isfinite(targets).all()):
        row = int(torch.nonzero(~torch.isfinite(targets))[0, 0])
        raise ValueError(f"targets[{row}] holds NaN or inf: the targets' mean and scale "
                         "would be too, and so every prediction.")
    return targets


@dataclass
class TrainingLog:
    """What a :func:`fit` run did (each parameter is an attribute of the same name).

    Parameters
    ----------
    losses : list of float
        Mean training loss of each epoch (standardised targets).
    seconds : list of float
        Wall time of each epoch (training steps only).
    cpu_seconds : list of float
        CPU time of the process in each epoch (all threads): the work done, which other
        processes on a shared machine do not inflate as they do wall time.
    steps : int
        Optimiser steps.
    test_rmse : list of float
        Test RMSE after each epoch (when a test set was given).
    """

    losses: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    cpu_seconds: list = field(default_factory=list)
    steps: int = 0
    test_rmse: list = field(default_factory=list)

    @property
    def total_seconds(self):
        """Wall time of all epochs, in seconds (training steps only)."""
        return float(sum(self.seconds))

    @property
    def total_cpu_seconds(self):
        """CPU time of all epochs, in seconds (all threads)."""
        return float(sum(self.cpu_seconds))


def fit(model, train, epochs=15, batch_size=8, lr=1e-2, seed=0, test=None, callback=None):
    """Train a :class:`Regressor` on a :class:`~tensorly_cross.nn.VolumeDataset`.

    Each training volume's position in ``train`` is its key, so a
    :class:`~tensorly_cross.nn.CrossEmbedding` with ``refresh_every > 1`` reuses its
    indices across epochs. A
    TT-PCA head (``head="pca"``) is fitted on the training volumes at the start of every
    epoch, with the encoder of that moment (as the paper's code does). The model trains in
    train mode; where the model itself is in train mode (at the start and after each
    ``callback``), a part of it in eval mode (an encoder whose BatchNorm should keep its
    running statistics) stays in eval mode.

    Parameters
    ----------
    model : Regressor
        Trained in place.
    train : VolumeDataset
        The training volumes and targets (keys: their positions).
    epochs : int, default 15
        Passes over ``train``.
    batch_size : int, default 8
        Volumes per step.
    lr : float
        Adam's learning rate.
    seed : int
        Shuffling (and nothing else: seed torch yourself for the weights).
    test : VolumeDataset, optional
        Evaluated after every epoch (not counted in the epoch's time).
    callback : callable, optional
        ``callback(epoch, log)`` after every epoch; ``True`` stops training (``False`` or
        ``None`` goes on; any other answer is a TypeError, as for
        :func:`~tensorly_cross.tt_cross`'s).

    Returns
    -------
    log : TrainingLog
        Per-epoch losses, times and (with ``test``) test RMSE.

    Raises
    ------
    TypeError
        If ``train`` (or ``test``) is not a :class:`~tensorly_cross.nn.VolumeDataset`,
        ``epochs``, ``batch_size`` or ``seed`` is not an int, ``lr`` not a number, or
        ``callback`` not callable (checked before training).
    ValueError
        If ``epochs`` or ``seed`` is negative, ``lr`` is not a finite number >= 0,
        ``batch_size`` is below 1, ``train`` or ``test`` is empty, its
        targets per volume are not the model's ``n_targets``, a
        :class:`~tensorly_cross.nn.CrossEmbedding`'s ``n_outputs`` is not the model's
        ``n_inputs`` (checked before any search), or the model standardises
        its features (``normalize=True``, ``BatchNorm1d``) and a step would see one volume
        only: ``batch_size=1``, or one training volume; or, for a
        :class:`~tensorly_cross.nn.CrossEmbedding` (one volume shape), if a training or
        test volume's shape is not the others' (checked from the headers, before training);
        for a :class:`~tensorly_cross.nn.DenseEmbedding` with ``batch_size > 1`` (it stacks
        a batch), if the training (or the test) volumes are not of one shape.
    """
    epochs = check_int(epochs, "epochs", minimum=0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    # Checked now: a bad seed failed in NumPy once the first epoch began (after a PCA refit).
    seed = check_int(seed, "seed", minimum=0)
    lr = check_float(lr, "lr", minimum=0.0)  # 0 is taken, as Adam takes it: a frozen pass
    if callback is not None and not callable(callback):  # it failed after the first epoch
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}.")
    _check_training_data(model, train, test, batch_size)
    model.set_target_scale(train.targets)
    if hasattr(model.embedding, "clear_cache"):
        # Keys are positions in ``train``: indices kept under them belong to other data.
        model.embedding.clear_cache()
    if hasattr(model.embedding, "_build_head_for") and len(train):
        # A head built by the first forward pass would miss the optimiser made here.
        model.embedding._build_head_for(train.volume(0))
    _check_volume_shapes(model.embedding, train, test, batch_size)
    _check_feature_width(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    log = TrainingLog()
    for epoch in range(epochs):
        _refit_pca(model.embedding, train)
        # A model in train mode keeps the modes of its parts: model.train() set an encoder
        # put in eval mode (a BatchNorm, as docs/pipeline.rst advises), or set so by a
        # callback, back in train mode. A model left in eval mode trains whole.
        if not model.training:
            model.train()
        start, cpu_start, losses = time.perf_counter(), time.process_time(), []
        for keys, volumes, targets in train.batches(batch_size, shuffle=True,
                                                    seed=seed * 100_003 + epoch):
            if len(keys) < 2 and isinstance(model.norm, nn.BatchNorm1d):
                # BatchNorm needs two samples: a lone remainder waits for the next epoch
                continue
            optimiser.zero_grad()
            loss = _standardised_loss(model, model(volumes, keys=keys), targets)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            log.steps += 1
        log.seconds.append(time.perf_counter() - start)
        log.cpu_seconds.append(time.process_time() - cpu_start)
        log.losses.append(float(np.mean(losses)) if losses else float("nan"))
        if test is not None:
            log.test_rmse.append(rmse(model, test, batch_size))
        # True only: a callback returning the log (or a number) stopped after one epoch.
        if callback is not None and asks_to_stop(callback(epoch, log)):
            break
    return log


def _check_training_data(model, train, test, batch_size):
    """Refuse what would train nothing, or fail in the first step with a shape error."""
    from .dataset import VolumeDataset

    for name, data in (("train", train), ("test", test)):
        if data is not None and not isinstance(data, VolumeDataset):
            raise TypeError(f"{name} must be a VolumeDataset (volumes and their targets), "
                            f"got {type(data).__name__}.")
    if len(train) == 0:
        raise ValueError("train is empty: fit needs at least one training volume.")
    if test is not None and len(test) == 0:
        # rmse refused it only after the first epoch's training
        raise ValueError("test is empty: pass at least one test volume, or test=None.")
    for name, data in (("train", train), ("test", test)):
        width = 1 if data is None or data.targets.ndim == 1 else int(data.targets.shape[1])
        if data is not None and width != model.readout.out_features:
            raise ValueError(f"{name} has {width} target(s) per volume; the model predicts "
                             f"n_targets={model.readout.out_features}.")
    if isinstance(model.norm, nn.BatchNorm1d) and min(batch_size, len(train)) < 2:
        # BatchNorm's batch statistics need two volumes: every step would be skipped.
        raise ValueError(f"batch_size={batch_size} with {len(train)} training volume(s) gives "
                         "steps of one volume, which a Regressor with normalize=True "
                         "(BatchNorm1d) cannot train on: use batch_size >= 2 and at least 2 "
                         "training volumes, or Regressor(..., normalize=False).")


def _check_feature_width(model):
    """A :class:`~tensorly_cross.nn.CrossEmbedding` with a built-in head gives
    ``n_outputs`` features a volume: a Regressor built for another number failed only in
    the first step, after the index searches of a PCA fit over every training volume."""
    embedding = model.embedding
    if getattr(embedding, "head_kind", None) not in ("probes", "pca"):
        return  # a dense embedding or a head of the user's: known from the first step only
    if embedding.n_outputs != model.n_inputs:
        raise ValueError(f"the embedding gives n_outputs={embedding.n_outputs} features per "
                         f"volume (head={embedding.head_kind!r}), but the model was built "
                         f"with n_inputs={model.n_inputs}: build the Regressor with "
                         "n_inputs=embedding.n_outputs.")


def _check_volume_shapes(embedding, train, test, batch_size):
    """Every volume's shape against the embedding's one grid, from the volumes' headers,
    before the first step: a volume of another shape failed only when its batch came up,
    epochs into a run. A dense embedding takes any shape one volume a step; it stacks a
    batch, so with ``batch_size > 1`` each dataset's volumes must have one shape."""
    from .dense import DenseEmbedding

    if not hasattr(embedding, "_check_shapes"):
        if isinstance(embedding, DenseEmbedding) and batch_size > 1:
            for name, data in (("train", train), ("test", test)):
                if data is not None and len(data):
                    _check_one_volume_shape(
                        [data.volume(k) for k in range(len(data))], name, None,
                        f"DenseEmbedding stacks the volumes of a batch (batch_size="
                        f"{batch_size}): crop or resample them to one shape, or pass "
                        "batch_size=1 (with Regressor(..., normalize=False)).")
        return
    first = None  # the shape of train's first volume, which every other must have
    for name, data in (("train", train), ("test", test)):
        if data is not None and len(data):
            volumes = [data.volume(k) for k in range(len(data))]
            embedding._check_shapes(volumes, list(range(len(data))), where=name)
            first = _check_one_volume_shape(
                volumes, name, first,
                f"both give one grid of patch positions at stride {embedding.stride}, but "
                "their voxels are not on one grid. One module takes one volume shape (crop "
                "or resample the volumes).")


def _check_one_volume_shape(volumes, where, first, why):
    """Every volume has the shape of ``first`` (``(shape, dataset name)``; None: this
    dataset's first volume), which it returns; ``why`` ends the message.

    The grid check lets through volumes of different shapes whose grids of patch positions,
    ``ceil(shape / stride)``, agree (91 and 89 voxels at stride 4): a volume not resampled
    to the others' grid, which trained silently, misregistered against them."""
    from .embedding import _volume_named

    for k, volume in enumerate(volumes):
        shape = tuple(int(n) for n in volume.shape)
        first = (shape, where) if first is None else first
        if shape != first[0]:
            raise ValueError(f"{_volume_named(k, volume, k, where)} has shape {shape}, the "
                             f"first volume of {first[1]} {first[0]}: {why}")
    return first


def _refit_pca(embedding, train):
    from .heads import TTPCAHead

    if isinstance(getattr(embedding, "head", None), TTPCAHead):
        embedding.fit_pca([train.volume(k) for k in range(len(train))], keys=range(len(train)))


def _standardised_loss(model, predictions, targets):
    targets = _targets_like(predictions, targets.to(predictions), "the batch")
    scale = model.target_scale if predictions.ndim > 1 else model.target_scale[0]
    return torch.mean(((predictions - targets) / scale) ** 2)


def _targets_like(predictions, targets, where):
    """``targets`` in the shape of ``predictions``; a ValueError naming both if they differ.

    ``(n,)`` and ``(n, 1)`` are one target per volume either way. Anything else must match
    exactly: broadcasting ``(n,)`` against ``(n, t)`` (or ``(1, t)`` against ``(1,)``)
    would give a loss or RMSE over pairs that do not belong together, with no error.
    """
    count = len(predictions)
    if len(targets) != count or \
            predictions.reshape(count, -1).shape != targets.reshape(len(targets), -1).shape:
        raise ValueError(f"the model's predictions have shape {tuple(predictions.shape)} but "
                         f"the targets of {where} have shape {tuple(targets.shape)}: the "
                         "model must predict one value per target of each volume (its "
                         "n_targets must be the targets' width).")
    return targets.reshape(predictions.shape)


def _check_not_empty(dataset, caller):
    if len(dataset) == 0:
        raise ValueError(f"dataset is empty: {caller} needs at least one volume.")


@torch.no_grad()
def predict(model, dataset, batch_size=8):
    """Predictions for every item of a dataset.

    In eval mode, without gradient, and without keys (fresh indices for every volume); each
    part of the model is left in the mode it was in.

    Parameters
    ----------
    model : Regressor
        The model to evaluate.
    dataset : VolumeDataset
        The volumes to predict for (targets unused).
    batch_size : int, default 8
        Volumes per forward pass.

    Returns
    -------
    predictions : torch.Tensor
        On the CPU: ``(n,)`` for one target, ``(n, t)`` for ``t``.

    Raises
    ------
    ValueError
        If ``dataset`` is empty (as :func:`fit` refuses an empty ``train``: an empty
        result would make :func:`rmse` a NaN with no word of why).
    """
    _check_not_empty(dataset, "predict")
    # Each part back in its own mode: model.train(was_training) set them all to the top's.
    with evaluating(model):
        outputs = [model(volumes) for _, volumes, _ in dataset.batches(batch_size)]
    return torch.cat(outputs).cpu()


def rmse(model, dataset, batch_size=8):
    """Root mean squared error of the model's predictions on a dataset.

    Parameters
    ----------
    model : Regressor
        The model to evaluate.
    dataset : VolumeDataset
        The volumes and their targets.
    batch_size : int, default 8
        Volumes per forward pass (see :func:`predict`).

    Returns
    -------
    rmse : float
        Over every item and target.

    Raises
    ------
    ValueError
        If ``dataset`` is empty, or the model's predictions do not have the shape of its
        targets (a model with another ``n_targets``).
    """
    _check_not_empty(dataset, "rmse")
    predictions = predict(model, dataset, batch_size)
    errors = predictions - _targets_like(predictions, dataset.targets, "the dataset")
    return float(errors.double().pow(2).mean().sqrt())


def cross_validate(build_model, dataset, n_folds=5, seed=0, groups=None, **fit_options):
    """Test RMSE of each of ``n_folds`` folds, each model built fresh by ``build_model()``.

    Parameters
    ----------
    build_model : callable
        ``build_model() -> Regressor``, a fresh model for each fold.
    dataset : VolumeDataset
        Split into ``n_folds`` folds (:meth:`~tensorly_cross.nn.VolumeDataset.folds`).
    n_folds : int, default 5
        Folds, each the test set once.
    seed : int, default 0
        Of the folds and of :func:`fit`'s shuffling.
    groups : array-like of shape (n,), optional
        A label per volume (a subject's id): a subject's volumes share a test set (see
        :meth:`~tensorly_cross.nn.VolumeDataset.folds`).
    **fit_options
        Passed to :func:`fit` (``epochs``, ``batch_size``, ``lr``, ...).

    Returns
    -------
    scores : list of float
        The test RMSE of each fold, in fold order.

    Raises
    ------
    ValueError
        As :func:`fit` and :func:`rmse` do (for instance if the models' ``n_targets`` is
        not the targets' width); if ``seed`` is negative; or if a fold's model shares a
        trainable parameter with an earlier fold's (one encoder built outside
        ``build_model``), which would start from weights trained on this fold's test
        volumes (a frozen one, ``requires_grad_(False)``, may be shared).
    TypeError
        If ``seed`` is not an int.
    """
    seed = check_int(seed, "seed", minimum=0)  # fit would refuse it after the first fold's build
    scores, trained = [], {}  # id of a trainable parameter -> (fold, weak reference)
    for fold, (train, test) in enumerate(dataset.folds(n_folds, seed=seed, groups=groups)):
        model = build_model()
        _check_fresh(model, fold, trained)
        fit(model, train, seed=seed, **fit_options)
        scores.append(rmse(model, test))
    return scores


def _check_fresh(model, fold, trained):
    """Refuse a model that shares a trainable parameter with an earlier fold's model (and
    record its own in ``trained``): a fold's test volumes are another fold's training
    volumes, so a carried-over weight gives test scores on volumes it has seen."""
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        earlier, reference = trained.get(id(parameter), (None, None))
        # The weak reference tells the same parameter from a new one at a freed address.
        if reference is not None and reference() is parameter:
            raise ValueError(f"build_model returned, for fold {fold}, a model whose "
                             f"parameter {name!r} is the one the model of fold {earlier} "
                             "trained: that model's training volumes include this fold's "
                             "test volumes. Build every part (the encoder too) inside "
                             "build_model, or freeze a shared one (requires_grad_(False)).")
        trained[id(parameter)] = fold, weakref.ref(parameter)
