"""Scaffold an installable learndock plug-in package (``learndock new-plugin NAME``).

The generated package has a src layout, a ``pyproject.toml`` registering its
components under the ``learndock.components`` entry point (and new vocabulary under
``learndock.vocabulary``), one example component in the house style with its learnware
declaration, a Hydra config group exposed through a search-path plugin
(``hydra_plugins/<pkg>_searchpath``), tests that run learndock's contract suite, and a
README.  It passes its own tests right after generation.

Templates are Jinja2 files under ``learndock/_templates/plugin``; in their paths
``__pkg__`` becomes the import name, ``__module__`` the component module name and
``__family__`` the family (the Hydra config group the component's YAML goes into).
"""

from __future__ import annotations

import dataclasses
import json
import keyword
import re
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["PluginNames", "create_plugin", "plugin_names"]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*([_-][A-Za-z0-9]+)*$")
_RESERVED = {
    "learndock",
    "components",
    "specs",
    "pipelines",
    "sample_data",
    "conf",
    "hydra",
    "hydra_plugins",
    "torch",
    "numpy",
    "tests",
    "test",
}


@dataclasses.dataclass(frozen=True)
class PluginNames:
    """The names derived from a plug-in NAME.

    Attributes
    ----------
    name : str
        As given, e.g. ``"lab-flares"``.
    dist : str
        Distribution name (``pip install``), e.g. ``"lab-flares"``.
    pkg : str
        Import name, e.g. ``"lab_flares"``.
    module : str
        Module of the example component inside the package.
    component : str
        Component name learndock registers, e.g. ``"lab_flares.outliers"``.
    learnware : str
        Name of the example learnware, e.g. ``"lab_flares.outliers.default"``.
    cls, func : str
        Class and function names of the example component.
    """

    name: str
    dist: str
    pkg: str
    module: str = "outliers"
    component: str = ""
    learnware: str = ""
    cls: str = "RobustOutlierScore"
    func: str = "robust_outlier_score"


def plugin_names(name: str) -> PluginNames:
    """Validate a plug-in NAME and derive its distribution, import and component names.

    Parameters
    ----------
    name : str
        Letters, digits, single ``-`` or ``_`` separators, starting with a letter.

    Returns
    -------
    PluginNames

    Raises
    ------
    ValueError
        If ``name`` is malformed, a Python keyword, or shadows a package learndock needs.

    Examples
    --------
    >>> n = plugin_names("lab-flares")
    >>> n.pkg, n.component, n.learnware
    ('lab_flares', 'lab_flares.outliers', 'lab_flares.outliers.default')
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"NAME: expected letters and digits joined by single '-' or '_', starting with a letter "
            f"(e.g. 'lab-flares'), got {name!r}"
        )
    pkg = name.lower().replace("-", "_")
    if keyword.iskeyword(pkg) or pkg in _RESERVED:
        raise ValueError(
            f"NAME: {name!r} would give the import name {pkg!r}, which is reserved; choose another name"
        )
    dist = name.lower().replace("_", "-")
    return PluginNames(
        name=name,
        dist=dist,
        pkg=pkg,
        component=f"{pkg}.outliers",
        learnware=f"{pkg}.outliers.default",
    )


def _template_files() -> list[tuple[str, str]]:
    root = resources.files("learndock") / "_templates" / "plugin"
    out: list[tuple[str, str]] = []

    def walk(node: Any, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, rel + "/")
            elif child.name.endswith(".j2"):
                out.append((rel[: -len(".j2")], child.read_text(encoding="utf-8")))

    walk(root, "")
    return out


def create_plugin(
    name: str,
    directory: str | Path = ".",
    *,
    family: str = "detection",
    task: str = "anomaly-detection",
    modality: str = "light-curve",
    scale: str = "cosmic",
    author: str = "A. Lab",
    description: str | None = None,
    force: bool = False,
) -> Path:
    """Write a new plug-in package into ``directory / NAME``.

    Parameters
    ----------
    name : str
        Plug-in name (see :func:`plugin_names`).
    directory : path
        Parent directory; the package goes into ``directory / name``.
    family, task, modality, scale : str
        Semantic spec of the example learnware.  ``family`` and ``scale`` come from the
        closed vocabulary; a ``task`` or ``modality`` that learndock does not know yet
        is added to the plug-in's ``learndock.vocabulary`` entry point.
    author, description : str
        Written into ``pyproject.toml``, the README and the spec.
    force : bool
        Write into an existing non-empty directory (files are overwritten).

    Returns
    -------
    Path
        The plug-in's root directory.

    Raises
    ------
    ValueError
        If a name or spec word is invalid.
    FileExistsError
        If the target directory exists, is not empty and ``force`` is False.

    Examples
    --------
    >>> import tempfile
    >>> root = create_plugin("lab-flares", tempfile.mkdtemp())
    >>> (root / "src" / "lab_flares" / "outliers.py").is_file()
    True
    """
    import jinja2

    from specs.semantic import FAMILIES, SCALES, known_modalities, known_tasks

    names = plugin_names(name)
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {list(FAMILIES)}, got {family!r}")
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {list(SCALES)}, got {scale!r}")
    word = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
    for label, value in (("task", task), ("modality", modality)):
        if not word.match(value):
            raise ValueError(
                f"{label}: expected lowercase words joined by '-', e.g. 'flare-detection', got {value!r}"
            )
    for label, value in (("author", author), ("description", description or "")):
        if any(c in value for c in '"\\\n'):
            raise ValueError(
                f"{label}: must not contain quotes, backslashes or newlines, got {value!r}"
            )
    root = Path(directory) / names.name
    if root.exists() and any(root.iterdir()) and not force:
        raise FileExistsError(
            f"directory {str(root)!r} exists and is not empty (use --force to overwrite)"
        )
    ctx = {
        **dataclasses.asdict(names),
        "family": family,
        "task": task,
        "modality": modality,
        "scale": scale,
        "author": author,
        "description": description or f"{names.dist}: a learndock plug-in",
        "new_tasks": json.dumps([task] if task not in known_tasks() else []),
        "new_modalities": json.dumps([modality] if modality not in known_modalities() else []),
    }
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    for rel, text in _template_files():
        rel = (
            rel.replace("__family__", family)
            .replace("__pkg__", names.pkg)
            .replace("__module__", names.module)
        )
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(env.from_string(text).render(**ctx), encoding="utf-8")
    return root
