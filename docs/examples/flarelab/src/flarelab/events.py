"""Flare events (start, peak, stop) from a per-sample flare score."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["flare_events"]


def flare_events(
    score: torch.Tensor | np.ndarray, *, min_score: float = 0.5
) -> list[tuple[int, int, int]]:
    """Contiguous runs of ``score > min_score`` in one light curve.

    Parameters
    ----------
    score : array_like, shape (t,)
        Flare score of :func:`flarelab.detect_flares`.
    min_score : float
        Decision level in (0, 1).

    Returns
    -------
    list of (start, peak, stop)
        Sample indices, ``stop`` exclusive; ``peak`` is the highest-scoring sample.

    Raises
    ------
    ValueError
        If ``score`` is not 1-D or ``min_score`` is not in (0, 1).

    Examples
    --------
    >>> flare_events(np.array([0, 0.9, 1.0, 0.7, 0, 0, 0.8]))
    [(1, 2, 4), (6, 6, 7)]
    """
    s = score.detach().cpu().numpy() if isinstance(score, torch.Tensor) else np.asarray(score)
    if s.ndim != 1:
        raise ValueError(f"score: expected a 1-D score of one light curve, got shape {s.shape}")
    if not 0 < min_score < 1:
        raise ValueError(f"min_score: expected a value in (0, 1), got {min_score!r}")
    above = np.concatenate([[False], s > min_score, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    return [
        (int(a), int(a + np.argmax(s[a:b])), int(b))
        for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]
