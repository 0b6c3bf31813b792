"""The ``learndock`` command.

``learndock run ...`` and ``learndock solve ...`` are Hydra applications: Hydra owns
their arguments (overrides, ``-m`` for multirun, ``--config-name``).  Every other
subcommand is a typer command; each subcommand group lives in its own module and is
added here:

=================  =====================================  =====================
command            what                                   module
=================  =====================================  =====================
registry ...       init, submit, list, show, export,      ``pipelines.cli_registry``
                   search, remove, verify, test, seed
sample-data        write the sample data sets             ``pipelines.cli_data``
batch              chunked, resumable processing          ``pipelines.cli_data``
run / solve        Hydra apps                             ``pipelines.cli_run`` / ``pipelines.cli_solve``
demo               the flagship job on sample data        ``pipelines.demo``
new-plugin,        the authoring kit for labs             ``pipelines.cli_kit``
package
=================  =====================================  =====================
"""

from __future__ import annotations

import importlib
import sys

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="learndock",
    help="Reusable learnware components for multiscale scientific imaging.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, attribute, sub-app name or None to merge commands)
_SUBAPPS: list[tuple[str, str, str | None]] = [
    ("pipelines.cli_registry", "app", "registry"),
    ("pipelines.cli_data", "register", None),
    ("pipelines.cli_kit", "register", None),
    ("pipelines.demo", "register", None),
]

_HYDRA_COMMANDS = {"run": "pipelines.cli_run", "solve": "pipelines.cli_solve"}


def _assemble() -> None:
    for mod_name, attr, sub in _SUBAPPS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                continue
            raise
        obj = getattr(mod, attr)
        if sub is None:
            obj(app)
        else:
            app.add_typer(obj, name=sub)


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def _run_placeholder() -> None:
    """Run a configured pipeline (Hydra app: `learndock run pipeline=NAME data.path=...`)."""


@app.command("solve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def _solve_placeholder() -> None:
    """Solve a task from the dock (Hydra app: `learndock solve task.goal=... data.path=...`)."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _HYDRA_COMMANDS:
        mod = importlib.import_module(_HYDRA_COMMANDS[argv[0]])
        sys.argv = [f"learndock {argv[0]}", *argv[1:]]
        mod.main()
        return
    _assemble()
    app(args=argv, prog_name="learndock")


if __name__ == "__main__":  # pragma: no cover
    main()
