"""Parametric RAG benchmark (issue 14): PRAG and DyPRAG against wo-rag and sr-rag, with no evaluation leak.

Per dataset (``--datasets``, default HotpotQA and 2WikiMultihopQA from ``../shared/data``):

* **Split.** Evaluation = questions 0..N-1 of the file (``--n``, default 25); the DyPRAG
  translator trains on the documents of questions S..S+M-1 (``--translator-questions M``,
  default 25, ``--translator-start S`` default N) of the same file, minus any document that an
  evaluation question has among its candidates. No evaluated question, nor any passage an
  evaluated question can see, enters the translator: the reference trains on separate
  alignment data. The split is written to the JSON (``translator_split``) and the table notes.
* **Offline (PRAG).** BM25 over the shared Wikipedia paragraphs retrieves top-k + 10
  candidates per question (k = 3); each question keeps the first k whose augmentation parses
  (:func:`dynaprag.parametric.augment.usable_first`, the reference's selection) and the skipped
  passages are recorded per question. Candidates are encoded round by round, all questions'
  next candidates as one batch (on ``--workers`` Ray actors, 0 = in this process), into a
  resumable adapter store; reported: augmentation s/doc, training s/doc, bytes/doc, skipped
  passages.
* **Translator (DyPRAG).** Trained once per run on the PRAG adapters of the translator split of
  every dataset, at lr 1e-5 (``--translator-lr``) with the reference's conventions
  (:class:`~dynaprag.parametric.translator.TranslatorConfig` defaults); reported: time and the
  loss curve. Kept under ``bench/checkpoints/`` keyed by its data and settings; a killed training
  resumes from its saved state (:mod:`dynaprag.parametric.training_state`).
* **Online.** wo-rag, sr-rag, prag, prag-combine, dyprag and dyprag-combine answer the same
  questions in this process, the method order rotated per question, each with one retrieval
  that returns the question's kept passages (the reference feeds every method the same
  passages). Prompts: prag, prag-combine, dyprag and dyprag-combine answer in PRAG's template
  (:class:`~dynaprag.parametric.encode.PragPromptBuilder`: the one the adapters were trained on,
  ``--with_cot`` form, as both references' inference code); wo-rag and sr-rag use the same
  template by default (the PRAG reference's "icl" baseline does), or dynaprag's own prompt with
  ``--baseline-prompt dynaprag``. Rows give F1, cover EM, EM, s/question and its ratio to
  sr-rag on the same questions, and paired comparisons with sr-rag
  (:func:`dynaprag.eval.stats.paired_comparison`: ``f1_diff``, ``f1_diff_ci_low``, ...,
  ``f1_within_noise``). Rows of ``online, fixed length`` time prag and sr-rag answering the first
  ``--overhead-questions`` questions with exactly ``--overhead-tokens`` tokens each, alternately,
  so their ratio is PRAG's online cost at equal answer length (``_parametric_overhead.py``).

Resumable: every answer is appended to
``bench/checkpoints/<result name>/answers-<settings>.<dataset>.jsonl`` keyed by (method, dataset,
question id), so a rerun skips what is done; adapters and the translator are kept there too.
``--answer-datasets`` answers only some datasets, so two one-thread processes can share the
online part (one dataset each; each dataset's timing ratios stay within one process): the
translator is trained once under a lock, each dataset has its own answer file, and whichever
process finishes last writes the results. Results go atomically to
``bench/results/parametric[.<model>].json`` and ``.md`` (``--quick``: ``parametric_quick[...]``;
``--results DIR`` writes elsewhere).

    .venv/bin/python bench/parametric.py                 # qwen2.5-coder-0.5b, 25+25 per dataset (hours)
    .venv/bin/python bench/parametric.py --quick --results /tmp/pq   # smoke: smollm2-135m, 2+2 HotpotQA
    # once the adapters are encoded (nothing left for Ray), the online part on two processes:
    .venv/bin/python bench/parametric.py --answer-datasets hotpotqa &
    .venv/bin/python bench/parametric.py --answer-datasets 2wikimultihopqa
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CHECKPOINTS, SHARED_DATA, result_name  # noqa: E402
from _common import parse_args as parse_common_args  # noqa: E402
from _parametric_offline import (  # noqa: E402
    BenchError, encode_and_select, settings_tag, split_questions, trained_translator,
)
from _parametric_report import METHODS, PARAMETRIC, online_rows, unfinished_datasets, write_outputs  # noqa: E402
from _parametric_overhead import fixed_length_rows  # noqa: E402

DATASETS = ("hotpotqa", "2wikimultihopqa")


# -- the checkpoint --------------------------------------------------------------------------

def read_checkpoint(path: Path, *, repair: bool = False) -> dict[tuple[str, str, str], dict]:
    """Answers done so far, keyed by (method, dataset, question id); a missing file is an empty run.

    A last line cut short by a killed run is dropped (that answer is redone; ``repair`` cuts it
    off the file before this process appends); a bad line before it is an error naming the file
    and line (:func:`dynaprag.jsonl_log.read_jsonl`).
    """
    from dynaprag.jsonl_log import CorruptLogError, read_jsonl

    try:
        records = read_jsonl(path, repair=repair, require=("method", "dataset", "qid"))
    except CorruptLogError as exc:
        raise BenchError(str(exc)) from None
    return {(rec["method"], rec["dataset"], rec["qid"]): rec for rec in records}


def append_checkpoint(path: Path, rec: Mapping[str, Any]) -> None:
    """Append one answer as a line, synced before the next answer starts (the log was read with ``repair``)."""
    from dynaprag.jsonl_log import append_jsonl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        append_jsonl(fh, rec)


def rotated(methods: Sequence[str], i: int) -> list[str]:
    """The method order of question ``i``: rotated by one per question, so no method always runs first."""
    j = i % len(methods)
    return list(methods[j:]) + list(methods[:j])


# -- command line ----------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated, of " + ", ".join(DATASETS))
    ap.add_argument("--n", type=int, default=25, help="evaluation questions per dataset (the first N)")
    ap.add_argument("--translator-questions", type=int, default=25,
                    help="translator training questions per dataset (M, after the evaluation slice)")
    ap.add_argument("--translator-start", type=int, default=None, help="first translator question (default N)")
    ap.add_argument("--translator-lr", type=float, default=1e-5, help="translator AdamW lr (DyPRAG: 1e-5)")
    ap.add_argument("--translator-epochs", type=int, default=1)
    ap.add_argument("--translator-set", action="append", default=[], metavar="KEY=VALUE",
                    help="other TranslatorConfig overrides, e.g. kl_reduction=sum (the reference's padded-sum KL "
                         "costs two 3000-token forwards per step); recorded in the JSON and the translator's key")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--dtype", default="float32", help="float32 (the references) | bfloat16")
    ap.add_argument("--answer-datasets", default=None,
                    help="answer only these of --datasets (default all): run one process per dataset to share the "
                         "online part; the last to finish writes the results")
    ap.add_argument("--k", type=int, default=3, help="passages per question (PRAG/DyPRAG: 3)")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="answer budget (PRAG configs: 128)")
    ap.add_argument("--baseline-prompt", choices=("prag", "dynaprag"), default="prag",
                    help="wo-rag/sr-rag prompt: PRAG's template (the reference's icl) or dynaprag's own")
    ap.add_argument("--overhead-questions", type=int, default=10,
                    help="per dataset, questions on which prag and sr-rag also answer with exactly "
                         "--overhead-tokens tokens, for PRAG's online cost at equal length (0 = skip)")
    ap.add_argument("--overhead-tokens", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="Ray actors for encoding (0 = in this process)")
    ap.add_argument("--ray-address", default=None, help="a running Ray cluster for the encoding (default: a local one)")
    ap.add_argument("--ray-timeout", type=int, default=120, help="seconds a local Ray cluster may take to start")
    ap.add_argument("--qa-retries", type=int, default=None,
                    help="extra QA attempts after an unparsable list (default: AugmentConfig's 2; PRAG: up to 100). "
                         "More retries keep more top-ranked passages, as the reference does, at a similar cost per kept "
                         "passage; a known-unusable passage in the store is not retried")
    ap.add_argument("--qa-tokens", type=int, default=None,
                    help="token budget of a QA list (default: AugmentConfig's 256; PRAG: 512)")
    ap.add_argument("--tiny-fallbacks", action="store_true",
                    help="for models that cannot write PRAG's QA JSON: failed_augmentation=plain-text, lenient "
                         "prompts, greedy first attempt, short budgets (not PRAG)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    ap.add_argument("--translator-threads", type=int, default=None,
                    help="torch threads while the translator trains (default --threads; the other process of a "
                         "two-process run waits for it, so 2 uses both cores)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: smollm2-135m, HotpotQA, --n 2 --translator-questions 2, tiny fallbacks, "
                         "32 tokens, in-process encoding; results named parametric_quick")
    ap.add_argument("--checkpoints", default=None, help="folder of store, translator, answers "
                                                        "(default bench/checkpoints/<result name>)")
    ap.add_argument("--results", default=None, help="results folder (default bench/results)")
    args = parse_common_args(ap, argv)  # adds --note (run conditions) for write_results
    if args.quick:
        args.model, args.datasets, args.n, args.translator_questions = "smollm2-135m", "hotpotqa", 2, 2
        args.tiny_fallbacks, args.max_new_tokens, args.workers = True, 32, 0
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown or not args.datasets:
        ap.error(f"--datasets: {unknown[0] if unknown else '(none)'} is not one of {', '.join(DATASETS)}")
    args.translator_threads = args.translator_threads or args.threads
    args.answer_datasets = args.datasets if args.answer_datasets is None else \
        [d.strip() for d in args.answer_datasets.split(",") if d.strip()]
    outside = [d for d in args.answer_datasets if d not in args.datasets]
    if outside or not args.answer_datasets:
        ap.error(f"--answer-datasets: {outside[0] if outside else '(none)'} is not one of --datasets "
                 f"({', '.join(args.datasets)})")
    args.name = result_name("parametric_quick" if args.quick else "parametric", args.model)
    try:
        args.translator_config = translator_config(args)
    except ValueError as exc:  # ConfigError included: before any model loads
        ap.error(f"--translator-set/--translator-lr: {exc}")
    return args


def translator_config(args):
    """DyPRAG's translator settings: the reference's, at ``--translator-lr``, with ``--translator-set``."""
    from dynaprag.config import apply_overrides
    from dynaprag.parametric.translator import TranslatorConfig

    return apply_overrides(TranslatorConfig(learning_rate=args.translator_lr, epochs=args.translator_epochs),
                           args.translator_set)


def encode_config(args):
    """PRAG's encoding settings (the reference's), or the tiny-model fallbacks (said in the notes)."""
    from dynaprag.parametric.augment import AugmentConfig
    from dynaprag.parametric.encode import EncodeConfig

    if args.tiny_fallbacks:
        return EncodeConfig(failed_augmentation="plain-text", augment=AugmentConfig(
            prompts="lenient", greedy_first=True, max_new_tokens_rewrite=24, max_new_tokens_qa=48, max_retries=0))
    knobs = {k: v for k, v in (("max_retries", args.qa_retries), ("max_new_tokens_qa", args.qa_tokens)) if v is not None}
    return EncodeConfig(augment=AugmentConfig(**knobs))


# -- online ----------------------------------------------------------------------------------

def fixed_retriever(kept: Mapping[str, list], questions):
    """A retriever returning each question's kept passages for its question (and refusing any other query)."""
    from dynaprag.retrieval.base import Hit, Retriever, check_k

    by_text = {q.question: kept[q.id] for q in questions}

    class Kept(Retriever):
        name = "bench-kept-passages"

        def search(self, queries, k):
            check_k(k)
            missing = [q for q in queries if q not in by_text]
            if missing:
                raise BenchError(f"query {missing[0]!r} is not a benchmark question: only single retrieval "
                                 f"with the question is measured here")
            return [[Hit(p, 1.0) for p in by_text[q][:k]] for q in queries]

    return Kept()


def answer_questions(args, work: Path, lm, config, splits, eval_kept, translator) -> dict[str, Path]:
    """Every method on every evaluation question of ``--answer-datasets`` not answered yet, each answer
    appended to its dataset's log as it finishes; returns the logs of all datasets."""
    import torch

    from dynaprag.config import to_dict
    from dynaprag.dynamic.loop import DynamicLoop, LoopConfig
    from dynaprag.eval.metrics import score_answer
    from dynaprag.files import atomic_write_json
    from dynaprag.parametric.adapters import config_hash
    from dynaprag.parametric.encode import PragPromptBuilder
    from dynaprag.pipeline import Pipeline, PipelineConfig

    settings = {"model": lm.fingerprint, "dtype": args.dtype, "k": args.k, "max_new_tokens": args.max_new_tokens,
                "baseline_prompt": args.baseline_prompt, "store": config_hash(config.store_config()),
                "translator": translator.tag, "format": "parametric-bench-v2"}
    tag = settings_tag(settings)
    ckpts = {d: work / f"answers-{tag}.{d}.jsonl" for d in args.datasets}
    atomic_write_json(work / f"answers-{tag}.settings.json", settings)
    done = {key: rec for d in args.answer_datasets for key, rec in read_checkpoint(ckpts[d], repair=True).items()}
    prag_builder = PragPromptBuilder(lm.tokenizer, lm.chat_template, config.template())
    options = {m: {"store": str(work / "adapters"), "encode": to_dict(config), "on_missing": "context"}
               for m in ("prag", "prag-combine")}
    options.update({m: {"translator": str(translator.path)} for m in ("dyprag", "dyprag-combine")})
    prefixes: dict[int, Any] = {}
    for d in args.answer_datasets:
        evaluation = splits[d][0]
        pipe = Pipeline(PipelineConfig(model=args.model, dtype=args.dtype, method="sr-rag", k=args.k,
                                       max_new_tokens=args.max_new_tokens, max_retrievals=1),
                        lm, fixed_retriever(eval_kept[d], evaluation))
        for i, q in enumerate(evaluation):
            for method in rotated(METHODS, i):
                if (method, d, q.id) in done:
                    continue
                builder = pipe.builder() if method not in PARAMETRIC and args.baseline_prompt == "dynaprag" \
                    else prag_builder
                resolved = pipe.method(method, options.get(method))
                resolved.injector.bind(pipe.generator)
                if id(builder) not in prefixes:
                    prefixes[id(builder)] = pipe.generator.prefix(builder.prefix_ids)
                loop = DynamicLoop(pipe.generator, builder, pipe.retriever, resolved,
                                   LoopConfig(k=args.k, max_new_tokens=args.max_new_tokens, max_retrievals=1),
                                   prefix=lambda b=builder: prefixes[id(b)])
                start = time.perf_counter()
                with torch.inference_mode():
                    answer = loop.run(q.question)
                rec = {"method": method, "dataset": d, "qid": q.id, "seconds": time.perf_counter() - start,
                       "short": answer.short, "text": answer.text, "golds": list(q.answers),
                       "passages": [p.id for p in eval_kept[d][q.id]], "notes": answer.trace.notes,
                       "fell_back_to_context": sum("fell back to in-context" in n for n in answer.trace.notes),
                       "prompt_tokens": answer.trace.prompt_tokens, "generated_tokens": answer.trace.generated_tokens,
                       **score_answer(answer.short, list(q.answers))}
                append_checkpoint(ckpts[d], rec)
                done[(method, d, q.id)] = rec
                print(f"[{d} q{i}] {method}: {rec['seconds']:.1f} s {answer.short!r} f1={rec['f1']:.2f}", flush=True)
    return ckpts


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from dynaprag.eval.datasets import load_examples
    from dynaprag.lm import load_model
    from dynaprag.parametric.stores import load_translator, open_store
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    work = Path(args.checkpoints) if args.checkpoints else CHECKPOINTS / args.name
    work.mkdir(parents=True, exist_ok=True)
    corpus = SHARED_DATA / "corpus" / "wiki_paragraphs.jsonl"
    files = {d: SHARED_DATA / "questions" / f"{d}.jsonl" for d in args.datasets}
    for path in [corpus, *files.values()]:
        if not path.is_file():
            raise SystemExit(f"error: {path} not found: the benchmark reads the shared data in {SHARED_DATA}")
    splits = {d: split_questions(load_examples(p, dataset=d), args.n, args.translator_questions,
                                 args.translator_start, str(p)) for d, p in files.items()}
    lm = load_model(args.model, dtype=args.dtype)
    bm25 = build_retriever(RetrieverConfig(corpus=str(corpus)))
    config = encode_config(args)
    store = open_store(work / "adapters", lm, config)
    offline = encode_and_select(args, lm, bm25, store, config, splits)
    translator = trained_translator(args, work, lm, store, config, splits, offline)
    load_translator(translator.path, lm)  # fail here, not in the middle of the answers
    ckpts = answer_questions(args, work, lm, config, splits, offline.eval_kept, translator)
    done = {key: rec for d in args.datasets for key, rec in read_checkpoint(ckpts[d]).items()}
    unfinished = unfinished_datasets(splits, done)
    if unfinished:  # another process is answering them; the last to finish writes the results
        print(f"answers for {', '.join(unfinished)} are not all in {work}: the process answering them writes "
              f"the results when it finishes (or rerun with --answer-datasets {','.join(unfinished)})")
        return
    online = [row for d, (evaluation, _) in splits.items() for row in online_rows(d, evaluation, done)]
    if args.overhead_questions > 0:
        from dynaprag.parametric.encode import PragPromptBuilder

        print(f"[overhead] prag and sr-rag at {args.overhead_tokens} tokens on {args.overhead_questions} "
              f"question(s) per dataset", flush=True)
        online += fixed_length_rows(lm, store, config.scaling, PragPromptBuilder(lm.tokenizer, lm.chat_template,
                                                                                 config.template()),
                                    offline.eval_kept, {d: e for d, (e, _) in splits.items()},
                                    args.overhead_questions, args.overhead_tokens)
    write_outputs(args, online + offline.rows + [translator.row], splits, files, corpus, offline.selection,
                  translator.split, translator.curve, config, args.translator_config)


if __name__ == "__main__":
    from dynaprag.cluster import RayStartError

    try:
        main()
    except (BenchError, RayStartError) as exc:  # a setting, checkpoint or cluster that cannot work: one line, exit 2
        raise SystemExit(print(f"error: {exc}", file=sys.stderr) or 2)
