"""The spec registry: submit -> check -> store; search by semantics and by RKME.

An embedded registry is a directory (default ``$LEARNDOCK_REGISTRY`` or
``~/.learndock/registry``) holding

* ``index.sqlite`` -- a SQLAlchemy index (one row per learnware: semantic fields, the
  RKME reduced set, its random-Fourier-feature embedding, the file hashes), and
* ``store/ab/abcdef...`` -- a content-addressed file store (sha256 of each package file).

A shared lab registry is the same code with an SQLAlchemy URL for the index
(``Registry(root, index_url="postgresql://...")``) and a shared file system for the store.

Submission (:meth:`Registry.submit`) verifies the package without running code
(:func:`specs.package.verify_package`), instantiates the component through the entry-point
allow-list, runs the example under a time limit and compares it with the expected
output, and only then stores the files and the index row in one transaction.  Files are
staged in ``tmp/`` and moved into the store inside the write transaction (SQLite
``BEGIN IMMEDIATE``, so concurrent submits from several processes serialise); a failed
or interrupted submit leaves no index row, and any file it had moved is removed again.

Search (:meth:`Registry.search`) filters on the semantic spec first (family, task,
modality, scale, tags, words of the text), then ranks the candidates by MMD between the
query RKME (built from the user's data with the candidates' featurizer) and each stored
RKME, batched as one tensor operation (:func:`specs.rkme.batched_mmd`).  For large
registries, a random-Fourier-feature embedding pre-ranks and only a pool of candidates is
re-ranked by exact MMD.  :meth:`Registry.search_mixture` returns ``k`` learnwares with
simplex weights minimising the MMD of the mixture.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from specs.checks import Problem, SubmissionError
from specs.package import (
    LearnwarePackage,
    package_from_members,
    read_package,
    sha256,
    test_package,
    write_members,
)
from specs.rkme import RKME, RFFEmbedding, RKMEStack, batched_mmd, greedy_mixture
from specs.semantic import SemanticSpec

__all__ = [
    "LearnwareRecord",
    "Registry",
    "SearchResult",
    "SpecIndex",
    "default_root",
    "semantic_filter",
    "semantic_match",
]

RFF_DIM = 256
PRERANK_MIN = 4096
"""Registries (after the semantic filter) larger than this are pre-ranked by RFF."""


def default_root() -> Path:
    """``$LEARNDOCK_REGISTRY`` or ``~/.learndock/registry``."""
    env = os.environ.get("LEARNDOCK_REGISTRY")
    return Path(env).expanduser() if env else Path.home() / ".learndock" / "registry"


# --------------------------------------------------------------------------------------
# semantic filtering (shared with the task library)
# --------------------------------------------------------------------------------------
def _words(text: str | None) -> list[str]:
    return [w for w in (text or "").lower().replace(",", " ").split() if w]


def semantic_match(
    spec: SemanticSpec | Mapping[str, Any],
    *,
    family: str | None = None,
    task: str | None = None,
    modality: str | None = None,
    scale: str | None = None,
    tags: Iterable[str] = (),
    text: str | None = None,
) -> float | None:
    """Does a spec pass the semantic filter?  None if not, else a text-relevance score
    in (0, 1]: the fraction of the words of ``text`` found in the spec's text (1 when no
    text is given).  Equality on family/task/modality/scale; every tag must be present.

    Examples
    --------
    >>> s = {"name": "a", "family": "detection", "task": "spot-detection", "modality": "microscopy",
    ...      "scale": "micro", "description": "LoG spots", "tags": ["fluorescence"]}
    >>> semantic_match(s, family="detection", tags=["fluorescence"], text="log spots")
    1.0
    >>> semantic_match(s, family="rules") is None
    True
    """
    d = spec.to_dict() if isinstance(spec, SemanticSpec) else dict(spec)
    for key, want in (("family", family), ("task", task), ("modality", modality), ("scale", scale)):
        if want is not None and d.get(key) != want:
            return None
    have = {str(t).lower() for t in d.get("tags", ())}
    if any(str(t).lower() not in have for t in tags):
        return None
    words = _words(text)
    if not words:
        return 1.0
    hay = " ".join(
        str(d.get(k, "")) for k in ("name", "family", "task", "modality", "scale", "description")
    ).lower()
    hay += " " + " ".join(have)
    hits = sum(1 for w in words if w in hay)
    return hits / len(words) if hits else None


def semantic_filter(
    specs: Sequence[SemanticSpec | Mapping[str, Any]], **filters: Any
) -> list[tuple[int, float]]:
    """Indices (and text scores) of the specs that pass :func:`semantic_match`."""
    out = []
    for i, s in enumerate(specs):
        v = semantic_match(s, **filters)
        if v is not None:
            out.append((i, v))
    return out


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class LearnwareRecord:
    """One registered learnware as stored in the index."""

    id: str
    name: str
    version: str
    spec: dict[str, Any]
    component: str
    params: dict[str, Any]
    featurizer: str
    files: dict[str, str]
    created: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SearchResult:
    """One search hit.

    Attributes
    ----------
    id, name : str
    score : float
        :math:`1 - \\mathrm{MMD}^2/2 \\in [0, 1]` (the squared MMD of Gaussian-kernel
        embeddings is at most 2): 1 for identical embeddings, monotone in the MMD, when
        ranked by data; else the text relevance.
    mmd : float or None
        MMD to the query RKME (None without data).
    spec : dict
        The semantic spec.
    explanation : str
        Why it is here and where it ranks.
    weight : float or None
        Mixture weight (``search_mixture`` only).
    """

    id: str
    name: str
    score: float
    mmd: float | None
    spec: dict[str, Any]
    explanation: str
    weight: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.weight is None:
            d.pop("weight")
        return d


# --------------------------------------------------------------------------------------
# in-memory index of one feature space
# --------------------------------------------------------------------------------------
class SpecIndex:
    """The RKMEs of one feature space, ready for batched search.

    Holds the stacked reduced sets (:class:`specs.rkme.RKMEStack`, self-terms cached per
    bandwidth) and their RFF embeddings at the index bandwidth.

    Parameters
    ----------
    ids : sequence of str
    stack : RKMEStack
    rff : Tensor, optional
        ``(N, D)`` embeddings; computed when absent.
    rff_bandwidth : float, optional
        Bandwidth of the embeddings; default: the median of the stored bandwidths.
    """

    def __init__(
        self,
        ids: Sequence[str],
        stack: RKMEStack,
        *,
        rff: torch.Tensor | None = None,
        rff_bandwidth: float | None = None,
        rff_dim: int = RFF_DIM,
    ) -> None:
        self.ids = list(ids)
        self.stack = stack
        bw = float(rff_bandwidth) if rff_bandwidth else float(stack.bandwidths.median())
        self.embedder = RFFEmbedding(stack.d, bw, dim=rff_dim, featurizer=stack.featurizer)
        self.rff = rff if rff is not None else self.embedder.embed_stack(stack.z, stack.beta)
        self._pos = {k: i for i, k in enumerate(self.ids)}
        self._rff_norm: torch.Tensor | None = None

    @property
    def bandwidth(self) -> float:
        """The kernel bandwidth of this feature space in the registry."""
        return self.embedder.bandwidth

    @classmethod
    def from_rkmes(cls, ids: Sequence[str], rkmes: Sequence[RKME], **kw: Any) -> SpecIndex:
        return cls(ids, RKMEStack(rkmes), **kw)

    def __len__(self) -> int:
        return len(self.ids)

    def query(
        self,
        q: RKME,
        *,
        top: int = 5,
        subset: Sequence[int] | torch.Tensor | None = None,
        prerank: bool | None = None,
        pool: int | None = None,
        bandwidth: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Rank (a subset of) the index by MMD to ``q``.

        The kernel bandwidth is the index's (``bandwidth`` overrides it), so that every
        query of one feature space is measured with the same kernel as the stored
        embeddings; ``prerank`` (default: when more than ``PRERANK_MIN`` candidates)
        pre-selects a ``pool`` by RFF distance before the exact MMD.

        Returns
        -------
        (indices, mmd, score, n_exact)
            Indices into the index (best first, at most ``top``), their MMD and score,
            and how many exact MMDs were computed.
        """
        idx = (
            torch.arange(len(self)) if subset is None else torch.as_tensor(subset, dtype=torch.long)
        )
        if idx.numel() == 0:
            empty = torch.zeros(0)
            return idx, empty.double(), empty.double(), 0
        use_rff = (idx.numel() > PRERANK_MIN) if prerank is None else prerank
        if use_rff:
            e = self.embedder.embed(q)
            if self._rff_norm is None:
                self._rff_norm = (self.rff * self.rff).sum(1)
            if subset is None:  # one matrix-vector product over the stored embeddings
                d2 = self._rff_norm - 2 * (self.rff @ e)
            else:
                d2 = self._rff_norm[idx] - 2 * (self.rff[idx] @ e)
            k = min(idx.numel(), pool or max(50 * top, 1000))
            idx = idx[torch.topk(d2, k, largest=False).indices]
        st = (
            self.stack
            if idx.numel() == len(self) and subset is None and not use_rff
            else self.stack.subset(idx)
        )
        bw = float(bandwidth or self.bandwidth)
        mmd = batched_mmd(q, st, bandwidth=bw)
        k = min(int(top), mmd.numel())
        vals, order = torch.topk(mmd, k, largest=False, sorted=True)
        score = (1 - vals**2 / 2).clamp(0, 1)  # MMD^2 <= 2 for a Gaussian kernel
        return idx[order], vals, score, int(mmd.numel())


# --------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------
_meta = MetaData()
_lw = Table(
    "learnwares",
    _meta,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, index=True),
    Column("version", String(64), nullable=False),
    Column("family", String(32), nullable=False, index=True),
    Column("task", String(64), nullable=False, index=True),
    Column("modality", String(64), nullable=False, index=True),
    Column("scale", String(16), nullable=False, index=True),
    Column("tags", Text, nullable=False),
    Column("spec", Text, nullable=False),
    Column("component", String(200), nullable=False),
    Column("params", Text, nullable=False),
    Column("featurizer", String(100), nullable=False, index=True),
    Column("bandwidth", Float, nullable=False),
    Column("m", Integer, nullable=False),
    Column("d", Integer, nullable=False),
    Column("z", LargeBinary, nullable=False),
    Column("beta", LargeBinary, nullable=False),
    Column("rff", LargeBinary, nullable=False),
    Column("rff_bandwidth", Float, nullable=False),
    Column("files", Text, nullable=False),
    Column("created", Float, nullable=False),
    UniqueConstraint("name", "version", name="uq_name_version"),
)
_kv = Table(
    "meta",
    _meta,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"timeout": 120, "check_same_thread": False})

        @event.listens_for(eng, "connect")
        def _connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=120000")
            cur.close()

        @event.listens_for(eng, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return eng
    return create_engine(url)


class Registry:
    """A learnware registry: SQLAlchemy index + content-addressed file store.

    Parameters
    ----------
    root : path, optional
        Registry directory; default ``$LEARNDOCK_REGISTRY`` or ``~/.learndock/registry``.
        Created when absent.
    index_url : str, optional
        SQLAlchemy URL of the index (a shared lab database); default
        ``sqlite:///<root>/index.sqlite``.
    timeout : float
        Seconds a package's example may run during :meth:`submit`.
    isolation : {"thread", "process"}
        How :meth:`submit` runs a package's example (see :func:`specs.package.test_package`):
        ``"process"`` kills a runaway example at the time limit; use it on a long-lived
        shared registry server.

    Examples
    --------
    >>> import tempfile
    >>> reg = Registry(tempfile.mkdtemp())
    >>> reg.list()
    []
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        index_url: str | None = None,
        timeout: float = 60.0,
        isolation: str = "thread",
    ) -> None:
        from specs.package import ISOLATIONS

        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation: expected one of {ISOLATIONS}, got {isolation!r}")
        self.isolation = isolation
        if isinstance(root, str) and "://" in root and index_url is None:
            index_url, root = root, None
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.timeout = float(timeout)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "store").mkdir(exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self.index_url = index_url or f"sqlite:///{(self.root / 'index.sqlite').resolve()}"
        self.engine = _engine(self.index_url)
        _meta.create_all(self.engine)
        self._indexes: dict[str, tuple[str, SpecIndex, list[dict[str, Any]]]] = {}

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    def close(self) -> None:
        self.engine.dispose()

    # -- store ---------------------------------------------------------------------------
    def _blob_path(self, digest: str) -> Path:
        return self.root / "store" / digest[:2] / digest

    def _read_blob(self, digest: str) -> bytes:
        p = self._blob_path(digest)
        try:
            data = p.read_bytes()
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"registry store is missing file {digest[:16]}... ({p}); the registry is damaged"
            ) from exc
        if sha256(data) != digest:
            raise ValueError(
                f"registry store file {p} does not match its sha256; the registry is damaged"
            )
        return data

    def _members(self, rec: LearnwareRecord) -> dict[str, bytes]:
        return {name: self._read_blob(d) for name, d in rec.files.items()}

    # -- submit --------------------------------------------------------------------------
    def submit(self, path: str | Path | LearnwarePackage, *, timeout: float | None = None) -> str:
        """Check a package and register it; returns its id (``lw-`` + 16 hex digits of the
        manifest's sha256).  Submitting identical content again returns the same id.

        Raises
        ------
        SubmissionError
            With every problem found (bad schema or vocabulary, missing file, wrong hash,
            unsafe path, unknown component, example that does not reproduce or times out,
            name and version already registered with other content).  The registry is
            unchanged.
        """
        pkg = path if isinstance(path, LearnwarePackage) else read_package(path)
        report = test_package(pkg, timeout=timeout or self.timeout, isolation=self.isolation)
        if not report.ok:
            raise SubmissionError(report.problems, f"learnware {pkg.name!r} rejected")
        return self._commit(pkg)

    def _commit(self, pkg: LearnwarePackage) -> str:
        lid = "lw-" + pkg.content_id[:16]
        files = {name: sha256(data) for name, data in pkg.members.items()}
        stage = Path(tempfile.mkdtemp(prefix="submit-", dir=self.root / "tmp"))
        moved: list[Path] = []
        try:
            for name, data in pkg.members.items():
                (stage / files[name]).write_bytes(data)
            rk = pkg.rkme
            with self.engine.begin() as conn:
                row = conn.execute(select(_lw.c.id, _lw.c.files).where(_lw.c.id == lid)).first()
                if row is not None:
                    return lid
                other = conn.execute(
                    select(_lw.c.id).where(
                        _lw.c.name == pkg.spec.name, _lw.c.version == pkg.spec.version
                    )
                ).first()
                if other is not None:
                    raise SubmissionError(
                        [
                            Problem(
                                "duplicate",
                                "learnware.yaml:spec.version",
                                f"{pkg.spec.name} {pkg.spec.version} is already registered as {other[0]} with other content; bump spec.version",
                            )
                        ],
                        f"learnware {pkg.name!r} rejected",
                    )
                key = f"rff_bandwidth:{rk.featurizer}:{rk.d}"
                kv = conn.execute(select(_kv.c.value).where(_kv.c.key == key)).first()
                if kv is None:
                    from specs.features import get_featurizer

                    fb = get_featurizer(rk.featurizer).bandwidth if rk.featurizer != "raw" else None
                    rff_bw = float(fb or rk.bandwidth)
                    conn.execute(insert(_kv).values(key=key, value=repr(rff_bw)))
                else:
                    rff_bw = float(kv[0])
                emb = RFFEmbedding(rk.d, rff_bw, dim=RFF_DIM, featurizer=rk.featurizer).embed(rk)
                for digest in set(files.values()):
                    dest = self._blob_path(digest)
                    if dest.exists():
                        continue
                    dest.parent.mkdir(exist_ok=True)
                    os.replace(stage / digest, dest)
                    moved.append(dest)
                s = pkg.spec
                conn.execute(
                    insert(_lw).values(
                        id=lid,
                        name=s.name,
                        version=s.version,
                        family=s.family,
                        task=s.task,
                        modality=s.modality,
                        scale=s.scale,
                        tags=json.dumps(list(s.tags)),
                        spec=json.dumps(s.to_dict()),
                        component=pkg.component,
                        params=json.dumps(pkg.params),
                        featurizer=rk.featurizer,
                        bandwidth=float(rk.bandwidth),
                        m=rk.m,
                        d=rk.d,
                        z=rk.z.float().numpy().tobytes(),
                        beta=rk.beta.float().numpy().tobytes(),
                        rff=emb.numpy().astype(np.float32).tobytes(),
                        rff_bandwidth=rff_bw,
                        files=json.dumps(files, sort_keys=True),
                        created=time.time(),
                    )
                )
                self._bump(conn)
            moved = []
            return lid
        finally:
            for p in moved:  # the transaction failed: undo the files it placed
                p.unlink(missing_ok=True)
            shutil.rmtree(stage, ignore_errors=True)

    @staticmethod
    def _bump(conn: Any) -> None:
        gen = conn.execute(select(_kv.c.value).where(_kv.c.key == "generation")).first()
        if gen is None:
            conn.execute(insert(_kv).values(key="generation", value="1"))
        else:
            conn.execute(
                update(_kv).where(_kv.c.key == "generation").values(value=str(int(gen[0]) + 1))
            )

    # -- read ----------------------------------------------------------------------------
    @staticmethod
    def _record(row: Any) -> LearnwareRecord:
        return LearnwareRecord(
            id=row.id,
            name=row.name,
            version=row.version,
            spec=json.loads(row.spec),
            component=row.component,
            params=json.loads(row.params),
            featurizer=row.featurizer,
            files=json.loads(row.files),
            created=row.created,
        )

    _cols = (
        "id",
        "name",
        "version",
        "spec",
        "component",
        "params",
        "featurizer",
        "files",
        "created",
    )

    def get(self, id: str) -> LearnwareRecord:
        """A learnware by id, unique id prefix, or name (latest registered version).

        Raises
        ------
        KeyError
            If nothing or more than one learnware matches.
        """
        cols = [_lw.c[c] for c in self._cols]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*cols).where(_lw.c.id == id)).all()
            if not rows:
                rows = (
                    conn.execute(select(*cols).where(_lw.c.id.like(f"{id}%"))).all()
                    if len(id) >= 4
                    else []
                )
            if not rows:
                rows = conn.execute(
                    select(*cols).where(_lw.c.name == id).order_by(_lw.c.created.desc())
                ).all()[:1]
        if not rows:
            raise KeyError(
                f"no learnware {id!r} in the registry at {self.root} (see `learndock registry list`)"
            )
        if len(rows) > 1:
            raise KeyError(
                f"{id!r} is ambiguous: matches {[r.id for r in rows][:5]}; give more characters"
            )
        return self._record(rows[0])

    def list(self, **filters: Any) -> list[LearnwareRecord]:
        """Registered learnwares passing the semantic filter (``family``, ``task``,
        ``modality``, ``scale``, ``tags``, ``text``, ``name``), sorted by name."""
        name = filters.pop("name", None)
        q = select(*[_lw.c[c] for c in self._cols]).order_by(_lw.c.name, _lw.c.version)
        for key in ("family", "task", "modality", "scale"):
            if filters.get(key) is not None:
                q = q.where(_lw.c[key] == filters[key])
        if name:
            q = q.where(_lw.c.name == name)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        recs = [self._record(r) for r in rows]
        return [r for r in recs if semantic_match(r.spec, **filters) is not None]

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(select(_lw.c.id)).all())

    def package(self, id: str) -> LearnwarePackage:
        """The stored package (re-checked)."""
        rec = self.get(id)
        return package_from_members(self._members(rec), f"registry:{rec.id}")

    def load(self, id: str) -> Any:
        """The learnware's component, instantiated through the allow-list with its weights."""
        from specs.package import load_component

        return load_component(self.package(id))

    def rkme(self, id: str) -> RKME:
        return self.package(id).rkme

    def export(self, id: str, out: str | Path) -> Path:
        """Write the learnware's package to ``out`` (directory, or ``.zip``)."""
        rec = self.get(id)
        return write_members(self._members(rec), out)

    def remove(self, id: str) -> str:
        """Unregister a learnware and delete its files no other learnware uses.

        Returns the removed id.
        """
        rec = self.get(id)
        with self.engine.begin() as conn:
            conn.execute(delete(_lw).where(_lw.c.id == rec.id))
            used: set[str] = set()
            for (files,) in conn.execute(select(_lw.c.files)).all():
                used.update(json.loads(files).values())
            self._bump(conn)
            for digest in set(rec.files.values()) - used:
                self._blob_path(digest).unlink(missing_ok=True)
        return rec.id

    # -- seed ----------------------------------------------------------------------------
    def seed(
        self, *, names: Iterable[str] | None = None, strict: bool = True
    ) -> builtins.list[str]:
        """Register every discovered built-in/plug-in learnware declaration (idempotent:
        a name and version already registered is skipped).  Returns the ids.

        A declaration that fails its checks does not stop the others; with ``strict``
        (default) a :class:`SubmissionError` naming every failed learnware is raised
        after the rest are registered, otherwise failures are skipped.
        """
        from components.base import discover_learnwares
        from specs.package import build_package

        wanted = set(names) if names is not None else None
        ids: builtins.list[str] = []
        failed: builtins.list[Problem] = []
        for name, (cls, decl) in discover_learnwares().items():
            if wanted is not None and name not in wanted:
                continue
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(_lw.c.id).where(_lw.c.name == name, _lw.c.version == decl.spec.version)
                ).first()
            if row is not None:
                ids.append(row[0])
                continue
            tmp = Path(tempfile.mkdtemp(prefix="seed-", dir=self.root / "tmp"))
            try:
                out = build_package(cls, decl, tmp / "pkg")
                ids.append(self.submit(out))
            except Exception as exc:
                failed.append(Problem("seed-failed", name, f"{type(exc).__name__}: {exc}"))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        if failed and strict:
            raise SubmissionError(
                failed,
                f"{len(failed)} built-in learnware(s) could not be registered ({len(ids)} were)",
            )
        return ids

    # -- search --------------------------------------------------------------------------
    def _generation(self) -> str:
        with self.engine.connect() as conn:
            row = conn.execute(select(_kv.c.value).where(_kv.c.key == "generation")).first()
        return row[0] if row else "0"

    def _index(
        self, featurizer: str, d: int
    ) -> tuple[SpecIndex, builtins.list[dict[str, Any]]] | None:
        gen = self._generation()
        key = f"{featurizer}|{d}"
        hit = self._indexes.get(key)
        if hit is not None and hit[0] == gen:
            return hit[1], hit[2]
        cols = [
            _lw.c.id,
            _lw.c.name,
            _lw.c.spec,
            _lw.c.bandwidth,
            _lw.c.m,
            _lw.c.z,
            _lw.c.beta,
            _lw.c.rff,
            _lw.c.rff_bandwidth,
        ]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*cols).where(_lw.c.featurizer == featurizer, _lw.c.d == d).order_by(_lw.c.id)
            ).all()
        if not rows:
            return None
        N, mm = len(rows), max(r.m for r in rows)
        z = torch.zeros(N, mm, d)
        beta = torch.zeros(N, mm)
        rff = torch.zeros(N, RFF_DIM)
        for i, r in enumerate(rows):
            z[i, : r.m] = torch.from_numpy(
                np.frombuffer(r.z, dtype=np.float32).reshape(r.m, d).copy()
            )
            beta[i, : r.m] = torch.from_numpy(np.frombuffer(r.beta, dtype=np.float32).copy())
            rff[i] = torch.from_numpy(np.frombuffer(r.rff, dtype=np.float32).copy())
        stack = RKMEStack.from_tensors(
            z,
            beta,
            featurizer=featurizer,
            bandwidths=torch.tensor([r.bandwidth for r in rows], dtype=torch.float64),
        )
        index = SpecIndex([r.id for r in rows], stack, rff=rff, rff_bandwidth=rows[0].rff_bandwidth)
        info = [{"id": r.id, "name": r.name, "spec": json.loads(r.spec)} for r in rows]
        self._indexes[key] = (gen, index, info)
        return index, info

    def _query_rkme(self, data: Any, featurizer: str, modality: str | None) -> RKME:
        return RKME.from_data(data, modality=modality, featurizer=featurizer, m=64, seed=0)

    def _ranked(
        self,
        *,
        family: str | None,
        task: str | None,
        modality: str | None,
        scale: str | None,
        tags: Iterable[str],
        text: str | None,
        data: Any,
        rkme: RKME | None,
        top: int,
    ) -> tuple[builtins.list[SearchResult], dict[str, Any]]:
        tags = [tags] if isinstance(tags, str) else list(tags)
        if data is not None and modality is None and hasattr(data, "modality"):
            modality = data.modality
        filt = {
            "family": family,
            "task": task,
            "modality": modality,
            "scale": scale,
            "tags": tags,
            "text": text,
        }
        sem = ", ".join(f"{k}={v}" for k, v in filt.items() if v not in (None, [], ()))
        sem = f"semantic filter ({sem})" if sem else "no semantic filter"
        q = select(_lw.c.id, _lw.c.name, _lw.c.spec, _lw.c.featurizer, _lw.c.d)
        for key in ("family", "task", "modality", "scale"):
            if filt[key] is not None:
                q = q.where(_lw.c[key] == filt[key])
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        cands = []
        for r in rows:
            spec = json.loads(r.spec)
            s = semantic_match(spec, tags=tags, text=text)
            if s is not None:
                cands.append((r, spec, s))
        ctx: dict[str, Any] = {"n_semantic": len(cands), "sem": sem}
        if data is None and rkme is None:
            cands.sort(key=lambda c: (-c[2], c[0].name))
            res = [
                SearchResult(
                    r.id,
                    r.name,
                    float(s),
                    None,
                    spec,
                    f"{sem}; text relevance {s:.2f}; no data given, so not ranked by RKME",
                )
                for r, spec, s in cands[:top]
            ]
            return res, ctx
        if not cands:
            return [], ctx
        groups: dict[tuple[str, int], builtins.list[str]] = {}
        for r, _spec, _s in cands:
            groups.setdefault((r.featurizer, r.d), []).append(r.id)
        if rkme is None and modality is None and len({f for f, _ in groups}) > 1:
            raise ValueError(
                f"modality: the candidates span several feature spaces {sorted({f for f, _ in groups})}; "
                "give modality= (or a semantic filter) so that the data is featurized the right way"
            )
        results: builtins.list[SearchResult] = []
        ctx["groups"] = []
        for (feat, d), ids in groups.items():
            if rkme is not None:
                if rkme.featurizer != feat or rkme.d != d:
                    continue
                qr = rkme
            else:
                try:
                    qr = self._query_rkme(data, feat, modality)
                except ValueError:
                    continue  # this feature space cannot read the user's data
                if qr.d != d:
                    continue
            got = self._index(feat, d)
            if got is None:
                continue
            index, info = got
            subset = [index._pos[i] for i in ids if i in index._pos]
            idx, mmd, score, n_exact = index.query(
                qr, top=top, subset=None if len(subset) == len(index) else subset
            )
            ctx["groups"].append((feat, d, qr, index, subset))
            for rank, (i, v, sc) in enumerate(zip(idx.tolist(), mmd.tolist(), score.tolist()), 1):
                how = "RFF pre-ranking then exact MMD" if n_exact < len(subset) else "exact MMD"
                results.append(
                    SearchResult(
                        info[i]["id"],
                        info[i]["name"],
                        float(sc),
                        float(v),
                        info[i]["spec"],
                        f"{sem} kept {len(subset)} in feature space {feat}; MMD {v:.4g} to the query RKME "
                        f"(bandwidth {index.bandwidth:.3g}, {how} over {n_exact}); rank {rank}",
                    )
                )
        results.sort(key=lambda r: r.mmd if r.mmd is not None else math.inf)
        return results[:top], ctx

    def search(
        self,
        *,
        family: str | None = None,
        task: str | None = None,
        modality: str | None = None,
        scale: str | None = None,
        tags: Iterable[str] = (),
        text: str | None = None,
        data: Any = None,
        rkme: RKME | None = None,
        top: int = 5,
    ) -> builtins.list[SearchResult]:
        """Semantic filter, then MMD ranking to the query RKME.

        Parameters
        ----------
        family, task, modality, scale : str, optional
            Equality filters on the semantic spec.
        tags : iterable of str
            Every tag must be present.
        text : str, optional
            Words that must occur (any of them; the score counts the fraction found).
        data : raw data, optional
            The user's sample; featurized with each candidate group's featurizer and
            summarised as a query RKME (never stored or sent anywhere).
        rkme : RKME, optional
            A ready query RKME (instead of ``data``).
        top : int
            Number of results.

        Returns
        -------
        list of SearchResult
            Best first: by MMD when data or an RKME is given, else by text relevance.
        """
        if not isinstance(top, int) or top < 1:
            raise ValueError(f"top: expected a positive integer, got {top!r}")
        res, _ = self._ranked(
            family=family,
            task=task,
            modality=modality,
            scale=scale,
            tags=tags,
            text=text,
            data=data,
            rkme=rkme,
            top=top,
        )
        return res

    def search_mixture(
        self,
        *,
        family: str | None = None,
        task: str | None = None,
        modality: str | None = None,
        scale: str | None = None,
        tags: Iterable[str] = (),
        text: str | None = None,
        data: Any = None,
        rkme: RKME | None = None,
        k: int = 3,
        candidates: int = 20,
        min_gain: float = 0.05,
    ) -> builtins.list[SearchResult]:
        """``k`` learnwares (at most) whose weighted mixture best matches the query data.

        The ``candidates`` best single matches are the pool; greedy forward selection adds
        a learnware only if it cuts the squared mixture MMD by at least ``min_gain``, and
        the simplex weights are re-solved as a small QP at each step
        (:func:`specs.rkme.greedy_mixture`).

        Returns
        -------
        list of SearchResult
            With ``weight`` set (summing to one), in selection order.

        Raises
        ------
        ValueError
            If neither ``data`` nor ``rkme`` is given.
        """
        if data is None and rkme is None:
            raise ValueError(
                "data: search_mixture needs the user's data (or a query rkme) to weigh learnwares"
            )
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected a positive integer, got {k!r}")
        singles, ctx = self._ranked(
            family=family,
            task=task,
            modality=modality,
            scale=scale,
            tags=tags,
            text=text,
            data=data,
            rkme=rkme,
            top=max(candidates, k),
        )
        if not singles:
            return []
        best = singles[0]
        for feat, _d, qr, index, _subset in ctx["groups"]:
            if best.id not in index._pos:
                continue
            pool = [index._pos[r.id] for r in singles if r.id in index._pos]
            chosen, w, mix = greedy_mixture(
                qr, index.stack.subset(torch.tensor(pool)), k=k, min_gain=min_gain
            )
            by_id = {r.id: r for r in singles}
            out = []
            for j, wt in zip(chosen, w.tolist()):
                r = by_id[index.ids[pool[j]]]
                out.append(
                    dataclasses.replace(
                        r,
                        weight=float(wt),
                        explanation=f"{r.explanation}; mixture of {len(chosen)} from the best {len(pool)} (greedy, min gain {min_gain:g}): weight {wt:.3f}, mixture MMD {mix:.4g} (best single {best.mmd:.4g}) in {feat}",
                    )
                )
            return out
        return []
