"""`learndock registry ...`: every command, --registry, --json, one-line failures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "specs"))

from dock_toys import ToyAffine, ToyScale, ToySleep, toy_declaration

import components.base as base
from pipelines.cli_registry import app
from specs.package import build_package

runner = CliRunner()


@pytest.fixture
def toys(monkeypatch: pytest.MonkeyPatch) -> None:
    comps = dict(base.discover_components())
    comps.update({c.name: c for c in (ToyScale, ToyAffine, ToySleep)})
    monkeypatch.setattr(base, "_components", comps)


@pytest.fixture
def pkgs(tmp_path: Path, toys: None) -> list[Path]:
    return [
        build_package(
            "test.scale",
            toy_declaration(f"test.cli.{i}", center=4.0 * i, factor=float(i + 1)),
            tmp_path / f"p{i}.zip",
            m=6,
        )
        for i in range(2)
    ]


def _ok(args: list[str]) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return r.stdout


def _fail(args: list[str]) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code != 0
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_full_cycle(tmp_path: Path, pkgs: list[Path]) -> None:
    reg = str(tmp_path / "reg")
    assert "0 learnwares" in _ok(["init", "--registry", reg])
    ids = [_ok(["submit", str(p), "--registry", reg]).strip() for p in pkgs]
    assert all(i.startswith("lw-") for i in ids)
    listed = json.loads(_ok(["list", "--registry", reg, "--json"]))
    assert [d["name"] for d in listed] == ["test.cli.0", "test.cli.1"]
    assert "test.cli.0" in _ok(["list", "--registry", reg])
    shown = json.loads(_ok(["show", ids[1], "--registry", reg, "--json"]))
    assert shown["params"] == {"factor": 2.0}
    assert "component: test.scale" in _ok(["show", "test.cli.1", "--registry", reg])
    data = tmp_path / "user.npy"
    np.save(data, np.random.default_rng(0).normal(4.0, 1.0, size=(200, 4)))
    res = json.loads(
        _ok(["search", "--registry", reg, "--data", str(data), "--modality", "tabular", "--json"])
    )
    assert res[0]["id"] == ids[1] and {"id", "name", "score", "mmd"} <= set(res[0])
    npz = tmp_path / "user.npz"
    np.savez(
        npz,
        x=np.concatenate(
            [
                np.random.default_rng(1).normal(0, 1, size=(150, 4)),
                np.random.default_rng(2).normal(4, 1, size=(150, 4)),
            ]
        ),
    )
    mix = json.loads(
        _ok(
            [
                "search",
                "--registry",
                reg,
                "--data",
                str(npz),
                "--modality",
                "tabular",
                "--mixture",
                "--top",
                "2",
                "--json",
            ]
        )
    )
    assert {m["id"] for m in mix} == set(ids) and abs(sum(m["weight"] for m in mix) - 1) < 1e-4
    assert "rank" in _ok(
        ["search", "--registry", reg, "--data", str(data), "--modality", "tabular"]
    )
    txt = json.loads(_ok(["search", "--registry", reg, "--text", "cli.0", "--json"]))
    assert txt[0]["name"] == "test.cli.0" and txt[0]["mmd"] is None
    out = tmp_path / "exported.zip"
    _ok(["export", ids[0], "--out", str(out), "--registry", reg])
    assert "ok" in _ok(["verify", str(out)])
    assert "ok" in _ok(["test", str(out)])
    assert _ok(["remove", ids[0], "--registry", reg]).strip() == ids[0]
    assert len(json.loads(_ok(["list", "--registry", reg, "--json"]))) == 1


def test_registry_from_env_and_group_option(
    tmp_path: Path, pkgs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEARNDOCK_REGISTRY", str(tmp_path / "envreg"))
    lid = _ok(["submit", str(pkgs[0])]).strip()
    assert (tmp_path / "envreg" / "index.sqlite").exists()
    assert (
        json.loads(_ok(["--registry", str(tmp_path / "envreg"), "list", "--json"]))[0]["id"] == lid
    )


def test_failures_are_one_line(tmp_path: Path, pkgs: list[Path]) -> None:
    reg = str(tmp_path / "reg")
    assert "no learnware" in _fail(["show", "nope", "--registry", reg])
    assert "no learnware" in _fail(["remove", "nope", "--registry", reg])
    assert "no learnware" in _fail(
        ["export", "nope", "--out", str(tmp_path / "x"), "--registry", reg]
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    assert "learnware.yaml" in _fail(["verify", str(bad)])
    assert "no learnware.yaml" in _fail(["submit", str(bad), "--registry", reg])
    assert "no such file" in _fail(
        ["search", "--data", str(tmp_path / "none.npy"), "--registry", reg]
    )
    (tmp_path / "x.tif").write_bytes(b"II*\0")
    _fail(["search", "--data", str(tmp_path / "x.tif"), "--registry", reg])
    assert "top" in _fail(["search", "--top", "0", "--registry", reg])


def test_seed_command(tmp_path: Path, toys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    decl = ToyScale.learnwares()[0]
    monkeypatch.setattr(base, "discover_learnwares", lambda: {decl.name: (ToyScale, decl)})
    reg = str(tmp_path / "r")
    assert "1 learnwares registered" in _ok(["seed", "--registry", reg])
    assert "1 learnwares registered" in _ok(["seed", "--registry", reg])  # idempotent
    assert json.loads(_ok(["list", "--registry", reg, "--json"]))[0]["name"] == decl.name
