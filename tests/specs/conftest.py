"""Fixtures of the dock tests: toy components registered next to the discovered ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dock_toys import ToyAffine, ToyScale, ToySleep

import components.base as base
from components.base import Component


@pytest.fixture
def toy_components(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, type[Component]]]:
    """Register the toy components next to whatever is discovered."""
    comps = dict(base.discover_components())
    comps.update({c.name: c for c in (ToyScale, ToyAffine, ToySleep)})
    monkeypatch.setattr(base, "_components", comps)
    yield comps
