"""CrossEmbedding: fixed-size, gauge-invariant features of volumes through differentiable cross.

Per volume: the indices of a TT of the encoder's feature field are selected without
gradient, the cores are rebuilt from one differentiable read, and a head turns the TT into
features that do not depend on the TT gauge: inner products with learnable TT probes, or
the coordinates on a TT-PCA basis fitted on training TTs (the paper's head).
"""

import torch
from torch import nn

from .._validation import check_choice
from ..api import cross_interpolate, select_indices
from ..lazy.quantics import QuanticsLayout
from .encoded import EncodedTensor, default_encoder


def tt_inner(first, second):
    """Inner product ``<A, B>`` of two TTs of the same shape, in ``O(d n r^3)``.

    Parameters
    ----------
    first, second : list of torch.Tensor
        The cores of the two TTs, ``(r_k, n_k, r_{k+1})`` each, the same ``n_k``.

    Returns
    -------
    inner : torch.Tensor
        A scalar (0-d) tensor; differentiable with respect to both TTs' cores.

    Examples
    --------
    >>> import torch
    >>> from tensorly_cross.nn import tt_inner
    >>> ones = [torch.ones(1, 3, 1, dtype=torch.float64)] * 2  # the all-ones 3 x 3 matrix
    >>> float(tt_inner(ones, ones))
    9.0
    """
    result = None
    for core_a, core_b in zip(first, second, strict=True):
        # (ra, n, ra') x (rb, n, rb') contracted over n, then with the running (ra, rb).
        pair = torch.einsum("inj,knl->ikjl", core_a, core_b)
        result = pair[0, 0] if result is None else torch.einsum("ik,ikjl->jl", result, pair)
    return result.reshape(())


class TTProbeHead(nn.Module):
    """``K`` learnable TT probes; features are ``<TT, probe_k> / sqrt(prod(shape))``.

    Parameters
    ----------
    shape : tuple of int
        The shape of the TTs the head reads (channels last).
    n_probes : int
        Number of probes ``K``: the number of features.
    rank : int, default 2
        TT rank of every probe.
    generator : torch.Generator or None
        Source of the random start.
    init : {"mean", "random"}, default "mean"
        How the probes start (below).

    Examples
    --------
    >>> import torch
    >>> from tensorly_cross.nn import TTProbeHead
    >>> head = TTProbeHead((4, 4, 2), n_probes=3, generator=torch.Generator().manual_seed(0))
    >>> tt = [torch.ones(1, 4, 1), torch.ones(1, 4, 1), torch.ones(1, 2, 1)]
    >>> head(tt).shape
    torch.Size([3])

    Notes
    -----
    ``init="mean"`` (default) starts every probe near ``ones (x) ... (x) ones (x) w_k`` (the
    last mode being the channels): each feature is then a random mix of the channels'
    means over the grid, the pooling a dense CNN would do, and training moves the probes
    towards local patterns from there; with ``init="random"`` the probes start as random TTs,
    random projections of the field that the encoder must first learn to survive.
    """

    def __init__(self, shape, n_probes, rank=2, generator=None, init="mean"):
        super().__init__()
        if init not in ("mean", "random"):
            raise ValueError(f"init must be 'mean' or 'random', got {init!r}.")
        ranks = [1] + [rank] * (len(shape) - 1) + [1]
        self.scale = float(torch.tensor(shape, dtype=torch.float64).prod().sqrt())
        cores = [torch.randn(n_probes, ranks[k], n, ranks[k + 1], generator=generator)
                 / (n * ranks[k]) ** 0.5 for k, n in enumerate(shape)]
        if init == "mean":
            _start_at_channel_means(cores, generator)
        self.cores = nn.ParameterList([nn.Parameter(core) for core in cores])

    def forward(self, tt):
        """Features of one TT: its inner products with the probes.

        Parameters
        ----------
        tt : list of torch.Tensor
            The cores of a TT of shape ``shape``.

        Returns
        -------
        features : torch.Tensor of shape (n_probes,)
            ``<tt, probe_k> / sqrt(prod(shape))``.
        """
        n_probes = self.cores[0].shape[0]
        return torch.stack([
            tt_inner(tt, [core[k].to(tt[0].dtype) for core in self.cores])
            for k in range(n_probes)]) / self.scale


def _start_at_channel_means(cores, generator):
    """Random probe cores -> a tenth of them plus ``n^-1/2`` on every grid mode and random
    channel weights, all in rank slot 0: features start near ``channel means / sqrt(F)``."""
    for k, core in enumerate(cores):
        core *= 0.1
        n_probes, _, size, _ = core.shape
        if k < len(cores) - 1:
            core[:, 0, :, 0] += size**-0.5
        else:
            core[:, 0, :, 0] += torch.randn(n_probes, size, generator=generator)


class TTPCAHead(nn.Module):
    """Coordinates on the principal components of training TTs (kernel PCA, TT inner product).

    ``fit(tts)`` keeps the training TTs and the eigenvectors of their centred Gram matrix;
    ``forward(tt)`` projects: ``<TT, TT_i>`` for every training TT, centred, times the
    eigenvectors scaled by ``1/sqrt(eigenvalue)``. Exact PCA in the full tensor space, never
    forming a full tensor, and invariant to each TT's gauge.

    Parameters
    ----------
    n_components : int
        Number of principal components kept (at most the number of training TTs).

    Examples
    --------
    >>> import torch
    >>> from tensorly_cross.nn import TTPCAHead
    >>> generator = torch.Generator().manual_seed(0)
    >>> def random_tt():
    ...     return [torch.randn(1, 5, 2, generator=generator),
    ...             torch.randn(2, 3, 1, generator=generator)]
    >>> tts = [random_tt() for _ in range(6)]
    >>> head = TTPCAHead(n_components=2).fit(tts)
    >>> head(tts[0]).shape
    torch.Size([2])
    """

    def __init__(self, n_components):
        super().__init__()
        self.n_components = int(n_components)
        self.train_tts = None

    @torch.no_grad()
    def fit(self, tts):
        """Fit the components on training TTs (kept, detached, for the projections).

        Parameters
        ----------
        tts : list of list of torch.Tensor
            The training TTs, each a list of cores, all of one shape.

        Returns
        -------
        self : TTPCAHead
            The fitted head.
        """
        tts = [[core.detach() for core in tt] for tt in tts]
        gram = torch.stack([torch.stack([tt_inner(a, b) for b in tts]) for a in tts])
        n = gram.shape[0]
        centring = torch.eye(n, dtype=gram.dtype) - 1.0 / n
        values, vectors = torch.linalg.eigh(centring @ gram @ centring)
        keep = min(self.n_components, n)
        values, vectors = values.flip(0)[:keep], vectors.flip(1)[:, :keep]
        self.register_buffer("row_means", gram.mean(dim=0))
        self.register_buffer("grand_mean", gram.mean())
        self.register_buffer("projection", vectors / values.clamp_min(1e-12).sqrt())
        self.train_tts = tts
        return self

    def forward(self, tt):
        """Coordinates of one TT on the fitted principal components.

        Parameters
        ----------
        tt : list of torch.Tensor
            The cores of a TT of the training TTs' shape.

        Returns
        -------
        coordinates : torch.Tensor of shape (n_components,)
            Differentiable with respect to ``tt``.

        Raises
        ------
        RuntimeError
            If :meth:`fit` has not run.
        """
        if self.train_tts is None:
            raise RuntimeError("TTPCAHead.fit(training_tts) must run before forward.")
        kernel = torch.stack([tt_inner(tt, other) for other in self.train_tts])
        centred = kernel - self.row_means - kernel.mean() + self.grand_mean
        return centred @ self.projection.to(centred.dtype)


class CrossEmbedding(nn.Module):
    """Volumes -> fixed-size features through differentiable cross approximation.

    Parameters
    ----------
    encoder : nn.Module or None
        (m, 1, p, p, p) -> (m, F); ``None`` builds :func:`default_encoder`.
    patch_size, n_features, stride : int
        Edge of the cubic patches, number of encoder features ``F``, and voxels between
        grid positions (see :class:`EncodedTensor`).
    rank : int
        Fixed TT rank of the feature field (fixed, so every volume's TT has one shape).
    head : {"probes", "pca"} or nn.Module
        ``"probes"``: :class:`TTProbeHead` with ``n_outputs`` probes (learnable);
        ``"pca"``: :class:`TTPCAHead` (call :meth:`fit_pca` first).
    n_outputs : int
        Number of features per volume (probes, or principal components).
    refresh_every : int, default 1
        Reuse a volume's indices for this many forward passes before selecting anew; only
        for volumes passed with a ``key`` (see :meth:`forward`).
    n_iter_max : int
        Sweeps of the index search.
    grid_shape : tuple of int or None
        The grid of positions, when known in advance: the head is then built here (and
        its parameters exist before the first forward pass, e.g. for an optimizer);
        otherwise on the first call.
    random_state : None, int or numpy Generator
        Seed of the index search (the same seed gives the same indices).
    method : {"block", "als"}
        ``"block"`` (default): the block cross reads every position for all ``F`` features,
        so the encoder runs once per position and the TT's last bond is ``F``; ``"als"``:
        the entry-wise ALS cross of the ``(*grid, F)`` tensor at rank ``rank``.
    layout : {"tt", "quantics"}
        The TT over the grid's modes, or over their binary digits (QTT; see
        :class:`EncodedTensor`), whose index search reads fewer positions on large grids.
    oversample : float, default 1.0
        Probe positions per bond, as a multiple of the rank (see :func:`tt_cross`): more
        encoder runs, cores fitted over more of the field.

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
                 random_state=0, method="block", layout="tt", oversample=1.0):
        super().__init__()
        self.encoder = encoder if encoder is not None else default_encoder(patch_size,
                                                                           n_features)
        self.patch_size, self.n_features, self.stride = patch_size, n_features, stride
        self.rank, self.refresh_every, self.n_iter_max = rank, refresh_every, n_iter_max
        self.random_state, self.oversample = random_state, oversample
        self.method = check_choice(method, "method", ("block", "als"))
        self.layout = check_choice(layout, "layout", ("tt", "quantics"))
        self.head_kind = head if isinstance(head, str) else "custom"
        self.head = head if isinstance(head, nn.Module) else None
        self.n_outputs = n_outputs
        if grid_shape is not None:
            shape = tuple(grid_shape) + (n_features,)
            if self.layout == "quantics":
                shape = QuanticsLayout.with_channels(grid_shape, n_features).quantics_shape
            self._build_head(shape)
        self._indices = {}  # key -> (indices, age)

    def encoded(self, volume):
        """The lazy feature field of one volume (an :class:`EncodedTensor`).

        Parameters
        ----------
        volume : torch.Tensor, numpy array or LazyTensor (3-D)
            The volume whose patches the encoder reads.

        Returns
        -------
        encoded : EncodedTensor
            With this module's encoder, patch size, stride and layout.
        """
        return EncodedTensor(volume, self.encoder, self.patch_size, self.n_features,
                             stride=self.stride, layout=self.layout)

    def tt(self, volume, key=None):
        """The differentiable TT of one volume's feature field.

        Parameters
        ----------
        volume : torch.Tensor, numpy array or LazyTensor
            One volume, 3-D or ``(1, D, H, W)``.
        key : hashable, optional
            E.g. the volume's index in a dataset: its indices are then reused for
            ``refresh_every`` calls; without a key they are selected every time.

        Returns
        -------
        cores : list of torch.Tensor
            The TT's cores, with gradient to the encoder's parameters.
        encoded : EncodedTensor
            The lazy feature field they were read from (its counters say what it cost).
        """
        if volume.ndim == 4:  # (1, D, H, W): a single channel
            volume = volume[0]
        lazy = self.encoded(volume)
        indices, age = self._indices.get(key, (None, self.refresh_every))
        if indices is None or age >= self.refresh_every:
            with torch.no_grad():
                indices = select_indices(lazy, rank=self.rank, method=self.method, tol=0.0,
                                         n_iter_max=self.n_iter_max, val_size=0,
                                         random_state=self.random_state,
                                         oversample=self.oversample)
            age = 0
        if key is not None:
            self._indices[key] = (indices, age + 1)
        return list(cross_interpolate(lazy, indices)), lazy

    def forward(self, volumes, keys=None):
        """Features of a batch of volumes.

        Parameters
        ----------
        volumes : torch.Tensor of shape (B, 1, D, H, W), or a sequence of 3-D volumes
            The batch.
        keys : sequence of hashable, optional
            One per volume, to reuse its indices (``refresh_every``).

        Returns
        -------
        features : torch.Tensor of shape (B, n_outputs)
            The head's output for each volume.
        """
        keys = [None] * len(volumes) if keys is None else list(keys)
        features = []
        for volume, key in zip(volumes, keys, strict=True):
            tt, _ = self.tt(volume, key)
            if self.head is None:
                self._build_head(tuple(core.shape[1] for core in tt))
            features.append(self.head(tt))
        return torch.stack(features)

    def fit_pca(self, volumes):
        """Fit the TT-PCA head on training volumes (``head="pca"``).

        Parameters
        ----------
        volumes : sequence of volumes
            The training volumes (as :meth:`tt` takes them).

        Returns
        -------
        self : CrossEmbedding
            With a fitted :class:`TTPCAHead`.
        """
        with torch.no_grad():
            tts = [self.tt(volume)[0] for volume in volumes]
        self.head = TTPCAHead(self.n_outputs).fit(tts)
        return self

    def _build_head(self, shape):
        if self.head_kind == "probes":
            device = next(self.encoder.parameters()).device
            self.head = TTProbeHead(shape, self.n_outputs).to(device)
        elif self.head_kind == "pca":
            raise RuntimeError("head='pca' needs fit_pca(training_volumes) before forward.")
