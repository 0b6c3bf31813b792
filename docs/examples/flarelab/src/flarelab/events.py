"""Flare events (start, peak, stop) from a per-sample flare score, and their energies."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["equivalent_durations", "flare_events"]


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def flare_events(
    score: torch.Tensor | np.ndarray, *, min_score: float = 0.5, merge_gap: int = 0
) -> list[tuple[int, int, int]]:
    """Contiguous runs of ``score > min_score`` in one light curve.

    Parameters
    ----------
    score : array_like, shape (t,)
        Flare score of :func:`flarelab.detect_flares`.
    min_score : float
        Decision level in (0, 1).
    merge_gap : int
        Runs separated by at most this many samples are one event (a flare's decay
        dipping below the level for a moment is not a second flare).

    Returns
    -------
    list of (start, peak, stop)
        Sample indices, ``stop`` exclusive; ``peak`` is the highest-scoring sample.

    Raises
    ------
    ValueError
        If ``score`` is not 1-D, ``min_score`` is not in (0, 1) or ``merge_gap`` < 0.

    Examples
    --------
    >>> flare_events(np.array([0, 0.9, 1.0, 0.7, 0, 0, 0.8]))
    [(1, 2, 4), (6, 6, 7)]
    >>> flare_events(np.array([0, 0.9, 1.0, 0.7, 0, 0, 0.8]), merge_gap=2)
    [(1, 2, 7)]
    """
    s = _np(score)
    if s.ndim != 1:
        raise ValueError(f"score: expected a 1-D score of one light curve, got shape {s.shape}")
    if not 0 < min_score < 1:
        raise ValueError(f"min_score: expected a value in (0, 1), got {min_score!r}")
    if not isinstance(merge_gap, int | np.integer) or merge_gap < 0:
        raise ValueError(f"merge_gap: expected an integer >= 0, got {merge_gap!r}")
    above = np.concatenate([[False], s > min_score, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    runs: list[list[int]] = []
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if runs and a - runs[-1][1] <= merge_gap:
            runs[-1][1] = int(b)
        else:
            runs.append([int(a), int(b)])
    return [(a, int(a + np.argmax(s[a:b])), b) for a, b in runs]


def equivalent_durations(
    residual: torch.Tensor | np.ndarray,
    events: list[tuple[int, int, int]],
    *,
    cadence: float,
) -> np.ndarray:
    """Equivalent duration of each flare: the time the quiescent star needs to emit the
    flare's energy, :math:`ED = \\int (F - F_q) / F_q \\, dt`.

    Parameters
    ----------
    residual : array_like, shape (t,)
        Detrended relative flux ``flux / trend - 1`` (``FlareResult.residual``).
    events : list of (start, peak, stop)
        From :func:`flare_events`.
    cadence : float
        Sampling interval, e.g. in seconds (the result is in the same unit).

    Returns
    -------
    ndarray, shape (n_events,)
        Trapezoidal integral of the residual over each event.

    Raises
    ------
    ValueError
        If ``residual`` is not 1-D, ``cadence`` is not positive, or an event lies
        outside the light curve.

    References
    ----------
    .. [1] S. L. Hawley et al., "Kepler Flares. I. Active and Inactive M Dwarfs",
       ApJ 797 (2014) 121.

    Examples
    --------
    >>> r = np.array([0, 0, 0.02, 0.01, 0.0, 0])
    >>> equivalent_durations(r, [(2, 2, 4)], cadence=120.0).round(2)
    array([3.6])
    """
    r = _np(residual).astype(np.float64)
    if r.ndim != 1:
        raise ValueError(
            f"residual: expected a 1-D residual of one light curve, got shape {r.shape}"
        )
    if not cadence > 0:
        raise ValueError(f"cadence: expected a positive number, got {cadence!r}")
    out = np.empty(len(events))
    for i, (a, _, b) in enumerate(events):
        if not 0 <= a < b <= r.size:
            raise ValueError(f"events[{i}]: expected 0 <= start < stop <= {r.size}, got ({a}, {b})")
        seg = r[max(a - 1, 0) : min(b + 1, r.size)]  # include the rise and the tail sample
        out[i] = np.trapezoid(seg, dx=cadence)
    return out
