"""Toy components for the dock tests (the real families may not exist yet)."""

from __future__ import annotations

import numpy as np
import torch

from components.base import Component, Declaration
from specs.semantic import SemanticSpec, TensorSchema


def scale_fn(x: torch.Tensor, *, factor: float = 2.0) -> torch.Tensor:
    """Multiply by a constant (toy component for tests)."""
    if x.numel() == 0:
        raise ValueError("x: expected a non-empty tensor")
    return x * factor


class ToyScale(Component):
    name = "test.scale"
    function = staticmethod(scale_fn)
    differentiable = True

    def __init__(self, *, factor: float = 2.0) -> None:
        super().__init__(factor=factor)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scale_fn(x, factor=self.factor)

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        return [toy_declaration("test.scale.double", factor=2.0, center=0.0)]


class ToyAffine(Component):
    """A component with weights (for weights.safetensors round trips)."""

    name = "test.affine"
    differentiable = True

    def __init__(self, *, n: int = 3) -> None:
        super().__init__(n=n)
        self.w = torch.nn.Parameter(torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


class ToySleep(Component):
    """A component whose forward is slow (for the example time limit)."""

    name = "test.sleep"

    def __init__(self, *, seconds: float = 5.0) -> None:
        super().__init__(seconds=seconds)
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(self.seconds)
        return x


def toy_spec(name: str, **kw: object) -> SemanticSpec:
    base_kw: dict[str, object] = dict(
        name=name,
        version="1.0.0",
        family="detection",
        task="anomaly-detection",
        modality="tabular",
        scale="micro",
        inputs={"x": TensorSchema(axes="n")},
        outputs={"output": TensorSchema(axes="n")},
        differentiable=True,
        description="toy learnware for tests",
        tags=("toy",),
    )
    base_kw.update(kw)
    return SemanticSpec(**base_kw)  # type: ignore[arg-type]


def toy_declaration(
    name: str, *, factor: float = 2.0, center: float = 0.0, d: int = 4, **spec_kw: object
) -> Declaration:
    def reference_data(seed: int) -> np.ndarray:
        return np.random.default_rng(seed).normal(center, 1.0, size=(300, d))

    def example() -> dict[str, np.ndarray]:
        return {"x": np.linspace(-1.0, 1.0, 5, dtype=np.float32)}

    return Declaration(
        spec=toy_spec(name, **spec_kw),
        params={"factor": factor},
        reference_data=reference_data,
        example=example,
    )
