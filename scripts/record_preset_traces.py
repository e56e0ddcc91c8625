"""Record (or check) what every dynamic preset does on the demo questions with the 135M model.

Why: a refactor of the decoding loop must not change any preset's behaviour. This script
writes, per preset and question, the answer, the retrieval positions, reasons, queries and
hits, in float32 with the default model over the packaged demo corpus; the test
``tests/test_preset_traces.py`` replays part of it on every ``make test`` and ``--check``
replays all of it. Re-record only when a preset's behaviour changes on purpose, and say why
in the commit.

    .venv/bin/python scripts/record_preset_traces.py --out tests/fixtures/preset_traces.json
    .venv/bin/python scripts/record_preset_traces.py --check tests/fixtures/preset_traces.json
    .venv/bin/python scripts/record_preset_traces.py --out tests/fixtures/preset_traces.json --presets seakr --n 2 --update
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MAX_NEW_TOKENS = 48
PRESETS = ("wo-rag", "sr-rag", "fl-rag", "fs-rag", "token-rag", "entity-rag", "flare", "flare-flashrag",
           "dragin", "dragin-paper", "dragin-inline", "seakr", "self-rag-prompted")


def summarise(answer) -> dict:
    """The parts of an answer that define a preset's behaviour (no timings, no float scores)."""
    return {"text": answer.text, "short": answer.short,
            "tokens": [t.text for t in answer.trace.tokens],
            "retrievals": [{"position": r.position, "reason": r.reason, "query": r.query, "hit_ids": r.hit_ids}
                           for r in answer.trace.retrievals]}


def demo_questions(n: int) -> list[dict]:
    from dynaprag.retrieval import demo_questions_path

    lines = demo_questions_path().read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()][:n]


def run(presets, questions, pipeline_factory) -> dict:
    out: dict = {}
    for name in presets:
        pipe = pipeline_factory(name)
        out[name] = {}
        for q in questions:
            out[name][q["id"]] = summarise(pipe.answer(q["question"]))
            print(f"{name} {q['id']}: {len(out[name][q['id']]['retrievals'])} retrievals", file=sys.stderr)
    return out


def factory():
    from dynaprag.lm import load_model
    from dynaprag.pipeline import Pipeline, PipelineConfig

    lm = load_model("smollm2-135m", dtype="float32")
    shared: dict = {}

    def make(method: str):
        cfg = PipelineConfig(method=method, dtype="float32", max_new_tokens=MAX_NEW_TOKENS)
        pipe = Pipeline.from_config(cfg, lm=lm, retriever=shared.get("retriever"))
        shared["retriever"] = pipe.retriever
        return pipe
    return make


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write the recorded traces here")
    group.add_argument("--check", type=Path, help="replay every recorded trace and report differences")
    parser.add_argument("--n", type=int, default=10, help="demo questions per preset")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--update", action="store_true",
                        help="with --out: replace only these presets' entries of the existing file, keep the others")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # float32 sums can depend on the thread count; the test uses 1 too
    presets = [p for p in args.presets.split(",") if p]
    if args.out:
        traces = run(presets, demo_questions(args.n), factory())
        if args.update and args.out.exists():
            traces = {**json.loads(args.out.read_text(encoding="utf-8"))["traces"], **traces}
        data = {"model": "smollm2-135m", "dtype": "float32", "max_new_tokens": MAX_NEW_TOKENS, "traces": traces}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return 0
    recorded = json.loads(args.check.read_text(encoding="utf-8"))["traces"]
    presets = [p for p in presets if p in recorded]
    ids = {qid for p in presets for qid in recorded[p]}
    got = run(presets, [q for q in demo_questions(100) if q["id"] in ids], factory())
    bad = [(p, q) for p in presets for q in recorded[p] if got[p][q] != recorded[p][q]]
    for p, q in bad:
        print(f"DIFFERS: {p} {q}\n  recorded {recorded[p][q]}\n  now      {got[p][q]}")
    print(f"{sum(len(recorded[p]) for p in presets) - len(bad)} identical, {len(bad)} different")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
