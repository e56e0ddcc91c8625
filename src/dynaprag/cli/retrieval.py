"""``dynaprag index build`` and ``dynaprag search``: thin commands over :func:`build_retriever`."""
from __future__ import annotations

import time
from typing import Optional

import typer


def _config(backend: str, corpus: Optional[str], index_dir: Optional[str], overrides: list[str],
            skip_bad_lines: bool = False):
    from dynaprag.config import apply_overrides
    from dynaprag.retrieval.config import RetrieverConfig

    config = RetrieverConfig(backend=backend, corpus=corpus, index_dir=index_dir,
                             skip_bad_lines=skip_bad_lines, cache=False)
    return apply_overrides(config, overrides)


def register(app: typer.Typer) -> None:
    """Add ``index build`` and ``search`` to the ``dynaprag`` command."""
    index_app = typer.Typer(no_args_is_help=True, help="Build retrieval indexes.")
    app.add_typer(index_app, name="index")

    @index_app.command("build")
    def build(
        corpus: Optional[str] = typer.Option(None, "--corpus", help="passages .jsonl or DPR .tsv (default: demo corpus)"),
        backend: str = typer.Option("bm25", "--backend", help="bm25 | dense | hybrid (both) | milvus"),
        index_dir: Optional[str] = typer.Option(None, "--index-dir", help="where to write the index"),
        skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines", help="skip malformed records, report the count"),
        rebuild: bool = typer.Option(False, "--rebuild", help="rebuild even if the index exists"),
        set_: list[str] = typer.Option([], "--set", help="retriever config override key=value (repeatable)"),
    ) -> None:
        """Build (or rebuild) the index for a corpus, with progress; reports passages/s."""
        from dynaprag.cli import console, fail
        from dynaprag.config import ConfigError
        from dynaprag.registry import UnknownNameError
        from dynaprag.retrieval.config import BACKENDS, build_retriever, load_backends

        try:
            config = _config(backend, corpus, index_dir, set_, skip_bad_lines)
            load_backends()
            BACKENDS.get(config.backend)
            if config.backend == "elastic":
                fail("the elastic backend queries an existing index: set es_url (or $DYNAPRAG_ES_URL)")
            parts = ["bm25", "dense"] if config.backend == "hybrid" else [config.backend]
            for part in parts:
                folder = config.resolved_index_dir(part)
                if rebuild:
                    from dynaprag.retrieval.index_dir import remove_index

                    remove_index(folder)  # under the build lock; never a folder that is not an index
            start = time.perf_counter()
            retriever = build_retriever(config, progress=True)
        except (ConfigError, UnknownNameError, ValueError, FileNotFoundError, FileExistsError, ImportError) as exc:
            fail(str(exc))
            return
        for part, built in zip(parts, getattr(retriever, "retrievers", [retriever])):
            meta = getattr(built, "meta", {})
            n = meta.get("num_passages", 0)
            seconds = meta.get("build_seconds") or (time.perf_counter() - start)
            console.print(f"[bold]{part}[/] index of {n:,} passages at {config.resolved_index_dir(part)}")
            console.print(f"built in {seconds:.1f} s ({meta.get('passages_per_s', n / max(seconds, 1e-9)):,.0f} "
                          f"passages/s); {meta.get('source', {}).get('read', '')}")

    @app.command()
    def search(
        query: str = typer.Argument(..., help="the search query"),
        k: int = typer.Option(5, "-k", "--k", help="number of hits"),
        backend: str = typer.Option("bm25", "--backend", help="bm25 | dense | hybrid | milvus | elastic"),
        corpus: Optional[str] = typer.Option(None, "--corpus", help="passages file (default: demo corpus)"),
        index_dir: Optional[str] = typer.Option(None, "--index-dir", help="index folder"),
        set_: list[str] = typer.Option([], "--set", help="retriever config override key=value (repeatable)"),
    ) -> None:
        """Print the ranked hits for one query (builds the index on first use)."""
        from rich.table import Table

        from dynaprag.cli import console, fail
        from dynaprag.config import ConfigError
        from dynaprag.registry import UnknownNameError
        from dynaprag.retrieval.config import build_retriever

        try:
            from dynaprag.retrieval.base import check_k

            check_k(k)  # before an index is built for nothing
            retriever = build_retriever(_config(backend, corpus, index_dir, set_), progress=True)
            start = time.perf_counter()
            hits = retriever.search_one(query, k)
            ms = (time.perf_counter() - start) * 1000
        except (ConfigError, UnknownNameError, ValueError, FileNotFoundError, ImportError) as exc:
            fail(str(exc))
            return
        table = Table(title=f"{backend}: {query!r} ({ms:.1f} ms)", show_lines=True)
        for col in ("rank", "score", "id", "title", "text"):
            table.add_column(col, overflow="fold")
        for rank, hit in enumerate(hits, start=1):
            text = hit.text if len(hit.text) <= 240 else hit.text[:237] + "..."
            table.add_row(str(rank), f"{hit.score:.3f}", hit.id, hit.title, text)
        console.print(table)
        if not hits:
            console.print("no passage matches the query")
