"""Train/eval modes of a module's parts, kept across a pass in another mode."""

import contextlib


def modes_of(module):
    """Each part of ``module`` (itself included) with its ``training`` flag.

    Parameters
    ----------
    module : torch.nn.Module
        The module whose parts' modes are recorded.

    Returns
    -------
    modes : list of (torch.nn.Module, bool)
        For :func:`restore_modes`.
    """
    return [(part, part.training) for part in module.modules()]


def restore_modes(modes):
    """Put every part back in the mode :func:`modes_of` recorded.

    ``module.train(was_training)`` sets every part to the top module's mode: a part put in
    eval mode inside a module in train mode (an encoder's BatchNorm, as docs/pipeline.rst
    advises) came back in train mode. Each flag is set on its own part, not recursively.

    Parameters
    ----------
    modes : list of (torch.nn.Module, bool)
        As :func:`modes_of` returns them.
    """
    for part, training in modes:
        part.training = training


@contextlib.contextmanager
def evaluating(module):
    """``module`` in eval mode for the block; afterwards each part in the mode it had.

    Parameters
    ----------
    module : torch.nn.Module
        The module to evaluate.

    Yields
    ------
    module : torch.nn.Module
        The same module, in eval mode.
    """
    modes = modes_of(module)
    module.eval()
    try:
        yield module
    finally:
        restore_modes(modes)
