"""Published tables: a paper's methods x datasets x metrics with its numbers, schema-checked.

The tables live in ``dynaprag/data/published_tables.yaml``. Why a schema: a number shown beside
ours must be traceable to its paper, table and the place it was read (a repository's at a full
commit id with the file:line, ``source.commit`` and ``source.file_lines``), so a number without a
source, under an unknown method, dataset, metric or backbone, or outside [0, 1] is refused when
the file loads (:class:`TableError`, naming the file and the key), and a table whose numbers
could not be read says why instead of holding guesses. :mod:`dynaprag.eval.reproduce` runs them.

>>> table = load_tables()["dragin-table2"]
>>> table.methods[0].ours in {m.ours for m in table.methods} and BASELINE in {m.ours for m in table.methods}
True
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

__all__ = ["BASELINE", "MethodMap", "PublishedTable", "TableError", "load_tables", "packaged_tables"]

BASELINE = "sr-rag"  # every table includes it: our differences are paired against it


class TableError(ValueError):
    """A published-tables file that breaks its schema (a number without a source, an unknown method, ...)."""


@dataclass(frozen=True)
class MethodMap:
    """One row of a published table: our preset ``ours`` stands for the paper's row ``paper``."""

    ours: str
    paper: str
    note: str = ""


@dataclass(frozen=True)
class PublishedTable:
    """A published table's structure, reference settings and numbers (``None`` where unavailable)."""

    name: str
    title: str
    source: Mapping[str, str]
    methods: tuple[MethodMap, ...]
    datasets: tuple[str, ...]
    metrics: Mapping[str, tuple[str, ...]]
    settings: Mapping[str, Any]
    backbones: tuple[str, ...]
    published: Mapping[str, Any] | None
    unavailable: str | None = None
    other_versions: tuple[Mapping[str, Any], ...] = ()

    @property
    def citation(self) -> str:
        s = self.source
        at = f" @{s['commit'][:7]} {s['file_lines']}" if s.get("commit") else ""
        return f"{s['paper']}, {s['venue']}, {s['table']} ({s['url']}{at})"

    def paper_name(self, method: str) -> str:
        return next(m.paper for m in self.methods if m.ours == method)

    def value(self, backbone: str, dataset: str, method: str, metric: str,
              published: Mapping[str, Any] | None = None) -> float | None:
        """The published number, or ``None`` where the table has none (never a guess)."""
        cells = self.published if published is None else published
        try:
            return float(cells[backbone][dataset][method][metric])
        except (KeyError, TypeError):
            return None

    def overrides(self, dataset: str) -> list[str]:
        """The reference settings of ``dataset`` as ``key=value`` pipeline overrides."""
        merged = {**self.settings.get("all", {}), **self.settings.get(dataset, {})}
        return [f"{key}={value}" for key, value in merged.items()]


def _fail(path: str, where: str, message: str) -> TableError:
    return TableError(f"{path}: {where}: {message}")


def _check_cells(path: str, table: PublishedTable, cells: Any, where: str) -> None:
    """Every number sits under a known backbone, dataset, method and metric and is a score in [0, 1]."""
    if not isinstance(cells, Mapping):
        raise _fail(path, where, "must map backbone -> dataset -> method -> metric -> number")
    methods = {m.ours for m in table.methods}
    for backbone, by_dataset in cells.items():
        if backbone not in table.backbones:
            raise _fail(path, f"{where}.{backbone}", f"not among backbones {list(table.backbones)}")
        for dataset, by_method in by_dataset.items():
            if dataset not in table.metrics:
                raise _fail(path, f"{where}.{backbone}.{dataset}", f"no metrics listed for it in {table.name}.metrics")
            for method, by_metric in by_method.items():
                if method not in methods:
                    raise _fail(path, f"{where}.{backbone}.{dataset}.{method}", "not one of the table's methods")
                for metric, number in by_metric.items():
                    key = f"{where}.{backbone}.{dataset}.{method}.{metric}"
                    if metric not in table.metrics[dataset]:
                        raise _fail(path, key, f"metric not listed in {table.name}.metrics.{dataset}")
                    if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 <= number <= 1:
                        raise _fail(path, key, f"must be a score in [0, 1], got {number!r}")


def _parse(path: str, name: str, data: Mapping[str, Any]) -> PublishedTable:
    source = data.get("source") or {}
    for key in ("paper", "venue", "table", "url", "read_from"):
        if not source.get(key):
            raise _fail(path, f"{name}.source.{key}", "missing: every table names its paper, table and where "
                                                      "its numbers were read")
    try:
        methods = tuple(MethodMap(**m) for m in data["methods"])
        metrics = {d: tuple(ms) for d, ms in data["metrics"].items()}
        table = PublishedTable(name, data["title"], dict(source), methods, tuple(data["datasets"]), metrics,
                               dict(data.get("settings") or {}), tuple(data["backbones"]), data.get("published"),
                               data.get("unavailable"), tuple(data.get("other_versions") or ()))
    except (KeyError, TypeError) as exc:
        raise _fail(path, name, f"malformed table ({exc}); see the key list at the top of the file") from None
    commit = source.get("commit")
    if commit is not None and not (isinstance(commit, str) and len(commit) == 40
                                   and all(c in "0123456789abcdef" for c in commit)):
        raise _fail(path, f"{name}.source.commit", f"must be a full 40-hex commit id, got {commit!r}")
    if commit is not None and not source.get("file_lines"):
        raise _fail(path, f"{name}.source.file_lines", "a table read at a commit names the file:line it was read from")
    if BASELINE not in {m.ours for m in methods}:
        raise _fail(path, f"{name}.methods", f"must include {BASELINE} (the paired baseline)")
    if unknown := [d for d in table.datasets if d not in metrics]:
        raise _fail(path, f"{name}.datasets", f"{unknown} have no metrics listed")
    if table.published is None:
        if not table.unavailable:
            raise _fail(path, name, "published: null needs `unavailable:` saying why the numbers are missing")
    else:
        _check_cells(path, table, table.published, f"{name}.published")
    for i, version in enumerate(table.other_versions):
        if not version.get("version") or not version.get("read_from"):
            raise _fail(path, f"{name}.other_versions[{i}]", "needs `version` and `read_from`")
        _check_cells(path, table, version.get("published"), f"{name}.other_versions[{i}].published")
    return table


def load_tables(path: str | Path | None = None) -> dict[str, PublishedTable]:
    """Every table of ``path`` (default: the packaged ``published_tables.yaml``), schema-checked."""
    import yaml

    if path is None:
        text, label = resources.files("dynaprag").joinpath("data/published_tables.yaml").read_text("utf-8"), \
            "dynaprag/data/published_tables.yaml"
    else:
        text, label = Path(path).read_text(encoding="utf-8"), str(path)
    data = yaml.safe_load(text) or {}
    return {name: _parse(label, name, spec) for name, spec in data.items()}


@lru_cache(maxsize=1)
def packaged_tables() -> dict[str, PublishedTable]:
    """The packaged tables, read and checked once per process."""
    return load_tables()
