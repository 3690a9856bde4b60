"""Gauge-invariant heads: fixed-size features of a TT (learnable TT probes, TT-PCA)."""

import torch
from torch import nn

from .._validation import check_bool, check_choice, check_int
from ._pca_gradient import DampedEigh, PolarFactor
from .keyed import key_value


def tt_inner(first, second):
    """Inner product ``<A, B>`` of two TTs of the same shape, in ``O(d n r^3)``.

    For complex TTs the first is conjugated (``sum conj(A) * B``), so that ``<A, A>`` is
    the squared norm.

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

    Raises
    ------
    ValueError
        If either is not a TT (3-D cores, boundary ranks 1, matching bonds), or their mode
        sizes differ.
    TypeError
        If their cores differ in dtype.
    """
    shape = tt_shape(first, "first")
    if tt_shape(second, "second") != shape:
        raise ValueError(f"first and second must have the same mode sizes, got {shape} and "
                         f"{tt_shape(second, 'second')}.")
    _check_one_dtype(first, second, "first", "second")
    result = None
    for core_a, core_b in zip(_conjugated(first), second, strict=True):
        # (ra, n, ra') x (rb, n, rb') contracted over n, then with the running (ra, rb).
        pair = torch.einsum("inj,knl->ikjl", core_a, core_b)
        result = pair[0, 0] if result is None else torch.einsum("ik,ikjl->jl", result, pair)
    return result.reshape(())


def tt_inner_many(tt, stacked):
    """``<TT, S_k>`` for every TT ``S_k`` of a stack, in one batched contraction per mode.

    The same values as ``K`` separate :func:`tt_inner` calls (``tt`` conjugated when
    complex), in ``d`` contractions.

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

    Raises
    ------
    ValueError
        If ``tt`` is not a TT, or ``stacked`` is not a stack of TTs of its mode sizes (a
        stack of ``K = 0`` TTs is one: the result is empty).
    TypeError
        If their cores differ in dtype.
    """
    shape = tt_shape(tt, "tt")
    stacked_shape = _stacked_shape(stacked)
    if stacked_shape != shape:
        raise ValueError(f"stacked must hold TTs of tt's mode sizes {shape}, got "
                         f"{stacked_shape}.")
    _check_one_dtype(tt, stacked, "tt", "stacked")
    result = None
    for core, cores in zip(_conjugated(tt), stacked, strict=True):
        # running (K, a, b) with a over the TT's bond, b over the stack's bond
        if result is None:
            result = torch.einsum("inj,kbnl->kjl", core, cores)
        else:
            result = torch.einsum("kab,anj,kbnl->kjl", result, core, cores)
    return result.reshape(-1)


def _conjugated(cores):
    """The complex conjugates of complex cores (lazily, as views); real cores as they are."""
    return [core.conj() if core.is_complex() else core for core in cores]


def tt_shape(cores, name="tt"):
    """The mode sizes of a TT, after checking that it is one.

    Parameters
    ----------
    cores : sequence of torch.Tensor
        ``(r_k, n_k, r_{k+1})`` each, boundary ranks 1, each bond matching its neighbour's.
    name : str
        How the error names the argument.

    Returns
    -------
    shape : tuple of int
        ``(n_1, ..., n_d)``.

    Raises
    ------
    ValueError
        If ``cores`` is empty, a core is not a 3-D tensor, a boundary rank is not 1 or two
        neighbouring bonds differ.
    """
    if not isinstance(cores, (list, tuple)) or len(cores) == 0:
        raise ValueError(f"{name} must be a non-empty list of TT cores, got "
                         f"{type(cores).__name__}"
                         + (" of length 0." if isinstance(cores, (list, tuple)) else "."))
    for k, core in enumerate(cores):
        if not isinstance(core, torch.Tensor) or core.ndim != 3:
            got = (f"shape {tuple(core.shape)}" if isinstance(core, torch.Tensor)
                   else type(core).__name__)
            raise ValueError(f"{name}[{k}] must be a 3-D tensor (r_k, n_k, r_k+1), got {got}.")
    ranks = [int(cores[0].shape[0])] + [int(core.shape[2]) for core in cores]
    if ranks[0] != 1 or ranks[-1] != 1:
        raise ValueError(f"{name} must have boundary ranks 1, got {ranks[0]} and {ranks[-1]}.")
    for k in range(1, len(cores)):
        if int(cores[k].shape[0]) != ranks[k]:
            raise ValueError(f"{name}[{k}] has left rank {int(cores[k].shape[0])}, but "
                             f"{name}[{k - 1}] has right rank {ranks[k]}.")
    return tuple(int(core.shape[1]) for core in cores)


def _stacked_shape(stacked):
    """Mode sizes of a stack of TTs (4-D cores ``(K, s_k, n_k, s_{k+1})``), checked."""
    if not isinstance(stacked, (list, tuple)) or len(stacked) == 0 or any(
            not isinstance(cores, torch.Tensor) or cores.ndim != 4 for cores in stacked):
        raise ValueError("stacked must be a non-empty list of 4-D tensors "
                         "(K, s_k, n_k, s_k+1).")
    if len({int(cores.shape[0]) for cores in stacked}) != 1:
        raise ValueError(f"stacked must hold the same number of TTs in every mode, got "
                         f"{[int(cores.shape[0]) for cores in stacked]}.")
    # The shapes alone, on the meta device: a stack of K = 0 TTs has no cores[0] to check
    # (an IndexError), yet its inner products are the empty vector.
    return tt_shape([torch.empty(cores.shape[1:], device="meta") for cores in stacked],
                    "stacked")


def _check_one_dtype(first, second, first_name, second_name):
    dtypes = {core.dtype for core in first} | {core.dtype for core in second}
    if len(dtypes) > 1:
        raise TypeError(f"{first_name} and {second_name} must have cores of one dtype, got "
                        f"{sorted(str(dtype) for dtype in dtypes)}.")


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

    Raises
    ------
    TypeError
        If a mode size, ``n_probes`` or ``rank`` is not an int, or ``generator`` is not a
        ``torch.Generator`` (for a seed ``s``: ``torch.Generator().manual_seed(s)``).
    ValueError
        If ``shape`` is empty, a size, ``n_probes`` or ``rank`` is below 1, or ``init`` is
        not one of the two.

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
        check_choice(init, "init", ("mean", "random"))
        if not isinstance(shape, (list, tuple)) or len(shape) == 0:
            raise ValueError(f"shape must be a non-empty tuple of mode sizes, got {shape!r}.")
        shape = tuple(check_int(n, f"shape[{k}]", minimum=1) for k, n in enumerate(shape))
        n_probes = check_int(n_probes, "n_probes", minimum=1)
        rank = check_int(rank, "rank", minimum=1)
        if generator is not None and not isinstance(generator, torch.Generator):
            # an int seed failed in torch.randn ("invalid combination of arguments")
            raise TypeError(f"generator must be a torch.Generator or None, got "
                            f"{type(generator).__name__}; for a seed s, pass "
                            "torch.Generator().manual_seed(s).")
        ranks = [1] + [rank] * (len(shape) - 1) + [1]
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

        Raises
        ------
        ValueError
            If ``tt`` is not a TT of shape :attr:`shape`.
        """
        if tt_shape(tt) != self.shape:
            raise ValueError(f"tt has mode sizes {tt_shape(tt)}; this head's probes read "
                             f"TTs of shape {self.shape}.")
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

    The inner products are computed in float64 whatever the TTs' dtype: centring subtracts
    the training TTs' common part, whose squared norm is far larger than the variation
    between volumes, and float32 round-off of that part would swamp the variation (a
    float32 module's coordinates were off by 18% of float64's for volumes that differ by
    1%).

    All of its state is buffers (the training TTs' cores stacked per mode, the centred row
    means of the Gram matrix, the projection): ``state_dict`` saves it, ``load_state_dict``
    restores it into a fresh, unfitted head (``n_components`` included: later refits keep
    the saved number), and ``.to(device, dtype)`` moves it. ``gradient_through_fit`` is
    not state: the head loaded into keeps its own (a ``CrossEmbedding(head="pca")`` builds
    its head without it, so build the module with the same head to load into).

    Parameters
    ----------
    n_components : int
        Number of principal components: the number of coordinates. ``n`` training TTs span
        at most ``n - 1`` directions once centred; a component beyond those, or whose
        eigenvalue is at the round-off level of the Gram matrix (relative to the largest
        squared norm of a training TT), gives 0. Identical training TTs thus give all-zero
        coordinates.
    gradient_through_fit : bool, default False
        ``False``: the components are fitted without gradient; gradients reach a query TT
        only through its projection. ``True``: in training (train mode, gradients on),
        :meth:`forward_batch` refits the components on every call, differentiably, on the
        training TTs with the batch's own TTs in place of their kept copies (a batch TT
        whose key :meth:`fit` was given), so that gradients also reach the batch's TTs
        through the Gram matrix, its eigenvectors and the alignment (see the notes). In
        eval mode, or without gradients, it projects as ``False`` does.

    Notes
    -----
    With ``gradient_through_fit=True`` a training step's refit is rotated, as a refit of
    :meth:`fit` is, to give the kept training TTs the coordinates the last :meth:`fit`
    gave them (orthogonal Procrustes), so that the readout keeps its coordinates. Both
    steps carry gradient without dividing by a near-zero gap: the eigenvectors' backward
    damps ``1 / (lambda_j - lambda_i)`` to ``gap / (gap^2 + b^2)`` with ``b`` a
    ``1e-4`` of the largest eigenvalue (the coordinates, once rotated, do not depend on
    the basis chosen inside a near-degenerate eigenspace, so only the damped terms'
    pairs are approximate), and the rotation (the polar factor of a ``k x k`` matrix) is
    differentiated through sums of its singular values, never differences. The keys of
    :meth:`fit` are not part of ``state_dict``: a loaded head projects without the refit
    until it is fitted again.

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

    def __init__(self, n_components, gradient_through_fit=False):
        super().__init__()
        self.n_components = check_int(n_components, "n_components", minimum=1)
        self.gradient_through_fit = check_bool(gradient_through_fit, "gradient_through_fit")
        self.train_index = {}  # key of a training TT -> its row (fit's keys)
        self.n_modes = 0
        for name in ("centred_row_means", "projection"):
            self.register_buffer(name, torch.zeros(0))
        self.register_load_state_dict_pre_hook(_resize_pca_buffers)

    def extra_repr(self):
        """The settings shown by ``repr``.

        Returns
        -------
        text : str
            ``name=value`` pairs, comma-separated.
        """
        text = f"n_components={self.n_components}, fitted={self.fitted}"
        return text + (", gradient_through_fit=True" if self.gradient_through_fit else "")

    @property
    def fitted(self):
        """Whether :meth:`fit` ran (or a fitted state was loaded)."""
        return self.n_modes > 0

    @property
    def train_cores(self):
        """Training TTs, stacked per mode: ``(n_train, r_k, n_k, r_{k+1})`` tensors."""
        return [getattr(self, f"train_core_{k}") for k in range(self.n_modes)]

    @torch.no_grad()
    def fit(self, tts, keys=None):
        """Fit the components on training TTs (kept, detached, for the projections).

        A refit (same number of TTs and components, TTs of the same mode sizes) keeps the
        coordinates continuous: the new components are rotated (an orthogonal Procrustes
        fit) to give the training TTs the coordinates the previous components gave them, as
        far as the new span allows, so that a readout trained on the old coordinates still
        applies. Signs of eigenvectors, and bases of near-equal eigenvalues, no longer flip
        between refits. A refit on TTs of other mode sizes starts afresh, as a first fit
        does (the previous components cannot give them coordinates).

        Parameters
        ----------
        tts : list of list of torch.Tensor
            At least 2 training TTs, each a list of cores, all with the same core shapes
            (they are stacked per mode) and one dtype, that of the buffers kept.
        keys : sequence of hashable, optional
            One per TT (``None`` entries allowed): with ``gradient_through_fit=True``,
            :meth:`forward_batch` puts a batch TT of one of these keys in that training
            TT's place. Compared by value (a one-element tensor or NumPy scalar as its
            number). Unused otherwise.

        Returns
        -------
        self : TTPCAHead
            The fitted head.

        Raises
        ------
        ValueError
            If fewer than 2 TTs are given, one is not a TT, their core shapes differ, one
            holds NaN or inf, or ``keys`` does not have one entry per TT or names one twice.
        TypeError
            If the TTs are complex (their inner products are taken in float64), or a key
            is not hashable or not one value.
        """
        tts = [[core.detach() for core in tt] for tt in tts]
        if len(tts) < 2:
            raise ValueError(f"TTPCAHead.fit needs at least 2 TTs, got {len(tts)}.")
        _check_training_tts(tts)
        train_index = _index_of_keys(keys, len(tts))
        stacked = [torch.stack(cores) for cores in zip(*tts, strict=True)]
        exact = [cores.to(torch.float64) for cores in stacked]
        gram = torch.stack([tt_inner_many([core[k] for core in exact], exact)
                            for k in range(len(tts))])
        n = gram.shape[0]
        centring = torch.eye(n, dtype=gram.dtype, device=gram.device) - 1.0 / n
        centred = centring @ gram @ centring
        projection, live = _principal_projection(centred, gram, self.n_components)
        if self._continues(tts, projection) and live > 0:
            # the new TTs, the old components; only the live components are rotated, so
            # that those beyond them stay 0
            previous = torch.stack([self(tt) for tt in tts]).to(projection.dtype)
            projection[:, :live] = projection[:, :live] @ _procrustes(
                centred @ projection[:, :live], previous[:, :live])
        centred_row_means = gram.mean(dim=0) - gram.mean()
        dtype = stacked[0].dtype
        with torch.inference_mode(False):  # buffers fitted under inference_mode serve training
            self._set_state([cores.clone() for cores in stacked],
                            centred_row_means.to(dtype).clone(), projection.to(dtype).clone())
        self.train_index = train_index
        return self

    def forward(self, tt):
        """Coordinates of one TT on the fitted principal components.

        Parameters
        ----------
        tt : list of torch.Tensor
            The cores of a TT of the training TTs' shape (its ranks may differ).

        Returns
        -------
        coordinates : torch.Tensor of shape (n_components,)
            In ``tt``'s dtype; components beyond those the training TTs span are 0.
            Differentiable with respect to ``tt``.

        Raises
        ------
        RuntimeError
            If the head is not fitted (neither :meth:`fit` nor a fitted state loaded).
        ValueError
            If ``tt`` is not a TT of the training TTs' shape, or holds NaN or inf.
        TypeError
            If ``tt`` is complex.
        """
        kernel = self._kernel(tt)
        # <TT - mean TT, TT_i - mean TT>: the common part cancels in float64 first
        centred = kernel - kernel.mean() - self.centred_row_means.to(torch.float64)
        return (centred @ self.projection.to(torch.float64)).to(tt[0].dtype)

    def forward_batch(self, tts, keys=None):
        """Coordinates of a batch of TTs, refit with gradient in training where asked.

        With ``gradient_through_fit``, in training, the components are refit differentiably
        with the batch's TTs in their training TTs' place.

        Parameters
        ----------
        tts : list of list of torch.Tensor
            The batch's TTs, each as :meth:`forward` takes it.
        keys : sequence of hashable, optional
            One per TT (``None`` entries allowed): a TT whose key :meth:`fit` was given
            takes that training TT's place in the refit (compared by value, as there).

        Returns
        -------
        coordinates : torch.Tensor of shape (len(tts), n_components)
            The :meth:`forward` of each TT, stacked; but where this head refits
            (``gradient_through_fit=True``, train mode, gradients on, and a TT of the batch
            whose key was fitted), the coordinates on the refit components, differentiable
            with respect to every TT of the batch through the refit as well as through the
            projection.

        Raises
        ------
        RuntimeError
            If the head is not fitted.
        ValueError
            If ``tts`` is empty, a TT is not one of the training TTs' shape or holds NaN or
            inf, or ``keys`` does not have one entry per TT or names one training TT twice.
        TypeError
            If a TT is complex, or a key is not hashable or not one value.
        """
        if len(tts) == 0:  # torch.stack said only "expects a non-empty TensorList"
            raise ValueError("TTPCAHead.forward_batch needs at least 1 TT, got 0.")
        # by value: a tensor key (a DataLoader's index) hashes by identity and never matched
        keys = [None] * len(tts) if keys is None else [key_value(key) for key in keys]
        if len(keys) != len(tts):
            raise ValueError(f"keys must have one entry per TT ({len(tts)}), got {len(keys)}.")
        pairs = [(b, self.train_index[key]) for b, key in enumerate(keys)
                 if key is not None and key in self.train_index]
        if len({row for _, row in pairs}) != len(pairs):
            raise ValueError("keys names one training TT twice: a batch holds each once.")
        if not (pairs and self.gradient_through_fit and self.training
                and torch.is_grad_enabled()):
            return torch.stack([self(tt) for tt in tts])
        return self._refit_coordinates(tts, pairs)

    def _kernel(self, tt):
        """``<tt, TT_i>`` for every training TT, in float64, after checking ``tt``."""
        if not self.fitted:
            raise RuntimeError("TTPCAHead.fit(training_tts) must run before forward "
                               "(or load a fitted state_dict).")
        shape = tuple(int(cores.shape[2]) for cores in self.train_cores)
        if tt_shape(tt) != shape:
            raise ValueError(f"tt has mode sizes {tt_shape(tt)}; this head was fitted on "
                             f"TTs of shape {shape}.")
        _refuse_complex(tt, "tt")
        kernel = tt_inner_many([core.to(torch.float64) for core in tt],
                               [cores.to(torch.float64) for cores in self.train_cores])
        if not bool(torch.isfinite(kernel).all()):
            raise ValueError("tt holds NaN or inf: its inner products with the training TTs "
                             "are not finite.")
        return kernel

    def _refit_coordinates(self, tts, pairs):
        """The batch's coordinates on components refit (with gradient) on the training TTs,
        the batch's TT ``b`` in row ``i``'s place for each ``(b, i)`` of ``pairs``."""
        kernel = torch.stack([self._kernel(tt) for tt in tts])
        batch_rows = torch.tensor([b for b, _ in pairs], device=kernel.device)
        train_rows = torch.tensor([i for _, i in pairs], device=kernel.device)
        queries = [[core.to(torch.float64) for core in tt] for tt in tts]
        # each TT's inner products with the training TTs as substituted
        kernel = kernel.index_copy(1, train_rows, _inner_products(
            queries, [queries[b] for b, _ in pairs]))
        anchors = [cores.to(torch.float64) for cores in self.train_cores]
        n = anchors[0].shape[0]
        centring = torch.eye(n, dtype=kernel.dtype, device=kernel.device) - 1.0 / n
        with torch.no_grad():  # the kept TTs, and the coordinates the fit gave them
            gram = torch.stack([tt_inner_many([cores[k] for cores in anchors], anchors)
                                for k in range(n)])
            previous = centring @ gram @ centring @ self.projection.to(torch.float64)
        substituted = kernel[batch_rows]
        gram = gram.index_copy(0, train_rows, substituted).index_copy(1, train_rows,
                                                                      substituted.T)
        projection = _aligned_projection(centring @ gram @ centring, gram, previous)
        centred = kernel - kernel.mean(dim=1, keepdim=True) - (gram.mean(dim=0) - gram.mean())
        return (centred @ projection).to(tts[0][0].dtype)

    def _continues(self, tts, projection):
        """Whether this fit refits the last one, whose coordinates it then keeps: the same
        number of TTs and components, and TTs of the shape the last fit took."""
        if not self.fitted or self.projection.shape != projection.shape:
            return False
        fitted_shape = tuple(int(cores.shape[2]) for cores in self.train_cores)
        return tt_shape(tts[0]) == fitted_shape

    def _set_state(self, stacked, centred_row_means, projection):
        for k in range(self.n_modes, len(stacked)):
            self.register_buffer(f"train_core_{k}", None)
        for k, cores in enumerate(stacked):
            setattr(self, f"train_core_{k}", cores)
        for k in range(len(stacked), self.n_modes):
            delattr(self, f"train_core_{k}")
        self.n_modes = len(stacked)
        self.centred_row_means, self.projection = centred_row_means, projection


# Headroom over the float64 round-off of one Gram entry (eps times the largest squared
# norm): the contractions of cross-built cores cancel terms larger than their result.
_ROUND_OFF_HEADROOM = 1000.0


def _principal_projection(centred, gram, n_components):
    """``(n, n_components)`` eigenvectors scaled by ``1/sqrt(eigenvalue)``, largest first,
    and how many of them are live.

    A component whose eigenvalue is at the round-off level of the Gram matrix (relative to
    its largest diagonal entry, the largest squared norm of a training TT, not to the
    largest eigenvalue, which is round-off itself when the training TTs are equal) is
    noise that ``1/sqrt(eigenvalue)`` would blow up: its column is 0, as is every column
    past the ``n`` eigenvectors.
    """
    n = centred.shape[0]
    values, vectors = torch.linalg.eigh(centred)
    keep = min(n_components, n)
    values, vectors = values.flip(0)[:keep], vectors.flip(1)[:, :keep]
    scale = gram.diagonal().abs().max()
    floor = _ROUND_OFF_HEADROOM * n * torch.finfo(gram.dtype).eps * scale
    live = int((values > floor).sum())
    projection = torch.zeros((n, n_components), dtype=centred.dtype, device=centred.device)
    projection[:, :live] = vectors[:, :live] / values[:live].sqrt()
    return projection, live


def _aligned_projection(centred, gram, previous):
    """:func:`_principal_projection` with gradient, its live components rotated
    (orthogonal Procrustes, with gradient too) to give the rows the coordinates
    ``previous``; both backward passes stay finite for near-equal eigenvalues."""
    n, n_components = previous.shape
    values, vectors = DampedEigh.apply(centred)
    keep = min(n_components, n)
    values, vectors = values.flip(0)[:keep], vectors.flip(1)[:, :keep]
    scale = gram.detach().diagonal().abs().max()
    floor = _ROUND_OFF_HEADROOM * n * torch.finfo(gram.dtype).eps * scale
    live = int((values.detach() > floor).sum())
    zeros = centred.new_zeros((n, n_components - live))
    if live == 0:
        return zeros
    projection = vectors[:, :live] / values[:live].sqrt()
    rotation = PolarFactor.apply((centred @ projection).T @ previous[:, :live])
    return torch.cat([projection @ rotation, zeros], dim=1)


def _inner_products(tts, others):
    """``<tts[a], others[b]>`` as an ``(len(tts), len(others))`` matrix."""
    return torch.stack([torch.stack([tt_inner(tt, other) for other in others])
                        for tt in tts])


def _index_of_keys(keys, n):
    """``{key: row}`` for the training TTs' keys (``None`` entries left out)."""
    if keys is None:
        return {}
    keys = [key_value(key) for key in keys]  # by value, as forward_batch compares them
    if len(keys) != n:
        raise ValueError(f"keys must have one entry per TT ({n}), got {len(keys)}.")
    index = {}
    for row, key in enumerate(keys):
        if key is None:
            continue
        if key in index:
            raise ValueError(f"keys names {key!r} twice: a key names one training TT.")
        index[key] = row
    return index


def _check_training_tts(tts):
    """Every training TT is a TT, with the first one's core shapes and dtype, and finite."""
    for k, tt in enumerate(tts):
        tt_shape(tt, f"tts[{k}]")
        core_shapes = [tuple(core.shape) for core in tt]
        first_shapes = [tuple(core.shape) for core in tts[0]]
        if core_shapes != first_shapes:
            raise ValueError(f"tts[{k}] has core shapes {core_shapes}, tts[0] has "
                             f"{first_shapes}: the training TTs are stacked per mode, so "
                             "they need the same core shapes (ranks included).")
        _check_one_dtype(tts[0], tt, "tts[0]", f"tts[{k}]")
        _refuse_complex(tt, f"tts[{k}]")
        for j, core in enumerate(tt):
            if not bool(torch.isfinite(core).all()):
                raise ValueError(f"tts[{k}] holds NaN or inf (in core {j}).")


def _refuse_complex(tt, name):
    """Raise TypeError for a complex TT: its inner products are taken in float64, which
    dropped the imaginary parts (with only PyTorch's casting warning)."""
    if any(core.is_complex() for core in tt):
        raise TypeError(f"{name} is complex ({tt[0].dtype}); TTPCAHead reads real TTs: "
                        "cross the real and imaginary parts as two channels instead.")


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
    one fitted on other data) accepts a fitted state. A state saved before the centred row
    means were kept (``row_means`` and ``grand_mean``) is converted to them. The keys of
    the head's own last fit go: they named rows of the TTs that the load replaces."""
    module.train_index = {}
    keys = [key for key in state_dict if key.startswith(prefix + "train_core_")]
    if not keys:
        return
    if prefix + "row_means" in state_dict and prefix + "centred_row_means" not in state_dict:
        row_means = state_dict.pop(prefix + "row_means").to(torch.float64)
        grand_mean = state_dict.pop(prefix + "grand_mean").to(torch.float64)
        state_dict[prefix + "centred_row_means"] = row_means - grand_mean
    # In the module's own device and dtype, as load_state_dict copies every other tensor.
    device, dtype = module.projection.device, module.projection.dtype

    def empty(name):
        return torch.empty(state_dict[prefix + name].shape, dtype=dtype, device=device)

    module._set_state([empty(f"train_core_{k}") for k in range(len(keys))],
                      empty("centred_row_means"), empty("projection"))
    # The saved components, not the constructor's: a refit must keep the loaded width.
    if module.projection.ndim == 2:
        module.n_components = int(module.projection.shape[1])
