"""Shared by the nn tests. Nothing is imported at module level: pytest collects this
file for its doctests in environments without PyTorch too."""


def small_embedding(**options):
    """A seeded CrossEmbedding small enough for a test: 3^3 patches, 2 features, rank 2,
    3 outputs, one sweep (``options`` override any of them)."""
    import torch

    from tensorly_cross.nn import CrossEmbedding

    torch.manual_seed(0)
    defaults = dict(patch_size=3, n_features=2, rank=2, n_outputs=3, n_iter_max=1)
    return CrossEmbedding(**dict(defaults, **options))


def crops_manifest(directory, **parameters):
    """A directory of constant (7.0) crops and their manifest, as ``mni152_crops`` writes
    them (no template needed to read it); returns the crops' file names."""
    import json

    import numpy as np

    manifest = dict(dict(n_volumes=1, size=4, seed=0, version=2), **parameters)
    names = [f"crop_{k:03d}.npy" for k in range(manifest["n_volumes"])]
    for name in names:
        np.save(directory / name, np.full((manifest["size"],) * 3, 7.0, dtype=np.float32))
    manifest.update(files=names, targets=[0.5] * len(names))
    (directory / "targets.json").write_text(json.dumps(manifest))
    return names
