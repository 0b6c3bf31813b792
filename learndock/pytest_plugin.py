"""pytest plugin: run learndock's contract suite on a plug-in's components.

Enable it in the plug-in's ``tests/conftest.py``::

    pytest_plugins = ["learndock.pytest_plugin"]

name the package to test in ``pyproject.toml`` (or pass ``--learndock-package``)::

    [tool.pytest.ini_options]
    learndock_package = "my_plugin"

and write one test::

    def test_contract(learndock_case, learndock_check):
        learndock_check(learndock_case)

The plugin parametrises ``learndock_case`` over every learnware declaration whose
component lives in that package (test ids are the learnware names) and
``learndock_check`` over every check of :data:`learndock.testing.CHECKS` (ids are the
check names), so a failure reads ``test_contract[lab_flares.outliers.default-hydra_roundtrip]``.
``--learndock-device cuda`` runs the device check against CUDA (skipped when absent).

The plugin is *not* registered through the ``pytest11`` entry point, so that installing
learndock never changes other projects' test runs.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from learndock import testing

__all__ = ["learndock_device", "pytest_addoption", "pytest_configure", "pytest_generate_tests"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("learndock", "learndock contract suite")
    group.addoption(
        "--learndock-package",
        default=None,
        help="module prefix whose components the contract suite tests (default: ini learndock_package)",
    )
    group.addoption(
        "--learndock-device",
        default="cpu",
        help="device for the device-move check: cpu (default) or cuda",
    )
    parser.addini(
        "learndock_package", "module prefix whose components the contract suite tests", default=""
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "learndock_contract: a learndock contract-suite test")


def _package(config: pytest.Config) -> str | None:
    pkg = config.getoption("--learndock-package") or config.getini("learndock_package")
    return str(pkg) if pkg else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "learndock_case" in metafunc.fixturenames:
        pkg = _package(metafunc.config)
        cases = testing.contract_cases(package=pkg)
        if not cases:
            where = f"package {pkg!r}" if pkg else "any installed package"
            raise pytest.UsageError(
                f"learndock contract suite: no learnware declaration found in {where}. Is the plug-in "
                "installed (`pip install -e .`) and does its pyproject register the component under "
                '[project.entry-points."learndock.components"]?'
            )
        metafunc.parametrize("learndock_case", cases, ids=[str(c) for c in cases])
    if "learndock_check" in metafunc.fixturenames:
        device = metafunc.config.getoption("--learndock-device")
        checks = [
            functools.partial(testing.check_device, device=device)
            if c is testing.check_device
            else c
            for c in testing.CHECKS
        ]
        ids = [c.__name__.removeprefix("check_") for c in testing.CHECKS]
        metafunc.parametrize("learndock_check", checks, ids=ids)


@pytest.fixture
def learndock_device(request: pytest.FixtureRequest) -> Any:
    """The torch device chosen by ``--learndock-device`` (skips when CUDA is absent)."""
    import torch

    dev = torch.device(request.config.getoption("--learndock-device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--learndock-device cuda given but no CUDA device")
    return dev
