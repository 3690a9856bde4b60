"""A progress bar over the sweeps of one cross approximation (``progress=True``)."""

import sys


class SweepProgress:
    """A tqdm bar of ``n_iter_max`` sweeps, advanced after each one with its evaluations,
    ranks and held-out error (tqdm shows the time); a no-op when not ``enabled``."""

    def __init__(self, n_iter_max, enabled):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            # Redrawn at every sweep: sweeps are few, and slow where a bar matters.
            self.bar = tqdm(total=n_iter_max, unit="sweep", desc="tt_cross", file=sys.stderr,
                            mininterval=0)

    def update(self, info):
        if self.bar is not None:
            self.bar.set_postfix(evals=info.n_evals, rank=max(info.ranks[-1]),
                                 val_error=f"{info.val_errors[-1]:.2e}", refresh=False)
            self.bar.update(1)

    def write(self, line):
        """Print ``line`` (``verbose=True``'s sweep lines) above the bar, not onto it."""
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line)

    def close(self, info):
        """Show the returned sweep's figures and the stop reason, and close the bar."""
        if self.bar is not None:
            self.bar.set_postfix(evals=info.n_evals, val_error=f"{info.val_error:.2e}",
                                 best_sweep=info.best_sweep, stop=info.stop_reason,
                                 refresh=False)
            self.bar.close()

    def abandon(self):
        """Close the bar as it stands (the run raised: there is no result to show)."""
        if self.bar is not None:
            self.bar.close()
