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
  ``f1_within_noise``).

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
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CHECKPOINTS, ROOT, SHARED_DATA, result_name, write_results  # noqa: E402

DATASETS = ("hotpotqa", "2wikimultihopqa")
METHODS = ("wo-rag", "sr-rag", "prag", "prag-combine", "dyprag", "dyprag-combine")
PARAMETRIC = ("prag", "prag-combine", "dyprag", "dyprag-combine")
EXTRA_CANDIDATES = 10  # PRAG retrieves top-k + 10 and keeps the first k usable passages


class BenchError(ValueError):
    """A benchmark setting or checkpoint that cannot work; the message names it and the fix."""


# -- the split -------------------------------------------------------------------------------

def split_questions(questions: Sequence, n: int, m: int, start: int | None = None,
                    where: str = "questions") -> tuple[list, list]:
    """(evaluation = questions 0..n-1, translator = questions start..start+m-1), disjoint by position and id."""
    start = n if start is None else start
    if n < 1 or m < 1:
        raise BenchError(f"{where}: --n and --translator-questions must be >= 1 (got {n}, {m})")
    if start < n:
        raise BenchError(f"{where}: --translator-start {start} overlaps the evaluation slice 0..{n - 1}; "
                         f"use --translator-start {n} or more")
    if len(questions) < start + m:
        raise BenchError(f"{where}: holds {len(questions)} questions, the split needs {start + m} "
                         f"(evaluation 0..{n - 1}, translator {start}..{start + m - 1}); lower --n or "
                         f"--translator-questions")
    evaluation, translator = list(questions[:n]), list(questions[start:start + m])
    shared = {q.id for q in evaluation} & {q.id for q in translator}
    if shared:
        raise BenchError(f"{where}: question id {sorted(shared)[0]!r} is in both the evaluation and the "
                         f"translator slice; the file repeats ids")
    return evaluation, translator


def translator_documents(kept: Mapping[str, Sequence[str]], evaluation_candidates: Iterable[str]
                         ) -> tuple[list[str], list[str]]:
    """(documents to train on, documents left out) from the translator questions' kept documents:
    each once, in order, without any document an evaluation question has among its candidates."""
    seen_by_eval = set(evaluation_candidates)
    docs: list[str] = []
    excluded: list[str] = []
    for hashes in kept.values():
        for h in hashes:
            if h in docs or h in excluded:
                continue
            (excluded if h in seen_by_eval else docs).append(h)
    return docs, excluded


def next_needed(ranked: Sequence[str], k: int, usable: Mapping[str, bool]) -> list[str]:
    """The candidates :func:`~dynaprag.parametric.augment.usable_first` would augment next, given
    what is known to be usable; [] once the question's selection is decided."""
    kept, pos = 0, 0
    while kept < k and pos < len(ranked):
        batch = list(ranked[pos: pos + k - kept])
        unknown = [h for h in batch if h not in usable]
        if unknown:
            return unknown
        pos += len(batch)
        kept += sum(bool(usable[h]) for h in batch)
    return []


# -- the checkpoint --------------------------------------------------------------------------

def settings_tag(settings: Mapping[str, Any]) -> str:
    """A short hash of everything an answer depends on (names the checkpoint file)."""
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_checkpoint(path: Path) -> dict[tuple[str, str, str], dict]:
    """Answers done so far, keyed by (method, dataset, question id); a missing file is an empty run.

    A last line cut short by a killed run is dropped (that answer is redone); a malformed line
    before it is an error naming the file and line.
    """
    done: dict[tuple[str, str, str], dict] = {}
    if not path.is_file():
        return done
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key = (rec["method"], rec["dataset"], rec["qid"])
        except (ValueError, KeyError, TypeError):
            if number == len(lines) or all(not rest.strip() for rest in lines[number:]):
                break  # the final write of a killed run
            raise BenchError(f"{path}:{number}: not an answer record (method, dataset, qid); delete the "
                             f"line or the file to redo those answers") from None
        done[key] = rec
    return done


def append_checkpoint(path: Path, rec: Mapping[str, Any]) -> None:
    """Append one answer as a line, synced before the next answer starts.

    A partial last line left by a killed run is cut off first (its answer was not counted as
    done, so it is being redone now), keeping every line of the file a whole record.
    """
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                fh.seek(0)
                data = fh.read()
                fh.truncate(data.rfind(b"\n") + 1)
        fh.write((json.dumps(dict(rec)) + "\n").encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def unfinished_datasets(splits: Mapping[str, tuple[Sequence, Sequence]], done: Mapping) -> list[str]:
    """Datasets some evaluation question of which lacks an answer of some method: no results yet."""
    return [d for d, (evaluation, _) in splits.items()
            if any((m, d, q.id) not in done for m in METHODS for q in evaluation)]


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
    ap.add_argument("--workers", type=int, default=2, help="Ray actors for encoding (0 = in this process)")
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
    args = ap.parse_args(argv)
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


# -- offline: candidates, selection, encoding ------------------------------------------------

class _Known:
    """What :func:`usable_first` reads of an augmentation: its passage and whether it is usable."""

    def __init__(self, passage, usable: bool):
        self.passage, self.usable = passage, usable


class _Decided:
    """An augmenter for :func:`usable_first` after every needed candidate is known (it is never called)."""

    def augment_many(self, passages):
        raise RuntimeError(f"usable_first asked for {len(passages)} unknown candidates after selection")


def select_passages(questions, candidates: Mapping[str, list], k: int, encode: Callable[[list], None],
                    status: Callable[[str], str], log=print) -> dict[str, tuple[list, list]]:
    """Per question, (kept hits, skipped hits) as PRAG's reference selects them.

    Round by round, every question's next candidates (:func:`next_needed`) are encoded as one
    batch (``encode``), then each question's selection is :func:`usable_first` over what is known.
    """
    from dynaprag.parametric.augment import usable_first

    usable: dict[str, bool] = {}
    for round_ in range(k + EXTRA_CANDIDATES + 1):
        need = {}
        for q in questions:
            for h in next_needed([hit.passage.content_hash for hit in candidates[q.id]], k, usable):
                need.setdefault(h, next(hit.passage for hit in candidates[q.id] if hit.passage.content_hash == h))
        if not need:
            break
        log(f"[select] round {round_ + 1}: {len(need)} candidate(s) to encode")
        encode(list(need.values()))
        for h in need:
            state = status(h)
            if state not in ("ok", "skipped"):
                raise BenchError(f"candidate {need[h].id}: adapter {state} after encoding; re-run to redo it")
            usable[h] = state == "ok"
    out = {}
    for q in questions:
        hits = {hit.passage.content_hash: hit for hit in candidates[q.id]}
        known = {h: _Known(hits[h].passage, usable[h]) for h in hits if h in usable}
        kept, skipped = usable_first(_Decided(), [hit.passage for hit in candidates[q.id]], k, known)
        out[q.id] = ([a.passage for a in kept], [a.passage for a in skipped])
    return out


def offline_row(dataset: str, case: str, entries: list[dict], skipped_by_question: list[int]) -> dict:
    """Offline cost per document from manifest entries (skipped passages cost augmentation only)."""
    trained = [e for e in entries if not e.get("skipped")]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"part": "offline", "case": case, "dataset": dataset, "docs": len(entries), "adapters": len(trained),
            "augment_s_per_doc": mean([e.get("augment_seconds", 0.0) for e in entries]),
            "train_s_per_doc": mean([e["train"]["seconds"] for e in trained]),
            "bytes_per_doc": mean([e["bytes"] for e in trained]),
            "skipped_passages": len(entries) - len(trained),
            "skipped_per_question": mean(skipped_by_question),
            "augmentation_failed_attempts": sum(len(e["augmentation"]["failures"]) for e in entries),
            "encode_dtypes": ",".join(sorted({e.get("model_dtype", "unrecorded") for e in entries}))}


def check_dtypes(entries: Mapping[str, Mapping], hashes: Iterable[str], dtype: str) -> None:
    """Refuse adapters made in another dtype than this run's (a store holds one per document,
    whatever dtype made it: :func:`dynaprag.parametric.encode.model_dtype`). Entries from before
    the dtype was recorded pass and show as 'unrecorded' in the offline rows."""
    for h in hashes:
        made = entries[h].get("model_dtype")
        if made not in (None, dtype):
            doc = entries[h].get("doc", {}).get("id", h[:12])
            raise BenchError(f"document {doc}: its adapter was encoded in {made}, this run is {dtype}; "
                             f"use another --checkpoints folder or --dtype {made}")


class _Subset:
    """The part of a store :func:`pairs_from_store` may read: only the translator's documents."""

    def __init__(self, store, hashes: Iterable[str]):
        self.store, self.hashes = store, set(hashes)

    def entries(self):
        return {h: e for h, e in self.store.entries().items() if h in self.hashes}

    def has(self, h):
        return self.store.has(h)

    def get(self, h):
        return self.store.get(h)


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


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    from filelock import FileLock

    torch.set_num_threads(args.threads)
    from dynaprag.config import to_dict
    from dynaprag.dynamic.loop import DynamicLoop, LoopConfig
    from dynaprag.eval.datasets import load_examples
    from dynaprag.eval.metrics import score_answer
    from dynaprag.files import atomic_write_json
    from dynaprag.lm import load_model
    from dynaprag.parametric.adapters import config_hash
    from dynaprag.parametric.encode import PragPromptBuilder, encode_corpus, model_dtype
    from dynaprag.parametric.stores import load_translator, open_store
    from dynaprag.parametric.translator import pairs_from_store, train_translator, translator_metadata
    from dynaprag.pipeline import Pipeline, PipelineConfig
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
    t0 = time.perf_counter()

    def encode(passages):
        log = lambda p, s: print(f"[encode] {s} {p.id} ({time.perf_counter() - t0:.0f} s)", flush=True)  # noqa: E731
        pending = [p for p in passages if store.status(p.content_hash) not in ("ok", "skipped")]
        if pending and args.answer_datasets != args.datasets:  # two such processes would encode side by side
            raise BenchError(f"{len(pending)} passage(s) are not encoded yet (e.g. {pending[0].id}); --answer-datasets "
                             f"is for answering once every adapter is in the store: run without it first")
        if args.workers > 0:
            from dynaprag.parametric.distributed import RayConfig, encode_with_ray

            encode_with_ray(args.model, args.dtype, lm.fingerprint, passages, store, config,
                            RayConfig(workers=args.workers), log)
        else:
            encode_corpus(lm, passages, store, config, log)

    # -- offline ------------------------------------------------------------------------
    selection, rows, eval_kept, translator_kept, eval_seen = {}, [], {}, {}, set()
    for d, (evaluation, translator) in splits.items():
        both = evaluation + translator
        candidates = {q.id: bm25.search_one(q.question, args.k + EXTRA_CANDIDATES) for q in both}
        chosen = select_passages(both, candidates, args.k, encode, store.status)
        entries = store.entries()
        check_dtypes(entries, [p.content_hash for q in both for p in chosen[q.id][0] + chosen[q.id][1]],
                     model_dtype(lm))
        for part, qs in (("evaluation", evaluation), ("translator", translator)):
            docs = {p.content_hash: entries[p.content_hash] for q in qs for p in chosen[q.id][0] + chosen[q.id][1]}
            rows.append(offline_row(d, f"offline-encoding ({part} questions)", list(docs.values()),
                                    [len(chosen[q.id][1]) for q in qs]))
        selection[d] = {q.id: {"part": "evaluation" if q in evaluation else "translator",
                               "kept": [p.id for p in chosen[q.id][0]], "skipped": [p.id for p in chosen[q.id][1]]}
                        for q in both}
        eval_kept[d] = {q.id: chosen[q.id][0] for q in evaluation}
        translator_kept.update({f"{d}/{q.id}": [p.content_hash for p in chosen[q.id][0]] for q in translator})
        eval_seen |= {hit.passage.content_hash for q in evaluation for hit in candidates[q.id]}

    # -- translator ---------------------------------------------------------------------
    docs, excluded = translator_documents(translator_kept, eval_seen)
    tcfg = args.translator_config
    first = args.n if args.translator_start is None else args.translator_start
    split = {"rule": "evaluation = questions 0..N-1; translator = documents kept for questions S..S+M-1 of the "
                     "same file, minus any document among an evaluation question's candidates",
             "datasets": {d: {"evaluation": f"0..{len(e) - 1}", "translator": f"{first}..{first + len(t) - 1}",
                              "evaluation_ids": [q.id for q in e], "translator_ids": [q.id for q in t]}
                          for d, (e, t) in splits.items()},
             "translator_documents": len(docs), "excluded_documents_seen_by_evaluation": len(excluded)}
    ttag = settings_tag({"docs": sorted(docs), "translator": to_dict(tcfg), "store": config_hash(config.store_config()),
                         "model": lm.fingerprint})
    tpath, cpath = work / f"translator-{ttag}.safetensors", work / f"translator-{ttag}-curve.json"
    with FileLock(str(tpath) + ".lock"):  # another process of this run waits for it, then loads it
        if not (tpath.is_file() and cpath.is_file()):
            pairs = pairs_from_store(lm, _Subset(store, docs), config)
            steps = len(pairs) * tcfg.epochs
            state = work / f"translator-{ttag}.state.safetensors"  # a killed training resumes from here
            torch.set_num_threads(args.translator_threads)
            net, curve = train_translator(
                lm, pairs, config.scaling, config.targets, config.rank, tcfg, state_path=state,
                progress=lambda r: print(f"[translator] step {r['step']}/{steps} loss {r['total_loss']:.3f} "
                                         f"({r['seconds']:.0f} s)", flush=True))
            torch.set_num_threads(args.threads)
            net.save(tpath, translator_metadata(lm, tcfg, config.scaling, config.targets))
            atomic_write_json(cpath, {"seconds": curve[-1]["seconds"], "pairs": len(pairs), "curve": curve,
                                      "threads": args.translator_threads})
            state.unlink(missing_ok=True)
    tinfo = json.loads(cpath.read_text(encoding="utf-8"))
    curve = tinfo["curve"]
    half = max(1, len(curve) // 2)
    rows.append({"part": "translator", "case": "translator-training", "dataset": "+".join(args.datasets),
                 "docs": tinfo["pairs"], "steps": len(curve), "translator_train_s": tinfo["seconds"],
                 "translator_s_per_step": tinfo["seconds"] / max(1, len(curve)), "translator_lr": tcfg.learning_rate,
                 "translator_threads": tinfo.get("threads", 1),
                 "first_total_loss": curve[0]["total_loss"], "last_total_loss": curve[-1]["total_loss"],
                 "first_half_mean_total_loss": sum(r["total_loss"] for r in curve[:half]) / half,
                 "second_half_mean_total_loss": sum(r["total_loss"] for r in curve[half:]) / max(1, len(curve) - half)})
    load_translator(tpath, lm)  # fail here, not in the middle of the answers

    # -- online -------------------------------------------------------------------------
    settings = {"model": lm.fingerprint, "dtype": args.dtype, "k": args.k, "max_new_tokens": args.max_new_tokens,
                "baseline_prompt": args.baseline_prompt, "store": config_hash(config.store_config()),
                "translator": ttag, "format": "parametric-bench-v2"}
    tag = settings_tag(settings)
    ckpts = {d: work / f"answers-{tag}.{d}.jsonl" for d in args.datasets}
    atomic_write_json(work / f"answers-{tag}.settings.json", settings)
    done = {key: rec for d in args.answer_datasets for key, rec in read_checkpoint(ckpts[d]).items()}
    prag_builder = PragPromptBuilder(lm.tokenizer, lm.chat_template, config.template())
    options = {m: {"store": str(work / "adapters"), "encode": to_dict(config), "on_missing": "context"}
               for m in ("prag", "prag-combine")}
    options.update({m: {"translator": str(tpath)} for m in ("dyprag", "dyprag-combine")})
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
    done = {key: rec for d in args.datasets for key, rec in read_checkpoint(ckpts[d]).items()}
    unfinished = unfinished_datasets(splits, done)
    if unfinished:  # another process is answering them; the last to finish writes the results
        print(f"answers for {', '.join(unfinished)} are not all in {work}: the process answering them writes "
              f"the results when it finishes (or rerun with --answer-datasets {','.join(unfinished)})")
        return
    online = [row for d, (evaluation, _) in splits.items() for row in online_rows(d, evaluation, done)]
    write_outputs(args, online + rows, splits, files, corpus, selection, split, curve, config, tcfg)


def online_rows(dataset: str, questions, done: Mapping) -> list[dict]:
    """One row per method: quality, time, ratio to sr-rag and paired differences from sr-rag."""
    from dynaprag.eval.stats import paired_comparisons

    qids = [q.id for q in questions]
    per = {m: [done[(m, dataset, qid)] for qid in qids] for m in METHODS}
    base_s = sum(r["seconds"] for r in per["sr-rag"]) / len(qids)
    rows = []
    for method, recs in per.items():
        row = {"part": "online", "case": method, "dataset": dataset, "questions": len(recs),
               **{metric: sum(r[metric] for r in recs) / len(recs) for metric in ("f1", "cover_em", "em")},
               "s_per_question": sum(r["seconds"] for r in recs) / len(recs)}
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


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:  # a setting or checkpoint that cannot work: one line, exit code 2
        raise SystemExit(print(f"error: {exc}", file=sys.stderr) or 2)
