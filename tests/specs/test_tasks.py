"""Tests of specs.tasks: the task library (atomic storage, restart, nearest lookup)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from specs.tasks import Embedding, SolvedTask, TaskLibrary, TaskLibraryError, mmd_batch


def _emb(
    center: float, seed: int = 0, n: int = 8, d: int = 4, featurizer: str = "test/1"
) -> Embedding:
    rng = np.random.default_rng(seed)
    pts = center + 0.1 * rng.standard_normal((n, d))
    return Embedding(points=pts, weights=np.full(n, 1.0 / n), gamma=0.5, featurizer=featurizer)


def _task(
    goal: str = "reconstruct", center: float = 0.0, scale: str = "micro", score: float = 1.0, **kw
) -> SolvedTask:
    return SolvedTask(
        goal=goal,
        modality=kw.pop("modality", "microscopy"),
        scale=scale,
        pipeline={
            "mode": "direct",
            "stages": [
                {
                    "role": "restore",
                    "learnware": f"lw-{center}",
                    "config": {"_target_": "x", "sigma": center},
                }
            ],
        },
        scores={"score": score},
        rkme=_emb(center, **kw),
        time_s=1.5,
        provenance={"host": "test"},
    )


def test_mmd_zero_for_self_and_grows_with_shift():
    a, b, c = _emb(0.0), _emb(0.5), _emb(2.0)
    d = mmd_batch(a, [a, b, c])
    assert d[0] == pytest.approx(0.0, abs=1e-9)
    assert 0 < d[1] < d[2]


def test_mmd_incomparable_featurizer_is_inf():
    a, b = _emb(0.0), _emb(0.0, featurizer="other/2")
    assert np.isinf(mmd_batch(a, [b])[0])


def test_embedding_validation_names_parameter():
    with pytest.raises(ValueError, match="weights"):
        Embedding(points=np.zeros((3, 2)), weights=np.ones(2), gamma=1.0, featurizer="f/1")
    with pytest.raises(ValueError, match="gamma"):
        Embedding(points=np.zeros((3, 2)), weights=np.ones(3), gamma=-1.0, featurizer="f/1")
    with pytest.raises(ValueError, match="points"):
        Embedding(points=np.full((3, 2), np.nan), weights=np.ones(3), gamma=1.0, featurizer="f/1")


def test_embedding_from_duck_typed_rkme():
    class R:
        centers = np.zeros((2, 3))
        beta = np.array([0.5, 0.5])
        gamma = 2.0
        featurizer = "light-curve"
        featurizer_version = 3

    e = Embedding.from_any(R())
    assert e.featurizer == "light-curve/3" and e.points.shape == (2, 3) and e.gamma == 2.0


def test_add_get_roundtrip_and_restart(tmp_path):
    lib = TaskLibrary(tmp_path)
    t = lib.add(_task(center=1.0))
    assert t.task_id and t.created
    lib2 = TaskLibrary(tmp_path)  # a "restart": a fresh object on the same root
    assert len(lib2) == 1 and t.task_id in lib2
    back = lib2.get(t.task_id)
    assert back.pipeline == t.pipeline and back.scores == {"score": 1.0}
    np.testing.assert_allclose(back.rkme.points, t.rkme.points, rtol=1e-6)
    assert back.rkme.featurizer == "test/1" and back.time_s == 1.5


def test_default_root_from_env(registry_root):
    lib = TaskLibrary()
    assert lib.path == registry_root / "tasks"


def test_nearest_ranks_by_mmd_and_filters_semantics(tmp_path):
    lib = TaskLibrary(tmp_path)
    near = lib.add(_task(center=0.1, seed=1))
    lib.add(_task(center=3.0, seed=2))
    lib.add(_task(goal="find-transits", center=0.0, seed=3, modality="light-curve", scale="cosmic"))
    lib.add(_task(center=0.0, seed=4, modality="biomechanics", scale="macro"))
    hits = lib.nearest(
        goal="reconstruct", modality="microscopy", scale="micro", rkme=_emb(0.0, seed=9), k=5
    )
    assert next(h.task.task_id for h in hits) == near.task_id
    assert len(hits) == 2 and all(
        h.task.goal == "reconstruct" and h.task.modality == "microscopy" for h in hits
    )
    assert hits[0].mmd < hits[1].mmd
    assert lib.nearest(goal="discover-law", rkme=_emb(0.0)) == []
    with pytest.raises(ValueError, match="k"):
        lib.nearest(goal="reconstruct", k=0)


def test_interrupted_write_leaves_library_consistent(tmp_path, monkeypatch):
    lib = TaskLibrary(tmp_path)
    kept = lib.add(_task(center=0.0))

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(KeyboardInterrupt):
        lib.add(_task(center=1.0))
    monkeypatch.undo()
    lib2 = TaskLibrary(tmp_path)
    assert [t.task_id for t in lib2.list()] == [kept.task_id]
    assert not [p for p in lib2.path.iterdir() if p.name.startswith(".tmp-")]


def test_leftover_temp_dir_and_unindexed_record_are_reconciled(tmp_path):
    lib = TaskLibrary(tmp_path)
    t = lib.add(_task(center=0.0))
    # simulate a crash between rename and index update, plus a half-written temp dir
    (lib.path / "index.sqlite").unlink()
    half = lib.path / ".tmp-x-123"
    half.mkdir()
    (half / "record.json").write_text("{trunc")
    lib2 = TaskLibrary(tmp_path)
    assert [x.task_id for x in lib2.list()] == [t.task_id]
    assert not half.exists()


def test_corrupt_index_is_rebuilt(tmp_path):
    lib = TaskLibrary(tmp_path)
    t = lib.add(_task(center=0.0))
    (lib.path / "index.sqlite").write_bytes(b"this is not a database" * 100)
    lib2 = TaskLibrary(tmp_path)
    assert [x.task_id for x in lib2.list()] == [t.task_id]


def test_bad_inputs(tmp_path):
    lib = TaskLibrary(tmp_path)
    with pytest.raises(ValueError, match="goal"):
        lib.add(SolvedTask(goal="", modality="m", scale="micro", pipeline={}))
    with pytest.raises(ValueError, match="pipeline"):
        lib.add(SolvedTask(goal="g", modality="m", scale="micro", pipeline=[]))  # type: ignore[arg-type]
    with pytest.raises(TaskLibraryError, match="nope"):
        lib.get("nope")
    t = lib.add(_task())
    with pytest.raises(ValueError, match="already"):
        lib.add(t)
    lib.remove(t.task_id)
    assert len(lib) == 0 and t.task_id not in lib


def test_record_is_plain_json(tmp_path):
    lib = TaskLibrary(tmp_path)
    t = lib.add(_task(score=float("nan")))
    rec = json.loads((lib.path / t.task_id / "record.json").read_text())
    assert rec["scores"]["score"] is None and rec["rkme"]["featurizer"] == "test/1"
