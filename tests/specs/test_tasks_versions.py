"""The task library versions its records and their embedding method: version-1 records
(k-means reduced sets written before the embedding came from specs.rkme.RKME.fit) keep
working; records from a newer learndock are refused with a clear message, never compared
blindly, and left untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from specs.rkme import RKME
from specs.tasks import (
    EMBEDDING_METHOD,
    LEGACY_METHOD,
    RECORD_VERSION,
    Embedding,
    SolvedTask,
    TaskLibrary,
    UnsupportedRecordError,
    mmd_batch,
)


def _solved(emb: Embedding) -> SolvedTask:
    return SolvedTask(
        goal="reconstruct",
        modality="microscopy",
        scale="micro",
        pipeline={"stages": [], "inputs": ["image"]},
        scores={"score": 1.0},
        rkme=emb,
    )


def _rows(seed: int, shift: float = 0.0) -> torch.Tensor:
    return shift + torch.randn(400, 3, generator=torch.Generator().manual_seed(seed))


def _rewrite(lib: TaskLibrary, task_id: str, **changes) -> None:
    p = lib.path / task_id / "record.json"
    rec = json.loads(p.read_text())
    for k, v in changes.items():
        if k == "rkme_method":
            if v is None:
                rec["rkme"].pop("method", None)
            else:
                rec["rkme"]["method"] = v
        else:
            rec[k] = v
    p.write_text(json.dumps(rec))


def test_new_records_carry_the_embedding_method(tmp_path):
    emb = Embedding.from_any(RKME.fit(_rows(0), m=16, bandwidth=1.0, featurizer="f/1"))
    assert emb.method == EMBEDDING_METHOD
    lib = TaskLibrary(tmp_path)
    rec = lib.add(_solved(emb))
    on_disk = json.loads((lib.path / rec.task_id / "record.json").read_text())
    assert on_disk["record_version"] == RECORD_VERSION
    assert on_disk["rkme"]["method"] == EMBEDDING_METHOD
    assert lib.get(rec.task_id).rkme.method == EMBEDDING_METHOD


def test_version_1_records_are_read_and_still_compared(tmp_path):
    # a version-1 record: k-means-style reduced set (here: 16 data rows, uniform weights)
    rows = _rows(0)
    old = Embedding(rows[:16].numpy(), np.full(16, 1 / 16), 0.5, "f/1", LEGACY_METHOD)
    lib = TaskLibrary(tmp_path)
    rec = lib.add(_solved(old))
    _rewrite(lib, rec.task_id, record_version=1, rkme_method=None)
    lib = TaskLibrary(tmp_path)  # restart
    got = lib.get(rec.task_id)
    assert got.rkme.method == LEGACY_METHOD and not lib.unsupported
    # the new embedding of the same data is close to the legacy one, far data is not
    same = Embedding.from_any(RKME.fit(_rows(1), m=16, bandwidth=1.0, featurizer="f/1"))
    far = Embedding.from_any(RKME.fit(_rows(2, 3.0), m=16, bandwidth=1.0, featurizer="f/1"))
    near_mmd, far_mmd = mmd_batch(same, [got.rkme])[0], mmd_batch(far, [got.rkme])[0]
    assert near_mmd < 0.1 < far_mmd
    hit = lib.nearest(goal="reconstruct", modality="microscopy", rkme=same)
    assert hit and hit[0].task.task_id == rec.task_id and np.isfinite(hit[0].mmd)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"record_version": RECORD_VERSION + 1}, "record_version"),
        ({"rkme_method": "sketch/9"}, "sketch/9"),
    ],
)
def test_records_of_a_newer_learndock_are_refused_with_a_clear_message(tmp_path, change, message):
    emb = Embedding(np.zeros((2, 3)), np.full(2, 0.5), 1.0, "f/1")
    lib = TaskLibrary(tmp_path)
    keep = lib.add(_solved(emb))
    newer = lib.add(_solved(emb))
    _rewrite(lib, newer.task_id, **change)
    with pytest.raises(UnsupportedRecordError, match=message) as info:
        lib.get(newer.task_id)
    assert "upgrade learndock" in str(info.value)
    # lookups skip it (noted in `unsupported`, with the reason) and keep the others
    hits = lib.nearest(goal="reconstruct", modality="microscopy", rkme=emb, k=5)
    assert [h.task.task_id for h in hits] == [keep.task_id]
    assert message in lib.unsupported[newer.task_id]
    # a fresh open (index rebuilt from the records) refuses it too, and leaves it on disk
    (lib.path / "index.sqlite").unlink()
    lib2 = TaskLibrary(tmp_path)
    assert [t.task_id for t in lib2.list()] == [keep.task_id]
    assert newer.task_id in lib2.unsupported and newer.task_id in lib2
