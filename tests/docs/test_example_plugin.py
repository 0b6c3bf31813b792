"""The example plug-in docs/examples/flarelab: installed, tested with the kit, packaged,
submitted to a temporary registry and found again by search -- a lab's round trip.

The plug-in is installed with ``pip install --target`` into a temporary directory that
only the subprocesses of these tests see (``learndock._plugin_env``): the shared
environment is never modified and nothing needs uninstalling.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from learndock._plugin_env import PluginEnv, install_plugin

ROOT = Path(__file__).resolve().parents[2]
FLARELAB = ROOT / "docs" / "examples" / "flarelab"


def _has_registry() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("specs.package", "specs.registry"))


@pytest.fixture(scope="module")
def flarelab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PluginEnv]:
    return install_plugin(FLARELAB, tmp_path_factory.mktemp("flarelab"))


def test_flarelab_passes_its_own_tests_with_the_kit(flarelab: tuple[Path, PluginEnv]) -> None:
    """Installed, the plug-in is discovered through its entry point, extends the task
    vocabulary (its test_hydra.py) and passes every check of the contract suite, each
    reported as its own test."""
    src, env = flarelab
    proc = env.run(["python", "-m", "pytest", "-v", "-p", "no:cacheprovider"], cwd=src)
    assert " passed" in proc.stdout and "failed" not in proc.stdout
    for check in (
        "declaration",
        "example",
        "function",
        "gradient",
        "device",
        "hydra_roundtrip",
        "bad_input",
        "documented_errors",
    ):
        assert f"test_contract[flarelab.flares.tess-2min-{check}] PASSED" in proc.stdout
    for test in (
        "test_config_group_composes_and_instantiates",
        "test_task_vocabulary_extended_by_entry_point",
        "test_learndock_run_sees_the_config",  # `learndock run detection=flarelab_flares`
    ):
        assert f"{test} PASSED" in proc.stdout


@pytest.mark.skipif(not _has_registry(), reason="specs.package / specs.registry not available yet")
def test_flarelab_package_verify_submit_search(
    flarelab: tuple[Path, PluginEnv], tmp_path: Path
) -> None:
    _, env = flarelab
    sample = tmp_path / "my_stars.npy"
    code = f"import numpy as np; from flarelab.synthetic import flare_light_curves; np.save({str(sample)!r}, flare_light_curves(42)['flux'])"
    env.run(["python", "-c", code])
    pkg = tmp_path / "flarelab.zip"
    steps = [
        ["package", "flarelab.flares", "--data", sample, "--out", pkg],
        ["registry", "verify", pkg],
        ["registry", "test", pkg],
        ["registry", "submit", pkg],
        ["registry", "search", "--task=flare-detection", f"--data={sample}"],
    ]
    results = env.cli(steps, env_vars={"LEARNDOCK_REGISTRY": str(tmp_path / "registry")})
    for step, (code, out) in zip(steps, results):
        assert code == 0, f"learndock {' '.join(map(str, step))} exited with {code}:\n{out}"
    assert pkg.is_file()
    raw = np.load(sample)
    assert raw[0, :512].tobytes() not in pkg.read_bytes(), "raw sample data leaked into the package"
    assert "flarelab.flares.tess-2min" in results[-1][1]


@pytest.mark.real_data
def test_flarelab_recovers_flares_injected_into_a_tess_light_curve(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 Davenport flares (8-25 sigma) injected into WASP-126's TESS sector-1 PDCSAP flux
    (quality-flagged cadences as NaN gaps): all found, at most one new event elsewhere."""
    astropy_fits = pytest.importorskip("astropy.io.fits")
    monkeypatch.syspath_prepend(str(FLARELAB / "src"))
    import torch
    from flarelab import detect_flares, flare_events
    from flarelab.synthetic import davenport_flare

    path = (
        shared_data
        / "tess-wasp126-s01"
        / "hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits"
    )
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with astropy_fits.open(path) as hdul:
        d = hdul[1].data
        t = np.asarray(d["TIME"], dtype=np.float64)
        f = np.asarray(d["PDCSAP_FLUX"], dtype=np.float64)
        f[np.asarray(d["QUALITY"]) != 0] = np.nan
    f /= np.nanmedian(f)
    t = np.interp(np.arange(t.size), np.flatnonzero(~np.isnan(t)), t[~np.isnan(t)])
    before = flare_events(detect_flares(torch.as_tensor(f)).score)
    rng = np.random.default_rng(2026)
    ok = np.flatnonzero(~np.isnan(f))
    peaks = np.sort(rng.choice(ok[200:-200], 12, replace=False))
    g = f.copy()
    for p in peaks:
        g += davenport_flare(t, t[p], rng.uniform(4, 12) / 1440, rng.uniform(0.01, 0.03))
    events = flare_events(detect_flares(torch.as_tensor(g)).score)
    found = sum(any(p - 3 <= peak < p + 60 for _, peak, _ in events) for p in peaks)
    new = [
        e
        for e in events
        if not any(p - 3 <= e[1] < p + 60 for p in peaks)
        and not any(abs(e[1] - b[1]) < 5 for b in before)
    ]
    assert found == 12
    assert len(new) <= 1, new
