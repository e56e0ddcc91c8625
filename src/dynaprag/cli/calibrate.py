"""``dynaprag calibrate``: fit a trigger's threshold for a model on a held-out split (a thin layer
over :func:`dynaprag.eval.calibrate.calibrate`), written as a config ``dynaprag eval --config`` reads."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dynaprag.eval.calibrate import DEFAULT_N, DEFAULT_START, DEFAULT_TARGET_RATE


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to the ``dynaprag`` command."""

    @app.command("calibrate", context_settings={"help_option_names": ["-h", "--help"]})
    def calibrate_(
        overrides: Optional[list[str]] = typer.Argument(
            None, help="key=value pipeline overrides, as for dynaprag eval (prompt.shots=4, trigger.variant=reference)"),
        method: str = typer.Option(..., "--method", help="a method whose trigger retrieves when a score exceeds "
                                                         "theta (dragin, seakr)"),
        dataset: str = typer.Option(..., "--dataset", help="hotpotqa | 2wikimultihopqa | strategyqa | iirc | "
                                                           "popqa | cwq | demo"),
        model: Optional[str] = typer.Option(None, "--model", help="model alias, Hugging Face id or local folder "
                                                                  "(default: the pipeline's default model)"),
        data_dir: Optional[str] = typer.Option(None, "--data-dir", help="folder with questions/ and corpus/"),
        questions: Optional[str] = typer.Option(None, "--questions", help="question file (JSONL or official "
                                                                          "release); overrides --data-dir's"),
        start: int = typer.Option(DEFAULT_START, "--start", help="first calibration question (0-based); evaluate "
                                                                 "on the questions before it"),
        n: int = typer.Option(DEFAULT_N, "--n", help="calibration questions"),
        target_rate: float = typer.Option(DEFAULT_TARGET_RATE, "--target-rate",
                                          help="share of questions on which the trigger should fire at least once "
                                               "on its no-retrieval draft (0.5: theta = the median maximum score)"),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens",
                                                     help="answer budget (default: the pipeline's; the eval "
                                                          "config keeps the same)"),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="auto | float32 | bfloat16 | float16"),
        out: Path = typer.Option(..., "--out", help="YAML config file to write"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    ) -> None:
        """Fit a trigger's threshold theta for a model on questions disjoint from the eval slice."""
        from dynaprag.cli import fail
        from dynaprag.config import ConfigError
        from dynaprag.eval.calibrate import CalibrationError, calibrate, percent, write_config
        from dynaprag.eval.datasets import DatasetError
        from dynaprag.registry import UnknownNameError

        if out.is_dir():
            fail(f"--out {out} is a folder; give the YAML file to write, e.g. {out / 'calibrated.yaml'}")
            return
        try:
            cal = calibrate(method, dataset, model, data_dir=data_dir, questions=questions, start=start, n=n,
                            target_rate=target_rate, max_new_tokens=max_new_tokens, dtype=dtype,
                            overrides=overrides or [], progress=progress)
            path = write_config(cal, out)
        except (ConfigError, CalibrationError, DatasetError, UnknownNameError, ValueError, FileNotFoundError,
                ImportError) as exc:
            fail(str(exc))
            return
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror or exc}")
            return
        typer.echo(f"theta = {cal.theta:.6g} for trigger {cal.trigger!r}: fires on {percent(cal.fire_rate)} of the "
                   f"{cal.n} questions (target {percent(cal.target_rate)}; at the preset theta {cal.preset_theta:g} "
                   f"it would fire on {percent(cal.preset_fire_rate)} of them); fitted on {cal.split}")
        typer.echo(f"wrote {path}; evaluate with: dynaprag eval --config {path} --out runs/NAME")
