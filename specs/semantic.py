"""The semantic specification of a learnware and its controlled vocabulary.

A :class:`SemanticSpec` says *what* a learnware does (family, task, modality, scale),
*what it eats and returns* (named tensor schemas with axes, dtype and units) and who
made it.  The vocabulary of families and scales is closed; tasks and modalities form
an open set that plug-in packages extend with :func:`register_vocabulary` or through
the entry-point group ``learndock.vocabulary`` (an entry that resolves to a dict
``{"tasks": [...], "modalities": [...]}``).

The JSON Schema of the model is exported to ``docs/reference/semantic-spec.schema.json``
by ``python -m specs.semantic``.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "FAMILIES",
    "SCALES",
    "SCHEMA_VERSION",
    "SemanticSpec",
    "TensorSchema",
    "known_modalities",
    "known_tasks",
    "register_vocabulary",
]

SCHEMA_VERSION = 1

FAMILIES: tuple[str, ...] = ("feedback", "detection", "rules")
SCALES: tuple[str, ...] = ("micro", "macro", "cosmic")

_BUILTIN_TASKS: tuple[str, ...] = (
    "adaptive-sampling",
    "deconvolution",
    "trajectory-smoothing",
    "observation-scheduling",
    "spot-detection",
    "transit-search",
    "detrending",
    "background-separation",
    "anomaly-detection",
    "equation-discovery",
    "symbolic-regression",
    "conservation-law",
    "feature-extraction",
)
_BUILTIN_MODALITIES: tuple[str, ...] = ("microscopy", "biomechanics", "light-curve", "tabular")

_extra_tasks: set[str] = set()
_extra_modalities: set[str] = set()
_plugins_loaded = False

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
_DTYPES = (
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "bool",
    "any",
)


def _load_plugin_vocabulary() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in metadata.entry_points(group="learndock.vocabulary"):
        try:
            vocab = ep.load()
            if callable(vocab):
                vocab = vocab()
            register_vocabulary(
                tasks=vocab.get("tasks", ()), modalities=vocab.get("modalities", ())
            )
        except Exception:  # a broken plug-in must not break the dock
            continue


def register_vocabulary(*, tasks: Any = (), modalities: Any = ()) -> None:
    """Extend the open vocabulary of tasks and modalities.

    Parameters
    ----------
    tasks, modalities : iterable of str
        New lowercase, hyphenated names (e.g. ``"flare-detection"``).

    Examples
    --------
    >>> register_vocabulary(tasks=["flare-detection"])
    >>> "flare-detection" in known_tasks()
    True
    """
    for kind, values, store in (
        ("task", tasks, _extra_tasks),
        ("modality", modalities, _extra_modalities),
    ):
        for v in values:
            if not isinstance(v, str) or not _NAME_RE.match(v):
                raise ValueError(
                    f"register_vocabulary: {kind} names are lowercase words joined by '-', got {v!r}"
                )
            store.add(v)


def known_tasks() -> tuple[str, ...]:
    """All task names: built-in plus registered by plug-ins."""
    _load_plugin_vocabulary()
    return tuple(sorted(set(_BUILTIN_TASKS) | _extra_tasks))


def known_modalities() -> tuple[str, ...]:
    """All modality names: built-in plus registered by plug-ins."""
    _load_plugin_vocabulary()
    return tuple(sorted(set(_BUILTIN_MODALITIES) | _extra_modalities))


class TensorSchema(BaseModel):
    """Schema of one named input or output: axes, dtype and units.

    ``axes`` is a string of axis letters (``"tzyx"``, ``"tmc"`` for time x marker x xyz,
    ``"t"`` for a light curve, ``"n"`` for a table of rows, ``""`` for a scalar); ``"*"``
    as the first character means any number of leading batch axes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    axes: str = Field(description="axis letters, e.g. 'tzyx', 'tmc', 't'; leading '*' = batch")
    dtype: str = Field(default="float32", description="element dtype, or 'any' floating")
    units: str | None = Field(default=None, description="physical units (astropy string) or None")
    description: str = ""

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: str) -> str:
        body = v[1:] if v.startswith("*") else v
        if not re.fullmatch(r"[a-z]*", body) or len(set(body)) != len(body):
            raise ValueError(
                f"axes: expected distinct lowercase axis letters (optionally after '*'), got {v!r}"
            )
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in _DTYPES:
            raise ValueError(f"dtype: expected one of {list(_DTYPES)}, got {v!r}")
        return v


class SemanticSpec(BaseModel):
    """What a learnware is, in words the registry can filter on.

    Examples
    --------
    >>> spec = SemanticSpec(
    ...     name="detection.spots.fluorescence", version="1.0.0", family="detection",
    ...     task="spot-detection", modality="microscopy", scale="micro",
    ...     inputs={"image": TensorSchema(axes="yx")},
    ...     outputs={"score": TensorSchema(axes="yx")},
    ...     description="LoG matched filter for diffraction-limited spots")
    >>> spec.family
    'detection'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: ClassVar[int] = SCHEMA_VERSION

    name: str = Field(description="unique dotted name, e.g. 'detection.spots.fluorescence'")
    version: str = Field(default="1.0.0", description="version of this learnware (semver)")
    family: Literal["feedback", "detection", "rules"]
    task: str
    modality: str
    scale: Literal["micro", "macro", "cosmic"]
    inputs: dict[str, TensorSchema] = Field(default_factory=dict)
    outputs: dict[str, TensorSchema] = Field(default_factory=dict)
    differentiable: bool = False
    devices: tuple[str, ...] = ("cpu", "cuda")
    description: str = ""
    tags: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    license: str = "BSD-3-Clause"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v) or len(v) > 200:
            raise ValueError(
                f"name: expected lowercase letters, digits, '.', '-', '_' (<= 200 chars), got {v!r}"
            )
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.fullmatch(r"\d+\.\d+\.\d+([.\-+][0-9A-Za-z.\-]+)?", v):
            raise ValueError(f"version: expected a semantic version like '1.0.0', got {v!r}")
        return v

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        if v not in known_tasks():
            raise ValueError(
                f"task: expected one of {list(known_tasks())} (plug-ins add more with "
                f"specs.semantic.register_vocabulary), got {v!r}"
            )
        return v

    @field_validator("modality")
    @classmethod
    def _modality(cls, v: str) -> str:
        if v not in known_modalities():
            raise ValueError(
                f"modality: expected one of {list(known_modalities())} (plug-ins add more with "
                f"specs.semantic.register_vocabulary), got {v!r}"
            )
        return v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for d in v:
            if d not in ("cpu", "cuda", "mps"):
                raise ValueError(
                    f"devices: expected a subset of ['cpu', 'cuda', 'mps'], got {list(v)!r}"
                )
        return v

    @model_validator(mode="after")
    def _has_cpu(self) -> SemanticSpec:
        if "cpu" not in self.devices:
            raise ValueError(
                f"devices: every learnware must run on 'cpu', got {list(self.devices)!r}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (stable key order)."""
        d = self.model_dump(mode="json")
        d["schema_version"] = SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SemanticSpec:
        """Validate a dict (as read from ``learnware.yaml``)."""
        d = dict(d)
        sv = d.pop("schema_version", SCHEMA_VERSION)
        if sv != SCHEMA_VERSION:
            raise ValueError(f"schema_version: expected {SCHEMA_VERSION}, got {sv!r}")
        return cls.model_validate(d)

    def text(self) -> str:
        """All searchable words of the spec in one lowercase string."""
        parts = [
            self.name,
            self.family,
            self.task,
            self.modality,
            self.scale,
            self.description,
            *self.tags,
        ]
        return " ".join(parts).lower()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`SemanticSpec` (exported to the docs)."""
    return SemanticSpec.model_json_schema()


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(json_schema(), indent=2))
