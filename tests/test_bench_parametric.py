"""bench/parametric.py's split, selection and resume logic on tiny inputs (no model, no data files).

The split must keep every evaluated question and every passage it can see out of DyPRAG's
translator training (issue 14: the old benchmark trained on its own test passages), the
selection must be PRAG's ``usable_first``, and a killed run must resume without redoing or
losing answers.
"""
from __future__ import annotations

import json
import random

import pytest

from dynaprag.corpus import Passage
from dynaprag.eval.datasets import Example
from dynaprag.parametric.augment import usable_first
from dynaprag.retrieval.base import Hit

from bench_scripts import load_bench

bench = load_bench("parametric")  # puts bench/ on sys.path: its helper modules import as bench.py's do
import _parametric_offline as offline  # noqa: E402
import _parametric_report as report  # noqa: E402


def _questions(n: int) -> list[Example]:
    return [Example(id=f"q{i}", question=f"question {i}?", answers=("a",)) for i in range(n)]


def test_split_is_evaluation_first_then_translator_disjoint():
    qs = _questions(10)
    evaluation, translator = offline.split_questions(qs, 3, 4)
    assert [q.id for q in evaluation] == ["q0", "q1", "q2"]
    assert [q.id for q in translator] == ["q3", "q4", "q5", "q6"]
    _, later = offline.split_questions(qs, 3, 2, start=8)
    assert [q.id for q in later] == ["q8", "q9"]


@pytest.mark.parametrize("n, m, start, needle", [(3, 8, None, "needs 11"), (5, 2, 3, "overlaps"),
                                                 (0, 2, None, ">= 1")])
def test_split_refuses_impossible_or_overlapping_slices(n, m, start, needle):
    with pytest.raises(bench.BenchError, match=needle):
        offline.split_questions(_questions(10), n, m, start, where="hotpotqa.jsonl")


def test_split_refuses_a_question_id_in_both_slices():
    qs = _questions(4) + [Example(id="q0", question="again?", answers=("a",))]
    with pytest.raises(bench.BenchError, match="'q0'"):
        offline.split_questions(qs, 2, 3)


def test_translator_documents_leave_out_what_evaluation_can_see():
    kept = {"d/q5": ["h1", "h2", "h3"], "d/q6": ["h3", "h4", "h2"]}
    docs, excluded = offline.translator_documents(kept, {"h2", "h9"})
    assert docs == ["h1", "h3", "h4"]
    assert excluded == ["h2"]


def _hits(names: str) -> list[Hit]:
    return [Hit(Passage(n, n.upper(), f"text of passage {n}"), 1.0) for n in names]


@pytest.mark.parametrize("seed", range(6))
def test_selection_rounds_give_usable_first_and_encode_each_candidate_once(seed):
    rng = random.Random(seed)
    pool = _hits("abcdefghijklmnop")
    usable = {h.passage.content_hash: rng.random() < 0.6 for h in pool}
    qs = _questions(3)
    candidates = {q.id: rng.sample(pool, 8) for q in qs}
    encoded: list[str] = []

    def encode(passages):
        encoded.extend(p.content_hash for p in passages)

    def status(h):
        assert h in encoded, "status asked before the candidate was encoded"
        return "ok" if usable[h] else "skipped"

    chosen = offline.select_passages(qs, candidates, 3, encode, status, log=lambda _m: None)
    assert len(encoded) == len(set(encoded))

    class Oracle:  # what usable_first sees when it augments as it goes
        def augment_many(self, passages):
            return [type("Aug", (), {"usable": usable[p.content_hash], "passage": p})() for p in passages]

    for q in qs:
        kept, skipped = usable_first(Oracle(), [h.passage for h in candidates[q.id]], 3)
        assert all(isinstance(p, Passage) for p in chosen[q.id][0] + chosen[q.id][1])
        assert [p.id for p in chosen[q.id][0]] == [a.passage.id for a in kept]
        assert [p.id for p in chosen[q.id][1]] == [a.passage.id for a in skipped]


def test_next_needed_asks_only_for_the_next_batch():
    assert offline.next_needed(["a", "b", "c", "d"], 2, {}) == ["a", "b"]
    assert offline.next_needed(["a", "b", "c", "d"], 2, {"a": True, "b": False}) == ["c"]
    assert offline.next_needed(["a", "b", "c", "d"], 2, {"a": True, "b": True}) == []
    assert offline.next_needed(["a", "b"], 2, {"a": False, "b": False}) == []  # candidates exhausted


def _rec(method: str, qid: str) -> dict:
    return {"method": method, "dataset": "hotpotqa", "qid": qid, "seconds": 1.0, "f1": 0.5}


def test_checkpoint_resumes_and_drops_a_cut_last_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    assert bench.read_checkpoint(path) == {}
    bench.append_checkpoint(path, _rec("sr-rag", "q0"))
    bench.append_checkpoint(path, _rec("prag", "q0"))
    with path.open("a") as fh:
        fh.write(json.dumps(_rec("dyprag", "q0"))[:25])  # killed mid-write
    done = bench.read_checkpoint(path)
    assert set(done) == {("sr-rag", "hotpotqa", "q0"), ("prag", "hotpotqa", "q0")}
    assert bench.read_checkpoint(path, repair=True) == done  # as the answering process reads it
    bench.append_checkpoint(path, _rec("dyprag", "q0"))  # the redone answer replaces the cut line
    assert len(path.read_text().splitlines()) == 3
    assert set(bench.read_checkpoint(path)) == set(done) | {("dyprag", "hotpotqa", "q0")}


def test_checkpoint_refuses_a_bad_line_before_the_end(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps(_rec("sr-rag", "q0")) + "\n{\"method\": 1}\n" + json.dumps(_rec("prag", "q0")) + "\n")
    with pytest.raises(bench.BenchError, match="answers.jsonl:2"):
        bench.read_checkpoint(path)


def test_settings_tag_and_rotation():
    assert offline.settings_tag({"a": 1, "b": 2}) == offline.settings_tag({"b": 2, "a": 1})
    assert offline.settings_tag({"a": 1}) != offline.settings_tag({"a": 2})
    orders = [bench.rotated(bench.METHODS, i) for i in range(len(bench.METHODS))]
    assert {o[0] for o in orders} == set(bench.METHODS)
    assert all(sorted(o) == sorted(bench.METHODS) for o in orders)


def test_adapters_made_in_another_dtype_are_refused_and_unrecorded_ones_pass():
    entries = {"h1": {"model_dtype": "float32", "doc": {"id": "wp1"}}, "h2": {"doc": {"id": "wp2"}},
               "h3": {"model_dtype": "bfloat16", "doc": {"id": "wp3"}}}
    offline.check_dtypes(entries, ["h1", "h2"], "float32")
    with pytest.raises(bench.BenchError, match="document wp3: its adapter was encoded in bfloat16, this run is float32"):
        offline.check_dtypes(entries, ["h1", "h3"], "float32")
    row = offline.offline_row("hotpotqa", "x", [{**e, "skipped": True, "augmentation": {"failures": []}}
                                              for e in entries.values()], [0])
    assert row["encode_dtypes"] == "bfloat16,float32,unrecorded"


def test_results_wait_for_every_dataset_answered_by_another_process():
    splits = {"hotpotqa": (_questions(2), []), "2wikimultihopqa": (_questions(1), [])}
    done = {(m, "hotpotqa", q): {} for m in bench.METHODS for q in ("q0", "q1")}
    assert report.unfinished_datasets(splits, done) == ["2wikimultihopqa"]
    done.update({(m, "2wikimultihopqa", "q0"): {} for m in bench.METHODS})
    del done[("dyprag", "hotpotqa", "q1")]
    assert report.unfinished_datasets(splits, done) == ["hotpotqa"]
    done[("dyprag", "hotpotqa", "q1")] = {}
    assert report.unfinished_datasets(splits, done) == []


def test_online_rows_pair_every_method_with_sr_rag_on_the_same_questions():
    questions = _questions(4)
    done = {}
    for i, q in enumerate(questions):
        for m in bench.METHODS:
            better = m == "prag" and i < 3  # prag answers 3 of 4 where sr-rag does not
            done[(m, "hotpotqa", q.id)] = {"f1": float(better), "em": float(better), "cover_em": float(better),
                                           "seconds": 4.0 if m == "prag" else 2.0, "prompt_tokens": 100 + i,
                                           "generated_tokens": 10 * (m == "prag") + 2, "fell_back_to_context": 0}
    rows = {r["case"]: r for r in report.online_rows("hotpotqa", questions, done)}
    assert list(rows) == list(bench.METHODS)
    prag, sr = rows["prag"], rows["sr-rag"]
    assert prag["f1"] == 0.75 and sr["f1"] == 0.0 and prag["ratio_to_sr_rag"] == 2.0 and sr["ratio_to_sr_rag"] == 1.0
    assert prag["prompt_tokens_per_question"] == 101.5 and prag["generated_tokens_per_question"] == 12
    assert prag["f1_diff"] == 0.75 and "f1_diff" not in sr  # sr-rag is the reference, not compared with itself
    assert rows["wo-rag"]["f1_diff"] == 0.0


def test_answer_datasets_default_to_all_and_must_be_among_datasets(capsys):
    assert bench.parse_args([]).answer_datasets == list(bench.DATASETS)
    assert bench.parse_args(["--answer-datasets", "2wikimultihopqa"]).answer_datasets == ["2wikimultihopqa"]
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--datasets", "hotpotqa", "--answer-datasets", "2wikimultihopqa"])
    assert exc.value.code == 2 and "--answer-datasets: 2wikimultihopqa" in capsys.readouterr().err
