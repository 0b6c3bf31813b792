"""Helpers shared by the flagships: stage building, matching, refinement, figures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from components.base import discover_components

__all__ = ["available", "build", "match_points", "refine_pipeline", "stage_config"]


# Built-in components the flagships can construct directly (trusted code of this package)
# while their family has not registered them under the entry points yet.
_BUILTIN_FALLBACK = {
    "feedback.kalman": ("components.feedback.kalman", "KalmanSmoother"),
    "feedback.deconvolution": ("components.feedback.deconvolution", "Deconvolution"),
    "detection.spots": ("components.detection.spots", "SpotDetector"),
    "detection.rpca": ("components.detection.rpca", "RobustPCA"),
    "detection.transits": ("components.detection.transits", "TransitSearch"),
    "rules.sindy": ("components.rules.sindy", "SINDy"),
    "rules.symbolic": ("components.rules.symbolic", "SymbolicRegression"),
}


def _fallback_class(component: str) -> Any:
    import importlib

    mod_cls = _BUILTIN_FALLBACK.get(component)
    if mod_cls is None:
        return None
    try:
        return getattr(importlib.import_module(mod_cls[0]), mod_cls[1], None)
    except ImportError:
        return None


def available(component: str) -> bool:
    """Whether a component is registered, or is a built-in importable directly."""
    return component in discover_components() or _fallback_class(component) is not None


def build(node: Mapping[str, Any]) -> Any:
    """Instantiate a stage config through the allow-list; a built-in component that its
    family has not registered yet is constructed directly from its module."""
    from components.base import ComponentNotFoundError, instantiate
    from pipelines.pipeline import _check_params

    params = {k: v for k, v in node.items() if not str(k).startswith("_")}
    try:
        _check_params(str(node.get("_target_")), params, "stage")
        return instantiate(node)
    except ComponentNotFoundError:
        cls = _fallback_class(str(node.get("_target_")))
        if cls is None:
            raise
        return cls(**{k: v for k, v in node.items() if not str(k).startswith("_")})


def stage_config(cfg: Mapping[str, Any], stage: str, **overrides: Any) -> dict[str, Any] | None:
    """The config of ``pipeline.stages.<stage>`` with overrides; None when the stage is
    switched off (``null``) or its component is not installed."""
    stages = (cfg.get("pipeline") or {}).get("stages") or {}
    node = stages.get(stage)
    if node is None:
        return None
    node = dict(node)
    target = node.get("_target_")
    if target is not None and not available(str(target)):
        return None
    node.update(overrides)
    return node


def match_points(
    pred: np.ndarray, true: np.ndarray, radius: float
) -> tuple[int, int, int, np.ndarray]:
    """Optimal one-to-one matching of points within ``radius`` (Hungarian assignment).

    Returns
    -------
    tp, fp, fn : int
    pairs : ndarray (tp, 2)
        Indices ``(pred, true)`` of the matched pairs.
    """
    from scipy.optimize import linear_sum_assignment

    pred = np.asarray(pred, dtype=float).reshape(-1, true.shape[-1] if true.size else 2)
    true = np.asarray(true, dtype=float).reshape(-1, pred.shape[-1])
    if len(pred) == 0 or len(true) == 0:
        return 0, len(pred), len(true), np.zeros((0, 2), dtype=int)
    d = np.linalg.norm(pred[:, None, :] - true[None, :, :], axis=-1)
    cost = np.where(d <= radius, d, 1e6)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] <= radius
    pairs = np.stack([r[ok], c[ok]], 1)
    tp = int(ok.sum())
    return tp, len(pred) - tp, len(true) - tp, pairs


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / max(2 * tp + fp + fn, 1)


def refine_pipeline(
    pipe: Any,
    inputs: Mapping[str, torch.Tensor],
    cfg: Mapping[str, Any],
    loss: Any = "self-supervised",
    target: Any = None,
) -> dict[str, Any] | None:
    """``Pipeline.refine`` with the run's ``refine`` settings; None when disabled."""
    rcfg = dict(cfg.get("refine") or {})
    if not rcfg.get("enabled"):
        return None
    res = pipe.refine(
        dict(inputs),
        loss,
        target=target,
        steps=int(rcfg.get("steps", 30)),
        lr=float(rcfg.get("lr", 0.05)),
        budget=rcfg.get("budget"),
        patience=int(rcfg.get("patience", 8)),
        optimizer=str(rcfg.get("optimizer", "adam")),
        stages=rcfg.get("stages"),
    )
    return res.to_dict()
