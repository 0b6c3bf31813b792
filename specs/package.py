"""The learnware package format: build, read, verify and test (no code execution from
package content, no pickle anywhere).

A package is a directory or a ``.zip`` with exactly these members::

    learnware.yaml          manifest: format, semantic spec, component, params,
                            featurizer, tolerances, sha256 of every other file
    rkme.safetensors        the statistical spec (reduced set z, weights beta, bandwidth)
    weights.safetensors     optional state-dict tensors of a trained component
    example/input.npz       a small input, keyed by forward() argument name
    example/expected.npz    the output the component must reproduce on it

The format is documented in ``docs/reference/learnware-package.md``.  Arrays are read
with ``np.load(..., allow_pickle=False)`` and tensors with safetensors; ``torch.load`` is
never used.  The only code that runs is a component class discovered through the
``learndock.components`` entry points (the allow-list in :mod:`components.base`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import stat
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from specs.checks import (
    MAX_MEMBER_BYTES,
    MAX_TOTAL_BYTES,
    Problem,
    SubmissionError,
    compare_outputs,
    run_with_timeout,
    safe_member_name,
)
from specs.rkme import RKME
from specs.semantic import SemanticSpec

__all__ = [
    "FORMAT",
    "ISOLATIONS",
    "LearnwarePackage",
    "PackageTest",
    "build_package",
    "load_component",
    "package_from_members",
    "read_members",
    "read_package",
    "test_package",
    "verify_package",
    "write_members",
]

FORMAT = "learndock-learnware/1"
MANIFEST = "learnware.yaml"
REQUIRED = ("rkme.safetensors", "example/input.npz", "example/expected.npz")
OPTIONAL = ("weights.safetensors",)
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------
# members: a package as {relative posix name: bytes}
# --------------------------------------------------------------------------------------
def read_members(path: str | Path) -> tuple[dict[str, bytes], list[Problem]]:
    """Read every member of a package directory or zip with the safety checks.

    Unsafe members (absolute paths, ``..``, links, oversize) are reported and not read.

    Returns
    -------
    (members, problems)
    """
    path = Path(path)
    members: dict[str, bytes] = {}
    problems: list[Problem] = []
    if not path.exists() and not path.is_symlink():
        return {}, [
            Problem(
                "missing-file", str(path), "no such package (expected a directory or a .zip file)"
            )
        ]
    if path.is_symlink():
        return {}, [
            Problem(
                "unsafe-path",
                str(path),
                "the package itself is a symbolic link; pass the real path",
            )
        ]
    total = 0
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            for name in sorted(dirnames + filenames):
                full = Path(dirpath) / name
                rel = full.relative_to(path).as_posix()
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    problems.append(
                        Problem(
                            "unsafe-path",
                            rel,
                            "is a symbolic link; packages must contain plain files only",
                        )
                    )
                    continue
                if stat.S_ISDIR(st.st_mode):
                    continue
                if not stat.S_ISREG(st.st_mode):
                    problems.append(Problem("unsafe-path", rel, "is not a regular file"))
                    continue
                if st.st_size > MAX_MEMBER_BYTES:
                    problems.append(
                        Problem(
                            "oversize",
                            rel,
                            f"is {st.st_size} bytes; members are limited to {MAX_MEMBER_BYTES} bytes",
                        )
                    )
                    continue
                total += st.st_size
                if total > MAX_TOTAL_BYTES:
                    problems.append(
                        Problem(
                            "oversize",
                            str(path),
                            f"package exceeds {MAX_TOTAL_BYTES} bytes in total",
                        )
                    )
                    return members, problems
                members[rel] = full.read_bytes()
            dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        return members, problems
    if not zipfile.is_zipfile(path):
        return {}, [Problem("bad-package", str(path), "is neither a directory nor a zip file")]
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename
            why = safe_member_name(name.rstrip("/") if info.is_dir() else name)
            if why:
                problems.append(
                    Problem(
                        "unsafe-path",
                        name,
                        f"{why}; package members must be relative paths inside the package",
                    )
                )
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                problems.append(
                    Problem(
                        "unsafe-path",
                        name,
                        "is a symbolic link; packages must contain plain files only",
                    )
                )
                continue
            if info.is_dir():
                continue
            if info.file_size > MAX_MEMBER_BYTES:
                problems.append(
                    Problem(
                        "oversize",
                        name,
                        f"is {info.file_size} bytes; members are limited to {MAX_MEMBER_BYTES} bytes",
                    )
                )
                continue
            total += info.file_size
            if total > MAX_TOTAL_BYTES:
                problems.append(
                    Problem(
                        "oversize", str(path), f"package exceeds {MAX_TOTAL_BYTES} bytes in total"
                    )
                )
                return members, problems
            with zf.open(info) as fh:
                data = fh.read(MAX_MEMBER_BYTES + 1)
            if len(data) > MAX_MEMBER_BYTES:
                problems.append(
                    Problem("oversize", name, "decompresses beyond the member size limit")
                )
                continue
            name = name[2:] if name.startswith("./") else name
            if name in members:
                problems.append(Problem("bad-package", name, "appears twice in the zip"))
                continue
            members[name] = data
    return members, problems


def write_members(members: Mapping[str, bytes], out: str | Path) -> Path:
    """Write members as a directory, or as a deterministic zip when ``out`` ends in .zip."""
    out = Path(out)
    if out.suffix == ".zip":
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(members):
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, members[name])
        os.replace(tmp, out)
        return out
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"out_path: {out} exists and is not empty; choose a new directory or a .zip path"
        )
    for name, data in members.items():
        if safe_member_name(name):
            raise ValueError(f"member name {name!r} is unsafe: {safe_member_name(name)}")
        p = out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return out


def _npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    clean = {}
    for k, v in arrays.items():
        a = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        if a.dtype.kind in "OUSV":
            raise TypeError(
                f"example: array {k!r} has dtype {a.dtype}; only numeric arrays are allowed (no pickle)"
            )
        clean[str(k)] = a
    # like np.savez, but deterministic (fixed member timestamps) so that hashes are stable
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for k in sorted(clean):
            arr_buf = io.BytesIO()
            np.lib.format.write_array(
                arr_buf, np.require(clean[k], requirements="C"), allow_pickle=False
            )
            zf.writestr(zipfile.ZipInfo(f"{k}.npy", date_time=_ZIP_DATE), arr_buf.getvalue())
    return buf.getvalue()


def _load_npz(data: bytes, where: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _load_safetensors(data: bytes) -> dict[str, Any]:
    from safetensors.torch import load

    return load(data)


# --------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------
def build_package(
    component: Any,
    declaration: Any,
    out_path: str | Path,
    *,
    data: Any = None,
    seed: int = 0,
    m: int = 32,
    example: Mapping[str, np.ndarray] | None = None,
    weights: Mapping[str, Any] | None = None,
    featurizer: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> Path:
    """Build a learnware package (directory, or zip when ``out_path`` ends in ``.zip``).

    Parameters
    ----------
    component : Component subclass or str
        The component class or its registered name (resolved through the allow-list).
    declaration : Declaration or (SemanticSpec, params)
        A :class:`components.base.Declaration`, or a spec and constructor params.
    out_path : path
        Where to write the package.
    data : raw data, optional
        Data the RKME is computed from (featurized with the spec's modality); default:
        ``declaration.reference_data(seed)``.
    seed : int
        Seed of the reference data and of the RKME fit.
    m : int
        RKME reduced-set size.
    example : dict of arrays, optional
        Example input; default: ``declaration.example()``.
    weights : dict of tensors, optional
        State-dict tensors; default: ``declaration.weights()`` when declared.
    featurizer : str, optional
        Featurizer id; default: the declaration's, else the modality's default.
    rtol, atol : float, optional
        Tolerances for reproducing the example; default: the declaration's.

    Returns
    -------
    Path

    Raises
    ------
    ComponentNotFoundError
        If the component is not discovered.
    ValueError
        If neither ``data`` nor a declaration with reference data is given, or no example.
    """
    from components.base import Component, Declaration, get_component, instantiate, run_example
    from specs.features import featurize, get_featurizer

    cls = get_component(component) if isinstance(component, str) else component
    if not (isinstance(cls, type) and issubclass(cls, Component)):
        raise TypeError(f"component: expected a Component subclass or name, got {component!r}")
    get_component(cls.name)  # must be allow-listed
    if isinstance(declaration, Declaration):
        spec, params = declaration.spec, dict(declaration.params)
        featurizer = featurizer or declaration.featurizer
        if data is None:
            data = declaration.reference_data(seed)
        if example is None:
            example = declaration.example()
        if weights is None and declaration.weights is not None:
            weights = declaration.weights()
        rtol = declaration.rtol if rtol is None else rtol
        atol = declaration.atol if atol is None else atol
    else:
        try:
            spec, params = declaration
        except (TypeError, ValueError) as exc:
            raise TypeError(
                "declaration: expected a Declaration or a (SemanticSpec, params) pair"
            ) from exc
        spec = spec if isinstance(spec, SemanticSpec) else SemanticSpec.from_dict(dict(spec))
        params = dict(params)
    rtol = 1e-4 if rtol is None else float(rtol)
    atol = 1e-5 if atol is None else float(atol)
    if data is None:
        raise ValueError(
            "data: give the data the learnware was built for (its RKME is computed from it)"
        )
    if not example:
        raise ValueError(
            "example: give a small example input dict (keyed by forward() argument name)"
        )
    feat = get_featurizer(featurizer, modality=spec.modality)
    X = featurize(data, modality=spec.modality, featurizer=feat.id)
    rkme = RKME.fit(X, m=m, seed=seed, bandwidth=feat.bandwidth, featurizer=feat.id)
    module = instantiate({"_target_": cls.name, **params})
    files: dict[str, bytes] = {}
    if weights:
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
        module.load_state_dict(tensors, strict=True)
        from specs.rkme import canonical_safetensors

        files["weights.safetensors"] = canonical_safetensors(save(tensors))
    expected = run_example(module, example)
    files["rkme.safetensors"] = rkme.to_bytes()
    files["example/input.npz"] = _npz_bytes(example)
    files["example/expected.npz"] = _npz_bytes(expected)
    manifest = {
        "format": FORMAT,
        "spec": spec.to_dict(),
        "component": cls.name,
        "params": json.loads(json.dumps(params)),
        "featurizer": feat.id,
        "rtol": rtol,
        "atol": atol,
        "files": {k: sha256(v) for k, v in sorted(files.items())},
    }
    files[MANIFEST] = yaml.safe_dump(manifest, sort_keys=False).encode()
    return write_members(files, out_path)


# --------------------------------------------------------------------------------------
# read and verify
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class LearnwarePackage:
    """A package read into memory (no code run).

    Attributes
    ----------
    path, manifest, spec, component, params, featurizer, rtol, atol, rkme,
    example_input, expected, weights, members
    """

    path: Path
    manifest: dict[str, Any]
    spec: SemanticSpec
    component: str
    params: dict[str, Any]
    featurizer: str
    rtol: float
    atol: float
    rkme: RKME
    example_input: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    weights: dict[str, Any] | None
    members: dict[str, bytes]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def content_id(self) -> str:
        """Content address: sha256 of the manifest (which pins every file's hash)."""
        return sha256(self.members[MANIFEST])


def _check(members: dict[str, bytes], problems: list[Problem]) -> dict[str, Any]:
    """Manifest, integrity and contents checks; fills ``problems``; returns parsed parts."""
    from components.base import ComponentNotFoundError, get_component
    from specs.features import known_featurizers

    parts: dict[str, Any] = {}
    if MANIFEST not in members:
        problems.append(
            Problem("missing-file", MANIFEST, "the package has no learnware.yaml manifest")
        )
        return parts
    try:
        manifest = yaml.safe_load(members[MANIFEST].decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(
            Problem("bad-manifest", MANIFEST, f"is not valid YAML: {str(exc).splitlines()[0]}")
        )
        return parts
    if not isinstance(manifest, dict):
        problems.append(
            Problem("bad-manifest", MANIFEST, f"must be a mapping, got {type(manifest).__name__}")
        )
        return parts
    parts["manifest"] = manifest
    if manifest.get("format") != FORMAT:
        problems.append(
            Problem(
                "bad-manifest",
                "learnware.yaml:format",
                f"expected {FORMAT!r}, got {manifest.get('format')!r}",
            )
        )
    # semantic spec
    try:
        parts["spec"] = SemanticSpec.from_dict(manifest.get("spec") or {})
    except Exception as exc:  # pydantic ValidationError or ValueError
        errors = getattr(exc, "errors", None)
        if callable(errors):
            for e in errors():
                loc = ".".join(str(x) for x in e.get("loc", ()))
                msg = str(e.get("msg", "")).removeprefix("Value error, ")
                problems.append(
                    Problem(
                        "bad-spec",
                        f"learnware.yaml:spec.{loc}" if loc else "learnware.yaml:spec",
                        msg,
                    )
                )
        else:
            problems.append(Problem("bad-spec", "learnware.yaml:spec", str(exc)))
    # component (allow-list) and params
    comp = manifest.get("component")
    if not isinstance(comp, str) or not comp:
        problems.append(
            Problem("bad-manifest", "learnware.yaml:component", "missing component name")
        )
    else:
        try:
            get_component(comp)
            parts["component"] = comp
        except ComponentNotFoundError as exc:
            problems.append(
                Problem(
                    "unknown-component",
                    "learnware.yaml:component",
                    f"{exc} (install the plug-in package that provides it)",
                )
            )
    params = manifest.get("params", {})
    if not isinstance(params, dict):
        problems.append(
            Problem(
                "bad-manifest",
                "learnware.yaml:params",
                f"must be a mapping of constructor arguments, got {type(params).__name__}",
            )
        )
    else:
        parts["params"] = params
    for tol in ("rtol", "atol"):
        v = manifest.get(tol, 0.0)
        if not isinstance(v, int | float) or v < 0:
            problems.append(
                Problem(
                    "bad-manifest",
                    f"learnware.yaml:{tol}",
                    f"expected a non-negative number, got {v!r}",
                )
            )
    feat = manifest.get("featurizer")
    if feat not in known_featurizers():
        problems.append(
            Problem(
                "unknown-featurizer",
                "learnware.yaml:featurizer",
                f"unknown featurizer {feat!r}; known: {sorted(known_featurizers())}",
            )
        )
    # integrity
    files = manifest.get("files")
    if not isinstance(files, dict):
        problems.append(
            Problem(
                "bad-manifest", "learnware.yaml:files", "missing the mapping of file name -> sha256"
            )
        )
        files = {}
    for name in REQUIRED:
        if name not in files:
            problems.append(
                Problem("missing-file", name, "is required but not listed in learnware.yaml:files")
            )
        elif name not in members:
            problems.append(
                Problem(
                    "missing-file", name, "is listed in learnware.yaml but missing from the package"
                )
            )
    for name, digest in files.items():
        why = safe_member_name(str(name))
        if why:
            problems.append(
                Problem("unsafe-path", str(name), f"{why} (listed in learnware.yaml:files)")
            )
            continue
        if name not in REQUIRED + OPTIONAL:
            problems.append(
                Problem(
                    "unexpected-file",
                    str(name),
                    f"is not part of the package format (allowed: {list(REQUIRED + OPTIONAL)})",
                )
            )
        if name not in members:
            if name not in REQUIRED:
                problems.append(
                    Problem(
                        "missing-file",
                        str(name),
                        "is listed in learnware.yaml but missing from the package",
                    )
                )
            continue
        got = sha256(members[name])
        if got != digest:
            problems.append(
                Problem(
                    "hash-mismatch",
                    str(name),
                    f"sha256 is {got[:16]}..., the manifest says {str(digest)[:16]}...; the file was changed or corrupted",
                )
            )
    for name in sorted(set(members) - set(files) - {MANIFEST}):
        problems.append(
            Problem(
                "unexpected-file",
                name,
                "is in the package but not listed (with its sha256) in learnware.yaml:files",
            )
        )
    # contents
    if "rkme.safetensors" in members:
        try:
            rk = RKME.from_bytes(members["rkme.safetensors"], "rkme.safetensors")
            parts["rkme"] = rk
            if feat and rk.featurizer != feat:
                problems.append(
                    Problem(
                        "bad-rkme",
                        "rkme.safetensors",
                        f"was computed with featurizer {rk.featurizer!r} but the manifest says {feat!r}",
                    )
                )
        except Exception as exc:
            problems.append(
                Problem("bad-rkme", "rkme.safetensors", f"cannot be read as an RKME: {exc}")
            )
    for key, name in (("example_input", "example/input.npz"), ("expected", "example/expected.npz")):
        if name in members:
            try:
                parts[key] = _load_npz(members[name], name)
            except Exception as exc:
                problems.append(
                    Problem(
                        "bad-example",
                        name,
                        f"cannot be read as a numeric .npz (pickled object arrays are refused): {exc}",
                    )
                )
    if parts.get("example_input") == {}:
        problems.append(Problem("bad-example", "example/input.npz", "holds no arrays"))
    if "weights.safetensors" in members:
        try:
            parts["weights"] = _load_safetensors(members["weights.safetensors"])
        except Exception as exc:
            problems.append(
                Problem(
                    "bad-weights", "weights.safetensors", f"cannot be read as safetensors: {exc}"
                )
            )
    return parts


def verify_package(path: str | Path) -> list[Problem]:
    """Every problem of a package without running any code (empty list = passes).

    Checks layout and safe paths, the manifest (format, semantic-spec vocabulary,
    component on the allow-list, params), sha256 of every file, and that the RKME and the
    example arrays load without pickle.

    Examples
    --------
    >>> [p.code for p in verify_package("/nonexistent/package")]
    ['missing-file']
    """
    members, problems = read_members(path)
    if members or not problems:
        _check(members, problems)
    return problems


def read_package(path: str | Path) -> LearnwarePackage:
    """Read and verify a package.

    Raises
    ------
    SubmissionError
        If :func:`verify_package` finds problems (all listed in the message).
    """
    members, problems = read_members(path)
    return package_from_members(members, path, problems)


def package_from_members(
    members: dict[str, bytes], path: str | Path = "<memory>", problems: list[Problem] | None = None
) -> LearnwarePackage:
    """Parse and check a package given as ``{member name: bytes}``.

    Raises
    ------
    SubmissionError
        If any check fails.
    """
    problems = list(problems or [])
    parts = _check(members, problems) if members or not problems else {}
    if problems:
        raise SubmissionError(problems, f"invalid learnware package {path}")
    m = parts["manifest"]
    return LearnwarePackage(
        path=Path(path),
        manifest=m,
        spec=parts["spec"],
        component=parts["component"],
        params=parts["params"],
        featurizer=m["featurizer"],
        rtol=float(m.get("rtol", 1e-4)),
        atol=float(m.get("atol", 1e-5)),
        rkme=parts["rkme"],
        example_input=parts["example_input"],
        expected=parts["expected"],
        weights=parts.get("weights"),
        members=members,
    )


def load_component(pkg: LearnwarePackage) -> Any:
    """Instantiate the package's component through the allow-list and load its weights."""
    from components.base import instantiate

    module = instantiate({"_target_": pkg.component, **pkg.params})
    if pkg.weights:
        try:
            module.load_state_dict(pkg.weights, strict=True)
        except RuntimeError as exc:
            raise SubmissionError(
                [
                    Problem(
                        "bad-weights",
                        "weights.safetensors",
                        f"do not fit {pkg.component}: {str(exc).splitlines()[0]}",
                    )
                ]
            ) from exc
    return module


@dataclasses.dataclass
class PackageTest:
    """Result of running a package's example.

    Attributes
    ----------
    ok : bool
    problems : list of Problem
    seconds : float
        Wall time of the example run.
    """

    ok: bool
    problems: list[Problem]
    seconds: float


ISOLATIONS = ("thread", "process")
"""How :func:`test_package` runs an example: ``"thread"`` (in this process; a runaway
example is abandoned when the limit passes) or ``"process"`` (a fresh interpreter that is
killed when the limit passes)."""


def _example_in_child(package_dir: str, out: str) -> None:  # pragma: no cover - child
    """Entry point of the ``isolation="process"`` child: run the example, save outputs."""
    from components.base import run_example

    try:
        pkg = read_package(package_dir)
        got = run_example(load_component(pkg), pkg.example_input)
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in got.items()}
        np.savez(out, **arrays)
    except BaseException as exc:  # reported to the parent verbatim
        first = str(exc).splitlines()[0] if str(exc) else ""
        Path(out + ".err").write_text(f"{type(exc).__name__}: {first}")


class _ChildError(RuntimeError):
    """An exception raised inside the isolated example process (its type and message)."""


def _run_example_isolated(pkg: LearnwarePackage, timeout: float) -> dict[str, np.ndarray]:
    """Run ``pkg``'s example in a spawned interpreter, killing it after ``timeout`` s."""
    import multiprocessing
    import tempfile

    with tempfile.TemporaryDirectory(prefix="learndock-example-") as tmp:
        pkg_dir = write_members(pkg.members, Path(tmp) / "package")
        out = str(Path(tmp) / "got.npz")
        proc = multiprocessing.get_context("spawn").Process(
            target=_example_in_child, args=(str(pkg_dir), out), daemon=True
        )
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise TimeoutError(
                f"the example did not finish within {timeout:g} s (its process was killed)"
            )
        err = Path(out + ".err")
        if err.exists():
            raise _ChildError(err.read_text())
        if proc.exitcode != 0 or not Path(out).exists():
            raise _ChildError(f"the example process died with exit code {proc.exitcode}")
        with np.load(out, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def test_package(
    path: str | Path | LearnwarePackage, *, timeout: float = 60.0, isolation: str = "thread"
) -> PackageTest:
    """Run the shipped example (component instantiated through the allow-list) under a
    time limit and compare with the expected output within the manifest's tolerance.

    Parameters
    ----------
    path : path or LearnwarePackage
    timeout : float
        Seconds the example may take.
    isolation : {"thread", "process"}
        ``"thread"`` runs the example in this process (fast; a runaway example is
        abandoned, not stopped, when the limit passes).  ``"process"`` runs it in a fresh
        interpreter that is killed when the limit passes; the limit then includes the
        interpreter's start (a few seconds for torch), and only components discoverable
        through entry points can be tested.  Use it on shared registry servers.

    Returns
    -------
    PackageTest
        ``ok`` False with problems naming expected vs got when it does not reproduce.

    Raises
    ------
    ValueError
        If ``isolation`` is not one of :data:`ISOLATIONS` or ``timeout`` is not a
        positive number of seconds.
    """
    from components.base import run_example

    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation: expected one of {ISOLATIONS}, got {isolation!r}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    try:
        pkg = path if isinstance(path, LearnwarePackage) else read_package(path)
    except SubmissionError as exc:
        return PackageTest(False, exc.problems, 0.0)
    t0 = time.perf_counter()
    try:
        if isolation == "process":
            got = _run_example_isolated(pkg, timeout)
        else:
            module = load_component(pkg)
            got = run_with_timeout(lambda: run_example(module, pkg.example_input), timeout)
    except TimeoutError as exc:
        return PackageTest(
            False,
            [Problem("example-timeout", "example/input.npz", f"{exc}; make the example smaller")],
            time.perf_counter() - t0,
        )
    except SubmissionError as exc:
        return PackageTest(False, exc.problems, time.perf_counter() - t0)
    except Exception as exc:
        what = (
            str(exc)
            if isinstance(exc, _ChildError)
            else f"{type(exc).__name__}: " + (str(exc).splitlines()[0] if str(exc) else "")
        )
        msg = f"running {pkg.component} on the example raised {what}"
        return PackageTest(
            False, [Problem("example-error", "example/input.npz", msg)], time.perf_counter() - t0
        )
    secs = time.perf_counter() - t0
    problems = compare_outputs(pkg.expected, got, rtol=pkg.rtol, atol=pkg.atol)
    return PackageTest(not problems, problems, secs)


test_package.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
