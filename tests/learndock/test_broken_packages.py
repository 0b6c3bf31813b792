"""A lab's broken learnware package is caught with a message it can act on.

Each kind of breakage is made from a good package (built with ``learndock package``'s
builder from a component registered for the test) and must be reported by
``verify_package``/``test_package`` -- and by ``learndock registry verify``/``test`` when
that command exists -- naming the file and the problem, expected versus got.
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from components import base
from components.base import Component, Declaration
from learndock.validation import as_float_tensor, check_nonempty
from specs.semantic import SemanticSpec, TensorSchema

package = pytest.importorskip("specs.package")


def gain(x: torch.Tensor, *, factor: float = 2.0) -> torch.Tensor:
    """Multiply a light curve by a factor.

    Raises
    ------
    ValueError
        If ``x`` is empty.
    """
    x = as_float_tensor(x, "x")
    check_nonempty(x, "x")
    return x * factor


class Gain(Component):
    name = "test.kit.gain"
    function = staticmethod(gain)
    differentiable = True

    def __init__(self, *, factor: float = 2.0) -> None:
        super().__init__(factor=factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gain(x, **self.config())


DECL = Declaration(
    spec=SemanticSpec(
        name="test.kit.gain.default",
        family="detection",
        task="anomaly-detection",
        modality="light-curve",
        scale="cosmic",
        inputs={"x": TensorSchema(axes="*t", dtype="any")},
        outputs={"output": TensorSchema(axes="*t", dtype="any")},
        differentiable=True,
        description="a gain, for testing broken packages",
    ),
    params={"factor": 3.0},
    reference_data=lambda seed: 1 + 1e-3 * np.random.default_rng(seed).normal(size=(4, 512)),
    example=lambda: {"x": np.linspace(0, 1, 32, dtype=np.float32)[None]},
)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory):
    """A good package of the test component, registered for the module's duration."""
    with pytest.MonkeyPatch.context() as mp:
        comps = dict(base.discover_components())
        comps[Gain.name] = Gain
        mp.setattr(base, "_components", comps)
        yield package.build_package(Gain, DECL, tmp_path_factory.mktemp("pkg") / "good.zip")


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _write(members: dict[str, bytes], path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _manifest(m: dict[str, bytes]) -> dict:
    return yaml.safe_load(m["learnware.yaml"])


def _rehash(m: dict[str, bytes], manifest: dict) -> None:
    manifest["files"] = {
        k: package.sha256(v) for k, v in sorted(m.items()) if k != "learnware.yaml"
    }
    m["learnware.yaml"] = yaml.safe_dump(manifest, sort_keys=False).encode()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def tampered(m: dict[str, bytes]) -> None:
    m["example/input.npz"] = _npz(x=np.ones((1, 32), np.float32))  # hash no longer matches


def missing_expected(m: dict[str, bytes]) -> None:
    del m["example/expected.npz"]


def unsafe_path(m: dict[str, bytes]) -> None:
    m["../escape.txt"] = b"x"
    man = _manifest(m)
    man["files"]["../escape.txt"] = package.sha256(b"x")
    m["learnware.yaml"] = yaml.safe_dump(man, sort_keys=False).encode()


def unknown_component(m: dict[str, bytes]) -> None:
    man = _manifest(m)
    man["component"] = "otherlab.not_installed"
    _rehash(m, man)


def bad_spec(m: dict[str, bytes]) -> None:
    man = _manifest(m)
    man["spec"]["family"] = "segmentation"
    _rehash(m, man)


def pickled_example(m: dict[str, bytes]) -> None:
    m["example/input.npz"] = _npz(x=np.array([{"evil": 1}], dtype=object))
    _rehash(m, _manifest(m))


def wrong_expected(m: dict[str, bytes]) -> None:
    m["example/expected.npz"] = _npz(output=np.linspace(0, 1, 32, dtype=np.float32)[None] * 2.5)
    _rehash(m, _manifest(m))


def bad_params(m: dict[str, bytes]) -> None:
    man = _manifest(m)
    man["params"] = {"factor": 3.0, "gain_db": 6}
    _rehash(m, man)


# (breakage, caught by verify?, fragments the report must contain)
CASES: list[tuple[Callable[[dict[str, bytes]], None], bool, tuple[str, ...]]] = [
    (tampered, True, ("example/input.npz", "hash")),
    (missing_expected, True, ("example/expected.npz",)),
    (unsafe_path, True, ("../escape.txt",)),
    (bad_spec, True, ("spec.family", "'feedback', 'detection' or 'rules'")),
    (pickled_example, True, ("example/input.npz",)),
    (unknown_component, False, ("otherlab.not_installed",)),
    (wrong_expected, False, ("output",)),
    (bad_params, False, ("gain_db",)),
]


def test_good_package_verifies_and_reproduces(good: Path) -> None:
    assert package.verify_package(good) == []
    res = package.test_package(good)
    assert res.ok, res.problems


@pytest.mark.parametrize(
    ("breakage", "by_verify", "fragments"), CASES, ids=[c[0].__name__ for c in CASES]
)
def test_each_breakage_is_reported(
    good: Path, tmp_path: Path, breakage, by_verify: bool, fragments: tuple[str, ...]
) -> None:
    m = _members(good)
    breakage(m)
    bad = _write(m, tmp_path / "bad.zip")
    problems = package.verify_package(bad)
    result = package.test_package(bad)
    assert not result.ok
    report = "\n".join(map(str, result.problems))
    if by_verify:
        assert problems, "verify_package accepted a broken package"
        report = "\n".join(map(str, problems))
    for fragment in fragments:
        assert fragment in report, report
    if breakage is wrong_expected:
        assert "expected" in report.lower() and "got" in report.lower(), report


@pytest.mark.skipif(
    importlib.util.find_spec("pipelines.cli_registry") is None,
    reason="learndock registry CLI not available yet",
)
@pytest.mark.parametrize(
    ("breakage", "by_verify", "fragments"), CASES, ids=[c[0].__name__ for c in CASES]
)
def test_registry_cli_reports_each_breakage(
    good: Path, tmp_path: Path, breakage, by_verify: bool, fragments: tuple[str, ...]
) -> None:
    from typer.testing import CliRunner

    from pipelines.cli_registry import app

    m = _members(good)
    breakage(m)
    bad = _write(m, tmp_path / "bad.zip")
    runner = CliRunner()
    command = "verify" if by_verify else "test"
    res = runner.invoke(app, [command, str(bad)])
    assert res.exit_code != 0, res.output
    for fragment in fragments:
        assert fragment in res.output, res.output
