"""A signal handled right after a temporary file is created (Ctrl-C, or SIGTERM turned
into an exception by the CLI) still removes it: the file was created before the ``try``
whose ``finally`` removes it, and CI once left a ``.tensorly-cross-<hex>.tmp`` behind.
The signal is injected at that exact point: the real ``os.open`` runs, then the
interrupt is raised, as a handler run between the two bytecodes would."""

import os

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross._atomic import write_atomically
from tensorly_cross.cli._common import check_output


@pytest.fixture
def interrupted_after_create(monkeypatch):
    real_open = os.open

    def open_then_interrupt(path, flags, *args):
        descriptor = real_open(path, flags, *args)
        if flags & os.O_CREAT and ".tensorly-cross-" in os.fspath(path):
            os.close(descriptor)
            raise KeyboardInterrupt
        return descriptor

    monkeypatch.setattr(os, "open", open_then_interrupt)


def _left(folder):
    return [path.name for path in folder.iterdir() if path.name.startswith(".tensorly-cross-")]


@pytest.mark.usefixtures("interrupted_after_create")
def test_an_atomic_write_interrupted_after_creating_its_file_leaves_none(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        write_atomically(str(tmp_path / "out.bin"), lambda stream: stream.write(b"x"))
    assert _left(tmp_path) == [] and not (tmp_path / "out.bin").exists()


@pytest.mark.usefixtures("interrupted_after_create")
def test_a_checkpoint_header_interrupted_after_creating_its_file_leaves_none(tmp_path):
    lazy = tlc.FunctionTensor(lambda idx: np.ones(len(idx)), (4, 4))
    with pytest.raises(KeyboardInterrupt):
        tlc.tt_cross(lazy, random_state=0, checkpoint=tmp_path / "run.ckpt")
    assert _left(tmp_path) == []


@pytest.mark.usefixtures("interrupted_after_create")
def test_the_clis_write_probe_interrupted_after_creating_its_file_leaves_none(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        check_output(str(tmp_path / "out.tt.npz"), force=False)
    assert _left(tmp_path) == []
