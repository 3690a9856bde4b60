"""Interior modes of size one, taken out of a rank-adaptive cross and put back after it.

A mode of size one between larger modes makes TCI's two bonds around it bound each other:
the bond matrix on its left has only ``r_{k+1}`` columns (``1 x right[k+1]``) and the one on
its right only ``r_k`` rows, so each bond's rank can grow no further in a sweep than the
other's was in the sweep before. On ``1 / (1 + sum(x))`` at tol 1e-10, ``(32, 1, 32, 32)``
took 11 sweeps and 8,006 evaluations against 2 sweeps and 5,458 for ``(32, 32, 32)``, and
ended at ranks (11, 11, 13) against (10, 10). Without the mode the cross is the one of the
smaller tensor; the mode's core is then the identity of its bond (a TT's ranks on both
sides of a size-one mode are equal at their minimum), and the index sets gain a 0 there.
Size-one modes at either end cost nothing (same counts) and stay. The fixed-rank crosses
do not grow ranks and read the same with or without the mode: only TCI drops it.
"""

import copy
import dataclasses
import numbers

import numpy as np
import tensorly as tl

from ..lazy.squeezed import SqueezedTensor
from .indices import CrossIndices
from .ranks import expand_rank


class SizeOneModes:
    """The interior size-one modes of ``shape`` and the maps between the tensor with and
    without them.

    Parameters
    ----------
    shape : tuple of int
        The tensor's shape.
    """

    def __init__(self, shape):
        self.shape = tuple(shape)
        larger = [mode for mode, size in enumerate(self.shape) if size > 1]
        self.dropped = ([mode for mode in range(larger[0] + 1, larger[-1])
                         if self.shape[mode] == 1] if larger else [])
        self.kept = [mode for mode in range(len(self.shape)) if mode not in self.dropped]
        # Bond b (between modes b-1 and b) of the tensor is bond squeezed_bond[b] of the
        # tensor without the dropped modes: the kept modes before it.
        self.squeezed_bond = np.searchsorted(self.kept, np.arange(len(self.shape) + 1))

    @classmethod
    def for_method(cls, shape, method):
        """The modes to drop for a cross of ``method`` (None when there are none)."""
        modes = cls(shape)
        return modes if method == "tci" and modes.dropped else None

    def view(self, lazy):
        """``lazy`` without the dropped modes."""
        return SqueezedTensor(lazy, self.kept)

    def options(self, options):
        """``options`` for the smaller tensor: a rank list mapped to its bonds (each capped
        by the lowest of the bonds it stands for), and a callback shown the tensor's ranks."""
        changes = {}
        if options.rank is not None and not isinstance(options.rank, numbers.Integral):
            ranks = expand_rank(options.rank, self.shape, warn=False, clip=False)
            changes["rank"] = [min(r for b, r in enumerate(ranks) if self.squeezed_bond[b] == j)
                               for j in range(len(self.kept) + 1)]
        if options.callback is not None:
            changes["callback"] = self._callback(options.callback)
        return dataclasses.replace(options, **changes)

    def _callback(self, callback):
        """``callback`` called with the tensor's ranks in ``info`` (the TT it is given is
        already the tensor's: ``cores``)."""
        def tensor_callback(tt, info):
            return callback(tt, self.info(copy.copy(info)))

        return tensor_callback

    def ranks(self, squeezed_ranks):
        """TT ranks of the tensor from those of the smaller one."""
        return tuple(int(squeezed_ranks[j]) for j in self.squeezed_bond)

    def indices(self, squeezed):
        """The index sets of the tensor from those of the smaller one (a 0 at every
        dropped mode)."""
        d, bond = len(self.shape), self.squeezed_bond
        # left[k] covers modes before k, right[k] the modes after k.
        left = [self._widen(squeezed.left[bond[k]], 0, k) for k in range(d)]
        right = [self._widen(squeezed.right[bond[k + 1] - 1], k + 1, d) for k in range(d)]
        ranks = None if squeezed.ranks is None else self.ranks(squeezed.ranks)
        return CrossIndices(self.shape, left, right, squeezed.nested, dict(squeezed.meta),
                            squeezed.block, ranks)

    def _widen(self, block, start, stop):
        """Multi-indices over the kept modes in ``start:stop`` as multi-indices over all
        of them (0 at the dropped ones)."""
        modes = range(start, stop)
        wide = np.zeros((block.shape[0], len(modes)), dtype=np.int64)
        wide[:, [mode - start for mode in modes if mode in self.kept]] = block
        return wide

    def cores(self, squeezed_cores):
        """The TT's cores from the smaller one's: an identity core at each dropped mode."""
        cores = []
        for mode in range(len(self.shape)):
            if mode in self.kept:
                cores.append(squeezed_cores[self.kept.index(mode)])
            else:
                rank = int(cores[-1].shape[-1])
                identity = tl.eye(rank, **tl.context(cores[-1]))
                cores.append(tl.reshape(identity, (rank, 1, rank)))
        return cores

    def info(self, info):
        """``info`` with its ranks written for the tensor (in place)."""
        info.ranks = [self.ranks(ranks) for ranks in info.ranks]
        return info
