"""The ``dynaprag`` command: a thin layer over the public Python API.

Each area's commands live in one module of this package with a ``register(app)`` function
(listed in ``_COMMAND_MODULES``); heavy imports happen inside the commands. The CLI is the top
layer: it imports the public API of every layer below and nothing imports it.
"""
from __future__ import annotations

import importlib

import typer
from rich.console import Console
from rich.markup import escape

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
    """Print a one-line error that says what to do, and exit.

    The message is printed as text (a path or option such as ``dynaprag[ray]`` keeps its
    brackets) and never wrapped, so it stays one line on a narrow or non-terminal stderr.
    """
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def models() -> None:
    """List model aliases: whether installed, size, license, and how to install."""
    from dynaprag.cli.listing import print_entry, print_title
    from dynaprag.lm.sources import MODELS

    print_title(console, "dynaprag model aliases (--model ALIAS)")
    for name in MODELS:
        src = MODELS.get(name)
        print_entry(console, name, ["installed" if src.installed else "not installed", f"{src.size_mb} MB"],
                    prose=[f"license: {src.license}"],
                    commands=[] if src.installed else [f"install: {src.install}"])
    console.print("Any Hugging Face model id or local folder (safetensors) also works with --model.",
                  markup=False, highlight=False)


@app.command()
def methods() -> None:
    """List the named methods: each axis's component and the paper or variant it follows."""
    from dynaprag.cli.listing import print_entry, print_title
    from dynaprag.dynamic.methods import AXES, resolve_method
    from dynaprag.pipeline import method_names

    print_title(console, f"dynaprag methods: {' · '.join(AXES)}")
    for name in method_names():
        m = resolve_method(name)
        print_entry(console, name, [m.names[axis] for axis in AXES], prose=[m.paper])
    console.print("Any other composition: --method M AXIS=NAME AXIS.KNOB=VALUE", markup=False, highlight=False)


for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)

