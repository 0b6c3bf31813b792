"""Learnware packages: build, read, verify (every rejection names the problem), test."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from dock_toys import ToyAffine, toy_declaration, toy_spec

from specs.checks import (
    Problem,
    SubmissionError,
    compare_outputs,
    run_with_timeout,
    safe_member_name,
)
from specs.package import (
    build_package,
    read_members,
    read_package,
    test_package,
    verify_package,
    write_members,
)


@pytest.fixture
def pkg_dir(tmp_path: Path, toy_components: dict) -> Path:
    return build_package("test.scale", toy_declaration("test.pkg"), tmp_path / "pkg", m=8)


def _codes(problems: list[Problem]) -> set[str]:
    return {p.code for p in problems}


def test_build_read_round_trip(pkg_dir: Path) -> None:
    assert sorted(p.relative_to(pkg_dir).as_posix() for p in pkg_dir.rglob("*") if p.is_file()) == [
        "example/expected.npz",
        "example/input.npz",
        "learnware.yaml",
        "rkme.safetensors",
    ]
    assert verify_package(pkg_dir) == []
    pkg = read_package(pkg_dir)
    assert (
        pkg.name == "test.pkg" and pkg.component == "test.scale" and pkg.params == {"factor": 2.0}
    )
    assert pkg.featurizer == "tabular/1" and pkg.rkme.featurizer == "tabular/1" and pkg.rkme.m == 8
    np.testing.assert_allclose(pkg.expected["output"], 2 * pkg.example_input["x"])
    rep = test_package(pkg_dir)
    assert rep.ok and rep.problems == []


def test_zip_is_deterministic(tmp_path: Path, toy_components: dict) -> None:
    a = build_package("test.scale", toy_declaration("test.zip"), tmp_path / "a.zip", m=4)
    b = build_package("test.scale", toy_declaration("test.zip"), tmp_path / "b.zip", m=4)
    assert a.read_bytes() == b.read_bytes()
    assert verify_package(a) == [] and test_package(a).ok


def test_spec_and_params_pair_with_data(tmp_path: Path, toy_components: dict) -> None:
    spec = toy_spec("test.pair")
    data = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(ValueError, match="data"):
        build_package("test.scale", (spec, {"factor": 1.5}), tmp_path / "x")
    p = build_package(
        "test.scale",
        (spec, {"factor": 1.5}),
        tmp_path / "p",
        data=data,
        example={"x": np.ones(3)},
        m=4,
    )
    assert read_package(p).rkme.d == 3


def test_weights_round_trip(tmp_path: Path, toy_components: dict) -> None:
    import torch

    from specs.package import load_component

    spec = toy_spec("test.affine.w")
    w = {"w": torch.tensor([1.0, 2.0, 3.0])}
    p = build_package(
        ToyAffine,
        (spec, {"n": 3}),
        tmp_path / "w",
        data=np.ones((10, 2)),
        example={"x": np.ones(3, dtype=np.float32)},
        weights=w,
        m=2,
    )
    pkg = read_package(p)
    assert "weights.safetensors" in pkg.manifest["files"]
    np.testing.assert_allclose(pkg.expected["output"], [1, 2, 3])
    assert torch.equal(load_component(pkg).w.detach(), w["w"])
    assert test_package(p).ok


def test_missing_file(pkg_dir: Path) -> None:
    (pkg_dir / "rkme.safetensors").unlink()
    probs = verify_package(pkg_dir)
    assert "missing-file" in _codes(probs)
    assert any("rkme.safetensors" in str(p) for p in probs)


def test_wrong_hash(pkg_dir: Path) -> None:
    p = pkg_dir / "example" / "expected.npz"
    p.write_bytes(p.read_bytes() + b"x")
    probs = verify_package(pkg_dir)
    assert _codes(probs) >= {"hash-mismatch"}
    assert "changed or corrupted" in str(probs)


def test_unlisted_and_symlink_members(pkg_dir: Path, tmp_path: Path) -> None:
    (pkg_dir / "evil.py").write_text("print('hi')")
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    os.symlink(outside, pkg_dir / "link.txt")
    probs = verify_package(pkg_dir)
    assert {"unexpected-file", "unsafe-path"} <= _codes(probs)
    assert any("symbolic link" in p.message for p in probs)


def _zip_with(
    tmp_path: Path, pkg_dir: Path, extra: dict[str, bytes], *, symlink: str | None = None
) -> Path:
    out = tmp_path / "bad.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for p in pkg_dir.rglob("*"):
            if p.is_file():
                zf.write(p, p.relative_to(pkg_dir).as_posix())
        for name, data in extra.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return out


@pytest.mark.parametrize("name", ["../escape.txt", "/abs/path.txt", "example/../../x"])
def test_zip_traversal_rejected(pkg_dir: Path, tmp_path: Path, name: str) -> None:
    z = _zip_with(tmp_path, pkg_dir, {name: b"x"})
    probs = verify_package(z)
    assert "unsafe-path" in _codes(probs)
    with pytest.raises(SubmissionError, match="unsafe-path"):
        read_package(z)


def test_zip_symlink_rejected(pkg_dir: Path, tmp_path: Path) -> None:
    z = _zip_with(tmp_path, pkg_dir, {}, symlink="example/link")
    assert any(p.code == "unsafe-path" and "symbolic link" in p.message for p in verify_package(z))


def test_oversize_member(pkg_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import specs.package as sp

    monkeypatch.setattr(sp, "MAX_MEMBER_BYTES", 64)
    assert "oversize" in _codes(verify_package(pkg_dir))


def _edit_manifest(pkg_dir: Path, fn) -> None:  # type: ignore[no-untyped-def]
    p = pkg_dir / "learnware.yaml"
    m = yaml.safe_load(p.read_text())
    fn(m)
    p.write_text(yaml.safe_dump(m))


def test_unknown_component(pkg_dir: Path) -> None:
    _edit_manifest(pkg_dir, lambda m: m.update(component="os.system"))
    probs = verify_package(pkg_dir)
    assert "unknown-component" in _codes(probs)
    assert "os.system" in str(probs) and "entry-point" in str(probs)


def test_bad_vocabulary(pkg_dir: Path) -> None:
    _edit_manifest(pkg_dir, lambda m: m["spec"].update(scale="galactic", family="magic"))
    probs = [p for p in verify_package(pkg_dir) if p.code == "bad-spec"]
    assert {p.where for p in probs} == {"learnware.yaml:spec.scale", "learnware.yaml:spec.family"}
    assert any("'micro'" in p.message for p in probs)


def test_bad_task_names_allowed_values(pkg_dir: Path) -> None:
    _edit_manifest(pkg_dir, lambda m: m["spec"].update(task="mind-reading"))
    (p,) = [p for p in verify_package(pkg_dir) if p.code == "bad-spec"]
    assert "spot-detection" in p.message and "mind-reading" in p.message


def test_example_does_not_reproduce(pkg_dir: Path) -> None:
    _edit_manifest(pkg_dir, lambda m: m["params"].update(factor=2.5))
    # params are not hashed files: verify passes, test fails naming expected vs got
    assert verify_package(pkg_dir) == []
    rep = test_package(pkg_dir)
    assert not rep.ok and rep.problems[0].code == "example-mismatch"
    assert "expected -2" in rep.problems[0].message and "got -2.5" in rep.problems[0].message


def test_example_timeout(tmp_path: Path, toy_components: dict) -> None:
    spec = toy_spec("test.sleep.pkg", differentiable=False)
    import components.base as base

    cls = base._components["test.sleep"]  # type: ignore[index]
    cls.seconds_default = 0.0
    p = build_package(
        cls,
        (spec, {"seconds": 0.0}),
        tmp_path / "s",
        data=np.ones((5, 2)),
        example={"x": np.ones(2)},
        m=2,
    )
    _edit_manifest(p, lambda m: m["params"].update(seconds=3.0))
    rep = test_package(p, timeout=0.2)
    assert not rep.ok and rep.problems[0].code == "example-timeout"


def test_pickle_refused(pkg_dir: Path) -> None:
    import hashlib

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("x.npy", buf.getvalue())
    (pkg_dir / "example" / "input.npz").write_bytes(bad.getvalue())
    _edit_manifest(
        pkg_dir,
        lambda m: m["files"].update(
            {"example/input.npz": hashlib.sha256(bad.getvalue()).hexdigest()}
        ),
    )
    probs = verify_package(pkg_dir)
    assert "bad-example" in _codes(probs) and "pickle" in str(probs)


def test_not_a_package(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("hello")
    assert _codes(verify_package(f)) == {"bad-package"}
    assert _codes(verify_package(tmp_path / "nope")) == {"missing-file"}
    assert "missing-file" in _codes(verify_package(tmp_path))  # empty directory: no manifest


def test_helpers() -> None:
    assert safe_member_name("a/b.npz") is None
    assert safe_member_name("C:/x") == "is an absolute path"
    probs = compare_outputs({"a": np.ones(3)}, {"a": np.ones(3), "b": np.ones(1)}, rtol=0, atol=0)
    assert probs and "b" in probs[0].message
    with pytest.raises(TimeoutError):
        run_with_timeout(lambda: __import__("time").sleep(1), 0.05)
    with pytest.raises(ZeroDivisionError):
        run_with_timeout(lambda: 1 / 0, 1)
    members, probs = read_members(Path("/nonexistent"))
    assert not members and probs
    with pytest.raises(FileExistsError):
        write_members({"a": b"1"}, Path(__file__).parent)


def test_process_isolation_runs_builtin_and_kills_runaway(tmp_path: Path) -> None:
    import multiprocessing

    from components.base import discover_learnwares

    decls = discover_learnwares()
    name = "detection.spots.fluorescence"
    if name not in decls:
        pytest.skip(f"{name} is not discovered")
    cls, decl = decls[name]
    p = build_package(cls, decl, tmp_path / "pkg", m=4)
    rep = test_package(p, timeout=120, isolation="process")
    assert rep.ok, rep.problems
    # a limit shorter than the interpreter's start: the child is killed, not abandoned
    rep = test_package(p, timeout=0.05, isolation="process")
    assert not rep.ok and rep.problems[0].code == "example-timeout"
    assert "killed" in rep.problems[0].message
    assert multiprocessing.active_children() == []


def test_isolation_and_timeout_validated(pkg_dir: Path) -> None:
    with pytest.raises(ValueError, match="isolation"):
        test_package(pkg_dir, isolation="container")
    with pytest.raises(ValueError, match="timeout"):
        test_package(pkg_dir, timeout=0, isolation="process")
