"""One feedback loop protocol for every scale: estimate, propose, measure, repeat.

The feedback family closes the loop between an instrument and a model of what it
observes.  Each scale plugs its own pieces into the same four roles:

================  ==============================  ==========================  ============================
role              micro (adaptive scanning)       macro (motion capture)      cosmic (light curves)
================  ==============================  ==========================  ============================
``Instrument``    microscope / :class:`SimulatedImager`   marker stream        telescope / :class:`SimulatedPhotometer`
``Estimator``     sparse reconstruction           Kalman/RTS smoother         Gaussian-process light curve
``Belief``        image + per-pixel uncertainty   positions + std             posterior mean + std
``Policy``        uncertainty-guided pixels       (re-measure gaps)           next observation times
================  ==============================  ==========================  ============================

:func:`run_loop` drives any combination until the measurement budget or the wall-clock
budget is spent, and never hangs: each round must either consume budget or the loop
stops.  Masks of missing data are first-class: every measurement comes with a boolean
mask (True = observed) and estimators never read values where the mask is False.

Adapter point for real acquisition software
-------------------------------------------
A real instrument is any object with ``acquire(proposal) -> (measurement, mask)``;
see ``docs/components/feedback.md`` for a pycro-manager / pymmcore-plus example that
moves the stage to the proposed coordinates, snaps, and returns the pixel values.
"""

from __future__ import annotations

import dataclasses
import math
import time as _time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "Belief",
    "Estimator",
    "ForwardModel",
    "Instrument",
    "LoopResult",
    "Policy",
    "Proposal",
    "SimulatedImager",
    "SimulatedPhotometer",
    "adjoint_mismatch",
    "run_loop",
]


@runtime_checkable
class Belief(Protocol):
    """What the estimator currently believes about the observed object."""

    def mean(self) -> torch.Tensor:
        """Best estimate of the object (same layout as the measured quantity)."""
        ...

    def uncertainty(self) -> torch.Tensor:
        """Standard deviation (or a monotone proxy of it) of :meth:`mean`, same shape."""
        ...


@runtime_checkable
class Estimator(Protocol):
    """Turns measurements into a :class:`Belief`."""

    def update(self, measurement: Any, mask: torch.Tensor) -> Belief:
        """Fold in ``measurement`` (values where ``mask`` is True) and return the belief."""
        ...


@dataclasses.dataclass
class Proposal:
    """What to measure next.

    Attributes
    ----------
    coords : Tensor
        ``(n, ndim)`` integer pixel/voxel coordinates (micro), or ``(n,)`` times (cosmic).
    gain : Tensor
        ``(n,)`` expected gain of each proposed measurement (the policy's score).
    settings : dict
        Instrument settings (exposure, filter, ...) that come with the proposal.
    """

    coords: torch.Tensor
    gain: torch.Tensor
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.coords.shape[0])


@runtime_checkable
class Policy(Protocol):
    """Chooses the next measurements from a belief."""

    def propose(
        self, belief: Belief, budget: int, constraints: Mapping[str, Any] | None = None
    ) -> Proposal:
        """At most ``budget`` measurements that maximise the expected gain."""
        ...


@runtime_checkable
class Instrument(Protocol):
    """Anything that can measure: a simulator or an adapter to acquisition software."""

    def acquire(self, proposal: Proposal) -> tuple[Any, torch.Tensor]:
        """Measure what ``proposal`` asks and return ``(measurement, mask)``."""
        ...


@runtime_checkable
class ForwardModel(Protocol):
    """A linear observation operator ``A`` with its adjoint ``A^T``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def adjoint(self, y: torch.Tensor) -> torch.Tensor: ...


def adjoint_mismatch(
    model: ForwardModel,
    shape: tuple[int, ...],
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> float:
    """Relative mismatch ``|<Ax, y> - <x, A^T y>| / (|Ax| |y|)`` on random vectors.

    A correct forward/adjoint pair gives a value at rounding level (about 1e-15 in float64).

    Examples
    --------
    >>> class Scale:
    ...     def forward(self, x): return 2 * x
    ...     def adjoint(self, y): return 2 * y
    >>> adjoint_mismatch(Scale(), (4, 4)) < 1e-12
    True
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    ax = model.forward(x)
    y = torch.randn(ax.shape, generator=gen, dtype=dtype)
    lhs = float((ax * y).sum())
    rhs = float((x * model.adjoint(y)).sum())
    return abs(lhs - rhs) / max(float(ax.norm() * y.norm()), 1e-300)


@dataclasses.dataclass
class LoopResult:
    """Outcome of :func:`run_loop`.

    Attributes
    ----------
    belief : Belief
        The final belief.
    spent : int
        Measurements taken (sum of proposal lengths).
    rounds : int
        Number of propose/acquire/update rounds.
    history : list of dict
        Per round: ``spent``, ``mean_uncertainty``, ``elapsed`` (s), ``gain`` (sum).
    stopped : str
        ``"budget"``, ``"wall_time"``, ``"no_progress"`` or ``"max_rounds"``.
    """

    belief: Belief
    spent: int
    rounds: int
    history: list[dict[str, float]]
    stopped: str


def run_loop(
    instrument: Instrument,
    estimator: Estimator,
    policy: Policy,
    budget: int,
    *,
    batch: int = 64,
    initial: Proposal | None = None,
    constraints: Mapping[str, Any] | None = None,
    wall_time: float | None = None,
    max_rounds: int = 10_000,
    callback: Callable[[int, Belief], None] | None = None,
) -> LoopResult:
    """Run the estimate -> propose -> acquire loop until a budget is spent.

    Parameters
    ----------
    instrument : Instrument
        ``acquire(proposal) -> (measurement, mask)``.
    estimator : Estimator
        ``update(measurement, mask) -> Belief``.
    policy : Policy
        ``propose(belief, n, constraints) -> Proposal``.
    budget : int
        Total number of measurements (including ``initial``).
    batch : int
        Measurements asked per round (the last round asks for what is left).
    initial : Proposal, optional
        A first, model-free scan (e.g. a low-discrepancy pattern).
    constraints : mapping, optional
        Passed to the policy unchanged (visibility windows, cadence, stage limits).
    wall_time : float, optional
        Seconds after which the loop stops at the end of the current round.
    max_rounds : int
        Hard cap on rounds.
    callback : callable, optional
        ``callback(round, belief)`` after each update (progress display, logging).

    Returns
    -------
    LoopResult

    Raises
    ------
    ValueError
        If ``budget`` or ``batch`` is not a positive integer, or the initial scan is
        larger than the budget.

    Notes
    -----
    The loop never hangs: a round whose proposal is empty ends the loop with
    ``stopped="no_progress"``, and ``wall_time`` is checked after every round.

    Examples
    --------
    >>> import torch
    >>> from components.feedback.adaptive_sampling import SparseEstimator, UncertaintyPolicy, initial_scan
    >>> truth = torch.rand(16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> first = Proposal(initial_scan(truth.shape, 20), torch.zeros(20))
    >>> res = run_loop(SimulatedImager(truth), SparseEstimator(truth.shape), UncertaintyPolicy(), 60, batch=20, initial=first)
    >>> res.spent, res.stopped
    (60, 'budget')
    """
    if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
        raise ValueError(f"budget: expected a positive integer, got {budget!r}")
    if not isinstance(batch, int) or batch <= 0:
        raise ValueError(f"batch: expected a positive integer, got {batch!r}")
    if initial is not None and len(initial) > budget:
        raise ValueError(
            f"budget: expected at least the initial scan size {len(initial)}, got {budget}"
        )
    t0 = _time.perf_counter()
    history: list[dict[str, float]] = []
    spent = 0
    belief: Belief | None = None
    if initial is not None and len(initial):
        meas, mask = instrument.acquire(initial)
        belief = estimator.update(meas, mask)
        spent += len(initial)
    rounds = 0
    stopped = "budget"
    while spent < budget:
        if rounds >= max_rounds:
            stopped = "max_rounds"
            break
        if wall_time is not None and _time.perf_counter() - t0 > wall_time:
            stopped = "wall_time"
            break
        if belief is None:
            raise ValueError(
                "initial: expected an initial scan (the policy needs a first belief), got None"
            )
        n = min(batch, budget - spent)
        prop = policy.propose(belief, n, constraints)
        if len(prop) == 0:
            stopped = "no_progress"
            break
        prop = Proposal(prop.coords[:n], prop.gain[:n], prop.settings)
        meas, mask = instrument.acquire(prop)
        belief = estimator.update(meas, mask)
        spent += len(prop)
        rounds += 1
        unc = belief.uncertainty()
        history.append(
            {
                "spent": float(spent),
                "mean_uncertainty": float(unc.mean()) if unc.numel() else math.nan,
                "elapsed": _time.perf_counter() - t0,
                "gain": float(prop.gain.sum()) if prop.gain.numel() else 0.0,
            }
        )
        if callback is not None:
            callback(rounds, belief)
    if belief is None:
        raise ValueError(
            "initial: expected an initial scan (the policy needs a first belief), got None"
        )
    return LoopResult(belief=belief, spent=spent, rounds=rounds, history=history, stopped=stopped)


class SimulatedImager:
    """A simulated point-scanning microscope: returns the (noisy) truth at proposed pixels.

    Parameters
    ----------
    truth : Tensor
        The object, ``(y, x)`` or ``(z, y, x)``.
    noise : float
        Standard deviation of additive Gaussian noise.
    photons : float, optional
        If given, Poisson noise with ``photons`` expected counts at value 1 (then scaled back).
    seed : int
        Seed of the instrument's own generator.

    Notes
    -----
    ``acquire`` returns ``(values, mask)`` as full-field tensors: ``values`` holds the
    measurements at the proposed pixels and zeros elsewhere; ``mask`` is True where
    measured in this call.
    """

    def __init__(
        self,
        truth: torch.Tensor,
        *,
        noise: float = 0.0,
        photons: float | None = None,
        seed: int = 0,
    ) -> None:
        if noise < 0:
            raise ValueError(f"noise: expected a non-negative standard deviation, got {noise!r}")
        self.truth = truth
        self.noise = float(noise)
        self.photons = photons
        self.gen = torch.Generator().manual_seed(seed)
        self.calls = 0

    def measure(self, coords: torch.Tensor) -> torch.Tensor:
        """Values at ``(n, ndim)`` integer coordinates."""
        idx = tuple(coords[:, i].long() for i in range(coords.shape[1]))
        v = self.truth[idx]
        if self.photons is not None:
            v = torch.poisson(v.clamp_min(0) * self.photons, generator=self.gen) / self.photons
        if self.noise > 0:
            v = v + self.noise * torch.randn(v.shape, generator=self.gen, dtype=v.dtype)
        return v

    def acquire(self, proposal: Proposal) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        coords = proposal.coords.long()
        vals = self.measure(coords)
        full = torch.zeros_like(self.truth)
        mask = torch.zeros(self.truth.shape, dtype=torch.bool, device=self.truth.device)
        idx = tuple(coords[:, i] for i in range(coords.shape[1]))
        full[idx] = vals
        mask[idx] = True
        return full, mask


class SimulatedPhotometer:
    """A simulated telescope: flux of a known light curve at the proposed times.

    Parameters
    ----------
    light_curve : callable
        ``f(t: Tensor) -> Tensor`` noiseless flux.
    flux_err : float
        Gaussian noise standard deviation per observation.
    seed : int
        Seed of the instrument's own generator.

    ``acquire`` returns ``({"time": t, "flux": f, "flux_err": e}, mask)`` with ``mask``
    all True (a cloud-out can be simulated by a ``weather`` probability).
    """

    def __init__(
        self,
        light_curve: Callable[[torch.Tensor], torch.Tensor],
        *,
        flux_err: float = 0.01,
        weather: float = 0.0,
        seed: int = 0,
    ) -> None:
        if flux_err < 0:
            raise ValueError(f"flux_err: expected a non-negative noise level, got {flux_err!r}")
        if not 0 <= weather < 1:
            raise ValueError(f"weather: expected a loss probability in [0, 1), got {weather!r}")
        self.light_curve = light_curve
        self.flux_err = float(flux_err)
        self.weather = float(weather)
        self.gen = torch.Generator().manual_seed(seed)

    def acquire(self, proposal: Proposal) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        t = proposal.coords.reshape(-1).to(torch.float64)
        f = self.light_curve(t)
        f = f + self.flux_err * torch.randn(f.shape, generator=self.gen, dtype=f.dtype)
        mask = torch.rand(t.shape, generator=self.gen, dtype=torch.float64) >= self.weather
        return {"time": t, "flux": f, "flux_err": torch.full_like(f, self.flux_err)}, mask
