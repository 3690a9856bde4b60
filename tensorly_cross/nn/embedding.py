"""CrossEmbedding: fixed-size, gauge-invariant features of volumes through differentiable cross.

Per volume: the indices of a TT of the encoder's feature field are selected without
gradient, the cores are rebuilt from one differentiable read, and a head turns the TT into
features that do not depend on the TT gauge: inner products with learnable TT probes, or
the coordinates on a TT-PCA basis fitted on training TTs (the paper's head). The volumes of
a batch are searched and read in lockstep (:mod:`.lockstep`): one encoder call per step of
the search for the whole batch, and one for the differentiable read.
"""

import functools
import os
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .._backend import check_concrete, eager_under_torch_compile
from .._validation import (
    check_choice,
    check_float,
    check_int,
    check_random_state,
    outside_stacklevel,
)
from ..api import cross_interpolate, select_indices
from ..errors import NonFiniteValueError
from ..lazy.base import LazyTensor
from ..lazy.quantics import QuanticsLayout
from ._modes import evaluating
from .dataset import WithoutAxis
from .encoded import EncodedTensor, default_encoder
from .heads import TTPCAHead, TTProbeHead
from .keyed import file_of, key_value, volume_fingerprint
from .lockstep import LockstepEncoder, device_batch_size
from .patches import check_concrete_module, patch_grid


class CrossEmbedding(nn.Module):
    """Volumes -> fixed-size features through differentiable cross approximation.

    Parameters
    ----------
    encoder : nn.Module or None
        (m, 1, p, p, p) -> (m, F); ``None`` builds :func:`default_encoder`.
    patch_size, n_features, stride : int
        Edge of the cubic patches, number of encoder features ``F``, and voxels between
        neighbouring grid positions (see :class:`EncodedTensor`).
    rank : int or list of int
        TT rank of the feature field, fixed so that every volume's TT has one shape. An int
        caps every bond (the bonds near the ends hold less where the grid is small there:
        quantics digits of size 2); a list gives each bond and is clipped, with one warning
        per module, where an unfolding cannot hold it.
    head : {"probes", "pca"} or nn.Module
        ``"probes"``: :class:`TTProbeHead` with ``n_outputs`` probes (learnable);
        ``"pca"``: :class:`TTPCAHead` (call :meth:`fit_pca` first). A
        ``TTPCAHead(n_outputs, gradient_through_fit=True)`` given as the head is fitted
        the same way, and in training refits with gradient on every keyed batch
        (:meth:`TTPCAHead.forward_batch`, the keys those :meth:`fit_pca` was given).
    n_outputs : int
        Features per volume: the number of probes (``"probes"``) or of principal
        components (``"pca"``: always ``n_outputs`` columns; ``n`` training volumes span
        ``n - 1`` of them, any more are 0); unused with a module as ``head``.
    refresh_every : int, default 1
        Reuse a volume's indices for this many forward passes before selecting anew; only
        for volumes passed with a ``key`` (see :meth:`forward`). A keyed volume's patches
        are kept too (``patch_cache_bytes``), so a pass that reuses its indices reads no
        voxel: it only runs the encoder, once, on the patches of its fibers. A key names
        one volume: pass the same volume with it every time.
    n_iter_max : int
        Sweeps of the index search.
    volume_shape, grid_shape : tuple of 3 positive ints, optional
        The shape of the volumes (``(1, D, H, W)`` is taken as ``(D, H, W)``), or of their
        grid of patch positions, ``ceil(volume_shape / stride)`` (both: they must agree).
        With either, the probe head exists from
        construction (its parameters can go to an optimiser, its ``state_dict`` is
        complete); without, it is built by the first forward pass, or by
        ``load_state_dict`` from the saved shapes.
    random_state : int, numpy RandomState or Generator, or None
        Seed of every index search (the same volume gets the same indices). A RandomState
        or Generator gives one seed, drawn from it here: a generator shared by the
        searches of a batch (run in threads) would hand out its draws in the threads'
        order, and the features would change from run to run. None: a fresh seed per
        search, so the indices change from call to call.
    method : {"block", "als"}
        ``"block"`` (default): the block cross reads every position for all ``F`` features,
        so the encoder runs once per position and the TT's last bond is ``F``; ``"als"``:
        the entry-wise ALS cross of the ``(*grid, F)`` tensor at rank ``rank``.
    layout : {"tt", "quantics"}
        The TT over the grid's modes, or over their binary digits (QTT; see
        :class:`EncodedTensor`), whose index search reads fewer positions on large grids.
    oversample : float or None, default 1.0
        Probe positions per bond, as a multiple of the rank (see
        :func:`~tensorly_cross.tt_cross`): more encoder runs, cores fitted over more of the
        field. None: the method's own default (1.0).
    max_batch : int or "auto"
        Most patches per encoder call; ``"auto"``: :func:`device_batch_size` for the
        encoder's device, measured once.
    probe_rank : int, default 2
        TT rank of each probe of the ``"probes"`` head.
    patch_cache_bytes : int, default 32 MiB
        Patches kept per keyed volume (and, within one pass, per volume) for the reads
        that follow its search.

    Attributes
    ----------
    counters : dict
        Since construction (or :meth:`reset_counters`): ``encoder_calls``,
        ``patches_encoded``, ``searches`` (volumes whose indices were selected),
        ``lockstep_rounds``, ``forward_calls``, ``volumes`` (volumes passed), and the wall
        seconds of the index searches (``search_seconds``) and of the differentiable
        reads (``read_seconds``), encoder calls included; the head and the backward pass
        are the rest of a step.

    Examples
    --------
    >>> import tensorly as tl
    >>> import torch
    >>> from tensorly_cross.nn import CrossEmbedding
    >>> model = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=3)
    >>> with tl.backend_context("pytorch"):
    ...     features = model(torch.rand(2, 1, 8, 8, 8))
    >>> features.shape
    torch.Size([2, 3])
    >>> features.sum().backward()  # gradients reach the encoder through the patches read
    >>> model.encoder[0].weight.grad is not None
    True
    """

    def __init__(self, encoder=None, patch_size=5, n_features=4, rank=3, head="probes",
                 n_outputs=8, stride=1, refresh_every=1, n_iter_max=4, grid_shape=None,
                 random_state=0, method="block", layout="tt", oversample=1.0,
                 volume_shape=None, max_batch="auto", probe_rank=2,
                 patch_cache_bytes=32 * 2**20):
        super().__init__()
        patch_size, n_features, stride, n_outputs, refresh_every, n_iter_max, probe_rank = (
            check_int(value, name, minimum=1) for value, name in (
                (patch_size, "patch_size"), (n_features, "n_features"), (stride, "stride"),
                (n_outputs, "n_outputs"), (refresh_every, "refresh_every"),
                (n_iter_max, "n_iter_max"), (probe_rank, "probe_rank")))
        patch_cache_bytes = check_int(patch_cache_bytes, "patch_cache_bytes", minimum=0)
        if isinstance(rank, (list, tuple)):  # checked against the field's shape later
            rank = [check_int(r, f"rank[{k}]", minimum=1) for k, r in enumerate(rank)]
        else:
            rank = check_int(rank, "rank", minimum=1)
        if encoder is not None and not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be a torch.nn.Module (or None for the default "
                            f"encoder), got {type(encoder).__name__}.")
        self.encoder = encoder if encoder is not None else default_encoder(patch_size,
                                                                           n_features)
        self.patch_size, self.n_features, self.stride = patch_size, n_features, stride
        self.rank, self.refresh_every, self.n_iter_max = rank, refresh_every, n_iter_max
        # Checked here, not at the first forward pass.
        generator = check_random_state(random_state)
        if isinstance(random_state, np.random.RandomState | np.random.Generator):
            random_state = int(generator.integers(2**63 - 1))
        self.random_state = random_state
        # None: the method's own default, as select_indices takes it.
        self.oversample = (None if oversample is None
                           else check_float(oversample, "oversample", minimum=1.0))
        self.method = check_choice(method, "method", ("block", "als"))
        if isinstance(rank, list):
            _check_end_ranks(rank, self.method)
        self.layout = check_choice(layout, "layout", ("tt", "quantics"))
        if isinstance(max_batch, str):
            if max_batch != "auto":
                raise ValueError(f"max_batch must be 'auto' or a positive int, got "
                                 f"{max_batch!r}.")
        else:
            max_batch = check_int(max_batch, "max_batch", minimum=1)
        self.max_batch, self.probe_rank = max_batch, probe_rank
        self.patch_cache_bytes = patch_cache_bytes
        if isinstance(head, str):
            self.head_kind = check_choice(head, "head", ("probes", "pca"))
            self.head = TTPCAHead(n_outputs) if head == "pca" else None
        elif isinstance(head, nn.Module):
            self.head_kind, self.head = "custom", head
        else:
            raise TypeError(f"head must be 'probes', 'pca' or an nn.Module, got "
                            f"{type(head).__name__}.")
        self.n_outputs = n_outputs
        self.grid_shape = _grid_of(volume_shape, grid_shape, stride)
        if self.grid_shape is not None and self.head is None:
            self._build_probe_head(self.tt_shape(self.grid_shape))
        self._indices = {}  # key -> (indices, age, patches cut so far, fingerprint)
        self._rank_warned = False
        self._keys_warned = False  # fit_pca without keys on a gradient_through_fit head
        self._batch_sizes = {}  # device -> patches per encoder call
        self.reset_counters()
        self.register_load_state_dict_pre_hook(_build_head_from_state)

    def __getstate__(self):
        """What pickling and ``copy.deepcopy`` take: all but the keyed volumes' indices and
        patches, run-time caches that a copy rebuilds on its first keyed pass (they held
        every training volume's patches, gigabytes for a large training set, in each
        whole-model checkpoint and each copy of the best epoch's model).

        Returns
        -------
        state : dict
            The module's attributes, with no keyed volume kept.
        """
        state = super().__getstate__()
        state["_indices"] = {}
        return state

    def get_extra_state(self):
        """What ``state_dict`` saves besides tensors: the grid and the trained-on settings.

        The head's shape does not say which grid it is for: two grids can have the same
        quantics digits. Nor do the weights say which patches the encoder was trained on: a
        pooled encoder's weights fit every patch size.

        Returns
        -------
        state : dict
            ``{"grid_shape": tuple of 3 ints or None, "patch_size": int, "stride": int,
            "n_features": int, "layout": str}``.
        """
        return {"grid_shape": self.grid_shape, **self._trained_settings()}

    def _trained_settings(self):
        """The settings that a state's weights belong to: a module built with others reads
        other patches (or another grid, or TT shape) with them. The rank, method and sweeps
        only change how closely the TT approximates the field, and may differ."""
        return dict(patch_size=self.patch_size, stride=self.stride,
                    n_features=self.n_features, layout=self.layout)

    def set_extra_state(self, state):
        """Restore the grid of patch positions from a saved state of this module's settings.

        The counterpart of :meth:`get_extra_state`.

        Parameters
        ----------
        state : dict
            As :meth:`get_extra_state` returns it; a ``None`` grid leaves this module's, and
            a setting it does not hold (a state saved before they were kept) is not checked.

        Raises
        ------
        ValueError
            If the state was saved by a module built with another patch size, stride,
            number of features or layout, or for another grid of patch positions than the
            one this module was built for.
        """
        if not isinstance(state, dict):
            return
        differing = [f"{name}={state[name]!r} (this module: {value!r})"
                     for name, value in self._trained_settings().items()
                     if name in state and state[name] != value]
        if differing:
            raise ValueError(f"the state was saved by a CrossEmbedding built with "
                             f"{', '.join(differing)}: its weights were trained on those "
                             "patches, and would give other features here. Build the module "
                             "with the saved settings.")
        saved = state.get("grid_shape")
        if saved is None:
            return
        saved = tuple(int(n) for n in saved)
        if self.grid_shape is not None and self.grid_shape != saved:
            raise ValueError(f"the state was saved for a grid of patch positions {saved}; "
                             f"this module was built for {self.grid_shape} (volume_shape or "
                             "grid_shape).")
        self.grid_shape = saved

    def extra_repr(self):
        """The settings shown by ``repr``.

        Returns
        -------
        text : str
            ``name=value`` pairs, comma-separated.
        """
        return (f"patch_size={self.patch_size}, n_features={self.n_features}, "
                f"stride={self.stride}, rank={self.rank}, layout={self.layout!r}, "
                f"method={self.method!r}, head={self.head_kind!r}, "
                f"refresh_every={self.refresh_every}, n_iter_max={self.n_iter_max}, "
                f"grid_shape={self.grid_shape}")

    def tt_shape(self, grid_shape):
        """The shape of the TTs this module builds for a grid of patch positions.

        Parameters
        ----------
        grid_shape : tuple of 3 ints
            The grid of patch positions, ``ceil(volume_shape / stride)``.

        Returns
        -------
        shape : tuple of int
            ``(*grid_shape, n_features)``, or with ``layout="quantics"`` the grid's digits
            followed by ``n_features``.
        """
        if self.layout == "quantics":
            return QuanticsLayout.with_channels(grid_shape, self.n_features).quantics_shape
        return tuple(grid_shape) + (self.n_features,)

    def clear_cache(self):
        """Forget every keyed volume's indices and patches."""
        self._indices.clear()

    def reset_counters(self):
        """Set every entry of ``counters`` to zero."""
        self.counters = dict(encoder_calls=0, patches_encoded=0, searches=0,
                             lockstep_rounds=0, forward_calls=0, volumes=0,
                             search_seconds=0.0, read_seconds=0.0)

    def encoded(self, volume, encode=None):
        """The lazy feature field of one 3-D volume (an :class:`EncodedTensor`).

        Parameters
        ----------
        volume : torch.Tensor, numpy array or LazyTensor (3-D)
            The volume whose patches the encoder reads.
        encode : callable, optional
            ``encode(patches) -> (m, F) features``, called in place of the encoder (e.g.
            :meth:`LockstepEncoder.encode`); ``None``: the encoder itself.

        Returns
        -------
        encoded : EncodedTensor
            With this module's encoder, patch size, number of features, stride, layout
            and ``patch_cache_bytes``.
        """
        return EncodedTensor(volume, self.encoder, self.patch_size, self.n_features,
                             stride=self.stride, layout=self.layout, encode=encode,
                             patch_cache_bytes=self.patch_cache_bytes)

    def tt(self, volume, key=None):
        """The differentiable TT of one volume's feature field (and its EncodedTensor).

        Parameters
        ----------
        volume : torch.Tensor, numpy array or LazyTensor
            One volume, 3-D or ``(1, D, H, W)``.
        key : hashable, optional
            E.g. the volume's index in a dataset: its indices (and patches) are then kept
            and reused for ``refresh_every`` calls; without a key they are selected every
            time.

        Returns
        -------
        cores : list of torch.Tensor
            The TT's cores, with gradient to the encoder's parameters (when gradients are
            enabled).
        encoded : EncodedTensor
            The lazy feature field they were read from (its counters say what it cost).

        Raises
        ------
        ValueError
            If ``volume`` is neither 3-D nor ``(1, D, H, W)``.
        """
        tts, lazies = self._tts([volume], _keys_per_volume([key], [volume]))
        return tts[0], lazies[0]

    def forward(self, volumes, keys=None):
        """Features of a batch of volumes; the searches and the reads run in lockstep.

        Parameters
        ----------
        volumes : torch.Tensor of shape (B, 1, D, H, W), or a sequence of volumes
            The batch; a sequence holds 3-D or ``(1, D, H, W)`` volumes (tensors, arrays
            or lazy tensors such as :func:`tensorly_cross.open_volume`'s).
        keys : sequence of hashable, optional
            One per volume, to reuse its indices (``refresh_every``); ``None`` entries are
            not kept.

        Returns
        -------
        features : torch.Tensor of shape (B, n_outputs)
            The head's output for each volume, stacked (the ``"pca"`` head's components
            beyond what its training volumes span are 0).

        Raises
        ------
        ValueError
            If ``volumes`` is empty, ``keys`` does not have one entry per volume or names
            one twice, a volume or a parameter of the module is on the ``meta`` device, a
            volume is neither 3-D nor ``(1, D, H, W)``, or its grid of patch
            positions is not the one the head is for (``volume_shape``, the first batch's,
            the grid :meth:`fit_pca` ran on, or a loaded state's).
        TypeError
            If ``volumes`` is not a tensor or a sequence of tensors, arrays or lazy
            tensors, a volume is complex, or a key is not one hashable value.
        RuntimeError
            If ``head="pca"`` and :meth:`fit_pca` has not run.
        """
        keys = _keys_per_volume(keys, volumes)
        grid = self._check_shapes(volumes, keys)
        if isinstance(self.head, TTPCAHead) and not self.head.fitted:
            # now, not after every volume's search and read (minutes on large volumes)
            raise RuntimeError("head='pca' needs fit_pca(training_volumes) (or a fitted "
                               "state_dict loaded) before forward.")
        tts, _ = self._tts(volumes, keys)
        if self.head is None:
            self._build_probe_head(tuple(int(core.shape[1]) for core in tts[0]),
                                   like=tts[0][0])
        # Every head, a module given as head too, is for the first batch's grid from now
        # on (two grids can have the same quantics digits).
        self.grid_shape = self.grid_shape or grid
        if isinstance(self.head, TTPCAHead) and self.head.gradient_through_fit:
            return self.head.forward_batch(tts, keys)  # the batch's TTs refit the basis
        return torch.stack([self.head(tt) for tt in tts])

    def _check_shapes(self, volumes, keys, where="the batch"):
        """Every volume of the batch gives TTs of the head's shape (before any search);
        returns the batch's grid of patch positions. ``where``: what the volumes are, for
        the message (``fit`` checks whole datasets before training)."""
        _check_volumes(volumes)
        check_concrete_module(self, "CrossEmbedding")
        grids = [patch_grid(_three_dimensional(volume).shape, self.stride) for volume in volumes]
        expected = self.grid_shape or grids[0]
        head_shape = _head_tt_shape(self.head)
        for k, grid in enumerate(grids):
            if grid != expected or (head_shape is not None
                                    and self.tt_shape(grid) != head_shape):
                wanted = (f"grid {expected}" if head_shape is None or self.grid_shape
                          else f"TT shape {head_shape}")
                raise ValueError(
                    f"{_volume_named(k, volumes[k], keys[k], where)}, shape "
                    f"{tuple(volumes[k].shape)}, gives a grid "
                    f"of patch positions {grid} (TT shape {self.tt_shape(grid)}); this "
                    f"module's head is for {wanted}: one module takes one volume shape "
                    "(crop or resample the volumes).")
        return expected

    def fit_pca(self, volumes, keys=None, batch_size=8):
        """Fit the TT-PCA head on training volumes (``head="pca"``), without gradient.

        The encoder runs in eval mode, as at inference (dropout off, BatchNorm on its
        running statistics, which the fit leaves as they are); afterwards each part of the
        module is back in the mode it had (an encoder in eval mode stays in it). In train
        mode the basis would carry one draw of dropout, and eval-mode features of the very
        training volumes would not be centred on it.

        Parameters
        ----------
        volumes : sequence of volumes
            At least 2 training volumes, as :meth:`forward` takes them.
        keys : sequence of hashable, optional
            As in :meth:`forward` (these searches count towards ``refresh_every``).
        batch_size : int, default 8
            Volumes searched and read in lockstep at a time.

        Returns
        -------
        self : CrossEmbedding
            With its :class:`TTPCAHead` fitted.

        Raises
        ------
        RuntimeError
            If the head is not a :class:`TTPCAHead`.
        ValueError
            If fewer than 2 volumes are given, ``keys`` does not have one entry per volume,
            ``batch_size`` is not a positive int, or the volumes' grid of patch positions
            is not one grid, or not the module's (``volume_shape``, or an earlier fit's).

        Warns
        -----
        UserWarning
            Once per module, if the head has ``gradient_through_fit=True`` and no ``keys``
            are given: its refit with gradient at each training step needs them.
        """
        if not isinstance(self.head, TTPCAHead):
            raise RuntimeError("fit_pca needs head='pca'.")
        keys = _keys_per_volume(keys, volumes)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        grid = self._check_shapes(volumes, keys)
        if len(volumes) < 2:
            raise ValueError(f"fit_pca needs at least 2 volumes, got {len(volumes)}.")
        tts = []
        # Each part back in its own mode after: self.train(was_training) set an encoder put
        # in eval mode (a BatchNorm, as docs/pipeline.rst advises) back in train mode.
        with evaluating(self), torch.no_grad():
            for start in range(0, len(volumes), batch_size):
                tts += self._tts(volumes[start : start + batch_size],
                                 keys[start : start + batch_size])[0]
        self.head.fit(tts, keys=keys)
        self._warn_no_refit(keys)
        self.grid_shape = grid  # two grids can have the same quantics digits
        return self

    def _warn_no_refit(self, keys):
        """Warn once per module of a fit without keys on a head with
        ``gradient_through_fit``: no batch TT can then take a training TT's place, so the
        refit with gradient at each training step never happens."""
        if (not self.head.gradient_through_fit or any(key is not None for key in keys)
                or self._keys_warned):
            return
        self._keys_warned = True
        warnings.warn("fit_pca was given no keys: the head's gradient_through_fit=True "
                      "refits its components with gradient only on a batch whose keys "
                      "(forward(volumes, keys=...)) are keys of the fit, so it never will; "
                      "pass keys=... (one per training volume) to fit_pca (warned once per "
                      "module).", UserWarning, stacklevel=3)

    @eager_under_torch_compile
    def _tts(self, volumes, keys):
        """Differentiable TTs of the volumes: searches, then reads, each in lockstep (eager
        under ``torch.compile``: TorchDynamo cannot trace the host index search, nor the
        threads that run it)."""
        lockstep = LockstepEncoder(self.encoder, self.n_features, self._max_batch())
        lazies = [self._encoded_for(volume, key, lockstep) for volume, key in
                  zip(volumes, keys, strict=True)]
        start = time.perf_counter()
        indices = self._indices_of(lazies, keys, lockstep)
        searched = time.perf_counter()
        tts = lockstep.run([_naming(k, keys[k], functools.partial(_cores, lazy, found))
                            for k, (lazy, found) in enumerate(zip(lazies, indices,
                                                                  strict=True))])
        self.counters["search_seconds"] += searched - start
        self.counters["read_seconds"] += time.perf_counter() - searched
        self._count(lockstep)
        self.counters["volumes"] += len(volumes)
        return tts, lazies

    def _encoded_for(self, volume, key, lockstep):
        """The volume's EncodedTensor; a keyed volume's patches cut in earlier passes are
        handed over to it (the volume's reader, and its cache, live for one pass only)."""
        lazy = self.encoded(_three_dimensional(volume), lockstep.encode)
        lazy.fingerprint = volume_fingerprint(volume) if key is not None else None
        kept = self._indices.get(key)
        if key is not None and kept is not None and kept[3] == lazy.fingerprint:
            lazy.adopt_patches(kept[2])
        return lazy

    def _indices_of(self, lazies, keys, lockstep):
        """Each volume's indices: kept for its key while fresh, else searched (all the
        searches in lockstep, without gradient)."""
        found = [self._fresh_indices(key) for key in keys]
        missing = [k for k, indices in enumerate(found) if indices is None]
        with torch.no_grad():
            # Ranks in this thread: a clipping warning points at the caller, not a worker.
            ranks = [self._feasible_rank(lazies[k].shape) for k in missing]
            searched = lockstep.run([_naming(k, keys[k], functools.partial(
                self._search, lazies[k], rank)) for k, rank in zip(missing, ranks, strict=True)])
        for k, indices in zip(missing, searched, strict=True):
            found[k] = indices
        for k, key in enumerate(keys):
            if key is not None:
                age = 0 if k in missing else self._indices[key][1]
                self._indices[key] = (found[k], age + 1, lazies[k].cut_patches,
                                      lazies[k].fingerprint)
        self.counters["searches"] += len(missing)
        return found

    def _fresh_indices(self, key):
        indices, age, _, _ = self._indices.get(key, (None, self.refresh_every, None, None))
        return indices if age < self.refresh_every else None

    def _search(self, lazy, rank):
        return select_indices(lazy, rank=rank, method=self.method,
                              tol=0.0, n_iter_max=self.n_iter_max, val_size=0,
                              random_state=self.random_state, oversample=self.oversample)

    def _feasible_rank(self, shape):
        """The rank list the search runs at: an int caps each bond silently, a clipped
        list warns once per module."""
        block = self.method == "block"
        modes = len(shape) - 1 if block else len(shape)
        if isinstance(self.rank, int):
            requested = [1] + [self.rank] * (modes - 1) + [1]
        else:
            requested = [int(r) for r in self.rank]
        feasible = _clip_rank(shape, requested, block)
        if feasible != requested and not isinstance(self.rank, int) and not self._rank_warned:
            self._rank_warned = True
            warnings.warn(f"rank {tuple(requested)} exceeds what the unfoldings of the "
                          f"feature field, shape {tuple(shape)}, can hold; using "
                          f"{tuple(feasible)} (warned once per module).",
                          stacklevel=_outside_stacklevel())
        return feasible

    def _max_batch(self):
        if self.max_batch != "auto":
            return self.max_batch
        parameter = next(self.encoder.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        if device not in self._batch_sizes:
            self._batch_sizes[device] = device_batch_size(self.encoder, self.patch_size)
        return self._batch_sizes[device]

    def _count(self, lockstep):
        self.counters["encoder_calls"] += lockstep.n_calls
        self.counters["patches_encoded"] += lockstep.n_patches
        self.counters["lockstep_rounds"] += lockstep.n_rounds
        self.counters["forward_calls"] += 1

    def _build_head_for(self, volume):
        """The probe head for volumes of ``volume``'s shape, unless there is a head already
        (so that an optimiser made next holds its parameters); on a torch volume's device
        where the encoder has no parameters (its patches, and TT, are there)."""
        if self.head is None and self.head_kind == "probes":
            grid = patch_grid(tuple(volume.shape)[-3:], self.stride)
            like = (torch.empty(0, device=volume.device) if isinstance(volume, torch.Tensor)
                    else None)
            self._build_probe_head(self.tt_shape(grid), like=like)
            self.grid_shape = grid

    def _build_probe_head(self, shape, n_probes=None, rank=None, like=None):
        """The probe head for TTs of ``shape``, on the encoder's device and dtype; for an
        encoder without parameters, on those of ``like`` where given (a core of the TT it
        will read, or a tensor on the volumes' device): the patches, and so the TT, follow
        the volume there, and a head left on the CPU met a CUDA TT in a bare device error
        that ``model.cuda()``, run before the head existed, could not prevent."""
        if self.head_kind != "probes":
            raise RuntimeError(f"head={self.head_kind!r} is not built from a shape.")
        reference = next(self.encoder.parameters(), like)
        # A head built by a pass under torch.inference_mode must still train afterwards.
        with torch.inference_mode(False):
            head = TTProbeHead(shape, n_probes or self.n_outputs, rank=rank or self.probe_rank)
            if reference is not None:  # the head follows the module's device and dtype
                head = head.to(device=reference.device, dtype=reference.dtype)
        self.head = head


def _check_end_ranks(rank, method):
    """A TT's boundary ranks are 1: checked here, before a clipping warning about the inner
    bonds (the search would refuse them only after it). The block cross clips a last entry
    above 1 (its last core carries the features) with that warning, as it always has."""
    ends = (rank[0],) if method == "block" else (rank[0], rank[-1])
    if len(rank) < 2 or any(r != 1 for r in ends):
        which = ("first entry (the TT's boundary rank) is" if method == "block" else
                 "first and last entries (the TT's boundary ranks) are")
        raise ValueError(f"rank must be a list of at least 2 ints whose {which} 1 "
                         f"(method={method!r}), got {list(rank)}.")


def _outside_stacklevel():
    """The ``stacklevel`` of the first frame outside this package and torch: the line of
    the user's code that called the module."""
    return outside_stacklevel(os.path.dirname(os.path.abspath(torch.__file__))) - 1


def _naming(number, key, function):
    """``function``, whose NaN/inf error says which volume of the batch it was about."""

    def run():
        try:
            return function()
        except NonFiniteValueError as error:
            error.add_note(f"in volume {number} of the batch"
                           + ("" if key is None else f" (key {key!r})"))
            raise

    return run


def _volume_named(number, volume, key, where="the batch"):
    """Volume ``number`` of ``where`` (a batch), with its key and file where known: in a
    shuffled batch of a dataset's volumes, its place alone does not say which it is."""
    known = [f"key {key!r}"] if key is not None else []
    path = file_of(volume)
    if path is not None:
        known.append(f"file {path!r}")
    return f"volume {number} of {where}" + (f" ({', '.join(known)})" if known else "")


def _head_tt_shape(head):
    """The TT shape a built head takes (None: no head yet, or one that does not say)."""
    if isinstance(head, TTProbeHead):
        return tuple(head.shape)
    if isinstance(head, TTPCAHead) and head.fitted:
        return tuple(int(cores.shape[2]) for cores in head.train_cores)
    return None


def _cores(lazy, indices):
    return list(cross_interpolate(lazy, indices))


def _three_dimensional(volume):
    """The 3-D volume: a leading axis of size 1 dropped (lazily for a lazy volume)."""
    if tuple(volume.shape)[:1] == (1,) and len(volume.shape) == 4:  # (1, D, H, W)
        return WithoutAxis(volume, 0) if isinstance(volume, LazyTensor) else volume[0]
    if len(volume.shape) != 3:
        raise ValueError(f"each volume must be 3-D or (1, D, H, W), got shape "
                         f"{tuple(volume.shape)}.")
    return volume


def _clip_rank(shape, rank, block):
    """``rank`` clipped to what the unfoldings can hold (``r_{k+1} <= r_k n_k`` and
    ``r_k <= n_k r_{k+1}``); for the block cross the channels ride in the last core."""
    if len(rank) != (len(shape) if block else len(shape) + 1):
        modes = len(shape) - 1 if block else len(shape)
        raise ValueError(f"rank must have {modes + 1} entries for a feature field of shape "
                         f"{tuple(shape)}, got {len(rank)}.")
    full = list(rank[:-1]) + [shape[-1], 1] if block else list(rank)
    for k in range(len(shape)):
        full[k + 1] = min(full[k + 1], full[k] * shape[k])
    for k in reversed(range(len(shape))):
        full[k] = min(full[k], shape[k] * full[k + 1])
    return full[:-2] + [1] if block else full


def _build_head_from_state(module, state_dict, prefix, *_):
    """Before a load into a module whose probe head is not built yet: build it with the
    saved shapes, so that a fresh module accepts a trained state. A state saved before the
    grid of patch positions was kept loads too (the module keeps its own grid). A head
    built, or resized, from the state has the state's number of outputs: ``n_outputs`` says
    so (a PCA head refitted later keeps that many components)."""
    state_dict.setdefault(prefix + "_extra_state", {"grid_shape": None})
    projection = state_dict.get(prefix + "head.projection")
    if module.head_kind == "pca" and projection is not None and projection.ndim == 2:
        module.n_outputs = int(projection.shape[1])
    if module.head is not None or module.head_kind != "probes":
        return
    saved = [state_dict[key] for key in sorted(
        (key for key in state_dict if key.startswith(prefix + "head.cores.")),
        key=lambda key: int(key.rsplit(".", 1)[1]))]
    if saved:
        shape = tuple(int(core.shape[2]) for core in saved)
        module._build_probe_head(shape, int(saved[0].shape[0]), int(saved[0].shape[3]))
        module.n_outputs = int(saved[0].shape[0])


def _keys_per_volume(keys, volumes):
    """``keys`` as a list with one entry per volume (``None`` for each when not given); a key
    names one volume, so a batch holds it once."""
    _check_volumes(volumes)
    if keys is None:
        return [None] * len(volumes)
    if isinstance(keys, str | bytes) or not isinstance(
            keys, Sequence | torch.Tensor | np.ndarray | range):
        raise TypeError(f"keys must be a sequence with one key per volume (a list, a tensor of "
                        f"indices), got {type(keys).__name__}.")
    keys = [key_value(key) for key in keys]
    if len(keys) != len(volumes):
        raise ValueError(f"keys must have one entry per volume ({len(volumes)}), got "
                         f"{len(keys)}.")
    seen = set()
    for key in keys:
        if key is not None and key in seen:
            raise ValueError(f"keys holds {key!r} twice: a key names one volume, so one batch "
                             "cannot hold it twice.")
        seen.add(key)
    return keys


def _check_volumes(volumes):
    """A batch: a tensor or array of volumes, or a non-empty sequence of tensors, arrays or
    lazy tensors (anything else would fail deep inside the search)."""
    if isinstance(volumes, str | bytes) or not isinstance(
            volumes, Sequence | torch.Tensor | np.ndarray):
        raise TypeError(f"volumes must be a tensor of shape (B, 1, D, H, W) or a sequence of "
                        f"volumes, got {type(volumes).__name__}.")
    if isinstance(volumes, torch.Tensor | np.ndarray) and volumes.ndim == 3:
        # iterated, one volume would pass as a batch of 2-D slices, refused as "not 3-D"
        raise ValueError(f"volumes must be a batch, (B, 1, D, H, W) or a sequence of volumes, "
                         f"got one volume of shape {tuple(volumes.shape)} (pass [volume]).")
    if len(volumes) == 0:
        raise ValueError("volumes is empty: a batch needs at least one volume.")
    for k, volume in enumerate(volumes):
        if not isinstance(volume, torch.Tensor | np.ndarray | LazyTensor):
            raise TypeError(f"volumes[{k}] must be a torch.Tensor, a NumPy array or a lazy "
                            f"tensor (e.g. tensorly_cross.open_volume's), got "
                            f"{type(volume).__name__}.")
        check_concrete(volume, f"volumes[{k}]")


def _grid_of(volume_shape, grid_shape, stride):
    """The grid of patch positions that ``volume_shape`` or ``grid_shape`` gives (None for
    neither), after checking them."""
    if volume_shape is not None:
        volume_shape = _positive_shape(volume_shape, "volume_shape", allow_channel=True)
    if grid_shape is not None:
        grid_shape = _positive_shape(grid_shape, "grid_shape")
    if volume_shape is None:
        return grid_shape
    grid = patch_grid(volume_shape, stride)
    if grid_shape is not None and grid_shape != grid:
        raise ValueError(f"volume_shape {volume_shape} gives a grid of patch positions {grid} "
                         f"at stride {stride}, but grid_shape is {grid_shape}: give one of "
                         "them, or two that agree.")
    return grid


def _positive_shape(shape, name, allow_channel=False):
    """``shape`` as a tuple of 3 positive ints (a leading 1 dropped where allowed)."""
    if not isinstance(shape, Sequence | torch.Size) or isinstance(shape, str):
        raise TypeError(f"{name} must be a tuple of 3 positive ints, got "
                        f"{type(shape).__name__} {shape!r}.")
    shape = tuple(shape)
    if allow_channel and len(shape) == 4 and shape[0] == 1:  # (1, D, H, W), as volumes come
        shape = shape[1:]
    if len(shape) != 3:
        allowed = " (or (1, D, H, W))" if allow_channel else ""
        raise ValueError(f"{name} must have 3 entries{allowed}, got {shape!r}.")
    return tuple(check_int(n, f"{name}[{k}]", minimum=1) for k, n in enumerate(shape))

