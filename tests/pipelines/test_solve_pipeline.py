"""solve composes with pipelines.pipeline.Pipeline: schema checks, automatic adapters,
Pipeline.refine attribution, and recall from task libraries written by the old embedding.

The planted learnwares here declare port schemas that differ *mechanically* between the
two roles (the 'pre' stage writes its output transposed and in millimetres, the 'main'
stage reads metres in item-major order): only with the pipeline's adapters (permute,
unit scale) do the compositions compute the right thing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import components.base as cb
from components.base import Component, Declaration
from pipelines import solve as S
from pipelines.pipeline import Pipeline
from specs.semantic import SemanticSpec, TensorSchema
from specs.tasks import LEGACY_METHOD, Embedding, TaskLibrary


def _spec(name: str, task: str, inputs: dict, outputs: dict) -> SemanticSpec:
    return SemanticSpec(
        name=name,
        family="feedback",
        task=task,
        modality="tabular",
        scale="micro",
        inputs=inputs,
        outputs=outputs,
        differentiable=True,
        description=f"test learnware {name}",
    )


def _ref(center: float):
    def gen(seed: int) -> np.ndarray:
        return (center + np.random.default_rng(seed).normal(size=(64, 4))).astype(np.float32)

    return gen


def _ex() -> dict[str, np.ndarray]:
    return {"x": np.ones((2, 4), np.float32)}


def mm_offset_fn(x: torch.Tensor, *, offset: float) -> torch.Tensor:
    return ((x - offset) * 1000.0).T


class MilliOffset(Component):
    """Subtract an offset; writes feature-major ('dn') in millimetres."""

    name = "test.mm_offset"
    function = staticmethod(mm_offset_fn)
    differentiable = True

    def __init__(self, *, offset: float = 0.0) -> None:
        super().__init__(offset=offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mm_offset_fn(x, offset=self._config["offset"])

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        ins = {"x": TensorSchema(axes="nd", units="m")}
        outs = {"output": TensorSchema(axes="dn", units="mm")}
        # the bad offset (3) looks most like the task data (mean 5): MMD ranks it first
        return [
            Declaration(
                _spec(f"test.mm-offset-{o}", "detrending", ins, outs),
                {"offset": float(o)},
                _ref(c),
                _ex,
            )
            for o, c in ((3, 5.0), (0, 2.0), (1, -4.0))
        ]


class MeterGain(Component):
    """Multiply by a trainable gain; reads item-major ('nd') metres."""

    name = "test.m_gain"
    differentiable = True

    def __init__(self, *, gain: float = 1.0) -> None:
        super().__init__(gain=gain)
        self.gain = nn.Parameter(torch.tensor(float(gain), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain.to(x.dtype)

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        ins = {"x": TensorSchema(axes="nd", units="m")}
        outs = {"output": TensorSchema(axes="nd", units="m")}
        return [
            Declaration(
                _spec(f"test.m-gain-{g}", "deconvolution", ins, outs),
                {"gain": float(g)},
                _ref(c),
                _ex,
            )
            for g, c in ((0.5, 5.0), (3.0, 4.0), (1.8, -4.0))
        ]


class Cube(Component):
    """A decoy whose input schema no mechanical adapter reaches (3 axes from 2)."""

    name = "test.cube"
    differentiable = True

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        return [
            Declaration(
                _spec(
                    "test.cube",
                    "deconvolution",
                    {"x": TensorSchema(axes="zyx")},
                    {"output": TensorSchema(axes="zyx")},
                ),
                {},
                _ref(5.0),
                _ex,
            )
        ]


@pytest.fixture
def dock(monkeypatch):
    comps = {c.name: c for c in (MilliOffset, MeterGain)}
    monkeypatch.setattr(cb, "_components", comps)
    monkeypatch.setitem(
        S.GOALS, "toy-units", (S.Role("pre", ("detrending",)), S.Role("main", ("deconvolution",)))
    )
    monkeypatch.setitem(S.METRICS, "toy-units", "snr")
    return comps


def _task(seed: int, **kw) -> S.Task:
    g = torch.Generator().manual_seed(seed)
    x = 5.0 + torch.randn(64, 4, generator=g, dtype=torch.float64)
    kw.setdefault("budget_s", 30.0)
    return S.Task(
        goal="toy-units",
        modality="tabular",
        scale="micro",
        data={"x": x},
        labels=2.0 * (x - 1.0),
        **kw,
    )


def test_composition_with_adapters_finds_the_planted_best(dock, tmp_path):
    res = S.solve(
        _task(0, steps=0), library=TaskLibrary(tmp_path), top_k=3, max_combos=9, modes=("direct",)
    )
    assert isinstance(res.pipeline, Pipeline)
    assert res.trace["result"]["stages"] == [["test.mm-offset-1"], ["test.m-gain-1.8"]]
    tried = res.trace["tried"]
    assert len(tried) == 9 and all(t["status"] == "ok" for t in tried)
    # every composition got the adapter: units mm -> m and axis order dn -> nd
    for t in tried:
        text = " ".join(t["adapters"])
        assert "units mm -> m" in text and "axis order" in text, t
    # decoys first (MMD ranking), the planted best is found by the quick score
    assert tried[0]["stages"] == {"pre": "test.mm-offset-3", "main": "test.m-gain-0.5"}
    # the adapter is a stage of the final pipeline, which computes gain * (x - offset)
    assert S.stage_roles(res.pipeline) == ["pre", "main"]
    assert any("__adapt_" in n for n in res.pipeline.stage_names())
    x = _task(3).data["x"]
    with torch.no_grad():
        torch.testing.assert_close(res.pipeline(x=x), 1.8 * (x - 1.0))
    # the remembered config rebuilds the same pipeline, adapters included
    again = S.build_pipeline(json.loads(json.dumps(res.config)))
    with torch.no_grad():
        torch.testing.assert_close(again(x=x), 1.8 * (x - 1.0))
    assert again.adapters and res.trace["result"]["adapters"]


def test_refinement_through_the_adapter_uses_pipeline_attribution(dock, tmp_path):
    res = S.solve(
        _task(0, steps=60),
        library=TaskLibrary(tmp_path),
        max_combos=9,
        modes=("direct",),
        lr=0.02,
        round_steps=30,
    )
    gain = res.config["stages"][1]["members"][0]["state"]["gain"]["values"][0]
    assert abs(gain - 2.0) < 0.05  # the gradient went through the unit/permute adapter
    ok = [r for r in res.trace["refine"] if r["status"] == "ok"]
    assert ok and ok[0]["grad_norm"]["main"] > 0 and "pre" not in ok[0]["grad_norm"]


def test_non_mechanical_mismatch_fails_the_candidate_and_the_loop_goes_on(dock, tmp_path):
    dock[Cube.name] = Cube
    res = S.solve(
        _task(0, steps=0),
        library=TaskLibrary(tmp_path),
        top_k=4,
        max_combos=12,
        modes=("direct",),
        remember=False,
    )
    failed = [t for t in res.trace["tried"] if t["status"] == "failed"]
    assert failed and all(t["stages"]["main"] == "test.cube" for t in failed)
    assert "IncompatibleStagesError" in failed[0]["error"]
    assert "'pre'" in failed[0]["error"] and "'main'" in failed[0]["error"]
    assert res.trace["result"]["stages"] == [["test.mm-offset-1"], ["test.m-gain-1.8"]]


def test_compose_pipeline_wires_like_a_chain():
    class Detrend(nn.Module):
        def forward(self, time, flux):
            return flux - 0.1 * time

    class Search(nn.Module):
        def forward(self, time, flux):
            return {"period": (flux * time).sum(), "power": flux}

    t = torch.linspace(0, 1, 20, dtype=torch.float64)
    f = torch.ones(20, dtype=torch.float64)
    p = S.compose_pipeline([("detrend", Detrend()), ("search", Search())], {"time": t, "flux": f})
    # the running value (flux, then the detrended flux) and time by name
    assert p.plan[1].inputs == {"time": "input.time", "flux": "detrend"}
    out = p(time=t, flux=f)
    torch.testing.assert_close(out["period"], ((f - 0.1 * t) * t).sum())
    with pytest.raises(ValueError, match="stages"):
        S.compose_pipeline([], {"x": None})

    class NeedsMask(nn.Module):
        def forward(self, x, mask):
            return x * mask

    with pytest.raises(TypeError, match="mask"):
        S.compose_pipeline([("a", NeedsMask())], {"x": None, "time": None})


def _kmeans_embedding(x: torch.Tensor, featurizer: str, bw: float | None, m: int = 32) -> Embedding:
    """The reduced set of the first task library version: k-means centres weighted by
    their cluster fractions (median-distance bandwidth), as it was written to disk."""
    rows = x.double()
    rng = np.random.default_rng(0)
    c = rows[torch.from_numpy(rng.choice(rows.shape[0], m, replace=False))]
    for _ in range(8):
        lab = torch.cdist(rows, c).argmin(1)
        for j in range(m):
            if (lab == j).any():
                c[j] = rows[lab == j].mean(0)
    lab = torch.cdist(rows, c).argmin(1)
    w = torch.bincount(lab, minlength=m).double() / rows.shape[0]
    h = bw if bw is not None else float(torch.pdist(rows).median())
    keep = w > 0
    return Embedding(c[keep].numpy(), w[keep].numpy(), 1.0 / (2 * h**2), featurizer, LEGACY_METHOD)


def test_library_written_by_the_old_embedding_keeps_working(dock, tmp_path):
    lib = TaskLibrary(tmp_path)
    first = S.solve(_task(0, steps=60), library=lib, max_combos=9, modes=("direct",), lr=0.02)
    # rewrite the record as version 1 wrote it: a k-means reduced set, no method, version 1
    d = lib.path / first.solved.task_id
    rec = json.loads((d / "record.json").read_text())
    q = S.embed(_task(0).data, "tabular")
    assert q.method == "rkme-fit/1" and q.featurizer == first.solved.rkme.featurizer
    feats, fid, bw = S._features(_task(0).data, "tabular")
    old = _kmeans_embedding(torch.from_numpy(feats), fid, bw)
    from safetensors.numpy import save

    (d / "rkme.safetensors").write_bytes(save({"points": old.points, "weights": old.weights}))
    rec["record_version"] = 1
    rec["rkme"] = {"gamma": old.gamma, "featurizer": old.featurizer, "file": "rkme.safetensors"}
    (d / "record.json").write_text(json.dumps(rec))
    lib2 = TaskLibrary(tmp_path)
    assert lib2.get(first.solved.task_id).rkme.method == LEGACY_METHOD
    again = S.solve(
        _task(7, steps=20, target=first.score - 3), library=lib2, max_combos=9, modes=("direct",)
    )
    hit = again.trace["recall"][0]
    assert hit["task_id"] == first.solved.task_id and hit["close"], hit
    assert hit["embedding"] == LEGACY_METHOD
    assert again.trace["result"]["origin"] == f"recall:{first.solved.task_id}"


def test_task_embedding_is_the_docks_rkme():
    from specs.rkme import RKME

    x = {"x": 5.0 + torch.randn(64, 4, generator=torch.Generator().manual_seed(1))}
    e = S.embed(x, "tabular", m=16, seed=3)
    rows, fid, bw = S._features(x, "tabular")
    rk = RKME.fit(torch.from_numpy(rows), m=16, seed=3, bandwidth=bw, featurizer=fid)
    np.testing.assert_allclose(e.points, rk.z.numpy())
    np.testing.assert_allclose(e.weights, rk.beta.numpy())
    assert e.gamma == pytest.approx(1 / (2 * rk.bandwidth**2)) and e.method == "rkme-fit/1"
