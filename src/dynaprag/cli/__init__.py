"""The ``dynaprag`` command: a thin layer over the public Python API.

Each area's commands live in one module of this package with a ``register(app)`` function
(listed in ``_COMMAND_MODULES``); heavy imports happen inside the commands. The CLI is the top
layer: it imports the public API of every layer below and nothing imports it.
"""
from __future__ import annotations

import importlib

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Dynamic and parametric retrieval-augmented generation.")
console = Console()
err = Console(stderr=True)

_COMMAND_MODULES: list[str] = [
    "dynaprag.cli.retrieval",
    "dynaprag.cli.eval",
    "dynaprag.cli.serve",
    "dynaprag.cli.ask",
    "dynaprag.cli.parametric",
    "dynaprag.cli.calibrate",
    "dynaprag.cli.reproduce",
]


@app.callback()
def _root() -> None:
    """Dynamic and parametric retrieval-augmented generation."""


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error that says what to do, and exit."""
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@app.command()
def models() -> None:
    """List model aliases: whether installed, size, license, and how to install."""
    from dynaprag.lm.sources import MODELS

    table = Table(title="dynaprag model aliases")
    for col in ("alias", "installed", "size", "license", "install with"):
        table.add_column(col, no_wrap=col == "alias", overflow="fold")
    for name in MODELS:
        src = MODELS.get(name)
        table.add_row(name, "yes" if src.installed else "no", f"{src.size_mb} MB", src.license,
                      "" if src.installed else src.install)
    console.print(table)
    console.print("Any Hugging Face model id or local folder (safetensors) also works with --model.")


@app.command()
def methods() -> None:
    """List the named methods: each axis's component and the paper or variant it follows."""
    from dynaprag.dynamic.methods import AXES, resolve_method
    from dynaprag.pipeline import method_names

    table = Table(title="dynaprag methods (any other composition: --method M AXIS=NAME AXIS.KNOB=VALUE)")
    for col in ("method", *AXES, "source"):
        table.add_column(col, overflow="fold")
    for name in method_names():
        m = resolve_method(name)
        table.add_row(name, *(m.names[axis] for axis in AXES), m.paper)
    console.print(table)


for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)

