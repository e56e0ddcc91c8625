"""``dynaprag reproduce TABLE``: a published table's methods x datasets on your model, beside the paper's numbers.

A thin layer over :func:`dynaprag.eval.reproduce.reproduce`; ``--list`` shows the tables.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dynaprag.cli.ray_flags import GPUS, RAY, RAY_ADDRESS, RAY_TIMEOUT, SHARD_SIZE, THREADS, WORKERS, ray_config


def _questions(items: list[str]) -> dict[str, str]:
    """``NAME=FILE`` pairs of ``--questions``."""
    from dynaprag.eval.reproduce import ReproduceError

    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ReproduceError(f"--questions {item!r}: expected NAME=FILE, e.g. --questions popqa=data/popQA.tsv")
        out[name] = path
    return out


def _list_tables() -> None:
    from dynaprag.cli import console
    from dynaprag.cli.listing import print_entry, print_title
    from dynaprag.eval.reproduce import get_table, table_names

    print_title(console, "published tables (dynaprag reproduce TABLE)")
    for name in table_names():
        t = get_table(name)
        print_entry(console, name, ["numbers unavailable" if t.unavailable else "numbers published"],
                    prose=[f"source: {t.source['venue']}, {t.source['table']}",
                           "methods (ours=paper's): " + ", ".join(f"{m.ours}={m.paper}" for m in t.methods),
                           "datasets: " + ", ".join(t.datasets), "backbones: " + ", ".join(t.backbones)])


def register(app: typer.Typer) -> None:
    """Add ``dynaprag reproduce`` to the ``dynaprag`` command."""

    @app.command("reproduce", context_settings={"help_option_names": ["-h", "--help"]})
    def reproduce_(
        table: Optional[str] = typer.Argument(None, help="a published table (see --list), e.g. dragin-table2"),
        overrides: Optional[list[str]] = typer.Argument(
            None, help="key=value pipeline overrides applied to every run after the paper's settings"),
        list_: bool = typer.Option(False, "--list", help="list the published tables and exit"),
        model: str = typer.Option("smollm2-135m", "--model", help="model alias, Hugging Face id or local folder"),
        data_dir: Optional[str] = typer.Option(None, "--data-dir", help="folder with questions/ and corpus/"),
        questions: Optional[list[str]] = typer.Option(
            None, "--questions", help="NAME=FILE: a dataset's question file (JSONL or official release)"),
        dataset: Optional[list[str]] = typer.Option(None, "--dataset", help="run only these datasets of the table"),
        limit: Optional[int] = typer.Option(None, "--limit", help="first N questions of each dataset"),
        backbone: Optional[str] = typer.Option(None, "--backbone",
                                               help="the paper's model whose numbers are shown (default: its first)"),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="auto | float32 | bfloat16 | float16"),
        out: Optional[Path] = typer.Option(None, "--out", help="output folder (runs resume in OUT/DATASET/METHOD)"),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="write the plot (PNG and SVG)"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
        seed: int = typer.Option(0, "--seed", help="seed of the bootstrap resamples and sign flips"),
        resamples: int = typer.Option(10000, "--resamples", help="bootstrap resamples and sign flips"),
        method: Optional[list[str]] = typer.Option(None, "--method", help="run only these methods of the table "
                                                   "(split a table over processes; a later call without it reports all)"),
        calibrated: Optional[list[Path]] = typer.Option(
            None, "--calibrated", help="a `dynaprag calibrate` config: its θ replaces the preset's for its method "
                                       "and dataset (refused if fitted for another model or on evaluated questions)"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1,
                                                 help="questions decoded together, as in eval (default 1)"),
        ray: bool = RAY, ray_address: Optional[str] = RAY_ADDRESS, workers: Optional[int] = WORKERS,
        threads_per_worker: Optional[int] = THREADS, gpus_per_worker: Optional[float] = GPUS,
        shard_size: Optional[int] = SHARD_SIZE, ray_timeout: Optional[int] = RAY_TIMEOUT,
    ) -> None:
        """Run a published table's methods x datasets on your model and write ours vs published side by side."""
        from dynaprag.cli import MAX_BATCH, MAX_RESAMPLES, at_most, err, fail
        from dynaprag.cluster import RayStartError
        from dynaprag.config import ConfigError
        from dynaprag.eval.datasets import DatasetError
        from dynaprag.eval.reproduce import ReproduceError, reproduce
        from dynaprag.eval.run_folder import RunError
        from dynaprag.registry import UnknownNameError

        if list_:
            _list_tables()
            return
        if not table:
            fail("name a table (dynaprag reproduce --list shows them), e.g. dynaprag reproduce dragin-table2 "
                 "--data-dir ../shared/data --out runs/dragin")
            return
        if out is None:
            fail("--out is required: the folder that holds the runs (resumable) and reproduce.md")
            return
        try:
            at_most("--resamples", resamples, MAX_RESAMPLES)
            at_most("--batch-size", batch_size, MAX_BATCH)
            on_ray = ray_config(ray, ray_address, workers, threads_per_worker, gpus_per_worker, shard_size,
                                ray_timeout)
            result = reproduce(table, model=model, data_dir=data_dir, out=out, limit=limit, datasets=dataset or None,
                               backbone=backbone, questions=_questions(questions or []), overrides=overrides or [],
                               dtype=dtype, plots=plots, progress=progress, seed=seed, resamples=resamples,
                               methods=method or None, calibrated=calibrated or [], batch_size=batch_size,
                               warn=lambda line: err.print(f"warning: {line}", markup=False, highlight=False),
                               ray=on_ray)
        except (ReproduceError, ConfigError, DatasetError, RunError, UnknownNameError, ValueError,
                FileNotFoundError, ImportError, RayStartError) as exc:
            fail(str(exc))
            return
        typer.echo(result.markdown)
        typer.echo("wrote " + ", ".join(str(f) for f in result.files))
