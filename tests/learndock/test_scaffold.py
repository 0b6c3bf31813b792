"""learndock.scaffold: names, files, and the generated package's shape."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from learndock.scaffold import create_plugin, plugin_names


@pytest.mark.parametrize(
    ("name", "pkg", "dist"),
    [
        ("lab-flares", "lab_flares", "lab-flares"),
        ("MyLab_Detector", "mylab_detector", "mylab-detector"),
        ("x1", "x1", "x1"),
    ],
)
def test_plugin_names(name: str, pkg: str, dist: str) -> None:
    n = plugin_names(name)
    assert (n.pkg, n.dist) == (pkg, dist)
    assert n.component == f"{pkg}.outliers" and n.learnware == f"{pkg}.outliers.default"


@pytest.mark.parametrize(
    "bad", ["", "1lab", "lab flares", "lab--x", "lab-", "lab.x", "import", "components", "torch"]
)
def test_bad_names_are_rejected_with_the_reason(bad: str) -> None:
    with pytest.raises(ValueError, match="NAME: "):
        plugin_names(bad)


def test_generated_tree(tmp_path: Path) -> None:
    root = create_plugin("lab-flares", tmp_path, task="flare-detection", author="Ada Lab")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "pyproject.toml",
        "src/hydra_plugins/lab_flares_searchpath/__init__.py",
        "src/lab_flares/__init__.py",
        "src/lab_flares/conf/__init__.py",
        "src/lab_flares/conf/detection/lab_flares_outliers.yaml",
        "src/lab_flares/outliers.py",
        "src/lab_flares/py.typed",
        "src/lab_flares/vocabulary.py",
        "tests/conftest.py",
        "tests/test_contract.py",
        "tests/test_hydra.py",
        "tests/test_outliers.py",
    ]
    assert not (root / "src" / "hydra_plugins" / "__init__.py").exists(), (
        "hydra_plugins must stay a namespace package"
    )
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "lab-flares"
    assert meta["project"]["entry-points"]["learndock.components"] == {"lab_flares": "lab_flares"}
    assert meta["project"]["entry-points"]["learndock.vocabulary"] == {
        "lab_flares": "lab_flares.vocabulary:VOCABULARY"
    }
    assert meta["tool"]["pytest"]["ini_options"]["learndock_package"] == "lab_flares"
    assert "Ada Lab" in (root / "src/lab_flares/outliers.py").read_text()
    for py in root.rglob("*.py"):
        ast.parse(py.read_text(), filename=str(py))
    vocab: dict = {}
    exec(
        compile((root / "src/lab_flares/vocabulary.py").read_text(), "vocabulary.py", "exec"), vocab
    )
    assert vocab["VOCABULARY"] == {"tasks": ["flare-detection"], "modalities": []}


def test_known_task_is_not_added_to_the_vocabulary(tmp_path: Path) -> None:
    root = create_plugin(
        "lab-a",
        tmp_path,
        task="anomaly-detection",
        family="rules",
        modality="tabular",
        scale="macro",
    )
    assert '"tasks": []' in (root / "src/lab_a/vocabulary.py").read_text()
    assert (root / "src/lab_a/conf/rules/lab_a_outliers.yaml").is_file()


@pytest.mark.skipif(
    shutil.which("ruff", path=str(Path(sys.executable).parent)) is None, reason="ruff not installed"
)
def test_generated_code_is_ruff_clean(tmp_path: Path) -> None:
    root = create_plugin("lab-flares", tmp_path)
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    for args in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        proc = subprocess.run([ruff, *args], cwd=root, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"family": "segmentation"}, ValueError, "family: expected one of"),
        ({"scale": "nano"}, ValueError, "scale: expected one of"),
        ({"task": "Flare Detection"}, ValueError, "task: expected lowercase words"),
        ({"author": 'A "quoted" lab'}, ValueError, "author: must not contain quotes"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        create_plugin("lab-x", tmp_path, **kwargs)


def test_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    root = create_plugin("lab-x", tmp_path)
    (root / "src/lab_x/outliers.py").write_text("# edited\n")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        create_plugin("lab-x", tmp_path)
    assert (root / "src/lab_x/outliers.py").read_text() == "# edited\n"
    create_plugin("lab-x", tmp_path, force=True)
    assert "def robust_outlier_score" in (root / "src/lab_x/outliers.py").read_text()
