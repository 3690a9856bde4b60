"""Audit (session 30) of the torch path: datasets given bad arguments.

* ``mni152_crops(..., directory=d)`` where ``d/targets.json`` is not a manifest it wrote (a
  JSON list, or no JSON at all) crashed with a bare ``AttributeError`` (``'list' object has
  no attribute 'get'``) or ``JSONDecodeError``, naming neither the file nor the directory.
"""

import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.nn import mni152_crops  # noqa: E402


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '"crops"'],
                         ids=["list", "not-json", "string"])
def test_a_targets_file_that_is_not_a_manifest_is_refused_by_name(tmp_path, content):
    path = tmp_path / "targets.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="targets.json.*not a manifest"):
        mni152_crops(1, 4, directory=tmp_path)
    assert path.read_text() == content  # the file is left as it was
