"""Tests of pipelines.pipeline: schema checks, adapters, gradients, refine."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch
from torch import nn

import components.base as base
from components.base import Component
from pipelines.adapters import Adapter, IncompatibleStagesError, PortSchema, plan_adapter
from pipelines.pipeline import Pipeline


def _gain(x: torch.Tensor, *, gain: float = 1.0) -> torch.Tensor:
    return x * gain


class Gain(Component):
    """y = g * x with a learnable gain (tyx in, tyx out, seconds)."""

    name = "test.gain"
    differentiable = True
    input_schema: ClassVar[dict] = {"x": {"axes": "tyx", "units": "s"}}
    output_schema: ClassVar[dict] = {"output": {"axes": "tyx", "units": "s"}}

    def __init__(self, *, gain: float = 1.0) -> None:
        super().__init__(gain=gain)
        self.g = nn.Parameter(torch.tensor(float(gain), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.g.to(x.dtype)


class Offset(Component):
    name = "test.offset"
    differentiable = True
    input_schema: ClassVar[dict] = {"x": {"axes": "tyx", "units": "s"}}
    output_schema: ClassVar[dict] = {"output": {"axes": "tyx", "units": "s"}}

    def __init__(self, *, offset: float = 0.0) -> None:
        super().__init__(offset=offset)
        self.b = nn.Parameter(torch.tensor(float(offset), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b.to(x.dtype)

    def self_supervised_loss(self, inputs, output):  # pull the mean to 5
        return (output.mean() - 5.0) ** 2


class Clip(Component):
    """Non-differentiable rounding stage."""

    name = "test.clip"
    differentiable = False
    input_schema: ClassVar[dict] = {"x": {"axes": "tyx"}}
    output_schema: ClassVar[dict] = {"output": {"axes": "tyx"}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)


class FrameSum(Component):
    """Sums over y, x: tyx -> t (a light-curve-like series)."""

    name = "test.framesum"
    differentiable = True
    input_schema: ClassVar[dict] = {"x": {"axes": "tyx"}}
    output_schema: ClassVar[dict] = {"series": {"axes": "t", "units": "s"}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(-1, -2))


class Spatial(Component):
    """Wants zyx: incompatible with tyx (t is not z)."""

    name = "test.spatial"
    differentiable = True
    input_schema: ClassVar[dict] = {"volume": {"axes": "zyx"}}
    output_schema: ClassVar[dict] = {"output": {"axes": "zyx"}}
    calls = 0

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return volume


class Smooth(Component):
    """A per-image stage that accepts any leading batch axes (``*yx`` in and out)."""

    name = "test.smooth"
    differentiable = True
    input_schema: ClassVar[dict] = {"image": {"axes": "*yx"}}
    output_schema: ClassVar[dict] = {"output": {"axes": "*yx"}}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    comps = {c.name: c for c in (Gain, Offset, Clip, FrameSum, Spatial)}
    monkeypatch.setattr(base, "_components", comps)


def _movie(seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(6, 5, 4, generator=g, dtype=dtype)


def test_runs_and_wires_by_default() -> None:
    p = Pipeline({"a": Gain(gain=2.0), "b": Offset(offset=1.0)}, name="t")
    x = _movie()
    torch.testing.assert_close(p(x), 2 * x + 1)
    assert p.stage_names() == ["a", "b"]
    assert p.plan[1].inputs == {"x": "a"}
    assert "gradient=autograd" in p.describe()


def test_incompatible_stages_fail_before_running() -> None:
    Spatial.calls = 0
    with pytest.raises(IncompatibleStagesError) as err:
        Pipeline({"movie": Gain(), "volume": Spatial()})
    msg = str(err.value)
    assert "'movie'" in msg and "'volume'" in msg and "'tyx'" in msg and "'zyx'" in msg
    assert Spatial.calls == 0


def test_incompatible_units_fail() -> None:
    with pytest.raises(IncompatibleStagesError, match="units 's' cannot be converted to 'm'"):
        Pipeline(
            {"a": Gain(), "b": Offset()},
            schemas={"b": {"inputs": {"x": {"axes": "tyx", "units": "m"}}}},
        )


def test_float_to_int_is_not_mechanical() -> None:
    with pytest.raises(IncompatibleStagesError, match="floating -> integer"):
        Pipeline(
            {"a": Gain(), "b": Offset()},
            schemas={
                "a": {"outputs": {"output": {"axes": "tyx", "dtype": "float32"}}},
                "b": {"inputs": {"x": {"axes": "tyx", "dtype": "int32"}}},
            },
        )


def test_adapter_axis_order_and_units() -> None:
    p = Pipeline(
        {"a": Gain(gain=1.0), "b": Offset()},
        inputs={"x": {"axes": "tyx", "units": "s"}},
        schemas={"a": {"outputs": {"output": {"axes": "yxt", "units": "ms"}}}},
    )
    assert (
        len(p.adapters) == 1 and "axis order" in p.adapters[0] and "units ms -> s" in p.adapters[0]
    )
    assert p.stage_names() == ["a", "b__adapt_x", "b"]
    assert isinstance(p.stages["b__adapt_x"], Adapter)
    x = torch.rand(5, 4, 3, dtype=torch.float64)  # declared yxt by stage a
    out = p(x)
    torch.testing.assert_close(out, x.permute(2, 0, 1) / 1000)


def test_adapter_singleton_dtype_and_batch_axes() -> None:
    steps, why = plan_adapter(PortSchema("yx", dtype="uint16"), PortSchema("tyx", dtype="float32"))
    a = Adapter(steps, why)
    y = a(torch.arange(6, dtype=torch.int32).reshape(2, 3))
    assert y.shape == (1, 2, 3) and y.dtype == torch.float32 and y[0, 1, 2] == 5  # by value
    steps, why = plan_adapter(PortSchema("tyx"), PortSchema("yx"))
    with pytest.raises(ValueError, match="length 1"):
        Adapter(steps, why)(torch.zeros(2, 3, 3))
    assert Adapter(steps, why)(torch.zeros(1, 3, 3)).shape == (3, 3)
    # '*' accepts extra leading axes; float dtypes are one family (no cast)
    assert plan_adapter(
        PortSchema("ntyx", dtype="float64"), PortSchema("*yx", dtype="float32")
    ) == ([], [])
    with pytest.raises(IncompatibleStagesError):
        plan_adapter(PortSchema("t"), PortSchema("tmc"))


def test_adapter_resamples_time_base() -> None:
    p = Pipeline(
        {"a": FrameSum(), "b": nn.Identity()},
        inputs={"x": {"axes": "tyx"}},
        schemas={
            "a": {"outputs": {"series": {"axes": "t", "units": "s", "rate": 10.0}}},
            "b": {"inputs": {"input": {"axes": "t", "units": "s", "rate": 20.0}}},
        },
    )
    assert any("time base 10 -> 20" in a for a in p.adapters)
    t = torch.arange(11, dtype=torch.float64) / 10.0
    x = t[:, None, None].expand(11, 2, 2) / 4.0  # frame sums are t
    out = p(x)
    assert out.shape == (21,)
    torch.testing.assert_close(out, torch.arange(21, dtype=torch.float64) / 20.0)


def test_adapt_false_reports_instead() -> None:
    with pytest.raises(IncompatibleStagesError, match="adapt=False"):
        Pipeline(
            {"a": Gain(), "b": Offset()},
            schemas={"a": {"outputs": {"output": {"axes": "yxt", "units": "s"}}}},
            adapt=False,
        )


def test_gradients_reach_every_parameterised_stage() -> None:
    p = Pipeline(
        {"a": Gain(gain=1.5), "c": Clip(), "b": Offset()}, gradient={"c": "straight-through"}
    )
    x = _movie()
    p(x).pow(2).sum().backward()
    norms = p.stage_grad_norms()
    assert norms["a"] > 0 and norms["b"] > 0
    rows = {r["stage"]: r for r in p.gradient_path()}
    assert rows["c"]["gradient"] == "straight-through" and rows["a"]["receives_gradient"]


def test_non_differentiable_stage_detaches_by_default() -> None:
    p = Pipeline({"a": Gain(gain=1.5), "c": Clip(), "b": Offset()})
    p(_movie()).pow(2).sum().backward()
    assert p.stages["a"].g.grad is None
    rows = {r["stage"]: r for r in p.gradient_path()}
    assert rows["c"]["gradient"] == "detach" and not rows["a"]["receives_gradient"]
    assert rows["b"]["receives_gradient"]


def test_refine_supervised_improves_planted_fit() -> None:
    x = _movie(1)
    target = 3.0 * x + 0.5
    p = Pipeline({"a": Gain(gain=1.0), "b": Offset(offset=0.0)})
    res = p.refine(x, target=target, steps=200, lr=0.1, patience=30)
    assert res.best_loss < 1e-3 * res.initial_loss
    assert math.isclose(float(p.stages["a"].g.detach()), 3.0, rel_tol=0.05)
    assert set(res.attribution) == {"a", "b"} and all(v > 0 for v in res.attribution.values())
    assert len(res.grad_norms["a"]) == res.steps == len(res.history)


def test_refine_self_supervised_and_budget() -> None:
    p = Pipeline({"a": Gain(gain=1.0), "b": Offset(offset=0.0)})
    x = _movie(2)
    res = p.refine(x, steps=300, lr=0.1)
    assert res.best_loss < 1e-2 * res.initial_loss
    res2 = p.refine(x, steps=10_000, lr=1e-6, budget=0.2, patience=10_000)
    assert res2.stopped in {"budget", "patience"}


def test_refine_early_stopping_and_bad_args() -> None:
    p = Pipeline({"a": Gain(gain=1.0)})
    x = _movie(3)
    res = p.refine(x, lambda y, t: ((y - t) ** 2).mean(), target=x, steps=500, lr=1e-3, patience=5)
    assert res.stopped == "patience" and res.steps < 500
    with pytest.raises(ValueError, match="steps"):
        p.refine(x, target=x, steps=0)
    with pytest.raises(ValueError, match="lr"):
        p.refine(x, target=x, lr=-1.0)
    with pytest.raises(ValueError, match="self_supervised_loss"):
        p.refine(x)
    with pytest.raises(ValueError, match="no trainable parameters"):
        Pipeline({"c": Clip()}).refine(x, target=x)


def test_from_config_through_allow_list(registered: None) -> None:
    cfg = {
        "name": "cfg",
        "inputs": {"x": {"axes": "tyx", "units": "s"}},
        "stages": {
            "a": {"_target_": "test.gain", "gain": 2.0},
            "b": {"_target_": "test.offset", "offset": 1.0, "_inputs_": {"x": "a"}},
        },
    }
    p = Pipeline.from_config(cfg)
    x = _movie()
    torch.testing.assert_close(p(x=x), 2 * x + 1)
    p2 = Pipeline.from_config(p.config())
    torch.testing.assert_close(p2(x), p(x))
    with pytest.raises(base.ComponentNotFoundError):
        Pipeline.from_config({"stages": {"a": {"_target_": "os.system"}}})


def test_bad_wiring_and_inputs() -> None:
    with pytest.raises(ValueError, match="not produced before it"):
        Pipeline({"a": Gain(), "b": Offset()}, wiring={"b": {"x": "nothere"}})
    p = Pipeline({"a": Gain()})
    with pytest.raises(TypeError, match="missing pipeline inputs"):
        p()
    with pytest.raises(ValueError, match=r"duplicate|identifier"):
        Pipeline([("a", Gain()), ("a", Gain())])


def test_float32_preserved_and_device() -> None:
    p = Pipeline({"a": Gain(gain=2.0)}, device="cpu")
    assert p(_movie(dtype=torch.float32)).dtype == torch.float32
    assert p.device.type == "cpu"


class Positive(Component):
    """Raises when its parameter leaves (0, inf), like a temperature."""

    name = "test.positive"
    differentiable = True

    def __init__(self, *, scale: float = 1.0) -> None:
        super().__init__(scale=scale)
        self.s = nn.Parameter(torch.tensor(float(scale), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(self.s.detach()) <= 0:
            raise ValueError(f"scale: expected a positive number, got {float(self.s.detach())}")
        return x * self.s.to(x.dtype)


def test_refine_stops_cleanly_when_parameters_leave_their_domain() -> None:
    p = Pipeline({"a": Positive(scale=1.0)})
    x = _movie(4)
    res = p.refine(x, target=-x, steps=100, lr=0.5, patience=100)
    assert res.stopped.startswith("invalid") and "scale" in res.stopped
    assert float(p.stages["a"].s.detach()) > 0  # best valid parameters restored
    p(x)


@pytest.mark.gpu
def test_cuda_matches_cpu_and_refines() -> None:
    x = _movie(5)
    cpu = Pipeline({"a": Gain(gain=2.0), "b": Offset(offset=1.0)})
    gpu = Pipeline({"a": Gain(gain=2.0), "b": Offset(offset=1.0)}, device="cuda")
    assert gpu.device.type == "cuda"
    out = gpu(x)  # inputs follow the pipeline's device
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), cpu(x))
    res = gpu.refine(x.cuda(), target=(3 * x + 0.5).cuda(), steps=100, lr=0.1)
    assert res.best_loss < 0.1 * res.initial_loss


def test_stage_from_builtin_learnware_by_name(registry_root: object) -> None:
    from components.base import discover_learnwares

    if "feedback.kalman.gait" not in discover_learnwares():
        pytest.skip("learnware feedback.kalman.gait not declared yet")
    p = Pipeline.from_config({"stages": {"smooth": {"_learnware_": "feedback.kalman.gait"}}})
    assert p.plan[0].source == "feedback.kalman.gait"
    g = torch.Generator().manual_seed(0)
    pos = torch.cumsum(torch.randn(50, 2, 3, generator=g, dtype=torch.float64), 0)
    pos[10:15, 1] = float("nan")
    out = p(pos)
    assert out.positions.shape == pos.shape and torch.isfinite(out.positions).all()
    with pytest.raises(ValueError, match="not a built-in declaration"):  # nor in the registry
        Pipeline.from_config({"stages": {"x": {"_learnware_": "no.such.learnware"}}})


def test_typo_in_stage_params_lists_valid_parameters(registered: None) -> None:
    with pytest.raises(
        TypeError, match=r"unknown parameter\(s\) \['gian'\] .*valid parameters are \['gain'\]"
    ):
        Pipeline.from_config({"stages": {"a": {"_target_": "test.gain", "gian": 2.0}}})


def test_batched_stage_keeps_the_leading_axes_it_was_given() -> None:
    """A ``*yx`` stage fed a ``tyx`` movie outputs ``tyx``: the next ``tyx`` stage gets no
    adapter (before, the output was taken as ``yx`` and a singleton ``t`` was added)."""
    p = Pipeline(
        {"smooth": Smooth(), "gain": Gain()}, inputs={"movie": {"axes": "tyx", "units": "s"}}
    )
    assert p.adapters == []
    assert p.plan[0].out_schema["output"].axes == "tyx"
    assert p(movie=_movie()).shape == (6, 5, 4)
    # without a concrete source the output keeps its batched schema
    q = Pipeline({"smooth": Smooth()}, inputs={"image": {"axes": "*yx"}})
    assert q.plan[0].out_schema["output"].axes == "*yx"
