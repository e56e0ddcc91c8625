"""Parametric RAG benchmark: offline cost per document, online cost and quality per method.

For the first N HotpotQA questions of ``../shared/data``: retrieve top-3 with BM25 over the
shared Wikipedia paragraphs, encode only those passages (PRAG augmentation + LoRA, on Ray
workers, resumable), train DyPRAG's translator on the resulting (document, adapter) pairs,
then answer every question with sr-rag, prag, prag-combine, dyprag and dyprag-combine through
the same pipeline, alternating the method order per question so ratios to sr-rag come from
the same run. Online answers are checkpointed to a JSONL file, so a killed run resumes.

    .venv/bin/python bench/parametric.py            # N=30
    .venv/bin/python bench/parametric.py --quick    # N=3
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED_DATA, write_results  # noqa: E402

METHODS = ["sr-rag", "prag", "prag-combine", "dyprag", "dyprag-combine"]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=30, help="questions (first N of hotpotqa.jsonl)")
    ap.add_argument("--quick", action="store_true", help="N=3, short answers")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="Ray actors for encoding (0 = in-process)")
    ap.add_argument("--qa-tokens", type=int, default=96, help="augmentation: token budget of the QA list")
    ap.add_argument("--retries", type=int, default=1, help="augmentation: extra attempts")
    ap.add_argument("--translator-lr", type=float, default=1e-4)
    ap.add_argument("--translator-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the driver (1: on a shared, oversubscribed CPU more threads spin)")
    ap.add_argument("--work", default=None, help="store/checkpoint folder (default $DYNAPRAG_CACHE/bench-parametric)")
    args = ap.parse_args()
    if args.quick:
        args.n = 3
    return args


def offline_row(case: str, entries: list[dict]) -> dict:
    """Offline cost per document from the store's manifest entries."""
    n = len(entries)
    return {"case": case, "docs": n,
            "augment_s_per_doc": sum(e["augment_seconds"] for e in entries) / n,
            "train_s_per_doc": sum(e["train"]["seconds"] for e in entries) / n,
            "offline_s_per_doc": sum(e["augment_seconds"] + e["train"]["seconds"] for e in entries) / n,
            "bytes_per_doc": sum(e["bytes"] for e in entries) / n,
            "incomplete_augmentations": sum(not e["augment_complete"] for e in entries),
            "augmentation_failed_attempts": sum(len(e["augmentation"]["failures"]) for e in entries),
            "train_final_loss_mean": sum(e["train"]["final_loss"] for e in entries) / n}


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from dynaprag.config import from_dict
    from dynaprag.eval.metrics import score_answer
    from dynaprag.lm import load_model
    from dynaprag.lm.prompts import PromptConfig
    from dynaprag.parametric.augment import AugmentConfig
    from dynaprag.parametric.encode import DocumentEncoder, EncodeConfig, encode_corpus
    from dynaprag.parametric.stores import open_store
    from dynaprag.parametric.translator import (TranslatorConfig, pairs_from_store, train_translator,
                                                translator_metadata)
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    qfile, corpus = SHARED_DATA / "questions" / "hotpotqa.jsonl", SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl"
    if not qfile.is_file():
        sys.exit(f"shared data not found at {SHARED_DATA}")
    work = Path(args.work or Path(os.environ["DYNAPRAG_CACHE"]) / "bench-parametric" / args.model)
    work.mkdir(parents=True, exist_ok=True)
    questions = [json.loads(line) for line in qfile.open()][: args.n]
    lm = load_model(args.model, dtype=args.dtype)
    retriever = build_retriever(RetrieverConfig(corpus=str(corpus)))
    docs = {}
    for q in questions:
        for hit in retriever.search_one(q["question"], args.k):
            docs.setdefault(hit.passage.content_hash, hit.passage)
    print(f"{len(questions)} questions retrieve {len(docs)} distinct passages", flush=True)

    # -- offline: augmentation + encoding -------------------------------------------------
    config = EncodeConfig(augment=AugmentConfig(max_new_tokens_qa=args.qa_tokens, max_retries=args.retries))
    store = open_store(work / "adapters", lm, config)
    t0 = time.perf_counter()
    log = lambda p, s: print(f"[encode] {s} {p.id} ({time.perf_counter() - t0:.0f} s)", flush=True)  # noqa: E731
    if args.workers > 0:
        from dynaprag.parametric.distributed import RayConfig, encode_with_ray

        encode_with_ray(args.model, args.dtype, lm.fingerprint, list(docs.values()), store, config,
                        RayConfig(workers=args.workers), log)
    else:
        encode_corpus(lm, list(docs.values()), store, config, log)
    entries = [store.entries()[h] for h in docs]
    # Documents encoded before augmentation was batched carry no "augment_batch": report both kinds.
    groups = {"offline-encoding": entries,
              "offline-encoding (one document at a time)": [e for e in entries if "augment_batch" not in e],
              "offline-encoding (batched augmentation)": [e for e in entries if "augment_batch" in e]}
    offline_rows = [offline_row(case, group) for case, group in groups.items() if group]
    if len(offline_rows) == 2:  # one kind only: the overall row says it all
        offline_rows = offline_rows[:1]

    # -- DyPRAG translator ------------------------------------------------------------------
    tag = f"n{args.n}-lr{args.translator_lr:g}-e{args.translator_epochs}"  # trained on this run's pairs
    tpath = work / f"translator-{tag}.safetensors"
    tcfg = TranslatorConfig(learning_rate=args.translator_lr, epochs=args.translator_epochs)
    curve_path = work / f"translator-{tag}-curve.json"
    if not tpath.is_file() or not curve_path.is_file():
        with DocumentEncoder(lm, config) as enc:
            init = enc.initial_adapter()
        pairs = pairs_from_store(lm, store, config)
        start = time.perf_counter()
        net, curve = train_translator(lm, pairs, config.scaling, config.targets, config.rank, tcfg, init_adapter=init,
                                      progress=lambda r: print(f"[translator] step {r['step']} loss {r['total_loss']:.3f}",
                                                               flush=True))
        seconds = time.perf_counter() - start
        net.save(tpath, translator_metadata(lm, tcfg, config.scaling, config.targets))
        curve_path.write_text(json.dumps({"seconds": seconds, "pairs": len(pairs), "curve": curve}))
    tinfo = json.loads(curve_path.read_text())
    curve = tinfo["curve"]
    translator_row = {"case": "translator-training", "pairs": tinfo["pairs"], "steps": len(curve),
                      "translator_train_s": tinfo["seconds"], "first_total_loss": curve[0]["total_loss"],
                      "last_total_loss": curve[-1]["total_loss"],
                      "first_half_mean_loss": sum(r["total_loss"] for r in curve[: len(curve) // 2]) / max(1, len(curve) // 2),
                      "second_half_mean_loss": sum(r["total_loss"] for r in curve[len(curve) // 2:]) / max(1, len(curve) - len(curve) // 2)}

    # -- online ---------------------------------------------------------------------------
    os.environ["DYNAPRAG_ADAPTERS"] = str(work / "adapters")
    os.environ["DYNAPRAG_TRANSLATOR"] = str(tpath)
    pcfg = from_dict(PipelineConfig, {"model": args.model, "dtype": args.dtype, "method": "sr-rag", "k": args.k,
                                      "max_new_tokens": args.max_new_tokens, "max_retrievals": 1})
    pcfg.prompt = PromptConfig(style="direct")
    pipe = Pipeline.from_config(pcfg, lm=lm, retriever=retriever)

    ckpt = work / f"online-n{args.n}-t{args.max_new_tokens}.jsonl"
    done = {}
    if ckpt.is_file():
        for line in ckpt.open():
            rec = json.loads(line)
            done[(rec["method"], rec["qid"])] = rec
    pipe.answer(questions[0]["question"], method="sr-rag")  # warm-up: prefix cache, lazy imports
    with ckpt.open("a") as out:
        for i, q in enumerate(questions):
            order = METHODS[i % len(METHODS):] + METHODS[: i % len(METHODS)]
            for method in order:
                if (method, q["id"]) in done:
                    continue
                start = time.perf_counter()
                with torch.inference_mode():
                    answer = pipe.answer(q["question"], method=method)
                seconds = time.perf_counter() - start
                rec = {"method": method, "qid": q["id"], "seconds": seconds, "short": answer.short,
                       **score_answer(answer.short, q["answers"])}
                done[(method, q["id"])] = rec
                out.write(json.dumps(rec) + "\n")
                out.flush()
                print(f"[online] q{i} {method}: {seconds:.1f} s {answer.short!r} f1={rec['f1']:.2f}", flush=True)
    rows = []
    qids = [q["id"] for q in questions]
    base = sum(done[("sr-rag", qid)]["seconds"] for qid in qids) / len(qids)
    for method in METHODS:
        recs = [done[(method, qid)] for qid in qids]
        s = sum(r["seconds"] for r in recs) / len(recs)
        rows.append({"case": method, "questions": len(recs), "s_per_question": s, "ratio_to_sr_rag": s / base,
                     "em": sum(r["em"] for r in recs) / len(recs), "f1": sum(r["f1"] for r in recs) / len(recs)})
    rows += [*offline_rows, translator_row]
    notes = (f"HotpotQA first {args.n} questions, BM25 top-{args.k} over wiki_paragraphs; "
             f"{len(docs)} passages encoded (rank 2, alpha 32, lr 3e-4, 1 epoch; augmentation 1 rewrite + 3 QA, "
             f"QA budget {args.qa_tokens} tokens, {args.retries} retry) on {args.workers} Ray workers; "
             f"driver torch threads {args.threads}; "
             f"translator hidden 32, lr {args.translator_lr}, {args.translator_epochs} epoch(s); "
             f"answers: direct prompt, {args.max_new_tokens} new tokens, greedy; model {args.model} {args.dtype}."
             + (" The store was filled by two runs: the 'one document at a time' rows by an earlier run (older "
                "code, heavier machine load, Ray workers at Ray's default nice 15), the 'batched' ones by this "
                "code; their seconds are not a side-by-side comparison (bench/augment.py is)."
                if len(offline_rows) > 1 else ""))
    write_results("parametric", rows, model=f"{args.model} ({args.dtype})",
                  data={"questions": str(qfile.relative_to(ROOT.parent)), "n_questions": len(questions),
                        "corpus": str(corpus.relative_to(ROOT.parent)), "passages_encoded": len(docs)},
                  notes=notes, extra={"translator_loss_curve": curve})
    print((ROOT / "bench" / "results" / "parametric.md").read_text())


if __name__ == "__main__":
    main()
