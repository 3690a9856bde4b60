"""Lockstep: the cross runs of a batch of volumes advance together, one encoder call a step.

Each volume's index search (or differentiable read) is the library's own
:func:`~tensorly_cross.select_indices` (or :func:`~tensorly_cross.cross_interpolate`),
unchanged, run in a thread of its own. When a run needs new positions encoded, it hands
their patches over and waits; once every run still going waits too (or has finished), the
calling thread encodes all the patches handed over in one encoder call (more only past
``max_batch`` patches) and gives each run its rows. A batch of ``B`` volumes thus makes the
encoder calls of one volume instead of ``B`` times as many, while every run chooses exactly
the indices it would choose alone (the runs share nothing but the encoder calls), as long
as the encoder's output for a patch does not depend on the other patches of its call
(``BatchNorm`` in train mode does: it normalises with the call's statistics).

The encoder runs in the calling thread, under its gradient mode: gradients of the
differentiable reads flow as they would without threads.
"""

import contextlib
import threading

import tensorly as tl
import torch

from .._validation import check_float, check_int
from .patches import encode_patches


class LockstepEncoder:
    """Batches the encoder calls of concurrent cross runs (see the module docstring).

    Parameters
    ----------
    encoder : torch.nn.Module
        Maps ``(m, 1, p, p, p)`` patches to ``(m, F)`` features.
    n_features : int
        Features ``F`` per patch (the encoder must return ``(m, F)``, or that with
        trailing axes of size 1; any other shape is a ValueError).
    max_batch : int
        Most patches per encoder call (size it to the device: :func:`device_batch_size`).

    Raises
    ------
    TypeError
        If ``n_features`` or ``max_batch`` is not an int.
    ValueError
        If ``n_features`` or ``max_batch`` is below 1.

    Attributes
    ----------
    n_calls : int
        Encoder calls made.
    n_patches : int
        Patches encoded.
    n_rounds : int
        Lockstep rounds (each encodes what every waiting run asked for).

    Examples
    --------
    >>> import torch
    >>> from tensorly_cross.nn import LockstepEncoder, default_encoder
    >>> encoder = default_encoder(patch_size=3, n_features=2)
    >>> lockstep = LockstepEncoder(encoder, n_features=2, max_batch=1024)
    >>> patches = torch.rand(4, 1, 3, 3, 3)
    >>> def job(rows):  # a run that asks for the features of some patches
    ...     return lambda: lockstep.encode(patches[rows])
    >>> first, second = lockstep.run([job(slice(0, 1)), job(slice(1, 4))])
    >>> first.shape, second.shape
    (torch.Size([1, 2]), torch.Size([3, 2]))
    >>> lockstep.n_calls, lockstep.n_patches  # both runs served by one encoder call
    (1, 4)
    """

    def __init__(self, encoder, n_features, max_batch):
        # None or a str failed inside int() with a message that named neither argument.
        max_batch = check_int(max_batch, "max_batch", minimum=1)
        n_features = check_int(n_features, "n_features", minimum=1)
        self.encoder, self.n_features, self.max_batch = encoder, n_features, max_batch
        self.n_calls = self.n_patches = self.n_rounds = 0
        self._condition = threading.Condition()
        self._local = threading.local()
        self._pending, self._results, self._active, self._aborted = {}, {}, 0, False

    def run(self, jobs):
        """Run jobs in lockstep, each in a thread of its own; return their results.

        A single job runs in the calling thread. Each job runs under the calling thread's
        TensorLy backend and gradient mode.

        Parameters
        ----------
        jobs : iterable of callable
            Callables without arguments; they get their features through :meth:`encode`.

        Returns
        -------
        results : list
            What each job returned, in the order of ``jobs``.

        Raises
        ------
        Exception
            Once every job has stopped: the exception of the first job, in the order of
            ``jobs``, that raised one (an encoder error is raised in every job waiting on
            that call).
        """
        jobs = list(jobs)
        if len(jobs) <= 1:
            return [job() for job in jobs]
        outputs, errors = [None] * len(jobs), [None] * len(jobs)
        context = (tl.get_backend(), torch.is_grad_enabled())
        with self._condition:
            self._pending, self._results, self._active = {}, {}, len(jobs)
            self._aborted = False
        threads = [threading.Thread(target=self._work, args=(k, job, outputs, errors, context),
                                    name=f"lockstep-{k}", daemon=True)
                   for k, job in enumerate(jobs)]
        for thread in threads:
            thread.start()
        try:
            self._serve()
        except BaseException:  # interrupted (Ctrl-C): the waiting jobs must not wait forever
            self._abort()
            raise
        finally:
            for thread in threads:
                thread.join()
        first = next((error for error in errors if error is not None), None)
        if first is not None:
            raise first
        return outputs

    def encode(self, patches):
        """Features of patches: from a lockstep job, its rows of the next batched call.

        From any other thread the encoder is called directly (in calls of at most
        ``max_batch`` patches).

        Parameters
        ----------
        patches : torch.Tensor of shape (m, 1, p, p, p)
            The patches to encode.

        Returns
        -------
        features : torch.Tensor of shape (m, F)
            The encoder's features of each patch.
        """
        job = getattr(self._local, "job", None)
        if job is None:
            return self._encode_all([patches])[0]
        with self._condition:
            if self._aborted:
                raise RuntimeError("the lockstep run was interrupted")
            self._pending[job] = patches
            self._condition.notify_all()
            self._condition.wait_for(lambda: job in self._results or self._aborted)
            if job not in self._results:
                raise RuntimeError("the lockstep run was interrupted")
            features = self._results.pop(job)
        if isinstance(features, BaseException):
            raise features
        return features

    def _work(self, index, job, outputs, errors, context):
        backend, grad = context
        self._local.job = index
        try:
            with tl.backend_context(backend, local_threadsafe=True), \
                    torch.set_grad_enabled(grad):
                outputs[index] = job()
        except BaseException as error:  # handed to run(), raised there
            errors[index] = error
        finally:
            self._local.job = None
            with self._condition:
                self._active -= 1
                self._condition.notify_all()

    def _abort(self):
        """Fail every job that waits on an encoder call, or will."""
        with self._condition:
            self._aborted = True
            self._condition.notify_all()

    def _serve(self):
        """Encode each round's patches once every live job waits, until all are done."""
        while True:
            with self._condition:
                self._condition.wait_for(lambda: len(self._pending) == self._active)
                if self._active == 0:
                    return
                pending, self._pending = self._pending, {}
            jobs = sorted(pending)  # a fixed order: the same batch every time
            try:
                results = dict(zip(jobs, self._encode_all([pending[j] for j in jobs]),
                                   strict=True))
            except BaseException as error:  # every waiting job fails with it
                results = dict.fromkeys(jobs, error)
            with self._condition:
                self._results.update(results)
                self._condition.notify_all()

    def _encode_all(self, groups):
        """Encode the concatenated groups in calls of at most ``max_batch``; split back."""
        sizes = [int(group.shape[0]) for group in groups]
        patches = torch.cat(groups) if len(groups) > 1 else groups[0]
        outputs = []
        for start in range(0, patches.shape[0], self.max_batch):
            chunk = patches[start : start + self.max_batch]
            outputs.append(encode_patches(self.encoder, chunk, self.n_features))
            self.n_calls += 1
        self.n_patches += patches.shape[0]
        self.n_rounds += 1
        if not outputs:  # no patch at all: torch.cat refuses an empty list
            features = patches.new_zeros((0, self.n_features))
        else:
            features = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
        return list(torch.split(features, sizes))


def device_batch_size(encoder, patch_size, device=None, dtype=None, memory_fraction=0.25,
                      cpu_batch=16384):
    """Patches per encoder call that fit the device.

    On CUDA: the encoder's activation memory per patch, measured on one probe batch of 256
    patches with gradient (the call leaves the encoder's buffers, such as a BatchNorm's
    running statistics, and the random state as they were), divides ``memory_fraction`` of
    the device's free memory. On CPU
    (and other devices): ``cpu_batch``, where a call of that size costs little memory
    (activations of the default encoder: about 1 kB a patch) and per-call overhead is
    amortised.

    Parameters
    ----------
    encoder : torch.nn.Module
        Maps ``(m, 1, p, p, p)`` patches to features; on CUDA it must be on ``device``.
    patch_size : int
        Edge ``p`` of the patches.
    device : torch.device or str, optional
        Default: the device of the encoder's parameters (CPU without parameters).
    dtype : torch.dtype, optional
        Of the probe batch; default: the encoder parameters' dtype (else torch's default).
    memory_fraction : float, default 0.25
        Share of the CUDA device's free memory the activations of one call may take.
    cpu_batch : int, default 16384
        The answer on every device but CUDA.

    Returns
    -------
    batch_size : int
        On CUDA between 256 and ``2**20``; elsewhere ``cpu_batch``.

    Raises
    ------
    TypeError
        If ``patch_size`` or ``cpu_batch`` is not an int, or ``memory_fraction`` not a
        real number.
    ValueError
        If ``patch_size`` or ``cpu_batch`` is below 1, or ``memory_fraction`` outside
        ``(0, 1]``.

    Examples
    --------
    >>> from tensorly_cross.nn import default_encoder, device_batch_size
    >>> device_batch_size(default_encoder(patch_size=3, n_features=2), 3, device="cpu")
    16384
    """
    # Checked on every device: on CPU they went unread or through int() (2.7 gave 2).
    patch_size = check_int(patch_size, "patch_size", minimum=1)
    cpu_batch = check_int(cpu_batch, "cpu_batch", minimum=1)
    memory_fraction = check_float(memory_fraction, "memory_fraction", minimum=0.0, strict=True)
    if memory_fraction > 1:
        raise ValueError(f"memory_fraction must be in (0, 1] (a share of the free memory), "
                         f"got {memory_fraction}.")
    parameter = next(encoder.parameters(), None)
    device = torch.device(device) if device is not None else (
        parameter.device if parameter is not None else torch.device("cpu"))
    dtype = dtype or (parameter.dtype if parameter is not None else torch.get_default_dtype())
    if device.type != "cuda":
        return cpu_batch
    probe = 256
    with _leaving_no_trace(encoder, device):
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        patches = torch.zeros((probe, 1) + (patch_size,) * 3, device=device, dtype=dtype)
        with torch.enable_grad():
            output = encoder(patches)
        per_patch = max((torch.cuda.max_memory_allocated(device) - before) / probe, 1.0)
        del output, patches
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(probe, min(2**20, memory_fraction * free / per_patch)))


@contextlib.contextmanager
def _leaving_no_trace(encoder, device):
    """Encoder calls in the block leave its buffers and the random state (CPU, and
    ``device`` where it is CUDA) as they were.

    The memory probe's call took its zero patches into a BatchNorm's running statistics (in
    train mode), and a Dropout drew from the generator, before the first volume was read.
    The buffers are copied before the block: the probe's peak memory does not count them."""
    buffers = [(buffer, buffer.clone()) for buffer in encoder.buffers()]
    devices = [device] if torch.device(device).type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
