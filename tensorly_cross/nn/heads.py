"""Gauge-invariant heads: fixed-size features of a TT (learnable TT probes, TT-PCA)."""

import torch
from torch import nn


def tt_inner(first, second):
    """Inner product ``<A, B>`` of two TTs of the same shape, in ``O(d n r^3)``.

    Parameters
    ----------
    first, second : list of torch.Tensor
        The cores of the two TTs, ``(r_k, n_k, r_{k+1})`` each, with the same ``n_k`` (the
        ranks may differ) and boundary ranks 1.

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


def tt_inner_many(tt, stacked):
    """``<TT, S_k>`` for every TT ``S_k`` of a stack, in one batched contraction per mode.

    The same values as ``K`` separate :func:`tt_inner` calls, in ``d`` contractions.

    Parameters
    ----------
    tt : list of torch.Tensor
        The cores of one TT, ``(r_k, n_k, r_{k+1})`` each, boundary ranks 1.
    stacked : list of torch.Tensor
        The cores of ``K`` TTs of the same shape (and core shapes), stacked per mode:
        ``(K, s_k, n_k, s_{k+1})`` each, boundary ranks 1.

    Returns
    -------
    inner : torch.Tensor of shape (K,)
        ``<tt, S_k>`` for each ``k``; differentiable with respect to both arguments.

    Examples
    --------
    >>> import torch
    >>> from tensorly_cross.nn import tt_inner_many
    >>> ones = [torch.ones(1, 3, 1, dtype=torch.float64)] * 2  # the all-ones 3 x 3 matrix
    >>> stacked = [torch.stack([core, 2 * core]) for core in ones]  # ones, and 4 * ones
    >>> tt_inner_many(ones, stacked)
    tensor([ 9., 36.], dtype=torch.float64)
    """
    result = None
    for core, cores in zip(tt, stacked, strict=True):
        # running (K, a, b) with a over the TT's bond, b over the stack's bond
        if result is None:
            result = torch.einsum("inj,kbnl->kjl", core, cores)
        else:
            result = torch.einsum("kab,anj,kbnl->kjl", result, core, cores)
    return result.reshape(-1)


class TTProbeHead(nn.Module):
    """``K`` learnable TT probes; features are ``<TT, probe_k> / sqrt(prod(shape))``.

    Parameters
    ----------
    shape : tuple of int
        The shape of the TTs it reads (grid modes or digits, then the channels).
    n_probes : int
        Number of probes ``K``: the number of features.
    rank : int, default 2
        TT rank of every inner bond of every probe.
    generator : torch.Generator, optional
        Source of the random start; ``None``: torch's global generator.
    init : {"mean", "random"}
        How the probes start (see the notes).

    Notes
    -----
    ``init="mean"`` (default) starts every probe near ``ones (x) ... (x) ones (x) w_k`` (the
    last mode being the channels): each feature is then a random mix of the channels'
    means over the grid, the pooling a dense CNN would do, and training moves the probes
    towards local patterns from there; with ``init="random"`` the probes start as random TTs,
    random projections of the field that the encoder must first learn to survive.

    Examples
    --------
    >>> import torch
    >>> from tensorly_cross.nn import TTProbeHead
    >>> head = TTProbeHead((4, 4, 2), n_probes=3, generator=torch.Generator().manual_seed(0))
    >>> tt = [torch.ones(1, 4, 1), torch.ones(1, 4, 1), torch.ones(1, 2, 1)]
    >>> head(tt).shape
    torch.Size([3])
    """

    def __init__(self, shape, n_probes, rank=2, generator=None, init="mean"):
        super().__init__()
        if init not in ("mean", "random"):
            raise ValueError(f"init must be 'mean' or 'random', got {init!r}.")
        shape = tuple(int(n) for n in shape)
        ranks = [1] + [int(rank)] * (len(shape) - 1) + [1]
        self.scale = float(torch.tensor(shape, dtype=torch.float64).prod().sqrt())
        cores = [torch.randn(n_probes, ranks[k], n, ranks[k + 1], generator=generator)
                 / (n * ranks[k]) ** 0.5 for k, n in enumerate(shape)]
        if init == "mean":
            _start_at_channel_means(cores, generator)
        self.cores = nn.ParameterList([nn.Parameter(core) for core in cores])

    @property
    def shape(self):
        """The shape of the TTs the probes read."""
        return tuple(int(core.shape[2]) for core in self.cores)

    def extra_repr(self):
        """The settings shown by ``repr``.

        Returns
        -------
        text : str
            ``name=value`` pairs, comma-separated.
        """
        ranks = tuple(int(core.shape[1]) for core in self.cores) + (int(self.cores[-1].shape[3]),)
        return f"shape={self.shape}, n_probes={int(self.cores[0].shape[0])}, ranks={ranks}"

    def forward(self, tt):
        """Features of one TT: its inner products with the probes.

        Parameters
        ----------
        tt : list of torch.Tensor
            The cores of a TT of shape :attr:`shape`, ``(r_k, n_k, r_{k+1})`` each.

        Returns
        -------
        features : torch.Tensor of shape (n_probes,)
            ``<tt, probe_k> / sqrt(prod(shape))``, in ``tt``'s dtype; differentiable with
            respect to ``tt`` and the probes.
        """
        return tt_inner_many(tt, [core.to(tt[0].dtype) for core in self.cores]) / self.scale


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

    All of its state is buffers (the training TTs' cores stacked per mode, the Gram
    statistics, the projection): ``state_dict`` saves it, ``load_state_dict`` restores it
    into a fresh, unfitted head, and ``.to(device, dtype)`` moves it.

    Parameters
    ----------
    n_components : int
        Number of principal components kept. ``n`` training TTs span ``n - 1`` directions
        once centred: components beyond those (eigenvalues at round-off level) give 0.

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
        if int(n_components) != n_components or n_components < 1:
            raise ValueError(f"n_components must be a positive int, got {n_components!r}.")
        self.n_components = int(n_components)
        self.n_modes = 0
        for name in ("row_means", "grand_mean", "projection"):
            self.register_buffer(name, torch.zeros(0))
        self.register_load_state_dict_pre_hook(_resize_pca_buffers)

    def extra_repr(self):
        """The settings shown by ``repr``.

        Returns
        -------
        text : str
            ``name=value`` pairs, comma-separated.
        """
        return f"n_components={self.n_components}, fitted={self.fitted}"

    @property
    def fitted(self):
        """Whether :meth:`fit` ran (or a fitted state was loaded)."""
        return self.n_modes > 0

    @property
    def train_cores(self):
        """Training TTs, stacked per mode: ``(n_train, r_k, n_k, r_{k+1})`` tensors."""
        return [getattr(self, f"train_core_{k}") for k in range(self.n_modes)]

    @torch.no_grad()
    def fit(self, tts):
        """Fit the components on training TTs (kept, detached, for the projections).

        A refit (same number of TTs and components) keeps the coordinates continuous: the
        new components are rotated (an orthogonal Procrustes fit) to give the training TTs
        the coordinates the previous components gave them, as far as the new span allows,
        so that a readout trained on the old coordinates still applies. Signs of
        eigenvectors, and bases of near-equal eigenvalues, no longer flip between refits.

        Parameters
        ----------
        tts : list of list of torch.Tensor
            At least 2 training TTs, each a list of cores, all with the same core shapes
            (they are stacked per mode).

        Returns
        -------
        self : TTPCAHead
            The fitted head.

        Raises
        ------
        ValueError
            If fewer than 2 TTs are given.
        """
        tts = [[core.detach() for core in tt] for tt in tts]
        if len(tts) < 2:
            raise ValueError(f"TTPCAHead.fit needs at least 2 TTs, got {len(tts)}.")
        stacked = [torch.stack(cores) for cores in zip(*tts, strict=True)]
        gram = torch.stack([tt_inner_many(tt, stacked) for tt in tts])
        n = gram.shape[0]
        centring = torch.eye(n, dtype=gram.dtype, device=gram.device) - 1.0 / n
        centred = centring @ gram @ centring
        values, vectors = torch.linalg.eigh(centred)
        keep = min(self.n_components, n)
        values, vectors = values.flip(0)[:keep], vectors.flip(1)[:, :keep]
        # n centred TTs span at most n - 1 directions: a component of eigenvalue at
        # round-off level is noise blown up by 1/sqrt(eigenvalue), so it gets coordinate 0.
        floor = n * torch.finfo(values.dtype).eps * values[0].clamp_min(1e-300)
        projection = torch.where(values > floor, vectors / values.clamp_min(floor).sqrt(),
                                 torch.zeros_like(vectors))
        if self.fitted and self.projection.shape == projection.shape:
            previous = torch.stack([self(tt) for tt in tts])  # the new TTs, old components
            projection = projection @ _procrustes(centred @ projection, previous)
        self._set_state(stacked, gram.mean(dim=0), gram.mean(), projection)
        return self

    def forward(self, tt):
        """Coordinates of one TT on the fitted principal components.

        Parameters
        ----------
        tt : list of torch.Tensor
            The cores of a TT of the training TTs' shape (its ranks may differ).

        Returns
        -------
        coordinates : torch.Tensor of shape (k,)
            ``k = min(n_components, number of training TTs)``; differentiable with respect
            to ``tt``.

        Raises
        ------
        RuntimeError
            If the head is not fitted (neither :meth:`fit` nor a fitted state loaded).
        """
        if not self.fitted:
            raise RuntimeError("TTPCAHead.fit(training_tts) must run before forward "
                               "(or load a fitted state_dict).")
        cores = [core.to(tt[0].dtype) for core in self.train_cores]
        kernel = tt_inner_many(tt, cores)
        centred = kernel - self.row_means.to(kernel.dtype) - kernel.mean() \
            + self.grand_mean.to(kernel.dtype)
        return centred @ self.projection.to(centred.dtype)

    def _set_state(self, stacked, row_means, grand_mean, projection):
        for k in range(self.n_modes, len(stacked)):
            self.register_buffer(f"train_core_{k}", None)
        for k, cores in enumerate(stacked):
            setattr(self, f"train_core_{k}", cores)
        for k in range(len(stacked), self.n_modes):
            delattr(self, f"train_core_{k}")
        self.n_modes = len(stacked)
        self.row_means, self.grand_mean, self.projection = row_means, grand_mean, projection


def _procrustes(coordinates, previous):
    """The orthogonal ``Q`` that brings ``coordinates @ Q`` closest to ``previous``.

    An eigenvector's sign, or the basis of a near-degenerate eigenspace, is arbitrary: a
    refit would otherwise flip or rotate the coordinates under a readout trained on the old
    ones. ``Q`` keeps their lengths and angles and makes the refit continue where the last
    fit was.
    """
    left, _, right_t = torch.linalg.svd(coordinates.T @ previous.to(coordinates.dtype))
    return left @ right_t


def _resize_pca_buffers(module, state_dict, prefix, *_):
    """Before a load: give the head buffers of the saved shapes, so that a fresh head (or
    one fitted on other data) accepts a fitted state."""
    keys = [key for key in state_dict if key.startswith(prefix + "train_core_")]
    if not keys:
        return
    # In the module's own device and dtype, as load_state_dict copies every other tensor.
    device, dtype = module.projection.device, module.projection.dtype

    def empty(name):
        return torch.empty(state_dict[prefix + name].shape, dtype=dtype, device=device)

    module._set_state([empty(f"train_core_{k}") for k in range(len(keys))], empty("row_means"),
                      empty("grand_mean"), empty("projection"))
