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
