"""``dynaprag eval``, ``dynaprag report`` and ``dynaprag data download``: thin commands over the eval API."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dynaprag.cli.ray_flags import GPUS, RAY, RAY_ADDRESS, RAY_TIMEOUT, SHARD_SIZE, THREADS, WORKERS, ray_config


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to the ``dynaprag`` command."""

    @app.command("eval", context_settings={"help_option_names": ["-h", "--help"]})
    def eval_(
        overrides: Optional[list[str]] = typer.Argument(
            None, help="key=value overrides: pipeline keys (k=5, prompt.shots=4, retrieval.backend=dense) "
                       "or run keys (limit=20)"),
        dataset: Optional[str] = typer.Option(None, "--dataset", help="hotpotqa | 2wikimultihopqa | strategyqa | "
                                                                      "iirc | popqa | cwq | demo"),
        data_dir: Optional[str] = typer.Option(None, "--data-dir", help="folder with questions/ and corpus/"),
        questions: Optional[str] = typer.Option(None, "--questions", help="question file (JSONL or official release)"),
        method: Optional[str] = typer.Option(None, "--method", help="wo-rag, sr-rag, flare, dragin, ..."),
        limit: Optional[int] = typer.Option(None, "--limit", help="first N questions only"),
        batch_size: Optional[int] = typer.Option(
            None, "--batch-size", help="questions decoded together (default 1); float32 answers are unchanged, "
                                       "bf16 ones may differ at near-ties; compare runs by questions_per_hour"),
        out: Path = typer.Option(..., "--out", help="run folder (created; an existing run resumes)"),
        out_nonempty_ok: bool = typer.Option(
            False, "--out-nonempty-ok", help="write the run into a non-empty folder that is not a run folder "
                                             "(its files are kept; dynaprag deletes only its own)"),
        config: Optional[str] = typer.Option(None, "--config", help="YAML/JSON config file"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
        ray: bool = RAY, ray_address: Optional[str] = RAY_ADDRESS, workers: Optional[int] = WORKERS,
        threads_per_worker: Optional[int] = THREADS, gpus_per_worker: Optional[float] = GPUS,
        shard_size: Optional[int] = SHARD_SIZE, ray_timeout: Optional[int] = RAY_TIMEOUT,
    ) -> None:
        """Evaluate one method on one dataset into a resumable run folder."""
        import json

        from dynaprag.cli import fail
        from dynaprag.cluster import RayStartError
        from dynaprag.config import ConfigError
        from dynaprag.eval.datasets import DatasetError
        from dynaprag.eval.experiment import resolve, run
        from dynaprag.eval.run_folder import RunError, claim_run_folder
        from dynaprag.registry import UnknownNameError

        try:
            run_cfg, pipe_cfg = resolve(dataset, data_dir=data_dir, questions=questions, method=method,
                                        limit=limit, config_file=config, overrides=overrides or [],
                                        batch_size=batch_size)
            on_ray = ray_config(ray, ray_address, workers, threads_per_worker, gpus_per_worker, shard_size,
                                ray_timeout)
            claim_run_folder(out, adopt=out_nonempty_ok)
            if on_ray is not None:
                from dynaprag.eval.distributed import run_on_ray

                summary = run_on_ray(run_cfg, pipe_cfg, out, on_ray, progress=progress, adopt=out_nonempty_ok)
            else:
                summary = run(run_cfg, pipe_cfg, out, progress=progress)
        except (ConfigError, DatasetError, RunError, UnknownNameError, ValueError, FileNotFoundError,
                ImportError, RayStartError) as exc:
            fail(str(exc))
            return
        typer.echo(json.dumps(summary, indent=2))
        if summary.get("errors"):
            from dynaprag.cli import err

            err.print(f"warning: {summary['errors']} question(s) raised and are recorded as errors (scored as empty "
                      f"answers; their records hold 'error')", markup=False, highlight=False)
        typer.echo(f"records, summary and config in {out}; compare runs with: dynaprag report {out} ...")

    @app.command("report")
    def report(
        runs: list[Path] = typer.Argument(..., help="run folders written by dynaprag eval"),
        out: Optional[Path] = typer.Option(None, "--out", help="where report.md, report.json and the plots go "
                                                               "(default: <first run's parent>/report)"),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="write the plots (PNG and SVG)"),
        baseline: str = typer.Option("sr-rag", "--baseline",
                                     help="method (or run label, or run folder) every other run of the same "
                                          "dataset is compared with, paired by question id"),
        seed: int = typer.Option(0, "--seed", help="seed of the bootstrap resamples and random sign flips"),
        resamples: int = typer.Option(10000, "--resamples",
                                      help="bootstrap resamples and sign flips per interval and test"),
    ) -> None:
        """Print a markdown table of methods x datasets with 95 % intervals and paired tests; write plots."""
        from dynaprag.cli import MAX_RESAMPLES, at_most, fail
        from dynaprag.eval.report import write_report
        from dynaprag.eval.run_folder import RunError

        target = out or runs[0].resolve().parent / "report"
        try:
            at_most("--resamples", resamples, MAX_RESAMPLES)
            table, files = write_report(runs, target, plots=plots, baseline=baseline, seed=seed,
                                        resamples=resamples)
        except (RunError, ImportError, ValueError) as exc:
            fail(str(exc))
            return
        typer.echo(table)
        typer.echo("wrote " + ", ".join(str(f) for f in files))

    data_app = typer.Typer(no_args_is_help=True, help="Official dataset releases.")
    app.add_typer(data_app, name="data")

    @data_app.command("download")
    def download_(
        name: str = typer.Argument(..., help="hotpotqa | 2wikimultihopqa | strategyqa | iirc | popqa | cwq"),
        dest: Path = typer.Option(Path("data/raw"), "--dest", help="folder to download into (NAME/ is appended)"),
        url: Optional[str] = typer.Option(None, "--url", help="a mirror or file:// URL instead of the official one"),
        sha256: Optional[str] = typer.Option(None, "--sha256", help="expected SHA-256 (overrides the recorded one)"),
        allow_unverified: bool = typer.Option(False, "--allow-unverified",
                                              help="fetch without a checksum and print the hash"),
        overwrite: bool = typer.Option(False, "--overwrite",
                                       help="replace files in the destination that dynaprag did not download"),
    ) -> None:
        """Fetch an official release, verify its SHA-256, unpack it; print how to evaluate it."""
        from dynaprag.cli import console, fail
        from dynaprag.eval.download import ChecksumError, download
        from dynaprag.registry import UnknownNameError

        try:
            path = download(name, dest / name, url=url, sha256=sha256, allow_unverified=allow_unverified,
                            overwrite=overwrite, log=lambda m: console.print(m, markup=False))
        except (ChecksumError, UnknownNameError, ValueError, OSError) as exc:
            fail(str(exc))
            return
        console.print(f"questions: {path}")
        console.print(f"evaluate: dynaprag eval --dataset {name} --questions {path} retrieval.corpus=YOUR_CORPUS "
                      "--method sr-rag --out runs/NAME", markup=False)

    @data_app.command("list")
    def list_() -> None:
        """Datasets, their corpora in a data dir, and the recorded official releases."""
        from rich.table import Table

        from dynaprag.cli import console
        from dynaprag.eval.datasets import DATASETS
        from dynaprag.eval.download import RELEASES

        table = Table(title="datasets")
        for col in ("name", "corpus (DATA_DIR/corpus/)", "yes/no", "official release", "sha256"):
            table.add_column(col)
        for name in DATASETS:
            spec = DATASETS.get(name)
            rel = RELEASES.get(name) if name in RELEASES else None
            table.add_row(name, spec.corpus or "-", "yes" if spec.yes_no else "", rel.url if rel else "-",
                          (rel.sha256 or "not recorded")[:16] if rel else "-")
        console.print(table)
