"""``dynaprag index build|info|search`` and ``dynaprag search``: thin commands over the retrieval API.

``index build`` is :func:`~dynaprag.retrieval.build_retriever` (BM25 through
:func:`dynaprag.retrieval.bm25.build_or_load`, which indexes a large corpus out of core, with a
progress bar and an ETA, resumably); ``index info`` prints an index folder's ``meta.json`` and
its size on disk; ``index search`` queries an index folder directly, without its corpus.
"""
from __future__ import annotations

import time
from typing import Optional

import typer


def _config(backend: str, corpus: Optional[str], index_dir: Optional[str], overrides: list[str],
            skip_bad_lines: bool = False, preset: Optional[str] = None):
    from dynaprag.config import apply_overrides
    from dynaprag.retrieval.config import RetrieverConfig

    settings = {}
    if preset:
        from dynaprag.retrieval.bm25_presets import bm25_preset

        settings = bm25_preset(preset)
    config = RetrieverConfig(backend=backend, corpus=corpus, index_dir=index_dir,
                             skip_bad_lines=skip_bad_lines, cache=False, **settings)
    return apply_overrides(config, overrides)


def _size(folder) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def register(app: typer.Typer) -> None:
    """Add ``index build`` and ``search`` to the ``dynaprag`` command."""
    index_app = typer.Typer(no_args_is_help=True, help="Build retrieval indexes.")
    app.add_typer(index_app, name="index")

    @index_app.command("build")
    def build(
        corpus: Optional[str] = typer.Option(None, "--corpus", help="passages: our .jsonl, DPR .tsv, FlashRAG or "
                                             "KILT .jsonl (default: demo corpus)"),
        backend: str = typer.Option("bm25", "--backend", help="bm25 | dense | hybrid (both) | milvus | lucene"),
        index_dir: Optional[str] = typer.Option(None, "--index-dir", help="where to write the index"),
        skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines", help="skip malformed records, report the count"),
        rebuild: bool = typer.Option(False, "--rebuild", help="rebuild even if the index exists"),
        preset: Optional[str] = typer.Option(None, "--preset", help="named BM25 configuration: bm25s-lucene | "
                                             "elastic-english (the papers' Elasticsearch index)"),
        layout: str = typer.Option("auto", "--layout", help="bm25: memory (bm25s in RAM) | disk (out of core, "
                                   "resumable) | auto (disk above 256 MB of corpus)"),
        chunk_size: Optional[int] = typer.Option(None, "--chunk-size", help="bm25 disk layout: passages per chunk "
                                                 "(default 100000; memory grows with it)"),
        workers: int = typer.Option(1, "--workers", help="bm25 disk layout: processes analysing chunks (e.g. "
                                    "the number of cores)"),
        set_: list[str] = typer.Option([], "--set", help="retriever config override key=value (repeatable)"),
    ) -> None:
        """Build (or rebuild) the index for a corpus, with progress; reports passages/s.

        Corpus formats: our JSONL, DPR TSV (psgs_w100.tsv), FlashRAG JSONL, KILT JSONL (auto-detected).
        A killed disk-layout build continues where it stopped when run again.
        """
        from dynaprag.cli import MAX_WORKERS, at_most, console, fail
        from dynaprag.config import ConfigError
        from dynaprag.registry import UnknownNameError
        from dynaprag.retrieval.config import BACKENDS, build_retriever, load_backends

        try:
            at_most("--workers", workers, MAX_WORKERS)
            config = _config(backend, corpus, index_dir, set_, skip_bad_lines, preset)
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
            if config.backend == "bm25":
                from dynaprag.retrieval.bm25 import build_or_load

                retriever = build_or_load(config, progress=True, layout=layout, chunk_size=chunk_size,
                                          workers=workers)
            else:
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

    @index_app.command("info")
    def info(
        index_dir: Optional[str] = typer.Option(None, "--index-dir", help="index folder"),
        corpus: Optional[str] = typer.Option(None, "--corpus", help="or: the corpus whose default index to show"),
        backend: str = typer.Option("bm25", "--backend", help="backend of the default index (with --corpus)"),
        set_: list[str] = typer.Option([], "--set", help="retriever config override key=value (repeatable)"),
    ) -> None:
        """Show how an index was built: passages, terms, layout, settings, corpus checksum, size on disk."""
        import json
        from pathlib import Path

        from dynaprag.cli import console, fail
        from dynaprag.config import ConfigError
        from dynaprag.retrieval.index_dir import read_meta

        try:
            folder = Path(index_dir) if index_dir else _config(backend, corpus, None, set_).resolved_index_dir()
            meta = read_meta(folder)
        except (ConfigError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
            return
        console.print(f"[bold]{meta.get('backend')}[/] index at {folder} ({_size(folder) / 2**30:.2f} GiB on disk)")
        console.print_json(json.dumps(meta))

    @index_app.command("search")
    def index_search(
        query: str = typer.Argument(..., help="the search query"),
        index_dir: str = typer.Option(..., "--index-dir", help="a BM25 index folder (either layout)"),
        k: int = typer.Option(5, "-k", "--k", help="number of hits"),
    ) -> None:
        """Search a built BM25 index folder directly (memory-mapped; no corpus needed)."""
        from dynaprag.cli import MAX_HITS, at_most, fail

        try:
            from dynaprag.retrieval.base import check_k
            from dynaprag.retrieval.bm25 import BM25Retriever
            from dynaprag.retrieval.index_dir import read_meta

            check_k(k)
            at_most("-k", k, MAX_HITS)
            if read_meta(index_dir).get("backend") != "bm25":
                fail(f"{index_dir} is not a BM25 index; use dynaprag search --backend ... --index-dir")
                return
            start = time.perf_counter()
            retriever = BM25Retriever(index_dir)
            open_ms = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            hits = retriever.search_one(query, k)
            ms = (time.perf_counter() - start) * 1000
        except (ValueError, FileNotFoundError, KeyError) as exc:
            fail(str(exc))
            return
        _print_hits(f"bm25 {index_dir}: {query!r} (opened in {open_ms:.0f} ms, searched in {ms:.1f} ms)", hits)

    @app.command()
    def search(
        query: str = typer.Argument(..., help="the search query"),
        k: int = typer.Option(5, "-k", "--k", help="number of hits"),
        backend: str = typer.Option("bm25", "--backend", help="bm25 | dense | hybrid | milvus | elastic | lucene "
                                     "(an existing Lucene index: --index-dir)"),
        corpus: Optional[str] = typer.Option(None, "--corpus", help="passages file (default: demo corpus)"),
        index_dir: Optional[str] = typer.Option(None, "--index-dir", help="index folder"),
        set_: list[str] = typer.Option([], "--set", help="retriever config override key=value (repeatable)"),
    ) -> None:
        """Print the ranked hits for one query (builds the index on first use)."""
        from dynaprag.cli import fail
        from dynaprag.config import ConfigError
        from dynaprag.registry import UnknownNameError
        from dynaprag.retrieval.config import build_retriever

        try:
            from dynaprag.cli import MAX_HITS, at_most
            from dynaprag.retrieval.base import check_k

            check_k(k)  # before an index is built for nothing
            at_most("-k", k, MAX_HITS)
            retriever = build_retriever(_config(backend, corpus, index_dir, set_), progress=True)
            start = time.perf_counter()
            hits = retriever.search_one(query, k)
            ms = (time.perf_counter() - start) * 1000
        except (ConfigError, UnknownNameError, ValueError, FileNotFoundError, ImportError) as exc:
            fail(str(exc))
            return
        _print_hits(f"{backend}: {query!r} ({ms:.1f} ms)", hits)


def _print_hits(title: str, hits) -> None:
    from rich.table import Table

    from dynaprag.cli import console

    table = Table(title=title, show_lines=True)
    for col in ("rank", "score", "id", "title", "text"):
        table.add_column(col, overflow="fold")
    for rank, hit in enumerate(hits, start=1):
        text = hit.text if len(hit.text) <= 240 else hit.text[:237] + "..."
        table.add_row(str(rank), f"{hit.score:.3f}", hit.id, hit.title, text)
    console.print(table)
    if not hits:
        console.print("no passage matches the query")
