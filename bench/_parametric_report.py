"""The results of ``bench/parametric.py``: one row per method and dataset, paired with sr-rag, and the notes.

The rows are written only once every method has answered every evaluation question of every
dataset, whichever process of the run finishes last (:func:`unfinished_datasets`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from _common import ROOT, write_results
from _parametric_offline import EXTRA_CANDIDATES

METHODS = ("wo-rag", "sr-rag", "prag", "prag-combine", "dyprag", "dyprag-combine")
PARAMETRIC = ("prag", "prag-combine", "dyprag", "dyprag-combine")


def unfinished_datasets(splits: Mapping[str, tuple[Sequence, Sequence]], done: Mapping) -> list[str]:
    """Datasets some evaluation question of which lacks an answer of some method: no results yet."""
    return [d for d, (evaluation, _) in splits.items()
            if any((m, d, q.id) not in done for m in METHODS for q in evaluation)]


def online_rows(dataset: str, questions, done: Mapping) -> list[dict]:
    """One row per method: quality, time, ratio to sr-rag and paired differences from sr-rag.

    The mean prompt and generated tokens say where the time goes: an answer's time grows with the
    tokens it generates, so a method that answers at length is slower for that reason alone."""
    from dynaprag.eval.stats import paired_comparisons

    qids = [q.id for q in questions]
    per = {m: [done[(m, dataset, qid)] for qid in qids] for m in METHODS}
    base_s = sum(r["seconds"] for r in per["sr-rag"]) / len(qids)
    rows = []
    for method, recs in per.items():
        row = {"part": "online", "case": method, "dataset": dataset, "questions": len(recs),
               **{metric: sum(r[metric] for r in recs) / len(recs) for metric in ("f1", "cover_em", "em")},
               "s_per_question": sum(r["seconds"] for r in recs) / len(recs),
               **{f"{t}_per_question": sum(r[t] for r in recs) / len(recs)
                  for t in ("prompt_tokens", "generated_tokens")}}
        row["ratio_to_sr_rag"] = row["s_per_question"] / base_s
        row["fell_back_to_context"] = sum(r.get("fell_back_to_context", 0) for r in recs)
        if method != "sr-rag":
            cmp = paired_comparisons({m: [r[m] for r in recs] for m in ("f1", "em")},
                                     {m: [r[m] for r in per["sr-rag"]] for m in ("f1", "em")})
            row.update(cmp["f1"].as_row("f1_"))
            row.update(cmp["em"].as_row("em_"))
        rows.append(row)
    return rows


def write_outputs(args, rows, splits, files, corpus, selection, split, curve, config, tcfg) -> None:
    """The results JSON + table (DESIGN.md convention) with the split, selection and loss curve."""
    from dynaprag.config import to_dict

    fallbacks = (" TINY-MODEL FALLBACKS (not PRAG): failed augmentations trained on plain text, lenient "
                 "augmentation prompts." if args.tiny_fallbacks else "")
    if tcfg.kl_reduction != "padded-sum":
        fallbacks += (f" TRANSLATOR KL NOT THE REFERENCE'S: {tcfg.kl_reduction} over the sample's real tokens; the "
                      f"reference sums it over the sample padded to {tcfg.kl_pad_to} positions (docs/parametric.md "
                      f"gives the measured cost and the pads' share of the KL).")
    per = ", ".join(f"{d} {v['evaluation']} / {v['translator']}" for d, v in split["datasets"].items())
    notes = (f"Questions (evaluation / translator training): {per}. Translator trained on "
             f"{split['translator_documents']} documents kept for the translator questions "
             f"({split['excluded_documents_seen_by_evaluation']} left out: an evaluation question could retrieve "
             f"them), lr {tcfg.learning_rate:g}, {tcfg.epochs} epoch(s), KL {tcfg.kl_reduction}, delta "
             f"{tcfg.delta_scale}{' (reference conventions)' if not args.translator_set else ''}. BM25 top-"
             f"{args.k + EXTRA_CANDIDATES} over wiki_paragraphs, the first {args.k} usable kept (PRAG's selection; "
             f"every method sees them). PRAG: rank {config.rank}, alpha {config.alpha:g}, lr {config.learning_rate:g}, "
             f"{config.epochs} epoch(s), with_cot template; augmentation QA lists of up to "
             f"{config.augment.max_new_tokens_qa} tokens, {config.augment.max_retries} retries (PRAG: 512, up to 100); "
             f"encoding on {args.workers or 'no'} Ray worker(s). Answers: "
             f"{args.max_new_tokens} new tokens, greedy; parametric methods in PRAG's template, wo-rag/sr-rag in "
             f"{'the same' if args.baseline_prompt == 'prag' else 'dynaprag’s own prompt'}; ratio_to_sr_rag and "
             f"f1_/em_ paired columns (bootstrap 95 % interval, sign-flip p) against sr-rag on the same questions."
             + fallbacks)
    data = {"corpus": str(corpus.relative_to(ROOT.parent)),
            "questions": {d: str(p.relative_to(ROOT.parent)) for d, p in files.items()},
            "n_questions": {d: len(e) for d, (e, _) in splits.items()},
            "n_translator_questions": {d: len(t) for d, (_, t) in splits.items()}}
    extra = {"translator_split": split, "selection": selection, "encode_config": to_dict(config),
             "translator_config": to_dict(tcfg),
             "translator_loss_curve": [{k: r[k] for k in ("step", "seconds", "total_loss", "lm_loss", "kl_loss",
                                                          "mse_loss") if k in r} for r in curve]}
    path = write_results(args.name, rows, model=f"{args.model} ({args.dtype})", data=data, notes=notes, extra=extra,
                         results_dir=args.results, group_by="part")
    print(path.with_suffix(".md").read_text(encoding="utf-8"))
