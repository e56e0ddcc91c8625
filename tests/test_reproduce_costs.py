"""What ``dynaprag reproduce`` tells a reader beyond the scores: which datasets ran, what each
method cost, which bar is which run, and when a paper's θ runs on a model it was not set for."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dynaprag.eval.reproduce import BASELINE, get_table, reproduce, theta_warnings


@pytest.fixture
def tiny_data(shared_data, tmp_path) -> Path:
    """One HotpotQA question and the first 200 paragraphs of the shared corpus."""
    root = tmp_path / "data"
    (root / "questions").mkdir(parents=True)
    (root / "corpus").mkdir()
    with open(shared_data / "questions" / "hotpotqa.jsonl", encoding="utf-8") as src:
        (root / "questions" / "hotpotqa.jsonl").write_text(next(src), encoding="utf-8")
    with open(shared_data / "corpus" / "wiki_paragraphs.jsonl", encoding="utf-8") as src:
        (root / "corpus" / "wiki_paragraphs.jsonl").write_text("".join(next(src) for _ in range(200)),
                                                                encoding="utf-8")
    return root


def test_a_papers_theta_on_another_model_is_named_with_its_fix(tiny_data):
    table = get_table("dragin-table2")
    cells = [("hotpotqa", m) for m in ("sr-rag", "token-rag", "dragin")]
    lines = theta_warnings(table, cells, model="smollm2-135m", data_dir=tiny_data, questions={}, limit=10)
    dragin = next(line for line in lines if line.startswith("dragin "))
    assert "the paper's θ (hotpotqa θ=0.8)" in dragin and "llama2-13b-chat" in dragin
    assert "dynaprag calibrate --method dragin" in dragin and "--calibrated FILE" in dragin
    assert any(line.startswith("token-rag ") and "set trigger.theta" in line for line in lines)
    assert not any(line.startswith("sr-rag") for line in lines)  # no threshold, nothing to warn about
    # on the paper's own backbone, or with a θ the user chose, there is nothing to say
    assert theta_warnings(table, cells, model="meta-llama/Llama-2-13b-chat-hf", data_dir=tiny_data, questions={},
                          limit=10) == []
    assert theta_warnings(table, cells, model="smollm2-135m", data_dir=tiny_data, questions={}, limit=10,
                          overrides=["trigger.theta=2.0"]) == []


def test_the_table_says_which_datasets_ran_and_what_each_method_cost(tiny_data, tmp_path, capsys):
    full = get_table("dragin-table2")
    table = dataclasses.replace(full, methods=tuple(m for m in full.methods if m.ours in ("wo-rag", BASELINE)))
    result = reproduce(table, model="smollm2-135m", dtype="float32", data_dir=tiny_data, out=tmp_path / "out",
                       limit=1, datasets=["hotpotqa"], overrides=["max_new_tokens=8"], resamples=100, plots=False)
    bars = capsys.readouterr().err.replace("\r", "\n")
    assert "hotpotqa wo-rag: 100%" in bars and "hotpotqa sr-rag: 100%" in bars
    text = result.markdown
    assert "Datasets run: hotpotqa (1 question); not run: 2wikimultihopqa, strategyqa." in text
    assert "| Retrievals/q | Gen tok/q | Cost |" in text
    sr = next(r for r in result.rows if r["method"] == BASELINE and r["metric"] == "f1")
    assert sr["retrievals_per_question"] == 1.0 and sr["generated_tokens_per_question"] > 0
    assert sr["cost"] == f"{sr['s_per_question']:.2f} s/q"
    line = next(line for line in text.splitlines() if line.startswith("| hotpotqa | sr-rag (SR-RAG) | F1 |"))
    assert line.endswith(f"| 1.00 | {sr['generated_tokens_per_question']:.1f} | {sr['cost']} |")
    assert result.warnings == []  # wo-rag and sr-rag have no threshold
