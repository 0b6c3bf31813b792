"""The dock: specifications, learnware packages, the spec registry and the task library.

Public names are imported lazily (``from specs import Registry`` loads only what it needs),
so that ``components.base`` -> ``specs.semantic`` stays a light import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SemanticSpec": "specs.semantic",
    "TensorSchema": "specs.semantic",
    "register_vocabulary": "specs.semantic",
    "known_tasks": "specs.semantic",
    "known_modalities": "specs.semantic",
    "featurize": "specs.features",
    "register_featurizer": "specs.features",
    "get_featurizer": "specs.features",
    "known_featurizers": "specs.features",
    "RKME": "specs.rkme",
    "RKMEStack": "specs.rkme",
    "RFFEmbedding": "specs.rkme",
    "batched_mmd": "specs.rkme",
    "rank_rkmes": "specs.rkme",
    "mixture_weights": "specs.rkme",
    "greedy_mixture": "specs.rkme",
    "Problem": "specs.checks",
    "SubmissionError": "specs.checks",
    "LearnwarePackage": "specs.package",
    "PackageTest": "specs.package",
    "build_package": "specs.package",
    "read_package": "specs.package",
    "verify_package": "specs.package",
    "test_package": "specs.package",
    "Registry": "specs.registry",
    "SearchResult": "specs.registry",
    "LearnwareRecord": "specs.registry",
    "SpecIndex": "specs.registry",
    "semantic_filter": "specs.registry",
    "semantic_match": "specs.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'specs' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)


def __dir__() -> list[str]:
    return __all__
