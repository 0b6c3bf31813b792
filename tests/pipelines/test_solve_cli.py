"""The configuration plumbing that `learndock solve` shares with `learndock run`
(pipelines._cli_common): key errors that list the valid keys, provenance, JSON, user
errors as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines import _cli_common as C


def test_mistyped_solve_key_lists_the_valid_keys():
    from pipelines.cli_solve import compose_solve_config

    with pytest.raises(C.ConfigKeyError, match=r"solve\.budgt.*budget_s"):
        compose_solve_config(["task=find-transits", "solve.budgt=3"])
    with pytest.raises(C.ConfigKeyError, match=r"task\.gaol.*'goal'"):
        compose_solve_config(["task.gaol=reconstruct"])
    # composing again after an error, and a run config in between, both still work
    from pipelines.cli_run import compose_config

    assert compose_config(["experiment=gait-dynamics"]).pipeline.name == "gait-dynamics"
    assert compose_solve_config(["task=find-transits"]).task.goal == "find-transits"


def test_provenance_and_json(tmp_path):
    prov = C.provenance(
        "learndock_solve",
        started="2026-01-01T00:00:00+00:00",
        seconds=1.23456,
        output_dir=tmp_path,
        overrides=["task=x"],
        config={"seed": 0},
        threads=2,
        seed=0,
        task_id="t-1",
    )
    assert prov["learndock_solve"]["seconds"] == 1.235 and prov["task_id"] == "t-1"
    assert {"versions", "git_commit", "platform", "threads", "seed"} <= set(prov)
    p = C.write_json(
        tmp_path / "p.json", {"a": np.float32(1.5), "b": float("inf"), "c": np.ones(3)}
    )
    assert json.loads(p.read_text()) == {"a": 1.5, "b": None, "c": [1.0, 1.0, 1.0]}


def test_user_errors_become_one_line(capsys, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")

    def bad():
        raise ValueError("task.goal: give a goal")

    with pytest.raises(SystemExit) as info:
        C.report_user_errors("learndock solve", bad)
    assert info.value.code == 1
    assert capsys.readouterr().err.strip() == "learndock solve: error: task.goal: give a goal"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match="give a goal"):
        C.report_user_errors("learndock solve", bad)
