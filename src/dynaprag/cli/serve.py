"""``dynaprag serve``: load the pipeline once and serve the HTTP API and the trace viewer.

Same configuration path as every other command: a YAML/JSON file, then ``key=value``
overrides (unknown keys fail loudly); with neither, the embedded defaults of ``make demo``
(SmolLM2-135M, BM25 over the packaged demo corpus).
"""
from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        overrides: Optional[list[str]] = typer.Argument(None, help="config overrides: key=value (e.g. k=5)"),
        method: Optional[str] = typer.Option(None, "--method", help="default method (e.g. dragin, flare, sr-rag)"),
        host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on"),
        port: int = typer.Option(8000, "--port", help="TCP port (0 = any free port)"),
        config: Optional[str] = typer.Option(None, "--config", help="YAML/JSON pipeline config file"),
        max_queue: int = typer.Option(32, "--max-queue", min=1,
                                      help="requests that may wait; more get 503 (default 4 x the batch size)"),
        batch_size: int = typer.Option(8, "--batch-size", min=1,
                                       help="waiting requests of one method and budget decoded together (1 = one "
                                            "at a time)"),
        max_tokens: int = typer.Option(512, "--max-tokens-limit", min=1, help="largest max_tokens a request may ask"),
        max_request_tokens: int = typer.Option(
            4096, "--max-request-tokens", min=1,
            help="token budget per request: prompt + question + max_tokens; a longer request gets 413 before it "
                 "queues"),
        memory_budget_mb: int = typer.Option(
            8192, "--memory-budget-mb", min=1,
            help="working memory (MiB) the requests decoding at once may hold, beyond the loaded model and index; "
                 "a request estimated over it gets 413, one that does not fit beside a running batch waits"),
        encode_on_demand: bool = typer.Option(
            False, "--encode-on-demand/--no-encode-on-demand",
            help="let PRAG train a missing adapter while its request waits (off: such a passage is answered in "
                 "context)"),
        body_timeout: float = typer.Option(30.0, "--body-timeout", min=0.1,
                                           help="seconds a request body may take to arrive (then 408)"),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
    ) -> None:
        """Serve an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models,
        /v1/retrieve, /health) and the trace viewer at /."""
        from dynaprag.cli import MAX_BATCH, MAX_QUEUE, MAX_TOKENS, at_most, console, fail
        from dynaprag.config import ConfigError
        from dynaprag.registry import UnknownNameError

        try:
            import uvicorn

            from dynaprag.serve.app import Limits, create_app
        except ImportError as exc:
            fail(f"{exc}; install the serve extra: pip install 'dynaprag[serve]'")
        try:
            from dynaprag.pipeline import Pipeline, load_config

            at_most("--batch-size", batch_size, MAX_BATCH)
            at_most("--max-queue", max_queue, MAX_QUEUE)
            at_most("--max-tokens-limit", max_tokens, MAX_TOKENS)
            at_most("--max-request-tokens", max_request_tokens, MAX_TOKENS)
            pipeline_config = load_config(config, overrides or [], method=method)

            console.print(f"loading {pipeline_config.model} with method {pipeline_config.method}…")
            pipeline = Pipeline.from_config(pipeline_config)
        except (ConfigError, UnknownNameError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        limits = Limits(max_tokens=max_tokens, max_request_tokens=max_request_tokens,
                        memory_budget_mb=memory_budget_mb, encode_on_demand=encode_on_demand,
                        body_timeout_seconds=body_timeout)
        app_ = create_app(pipeline, max_queue=max_queue, limits=limits, batch_size=batch_size)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        console.print(f"serving on http://{shown}:{port}/ (viewer) and http://{shown}:{port}/v1 (API)")
        uvicorn.run(app_, host=host, port=port, log_level=log_level)
