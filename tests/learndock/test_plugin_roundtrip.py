"""Scaffold -> install -> test -> package -> submit -> search, in temporary directories.

``learndock new-plugin`` output is installed with ``pip install --target`` into a
temporary directory seen only by the subprocesses of this test (the shared environment
is never touched), its generated tests are run with the kit's pytest plugin, and the
example learnware goes through packaging, a temporary registry and search.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from learndock._plugin_env import PluginEnv, install_plugin
from learndock.scaffold import create_plugin


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PluginEnv]:
    work = tmp_path_factory.mktemp("scaffold")
    root = create_plugin(
        "lab-spikes", work / "gen", task="spike-detection", modality="light-curve", scale="cosmic"
    )
    return install_plugin(root, work)


def test_generated_plugin_passes_its_own_tests(scaffolded: tuple[Path, PluginEnv]) -> None:
    src, env = scaffolded
    proc = env.run(["python", "-m", "pytest", "-v", "-p", "no:cacheprovider"], cwd=src)
    assert "failed" not in proc.stdout
    assert "test_contract[lab_spikes.outliers.default-gradient] PASSED" in proc.stdout
    assert "test_config_group_composes_and_instantiates PASSED" in proc.stdout
    assert (
        "test_vocabulary_is_registered PASSED" in proc.stdout
    )  # the new task word 'spike-detection'


@pytest.mark.slow
def test_generated_plugin_contract_failure_is_reported(
    scaffolded: tuple[Path, PluginEnv], tmp_path: Path
) -> None:
    """Break the generated component (forward ignores a parameter): the kit's test names
    the learnware, the check and what differs."""
    src, env = scaffolded
    broken = env.site / "lab_spikes" / "outliers.py"
    text = broken.read_text()
    try:
        broken.write_text(
            text.replace(
                "return robust_outlier_score(x, **self.config())",
                "return robust_outlier_score(x, threshold=1.0)",
            )
        )
        proc = env.run(
            [
                "python",
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/test_contract.py",
                "-k",
                "function",
            ],
            cwd=src,
            check=False,
        )
    finally:
        broken.write_text(text)
    assert proc.returncode == 1
    assert "lab_spikes.outliers.default: module != function: output 'output' differs" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("specs.package", "specs.registry")),
    reason="specs.package / specs.registry not available yet",
)
def test_scaffold_package_submit_search(scaffolded: tuple[Path, PluginEnv], tmp_path: Path) -> None:
    _, env = scaffolded
    rng = np.random.default_rng(0)
    sample = tmp_path / "series.npy"
    np.save(sample, (1 + 1e-3 * rng.standard_normal((8, 1024))).astype(np.float32))
    pkg = tmp_path / "lab_spikes.zip"
    steps = [
        [
            "package",
            "lab_spikes.outliers",
            "--data",
            sample,
            "--out",
            pkg,
            "--set",
            "threshold=6.0",
        ],
        ["registry", "submit", pkg],
        ["registry", "search", "--task=spike-detection", f"--data={sample}"],
    ]
    results = env.cli(steps, env_vars={"LEARNDOCK_REGISTRY": str(tmp_path / "registry")})
    for step, (code, out) in zip(steps, results):
        assert code == 0, f"learndock {' '.join(map(str, step))} exited with {code}:\n{out}"
    assert "lab_spikes.outliers.default" in results[-1][1]
