"""Review of the s29 gradient and scaling changes: what they left out."""

import pytest
import tensorly as tl


def test_torch_compile_of_a_cross_embedding_runs_its_crosses_eagerly():
    """``torch.compile`` of a ``CrossEmbedding`` traced into its lockstep searches and reads
    and failed inside TorchDynamo ("Cannot interpret 'torch.float32' as a data type"),
    although the cross entry points it calls run eagerly under ``torch.compile``. Its
    crosses run eagerly now too: the same features and encoder gradient as without it."""
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import CrossEmbedding

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=3)
    volumes = torch.rand(1, 1, 6, 6, 6)  # one volume: its cross runs in this thread
    with tl.backend_context("pytorch"):
        eager = model(volumes)
        eager.sum().backward()
        expected = model.encoder[0].weight.grad.clone()
        model.zero_grad()
        compiled = torch.compile(model, backend="eager")(volumes)  # TorchDynamo only: fast
        compiled.sum().backward()
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    torch.testing.assert_close(model.encoder[0].weight.grad, expected, rtol=1e-6, atol=0)
