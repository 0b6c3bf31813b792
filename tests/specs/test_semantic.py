"""SemanticSpec: controlled vocabulary with actionable errors, plug-in extension, schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from specs.semantic import SemanticSpec, TensorSchema, json_schema, known_tasks, register_vocabulary


def _spec(**kw: object) -> SemanticSpec:
    base: dict[str, object] = dict(
        name="x.y",
        family="detection",
        task="spot-detection",
        modality="microscopy",
        scale="micro",
        inputs={"image": TensorSchema(axes="yx")},
    )
    base.update(kw)
    return SemanticSpec(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("family", "magic", "'feedback'"),
        ("scale", "galactic", "'micro'"),
        ("task", "mind-reading", "spot-detection"),
        ("modality", "telepathy", "microscopy"),
        ("version", "one", "semantic version"),
        ("name", "Bad Name", "lowercase"),
        ("devices", ("cuda",), "'cpu'"),
    ],
)
def test_vocabulary_errors_name_allowed_values(field: str, value: object, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        _spec(**{field: value})


def test_round_trip_and_text() -> None:
    s = _spec(tags=("fluorescence",), description="LoG spots")
    assert SemanticSpec.from_dict(s.to_dict()) == s
    assert "fluorescence" in s.text() and "log spots" in s.text()
    with pytest.raises(ValueError, match="schema_version"):
        SemanticSpec.from_dict({**s.to_dict(), "schema_version": 99})


def test_plugin_vocabulary() -> None:
    register_vocabulary(tasks=["flare-detection"])
    assert "flare-detection" in known_tasks()
    assert _spec(task="flare-detection").task == "flare-detection"
    with pytest.raises(ValueError, match="lowercase"):
        register_vocabulary(tasks=["Not Valid"])


def test_schema_exported_to_docs() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "reference" / "semantic-spec.schema.json"
    assert json.loads(doc.read_text()) == json_schema()
