"""pytest plugin: point TensorLy's own tensor_train_cross tests at tensorly-cross.

Used as ``pytest -p tests._tensorly_dropin --pyargs
tensorly.contrib.decomposition.tests.test_mps_decomposition_cross``.
"""

import tensorly_cross

_patched = []


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        module = item.module
        if hasattr(module, "tensor_train_cross"):
            module.tensor_train_cross = tensorly_cross.tensor_train_cross
            _patched.append(item.name)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"tensorly-cross drop-in patched into {len(_patched)} tests")
