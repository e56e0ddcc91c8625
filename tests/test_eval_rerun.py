"""What ``dynaprag eval`` shows and costs on a rerun: a finished run returns without loading
anything, ``--no-progress`` prints no bar at all (ours or the libraries'), and the one bar that
``--progress`` shows names the run."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from dynaprag.cli import app

ARGS = ["eval", "--dataset", "demo", "--method", "sr-rag", "--limit", "1", "max_new_tokens=4", "dtype=float32"]


def _eval(tmp_path, name: str, *flags: str):
    # a fresh index folder, so the BM25 index is built (and its bars would show) in this run
    args = [*ARGS, f"retrieval.index_dir={tmp_path / (name + '-index')}", "--out", str(tmp_path / name), *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_no_progress_prints_no_bar_and_a_finished_rerun_loads_nothing(tmp_path, monkeypatch):
    quiet = _eval(tmp_path, "run", "--no-progress")
    for bar in ("Loading weights", "BM25S", "bm25:", "it/s", "%|"):
        assert bar not in quiet.output, (bar, quiet.output)
    out = tmp_path / "run"
    records = (out / "records.jsonl").read_text()
    assert json.loads((out / "config.json").read_text())["resolved_dtype"] == "float32"

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run loaded a component")

    import dynaprag.lm
    import dynaprag.retrieval

    monkeypatch.setattr(dynaprag.lm, "load_model", refuse)
    monkeypatch.setattr(dynaprag.retrieval, "build_retriever", refuse)
    again = _eval(tmp_path, "run")
    assert (out / "records.jsonl").read_text() == records
    assert json.loads(again.stdout[: again.stdout.rindex("}") + 1])["questions"] == 1
    # a different config is still refused, without loading anything
    other = CliRunner().invoke(app, [*ARGS[:-2], "max_new_tokens=5", "dtype=float32", "--out", str(out)])
    assert other.exit_code == 2 and "different config" in other.output


def test_progress_shows_one_bar_labelled_with_the_run(tmp_path):
    shown = _eval(tmp_path, "shown")
    assert "demo sr-rag: 100%" in shown.output.replace("\r", "\n")
    assert "bm25: read + tokenise" in shown.output  # the bars are captured here: the quiet test means something
