"""``dynaprag ask`` and ``dynaprag demo``: answer a question with any method and show the trace.

Thin layer over :class:`dynaprag.pipeline.Pipeline`; the trace printout says where retrieval
fired, why, with what query and which passages came back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DEMO_QUESTION = "q01"


def render_answer(answer, console) -> None:
    """Print the answer and a readable trace with rich."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    tr = answer.trace
    console.print(Panel(Text(answer.text or "(empty)"), title=f"answer ({tr.method})",
                        subtitle=f"short: {answer.short!r}"))
    if not tr.retrievals:
        scored = [t for t in tr.tokens if t.score is not None]
        best = max(scored, key=lambda t: t.score, default=None)
        console.print("[dim]no retrieval fired[/]" + (
            f" [dim](highest trigger score {best.score:.3g} at {best.text!r}; see docs/dynamic.md on "
            f"thresholds at this model size; `dynaprag calibrate` fits one, a lower one shows the mechanism, "
            f"e.g. trigger.theta={best.score / 2:.2g})[/]" if best is not None else ""))
    for n, ev in enumerate(tr.retrievals, 1):
        before = "".join(t.text for t in tr.tokens[: ev.position])[-60:] if ev.position else ""
        console.print(f"[bold cyan]retrieval {n}[/] after {ev.position} answer tokens"
                      + (f" ([dim]…{before!r}[/])" if before else " (at the start of the answer)"))
        console.print(f"  [bold]why[/]: {ev.reason}")
        if ev.scores:
            top = sorted(ev.scores.items(), key=lambda kv: -abs(kv[1]))[:8]
            console.print("  [bold]scores[/]: " + ", ".join(f"{k!r}={v:.3g}" for k, v in top))
        console.print(f"  [bold]query[/]: {ev.query}")
        table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
        table.add_column("#")
        table.add_column("id")
        table.add_column("passage")
        for i, (pid, title, text) in enumerate(zip(ev.hit_ids, ev.hit_titles, ev.hit_texts), 1):
            table.add_row(str(i), pid, f"{title}: {text[:110]}{'…' if len(text) > 110 else ''}")
        console.print(table)
        if ev.skipped_ids:
            console.print(f"  [dim]skipped (augmentation never parsed, next passage used): "
                          f"{', '.join(ev.skipped_ids)}[/]")
        console.print(f"  [dim]{ev.injection}, {ev.seconds:.2f} s[/]")
    console.print(f"[dim]{tr.forward_passes} forward passes, {tr.prompt_tokens} prompt tokens prefilled, "
                  f"{tr.generated_tokens} tokens generated ({len(tr.tokens)} kept), {tr.seconds:.1f} s[/]")
    for note in tr.notes:
        console.print(f"[dim]note: {note}[/]")


def register(app: typer.Typer) -> None:
    from dynaprag.cli import console, fail

    @app.command()
    def ask(question: str = typer.Argument(..., help="the question to answer"),
            model: Optional[str] = typer.Option(None, help="model alias, Hugging Face id or local folder"),
            method: Optional[str] = typer.Option(None, help="method name, e.g. dragin, flare, sr-rag"),
            config: Optional[Path] = typer.Option(None, help="YAML/JSON PipelineConfig file"),
            json_out: bool = typer.Option(False, "--json", help="print the answer and trace as JSON"),
            overrides: Optional[list[str]] = typer.Argument(None, help="key=value config overrides")) -> None:
        """Answer QUESTION with a method and print the answer with a readable trace."""
        import json

        from dynaprag.config import ConfigError
        from dynaprag.eval.datasets import check_unicode
        from dynaprag.pipeline import Pipeline, load_config
        from dynaprag.registry import UnknownNameError

        try:
            check_unicode("question", question, fix="pass the question as UTF-8 text (a byte that is not UTF-8 "
                                                    "on the command line arrives as \\udcXX)")
            cfg = load_config(config, overrides or [], model=model, method=method)
            answer = Pipeline.from_config(cfg).answer(question)
        except (ConfigError, UnknownNameError, ValueError) as exc:
            fail(str(exc))
        if json_out:
            console.print_json(json.dumps(answer.to_dict()))
        else:
            render_answer(answer, console)

    @app.command()
    def demo(method: str = typer.Option("dragin", help="method to run"),
             overrides: Optional[list[str]] = typer.Argument(None, help="key=value config overrides")) -> None:
        """Answer a multi-hop demo question with DRAGIN over the packaged demo corpus; print the trace."""
        import json

        from dynaprag.config import ConfigError
        from dynaprag.pipeline import Pipeline, load_config
        from dynaprag.registry import UnknownNameError
        from dynaprag.retrieval import demo_questions_path

        records = [json.loads(line) for line in demo_questions_path().read_text().splitlines() if line.strip()]
        record = next(r for r in records if r["id"] == DEMO_QUESTION)
        try:
            cfg = load_config(None, overrides or [], method=method)
        except (ConfigError, UnknownNameError) as exc:
            fail(str(exc))
        console.print(f"[bold]question[/]: {record['question']}  [dim](gold: {', '.join(record['answers'])}; "
                      f"model {cfg.model}, method {cfg.method}, BM25 over the demo corpus)[/]")
        answer = Pipeline.from_config(cfg).answer(record["question"])
        render_answer(answer, console)
        from dynaprag.eval.metrics import cover_exact_match, exact_match

        golds = record["answers"]
        if exact_match(answer.short, golds):
            verdict = "[green]the short answer matches the gold answer[/]"
        elif cover_exact_match(answer.text, golds):
            verdict = "[yellow]the gold answer appears in the answer, but the extracted short answer differs[/]"
        else:
            verdict = "[red]the answer does not match the gold answer[/] (expected at the default 135M model's size)"
        console.print(f"{verdict}: {answer.short!r} vs {' / '.join(golds)!r}")
