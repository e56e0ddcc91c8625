"""PRAG document augmentation: one document at a time vs several documents decoded as one batch.

Augments the same passages twice in one process, alternating which mode goes first per
passage group: each passage alone (``batch_docs=1``), and the group as one batch
(``batch_docs=--batch``), with 1 rewrite + 3 QA, QA budget 96 tokens and 1 retry (the settings
of the old parametric benchmark; ``bench/parametric.py`` now uses ``AugmentConfig``'s defaults). Greedy outputs are identical either way (tested); sampled retries differ.
Writes ``bench/results/augment.{json,md}``.

    .venv/bin/python bench/augment.py
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED_DATA, parse_args, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=2, help="passage groups (each of --batch passages)")
    ap.add_argument("--batch", type=int, default=4, help="documents per batch")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=1)
    args = parse_args(ap)
    import torch

    torch.set_num_threads(args.threads)
    from dynaprag.corpus import Passage
    from dynaprag.lm import load_model
    from dynaprag.parametric.augment import AugmentConfig, Augmenter

    corpus = SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl"
    with corpus.open(encoding="utf-8") as fh:
        rows = [json.loads(next(fh)) for _ in range(args.groups * args.batch)]
    passages = [Passage(r["id"], r.get("title", ""), r["text"]) for r in rows]
    lm = load_model(args.model, dtype="float32")
    augmenter = Augmenter(lm, AugmentConfig(max_new_tokens_qa=96, max_retries=1))
    totals = {"alone": [0.0, 0, 0, 0], "batched": [0.0, 0, 0, 0]}  # seconds, attempts, failures, incomplete

    def run(mode: str, group: list[Passage]) -> None:
        start = time.perf_counter()
        records = ([augmenter.augment(p) for p in group] if mode == "alone" else augmenter.augment_many(group))
        t = totals[mode]
        t[0] += time.perf_counter() - start
        t[1] += sum(r.attempts for r in records)
        t[2] += sum(len(r.failures) for r in records)
        t[3] += sum(not r.complete for r in records)
        print(f"{mode}: {t[0]:.0f} s so far", flush=True)

    for g in range(args.groups):
        group = passages[g * args.batch:(g + 1) * args.batch]
        for mode in (("alone", "batched") if g % 2 == 0 else ("batched", "alone")):
            run(mode, group)
    n = len(passages)
    rows_out = [{"mode": mode, "batch_docs": 1 if mode == "alone" else args.batch, "docs": n,
                 "s_per_doc": t[0] / n, "speedup_vs_alone": totals["alone"][0] / t[0],
                 "attempts": t[1], "failed_attempts": t[2], "incomplete_docs": t[3]} for mode, t in totals.items()]
    write_results("augment", rows_out, model=f"{args.model} (float32)", dtype="float32",
                  data={"corpus": "corpus/wiki_paragraphs.jsonl", "passages": [p.id for p in passages]},
                  notes=(f"The first {n} passages of the shared corpus, augmented alone and in batches of "
                         f"{args.batch} in the same process (order alternating per group); torch threads "
                         f"{args.threads}; 1 rewrite + 3 QA pairs, QA budget 96 tokens, 1 sampled retry."))
    print((RESULTS / "augment.md").read_text())


if __name__ == "__main__":
    main()
