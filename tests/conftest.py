"""Shared test configuration: threads, device selection, shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores: one torch thread per test process avoids oversubscription with BLAS.
torch.set_num_threads(int(os.environ.get("LEARNDOCK_TEST_THREADS", "2")))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="device for component tests: cpu, cuda or all")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="no CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(params=None)
def devices(request: pytest.FixtureRequest) -> list[torch.device]:
    opt = request.config.getoption("--device")
    if opt == "all":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [torch.device(opt)]


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    opt = request.config.getoption("--device")
    if opt == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda given but no CUDA device")
    return torch.device("cpu" if opt == "all" else opt)


def shared_data_dir() -> Path:
    return Path(
        os.environ.get(
            "LEARNDOCK_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
        )
    ).resolve()


@pytest.fixture
def shared_data() -> Path:
    """The shared real data sets (``LEARNDOCK_SHARED_DATA``, default ``../shared/data``)."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set LEARNDOCK_SHARED_DATA)")
    return root


@pytest.fixture
def registry_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh registry root; ``LEARNDOCK_REGISTRY`` points to it for the test."""
    root = tmp_path / "registry"
    monkeypatch.setenv("LEARNDOCK_REGISTRY", str(root))
    return root


@pytest.fixture(autouse=True)
def _fresh_hydra() -> None:
    """Hydra keeps a process-wide singleton: start every test without one, so that a
    test which composed configs cannot break a later `learndock run/solve` call."""
    try:
        from hydra.core.global_hydra import GlobalHydra
    except ImportError:  # pragma: no cover
        return
    GlobalHydra.instance().clear()
