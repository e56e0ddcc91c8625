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
    "dynaprag.cli.adaptive_rag",
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


#: upper bounds of command-line numbers (see :func:`at_most`); config keys carry theirs as ``max`` metadata
MAX_BATCH = 256  # questions decoded together (as RunConfig.batch_size)
MAX_HITS = 1000  # hits printed by a search
MAX_QUEUE = 10_000  # requests waiting on a server
MAX_RESAMPLES = 1_000_000  # bootstrap resamples and sign flips (100x the default)
MAX_TOKENS = 32768  # tokens per request or answer (as PipelineConfig.max_new_tokens)
MAX_WORKERS = 64  # processes or Ray actors, each with its own memory (a model, a chunk)


def at_most(flag: str, value: float | None, bound: float) -> None:
    """Refuse a command-line number above ``bound`` with a ConfigError naming ``flag``.

    Why: as no request knob may multiply a server's work without limit, no flag may multiply a
    command's memory or time without limit (``--resamples 10**9``, ``-k 10**8``, a thousand Ray
    actors each loading the model); ``None`` (the flag's default) passes.
    """
    from dynaprag.config import ConfigError

    if value is not None and value > bound:
        raise ConfigError(f"{flag}: must be <= {bound}, got {value}")


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

