"""The nn module's string settings are checked by name whatever their type: an array given
for ``padding``, ``layout``, ``feature_axis`` or ``init`` failed with NumPy's "truth value of
an array ... is ambiguous", which names neither the argument nor its options."""

import numpy as np
import pytest
import tensorly as tl

torch = pytest.importorskip("torch")

from tensorly_cross.nn import EncodedTensor, PatchGrid, TTProbeHead, default_encoder  # noqa: E402

VOLUME = np.zeros((6, 6, 6))
WRONG = np.array(["reflect", "edge"])


@pytest.mark.parametrize("name", ["padding", "layout", "feature_axis"])
def test_an_array_for_an_encoded_tensor_setting_is_named(name):
    with tl.backend_context("pytorch"), pytest.raises(ValueError, match=f"{name} must be one of"):
        EncodedTensor(VOLUME, default_encoder(3, 2), 3, 2, **{name: WRONG})


def test_an_array_for_padding_of_a_patch_grid_is_named():
    with pytest.raises(ValueError, match="padding must be one of 'reflect'"):
        PatchGrid(VOLUME, 3, padding=WRONG)


def test_an_array_for_the_head_init_is_named():
    with pytest.raises(ValueError, match="init must be one of 'mean', 'random'"):
        TTProbeHead((4, 4, 4), 2, init=WRONG)
