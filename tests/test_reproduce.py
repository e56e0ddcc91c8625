"""``dynaprag reproduce``: the published-tables file, the refusal of missing data, a tiny real run."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynaprag.cli import app
from dynaprag.eval.reproduce import (BASELINE, ReproduceError, TableError, get_table, load_tables, missing_data,
                                     reproduce, table_names)

runner = CliRunner()


def test_every_packaged_table_cites_its_source_and_maps_to_registered_presets():
    from dynaprag.eval.datasets import DATASETS
    from dynaprag.pipeline import method_names

    tables = load_tables()
    assert {"dragin-table2", "prag-paper", "prag-toolkit"} <= set(tables)
    presets = set(method_names())
    for table in tables.values():
        for key in ("paper", "venue", "table", "url", "read_from"):
            assert table.source[key], (table.name, key)
        assert {m.ours for m in table.methods} <= presets, table.name
        assert all(d in DATASETS for d in table.metrics), table.name
        assert BASELINE in {m.ours for m in table.methods}
        assert (table.published is None) == bool(table.unavailable), table.name


def test_dragin_table2_holds_the_papers_numbers_as_read():
    t = get_table("dragin-table2")
    assert [m.ours for m in t.methods] == ["wo-rag", "sr-rag", "fl-rag", "fs-rag", "token-rag", "dragin"]
    assert t.paper_name("token-rag") == "FLARE"
    assert t.datasets == ("2wikimultihopqa", "hotpotqa", "strategyqa")
    assert t.value("llama2-13b-chat", "2wikimultihopqa", "sr-rag", "f1") == 0.3364
    assert t.value("llama2-13b-chat", "strategyqa", "dragin", "acc") == 0.689
    assert t.value("vicuna-13b-v1.5", "hotpotqa", "token-rag", "em") == 0.092
    assert t.value("llama2-13b-chat", "strategyqa", "dragin", "f1") is None  # the paper reports accuracy only
    cells = sum(len(by_m) for by_d in t.published.values() for by_m in by_d.values())
    assert cells == 3 * 4 * 6  # backbones x datasets x methods, none missing
    assert t.overrides("2wikimultihopqa") == ["k=3", "max_new_tokens=64"]


def test_prag_paper_numbers_are_marked_unavailable_not_guessed():
    t = get_table("prag-paper")
    assert t.published is None and "no citable copy" in t.unavailable
    assert t.value("llama3.2-1b-instruct", "hotpotqa", "prag", "f1") is None


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tables.yaml"
    path.write_text(text, encoding="utf-8")
    return path


_GOOD = """
t:
  title: x
  source: {paper: P, venue: V, table: "Table 1", url: "https://example.org", read_from: here}
  methods: [{ours: sr-rag, paper: RAG}]
  datasets: [hotpotqa]
  metrics: {hotpotqa: [f1]}
  backbones: [m]
  published: {m: {hotpotqa: {sr-rag: {f1: 0.5}}}}
"""


def test_schema_refuses_numbers_without_a_source_or_out_of_place(tmp_path):
    assert load_tables(_write(tmp_path, _GOOD))["t"].value("m", "hotpotqa", "sr-rag", "f1") == 0.5
    with pytest.raises(TableError, match=r"t\.source\.read_from"):
        load_tables(_write(tmp_path, _GOOD.replace(", read_from: here", "")))
    with pytest.raises(TableError, match="unavailable"):
        load_tables(_write(tmp_path, _GOOD.replace("published: {m: {hotpotqa: {sr-rag: {f1: 0.5}}}}",
                                                   "published: null")))
    with pytest.raises(TableError, match=r"t\.published\.m\.hotpotqa\.sr-rag\.em"):
        load_tables(_write(tmp_path, _GOOD.replace("{f1: 0.5}", "{em: 0.5}")))
    with pytest.raises(TableError, match=r"in \[0, 1\]"):
        load_tables(_write(tmp_path, _GOOD.replace("0.5", "31.2")))
    with pytest.raises(TableError, match="must include sr-rag"):
        load_tables(_write(tmp_path, _GOOD.replace("ours: sr-rag", "ours: wo-rag")))


def test_missing_dataset_is_refused_naming_the_download(tmp_path):
    (tmp_path / "questions").mkdir()
    lines = missing_data(["popqa", "hotpotqa"], tmp_path)
    assert len(lines) == 2 and "dynaprag data download popqa" in lines[0]
    with pytest.raises(ReproduceError, match="dynaprag data download cwq"):
        reproduce("prag-toolkit", model="smollm2-135m", data_dir=tmp_path, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything ran or was written


def test_cli_refuses_missing_data_with_exit_2(tmp_path):
    result = runner.invoke(app, ["reproduce", "prag-toolkit", "--data-dir", str(tmp_path), "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "dynaprag data download popqa" in " ".join(result.output.split())


def test_cli_lists_tables_and_refuses_unknown_ones(tmp_path):
    listed = runner.invoke(app, ["reproduce", "--list"])
    assert listed.exit_code == 0
    assert all(name in listed.output for name in table_names())
    unknown = runner.invoke(app, ["reproduce", "dragin-tabel2", "--out", str(tmp_path)])
    assert unknown.exit_code == 2 and "dragin-table2" in unknown.output


@pytest.fixture
def tiny_data(shared_data, tmp_path) -> Path:
    """Two HotpotQA questions and the first 300 paragraphs of the shared corpus (small index, fast run)."""
    root = tmp_path / "data"
    (root / "questions").mkdir(parents=True)
    (root / "corpus").mkdir()
    with open(shared_data / "questions" / "hotpotqa.jsonl", encoding="utf-8") as src:
        (root / "questions" / "hotpotqa.jsonl").write_text("".join(next(src) for _ in range(2)), encoding="utf-8")
    with open(shared_data / "corpus" / "wiki_paragraphs.jsonl", encoding="utf-8") as src:
        (root / "corpus" / "wiki_paragraphs.jsonl").write_text("".join(next(src) for _ in range(300)),
                                                                encoding="utf-8")
    return root


def test_tiny_end_to_end_writes_ours_beside_published_and_resumes(tiny_data, tmp_path):
    full = get_table("dragin-table2")
    table = dataclasses.replace(full, methods=tuple(m for m in full.methods if m.ours in ("wo-rag", BASELINE)))
    out = tmp_path / "out"
    result = reproduce(table, model="smollm2-135m", dtype="float32", data_dir=tiny_data, out=out, limit=1,
                       datasets=["hotpotqa"], overrides=["max_new_tokens=8"], progress=False, resamples=200)
    text = (out / "reproduce.md").read_text(encoding="utf-8")
    assert "Ours [95 % CI]" in text and "Published (llama2-13b-chat)" in text
    assert "is not the paper's backbone" in text and "Table 2" in text
    sr_f1 = next(r for r in result.rows if r["method"] == BASELINE and r["metric"] == "f1")
    assert sr_f1["published"] == 0.3706 and sr_f1["n"] == 1 and 0.0 <= sr_f1["ours"] <= 1.0
    assert "| hotpotqa | sr-rag (SR-RAG) | F1 | 1 |" in text and "0.3706" in text
    wo_f1 = next(r for r in result.rows if r["method"] == "wo-rag" and r["metric"] == "f1")
    assert wo_f1["n_paired"] == 1 and "verdict" in wo_f1
    config = json.loads((out / "hotpotqa" / BASELINE / "config.json").read_text(encoding="utf-8"))
    assert config["pipeline"]["k"] == 3 and config["pipeline"]["max_new_tokens"] == 8 and config["limit"] == 1
    assert all((out / f"reproduce.{ext}").is_file() for ext in ("json", "png", "svg"))
    assert "* hotpotqa: best F1 other than sr-rag is wo-rag" in text
    assert json.loads((out / "reproduce.json").read_text(encoding="utf-8"))["best"][0]["method"] == "wo-rag"
    records = (out / "hotpotqa" / BASELINE / "records.jsonl").read_text(encoding="utf-8")
    again = reproduce(table, model="smollm2-135m", dtype="float32", data_dir=tiny_data, out=out, limit=1,
                      datasets=["hotpotqa"], overrides=["max_new_tokens=8"], progress=False, resamples=200)
    assert (out / "hotpotqa" / BASELINE / "records.jsonl").read_text(encoding="utf-8") == records
    assert again.rows == result.rows


def _calibration(path: Path, *, method="dragin", dataset="hotpotqa", model="smollm2-135m", theta=2.5,
                 limit: int | None = 100) -> Path:
    """A config shaped as ``dynaprag calibrate`` writes it (the fields reproduce reads)."""
    lines = [f"method: {method}", f"model: {model}", f"dataset: {dataset}"] + ([f"limit: {limit}"] if limit else [])
    path.write_text("\n".join(lines + ["trigger:", "  name: rind", f"  theta: {theta}"]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("kwargs, limit, message", [
    ({"model": "qwen2.5-coder-0.5b"}, 100, "fitted for model 'qwen2.5-coder-0.5b'"),
    ({}, 101, "--limit must be at most 100"),
    ({}, None, "--limit must be at most 100"),
    ({"limit": None}, 50, "split starts at question 0"),
    ({"method": "seakr"}, 100, "does not run"),
    ({"dataset": "strategyqa"}, 100, "does not run"),
])
def test_a_calibration_that_cannot_apply_is_refused_before_anything_runs(tmp_path, shared_data, kwargs, limit,
                                                                         message):
    cal = _calibration(tmp_path / "cal.yaml", **kwargs)
    with pytest.raises(ReproduceError, match=message):
        reproduce("dragin-table2", model="smollm2-135m", data_dir=shared_data, out=tmp_path / "out", limit=limit,
                  datasets=["hotpotqa"], calibrated=[cal])
    assert not (tmp_path / "out").exists()


def test_cli_names_the_calibration_field_that_is_missing(tmp_path, shared_data):
    bad = tmp_path / "cal.yaml"
    bad.write_text("method: dragin\nmodel: smollm2-135m\ndataset: hotpotqa\nlimit: 100\n", encoding="utf-8")
    result = runner.invoke(app, ["reproduce", "dragin-table2", "--data-dir", str(shared_data), "--dataset",
                                 "hotpotqa", "--limit", "10", "--calibrated", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "trigger.theta" in result.output and "cal.yaml" in result.output


def test_calibrated_theta_reaches_only_its_cell_and_the_table_says_so(tiny_data, tmp_path):
    cal = _calibration(tmp_path / "cal.yaml", theta=2.5, limit=2)
    out = tmp_path / "out"
    result = reproduce("dragin-table2", model="smollm2-135m", dtype="float32", data_dir=tiny_data, out=out, limit=2,
                       datasets=["hotpotqa"], methods=["sr-rag", "dragin", "token-rag"], calibrated=[cal],
                       batch_size=2, overrides=["max_new_tokens=8"], progress=False, resamples=200, plots=False)
    assert {r["method"] for r in result.rows} == {"sr-rag", "dragin", "token-rag"}
    dragin = json.loads((out / "hotpotqa" / "dragin" / "config.json").read_text(encoding="utf-8"))
    token = json.loads((out / "hotpotqa" / "token-rag" / "config.json").read_text(encoding="utf-8"))
    assert dragin["pipeline"]["trigger"]["theta"] == 2.5 and dragin["batch_size"] == 2
    assert token["pipeline"]["trigger"].get("theta") != 2.5
    text = (out / "reproduce.md").read_text(encoding="utf-8")
    assert "| hotpotqa | dragin (DRAGIN (Ours)), θ 2.5 | F1 | 2 |" in text and "θ = 2.5 from cal.yaml" in text
    assert all(r.get("theta") == 2.5 for r in result.rows if r["method"] == "dragin")
    assert "2 questions decoded together" in text


def test_best_per_dataset_reads_the_headline_metric_against_the_paired_baseline():
    from dynaprag.eval.reproduce import best_per_dataset

    table = get_table("dragin-table2")
    row = {"dataset": "hotpotqa", "metric": "f1", "diff_ci_low": 0.01, "diff_ci_high": 0.1, "p_value": 0.01,
           "verdict": "better", "n_paired": 100}
    rows = [{"dataset": "hotpotqa", "method": BASELINE, "metric": "f1", "ours": 0.30},
            {**row, "method": "dragin", "ours": 0.36, "diff": 0.06},
            {**row, "method": "flare", "ours": 0.33, "diff": 0.04},  # paired on fewer questions: base 0.29
            {**row, "method": "fs-rag", "metric": "em", "ours": 0.9, "diff": 0.6}]
    (best,) = best_per_dataset(table, rows)
    assert best["method"] == "dragin" and best["metric"] == "f1"
    assert best["baseline"] == pytest.approx(0.30) and best["ratio"] == pytest.approx(1.2)
