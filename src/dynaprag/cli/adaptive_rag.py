"""``dynaprag adaptive-rag train``: silver-label a training split with the three strategies and train the
complexity classifier (a thin layer over :func:`dynaprag.eval.silver_labels.build`).

A CLI command rather than a script: it is the paper's procedure a user runs once per model before
``--method adaptive-rag-minilm`` (the paper trains one classifier per LLM), with the same
dataset, split and override flags as ``dynaprag calibrate``, and its output is a cache artefact
the preset reads by name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dynaprag.eval.silver_labels import DEFAULT_N, DEFAULT_START


def register(app: typer.Typer) -> None:
    """Add ``adaptive-rag train`` to the ``dynaprag`` command."""
    group = typer.Typer(no_args_is_help=True, help="Adaptive-RAG's query-complexity classifier.")
    app.add_typer(group, name="adaptive-rag")

    @group.command("train", context_settings={"help_option_names": ["-h", "--help"]})
    def train(
        overrides: Optional[list[str]] = typer.Argument(
            None, help="key=value pipeline overrides, as for dynaprag eval (max_new_tokens=64, prompt.shots=4)"),
        dataset: Optional[list[str]] = typer.Option(
            None, "--dataset", help="dataset(s) to label (repeat: --dataset hotpotqa --dataset 2wikimultihopqa)"),
        model: Optional[str] = typer.Option(None, "--model", help="model alias, Hugging Face id or local folder"),
        data_dir: Optional[str] = typer.Option(None, "--data-dir", help="folder with questions/ and corpus/"),
        questions: Optional[str] = typer.Option(None, "--questions", help="question file (one dataset)"),
        start: int = typer.Option(DEFAULT_START, "--start", help="first training question (0-based) = held_out_from; "
                                                                 "evaluate only on the questions before it"),
        n: int = typer.Option(DEFAULT_N, "--n", help="training questions per dataset"),
        name: str = typer.Option("minilm", "--name",
                                 help="the classifier's name under $DYNAPRAG_CACHE/adaptive-rag "
                                      "(trigger.classifier=NAME; adaptive-rag-minilm reads 'minilm')"),
        work: Optional[Path] = typer.Option(None, "--work", help="checkpoint folder (default: the cache's "
                                                                 "NAME.silver); rerun to resume"),
        batch_size: int = typer.Option(8, "--batch-size", help="questions decoded together"),
        epochs: int = typer.Option(300, "--epochs", help="head training steps (full batch)"),
        labels: Optional[Path] = typer.Option(None, "--labels", help="train again from this labels.json (a run's "
                                                                     "output) instead of answering questions"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    ) -> None:
        """Run no / single-step / multi-step retrieval on training questions, label each by the simplest
        strategy that answered it, and train the MiniLM head on the labels."""
        from dynaprag.cli import MAX_BATCH, at_most, fail
        from dynaprag.config import ConfigError
        from dynaprag.dynamic.methods.adaptive_rag.train import HeadSettings
        from dynaprag.eval.datasets import DatasetError
        from dynaprag.eval.silver_labels import build, retrain
        from dynaprag.registry import UnknownNameError

        try:
            at_most("--batch-size", batch_size, MAX_BATCH)
            if labels is not None:
                run = retrain(labels, name, settings=HeadSettings(epochs=epochs))
            elif not dataset:
                raise ConfigError("give --dataset (one or more) to label, or --labels FILE to train again")
            else:
                run = build(dataset, model, data_dir=data_dir, questions=questions, start=start, n=n, name=name,
                            work=work, batch_size=batch_size, overrides=overrides or [],
                            settings=HeadSettings(epochs=epochs), progress=progress)
        except (ConfigError, DatasetError, UnknownNameError, ValueError, FileNotFoundError, ImportError) as exc:
            fail(str(exc))
            return
        counts = ", ".join(f"{label} {count}" for label, count in run.counts.items())
        silver = sum(r["source"] == "silver" for r in run.records)
        typer.echo(f"labelled {len(run.records)} questions ({silver} silver, {len(run.records) - silver} by their "
                   f"dataset): {counts}; split: {run.split}")
        missing = [label for label, count in run.counts.items() if not count]
        if missing:
            typer.echo(f"note: no training question is labelled {' or '.join(missing)}, so the classifier never routes "
                       f"there; label more questions (--n, more --dataset) for a classifier that can", err=True)
        typer.echo(f"wrote {run.labels_file} and the classifier {run.classifier}; evaluate on the held-out questions "
                   f"only, e.g. dynaprag eval --method adaptive-rag trigger.classifier={name} --limit N ...")
