"""Lists that read at 80 columns: one entry per name, its facts on one line, prose indented below.

Why not a table: a table with a prose column (a paper's description, an install command) folds
every cell into a narrow column at 80 columns, and rich markup in a cell eats anything in square
brackets (``pip install 'dynaprag[gemma]'`` printed as ``pip install 'dynaprag'``). Here every
string is printed as plain text (no markup), prose wraps at word boundaries under its entry, and
a command is printed on a line of its own, unwrapped, so it copies and pastes whole.
"""
from __future__ import annotations

import textwrap
from typing import Iterable

from rich.console import Console

INDENT = "    "


def print_title(console: Console, title: str) -> None:
    console.print(title, markup=False, highlight=False, style="bold")


def print_entry(console: Console, name: str, facts: Iterable[str] = (), prose: Iterable[str] = (),
                commands: Iterable[str] = ()) -> None:
    """``name  fact · fact``, then each prose paragraph wrapped and indented, then each command
    indented and never wrapped (the terminal may fold it; copying it gives one line)."""
    head = "  ".join([name, " · ".join(f for f in facts if f)]).rstrip()
    console.print(head, markup=False, highlight=False, soft_wrap=True)
    width = max(40, (console.width or 80))
    for paragraph in prose:
        if paragraph:
            console.print(textwrap.fill(paragraph, width=width, initial_indent=INDENT, subsequent_indent=INDENT,
                                        break_on_hyphens=False, break_long_words=False),
                          markup=False, highlight=False, soft_wrap=True)
    for command in commands:
        console.print(INDENT + command, markup=False, highlight=False, soft_wrap=True)
