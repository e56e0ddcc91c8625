"""The offline half of ``bench/parametric.py``: the split, PRAG's selection and encoding, DyPRAG's translator.

Everything here happens before the first answer and is kept in the run's checkpoint folder
(the adapter store, the translator and its loss curve), so a rerun reuses it. The split keeps
every evaluated question, and every passage such a question can retrieve, out of the
translator's training (issue 14).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

EXTRA_CANDIDATES = 10  # PRAG retrieves top-k + 10 and keeps the first k usable passages


class BenchError(ValueError):
    """A benchmark setting or checkpoint that cannot work; the message names it and the fix."""


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


def settings_tag(settings: Mapping[str, Any]) -> str:
    """A short hash of everything an answer depends on (names the checkpoint file)."""
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True, default=str).encode()).hexdigest()[:12]


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


class StoreSubset:
    """The part of a store :func:`pairs_from_store` may read: only the translator's documents."""

    def __init__(self, store, hashes: Iterable[str]):
        self.store, self.hashes = store, set(hashes)

    def entries(self):
        return {h: e for h, e in self.store.entries().items() if h in self.hashes}

    def has(self, h):
        return self.store.has(h)

    def get(self, h):
        return self.store.get(h)


@dataclass
class Offline:
    """What the encoding hands on: the rows of its cost, and per dataset which passages each question keeps."""

    rows: list[dict]
    selection: dict[str, dict[str, dict]]  # dataset -> question id -> part, kept and skipped passage ids
    eval_kept: dict[str, dict[str, list]]  # dataset -> evaluation question id -> kept passages
    translator_kept: dict[str, list[str]]  # "dataset/question id" -> kept content hashes
    eval_seen: set[str]  # content hashes of every candidate of an evaluation question


def encode_and_select(args, lm, bm25, store, config, splits: Mapping[str, tuple[list, list]]) -> Offline:
    """Retrieve each question's candidates, encode them round by round and keep PRAG's selection."""
    from dynaprag.parametric.encode import encode_corpus, model_dtype

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
                            RayConfig(address=args.ray_address, workers=args.workers,
                                      startup_timeout_s=args.ray_timeout), log)
        else:
            encode_corpus(lm, passages, store, config, log)

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
    return Offline(rows, selection, eval_kept, translator_kept, eval_seen)


@dataclass
class Translator:
    """The trained translator of a run: its file, its key, the split it was trained on, its loss curve and row."""

    path: Path
    tag: str
    split: dict[str, Any]
    curve: list[dict]
    row: dict[str, Any]


def trained_translator(args, work: Path, lm, store, config, splits: Mapping[str, tuple[list, list]],
                       offline: Offline) -> Translator:
    """DyPRAG's translator on the translator split's adapters: trained once under a lock (a second
    process of the run waits, then reads it), resumed from its saved state after a kill."""
    import torch
    from filelock import FileLock

    from dynaprag.config import to_dict
    from dynaprag.files import atomic_write_json
    from dynaprag.parametric.adapters import config_hash
    from dynaprag.parametric.translator import pairs_from_store, train_translator, translator_metadata

    docs, excluded = translator_documents(offline.translator_kept, offline.eval_seen)
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
            pairs = pairs_from_store(lm, StoreSubset(store, docs), config)
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
    row = {"part": "translator", "case": "translator-training", "dataset": "+".join(args.datasets),
           "docs": tinfo["pairs"], "steps": len(curve), "translator_train_s": tinfo["seconds"],
           "translator_s_per_step": tinfo["seconds"] / max(1, len(curve)), "translator_lr": tcfg.learning_rate,
           "translator_threads": tinfo.get("threads", 1),
           "first_total_loss": curve[0]["total_loss"], "last_total_loss": curve[-1]["total_loss"],
           "first_half_mean_total_loss": sum(r["total_loss"] for r in curve[:half]) / half,
           "second_half_mean_total_loss": sum(r["total_loss"] for r in curve[half:]) / max(1, len(curve) - half)}
    return Translator(tpath, ttag, split, curve, row)
