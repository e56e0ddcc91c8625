"""``dynaprag report`` on hand-made run folders: intervals, paired comparisons, notes, plots.

The run folders are written here (config.json + records.jsonl with known per-question scores),
so every number in the report is known: a method that wins 16 questions and loses none against
sr-rag must be "better", a copy of sr-rag "within noise"; pairing is by question id on the
shared questions and says how many; a missing or ambiguous baseline is said, not guessed.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynaprag.eval.plots import PlotPoint, pareto_frontier, plot_frontier
from dynaprag.eval.report import ReportError, build_report, load_run, report_table, write_report
from dynaprag.eval.stats import paired_comparisons

PLOTS = ("f1_per_method", "f1_vs_seconds", "f1_vs_retrievals", "retrieval_positions")


def record(qid: str, em: float, f1: float | None = None, *, retrievals: int = 1, position: int = 0,
           seconds: float = 1.0) -> dict:
    f1 = em if f1 is None else f1
    trace = {"tokens": ["t"] * 10, "retrievals": [{"position": position}] * retrievals}
    return {"id": qid, "scores": {"em": em, "f1": f1, "cover_em": max(em, f1 > 0.5)}, "retrievals": retrievals,
            "generated_tokens": 10, "prompt_tokens": 100, "forward_passes": 10, "seconds": seconds,
            "peak_rss_mb": 500.0, "trace": trace}


def write_run(root: Path, name: str, method: str, records: list[dict], *, dataset: str = "hotpotqa",
              limit: int | None = None) -> Path:
    path = root / name
    path.mkdir(parents=True)
    config = {"dataset": dataset, "limit": limit, "pipeline": {"method": method, "model": "smollm2-135m"}}
    (path / "config.json").write_text(json.dumps(config))
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    """sr-rag right on q0-q15; dragin right on q0-q31 (16 wins, no loss); flare = sr-rag's scores."""
    ids = [f"q{i}" for i in range(40)]
    sr = [record(q, float(i < 16), retrievals=1, seconds=1.0) for i, q in enumerate(ids)]
    dragin = [record(q, float(i < 32), retrievals=2, position=5, seconds=3.0) for i, q in enumerate(ids)]
    flare = [record(q, float(i < 16), retrievals=3, position=8, seconds=2.0) for i, q in enumerate(ids)]
    return {"sr-rag": write_run(tmp_path, "sr", "sr-rag", sr),
            "dragin": write_run(tmp_path, "dragin", "dragin", dragin),
            "flare": write_run(tmp_path, "flare", "flare", flare)}


def test_known_difference_is_better_and_a_copy_is_within_noise(runs):
    report = build_report([load_run(p) for p in runs.values()], resamples=4000)
    by_method = {c.method: c for c in report.comparisons}
    assert set(by_method) == {"dragin", "flare"} and report.notes == []
    dragin = by_method["dragin"].metrics["em"]
    assert (dragin.n, dragin.mean_a, dragin.mean_b) == (40, 0.8, 0.4)
    assert dragin.low > 0 and dragin.p_value < 0.001 and dragin.verdict == "better"
    flare = by_method["flare"].metrics["f1"]
    assert (flare.difference, flare.p_value, flare.verdict) == (0.0, 1.0, "within noise")
    md = report.markdown()
    assert "| dragin vs sr-rag | hotpotqa | 40 | EM | 0.800 | 0.400 | +0.400 |" in md and "**better** |" in md
    assert ("| flare vs sr-rag | hotpotqa | 40 | F1 | 0.400 | 0.400 | +0.000 | [+0.000, +0.000] | 1.000 | "
            "within noise |") in md
    sr_em = report.runs[0].intervals["em"]
    assert f"| hotpotqa | sr-rag | 40 | {sr_em} |" in md and sr_em.low < 0.4 < sr_em.high


def test_pairs_by_question_id_and_says_how_many(tmp_path):
    base = [record(f"q{i}", float(i % 2)) for i in range(30)]
    method = [record(f"q{i}", float(i % 2)) for i in reversed(range(10, 40))]  # other order, 20 shared ids
    runs = [load_run(write_run(tmp_path, "sr", "sr-rag", base)), load_run(write_run(tmp_path, "m", "dragin", method))]
    report = build_report(runs, resamples=500)
    comp = report.comparisons[0]
    assert (comp.n_paired, comp.n_method, comp.n_baseline) == (20, 30, 30)
    assert comp.metrics["em"].difference == 0.0 and comp.metrics["em"].p_value == 1.0  # same answers once paired
    assert "paired on 20 questions (dragin answered 30, sr-rag 30)" in report.markdown()


def test_baseline_absent_or_ambiguous(runs, tmp_path):
    loaded = [load_run(runs["dragin"]), load_run(runs["flare"])]
    report = build_report(loaded, resamples=200)
    assert report.comparisons == []
    assert "Baseline 'sr-rag' is not among these runs (dragin, flare): no paired comparisons" in report.markdown()
    assert "CI of Δ" not in report.markdown()
    alone = build_report([load_run(runs["sr-rag"])], resamples=200)
    assert alone.comparisons == [] and alone.notes == ["Only sr-rag runs: nothing to compare with them."]
    other = build_report(loaded, baseline="flare", resamples=200)
    assert [(c.method, c.baseline) for c in other.comparisons] == [("dragin", "flare")]

    again = write_run(tmp_path, "sr-again", "sr-rag", [record("q0", 1.0)])
    with pytest.raises(ReportError, match=r"2 runs of hotpotqa match \('sr-rag \(sr\)', 'sr-rag \(sr-again\)'\)"):
        write_report([runs["sr-rag"], again, runs["dragin"]], tmp_path / "out", plots=False)
    table, _ = write_report([runs["sr-rag"], again, runs["dragin"]], tmp_path / "out", plots=False,
                            baseline="sr-rag (sr)", resamples=200)
    assert "| dragin vs sr-rag (sr) | hotpotqa | 40 |" in table and "| sr-rag (sr-again) vs sr-rag (sr) |" in table


def test_other_datasets_without_a_baseline_are_named(runs, tmp_path):
    wiki = write_run(tmp_path, "wiki", "dragin", [record("w1", 1.0)], dataset="2wikimultihopqa")
    report = build_report([load_run(p) for p in (*runs.values(), wiki)], resamples=200)
    assert "2wikimultihopqa: no sr-rag run, so its methods are not compared." in report.notes
    assert {c.dataset for c in report.comparisons} == {"hotpotqa"}


def test_intervals_cover_only_the_configured_questions(tmp_path):
    records = [record(f"q{i}", 1.0 if i < 10 else 0.0) for i in range(15)]
    run = load_run(write_run(tmp_path, "short", "sr-rag", records, limit=10))
    md = report_table([run], resamples=300)
    assert run.summary["records_beyond_limit"] == 5
    assert "| hotpotqa | sr-rag | 10 | 1.000 [1.000, 1.000] |" in md


def test_report_json_and_seeded_statistics(runs, tmp_path):
    paths = [runs["sr-rag"], runs["dragin"]]
    write_report(paths, tmp_path / "a", plots=False, seed=1, resamples=300)
    write_report(paths, tmp_path / "b", plots=False, seed=1, resamples=300)
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    assert a == json.loads((tmp_path / "b" / "report.json").read_text())
    assert (a["seed"], a["resamples"], a["baseline"], a["confidence"]) == (1, 300, "sr-rag", 0.95)
    em = next(c for c in a["comparisons"] if c["metric"] == "em")
    assert em["n_paired"] == 40 and em["diff"] == pytest.approx(0.4) and em["within_noise"] is False
    assert em["verdict"] == "better" and em["diff_ci_low"] > 0
    sr = next(r for r in a["runs"] if r["method"] == "sr-rag")
    assert sr["em"] == 0.4 and sr["em_ci_low"] < 0.4 < sr["em_ci_high"]
    # the same numbers as the stats module computes on the paired scores
    direct = paired_comparisons({"em": [1.0] * 32 + [0.0] * 8}, {"em": [1.0] * 16 + [0.0] * 24},
                                seed=1, resamples=300)["em"]
    assert (em["diff_ci_low"], em["diff_ci_high"], em["p_value"]) == (direct.low, direct.high, direct.p_value)


def test_cli_report_options_plots_and_errors(runs, tmp_path):
    from dynaprag.cli import app

    out = tmp_path / "report"
    args = ["report", *map(str, runs.values()), "--out", str(out), "--baseline", "flare", "--seed", "3",
            "--resamples", "400"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| dragin vs flare | hotpotqa | 40 | EM |" in result.output and "| sr-rag vs flare |" in result.output
    assert json.loads((out / "report.json").read_text())["seed"] == 3
    for stem in PLOTS:
        png = (out / f"{stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        svg = ET.parse(out / f"{stem}.svg").getroot()
        assert svg.tag.endswith("svg")
    frontier = (out / "f1_vs_retrievals.svg").read_text()
    assert all(label in frontier for label in ("dragin", "flare", "sr-rag", "retrievals per question"))
    assert "retrievals per question" in (out / "retrieval_positions.svg").read_text()

    bad = CliRunner().invoke(app, ["report", str(runs["sr-rag"]), "--out", str(out), "--resamples", "0"])
    assert bad.exit_code == 2 and "resamples must be a positive integer" in " ".join(bad.output.split())
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 2 and "is not a run folder" in " ".join(missing.output.split())  # rich wraps


def test_pareto_frontier_and_reproducible_svg(tmp_path):
    assert pareto_frontier([1.0, 2.0, 3.0, 2.5], [0.2, 0.4, 0.3, 0.5]) == [0, 1, 3]
    assert pareto_frontier([0.0, 0.0, 1.0], [0.1, 0.3, 0.3]) == [1]  # same cost: the better one; no gain: dropped
    assert pareto_frontier([], []) == []
    points = [PlotPoint("wo-rag", "hotpotqa", 0.10, 0.05, 0.16, 0.5, 0.0),
              PlotPoint("dragin", "hotpotqa", 0.30, 0.20, 0.40, 3.0, 2.5)]
    first = plot_frontier(points, tmp_path, cost="retrievals_per_question")
    svg = first[1].read_bytes()
    assert [p.name for p in first] == ["f1_vs_retrievals.png", "f1_vs_retrievals.svg"]
    assert plot_frontier(points, tmp_path, cost="retrievals_per_question")[1].read_bytes() == svg
    with pytest.raises(ValueError, match="cost must be one of"):
        plot_frontier(points, tmp_path, cost="tokens")
