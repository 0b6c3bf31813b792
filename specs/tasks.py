"""The task library: solved tasks, remembered so that the next similar task starts from them.

A *solved task* is what ``learndock solve`` learned from one job: the semantic
description of the task (goal, modality, scale, free text, tags), the RKME of the data it
was solved on (a reduced kernel mean embedding in the modality's featurizer space: raw
data is never stored), the final pipeline configuration with its tuned parameters, the
scores reached, the time spent and the provenance of the run.

The library lives beside the spec registry (same root, ``LEARNDOCK_REGISTRY``, default
``~/.learndock/registry``) under ``tasks/``::

    tasks/
      index.sqlite            derived index (rebuilt from the records when missing)
      <task id>/record.json   the record
      <task id>/rkme.safetensors  the RKME reduced set (points, weights)

Writes are atomic: a record is written into a hidden temporary directory, every file is
fsynced, and the directory is renamed into place (``rename`` is atomic on POSIX); only
then is the index updated in one SQLite transaction.  An interrupted write leaves at worst
a hidden temporary directory that the next open removes; a record that made it to disk
but not to the index is re-indexed on the next open.  The index is never the only copy of
anything.

Lookup (:meth:`TaskLibrary.nearest`) is a semantic filter (same goal, same modality;
same scale preferred) followed by a ranking by the maximum mean discrepancy between the
query's RKME and each remembered task's RKME, computed for all candidates in one batched
tensor operation.

Examples
--------
>>> import tempfile, numpy as np
>>> lib = TaskLibrary(tempfile.mkdtemp())
>>> emb = Embedding(points=np.zeros((2, 3), np.float32), weights=np.full(2, 0.5, np.float32),
...                 gamma=1.0, featurizer="demo/1")
>>> rec = lib.add(SolvedTask(goal="reconstruct", modality="microscopy", scale="micro",
...                          pipeline={"stages": []}, scores={"score": 1.0}, rkme=emb))
>>> [m.task.task_id == rec.task_id for m in lib.nearest(goal="reconstruct", modality="microscopy", rkme=emb)]
[True]
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specs.rkme import RKMEStack, stack_mmd

__all__ = [
    "Embedding",
    "Match",
    "SolvedTask",
    "TaskLibrary",
    "TaskLibraryError",
    "UnsupportedRecordError",
    "default_root",
    "mmd_batch",
]

log = logging.getLogger("learndock.tasks")

RECORD_VERSION = 2
"""Version of ``record.json``.  1: the data RKME was a k-means reduced set fitted by
``pipelines.solve`` (no ``rkme.method`` key); 2: the RKME is fitted by
:meth:`specs.rkme.RKME.fit` and its method is recorded."""

EMBEDDING_METHOD = "rkme-fit/1"
"""Reduced-set method of the embeddings that :func:`pipelines.solve.embed` writes now."""

LEGACY_METHOD = "kmeans/1"
"""Method of the embeddings in version-1 records (k-means centres, cluster fractions)."""

KNOWN_METHODS = (EMBEDDING_METHOD, LEGACY_METHOD)
"""Reduced-set methods this version reads.  All of them approximate the same kernel mean
embedding of the data in the same featurizer space and kernel, so their MMDs are
comparable; a record written with another (newer) method is refused with a clear
message instead of being compared blindly."""
_INDEX = "index.sqlite"
_TMP_PREFIX = ".tmp-"


class TaskLibraryError(RuntimeError):
    """A task library problem (unreadable record, unknown task id)."""


class UnsupportedRecordError(TaskLibraryError):
    """A record written by a newer learndock (record version or embedding method that
    this version does not know)."""


def default_root() -> Path:
    """The registry root: ``$LEARNDOCK_REGISTRY`` or ``~/.learndock/registry``."""
    env = os.environ.get("LEARNDOCK_REGISTRY")
    return Path(env).expanduser() if env else Path.home() / ".learndock" / "registry"


# --------------------------------------------------------------------------------------
# RKME as plain arrays
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Embedding:
    """A reduced kernel mean embedding as plain arrays (the task library's storage form).

    Parameters
    ----------
    points : ndarray, shape (m, d)
        Reduced-set points in featurizer space.
    weights : ndarray, shape (m,)
        Their weights (summing to one for a mean embedding).
    gamma : float
        Gaussian kernel parameter, ``k(a, b) = exp(-gamma * ||a - b||^2)``.
    featurizer : str
        ``"<name>/<version>"`` of the featurizer; embeddings are only compared within one.
    method : str
        How the reduced set was fitted (:data:`EMBEDDING_METHOD` now, :data:`LEGACY_METHOD`
        for version-1 records).  Both approximate the same kernel mean embedding.
    """

    points: np.ndarray
    weights: np.ndarray
    gamma: float
    featurizer: str
    method: str = EMBEDDING_METHOD

    def __post_init__(self) -> None:
        p = np.asarray(self.points, dtype=np.float32)
        w = np.asarray(self.weights, dtype=np.float32).reshape(-1)
        if p.ndim != 2 or p.shape[0] == 0:
            raise ValueError(f"points: expected a non-empty (m, d) array, got shape {p.shape}")
        if w.shape[0] != p.shape[0]:
            raise ValueError(
                f"weights: expected {p.shape[0]} weights (one per point), got {w.shape[0]}"
            )
        if not (np.isfinite(p).all() and np.isfinite(w).all()):
            raise ValueError("points/weights: expected finite values, got NaN or inf")
        if not (math.isfinite(float(self.gamma)) and float(self.gamma) > 0):
            raise ValueError(f"gamma: expected a finite number > 0, got {self.gamma!r}")
        object.__setattr__(self, "points", p)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "gamma", float(self.gamma))

    @classmethod
    def from_any(cls, obj: Any, *, featurizer: str | None = None) -> Embedding:
        """Convert an :class:`Embedding`, a mapping or an ``specs.rkme`` object (duck-typed:
        reduced-set points under ``points``/``centers``/``z``, weights under
        ``weights``/``beta``, kernel parameter under ``gamma``) into an Embedding."""
        if isinstance(obj, Embedding):
            return obj

        def get(*names: str) -> Any:
            for n in names:
                if isinstance(obj, Mapping) and n in obj:
                    return obj[n]
                if hasattr(obj, n):
                    return getattr(obj, n)
            return None

        pts, w, g = get("points", "centers", "z", "Z"), get("weights", "beta"), get("gamma")
        if pts is None or w is None:
            raise TypeError(
                f"rkme: expected an Embedding, a mapping or an RKME object with points and weights, got {type(obj).__name__}"
            )
        if g is None:
            bw = get("bandwidth", "sigma")
            g = 1.0 / (2.0 * float(bw) ** 2) if bw is not None else 1.0
        feat = featurizer or get("featurizer") or "unknown/0"
        ver = get("featurizer_version")
        if ver is not None and "/" not in str(feat):
            feat = f"{feat}/{ver}"

        def arr(v: Any) -> np.ndarray:
            return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

        method = get("method")
        return cls(
            points=arr(pts),
            weights=arr(w),
            gamma=float(arr(g)),
            featurizer=str(feat),
            method=str(method) if isinstance(method, str) else EMBEDDING_METHOD,
        )


def mmd_batch(query: Embedding, others: Sequence[Embedding]) -> np.ndarray:
    """Squared MMD between ``query`` and each of ``others`` (Gaussian kernel of the query).

    Notes
    -----
    With reduced sets :math:`(z_i, \\beta_i)` and :math:`(z'_j, \\beta'_j)`,

    .. math::
        \\mathrm{MMD}^2 = \\beta^T K(z, z) \\beta - 2 \\beta^T K(z, z') \\beta'
        + \\beta'^T K(z', z') \\beta'

    All ``others`` are padded to one tensor (zero weights) and evaluated in one batched
    operation.  Entries whose featurizer or dimension differ from the query's are ``inf``.

    Examples
    --------
    >>> a = Embedding(np.zeros((1, 2)), np.ones(1), 1.0, "f/1")
    >>> b = Embedding(np.ones((1, 2)), np.ones(1), 1.0, "f/1")
    >>> np.round(mmd_batch(a, [a, b]), 4).tolist()
    [0.0, 1.7293]
    """
    out = np.full(len(others), np.inf, dtype=np.float64)
    ok = [
        i
        for i, o in enumerate(others)
        if o.featurizer == query.featurizer and o.points.shape[1] == query.points.shape[1]
    ]
    if not ok:
        return out
    m = max(others[i].points.shape[0] for i in ok)
    d = query.points.shape[1]
    z = torch.zeros(len(ok), m, d, dtype=torch.float64)
    w = torch.zeros(len(ok), m, dtype=torch.float64)
    for j, i in enumerate(ok):
        n = others[i].points.shape[0]
        z[j, :n] = torch.from_numpy(others[i].points).double()
        w[j, :n] = torch.from_numpy(others[i].weights).double()
    stack = RKMEStack.from_tensors(z, w, featurizer=query.featurizer)
    mmd = stack_mmd(
        torch.from_numpy(query.points).double(),
        torch.from_numpy(query.weights).double(),
        stack,
        bandwidth=math.sqrt(0.5 / query.gamma),  # exp(-gamma d^2) = exp(-d^2 / (2 bw^2))
    )
    out[ok] = (mmd**2).numpy()
    return out


# --------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, torch.Tensor):
        return _jsonable(v.detach().cpu().tolist())
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


@dataclasses.dataclass
class SolvedTask:
    """One remembered task.

    Parameters
    ----------
    goal, modality, scale : str
        What was solved, on what kind of data.
    pipeline : dict
        The final pipeline configuration, tuned parameters included (plain data:
        ``{"mode": ..., "stages": [{"role", "learnware", "config": {"_target_", ...}}]}``).
    scores : dict
        Scores reached (``"score"`` is the headline, higher is better).
    rkme : Embedding, optional
        The RKME of the task's data.
    description, tags : str, tuple
        Free text and keywords.
    time_s : float
        Wall time spent solving.
    provenance : dict
        Versions, host, data source, run folder...
    task_id, created : str
        Filled in by :meth:`TaskLibrary.add` when empty.
    """

    goal: str
    modality: str
    scale: str
    pipeline: dict[str, Any]
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    rkme: Embedding | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    time_s: float = 0.0
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    task_id: str = ""
    created: str = ""

    def to_record(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "rkme"}
        d["tags"] = list(self.tags)
        d["record_version"] = RECORD_VERSION
        if self.rkme is not None:
            d["rkme"] = {
                "gamma": self.rkme.gamma,
                "featurizer": self.rkme.featurizer,
                "method": self.rkme.method,
                "file": "rkme.safetensors",
            }
        else:
            d["rkme"] = None
        return _jsonable(d)

    @property
    def score(self) -> float:
        v = self.scores.get("score")
        return float(v) if v is not None else float("nan")


@dataclasses.dataclass(frozen=True)
class Match:
    """A lookup result: the task, the squared MMD to the query (inf when not comparable)
    and whether the scale matched too."""

    task: SolvedTask
    mmd: float
    same_scale: bool


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class TaskLibrary:
    """Solved tasks stored under ``<root>/tasks`` with an SQLite index.

    Parameters
    ----------
    root : path, optional
        Registry root (default :func:`default_root`).  The library lives in
        ``<root>/tasks``.

    Attributes
    ----------
    unsupported : dict
        Task id -> why its record is refused (written by a newer learndock: unknown record
        version or embedding method).  Such records are never compared; they are left on
        disk untouched.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.path = self.root / "tasks"
        self.path.mkdir(parents=True, exist_ok=True)
        self.unsupported: dict[str, str] = {}
        self._reconcile()

    # -- index ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path / _INDEX, timeout=30)
        try:
            con.execute(
                "CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, goal TEXT, modality TEXT, "
                "scale TEXT, featurizer TEXT, score REAL, time_s REAL, created TEXT, text TEXT)"
            )
            with con:
                yield con
        finally:
            con.close()

    def _index_row(self, t: SolvedTask) -> tuple[Any, ...]:
        text = " ".join([t.goal, t.modality, t.scale, t.description, *t.tags]).lower()
        return (
            t.task_id,
            t.goal,
            t.modality,
            t.scale,
            t.rkme.featurizer if t.rkme else None,
            t.score if math.isfinite(t.score) else None,
            t.time_s,
            t.created,
            text,
        )

    def _reconcile(self) -> None:
        """Remove leftovers of interrupted writes; make the index agree with the records."""
        for p in self.path.iterdir():
            if p.name.startswith(_TMP_PREFIX) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
        on_disk = {
            p.name for p in self.path.iterdir() if p.is_dir() and (p / "record.json").is_file()
        }
        try:
            with self._db() as con:
                indexed = {r[0] for r in con.execute("SELECT task_id FROM tasks")}
                for tid in indexed - on_disk:
                    con.execute("DELETE FROM tasks WHERE task_id = ?", (tid,))
                for tid in sorted(on_disk - indexed):
                    rec = self._readable(tid)
                    if rec is not None:
                        con.execute(
                            "INSERT OR REPLACE INTO tasks VALUES (?,?,?,?,?,?,?,?,?)",
                            self._index_row(rec),
                        )
        except sqlite3.DatabaseError:
            # a damaged index is only a cache: rebuild it from the records
            (self.path / _INDEX).unlink(missing_ok=True)
            with self._db() as con:
                for tid in sorted(on_disk):
                    rec = self._readable(tid)
                    if rec is not None:
                        con.execute(
                            "INSERT OR REPLACE INTO tasks VALUES (?,?,?,?,?,?,?,?,?)",
                            self._index_row(rec),
                        )

    def _readable(self, task_id: str) -> SolvedTask | None:
        """The record, or None when it cannot be used (records written by a newer
        learndock are noted in :attr:`unsupported` and logged, never compared)."""
        try:
            return self.get(task_id)
        except UnsupportedRecordError as exc:
            if task_id not in self.unsupported:
                log.warning("%s", exc)
            self.unsupported[task_id] = str(exc)
        except TaskLibraryError:
            pass
        return None

    # -- write ---------------------------------------------------------------------
    def add(self, task: SolvedTask) -> SolvedTask:
        """Store ``task`` atomically and return it with ``task_id``/``created`` filled in.

        Raises
        ------
        ValueError
            If goal/modality/scale are empty or the pipeline is not a dict.
        """
        for name in ("goal", "modality", "scale"):
            v = getattr(task, name)
            if not isinstance(v, str) or not v:
                raise ValueError(f"{name}: expected a non-empty string, got {v!r}")
        if not isinstance(task.pipeline, Mapping):
            raise ValueError(
                f"pipeline: expected a dict (the pipeline config), got {type(task.pipeline).__name__}"
            )
        task = dataclasses.replace(task, tags=tuple(task.tags))
        if not task.task_id:
            task.task_id = (
                f"{task.goal}-{_dt.datetime.now(_dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
            )
        if not task.created:
            task.created = _now()
        final = self.path / task.task_id
        if final.exists():
            raise ValueError(f"task_id: {task.task_id!r} is already in the library")
        tmp = self.path / f"{_TMP_PREFIX}{task.task_id}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        try:
            if task.rkme is not None:
                from safetensors.numpy import save

                _write_file(
                    tmp / "rkme.safetensors",
                    save({"points": task.rkme.points, "weights": task.rkme.weights}),
                )
            _write_file(
                tmp / "record.json", json.dumps(task.to_record(), indent=2, sort_keys=True).encode()
            )
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(self.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        with self._db() as con:
            con.execute(
                "INSERT OR REPLACE INTO tasks VALUES (?,?,?,?,?,?,?,?,?)", self._index_row(task)
            )
        return task

    def remove(self, task_id: str) -> None:
        """Delete a remembered task (index first, then the files)."""
        d = self.path / task_id
        if not (d / "record.json").is_file():
            raise TaskLibraryError(f"task_id: no task {task_id!r} in {self.path}")
        with self._db() as con:
            con.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
        trash = self.path / f"{_TMP_PREFIX}rm-{task_id}"
        os.rename(d, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # -- read ----------------------------------------------------------------------
    def get(self, task_id: str) -> SolvedTask:
        """Read one record.

        Version-1 records (written before the embedding was versioned) are read with
        their embedding marked :data:`LEGACY_METHOD`; they stay comparable.

        Raises
        ------
        TaskLibraryError
            If there is no such task or its record cannot be read.
        UnsupportedRecordError
            If the record was written by a newer learndock (unknown record version or
            embedding method); the message says which versions this one reads.
        """
        d = self.path / task_id
        try:
            rec = json.loads((d / "record.json").read_text())
        except FileNotFoundError as exc:
            raise TaskLibraryError(f"task_id: no task {task_id!r} in {self.path}") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise TaskLibraryError(f"task {task_id!r}: unreadable record ({exc})") from exc
        version = rec.get("record_version", 1)
        if not isinstance(version, int) or not 1 <= version <= RECORD_VERSION:
            raise UnsupportedRecordError(
                f"task {task_id!r}: record_version {version!r} is not supported by this learndock "
                f"(it reads versions 1..{RECORD_VERSION}); upgrade learndock to use this task library"
            )
        emb = None
        if rec.get("rkme"):
            from safetensors.numpy import load_file

            method = rec["rkme"].get("method") or LEGACY_METHOD
            if method not in KNOWN_METHODS:
                raise UnsupportedRecordError(
                    f"task {task_id!r}: embedding method {method!r} is not supported by this learndock "
                    f"(it reads {list(KNOWN_METHODS)}); upgrade learndock to use this task library"
                )
            arrs = load_file(str(d / rec["rkme"].get("file", "rkme.safetensors")))
            emb = Embedding(
                arrs["points"],
                arrs["weights"],
                rec["rkme"]["gamma"],
                rec["rkme"]["featurizer"],
                method,
            )
        fields = {f.name for f in dataclasses.fields(SolvedTask)}
        kw = {k: v for k, v in rec.items() if k in fields and k != "rkme"}
        kw["tags"] = tuple(kw.get("tags", ()))
        kw["scores"] = {
            k: (float("nan") if v is None else v) for k, v in kw.get("scores", {}).items()
        }
        return SolvedTask(rkme=emb, **kw)

    def __len__(self) -> int:
        with self._db() as con:
            return int(con.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, str) and (self.path / task_id / "record.json").is_file()

    def list(
        self, *, goal: str | None = None, modality: str | None = None, scale: str | None = None
    ) -> list[SolvedTask]:
        """Remembered tasks matching the given fields, oldest first."""
        q, args = "SELECT task_id FROM tasks WHERE 1=1", []
        for col, v in (("goal", goal), ("modality", modality), ("scale", scale)):
            if v is not None:
                q += f" AND {col} = ?"
                args.append(v)
        with self._db() as con:
            ids = [r[0] for r in con.execute(q + " ORDER BY created, task_id", args)]
        out = []
        for tid in ids:
            rec = self._readable(tid)
            if rec is not None:
                out.append(rec)
        return out

    def nearest(
        self,
        *,
        goal: str,
        modality: str | None = None,
        scale: str | None = None,
        rkme: Embedding | Any | None = None,
        k: int = 5,
    ) -> builtins.list[Match]:
        """The ``k`` remembered tasks closest to a query.

        Semantic filter: same ``goal`` and (when given) same ``modality``.  Ranking: tasks
        of the same ``scale`` first, then by squared MMD between ``rkme`` and theirs
        (ascending; ``inf`` when either has no RKME or the featurizers differ), ties
        broken by higher score.

        Parameters
        ----------
        goal, modality, scale : str
            The query's semantic description.
        rkme : Embedding or RKME-like, optional
            The query data's embedding.
        k : int
            How many to return (>= 1).

        Returns
        -------
        list of Match
        """
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected an integer >= 1, got {k!r}")
        cands = self.list(goal=goal, modality=modality)
        if not cands:
            return []
        q = Embedding.from_any(rkme) if rkme is not None else None
        with_emb = [i for i, t in enumerate(cands) if t.rkme is not None]
        dist = np.full(len(cands), np.inf)
        if q is not None and with_emb:
            dist[with_emb] = mmd_batch(q, [cands[i].rkme for i in with_emb])  # type: ignore[misc]
        order = sorted(
            range(len(cands)),
            key=lambda i: (
                scale is not None and cands[i].scale != scale,
                dist[i],
                -(cands[i].score if math.isfinite(cands[i].score) else -np.inf),
            ),
        )
        return [
            Match(cands[i], float(dist[i]), scale is None or cands[i].scale == scale)
            for i in order[:k]
        ]
