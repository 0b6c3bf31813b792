"""Chunked, resumable processing of archives larger than memory.

:func:`run_batch` applies a component, a pipeline or a plain array function over a
dataset block by block with halos (:func:`dask.array.map_overlap`), and writes each
block into its own shard of a Zarr v3 output array.  The unit of work, of storage and of
restart is the same: **one dask block = one output shard = one completion marker**.

Durability protocol, per shard:

1. the block (with its halo) is computed and trimmed;
2. it is written into its shard (``zarr`` region write), and the shard file is fsynced;
3. only then the marker ``.batch/done/<i>_<j>_...`` is written (to a temporary name,
   atomically renamed, directory fsynced; only its name counts).

A run killed at any point leaves every shard either marked (complete and durable) or
unmarked (absent, partial or complete but unconfirmed).  Re-running the same job skips
marked shards and recomputes the others, overwriting whole shards, so the resumed output
is bit-for-bit the output of an uninterrupted run and nothing is lost.  A job fingerprint
(``.batch/job.json``) stops a different job from resuming into the same output.

Components returning a row table (``positions`` plus per-row fields, e.g.
``detection.spots``) also get their rows kept per shard, in global coordinates and in
the shard's core only (``output/table``, :func:`read_table`).  Ragged light-curve
archives (many targets back to back) are processed a run of whole targets per task,
with one durable part file and one marker per task (:func:`read_targets`).

Schedulers: ``"local"`` (dask threads, the default), ``"synchronous"``,
``"distributed"`` (a ``dask.distributed.LocalCluster``), ``"slurm"``
(``dask_jobqueue.SLURMCluster``) or the address of a running dask scheduler
(``"tcp://host:8786"``).  Memory is bounded by the block size: at most ``n_workers`` blocks
(with halos) are in flight, and ``memory_limit`` is checked against that estimate before
anything runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from pipelines.io.core import Dataset, file_checksum, open_dataset

__all__ = [
    "BatchResult",
    "TargetOutputs",
    "completed_shards",
    "parse_memory",
    "read_table",
    "read_targets",
    "resolve_halo",
    "run_batch",
]

log = logging.getLogger("learndock.batch")

SCHEDULERS = ("local", "synchronous", "distributed", "slurm")
_STATE_DIR = ".batch"


@dataclasses.dataclass
class BatchResult:
    """What a :func:`run_batch` call did.

    Attributes
    ----------
    output : pathlib.Path
        The output Zarr group; the result array is ``output/data``.
    shape, chunks, dtype
        Of the result array (``chunks`` = the shard shape).
    n_shards : int
        Total number of shards (= dask blocks).
    n_skipped : int
        Shards found complete and skipped (resume).
    n_computed : int
        Shards computed by this call.
    seconds : float
        Wall time of this call.
    provenance : dict
        The record saved as ``provenance.json``.
    """

    output: Path
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    n_shards: int
    n_skipped: int
    n_computed: int
    seconds: float
    provenance: dict[str, Any]

    def open(self) -> Dataset:
        """The output as a :class:`~pipelines.io.Dataset` (image runs)."""
        if self.dtype == "record":
            raise ValueError(
                f"output: {self.output} holds per-target outputs of a light-curve archive; "
                "read them with .targets() or .table()"
            )
        return open_dataset(self.output)

    def table(self) -> dict[str, np.ndarray]:
        """The concatenated row table (see :func:`read_table`)."""
        return read_table(self.output)

    def targets(self) -> TargetOutputs:
        """Per-target outputs of a ragged light-curve run (see :func:`read_targets`)."""
        return read_targets(self.output)


# --------------------------------------------------------------------------------------
# helpers: memory, halo, function wrapping
# --------------------------------------------------------------------------------------
def parse_memory(value: int | float | str | None) -> int | None:
    """Bytes from ``2_000_000_000``, ``"2GB"``, ``"1.5 GiB"``, ``"512MB"`` (None passes).

    Examples
    --------
    >>> parse_memory("2GB"), parse_memory("1 GiB"), parse_memory(1000)
    (2000000000, 1073741824, 1000)
    """
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"memory_limit: expected a positive number of bytes, got {value!r}")
        return int(value)
    s = str(value).strip().replace(" ", "")
    units = {
        "": 1,
        "B": 1,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "TIB": 2**40,
    }
    num = s.rstrip("BbKkMmGgTtIi")
    unit = s[len(num) :].upper()
    try:
        n = float(num)
    except ValueError:
        n = -1.0
    if unit not in units or n <= 0:
        raise ValueError(
            f"memory_limit: expected bytes or a size like '2GB' or '1.5GiB', got {value!r}"
        )
    return int(n * units[unit])


def resolve_halo(
    fn: Any, ndim: int, halo: int | Sequence[int] | Mapping[int, int] | None
) -> tuple[int, ...]:
    """Per-axis halo: from ``halo`` if given, else from ``fn.footprint`` (default 0).

    An int applies to every axis; a sequence shorter than ``ndim`` is aligned to the
    trailing axes (a component's ``footprint=(2, 2)`` on a ``t y x`` stack pads y and x
    only); a mapping gives ``{axis index: halo}``.
    """
    value = halo if halo is not None else getattr(fn, "footprint", 0)
    if isinstance(value, Mapping):
        out = [0] * ndim
        for k, v in value.items():
            if not -ndim <= int(k) < ndim:
                raise ValueError(f"halo: axis {k} out of range for {ndim} dimensions")
            out[int(k)] = int(v)
    elif isinstance(value, int | np.integer):
        out = [int(value)] * ndim
    else:
        seq = [int(v) for v in value]
        if len(seq) > ndim:
            raise ValueError(
                f"halo: expected at most {ndim} entries (one per axis), got {tuple(seq)}"
            )
        out = [0] * (ndim - len(seq)) + seq
    if any(v < 0 for v in out):
        raise ValueError(f"halo: expected non-negative sizes, got {tuple(out)}")
    return tuple(out)


def _is_module(fn: Any) -> bool:
    """True for a ``torch.nn.Module`` (without importing torch when it is not loaded)."""
    nn = sys.modules.get("torch.nn")
    return nn is not None and isinstance(fn, nn.Module)


def _describe_fn(fn: Any) -> dict[str, Any]:
    if _is_module(fn):
        desc: dict[str, Any] = {
            "kind": "module",
            "class": f"{type(fn).__module__}.{type(fn).__qualname__}",
        }
        if hasattr(fn, "hydra_config"):
            with contextlib.suppress(Exception):
                desc["config"] = fn.hydra_config()
        h = hashlib.sha256()
        for k, v in sorted(fn.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        desc["state_sha256"] = h.hexdigest()
        return desc
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    desc = {"kind": "function", "name": f"{getattr(fn, '__module__', '?')}.{name}"}
    call = type(fn).__call__ if not hasattr(fn, "__code__") and callable(fn) else None
    code = getattr(fn, "__code__", None) or getattr(call, "__code__", None)
    if code is not None:  # the function's body, not the lines around it (lambdas)
        h = hashlib.sha256(_code_digest(code).encode())
        h.update(repr(getattr(fn, "__defaults__", None)).encode())
        desc["code_sha256"] = h.hexdigest()
    return desc


def _code_digest(code: Any) -> str:
    """A process-independent digest of a code object (bytecode, constants, names)."""
    parts = [code.co_code.hex(), repr(code.co_names)]
    for c in code.co_consts:
        parts.append(_code_digest(c) if hasattr(c, "co_code") else repr(c))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _to_numpy(value: Any) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _is_structured(out: Any) -> bool:
    return (
        isinstance(out, Mapping | tuple | list)
        or (dataclasses.is_dataclass(out) and not isinstance(out, type))
    ) and not isinstance(out, np.ndarray)


def _output_fields(out: Any) -> dict[str, Any]:
    """Named outputs of one call: a dict, a dataclass, a named tuple, a tuple or one array."""
    if isinstance(out, Mapping):
        return {str(k): v for k, v in out.items()}
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return {str(k): getattr(out, k) for k in out._fields}
    if isinstance(out, tuple | list):
        return {f"out{i}": v for i, v in enumerate(out)}
    return {"data": out}


def _select_map(
    raw: Any, shape: tuple[int, ...], output_key: str | None, who: str
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The block-shaped output to store as the image (and all named fields, if any)."""
    if not _is_structured(raw):
        return _to_numpy(raw), None
    fields = _output_fields(raw)
    if output_key is not None:
        if output_key not in fields:
            raise ValueError(
                f"output_key: expected one of the outputs {sorted(fields)} of {who}, got {output_key!r}"
            )
        return _to_numpy(fields[output_key]), fields
    for v in fields.values():
        if hasattr(v, "shape") and tuple(v.shape) == tuple(shape):
            return _to_numpy(v), fields
    raise ValueError(
        f"fn: the output of {who} ({type(raw).__name__} with fields {sorted(fields)}) holds no "
        f"array of the block shape {tuple(shape)}; pass output_key= to choose the map to store"
    )


class _TableSink:
    """Writes the rows of one block's table (in global coordinates, core rows only)."""

    def __init__(
        self,
        root: str,
        key: str,
        chunks: tuple[tuple[int, ...], ...],
        depth: Mapping[int, int],
        *,
        durable: bool,
    ) -> None:
        self.root = root
        self.key = key
        self.offsets = [np.concatenate([[0], np.cumsum(c)]).astype(int).tolist() for c in chunks]
        self.depth = [int(depth.get(ax, 0)) for ax in range(len(chunks))]
        self.durable = durable

    def rows(
        self, fields: Mapping[str, Any], shape: tuple[int, ...], block_id: tuple[int, ...]
    ) -> dict[str, np.ndarray]:
        """The table of one block: row fields, positions shifted to global coordinates,
        only the rows whose nearest pixel lies in the block's core (not its halo)."""
        ndim = len(shape)
        pos = _to_numpy(fields[self.key]).astype(np.float64)
        if pos.ndim != 2 or pos.shape[1] != ndim:
            raise ValueError(
                f"fn: table field {self.key!r} must have shape (rows, {ndim}) (one coordinate per "
                f"axis of the block {tuple(shape)}), got {tuple(pos.shape)}"
            )
        n = pos.shape[0]
        origin = np.array(
            [o[b] - (d if b > 0 else 0) for o, b, d in zip(self.offsets, block_id, self.depth)],
            dtype=np.float64,
        )
        lo = np.array([o[b] for o, b in zip(self.offsets, block_id)])
        hi = np.array([o[b + 1] for o, b in zip(self.offsets, block_id)])
        gpos = pos + origin
        idx = np.floor(gpos + 0.5)
        keep = np.all((idx >= lo) & (idx < hi), axis=1) if n else np.zeros(0, bool)
        table = {self.key: gpos[keep]}
        for k, v in fields.items():
            if k == self.key or not hasattr(v, "shape") or len(v.shape) < 1:
                continue
            if int(v.shape[0]) != n or tuple(v.shape) == tuple(shape):
                continue
            table[k] = _to_numpy(v)[keep]
        return table

    def write(
        self, fields: Mapping[str, Any], shape: tuple[int, ...], block_id: tuple[int, ...]
    ) -> None:
        path = Path(self.root) / "tables" / "parts" / f"{_marker_name(block_id)}.npz"
        _write_npz(path, self.rows(fields, shape, block_id), durable=self.durable)


class _BlockFunction:
    """Picklable wrapper: numpy block -> numpy block, for modules and plain functions.

    With a table sink, an output holding a row table (a ``positions`` field of shape
    ``(rows, ndim)`` plus per-row fields, e.g. :class:`~components.detection.spots.SpotTable`)
    also writes the block's rows (global coordinates, core rows only) before returning
    the map, so that they are durable before the shard's marker.
    """

    def __init__(self, fn: Any, *, output_key: str | None = None, device: str = "cpu") -> None:
        self.fn = fn
        self.output_key = output_key
        self.device = device
        self.table: _TableSink | None = None

    def _who(self) -> str:
        d = _describe_fn(self.fn)
        return str(d.get("class") or d.get("name"))

    def raw(self, block: np.ndarray) -> Any:
        """The function's own output for one block."""
        if _is_module(self.fn):
            return _run_module(self.fn, block, self.device)
        return self.fn(block)

    def __call__(self, block: np.ndarray, block_id: tuple[int, ...] | None = None) -> np.ndarray:
        raw = self.raw(block)
        out, fields = _select_map(raw, tuple(block.shape), self.output_key, self._who())
        if out.shape != block.shape:
            raise ValueError(
                f"fn: the batch runner needs an output block of the input block's shape {block.shape}, "
                f"got {out.shape} from {self._who()}"
            )
        if self.table is not None and block_id is not None:
            if fields is None or self.table.key not in fields:
                raise ValueError(
                    f"table: expected the output of {self._who()} to hold a {self.table.key!r} field "
                    f"(rows, ndim), got {sorted(fields) if fields else type(raw).__name__}"
                )
            self.table.write(fields, tuple(block.shape), tuple(int(i) for i in block_id))
        return out

    def has_table(self, block: np.ndarray, key: str) -> bool:
        """Whether the output for ``block`` holds a row table under ``key``."""
        raw = self.raw(block)
        return _is_structured(raw) and key in _output_fields(raw)


def _run_module(module: Any, block: np.ndarray, device: str) -> Any:
    import torch

    arr = np.ascontiguousarray(block)
    if arr.dtype.kind in "iub":
        t = torch.from_numpy(arr.astype(np.float32))  # by value, never rescaled
    elif arr.dtype == np.float16:
        t = torch.from_numpy(arr.astype(np.float32))
    else:
        t = torch.from_numpy(arr)
    module = module.to(device).eval()
    with torch.no_grad():
        out = module(t.to(device))
    if not isinstance(out, torch.Tensor) and not _is_structured(out):
        raise TypeError(
            f"fn: module returned {type(out).__name__}; expected a tensor (or a dict/tuple/dataclass holding one)"
        )
    return out


# --------------------------------------------------------------------------------------
# shards and markers
# --------------------------------------------------------------------------------------
def _fsync_path(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(str(path), flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _marker_name(idx: Sequence[int]) -> str:
    return "_".join(str(int(i)) for i in idx)


def completed_shards(output: str | os.PathLike[str]) -> set[tuple[int, ...]]:
    """Block indices whose completion marker exists under ``output/.batch/done``."""
    d = Path(output) / _STATE_DIR / "done"
    if not d.is_dir():
        return set()
    out = set()
    for f in d.iterdir():
        if f.name.startswith(".") or f.name.endswith(".tmp"):
            continue
        with contextlib.suppress(ValueError):
            out.add(tuple(int(v) for v in f.name.split("_")))
    return out


def _write_marker(root: str | Path, name: str, record: Mapping[str, Any], *, durable: bool) -> None:
    """Write the completion marker ``root/.batch/done/<name>`` atomically (and durably).

    Only the marker's *name* says "done" (:func:`completed_shards`); its JSON content is
    informative.  So the file itself is not fsynced (one journal commit fewer per
    shard): the data it vouches for was made durable before, and after a crash a
    marker is either absent (the shard is recomputed) or present, possibly empty.
    The directory is fsynced after the rename so that a completed shard stays done.
    """
    done = Path(root) / _STATE_DIR / "done"
    tmp = done / f".{name}.{os.getpid()}.tmp"
    rec = {**record, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
    with tmp.open("w") as f:
        f.write(json.dumps(_jsonable(rec)))
    os.replace(tmp, done / name)
    if durable:
        _fsync_path(done, directory=True)


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray], *, durable: bool) -> None:
    """Write ``arrays`` as one uncompressed ``.npz`` (no pickled objects), atomically.

    The file is written under a temporary name, fsynced, renamed into place and its
    directory fsynced, so that a reader (and a completion marker written afterwards)
    never sees a torn part.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    for k, v in arrays.items():
        if np.asarray(v).dtype.kind == "O":
            raise TypeError(f"output field {k!r}: object arrays cannot be stored (no pickle)")
    with tmp.open("wb") as f:
        payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        np.savez(f, **payload)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        _fsync_path(path.parent, directory=True)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class _ShardWriter:
    """Writes one block into its shard, makes it durable, then writes its marker.

    With ``background=True`` (local scheduler only: the writer object is shared by the
    threads, never pickled) the fsync and the marker run on a small thread pool, so that
    the compute threads do not wait on the disk; :meth:`drain` waits for them.  The
    order per shard is unchanged: data, fsync, then marker.
    """

    def __init__(
        self,
        root: str,
        array: str,
        chunks: tuple[tuple[int, ...], ...],
        *,
        durable: bool = True,
        background: bool = False,
    ) -> None:
        self.root = root
        self.array = array
        self.durable = durable
        self.background = background
        self.offsets = [np.concatenate([[0], np.cumsum(c)]).astype(int).tolist() for c in chunks]
        self._z: Any = None
        self._pool: Any = None
        self._futures: list[Any] = []

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_z": None, "_pool": None, "_futures": [], "background": False}

    def _array(self) -> Any:
        if self._z is None:
            self._z = zarr.open_array(str(Path(self.root) / self.array), mode="r+")
        return self._z

    def __call__(self, block: np.ndarray, block_id: tuple[int, ...] | None = None) -> np.ndarray:
        assert block_id is not None
        region = tuple(slice(o[i], o[i + 1]) for o, i in zip(self.offsets, block_id))
        z = self._array()
        key = z.metadata.encode_chunk_key(tuple(int(i) for i in block_id))
        shard_file = Path(self.root) / self.array / key
        # A shard left by an interrupted run may be torn; zarr would read it back to merge
        # the inner chunks, so an unmarked shard is removed before it is rewritten whole.
        with contextlib.suppress(FileNotFoundError):
            shard_file.unlink()
        z[region] = block
        if self.background:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="learndock-fsync")
            self._futures.append(self._pool.submit(self._commit, shard_file, block_id, region))
        else:
            self._commit(shard_file, block_id, region)
        return np.ones((1,) * block.ndim, dtype=np.int8)

    def _commit(
        self, shard_file: Path, block_id: tuple[int, ...], region: tuple[slice, ...]
    ) -> None:
        if self.durable:  # the shard reaches the disk before the marker says it is complete
            _fsync_path(shard_file)
            _fsync_path(shard_file.parent, directory=True)
        _write_marker(
            self.root,
            _marker_name(block_id),
            {"region": [[sl.start, sl.stop] for sl in region]},
            durable=self.durable,
        )

    def drain(self) -> None:
        """Wait for the background commits (re-raising their errors)."""
        futures, self._futures = self._futures, []
        try:
            for fut in futures:
                fut.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


# --------------------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------------------
def _git_hash() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in (
        "learndock",
        "numpy",
        "dask",
        "distributed",
        "zarr",
        "torch",
        "ome-zarr",
        "astropy",
        "ezc3d",
        "dask-jobqueue",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _execute(
    graph: dict[Any, Any],
    keys: list[Any],
    *,
    store_name: str,
    scheduler: str,
    n_workers: int,
    threads_per_worker: int,
    memory_limit: Any,
    cluster_options: Mapping[str, Any] | None,
    cores: int,
    progress: Any,
    state: Path,
    drain: Callable[[], None] | None = None,
) -> None:
    """Run a job's task graph on the local pool (torch threads shared out among the
    workers, restored after) or on a distributed cluster; ``drain`` waits for pending
    writes (also after a failure, so that started commits end).  Closes ``progress``."""
    torch_threads = None
    try:
        torch = sys.modules.get("torch")
        if scheduler in ("local", "synchronous"):
            if torch is not None and scheduler == "local" and n_workers > 1:
                torch_threads = torch.get_num_threads()
                torch.set_num_threads(max(1, cores // n_workers))
            _run_local(
                graph,
                keys,
                store_name=store_name,
                n_workers=n_workers,
                synchronous=scheduler == "synchronous",
                progress=progress,
                state=state,
            )
            if drain is not None:
                drain()
        else:
            with _cluster(
                scheduler,
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                memory_limit=memory_limit,
                cluster_options=cluster_options or {},
            ) as client:
                _run_distributed(graph, keys, client=client, progress=progress, state=state)
    finally:
        if drain is not None:
            with contextlib.suppress(Exception):  # after a failure: let pending commits end
                drain()
        progress.close()
        if torch_threads is not None:
            sys.modules["torch"].set_num_threads(torch_threads)


def _write_job_record(state: Path, job: Mapping[str, Any], **extra: Any) -> None:
    """Write ``.batch/job.json`` (the job's identity, compared on resume) atomically."""
    tmp = state / "job.json.tmp"
    record = {"job": _jsonable(job), **extra, "created": _dt.datetime.now(_dt.UTC).isoformat()}
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, state / "job.json")


def _provenance(
    config: dict[str, Any], input_info: Any, output: dict[str, Any], cores: Any
) -> dict[str, Any]:
    """The ``provenance`` record of a batch job (image shards or ragged targets)."""
    return {
        "learndock_batch": 1,
        "created": _dt.datetime.now(_dt.UTC).isoformat(),
        "config": _jsonable(config),
        "versions": _versions(),
        "git": _git_hash(),
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(), "cpus": cores},
        "inputs": [_jsonable(input_info)],
        "output": output,
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.integer | np.floating | np.bool_):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist() if x.size <= 64 else f"ndarray{x.shape}"
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return repr(x)


# --------------------------------------------------------------------------------------
# input resolution
# --------------------------------------------------------------------------------------
def _resolve_input(
    input: Any, array: str | None
) -> tuple[da.Array, Dataset | None, dict[str, Any]]:
    ds: Dataset | None = None
    if isinstance(input, str | os.PathLike):
        ds = open_dataset(input)
    elif isinstance(input, Dataset):
        ds = input
    if ds is not None:
        data = ds.data
        if isinstance(data, Mapping):
            if array is None:
                raise ValueError(
                    f"array: {ds.path} holds several arrays {sorted(data)}; pass array= to choose one"
                )
            if array not in data:
                raise ValueError(f"array: expected one of {sorted(data)}, got {array!r}")
            data = data[array]
        src = dict(ds.provenance.get("source") or {})
        if ds.path and src.get("kind") in (None, "manifest") and Path(ds.path).exists():
            src = file_checksum(ds.path)
        return data, ds, {"path": ds.path, "format": ds.format, "array": array, "checksum": src}
    if isinstance(input, da.Array):
        return input, None, {"path": None, "format": "dask", "name": input.name}
    if isinstance(input, np.ndarray):
        h = hashlib.sha256(np.ascontiguousarray(input).tobytes()).hexdigest()
        return (
            da.from_array(input),
            None,
            {"path": None, "format": "numpy", "checksum": {"sha256": h, "kind": "full"}},
        )
    raise TypeError(
        f"input: expected a path, a Dataset, a dask array or a numpy array, got {type(input).__name__}"
    )


def _normalize_chunks(x: da.Array, chunks: Any) -> da.Array:
    if chunks is not None:
        x = x.rechunk(chunks)
    # a regular grid (all chunks equal but the last along each axis) maps onto shards
    regular = all(len(set(c[:-1])) <= 1 and (len(c) == 1 or c[-1] <= c[0]) for c in x.chunks)
    if not regular:
        x = x.rechunk(tuple(max(c) for c in x.chunks))
    return x


def _check_halo(x: da.Array, halo: tuple[int, ...]) -> dict[int, int]:
    depth = {}
    for ax, (h, c) in enumerate(zip(halo, x.chunks)):
        if h == 0 or len(c) == 1:
            depth[ax] = 0  # a single block along this axis needs no neighbours
            continue
        if min(c) < h:
            raise ValueError(
                f"chunks: axis {ax} has blocks as small as {min(c)} samples, smaller than the halo {h}; "
                f"use chunks of at least {h} samples along axis {ax} (or a smaller halo)"
            )
        depth[ax] = h
    return depth


def _estimate_task_bytes(x: da.Array, depth: Mapping[int, int], out_dtype: np.dtype) -> int:
    shape = [max(c) + 2 * depth.get(ax, 0) for ax, c in enumerate(x.chunks)]
    n = math.prod(shape)
    work = max(x.dtype.itemsize, 4, out_dtype.itemsize)
    # the input block with halo, its float copy, the function's temporaries, the output
    return int(n * (x.dtype.itemsize + 3 * work + out_dtype.itemsize))


# --------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------
class _Progress:
    """A rich progress bar on a terminal, periodic log lines otherwise."""

    def __init__(self, total: int, *, enabled: bool | None, interval: float, label: str) -> None:
        self.total, self.done, self.interval, self.label = total, 0, interval, label
        tty = sys.stderr.isatty()
        self.bar = None
        self.quiet = enabled is False
        if not self.quiet and (enabled or tty) and tty:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} shards"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self.task = self.bar.add_task(label, total=total)
            self.bar.start()
        self.t0 = self.last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
            return
        now = time.monotonic()
        if not self.quiet and (now - self.last >= self.interval or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info(
                "%s: %d/%d shards (%.1f%%), %.2f shards/s, eta %.0f s",
                self.label,
                self.done,
                self.total,
                100 * self.done / max(self.total, 1),
                rate,
                eta,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# --------------------------------------------------------------------------------------
# execution back ends
# --------------------------------------------------------------------------------------
def _summarize_profile(records: list[tuple[str, float, float, str]]) -> dict[str, Any]:
    by: dict[str, list[float]] = {}
    t_min = min((r[1] for r in records), default=0.0)
    t_max = max((r[2] for r in records), default=0.0)
    for prefix, start, stop, _worker in records:
        by.setdefault(prefix, []).append(stop - start)
    tasks = {
        k: {
            "count": len(v),
            "total_s": float(sum(v)),
            "mean_s": float(np.mean(v)),
            "max_s": float(max(v)),
        }
        for k, v in sorted(by.items(), key=lambda kv: -sum(kv[1]))
    }
    workers = sorted({r[3] for r in records})
    return {
        "wall_s": float(t_max - t_min),
        "n_tasks": len(records),
        "workers": workers,
        "tasks": tasks,
    }


def _write_report(state: Path, summary: Mapping[str, Any], scheduler: str) -> None:
    (state / "dask-performance.json").write_text(json.dumps(_jsonable(summary), indent=2))
    rows = "".join(
        f"<tr><td>{k}</td><td>{v['count']}</td><td>{v['total_s']:.3f}</td><td>{v['mean_s']:.4f}</td><td>{v['max_s']:.4f}</td></tr>"
        for k, v in summary.get("tasks", {}).items()
    )
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>dask performance</title></head><body>"
        f"<h1>dask performance ({scheduler})</h1><p>wall {summary.get('wall_s', 0):.3f} s, {summary.get('n_tasks', 0)} tasks, "
        f"workers: {', '.join(map(str, summary.get('workers', [])))}</p>"
        "<table border='1'><tr><th>task</th><th>count</th><th>total s</th><th>mean s</th><th>max s</th></tr>"
        f"{rows}</table></body></html>"
    )
    if not (state / "dask-report.html").exists() or scheduler in ("local", "synchronous"):
        (state / "dask-report.html").write_text(html)


def _key_prefix(key: Any) -> str:
    k = key[0] if isinstance(key, tuple) else key
    return str(k).rsplit("-", 1)[0]


def _run_local(
    dsk: Mapping[Any, Any],
    keys: list[Any],
    *,
    store_name: str,
    n_workers: int,
    synchronous: bool,
    progress: _Progress,
    state: Path,
) -> None:
    from dask.callbacks import Callback

    records: list[tuple[str, float, float, str]] = []
    starts: dict[Any, float] = {}

    class _CB(Callback):
        def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
            starts[key] = time.time()

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
            records.append((_key_prefix(key), starts.pop(key, time.time()), time.time(), str(id)))
            if isinstance(key, tuple) and key[0] == store_name:
                progress.advance()

    if synchronous:
        get = dask.get
        kwargs: dict[str, Any] = {}
    else:
        from dask.threaded import get

        kwargs = {"num_workers": n_workers}
    with _CB():
        get(dict(dsk), keys, **kwargs)
    _write_report(state, _summarize_profile(records), "synchronous" if synchronous else "local")


@contextlib.contextmanager
def _cluster(
    scheduler: str,
    *,
    n_workers: int,
    threads_per_worker: int,
    memory_limit: int | None,
    cluster_options: Mapping[str, Any],
) -> Any:
    from distributed import Client, LocalCluster

    if scheduler == "distributed":
        opts = {
            "n_workers": n_workers,
            "threads_per_worker": threads_per_worker,
            "processes": True,
            "dashboard_address": None,
            "memory_limit": (memory_limit // n_workers) if memory_limit else "auto",
            **dict(cluster_options),
        }
        with LocalCluster(**opts) as cluster, Client(cluster) as client:
            yield client
    elif scheduler == "slurm":
        from dask_jobqueue import SLURMCluster

        opts = {
            "cores": threads_per_worker,
            "processes": 1,
            "memory": f"{max(1, (memory_limit or 2 * 10**9) // 10**6)}MB",  # per job
            "walltime": "01:00:00",
            "python": sys.executable,
            "scheduler_options": {"dashboard_address": None},
            **{k: v for k, v in cluster_options.items() if k != "wait_timeout"},
        }
        with SLURMCluster(**opts) as cluster:
            cluster.scale(jobs=n_workers)
            with Client(cluster) as client:
                client.wait_for_workers(1, timeout=float(cluster_options.get("wait_timeout", 600)))
                yield client
    else:  # an address of a running scheduler
        with Client(scheduler) as client:
            yield client


def _run_distributed(
    dsk: Mapping[Any, Any], keys: list[Any], *, client: Any, progress: _Progress, state: Path
) -> None:
    from distributed import as_completed, get_task_stream

    report: Any = contextlib.nullcontext()
    try:  # dask's own HTML performance report needs bokeh; our summary is always written
        import bokeh  # noqa: F401
        from distributed import performance_report

        report = performance_report(filename=str(state / "dask-report.html"))
    except ImportError:
        pass
    with report, get_task_stream(client=client) as ts:
        futures = client.get(dict(dsk), keys, sync=False)
        for fut in as_completed(futures):
            fut.result()
            progress.advance()
    records = []
    for rec in ts.data:
        for s in rec.get("startstops", ()):
            if s.get("action") == "compute":
                records.append(
                    (
                        _key_prefix(rec.get("key", "?")),
                        s["start"],
                        s["stop"],
                        str(rec.get("worker")),
                    )
                )
    _write_report(state, _summarize_profile(records), "distributed")


# --------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------
def _inner_chunks(shard: tuple[int, ...], itemsize: int, target: int = 2**21) -> tuple[int, ...]:
    """Inner chunks of a shard: halve the largest axis until a chunk is <= ``target`` bytes
    (the shard shape stays a multiple of the chunk shape)."""
    inner = list(shard)
    while math.prod(inner) * itemsize > target:
        ax = int(np.argmax(inner))
        if inner[ax] % 2 or inner[ax] < 2:
            break
        inner[ax] //= 2
    return tuple(inner)


def run_batch(
    fn: Callable[..., Any],
    input: Any,
    output: str | os.PathLike[str],
    *,
    halo: int | Sequence[int] | Mapping[int, int] | None = None,
    scheduler: str = "local",
    chunks: Any = None,
    array: str | None = None,
    dtype: Any = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: int | str | None = None,
    cluster_options: Mapping[str, Any] | None = None,
    output_key: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    durable: bool = True,
    progress: bool | None = None,
    log_interval: float = 10.0,
    config: Mapping[str, Any] | None = None,
    table: bool | None = None,
    table_key: str = "positions",
    columns: Sequence[str] = ("time", "flux"),
    targets_per_task: int | None = None,
    quality_bitmask: int | str | None = None,
) -> BatchResult:
    """Apply ``fn`` over ``input`` block by block with halos, into a resumable Zarr output.

    Parameters
    ----------
    fn : Component, Pipeline, torch.nn.Module or callable
        Maps one block to a block of the same shape: an ``nn.Module`` receives a tensor
        (integers converted to float32 by value) and returns a tensor (or a dict/tuple
        holding one, chosen by ``output_key``); a plain callable receives and returns a
        numpy array.  Its ``footprint`` attribute gives the default halo.
    input : path, Dataset, dask array or ndarray
        What to process; a path is opened with :func:`~pipelines.io.open_dataset`.
    output : path-like
        Output Zarr v3 group.  Running again with the same output resumes.
    halo : int, sequence or mapping, optional
        Samples of context added around each block (see :func:`resolve_halo`).
        Default: ``fn.footprint`` or 0.  Blocks at the array border get no padding
        (``boundary="none"``): ``fn`` sees the true border exactly as when it runs on the
        whole array, so the batch output equals the whole-array output whenever the halo
        covers ``fn``'s footprint.
    scheduler : {"local", "synchronous", "distributed", "slurm"} or str
        ``"local"``: dask's threaded scheduler (default); ``"distributed"``: a
        ``LocalCluster`` of ``n_workers`` processes; ``"slurm"``: a
        ``dask_jobqueue.SLURMCluster`` of ``n_workers`` jobs (options in
        ``cluster_options``); ``"tcp://..."``: a running dask scheduler.
    chunks : optional
        Rechunk the input first (dask chunk spec).  One block = one output shard.
    array : str, optional
        Which array of a multi-array dataset (e.g. ``"flux"``, ``"points"``).
    dtype : dtype, optional
        Output dtype (default: found by running ``fn`` on the first block).
    n_workers : int, optional
        Threads (local) or worker processes/jobs (distributed, slurm).  Default: the
        number of usable cores (local, distributed), 1 job (slurm).
    threads_per_worker : int
        Threads per distributed/SLURM worker.
    memory_limit : int or str, optional
        Upper bound on resident memory (e.g. ``"2GB"``): of the whole run for
        ``"local"`` and ``"distributed"`` (split evenly over the workers), of each job
        for ``"slurm"``.  Raises before running when the blocks in flight would exceed it.
    cluster_options : dict, optional
        Extra arguments to ``LocalCluster`` / ``SLURMCluster`` (queue, account, ...);
        ``wait_timeout`` (s, default 600) bounds the wait for the first Slurm worker.
    output_key : str, optional
        Which output of a module returning a dict/named tuple to store.
    device : str
        Torch device on which modules run.
    overwrite : bool
        Discard an existing output of a *different* job instead of raising.
    durable : bool
        fsync each shard (and its directory) before writing its marker, so that even an
        operating-system crash or power loss never leaves a marker without its data
        (default).  ``False`` skips the fsyncs: still exact after a killed process (the
        page cache survives it), not after a machine crash; for scratch outputs.
    progress : bool, optional
        Force the progress bar on/off (default: a bar on a terminal, log lines every
        ``log_interval`` seconds otherwise).
    config : dict, optional
        Extra configuration recorded in the provenance (e.g. the CLI/Hydra config).
    table : bool, optional
        Keep the row table of an output that has one (a field ``table_key`` of shape
        ``(rows, ndim)`` plus per-row fields, like ``detection.spots``'s ``SpotTable``):
        each shard writes its rows with positions in *global* coordinates, keeping only
        the rows whose nearest pixel lies in the shard's core (not its halo), so a row is
        neither lost nor duplicated at shard borders; the run concatenates them into
        ``output/table`` (:func:`read_table`).  Default (None): when the output has such a
        field; ``False`` ignores it; ``True`` requires it.
    table_key : str
        The positions field of a table output (default ``"positions"``).
    columns : sequence of str
        Ragged light-curve archives only: the archive arrays passed to ``fn`` per
        target, positionally (default ``("time", "flux")``).
    targets_per_task : int, optional
        Ragged light-curve archives only: targets per task (= per part file and
        completion marker).  Default: about 2**20 cadences per task, at least four tasks
        per worker.
    quality_bitmask : int or {"none", "default", "hard", "hardest"}, optional
        Ragged light-curve archives only: cadences whose ``quality`` has any of these
        bits set get NaN in every float column but ``time`` before ``fn`` sees them
        (the per-cadence alignment is kept).  Names resolve with the archive's
        ``mission`` attribute (default TESS), as in :func:`pipelines.io.quality_mask`.

    Returns
    -------
    BatchResult

    Raises
    ------
    ValueError
        Bad scheduler, halo larger than a block, output of a different job, memory
        estimate above ``memory_limit``, output block of another shape.
    TypeError
        If ``input`` is of an unsupported type.

    Notes
    -----
    **Ragged light-curve archives** (:func:`~pipelines.io.write_lightcurve_zarr`) are
    processed one run of whole targets per task: ``fn(*columns)`` is called once per
    target with that target's arrays (numpy arrays for plain functions, tensors for
    modules) and may return an array, a dict, a named tuple or a dataclass (e.g. a
    ``TransitCandidate``); every field keeps its own per-target shape (scalars, a
    detrended light curve, a periodogram).  Each task stores its targets' fields in
    ``output/parts/<k>.npz`` (no pickle; written atomically and fsynced) before its
    marker, so the guarantees are those of image shards.  After the run,
    ``output/table`` holds one row per target with its scalar fields, and
    :func:`read_targets` reads any field of any target.

    Output: ``output/data`` (Zarr v3, shards = blocks), ``output/provenance.json``
    (config, package versions, git hash, host, inputs with checksums; also in the
    group attributes), ``output/.batch/job.json`` (job fingerprint),
    ``output/.batch/done/`` (one marker per completed shard) and
    ``output/.batch/dask-report.html`` / ``dask-performance.json`` (per-task timings).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from scipy import ndimage
    >>> x = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    >>> out = tempfile.mkdtemp() + "/out.zarr"
    >>> r = run_batch(lambda b: ndimage.uniform_filter(b, 3), x, out, halo=1, chunks=32, progress=False)
    >>> r.n_shards, r.n_computed
    (4, 4)
    >>> run_batch(lambda b: ndimage.uniform_filter(b, 3), x, out, halo=1, chunks=32, progress=False).n_skipped
    4
    """
    t0 = time.monotonic()
    if not isinstance(scheduler, str) or not (scheduler in SCHEDULERS or "://" in scheduler):
        raise ValueError(
            f"scheduler: expected one of {SCHEDULERS} or a scheduler address 'tcp://host:port', got {scheduler!r}"
        )
    if not callable(fn):
        raise TypeError(
            f"fn: expected a component, a pipeline or a callable, got {type(fn).__name__}"
        )
    if isinstance(input, str | os.PathLike):
        input = open_dataset(input)
    if isinstance(input, Dataset) and input.format == "lightcurve-zarr":
        zero_halo = halo is None or (
            all(int(v) == 0 for v in halo.values())
            if isinstance(halo, Mapping)
            else int(halo) == 0
            if isinstance(halo, int | np.integer)
            else all(int(v) == 0 for v in halo)
        )
        for name, value in (
            ("halo", None if zero_halo else halo),
            ("chunks", chunks),
            ("array", array),
            ("dtype", dtype),
        ):
            if value is not None:
                raise ValueError(
                    f"{name}: a ragged light-curve archive is processed one whole target at a "
                    f"time ({name} does not apply); got {value!r}"
                )
        return _run_ragged(
            fn,
            input,
            Path(output),
            columns=columns,
            targets_per_task=targets_per_task,
            quality_bitmask=quality_bitmask,
            scheduler=scheduler,
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            cluster_options=cluster_options,
            output_key=output_key,
            device=device,
            overwrite=overwrite,
            durable=durable,
            progress=progress,
            log_interval=log_interval,
            config=config,
            t0=t0,
        )
    if table not in (None, True, False):
        raise ValueError(f"table: expected None (auto), True or False, got {table!r}")
    if quality_bitmask is not None:
        raise ValueError(
            f"quality_bitmask: applies to ragged light-curve archives only, got {quality_bitmask!r} "
            "for an image input"
        )
    x, ds, input_info = _resolve_input(input, array)
    if x.size == 0:
        raise ValueError(f"input: expected a non-empty array, got shape {tuple(x.shape)}")
    x = _normalize_chunks(x, chunks)
    halo_t = resolve_halo(fn, x.ndim, halo)
    if chunks is None:  # grow blocks that are thinner than the halo (e.g. 1 frame, halo 8)
        grow = {
            ax: -(-h // c[0]) * c[0]
            for ax, (h, c) in enumerate(zip(halo_t, x.chunks))
            if h and len(c) > 1 and min(c) < h
        }
        if grow:
            log.info(
                "batch: blocks thinner than the halo; rechunking axes %s to %s samples",
                list(grow),
                list(grow.values()),
            )
            x = _normalize_chunks(
                x.rechunk({ax: min(n, x.shape[ax]) for ax, n in grow.items()}), None
            )
    depth = _check_halo(x, halo_t)
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    n_workers = int(n_workers) if n_workers else (1 if scheduler == "slurm" else cores)
    if n_workers < 1:
        raise ValueError(f"n_workers: expected a positive integer, got {n_workers}")
    mem = parse_memory(memory_limit)
    block_fn = _BlockFunction(fn, output_key=output_key, device=device)

    out = Path(output)
    state = out / _STATE_DIR
    fn_desc = _describe_fn(fn)
    job = {
        "fn": fn_desc,
        "halo": list(halo_t),
        "input": {k: v for k, v in input_info.items() if k != "checksum"},
        "input_shape": list(x.shape),
        "input_dtype": str(x.dtype),
        "chunks": [list(c) for c in x.chunks],
        "output_key": output_key,
        "table": table,
        "table_key": table_key,
    }
    previous = (
        json.loads((state / "job.json").read_text()) if (state / "job.json").is_file() else None
    )
    if previous is not None and (previous.get("job") != _jsonable(job)):
        if not overwrite:
            raise ValueError(
                f"output: {out} holds the output of a different job (its .batch/job.json differs: "
                f"fn, halo, input or chunks changed); pass overwrite=True or choose another output"
            )
        previous = None
    probe: dict[str, Any] = {}

    def _probe() -> tuple[np.ndarray, Any]:
        """The first block (with its halo, as map_overlap hands it over) and fn's output."""
        if not probe:
            region = tuple(
                slice(0, c[0] + depth.get(ax, 0) if len(c) > 1 else c[0])
                for ax, c in enumerate(x.chunks)
            )
            probe["block"] = np.asarray(x[region].compute())
            probe["raw"] = block_fn.raw(probe["block"])
        return probe["block"], probe["raw"]

    if previous is not None:
        out_dtype = np.dtype(previous["dtype"])
    elif dtype is not None:
        out_dtype = np.dtype(dtype)
    else:
        blk, raw = _probe()
        out_dtype = _select_map(raw, tuple(blk.shape), output_key, block_fn._who())[0].dtype
    if previous is not None:
        use_table = bool(previous.get("table", False))
    elif table is None:  # auto: a row table with positions in the output
        raw = _probe()[1]
        use_table = _is_structured(raw) and table_key in _output_fields(raw)
    else:
        use_table = bool(table)
    if use_table:
        block_fn.table = _TableSink(str(out), table_key, x.chunks, depth, durable=durable)
        if probe:  # check the table's shape now rather than in the middle of the run
            blk, raw = probe["block"], probe["raw"]
            fields = _output_fields(raw) if _is_structured(raw) else {}
            if table_key not in fields:
                raise ValueError(
                    f"table: expected the output of {block_fn._who()} to hold a {table_key!r} "
                    f"field (rows, ndim), got {sorted(fields) or type(raw).__name__}"
                )
            block_fn.table.rows(fields, tuple(blk.shape), (0,) * x.ndim)
    probe.clear()
    per_task = _estimate_task_bytes(x, depth, out_dtype)
    # blocks in flight within the memory budget: the whole run (local, distributed) or one
    # Slurm job (``memory_limit`` is the memory of each job there)
    in_flight = {"synchronous": 1, "local": n_workers, "slurm": threads_per_worker}.get(
        scheduler, n_workers * threads_per_worker
    )
    if mem is not None and per_task * in_flight > mem:
        raise ValueError(
            f"memory_limit: {in_flight} blocks of {tuple(max(c) for c in x.chunks)} (+halo) in flight need about "
            f"{per_task * in_flight / 1e9:.2f} GB, above the limit {mem / 1e9:.2f} GB; use smaller chunks= or fewer n_workers"
        )

    shard = tuple(int(c[0]) for c in x.chunks)
    if previous is None:
        if out.exists() and overwrite:
            import shutil

            shutil.rmtree(out)
        group: Any = zarr.open_group(str(out), mode="w", zarr_format=3)
        group.create_array(
            "data",
            shape=x.shape,
            dtype=out_dtype,
            chunks=_inner_chunks(shard, out_dtype.itemsize),
            shards=shard,
            fill_value=0,
            dimension_names=list(ds.axes)
            if ds is not None and isinstance(ds.axes, str) and len(ds.axes) == x.ndim
            else None,
        )
        (state / "done").mkdir(parents=True, exist_ok=True)
        _write_job_record(state, job, dtype=out_dtype.str, table=use_table)
    else:
        group = zarr.open_group(str(out), mode="r+")
        (state / "done").mkdir(parents=True, exist_ok=True)

    if use_table:
        (out / "tables" / "parts").mkdir(parents=True, exist_ok=True)
    if durable:  # the directories of parts and markers survive a machine crash too
        for d in [state, out] + ([out / "tables"] if use_table else []):
            _fsync_path(d, directory=True)
    all_blocks = [tuple(int(i) for i in idx) for idx in np.ndindex(*x.numblocks)]
    done = completed_shards(out) & set(all_blocks)
    todo = [b for b in all_blocks if b not in done]

    provenance = _provenance(
        {
            "fn": fn_desc,
            "halo": list(halo_t),
            "scheduler": scheduler,
            "n_workers": n_workers,
            "threads_per_worker": threads_per_worker,
            "memory_limit": mem,
            "chunks": list(shard),
            "output_dtype": out_dtype.str,
            "output_key": output_key,
            "device": device,
            "durable": durable,
            **dict(config or {}),
        },
        input_info,
        {
            "path": str(out),
            "array": "data",
            "shape": list(x.shape),
            "shards": list(shard),
            "dtype": out_dtype.str,
        },
        cores,
    )
    meta: dict[str, Any] = {
        "kind": "array",
        "array": "data",
        "provenance": provenance,
        "status": "running",
    }
    if ds is not None:
        meta.update(
            {
                "axes": ds.axes if isinstance(ds.axes, str) else None,
                "units": ds.units,
                "scale": ds.scale,
                "modality": ds.modality,
            }
        )
    group.attrs["learndock"] = _jsonable(meta)

    progress_bar = _Progress(
        len(all_blocks), enabled=progress, interval=log_interval, label=f"batch {out.name}"
    )
    progress_bar.advance(len(done)) if done else None
    if todo:
        token = dask.base.tokenize(_jsonable(job), str(out))[:12]
        result = da.map_overlap(
            block_fn,
            x,
            depth=depth,
            boundary="none",
            trim=True,
            dtype=out_dtype,
            meta=np.empty((0,) * x.ndim, out_dtype),
            name=f"batch-apply-{token}",
        )
        local = scheduler in ("local", "synchronous")
        writer = _ShardWriter(
            str(out), "data", x.chunks, durable=durable, background=local and durable
        )
        stored = result.map_blocks(
            writer,
            dtype=np.int8,
            chunks=tuple((1,) * n for n in x.numblocks),
            meta=np.empty((0,) * x.ndim, np.int8),
            name=f"batch-store-{token}",
        )
        keys = [(stored.name, *b) for b in todo]
        from dask.optimization import cull

        (optimized,) = dask.optimize(stored)  # blockwise fusion, as dask.compute would do
        graph, _ = cull(dict(optimized.__dask_graph__()), keys)
        _execute(
            graph,
            keys,
            store_name=stored.name,
            scheduler=scheduler,
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=mem,
            cluster_options=cluster_options,
            cores=cores,
            progress=progress_bar,
            state=state,
            drain=writer.drain,
        )
    else:
        progress_bar.close()
    missing = set(all_blocks) - completed_shards(out)
    if missing:
        raise RuntimeError(
            f"batch: {len(missing)} shards of {out} have no completion marker after the run: {sorted(missing)[:5]}"
        )
    seconds = time.monotonic() - t0
    provenance["run"] = {
        "n_shards": len(all_blocks),
        "n_skipped": len(done),
        "n_computed": len(todo),
        "seconds": seconds,
    }
    if use_table:
        parts = Path(out) / "tables" / "parts"
        names = [f"{_marker_name(b)}.npz" for b in all_blocks]
        missing_parts = [n for n in names if not (parts / n).is_file()]
        if missing_parts:
            raise RuntimeError(
                f"batch: {len(missing_parts)} completed shards of {out} have no table part: {missing_parts[:5]}"
            )
        n_rows = _consolidate_table(group, [parts / n for n in names], key=table_key)
        meta["table"] = {"path": "table", "key": table_key, "rows": n_rows}
        provenance["output"]["table"] = meta["table"]
    meta["provenance"] = provenance
    meta["status"] = "complete"
    _write_ngff(group, meta, ds, x.ndim)
    group.attrs["learndock"] = _jsonable(meta)
    tmp = out / "provenance.json.tmp"
    tmp.write_text(json.dumps(_jsonable(provenance), indent=2))
    os.replace(tmp, out / "provenance.json")
    return BatchResult(
        output=out,
        shape=tuple(int(s) for s in x.shape),
        chunks=shard,
        dtype=out_dtype.str,
        n_shards=len(all_blocks),
        n_skipped=len(done),
        n_computed=len(todo),
        seconds=seconds,
        provenance=provenance,
    )


# --------------------------------------------------------------------------------------
# tables and ragged per-target outputs
# --------------------------------------------------------------------------------------
def _concat_column(values: list[np.ndarray]) -> np.ndarray:
    if not values:
        return np.zeros(0)
    return np.concatenate(values, axis=0)


def _consolidate_table(group: Any, parts: Sequence[Path], *, key: str) -> int:
    """Concatenate the per-shard table parts (in shard order) into the ``table`` group.

    Each column is one Zarr array (rows first); the column order is the first part's,
    ``key`` first.  The result depends only on the parts, so re-running it after an
    interruption gives the same table.
    """
    cols: dict[str, list[np.ndarray]] = {}
    for part in parts:
        rows = _read_npz(part)
        for k in rows:
            cols.setdefault(k, [])
        if set(rows) != set(cols):
            raise RuntimeError(
                f"batch: table part {part} has columns {sorted(rows)}, expected {sorted(cols)}"
            )
        for k, v in rows.items():
            cols[k].append(v)
    order = [key] + [k for k in cols if k != key]
    return _write_table_group(group, {k: _concat_column(cols[k]) for k in order})


def _write_table_group(group: Any, columns: Mapping[str, np.ndarray]) -> int:
    """Write ``columns`` (equal numbers of rows) as the ``table`` group of ``group``."""
    if "table" in group:
        del group["table"]
    tg = group.create_group("table")
    n = 0
    for k, v in columns.items():
        v = np.asarray(v)
        n = int(v.shape[0])
        chunks = (max(1, min(n, 2**20)), *[max(1, s) for s in v.shape[1:]])
        dt: Any = str if v.dtype.kind in "US" else v.dtype  # variable-length strings
        z = tg.create_array(k, shape=v.shape, dtype=dt, chunks=chunks)
        if v.size:
            z[...] = v
    tg.attrs["learndock"] = {"kind": "table", "columns": list(columns), "rows": n}
    return n


def read_table(output: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The row table of a completed batch output, as ``{column: array}`` (rows first).

    For image runs of a component returning a row table (``positions`` plus per-row
    fields, e.g. ``detection.spots``), the rows of all shards in *global* coordinates,
    each row once (a row belongs to the shard whose core holds its nearest pixel).  For
    ragged light-curve runs, one row per target: ``target`` (name), ``target_index`` and
    every output field that is a scalar for each target (e.g. ``period``, ``depth``,
    ``snr`` of a transit search).

    Raises
    ------
    FileNotFoundError
        If ``output`` holds no table (not a completed run, or no tabular output).
    """
    p = Path(output)
    if not (p / "table" / "zarr.json").is_file():
        raise FileNotFoundError(
            f"output: {p} holds no table (expected {p / 'table'}; is the run complete, and "
            "does fn return a table?)"
        )
    tg: Any = zarr.open_group(str(p / "table"), mode="r")
    names = list(tg.attrs.get("learndock", {}).get("columns", [k for k, _ in tg.arrays()]))
    return {k: np.asarray(tg[k][...]) for k in names}


class TargetOutputs:
    """Per-target outputs of a batch run over a ragged light-curve archive.

    ``outputs[i]`` or ``outputs["name"]`` gives one target's fields as numpy arrays (each
    with the shape ``fn`` returned: 0-d for scalars, ``(t,)`` for a detrended light
    curve, ``(n_periods,)`` for a periodogram); :meth:`ragged` gives one field of all
    targets back to back with offsets (the archive layout); :meth:`table` the scalar
    fields as columns.  Parts are read lazily, one task's file at a time.
    """

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.output = Path(output)
        root: Any = zarr.open_group(str(self.output), mode="r")
        meta = dict(root.attrs.get("learndock", {}))
        if meta.get("kind") != "ragged-targets":
            raise ValueError(
                f"output: {self.output} is not the output of a batch run over a light-curve "
                f"archive (kind {meta.get('kind')!r})"
            )
        if meta.get("status") != "complete":
            raise ValueError(f"output: {self.output} is incomplete; run the batch job again")
        self.targets: list[str] = list(meta["targets"])
        self.fields: list[str] = list(meta["fields"])
        self._bounds = [tuple(b) for b in meta["tasks"]]
        self._starts = np.array([b[0] for b in self._bounds], np.int64)
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def _part(self, k: int) -> dict[str, np.ndarray]:
        if self._cache is None or self._cache[0] != k:
            self._cache = (k, _read_npz(self.output / "parts" / f"{k}.npz"))
        return self._cache[1]

    def __getitem__(self, target: int | str) -> dict[str, np.ndarray]:
        i = self.targets.index(target) if isinstance(target, str) else int(target)
        if not 0 <= i < len(self.targets):
            raise IndexError(f"target: expected 0 <= index < {len(self.targets)}, got {target!r}")
        k = int(np.searchsorted(self._starts, i, side="right")) - 1  # the task holding i
        part, j = self._part(k), i - self._bounds[k][0]
        out = {}
        for f in self.fields:
            shapes, starts = part[f"{f}.shape"], part[f"{f}.start"]
            shp = tuple(int(v) for v in shapes[j])
            out[f] = part[f"{f}.values"][starts[j] : starts[j] + math.prod(shp)].reshape(shp)
        return out

    def ragged(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """``(values, offsets)``: ``field`` of all targets back to back (flattened) and
        the ``n + 1`` offsets of each target's values."""
        if field not in self.fields:
            raise KeyError(f"field: expected one of {self.fields}, got {field!r}")
        vals, sizes = [], []
        for k in range(len(self._bounds)):
            part = self._part(k)
            vals.append(part[f"{field}.values"])
            sizes.append(np.prod(part[f"{field}.shape"], axis=1).astype(np.int64))
        sz = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
        return _concat_column(vals), np.concatenate([[0], np.cumsum(sz)]).astype(np.int64)

    def table(self) -> dict[str, np.ndarray]:
        """One row per target: ``target``, ``target_index`` and the scalar fields."""
        return read_table(self.output)


def read_targets(output: str | os.PathLike[str]) -> TargetOutputs:
    """Open the per-target outputs of a completed ragged light-curve batch run.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from pipelines.io import write_lightcurve_zarr
    >>> d = tempfile.mkdtemp()
    >>> curves = [{"time": np.arange(5.0), "flux": np.ones(5)},
    ...           {"time": np.arange(3.0), "flux": np.full(3, 2.0)}]
    >>> arch = write_lightcurve_zarr(curves, d + "/lc.zarr", targets=["a", "b"])
    >>> r = run_batch(lambda t, f: {"mean": f.mean(), "twice": 2 * f}, arch, d + "/out",
    ...               progress=False)
    >>> r.table()["mean"].tolist(), read_targets(r.output)["b"]["twice"].tolist()
    ([1.0, 2.0], [4.0, 4.0, 4.0])
    """
    return TargetOutputs(output)


class _TargetTask:
    """One task of a ragged run: targets ``[a, b)``, their outputs in one durable part.

    Reads the targets' cadences straight from the input archive (``columns``, in order,
    as ``fn``'s positional arguments), calls ``fn`` once per target, stores every output
    field flattened with its per-target shape in ``parts/<k>.npz`` (atomic, fsynced),
    then writes the task's completion marker.
    """

    def __init__(
        self,
        fn: Any,
        source: str,
        root: str,
        columns: Sequence[str],
        bounds: Sequence[tuple[int, int]],
        offsets: np.ndarray,
        *,
        output_key: str | None,
        device: str,
        durable: bool,
        quality_bits: int | None = None,
    ) -> None:
        self.fn = fn
        self.quality_bits = quality_bits
        self.source = source
        self.root = root
        self.columns = tuple(columns)
        self.bounds = [tuple(int(v) for v in b) for b in bounds]
        self.offsets = np.asarray(offsets, np.int64)
        self.output_key = output_key
        self.device = device
        self.durable = durable

    def call(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """``fn`` on one target's columns, as ``{field: ndarray}``."""
        if _is_module(self.fn):
            import torch

            module = self.fn.to(self.device).eval()
            with torch.no_grad():
                raw = module(
                    *[torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
                )
        else:
            raw = self.fn(*arrays)
        fields = _output_fields(raw)
        if self.output_key is not None:
            if self.output_key not in fields:
                raise ValueError(
                    f"output_key: expected one of the outputs {sorted(fields)}, got {self.output_key!r}"
                )
            fields = {self.output_key: fields[self.output_key]}
        out = {}
        for k, v in fields.items():
            if v is None:
                continue
            arr = _to_numpy(v)
            if arr.dtype.kind not in "biuf":
                raise TypeError(
                    f"fn: output field {k!r} has dtype {arr.dtype}; expected numbers (bool, int, float)"
                )
            out[k] = arr
        return out

    def __call__(self, k: int) -> int:
        a, b = self.bounds[k]
        group: Any = zarr.open_group(self.source, mode="r")
        lo, hi = int(self.offsets[a]), int(self.offsets[b])
        cols = [np.asarray(group[c][lo:hi]) for c in self.columns]
        if self.quality_bits:  # flagged cadences: NaN in the float columns but time
            bad = (np.asarray(group["quality"][lo:hi]).astype(np.int64) & self.quality_bits) != 0
            for j, c in enumerate(self.columns):
                if c != "time" and cols[j].dtype.kind == "f" and bad.any():
                    cols[j] = np.where(bad, np.nan, cols[j]).astype(cols[j].dtype)
        per_field: dict[str, list[np.ndarray]] = {}
        for i in range(a, b):
            s0, s1 = int(self.offsets[i]) - lo, int(self.offsets[i + 1]) - lo
            fields = self.call([c[s0:s1] for c in cols])
            if i > a and set(fields) != set(per_field):
                raise ValueError(
                    f"fn: target {i} returned fields {sorted(fields)}, target {a} {sorted(per_field)}"
                )
            for f, v in fields.items():
                per_field.setdefault(f, []).append(v)
        arrays: dict[str, np.ndarray] = {"targets": np.arange(a, b, dtype=np.int64)}
        for f, vals in per_field.items():
            ndims = {v.ndim for v in vals}
            if len(ndims) != 1:
                raise ValueError(
                    f"fn: output field {f!r} has {sorted(ndims)} dimensions for different targets; "
                    "expected the same number for every target"
                )
            sizes = np.array([v.size for v in vals], np.int64)
            arrays[f"{f}.values"] = np.concatenate([v.reshape(-1) for v in vals])
            arrays[f"{f}.shape"] = np.array([v.shape for v in vals], np.int64).reshape(
                len(vals), ndims.pop()
            )
            arrays[f"{f}.start"] = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        _write_npz(Path(self.root) / "parts" / f"{k}.npz", arrays, durable=self.durable)
        _write_marker(self.root, str(k), {"targets": [a, b]}, durable=self.durable)
        return 1


def _run_ragged(
    fn: Any,
    ds: Dataset,
    out: Path,
    *,
    columns: Sequence[str],
    targets_per_task: int | None,
    quality_bitmask: int | str | None,
    scheduler: str,
    n_workers: int | None,
    threads_per_worker: int,
    memory_limit: int | str | None,
    cluster_options: Mapping[str, Any] | None,
    output_key: str | None,
    device: str,
    overwrite: bool,
    durable: bool,
    progress: bool | None,
    log_interval: float,
    config: Mapping[str, Any] | None,
    t0: float,
) -> BatchResult:
    """:func:`run_batch` over a ragged light-curve archive: one task = a run of targets."""
    offsets = np.asarray(ds.attrs["offsets"], np.int64)
    targets = [str(t) for t in ds.attrs["targets"]]
    n = len(targets)
    columns = tuple(str(c) for c in ([columns] if isinstance(columns, str) else columns))
    if not columns:
        raise ValueError("columns: expected at least one archive array, got none")
    bad = [c for c in columns if c not in ds.data]
    if bad:
        raise ValueError(f"columns: expected arrays of the archive {sorted(ds.data)}, got {bad}")
    quality_bits = None
    if quality_bitmask is not None:
        from pipelines.io.lightcurves import KEPLER_BITMASKS, TESS_BITMASKS

        if "quality" not in ds.data:
            raise ValueError(
                f"quality_bitmask: {ds.path} has no quality array (arrays {sorted(ds.data)})"
            )
        mission = str(ds.attrs.get("mission", "TESS")).upper()
        names = KEPLER_BITMASKS if mission in ("KEPLER", "K2") else TESS_BITMASKS
        if isinstance(quality_bitmask, str):
            if quality_bitmask not in names:
                raise ValueError(
                    f"quality_bitmask: expected an int or one of {sorted(names)}, got {quality_bitmask!r}"
                )
            quality_bits = int(names[quality_bitmask])
        elif (
            isinstance(quality_bitmask, int | np.integer)
            and not isinstance(quality_bitmask, bool)
            and int(quality_bitmask) >= 0
        ):
            quality_bits = int(quality_bitmask)
        else:
            raise ValueError(
                f"quality_bitmask: expected a non-negative int or a name, got {quality_bitmask!r}"
            )
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    n_workers = int(n_workers) if n_workers else (1 if scheduler == "slurm" else cores)
    if n_workers < 1:
        raise ValueError(f"n_workers: expected a positive integer, got {n_workers}")
    lengths = np.diff(offsets)
    if targets_per_task is None:  # ~1M cadences a task, but at least 4 tasks per worker
        by_size = max(1, int(2**20 // max(1.0, float(lengths.mean()))))
        targets_per_task = max(1, min(by_size, -(-n // (4 * n_workers))))
    if isinstance(targets_per_task, bool) or int(targets_per_task) < 1:
        raise ValueError(f"targets_per_task: expected a positive integer, got {targets_per_task!r}")
    tpt = int(targets_per_task)
    bounds = [(a, min(n, a + tpt)) for a in range(0, n, tpt)]
    mem = parse_memory(memory_limit)
    itemsize = sum(np.dtype(ds.data[c].dtype).itemsize for c in columns)
    longest = max(int(lengths[a:b].sum()) for a, b in bounds)
    per_task = int(longest * itemsize * 8)  # the columns, torch copies, fn's temporaries
    in_flight = {"synchronous": 1, "local": n_workers, "slurm": threads_per_worker}.get(
        scheduler, n_workers * threads_per_worker
    )
    if mem is not None and per_task * in_flight > mem:
        raise ValueError(
            f"memory_limit: {in_flight} tasks of up to {longest} cadences in flight need about "
            f"{per_task * in_flight / 1e9:.2f} GB, above the limit {mem / 1e9:.2f} GB; use a smaller "
            "targets_per_task= or fewer n_workers"
        )
    src = dict(ds.provenance.get("source") or {})
    input_info = {"path": ds.path, "format": ds.format, "columns": list(columns), "checksum": src}
    state = out / _STATE_DIR
    fn_desc = _describe_fn(fn)
    job = {
        "fn": fn_desc,
        "input": {"path": ds.path, "format": ds.format},
        "columns": list(columns),
        "n_targets": n,
        "offsets_sha256": hashlib.sha256(offsets.tobytes()).hexdigest(),
        "targets_per_task": tpt,
        "output_key": output_key,
        "quality_bits": quality_bits,
    }
    previous = (
        json.loads((state / "job.json").read_text()) if (state / "job.json").is_file() else None
    )
    if previous is not None and previous.get("job") != _jsonable(job):
        if not overwrite:
            raise ValueError(
                f"output: {out} holds the output of a different job (its .batch/job.json differs: "
                f"fn, columns, input or targets_per_task changed); pass overwrite=True or choose another output"
            )
        previous = None
    if previous is None:
        if out.exists() and overwrite:
            import shutil

            shutil.rmtree(out)
        group: Any = zarr.open_group(str(out), mode="w", zarr_format=3)
        (state / "done").mkdir(parents=True, exist_ok=True)
        _write_job_record(state, job, dtype="record")
    else:
        group = zarr.open_group(str(out), mode="r+")
        (state / "done").mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(exist_ok=True)
    if durable:  # the directories of parts and markers survive a machine crash too
        for d in (state, out):
            _fsync_path(d, directory=True)
    all_tasks = list(range(len(bounds)))
    done = {t[0] for t in completed_shards(out) if len(t) == 1} & set(all_tasks)
    todo = [k for k in all_tasks if k not in done]
    provenance = _provenance(
        {
            "fn": fn_desc,
            "columns": list(columns),
            "targets_per_task": tpt,
            "quality_bitmask": quality_bitmask,
            "quality_bits": quality_bits,
            "scheduler": scheduler,
            "n_workers": n_workers,
            "threads_per_worker": threads_per_worker,
            "memory_limit": mem,
            "output_key": output_key,
            "device": device,
            "durable": durable,
            **dict(config or {}),
        },
        input_info,
        {"path": str(out), "parts": "parts", "n_targets": n, "n_tasks": len(bounds)},
        cores,
    )
    meta: dict[str, Any] = {
        "kind": "ragged-targets",
        "modality": ds.modality,
        "targets": targets,
        "tasks": [list(b) for b in bounds],
        "provenance": provenance,
        "status": "running",
    }
    group.attrs["learndock"] = _jsonable(meta)
    task = _TargetTask(
        fn,
        str(ds.path),
        str(out),
        columns,
        bounds,
        offsets,
        output_key=output_key,
        device=device,
        durable=durable,
        quality_bits=quality_bits,
    )
    progress_bar = _Progress(
        len(all_tasks), enabled=progress, interval=log_interval, label=f"batch {out.name}"
    )
    progress_bar.advance(len(done)) if done else None
    if todo:
        token = dask.base.tokenize(_jsonable(job), str(out))[:12]
        name = f"batch-targets-{token}"
        graph = {(name, k): (task, k) for k in todo}
        keys = [(name, k) for k in todo]
        _execute(
            graph,
            keys,
            store_name=name,
            scheduler=scheduler,
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=mem,
            cluster_options=cluster_options,
            cores=cores,
            progress=progress_bar,
            state=state,
        )
    else:
        progress_bar.close()
    missing = set(all_tasks) - {t[0] for t in completed_shards(out) if len(t) == 1}
    if missing:
        raise RuntimeError(
            f"batch: {len(missing)} target tasks of {out} have no completion marker after the run: {sorted(missing)[:5]}"
        )
    # the per-target table: every field that is a scalar for each target
    first = _read_npz(out / "parts" / "0.npz")
    fields = sorted(k[: -len(".values")] for k in first if k.endswith(".values"))
    scalar = [f for f in fields if first[f"{f}.shape"].shape[1] == 0]
    cols: dict[str, list[np.ndarray]] = {f: [] for f in scalar}
    for k in all_tasks:
        part = first if k == 0 else _read_npz(out / "parts" / f"{k}.npz")
        for f in scalar:
            if part[f"{f}.shape"].shape[1] != 0:
                raise RuntimeError(f"batch: field {f!r} is a scalar for some targets, not others")
            cols[f].append(part[f"{f}.values"])
    table_cols = {
        "target": np.array(targets, dtype=str),
        "target_index": np.arange(n, dtype=np.int64),
        **{f: _concat_column(v) for f, v in cols.items()},
    }
    _write_table_group(group, table_cols)
    seconds = time.monotonic() - t0
    provenance["run"] = {
        "n_shards": len(all_tasks),
        "n_skipped": len(done),
        "n_computed": len(todo),
        "seconds": seconds,
    }
    meta.update({"fields": fields, "table": {"path": "table", "rows": n}, "provenance": provenance})
    meta["status"] = "complete"
    group.attrs["learndock"] = _jsonable(meta)
    tmp = out / "provenance.json.tmp"
    tmp.write_text(json.dumps(_jsonable(provenance), indent=2))
    os.replace(tmp, out / "provenance.json")
    return BatchResult(
        output=out,
        shape=(n,),
        chunks=(tpt,),
        dtype="record",
        n_shards=len(all_tasks),
        n_skipped=len(done),
        n_computed=len(todo),
        seconds=seconds,
        provenance=provenance,
    )


def _write_ngff(group: Any, meta: Mapping[str, Any], ds: Dataset | None, ndim: int) -> None:
    """Give image outputs NGFF multiscales metadata (one level, path ``data``)."""
    axes = meta.get("axes")
    if (
        ds is None
        or ds.modality != "microscopy"
        or not isinstance(axes, str)
        or len(axes) != ndim
        or any(a not in "tczyx" for a in axes)
    ):
        return
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    units = ds.units or {}
    scale = ds.scale or {}
    ax_meta = [
        {"name": a, "type": kinds[a], **({"unit": units[a]} if a in units and a != "c" else {})}
        for a in axes
    ]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "name": "batch-output",
                "axes": ax_meta,
                "datasets": [
                    {
                        "path": "data",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [float(scale.get(a, 1.0)) for a in axes]}
                        ],
                    }
                ],
            }
        ],
    }
