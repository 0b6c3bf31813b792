"""Tests of pipelines.solve: recall, composition among decoys, swap, failures, budget.

Small Component subclasses are registered for the test by monkeypatching
``components.base._components``; they are "tabular" learnwares whose reference data
decides their RKME, so the MMD ranking can be planted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import components.base as cb
from components.base import Component, Declaration
from pipelines import solve as S
from specs.semantic import SemanticSpec, TensorSchema
from specs.tasks import TaskLibrary


def _spec(name: str, task: str, diff: bool = True) -> SemanticSpec:
    return SemanticSpec(
        name=name,
        family="feedback",
        task=task,
        modality="tabular",
        scale="micro",
        inputs={"x": TensorSchema(axes="nd")},
        outputs={"output": TensorSchema(axes="nd")},
        differentiable=diff,
        description=f"test learnware {name}",
    )


def _ref(center: float):
    def gen(seed: int) -> np.ndarray:
        return (center + np.random.default_rng(seed).normal(size=(64, 4))).astype(np.float32)

    return gen


def _ex() -> dict[str, np.ndarray]:
    return {"x": np.ones((2, 4), np.float32)}


def offset_fn(x: torch.Tensor, *, offset: float) -> torch.Tensor:
    return x - offset


class Offset(Component):
    """Subtract a fixed (not trainable) offset: the 'pre' stage."""

    name = "test.offset"
    function = staticmethod(offset_fn)
    differentiable = True

    def __init__(self, *, offset: float = 0.0) -> None:
        super().__init__(offset=offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return offset_fn(x, offset=self._config["offset"])

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        # reference data: the bad offset (3) looks most like the task data (mean 5)
        return [
            Declaration(_spec(f"test.offset-{o}", "detrending"), {"offset": float(o)}, _ref(c), _ex)
            for o, c in ((3, 5.0), (0, 2.0), (1, -4.0))
        ]


class Gain(Component):
    """Multiply by a trainable gain: the 'main' stage."""

    name = "test.gain"
    differentiable = True

    def __init__(self, *, gain: float = 1.0) -> None:
        super().__init__(gain=gain)
        self.gain = nn.Parameter(torch.tensor(float(gain), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain.to(x.dtype)

    def self_supervised_loss(self, inputs, output):
        """A label-free criterion for the test: the output's mean should be 8."""
        return (output.mean() - 8.0) ** 2

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        return [
            Declaration(_spec(f"test.gain-{g}", "deconvolution"), {"gain": float(g)}, _ref(c), _ex)
            for g, c in ((0.5, 5.0), (3.0, 4.0), (1.8, -4.0))
        ]


class Crash(Component):
    """A candidate that always fails."""

    name = "test.crash"
    differentiable = True

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("planted crash")

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        return [Declaration(_spec("test.crash", "deconvolution"), {}, _ref(-30.0), _ex)]


class Scale(Component):
    """y = x * factor (fixed); used for the job-selection test."""

    name = "test.scale"
    differentiable = True

    def __init__(self, *, factor: float = 1.0) -> None:
        super().__init__(factor=factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._config["factor"]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        return [
            Declaration(
                _spec(f"test.scale-{f}", "trajectory-smoothing"), {"factor": float(f)}, _ref(c), _ex
            )
            for f, c in ((2.0, 0.0), (0.5, 10.0))
        ]


@pytest.fixture
def dock(monkeypatch):
    comps = {c.name: c for c in (Offset, Gain, Scale)}
    monkeypatch.setattr(cb, "_components", comps)
    monkeypatch.setitem(
        S.GOALS, "toy", (S.Role("pre", ("detrending",)), S.Role("main", ("deconvolution",)))
    )
    monkeypatch.setitem(S.METRICS, "toy", "snr")
    monkeypatch.setitem(S.GOALS, "toy-route", (S.Role("main", ("trajectory-smoothing",)),))
    monkeypatch.setitem(S.METRICS, "toy-route", "snr")
    return comps


def _toy_task(seed: int, **kw) -> S.Task:
    g = torch.Generator().manual_seed(seed)
    x = 5.0 + torch.randn(64, 4, generator=g, dtype=torch.float64)
    truth = 2.0 * (x - 1.0)
    kw.setdefault("budget_s", 30.0)
    return S.Task(goal="toy", modality="tabular", scale="micro", data={"x": x}, labels=truth, **kw)


def _stages(res: S.SolveResult) -> list[list[str]]:
    return res.trace["result"]["stages"]


def test_composition_finds_planted_best_among_decoys(dock, tmp_path):
    res = S.solve(
        _toy_task(0, steps=0),
        library=TaskLibrary(tmp_path),
        top_k=3,
        max_combos=9,
        modes=("direct",),
    )
    names = _stages(res)
    # best: offset 1 (MMD-ranked last) and the gain closest to 2 (1.8, also ranked last)
    assert names == [["test.offset-1"], ["test.gain-1.8"]]
    assert len(res.trace["tried"]) == 9 and all(t["status"] == "ok" for t in res.trace["tried"])
    # the MMD ranking put the decoys first: the first tried combination is the bad one
    assert res.trace["tried"][0]["stages"] == {"pre": "test.offset-3", "main": "test.gain-0.5"}


def test_refine_tunes_parameters_to_the_labels(dock, tmp_path):
    res = S.solve(
        _toy_task(0, steps=200),
        library=TaskLibrary(tmp_path),
        max_combos=9,
        modes=("direct",),
        lr=0.02,
        round_steps=50,
    )
    gain = res.config["stages"][1]["members"][0]["state"]["gain"]["values"][0]
    assert abs(gain - 2.0) < 0.02
    assert res.score > 30  # dB; the untuned 1.8 gives ~20 dB
    assert any(r.get("accepted") for r in res.trace["refine"])


def test_swap_replaces_a_planted_bad_stage(dock, tmp_path):
    # only the top-MMD combination is scored: the bad offset 3; refinement cannot fix it
    res = S.solve(
        _toy_task(1, steps=300, target=25.0),
        library=TaskLibrary(tmp_path),
        top_k=3,
        max_combos=1,
        modes=("direct",),
        round_steps=20,
        max_swaps=4,
        lr=0.5,
    )
    swaps = res.trace["swaps"]
    assert swaps, res.trace
    assert any(
        s["stage"] == "pre" and s["from"] == ["test.offset-3"] and s["accepted"] for s in swaps
    )
    assert _stages(res)[0] != ["test.offset-3"]
    assert all("helps least" in s["reason"] or "ablation" in s["reason"] for s in swaps)


def test_recall_returns_remembered_pipeline_for_near_repeat(dock, tmp_path):
    lib = TaskLibrary(tmp_path)
    first = S.solve(
        _toy_task(0, steps=200),
        library=lib,
        max_combos=9,
        modes=("direct",),
        lr=0.02,
        round_steps=50,
    )
    assert first.solved is not None and len(lib) == 1
    lib2 = TaskLibrary(tmp_path)  # restart: found again from disk
    again = S.solve(
        _toy_task(7, steps=200, target=first.score - 3),
        library=lib2,
        max_combos=9,
        modes=("direct",),
    )
    rec = again.trace["recall"]
    assert rec and rec[0]["task_id"] == first.solved.task_id and rec[0]["close"]
    assert again.trace["result"]["origin"] == f"recall:{first.solved.task_id}"
    assert again.trace["tried"] == []  # the target was reached by the recalled pipeline
    gain = again.config["stages"][1]["members"][0]["state"]["gain"]["values"][0]
    assert abs(gain - 2.0) < 0.02  # the tuned parameter came back
    assert again.time_to_target is not None


def test_far_task_is_not_recalled(dock, tmp_path):
    lib = TaskLibrary(tmp_path)
    S.solve(_toy_task(0, steps=0), library=lib, modes=("direct",))
    g = torch.Generator().manual_seed(3)
    x = -50.0 + 10 * torch.randn(64, 4, generator=g, dtype=torch.float64)
    far = S.Task(
        goal="toy", modality="tabular", scale="micro", data={"x": x}, labels=2 * (x - 1), steps=0
    )
    res = S.solve(far, library=lib, modes=("direct",))
    assert res.trace["recall"] and not res.trace["recall"][0]["close"]
    assert res.trace["result"]["origin"] != "recall"


def test_crashing_candidate_is_marked_failed_and_loop_goes_on(dock, tmp_path):
    dock[Crash.name] = Crash
    res = S.solve(
        _toy_task(0, steps=0),
        library=TaskLibrary(tmp_path),
        top_k=4,
        max_combos=20,
        modes=("direct",),
        remember=False,
    )
    failed = [t for t in res.trace["tried"] if t["status"] == "failed"]
    assert failed and all(t["stages"]["main"] == "test.crash" for t in failed)
    assert "planted crash" in failed[0]["error"]
    assert _stages(res)[1] == ["test.gain-1.8"]
    assert res.solved is None


def test_unknown_role_names_role_and_lists_registered(dock, tmp_path, monkeypatch):
    monkeypatch.setitem(S.GOALS, "toy-missing", (S.Role("law", ("equation-discovery",)),))
    task = S.Task(goal="toy-missing", modality="tabular", scale="micro", data=torch.ones(8, 4))
    with pytest.raises(S.NoCandidateError, match=r"role 'law'.*test\.gain-0\.5"):
        S.solve(task, library=TaskLibrary(tmp_path))


def test_budget_too_small(dock, tmp_path):
    with pytest.raises(S.BudgetTooSmallError, match="budget_s"):
        S.solve(_toy_task(0, budget_s=1e-9), library=TaskLibrary(tmp_path))
    with pytest.raises(S.BudgetTooSmallError, match="budget_s"):
        _toy_task(0, budget_s=0)


def test_bad_task_inputs(dock):
    with pytest.raises(ValueError, match="goal"):
        S.Task(goal="nope", modality="tabular", scale="micro", data=torch.ones(3))
    with pytest.raises(ValueError, match="data"):
        S.Task(goal="toy", modality="tabular", scale="micro", data={})
    with pytest.raises(ValueError, match="steps"):
        S.Task(goal="toy", modality="tabular", scale="micro", data=torch.ones(3), steps=-1)
    with pytest.raises(ValueError, match="top_k"):
        S.solve(_toy_task(0), top_k=0)
    with pytest.raises(ValueError, match="modes"):
        S.solve(_toy_task(0), modes=("magic",))


def test_job_selection_routes_items_to_nearest_rkme(dock, tmp_path):
    g = torch.Generator().manual_seed(0)
    # items 0..3 look like learnware 'scale-2' (centre 0), items 4..7 like 'scale-0.5' (centre 10)
    x = torch.cat([torch.randn(4, 4, generator=g), 10 + torch.randn(4, 4, generator=g)]).double()
    truth = torch.cat([2 * x[:4], 0.5 * x[4:]])
    task = S.Task(
        goal="toy-route",
        modality="tabular",
        scale="micro",
        data={"x": x},
        labels=truth,
        items=True,
        quick_items=8,
        steps=0,
    )
    res = S.solve(
        task, library=TaskLibrary(tmp_path), top_k=2, modes=("direct", "ensemble", "select")
    )
    assert res.trace["result"]["mode"] == "select"
    sel = S.stage_modules(res.pipeline)[0]
    assert isinstance(sel, S.SelectStage)
    assert res.score > 100  # exact per item
    # the stored config rebuilds the same routed pipeline
    again = S.build_pipeline(res.config, modality="tabular")
    torch.testing.assert_close(again(x=x), truth)


def test_ensemble_averages_members():
    class Mul(nn.Module):
        def __init__(self, f):
            super().__init__()
            self.f = f

        def forward(self, x):
            return x * self.f

    ens = S.EnsembleStage([Mul(1.0), Mul(3.0)])
    pipe = S.compose_pipeline([("main", ens)], {"x": None})
    torch.testing.assert_close(pipe(x=torch.ones(3)), torch.full((3,), 2.0))
    with pytest.raises(ValueError, match="members"):
        S.EnsembleStage([Mul(1.0)])


def test_metrics():
    mask = torch.zeros(100)
    mask[[3, 50]] = 1
    perfect = mask * 5 + 0.01 * torch.arange(100)
    assert S.metric_score("detect-spots", perfect, mask) == pytest.approx(1.0)
    assert S.metric_score("find-transits", {"period": torch.tensor(3.0)}, {"period": 3.0}) == 1.0
    assert S.metric_score("find-transits", {"period": torch.tensor(3.3)}, {"period": 3.0}) == 0.0
    assert S.metric_score(
        "find-transits", {"period": torch.tensor(3.03)}, {"period": 3.0}
    ) == pytest.approx(0.8)
    t = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert S.metric_score("discover-law", t, t) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="labels"):
        S.metric_score("reconstruct", t, t[:10])


def test_trace_is_json_serialisable(dock, tmp_path):
    import json

    res = S.solve(
        _toy_task(0, steps=20), library=TaskLibrary(tmp_path), modes=("direct", "ensemble")
    )
    text = json.dumps(res.trace, allow_nan=True)
    assert "candidates" in json.loads(text)


# --------------------------------------------------------------------------------------
# `learndock solve` end to end with the real built-in learnwares, one task per scale
# --------------------------------------------------------------------------------------
def _needs(task: str, modality: str) -> None:
    from components.base import discover_learnwares

    if not any(
        d.spec.task == task and d.spec.modality == modality
        for _, d in discover_learnwares().values()
    ):
        pytest.skip(f"no built-in learnware for task {task!r} on {modality!r} yet")


def _cli(args: list[str]) -> None:
    from pipelines.cli import main

    main(["solve", *args])


def _spots_image(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 3, (64, 64))
    yy, xx = np.mgrid[:64, :64]
    mask = np.zeros((64, 64), np.float32)
    for y, x in rng.uniform(6, 58, (8, 2)):
        r2 = (yy - y) ** 2 + (xx - x) ** 2
        img += 40 * np.exp(-r2 / (2 * 1.5**2))
        mask[r2 <= 4] = 1
    return img.astype(np.uint16), mask


def test_cli_solve_micro_end_to_end_and_recall(tmp_path, registry_root, monkeypatch):
    import json

    _needs("spot-detection", "microscopy")
    from pipelines.io import write_zarr

    monkeypatch.setenv("LEARNDOCK_RUNS", str(tmp_path / "runs"))
    for seed, run in ((0, "a"), (1, "b")):
        img, mask = _spots_image(seed)
        write_zarr(img, tmp_path / f"cells{seed}.zarr", axes="yx")
        np.save(tmp_path / f"mask{seed}.npy", mask)
        _cli(
            [
                "task=detect-spots",
                "data=file",
                f"data.path={tmp_path / f'cells{seed}.zarr'}",
                f"labels.path={tmp_path / f'mask{seed}.npy'}",
                "solve=quick",
                "solve.steps=10",
                "task.target=0.9",
                f"hydra.run.dir={tmp_path / run}",
            ]
        )
        out = tmp_path / run
        for f in ("result.json", "solve.json", "provenance.json", "report.html", "outputs.zarr"):
            assert (out / f).exists(), f
        result = json.loads((out / "result.json").read_text())
        trace = json.loads((out / "solve.json").read_text())
        assert result["metrics"]["score"] >= 0.9
        assert trace["result"]["stages"][-1][0].startswith("detection.spots")
        if run == "b":  # the near-repeat starts from the remembered pipeline
            assert trace["recall"] and trace["recall"][0]["close"]
            assert result["origin"].startswith("recall:")
    from specs.tasks import TaskLibrary

    assert len(TaskLibrary(registry_root)) == 2  # both remembered, found after "restart"


def test_cli_solve_reports_missing_goal(tmp_path, registry_root):
    from pipelines.cli_solve import compose_solve_config, execute_solve

    cfg = compose_solve_config(["data=file", f"data.path={tmp_path}/x.zarr"])
    with pytest.raises(ValueError, match=r"task\.goal"):
        execute_solve(cfg, tmp_path / "run")


def test_task_file_is_merged_under_overrides(tmp_path):
    from pipelines.cli_solve import compose_solve_config

    f = tmp_path / "task.yaml"
    f.write_text(
        "task:\n  goal: find-transits\n  modality: light-curve\nlabels:\n  values: {period: 3.5}\nsolve:\n  budget_s: 7\n"
    )
    cfg = compose_solve_config([f"task_file={f}", "solve.steps=3"])
    assert cfg.task.goal == "find-transits" and cfg.labels["values"]["period"] == 3.5
    assert cfg.solve.budget_s == 7 and cfg.solve.steps == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("tsk: {goal: x}\n")
    with pytest.raises(ValueError, match="tsk"):
        compose_solve_config([f"task_file={bad}"])


@pytest.mark.slow
def test_registry_source_composes_from_a_seeded_registry(dock, tmp_path):
    from specs.registry import Registry

    reg = Registry(tmp_path / "reg")
    reg.seed(
        names=[n for n in cb.discover_learnwares() if n.startswith(("test.offset", "test.gain"))]
    )
    src = S.RegistrySource(reg)
    assert any("test.gain-1.8" in d for d in src.describe())
    res = S.solve(
        _toy_task(0, steps=0),
        library=TaskLibrary(tmp_path),
        source=src,
        max_combos=9,
        modes=("direct",),
    )
    assert _stages(res) == [["test.offset-1"], ["test.gain-1.8"]]
    assert all(t["status"] == "ok" for t in res.trace["tried"])


def test_cli_solve_cosmic_end_to_end(tmp_path, registry_root):
    import json

    _needs("transit-search", "light-curve")
    from pipelines.io import write_csv
    from sample_data import light_curves, transit_model

    data, _ = light_curves(seed=3, size=(1, 6.0), noise_ppm=300.0, kinds=("quiet",))
    t, f = np.asarray(data["time"]), np.asarray(data["flux"][0])
    ok = np.isfinite(f)
    f = f * transit_model(
        t, period=2.3, epoch=float(t[0]) + 0.7, depth=3e-3, duration=0.1, ingress=0.02
    )
    write_csv(tmp_path / "star.csv", t[ok], f[ok])
    _cli(
        [
            "task=find-transits",
            "data=file",
            f"data.path={tmp_path / 'star.csv'}",
            "labels.period=2.3",
            "task.target=0.9",
            "solve=quick",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    trace = json.loads((tmp_path / "run" / "solve.json").read_text())
    assert result["metrics"]["score"] >= 0.9, trace["tried"]
    assert trace["result"]["stages"][-1][0].startswith("detection.transits")


def test_cli_solve_macro_end_to_end(tmp_path, registry_root):
    import json

    _needs("trajectory-smoothing", "biomechanics")
    from pipelines.io import write_c3d
    from sample_data import gait_markers

    pts, truth = gait_markers(seed=2, size=120, noise_mm=4.0, gap_fraction=0.0)
    write_c3d(tmp_path / "walk.c3d", pts, rate=100.0, labels=truth["labels"])
    np.save(tmp_path / "clean.npy", np.asarray(truth["clean"], np.float32))
    _cli(
        [
            "task=reconstruct",
            "task.modality=biomechanics",
            "task.scale=macro",
            "data=file",
            f"data.path={tmp_path / 'walk.c3d'}",
            f"labels.path={tmp_path / 'clean.npy'}",
            "solve=quick",
            "solve.steps=5",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    trace = json.loads((tmp_path / "run" / "solve.json").read_text())
    noisy_snr = S.metric_score(
        "reconstruct", torch.from_numpy(pts), torch.from_numpy(np.asarray(truth["clean"]))
    )
    assert result["metrics"]["score"] > noisy_snr  # better than the raw markers
    assert trace["result"]["stages"][-1][0].startswith("feedback.kalman")


@pytest.mark.slow
def test_publish_tuned_stages_as_learnwares(dock, tmp_path):
    from pipelines.cli_solve import _publish
    from specs.registry import Registry

    task = _toy_task(0, steps=100)
    res = S.solve(
        task,
        library=TaskLibrary(tmp_path),
        max_combos=9,
        modes=("direct",),
        lr=0.05,
        round_steps=50,
    )
    ids = _publish(res, tmp_path / "reg", task)
    assert len(ids) == 2 and not any("not published" in i for i in ids), ids
    reg = Registry(tmp_path / "reg")
    names = sorted(reg.get(i).name for i in ids)
    assert names[0].startswith("test.gain-1.8.tuned-") and names[1].startswith(
        "test.offset-1.tuned-"
    )
    tuned = reg.load(next(i for i in ids if reg.get(i).name.startswith("test.gain")))
    assert abs(tuned.gain.item() - 2.0) < 0.05  # the tuned weight travels with the learnware


def test_without_labels_the_self_supervised_criteria_drive_scoring_and_refinement(dock, tmp_path):
    g = torch.Generator().manual_seed(5)
    x = 5.0 + torch.randn(64, 4, generator=g, dtype=torch.float64)
    task = S.Task(goal="toy", modality="tabular", scale="micro", data={"x": x}, steps=100)
    res = S.solve(
        task,
        library=TaskLibrary(tmp_path),
        max_combos=9,
        modes=("direct",),
        lr=0.05,
        round_steps=25,
    )
    tried = [t["score"] for t in res.trace["tried"]]
    assert all(v <= 0 for v in tried)  # score = - sum of the stages' self-supervised losses
    assert res.score > max(tried) and res.score > -1e-2  # refinement drove the loss to ~0
    with torch.no_grad():
        assert abs(float(res.pipeline(x=x).mean()) - 8.0) < 0.1


def test_polish_after_target_improves_the_memory_not_the_time_to_target(dock, tmp_path):
    task = _toy_task(0, steps=200, target=15.0)
    res = S.solve(
        task,
        library=TaskLibrary(tmp_path),
        max_combos=9,
        modes=("direct",),
        lr=0.02,
        round_steps=5,
        polish_steps=40,
    )
    assert res.time_to_target is not None
    polish = [r for r in res.trace["refine"] if r["origin"] == "polish"]
    assert len(polish) == 1 and polish[0]["steps"] > 0
    assert res.score >= 15.0
