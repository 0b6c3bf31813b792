"""Registry: submit/get/list/remove/export/load, planted-truth search and mixture,
rejections that leave the registry unchanged, concurrent submits, seed."""

from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dock_toys import toy_declaration, toy_spec

from specs.checks import SubmissionError
from specs.package import build_package, read_package
from specs.registry import Registry, SpecIndex, semantic_filter
from specs.rkme import RKME

D = 6


def _centers(n_lw: int = 50) -> np.ndarray:
    return np.random.default_rng(123).normal(0, 3.0, size=(n_lw, 2, D))


def _sample(centers: np.ndarray, i: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = centers[i][rng.integers(0, 2, n)]
    return c + rng.normal(0, 0.6, size=(n, D))


def _state(reg: Registry) -> tuple:
    files = sorted(
        p.relative_to(reg.root).as_posix() for p in (reg.root / "store").rglob("*") if p.is_file()
    )
    return tuple(r.id for r in reg.list()), tuple(files)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, list[str], np.ndarray]:
    """A registry of 50 toy learnwares, each made for its own Gaussian mixture."""
    from dock_toys import ToyAffine, ToyScale, ToySleep

    import components.base as base

    mp_ = pytest.MonkeyPatch()
    comps = dict(base.discover_components())
    comps.update({c.name: c for c in (ToyScale, ToyAffine, ToySleep)})
    mp_.setattr(base, "_components", comps)
    root = tmp_path_factory.mktemp("planted")
    reg = Registry(root / "reg")
    centers = _centers()
    ids = []
    for i in range(50):
        spec = toy_spec(
            f"test.planted.{i:02d}",
            task="anomaly-detection" if i % 2 else "detrending",
            tags=("toy", f"group{i % 5}"),
        )
        p = build_package(
            "test.scale",
            (spec, {"factor": float(i)}),
            root / f"p{i}",
            data=_sample(centers, i, 240, seed=i),
            example={"x": np.ones(3, dtype=np.float32)},
            m=12,
        )
        ids.append(reg.submit(p))
    yield reg, ids, centers
    mp_.undo()


def test_planted_top3_and_mixture(planted: tuple) -> None:
    reg, ids, centers = planted
    user = np.concatenate([_sample(centers, i, 200, seed=1000 + i) for i in (3, 17, 41)])
    res = reg.search(data=user, modality="tabular", top=5)
    assert {r.id for r in res[:3]} == {ids[3], ids[17], ids[41]}
    assert all(r.mmd is not None and 0 <= r.score <= 1 for r in res)
    assert res[0].mmd <= res[1].mmd <= res[2].mmd < res[3].mmd
    assert "MMD" in res[0].explanation and "tabular/1" in res[0].explanation
    mix = reg.search_mixture(data=user, modality="tabular", k=3)
    assert {r.id for r in mix} == {ids[3], ids[17], ids[41]}
    for r in mix:
        assert abs(r.weight - 1 / 3) < 0.05, [(m.name, m.weight) for m in mix]
    assert abs(sum(r.weight for r in mix) - 1) < 1e-4


def test_planted_rkme_query_and_prerank(planted: tuple) -> None:
    reg, ids, centers = planted
    q = RKME.from_data(_sample(centers, 17, 300, seed=7), modality="tabular")
    assert reg.search(rkme=q, top=1)[0].id == ids[17]
    # RFF pre-ranking over the index gives the same best hit as exact MMD
    index, _ = reg._index("tabular/1", D)
    i1, *_ = index.query(q, top=3, prerank=False)
    i2, _, _, n_exact = index.query(q, top=3, prerank=True, pool=10)
    assert i1[0] == i2[0] and n_exact == 10
    i3, *_ = index.query(q, top=3, prerank=True, pool=30)
    assert i1.tolist() == i3.tolist()


def test_semantic_filters(planted: tuple) -> None:
    reg, ids, centers = planted
    assert len(reg.list()) == 50
    assert len(reg.list(task="detrending")) == 25
    assert {r.name for r in reg.list(tags=["group3"])} == {
        f"test.planted.{i:02d}" for i in range(3, 50, 5)
    }
    user = _sample(centers, 17, 200, seed=5)
    res = reg.search(
        data=user, modality="tabular", task="detrending", top=3
    )  # 17 is odd: filtered out
    assert ids[17] not in {r.id for r in res} and all(r.spec["task"] == "detrending" for r in res)
    txt = reg.search(text="planted.07")
    assert txt[0].name == "test.planted.07" and txt[0].mmd is None
    assert reg.search(family="rules") == []
    specs = [r.spec for r in reg.list()]
    assert len(semantic_filter(specs, tags=["group1"])) == 10


def test_get_export_load_remove(planted: tuple, tmp_path: Path) -> None:
    reg, ids, _ = planted
    rec = reg.get(ids[5])
    assert rec.name == "test.planted.05" and reg.get(ids[5][:10]).id == ids[5]
    assert reg.get("test.planted.05").id == ids[5]
    with pytest.raises(KeyError, match="no learnware"):
        reg.get("nothing-here")
    out = reg.export(ids[5], tmp_path / "x.zip")
    pkg = read_package(out)
    assert pkg.params == {"factor": 5.0}
    module = reg.load(ids[5])
    assert torch.equal(module(torch.ones(2)), torch.full((2,), 5.0))
    # re-submitting identical content is idempotent
    assert reg.submit(out) == ids[5]


def test_remove_and_resubmit(tmp_path: Path, toy_components: dict) -> None:
    reg = Registry(tmp_path / "r")
    p = build_package("test.scale", toy_declaration("test.rm"), tmp_path / "p", m=4)
    lid = reg.submit(p)
    before = _state(reg)
    assert reg.remove(lid) == lid
    assert _state(reg) == ((), ())
    assert reg.submit(p) == lid and _state(reg) == before


@pytest.mark.parametrize(
    "breakage", ["missing", "hash", "traversal", "component", "example", "vocabulary", "duplicate"]
)
def test_bad_packages_rejected_registry_unchanged(
    tmp_path: Path, toy_components: dict, breakage: str
) -> None:
    reg = Registry(tmp_path / "r")
    good = build_package("test.scale", toy_declaration("test.ok"), tmp_path / "ok", m=4)
    reg.submit(good)
    before = _state(reg)
    bad = build_package("test.scale", toy_declaration("test.bad"), tmp_path / "bad", m=4)
    man = bad / "learnware.yaml"
    m = yaml.safe_load(man.read_text())
    expect = {
        "missing": "missing-file",
        "hash": "hash-mismatch",
        "traversal": "unsafe-path",
        "component": "unknown-component",
        "example": "example-mismatch",
        "vocabulary": "bad-spec",
        "duplicate": "duplicate",
    }[breakage]
    if breakage == "missing":
        (bad / "example" / "expected.npz").unlink()
    elif breakage == "hash":
        (bad / "rkme.safetensors").write_bytes(
            (bad / "rkme.safetensors").read_bytes()[:-4] + b"\0\0\0\0"
        )
    elif breakage == "traversal":
        import zipfile

        z = tmp_path / "bad.zip"
        with zipfile.ZipFile(z, "w") as zf:
            for f in bad.rglob("*"):
                if f.is_file():
                    zf.write(f, f.relative_to(bad).as_posix())
            zf.writestr("../../outside.txt", "x")
        bad = z
    elif breakage == "component":
        m["component"] = "builtins.eval"
    elif breakage == "example":
        m["params"]["factor"] = -1.0
    elif breakage == "vocabulary":
        m["spec"]["modality"] = "telepathy"
    elif breakage == "duplicate":
        shutil.rmtree(bad)
        bad = build_package(
            "test.scale", toy_declaration("test.ok", factor=9.0), tmp_path / "dup", m=4
        )
    if breakage in ("component", "example", "vocabulary"):
        man.write_text(yaml.safe_dump(m))
    with pytest.raises(SubmissionError, match=expect) as info:
        reg.submit(bad)
    assert info.value.problems and all(p.message for p in info.value.problems)
    assert _state(reg) == before
    assert not any((reg.root / "tmp").iterdir())


def test_interrupted_commit_leaves_nothing(
    tmp_path: Path, toy_components: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = Registry(tmp_path / "r")
    p = build_package("test.scale", toy_declaration("test.crash"), tmp_path / "p", m=4)
    import specs.registry as sr

    def boom(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(sr.Registry, "_bump", staticmethod(boom))
        with pytest.raises(KeyboardInterrupt):
            reg.submit(p)
    assert _state(reg) == ((), ())
    assert reg.submit(p).startswith("lw-")


def _submit_worker(root: str, path: str, q: mp.Queue) -> None:  # type: ignore[type-arg]
    from dock_toys import ToyAffine, ToyScale, ToySleep

    import components.base as base

    comps = dict(base.discover_components())
    comps.update({c.name: c for c in (ToyScale, ToyAffine, ToySleep)})
    base._components = comps
    try:
        q.put(Registry(root).submit(path))
    except Exception as exc:  # pragma: no cover - reported to the parent
        q.put(f"error: {exc}")


def test_concurrent_submits(tmp_path: Path, toy_components: dict) -> None:
    paths = [
        build_package(
            "test.scale",
            toy_declaration(f"test.conc.{i}", center=float(i)),
            tmp_path / f"p{i}",
            m=4,
        )
        for i in range(2)
    ]
    paths.append(paths[0])  # the same package twice at once
    root = str(tmp_path / "r")
    Registry(root)
    ctx = mp.get_context("spawn")  # fork after torch threads start can deadlock
    q = ctx.Queue()
    procs = [ctx.Process(target=_submit_worker, args=(root, str(p), q)) for p in paths]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join(120)
    got = [q.get(timeout=5) for _ in procs]
    assert all(g.startswith("lw-") for g in got), got
    assert len(set(got)) == 2
    reg = Registry(root)
    assert len(reg.list()) == 2 and reg.get(got[0]).name.startswith("test.conc")


def test_spec_index_direct() -> None:
    g = torch.Generator().manual_seed(0)
    rk = [RKME(torch.randn(4, 3, generator=g) + i, torch.full((4,), 0.25), 1.0) for i in range(8)]
    idx = SpecIndex(
        [f"a{i}" for i in range(8)], __import__("specs.rkme", fromlist=["RKMEStack"]).RKMEStack(rk)
    )
    order, mmd, score, n = idx.query(rk[5], top=2)
    assert order[0] == 5 and mmd[0] < 1e-3 and score[0] > 0.999 and n == 8
    order, *_ = idx.query(rk[5], top=2, subset=[0, 1, 2])
    assert set(order.tolist()) <= {0, 1, 2}


def test_search_arguments(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r")
    with pytest.raises(ValueError, match="top"):
        reg.search(top=0)
    with pytest.raises(ValueError, match="data"):
        reg.search_mixture()
    assert reg.search(data=np.ones((5, 2)), modality="tabular") == []


def test_default_root_from_env(registry_root: Path) -> None:
    reg = Registry()
    assert reg.root == registry_root and (registry_root / "index.sqlite").exists()


def test_seed_builtins(tmp_path: Path) -> None:
    from components.base import discover_learnwares

    decls = discover_learnwares()
    if not decls:
        pytest.skip("no built-in learnwares discovered yet")
    reg = Registry(tmp_path / "r")
    name = (
        "detection.spots.fluorescence"
        if "detection.spots.fluorescence" in decls
        else next(iter(decls))
    )
    ids = reg.seed(names=[name])
    assert len(ids) == 1 and reg.get(ids[0]).name == name
    assert reg.seed(names=[name]) == ids  # idempotent


@pytest.mark.slow
def test_seed_every_builtin(tmp_path: Path) -> None:
    from components.base import discover_learnwares

    decls = discover_learnwares()
    if not decls:
        pytest.skip("no built-in learnwares discovered yet")
    reg = Registry(tmp_path / "r")
    ids = reg.seed()
    assert len(ids) == len(decls) == len(reg.list())
    for name, (_cls, decl) in decls.items():
        res = reg.search(data=decl.reference_data(1), modality=decl.spec.modality, top=len(decls))
        assert name in {r.name for r in res}


def test_search_needs_modality_across_feature_spaces(tmp_path: Path, toy_components: dict) -> None:
    reg = Registry(tmp_path / "r")
    reg.submit(build_package("test.scale", toy_declaration("test.tab"), tmp_path / "a", m=4))
    spec = toy_spec("test.img", modality="microscopy")
    img = np.random.default_rng(0).normal(size=(64, 64))
    reg.submit(
        build_package(
            "test.scale",
            (spec, {"factor": 2.0}),
            tmp_path / "b",
            data=img,
            example={"x": np.ones(3, dtype=np.float32)},
            m=4,
        )
    )
    with pytest.raises(ValueError, match="feature spaces"):
        reg.search(data=img)
    res = reg.search(data=np.random.default_rng(1).normal(size=(64, 64)), modality="microscopy")
    assert [r.name for r in res] == ["test.img"] and "microscopy-tiles/1" in res[0].explanation
