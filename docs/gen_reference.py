"""Generate the reference pages of the learndock documentation.

* ``reference/cli.md``     from the typer app (``pipelines.cli``), every command and option;
* ``reference/api/<package>.md``  from the numpydoc docstrings of every public module;
* ``reference/config.md``  from the Hydra config groups under ``conf/``;
* ``reference/semantic-spec.md`` (+ ``.schema.json``) from :class:`specs.semantic.SemanticSpec`.

Used by the mkdocs hook (``docs/hooks.py``) at build time, so the pages never go stale;
run it by hand to look at the Markdown::

    python docs/gen_reference.py --out /tmp/reference
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import pkgutil
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["API_PACKAGES", "api_pages", "cli_markdown", "config_markdown", "numpydoc_to_markdown"]

log = logging.getLogger("mkdocs.hooks.learndock")

ROOT = Path(__file__).resolve().parents[1]
API_PACKAGES: tuple[tuple[str, str], ...] = (
    ("specs", "The dock: specifications, featurizers, RKME, packages, registry, task library"),
    ("components", "The algorithms: base class and the three families"),
    ("pipelines", "Composition and execution: pipeline, I/O, batch, solve, report, CLI"),
    ("sample_data", "Seeded sample data with ground truth"),
    ("learndock", "The authoring kit: contract suite, pytest plugin, scaffold, validation"),
)

# --------------------------------------------------------------------------------------
# numpydoc -> Markdown
# --------------------------------------------------------------------------------------
_ITEM_SECTIONS = {
    "Parameters",
    "Other Parameters",
    "Returns",
    "Yields",
    "Raises",
    "Warns",
    "Attributes",
    "Class attributes",
    "Keyword Arguments",
}
_SECTION_RE = re.compile(r"^([A-Z][A-Za-z ]+)\n-{3,}$", re.M)


def _inline(text: str) -> str:
    """RST inline markup to Markdown; escape stray HTML outside code spans."""
    text = re.sub(r":math:`([^`]+)`", r"`\1`", text)
    text = re.sub(
        r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|ref):`~?([^`]+)`", r"`\1`", text
    )
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    # code spans and RST emphasis (*word*, **word**) pass through; the rest is escaped
    parts = re.split(r"(`[^`]*`|(?<![\w*])\*{1,2}[^*\s](?:[^*]*[^*\s])?\*{1,2}(?![\w*]))", text)
    for i in range(0, len(parts), 2):
        seg = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("_", r"\_")
        parts[i] = re.sub(r"\*(?=\S)", r"\*", seg)  # emphasis markers, not "* " bullets
    return "".join(parts)


def _paragraphs(body: str) -> str:
    """Free text with ``.. math::`` and ``::`` literal blocks turned into code blocks."""
    out: list[str] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        literal = stripped.startswith(".. math::") or stripped.endswith("::")
        if literal:
            head = (
                stripped[len(".. math::") :].strip()
                if stripped.startswith(".. math::")
                else stripped[:-2].rstrip()
            )
            if head and not stripped.startswith(".. math::"):
                out.append(_inline(head + ":"))
            block: list[str] = [head] if stripped.startswith(".. math::") and head else []
            i += 1
            base = len(line) - len(line.lstrip())
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > base
            ):
                block.append(lines[i])
                i += 1
            code = textwrap.dedent("\n".join(block)).strip("\n")
            if code:
                out += ["", "```text", code, "```", ""]
            continue
        if stripped.startswith(".. ["):
            m = re.match(r"\.\. \[(\w+)\]\s*(.*)", stripped)
            ref = [m.group(2)] if m else [stripped]
            i += 1
            while i < len(lines) and lines[i].startswith("   "):
                ref.append(lines[i].strip())
                i += 1
            out.append(f"{m.group(1) if m else '-'}. " + _inline(" ".join(ref)))
            continue
        out.append(_inline(line))
        i += 1
    return "\n".join(out)


def _items(body: str) -> str:
    out: list[str] = []
    name: str | None = None
    desc: list[str] = []

    def flush() -> None:
        if name is not None:
            n, _, t = name.partition(" : ")
            head = f"- **{_inline(n.strip())}**" + (
                f" (*{_inline(t.strip())}*)" if t.strip() else ""
            )
            text = " ".join(d.strip() for d in desc if d.strip())
            out.append(head + (f": {_inline(text)}" if text else ""))

    for line in body.splitlines():
        if line and not line[0].isspace():
            flush()
            name, desc = line.strip(), []
        elif name is not None:
            desc.append(line)
    flush()
    return "\n".join(out)


def _examples(body: str) -> str:
    blocks: list[str] = []
    prose: list[str] = []
    code: list[str] = []
    for line in body.splitlines():
        if line.startswith((">>>", "...")) or (code and line.strip()):
            if prose:
                blocks.append(_inline(" ".join(p.strip() for p in prose if p.strip())))
                prose = []
            code.append(line)
        else:
            if code:
                blocks.append("```python\n" + "\n".join(code) + "\n```")
                code = []
            if line.strip():
                prose.append(line)
    if prose:
        blocks.append(_inline(" ".join(prose)))
    if code:
        blocks.append("```python\n" + "\n".join(code) + "\n```")
    return "\n\n".join(blocks) if blocks else ""


def numpydoc_to_markdown(doc: str | None, *, level: int = 4) -> str:
    """Render a numpydoc docstring as Markdown.

    Parameters
    ----------
    doc : str or None
        The docstring (cleaned with :func:`inspect.cleandoc` here).
    level : int
        Heading level of the section titles.

    Returns
    -------
    str

    Examples
    --------
    >>> md = numpydoc_to_markdown("Add.\\n\\nParameters\\n----------\\nx : int\\n    A number.")
    >>> "- **x** (*int*): A number." in md
    True
    """
    if not doc:
        return ""
    doc = inspect.cleandoc(doc)
    pieces = _SECTION_RE.split(doc)
    out = [_paragraphs(pieces[0].strip())]
    for title, body in zip(pieces[1::2], pieces[2::2]):
        body = body.strip("\n")
        out.append(f"\n{'#' * level} {title}\n")
        if title in _ITEM_SECTIONS:
            out.append(_items(body))
        elif title == "Examples":
            out.append(_examples(textwrap.dedent(body)))
        elif title == "See Also":
            out.append(_inline(body))
        else:
            out.append(_paragraphs(body))
    return "\n".join(out).strip() + "\n"


# --------------------------------------------------------------------------------------
# API pages
# --------------------------------------------------------------------------------------
def _public_modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, package + "."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts) or parts[-1] in ("conftest",):
            continue
        names.append(info.name)
    return sorted(names)


def _signature(obj: Any) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    return sig if len(sig) < 400 else sig[:397] + "..."


def _member_markdown(modname: str, name: str, obj: Any) -> str:
    anchor = f"{modname}.{name}"
    if inspect.isclass(obj):
        lines = [
            f"### class `{name}` {{#{anchor}}}",
            "",
            f"```python\nclass {name}{_signature(obj)}\n```",
            "",
        ]
        lines.append(numpydoc_to_markdown(obj.__doc__))
        for mname, member in sorted(vars(obj).items()):
            if mname.startswith("_") or not (
                inspect.isfunction(member)
                or isinstance(member, classmethod | staticmethod | property)
            ):
                continue
            fn = (
                member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            )
            if not fn.__doc__:
                continue
            kind = "property " if isinstance(member, property) else ""
            sig = "" if isinstance(member, property) else _signature(fn)
            lines += [
                f"#### {kind}`{name}.{mname}`",
                "",
                f"```python\n{mname}{sig}\n```",
                "",
                numpydoc_to_markdown(fn.__doc__, level=5),
            ]
        return "\n".join(lines)
    if callable(obj):
        return "\n".join(
            [
                f"### `{name}` {{#{anchor}}}",
                "",
                f"```python\n{name}{_signature(obj)}\n```",
                "",
                numpydoc_to_markdown(obj.__doc__),
            ]
        )
    return "\n".join(
        [f"### `{name}` {{#{anchor}}}", "", f"```python\n{name} = {obj!r}\n```"[:600], ""]
    )


def _module_markdown(modname: str) -> str:
    mod = importlib.import_module(modname)
    lines = [f"## `{modname}`", "", numpydoc_to_markdown(mod.__doc__, level=3)]
    for name in getattr(mod, "__all__", ()):
        obj = getattr(mod, name, None)
        if obj is None:
            continue
        defined_here = getattr(obj, "__module__", modname) == modname or not (
            inspect.isclass(obj) or inspect.isfunction(obj)
        )
        if not defined_here and modname.count(".") == 0 and modname != "learndock":
            continue  # a package re-export: documented in its defining module
        lines.append(_member_markdown(modname, name, obj))
    return "\n".join(lines)


def api_pages(warn: Callable[[str], None] = log.warning) -> dict[str, str]:
    """``{"reference/api/<package>.md": markdown}`` for every package of :data:`API_PACKAGES`.

    A module that fails to import is reported through ``warn`` (the strict docs build
    fails on it); a missing *optional* third-party dependency is only noted on the page.
    """
    own = {p for p, _ in API_PACKAGES}
    pages: dict[str, str] = {}
    for package, title in API_PACKAGES:
        lines = [f"# `{package}`", "", title + ".", ""]
        try:
            modules = _public_modules(package)
        except Exception as exc:
            warn(f"API reference: cannot import package {package!r}: {exc}")
            continue
        for modname in modules:
            try:
                lines.append(_module_markdown(modname))
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.split(".")[0] not in own:
                    lines += [
                        f"## `{modname}`",
                        "",
                        f"*Not documented here: optional dependency `{exc.name}` is not installed.*",
                        "",
                    ]
                    continue
                warn(f"API reference: cannot import {modname}: {exc}")
            except Exception as exc:
                warn(f"API reference: cannot import {modname}: {type(exc).__name__}: {exc}")
        pages[f"reference/api/{package}.md"] = "\n".join(lines) + "\n"
    return pages


# --------------------------------------------------------------------------------------
# CLI page
# --------------------------------------------------------------------------------------
def _click_command() -> Any:
    import typer

    from pipelines import cli

    if not getattr(cli, "_learndock_docs_assembled", False):
        cli._assemble()
        cli._learndock_docs_assembled = True  # type: ignore[attr-defined]
    return typer.main.get_command(cli.app)


def _help_text(text: str | None) -> str:
    if not text:
        return ""
    text = inspect.cleandoc(text).replace("\b\n", "")
    return _inline(text)


def _type_name(p: Any) -> str:
    t = getattr(p, "type", None)
    if t is not None and getattr(t, "name", None):
        return str(t.name)
    ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
    if ann is None:
        return ""
    text = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
    return _inline(text.replace("pathlib.", "").replace("|", "or"))


def _command_markdown(cmd: Any, path: list[str], level: int) -> list[str]:
    name = " ".join(path)
    lines = [f"{'#' * level} `{name}`", ""]
    if cmd.help:
        lines += [_help_text(cmd.help), ""]
    ctx = cmd.context_class(cmd, info_name=name)
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    usage = re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(), usage)
    lines += ["```text", f"{name} {usage}".rstrip(), "```", ""]
    # typer vendors its own click: recognise parameters by kind, not by class
    args = [p for p in cmd.params if getattr(p, "param_type_name", "") == "argument"]
    opts = [
        p
        for p in cmd.params
        if getattr(p, "param_type_name", "") == "option" and not p.hidden and p.name != "help"
    ]
    if args:
        lines += ["| argument | type | help |", "|---|---|---|"]
        for p in args:
            lines.append(
                f"| `{p.name.upper()}` | {_type_name(p)} | {_help_text(getattr(p, 'help', '') or '').replace('|', '/')} |"
            )
        lines.append("")
    if opts:
        lines += ["| option | type | default | help |", "|---|---|---|---|"]
        for p in opts:
            flags = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            default = "" if p.default is None or p.required else f"`{p.default}`"
            if p.required:
                default = "required"
            typ = "flag" if getattr(p, "is_flag", False) else _type_name(p)
            lines.append(
                f"| {flags} | {typ} | {default} | {_help_text(p.help).replace('|', '/')} |"
            )
        lines.append("")
    if hasattr(cmd, "list_commands"):
        for sub_name in sorted(cmd.list_commands(ctx)):
            sub = cmd.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                lines += _command_markdown(sub, [*path, sub_name], min(level + 1, 4))
    return lines


def cli_markdown() -> str:
    """The CLI reference page, generated from the ``learndock`` typer app."""
    root = _click_command()
    lines = [
        "# Command line",
        "",
        "Generated from the typer app `pipelines.cli.app` when the documentation is built.",
        "`learndock run` and `learndock solve` are Hydra applications: their arguments are",
        "Hydra overrides (`key=value`, `group=option`, `-m` for multirun sweeps, `--cfg job`",
        "to print the composed config); see [the user guide](../concepts.md#running-pipelines-with-hydra)",
        "and [the configuration groups](config.md).",
        "",
    ]
    ctx = root.context_class(root, info_name="learndock")
    for sub_name in root.list_commands(ctx):
        sub = root.get_command(ctx, sub_name)
        if sub is not None and not sub.hidden:
            lines += _command_markdown(sub, ["learndock", sub_name], 2)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# config groups page
# --------------------------------------------------------------------------------------
def _yaml_summary(path: Path) -> tuple[str, list[str]]:
    text = path.read_text(encoding="utf-8")
    comment = []
    for line in text.splitlines():
        if line.startswith("#"):
            c = line.lstrip("#").strip()
            if not c.startswith("@package"):
                comment.append(c)
        elif line.strip():
            break
    keys = [m.group(1) for m in re.finditer(r"^([A-Za-z_][\w\-]*):", text, re.M)]
    return " ".join(comment), keys


def config_markdown(conf_dir: Path = ROOT / "conf") -> str:
    """The configuration-groups page, generated from the YAML under ``conf/``."""
    lines = [
        "# Configuration groups",
        "",
        "Generated from `conf/` when the documentation is built. Choose an option of a group",
        "on the command line with `group=option` (e.g. `learndock run detection=spots`), set a",
        "key with `group.key=value`, sweep with `-m group=a,b`. Plug-ins add options to these",
        "groups through a Hydra search-path plugin ([authoring guide](../authoring.md)).",
        "",
    ]
    if not conf_dir.is_dir():
        return "\n".join([*lines, "*No `conf/` directory found.*", ""])
    top = sorted(p for p in conf_dir.glob("*.yaml"))
    for p in top:
        desc, keys = _yaml_summary(p)
        lines += [
            f"## primary config `{p.stem}`",
            "",
            _inline(desc),
            "",
            "keys: " + ", ".join(f"`{k}`" for k in keys),
            "",
        ]
    for group in sorted(d for d in conf_dir.rglob("*") if d.is_dir() and any(d.glob("*.yaml"))):
        rel = group.relative_to(conf_dir).as_posix()
        lines += [f"## group `{rel}`", "", "| option | description | keys |", "|---|---|---|"]
        for p in sorted(group.glob("*.yaml")):
            desc, keys = _yaml_summary(p)
            shown = ", ".join(f"`{k}`" for k in keys if k != "defaults")
            lines.append(f"| `{rel}={p.stem}` | {_inline(desc).replace('|', '/')} | {shown} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# semantic spec schema page
# --------------------------------------------------------------------------------------
_FIELD_NOTES = {
    "family": "closed vocabulary: what kind of algorithm",
    "task": "open vocabulary (see below): what it is for",
    "modality": "open vocabulary: what data it eats; selects the featurizer of the RKME",
    "scale": "closed vocabulary",
    "inputs": "named forward() inputs: axes letters, dtype, units",
    "outputs": "named outputs (fields of the returned dataclass/dict, or `output`)",
    "differentiable": "gradients flow from outputs to inputs and parameters",
    "devices": "where it runs; must include `cpu`",
    "description": "one or two sentences a user searches",
    "tags": "free keywords (searchable, filterable)",
    "authors": "who made it",
    "license": "SPDX identifier",
}


def semantic_spec_pages() -> dict[str, str]:
    """``reference/semantic-spec.md`` (fields + JSON Schema) and the schema file itself,
    generated from the pydantic model :class:`specs.semantic.SemanticSpec`."""
    import json

    from specs import semantic

    schema = semantic.SemanticSpec.model_json_schema()
    text = json.dumps(schema, indent=2)
    lines = [
        "# Semantic specification",
        "",
        "Generated from the pydantic model `specs.semantic.SemanticSpec` when the documentation",
        f"is built (schema version {semantic.SCHEMA_VERSION}). It is the `spec` block of a",
        "learnware package's `learnware.yaml`; download the",
        "[JSON Schema](semantic-spec.schema.json).",
        "",
        "| field | type | default | description |",
        "|---|---|---|---|",
    ]
    for name, field in semantic.SemanticSpec.model_fields.items():
        a = field.annotation
        ann = (
            a.__name__
            if isinstance(a, type)
            else str(a).replace("typing.", "").replace("specs.semantic.", "")
        )
        required = field.is_required()
        default = "required" if required else f"`{field.get_default(call_default_factory=True)!r}`"
        desc = _inline(field.description or _FIELD_NOTES.get(name, "")).replace("|", "/")
        lines.append(f"| `{name}` | `{ann}` | {default} | {desc} |")
    lines += [
        "",
        f"Families: {', '.join(f'`{f}`' for f in semantic.FAMILIES)}. Scales: {', '.join(f'`{x}`' for x in semantic.SCALES)}.",
        f"Tasks known in this build: {', '.join(f'`{t}`' for t in semantic.known_tasks())}.",
        f"Modalities: {', '.join(f'`{m}`' for m in semantic.known_modalities())}.",
        "Tasks and modalities are open: plug-ins add words through the `learndock.vocabulary`",
        "entry point ([authoring guide](../authoring.md#4-hydra-configuration-and-vocabulary)).",
        "",
        "```json",
        text,
        "```",
        "",
    ]
    return {
        "reference/semantic-spec.md": "\n".join(lines),
        "reference/semantic-spec.schema.json": text + "\n",
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", type=Path, required=True, help="directory to write the Markdown pages into"
    )
    args = ap.parse_args(argv)
    pages = {
        "reference/cli.md": cli_markdown(),
        "reference/config.md": config_markdown(),
        **semantic_spec_pages(),
        **api_pages(print),
    }
    for rel, text in pages.items():
        dest = args.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
        print(dest)


if __name__ == "__main__":
    main()
