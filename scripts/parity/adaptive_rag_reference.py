"""Label-level fixture of Adaptive-RAG's own labelling code (starsuzi/Adaptive-RAG @0c88670) on fixed inputs.

What the reference code decides, and what ``tests/comparison/test_adaptive_rag_labels.py`` checks
our :mod:`dynaprag.dynamic.methods.adaptive_rag.labels` against:

1. **correct?** -- per question and strategy, whether the prediction matches a gold answer: the
   reference's own ``normalize_answer`` (``evaluate.py:28-45``) under the rule of
   ``evaluate.py:653-659`` (any gold, equal after normalisation; the rule is inline in ``main``,
   so the loop is restated here around the imported function);
2. **silver labels** -- its ``label_complexity`` (``classifier/preprocess/preprocess_utils.py:129-166``)
   run on the files ``evaluate.py`` would have written (``zero_single_multi_classification__*.json``:
   the correct question ids of each strategy) and the original question file;
3. **inductive-bias labels** -- its ``save_inductive_bias_*`` (:49-127) on small raw files in each
   dataset's release format;
4. **the training set** -- its ``concat_and_save_binary_silver`` (:36-47) of the two.

The classifier's decoding (``run_classifier.py:695-714``) is inline in a training script that needs
a GPU model; it is not run here (``decode_label`` is unit-tested on hand-computed scores).

    git --git-dir=/work/.mirror/starsuzi+Adaptive-RAG/repo archive 0c88670 classifier evaluate.py \\
        metrics lib.py | tar -x -C /work/ref/Adaptive-RAG
    .venv/bin/python scripts/parity/adaptive_rag_reference.py --ref /work/ref/Adaptive-RAG

Patches (import time only; the checkout is not modified, nothing of it is copied here):
``jsonlines`` (not installed) is a reader of JSON lines; ``evaluate.py``'s imports that its
``normalize_answer`` does not use (``_jsonnet``, ``commaqa``, ``lib``, ``metrics``) are empty stubs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0c88670af8707667eb5c1163151bb5ce61b14acb"
FIXTURE = ROOT / "tests" / "comparison" / "fixtures" / "adaptive_rag_labels.json"

# (id, dataset, question, golds, predictions of A / B / C): every label pattern, normalisation cases
QUESTIONS = [
    ("h1", "hotpotqa", "Who directed Jaws?", ["Steven Spielberg"],
     ["Steven Spielberg.", "Spielberg", "Steven Spielberg"]),
    ("h2", "hotpotqa", "Which river flows through Ulm?", ["Danube", "the Danube"], ["Rhine", "The Danube", "Danube"]),
    ("h3", "hotpotqa", "In what year was the director of Jaws born?", ["1946"], ["1950", "1947", "1946"]),
    ("h4", "hotpotqa", "Where was Marie Curie born?", ["Warsaw"], ["Paris", "Krakow", "Poland"]),
    ("h5", "hotpotqa", "Who wrote Hamlet?", ["William Shakespeare"], ["william shakespeare", "Marlowe", "W. S."]),
    ("w1", "2wikimultihopqa", "Who is the mother of the director of Inception?", ["Christina Jensen"],
     ["unknown", "Christina  Jensen", "Christina Jensen"]),
    ("w2", "2wikimultihopqa", "Which film came out first, Jaws or Alien?", ["Jaws"], ["Alien", "Alien", "an Alien"]),
    ("w3", "2wikimultihopqa", "Are Ulm and Dijon in the same country?", ["no"], ["No.", "yes", "no"]),
    ("n1", "nq", "what is the capital of france", ["Paris"], ["paris", "Paris", "Paris"]),
    ("n2", "nq", "who sang yesterday", ["The Beatles", "Beatles"], ["Elvis", "the beatles!", "Beatles"]),
]
INDUCTIVE = {  # per dataset: (id, question) of its training set, as its raw release file holds them
    "hotpotqa": [("h2", "Which river flows through Ulm?"), ("ht1", "Which magazine was started first?")],
    "2wikimultihopqa": [("w9", "Who was born first, A or B?")],
    "musique": [("m1", "When did the country of the author of X gain independence?")],
    "nq": [(None, "when did the eiffel tower open"), (None, "who plays the joker")],
    "trivia": [(None, "Which planet is known as the red planet?")],
    "squad": [(None, "What is the main product of photosynthesis?")],
}
STRATEGY_FILES = {"A": "nor_qa", "B": "oner_qa", "C": "ircot_qa"}
WORDS = {"A": "zero", "B": "single", "C": "multi"}  # evaluate.py:642-646


def stub_imports() -> None:
    """Modules the reference imports but the functions run here never use."""
    jsonlines = types.ModuleType("jsonlines")

    @contextlib.contextmanager
    def _open(path, mode="r"):
        with open(path, encoding="utf-8") as handle:
            yield (json.loads(line) for line in handle if line.strip())
    jsonlines.open = _open
    sys.modules["jsonlines"] = jsonlines
    for name in ("_jsonnet", "commaqa", "commaqa.inference", "commaqa.inference.constants", "lib", "metrics",
                 "metrics.drop_answer_em_f1", "metrics.support_em_f1", "metrics.answer_support_recall",
                 "metrics.squad_answer_em_f1"):
        module = types.ModuleType(name)
        module.__getattr__ = lambda attr: None  # any imported name
        sys.modules[name] = module


def write_json(path: Path, data) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", required=True, help="checkout of starsuzi/Adaptive-RAG at " + COMMIT[:7])
    parser.add_argument("--out", default=str(FIXTURE))
    args = parser.parse_args()
    ref = Path(args.ref).resolve()
    stub_imports()
    sys.path[:0] = [str(ref), str(ref / "classifier" / "preprocess")]
    import evaluate  # noqa: E402 - the reference's evaluate.py
    import preprocess_utils  # noqa: E402 - the reference's classifier/preprocess/preprocess_utils.py

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.chdir(tmp)  # get_overlapped_qid reads raw_data/... relative to the working folder
        write_json(tmp / "raw_data" / "musique" / "dev_test_singlehop_questions_v1.0.json", {"natural_questions": []})
        correct, silver = {}, []
        for dataset in dict.fromkeys(q[1] for q in QUESTIONS):
            rows = [q for q in QUESTIONS if q[1] == dataset]
            orig = tmp / dataset / "dev.jsonl"
            orig.parent.mkdir(parents=True, exist_ok=True)
            orig.write_text("".join(json.dumps({"question_id": i, "question_text": q}) + "\n"
                                    for i, _, q, _, _ in rows), encoding="utf-8")
            files = {}
            for slot, label in enumerate("ABC"):
                hits = {}
                for qid, _, _, golds, predictions in rows:  # evaluate.py:653-659
                    for gold in golds:
                        if evaluate.normalize_answer(gold) == evaluate.normalize_answer(predictions[slot]):
                            hits[qid] = [WORDS[label]]
                    correct.setdefault(qid, {})[label] = qid in hits
                files[label] = write_json(tmp / dataset / f"{STRATEGY_FILES[label]}.json", hits)
            silver += preprocess_utils.label_complexity(str(orig), files["A"], files["B"], files["C"], dataset)
        binary = []
        for dataset, rows in INDUCTIVE.items():
            out = tmp / "binary" / f"{dataset}.json"
            if dataset == "musique":
                raw = tmp / "raw" / "musique.jsonl"
                raw.parent.mkdir(parents=True, exist_ok=True)
                raw.write_text("".join(json.dumps({"id": i, "question": q}) + "\n" for i, q in rows), encoding="utf-8")
                preprocess_utils.save_inductive_bias_musique(str(raw), str(out))
            elif dataset in ("hotpotqa", "2wikimultihopqa"):
                raw = write_json(tmp / "raw" / f"{dataset}.json", [{"_id": i, "question": q} for i, q in rows])
                getattr(preprocess_utils, f"save_inductive_bias_{dataset}")(raw, str(out))
            else:
                raw = write_json(tmp / "raw" / f"{dataset}.json", [{"question": q} for _, q in rows])
                preprocess_utils.save_inductive_bias_single_data(raw, str(out), dataset, "train")
            binary += json.loads(out.read_text())
        binary_file = write_json(tmp / "binary_total.json", binary)
        silver_file = write_json(tmp / "silver.json", silver)
        preprocess_utils.concat_and_save_binary_silver(binary_file, silver_file, str(tmp / "train.json"))
        combined = json.loads((tmp / "train.json").read_text())

    fixture = {
        "reference": f"starsuzi/Adaptive-RAG @ {COMMIT}",
        "produced_by": "scripts/parity/adaptive_rag_reference.py",
        "questions": [{"id": i, "dataset": d, "question": q, "golds": g, "predictions": dict(zip("ABC", p))}
                      for i, d, q, g, p in QUESTIONS],
        "inductive_questions": {d: [{"id": i, "question": q} for i, q in rows] for d, rows in INDUCTIVE.items()},
        "correct": correct,
        "silver": [{"id": r["id"], "dataset": r["dataset_name"], "label": r["answer"]} for r in silver],
        "binary": [{"id": r["id"], "dataset": r["dataset_name"], "label": r["answer"]} for r in binary],
        "combined": [{"id": r["id"], "label": r["answer"]} for r in combined],
    }
    Path(args.out).write_text(json.dumps(fixture, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(silver)} silver, {len(binary)} inductive, {len(combined)} combined")


if __name__ == "__main__":
    main()
