"""Parametric injectors: PRAG (adapters from the store) and DyPRAG (adapters from the translator).

Each turns the retrieved passages into a weight change applied through forward hooks on the
FFN projections (:mod:`dynaprag.parametric.lora`), optionally with the passages also in context
("-combine" variants, PRAG §4 "PRAG Combine" / DyPRAG-Combine). They plug into the same
decoding loop as in-context injection, so any trigger can drive them (e.g. DRAGIN's RIND with
DyPRAG's injector: ``PipelineConfig(method="dragin", injector="dyprag")``).

Every knob has a usable default: the store and translator locations are those of
:mod:`dynaprag.parametric.stores` (what ``dynaprag encode`` and ``dynaprag translator train``
write by default), loaded once per process and shared. They live in the injection layer,
above :mod:`dynaprag.parametric`, whose stores, encoder and translator they use.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

from dynaprag.corpus import Passage
from dynaprag.inject.base import INJECTORS, Injection, Injector
from dynaprag.parametric.adapters import OK, SKIPPED, AdapterStore, AdapterStoreError
from dynaprag.parametric.encode import EncodeConfig, EncodeReport, PragPromptBuilder, encode_many, encoding_session
from dynaprag.parametric.lora import LoraInjection, combine, suspended
from dynaprag.parametric.stores import default_store_root, default_translator_path, load_translator, open_store


@dataclass
class PragSelection:
    """What :meth:`PragInjector.adapters_for` made of the candidates, in retrieval order."""

    adapters: list[dict] = field(default_factory=list)  # of the used passages that have one
    used: list[Passage] = field(default_factory=list)  # by adapter or, without one, in context
    fallback: list[Passage] = field(default_factory=list)  # used passages put in context instead
    skipped: list[Passage] = field(default_factory=list)  # augmentation never parsed: not used
    notes: list[str] = field(default_factory=list)


@dataclass
class PragInjector(Injector):
    """PRAG: sum the retrieved documents' LoRAs (one rank k·r adapter) and answer without context."""

    may_change_weights: ClassVar[bool] = True
    #: PRAG retrieves top-k + 10 and uses the first k passages whose augmentation parses, so a
    #: skipped passage is replaced by the next retrieved one (:meth:`adapters_for`)
    extra_candidates: ClassVar[int] = 10

    store: str | None = field(default=None, metadata={"help": "adapter store root; None = default_store_root()"})
    on_missing: str = field(default="encode", metadata={
        "help": "a retrieved document without an adapter: encode it now, or put it in context"})
    with_context: bool = field(default=False, metadata={"help": "also put the passages in context (PRAG-Combine)"})
    encode: EncodeConfig = field(default_factory=EncodeConfig, metadata={"help": "LoRA/training settings (store key)"})

    name = "prag"

    def __post_init__(self) -> None:
        if self.on_missing not in ("encode", "context"):
            raise ValueError(f"on_missing must be 'encode' or 'context', not {self.on_missing!r}")
        self.lm = None

    def bind(self, generator) -> None:
        self.lm = generator.lm

    def prompt_builder(self, tokenizer, chat: bool) -> PragPromptBuilder:
        """The prompt the adapters were trained with (PRAG answers in the training template)."""
        return PragPromptBuilder(tokenizer, chat, self.encode.template())

    def _store(self) -> AdapterStore:
        return open_store(self.store or default_store_root(), self.lm, self.encode)

    def adapters_for(self, passages: Sequence[Passage], use: int | None = None) -> PragSelection:
        """Walk the candidates in retrieval order until ``use`` of them are usable (None: all).

        A passage whose augmentation failed is skipped, as PRAG skips it (neither weights nor
        context), and the next candidate takes its place: the loop retrieves
        ``extra_candidates`` beyond k for this, as the reference retrieves top-k + 10. A passage
        whose adapter is not finished (never encoded, file missing, or damaged: see
        :meth:`AdapterStore.status`) is encoded now or put in context, per ``on_missing``, and
        counts as used either way; the note says which and why, naming the file and manifest
        entry of a damaged adapter.

        Encoding goes in rounds, only as far as needed: the first ``use`` candidates, then as
        many more as were skipped, and so on (each round's missing documents augment as one
        batch), so a spare candidate is encoded only when a skip calls for it. Candidates after
        the first ``use`` usable ones are neither encoded nor used. Fewer than ``use`` usable
        passages among all candidates leave the answer with fewer documents, and a note says so.
        """
        store, selection = self._store(), PragSelection()
        want = len(passages) if use is None else max(0, use)
        seen = 0
        while len(selection.used) < want and seen < len(passages):
            batch = list(passages[seen: seen + want - len(selection.used)])
            seen += len(batch)
            status = self._prepare(store, batch, selection.notes)
            for passage in batch:
                self._take(store, passage, status, selection)
        if len(selection.used) < want and use is not None:
            selection.notes.append(f"{len(selection.used)} of {want} passages usable among "
                                   f"{len(passages)} candidates")
        return selection

    def _prepare(self, store: AdapterStore, batch: list[Passage], notes: list[str]) -> dict[str, str]:
        """Store status per content hash of ``batch``, after encoding its unfinished documents (``on_missing="encode"``)."""
        entries = store.entries()
        status = {p.content_hash: store.status(p.content_hash, entries.get(p.content_hash)) for p in batch}
        todo = list({p.content_hash: p for p in batch if status[p.content_hash] not in (OK, SKIPPED)}.values())
        for passage in todo:
            store.forget(passage.content_hash)
        if todo and self.on_missing == "encode":  # the missing documents augment as one batch
            start = time.perf_counter()
            with suspended(), encoding_session(self.lm, self.encode) as (encoder, augmenter):
                for passage, (adapter, info) in zip(todo, encode_many(self.lm, todo, self.encode, encoder,
                                                                      augmenter)):
                    EncodeReport().record(store, passage.content_hash, adapter, info)
            took = f"({time.perf_counter() - start:.1f} s for {len(todo)} document(s))"
            notes += [f"doc {p.id}: {self._why(store, p, status[p.content_hash])}, "
                      f"{'encoded on demand' if status[p.content_hash] == 'not encoded' else 're-encoded'} {took}"
                      for p in todo]
        return status

    def _take(self, store: AdapterStore, passage: Passage, status: dict[str, str], selection: PragSelection) -> None:
        """File one prepared candidate as skipped, used with its adapter, or used in context."""
        if store.status(passage.content_hash) == SKIPPED:
            selection.skipped.append(passage)
            selection.notes.append(f"doc {passage.id}: skipped, its augmentation never gave a usable QA list "
                                   f"(PRAG does not use such a passage)")
            return
        selection.used.append(passage)
        try:
            adapter = store.get(passage.content_hash) if store.has(passage.content_hash) else None
        except (AdapterStoreError, KeyError) as exc:  # changed on disk since it was checked
            adapter = None
            status[passage.content_hash] = str(exc)
        if adapter is not None:
            selection.adapters.append(adapter)
            return
        selection.fallback.append(passage)
        selection.notes.append(f"doc {passage.id}: {self._why(store, passage, status[passage.content_hash])}, "
                               f"fell back to in-context")

    @staticmethod
    def _why(store: AdapterStore, passage: Passage, status: str) -> str:
        if status in (OK, "not encoded"):
            return "no adapter"
        return (f"adapter {status} ({store.path(passage.content_hash)}, entry {passage.content_hash!r} "
                f"of {store.manifest_path})")

    def inject(self, passages: Sequence[Passage], question: str, *, use: int | None = None) -> Injection:
        """The summed adapters of the first ``use`` usable passages (PRAG-Combine: those passages in context too)."""
        if self.lm is None:
            raise RuntimeError(f"{self.name} injector used before bind(generator)")
        sel = self.adapters_for(passages, use)
        context = list(sel.used) if self.with_context else sel.fallback
        chosen = {"used": sel.used, "skipped": sel.skipped, "notes": sel.notes}
        if not sel.adapters:
            return Injection(context=context, kind="in-context", **chosen)
        weights = LoraInjection(self.lm.model, combine(sel.adapters, self.encode.scaling))
        sel.notes.append(f"{len(sel.adapters)} adapters as one rank-{weights.rank} LoRA")
        return Injection(context=context, weights=weights, kind="combined" if context else "parametric", **chosen)


@dataclass
class PragCombineInjector(PragInjector):
    """PRAG-Combine: the summed adapters and the passages in context."""

    with_context: bool = field(default=True, metadata={"help": "also put the passages in context"})
    name = "prag-combine"


@dataclass
class DyPragInjector(Injector):
    """DyPRAG: the translator turns each passage into a LoRA at question time; no store needed.

    Every passage is usable (nothing is augmented at question time), so DyPRAG takes the first
    ``use`` retrieved ones and retrieves no spare candidates (``extra_candidates = 0``). The
    reference's inference reads its passages from PRAG's augmentation output (``data_aug``),
    so there they are the first k of top-k + 10 whose QA generation parsed, a by-product of
    sharing PRAG's data pipeline; here DyPRAG answers from the plain top-k (a deviation).
    """

    may_change_weights: ClassVar[bool] = True
    extra_candidates: ClassVar[int] = 0

    translator: str | None = field(default=None, metadata={
        "help": "translator file or `translator train --out` folder; None = default_translator_path()"})
    with_context: bool = field(default=False, metadata={"help": "also put the passages in context (DyPRAG-Combine)"})
    max_tokens: int = field(default=512, metadata={"help": "passage tokens embedded"})

    name = "dyprag"

    def __post_init__(self) -> None:
        self.lm = None

    def bind(self, generator) -> None:
        self.lm = generator.lm

    def prompt_builder(self, tokenizer, chat: bool) -> PragPromptBuilder:
        """PRAG's answer template (the DyPRAG reference answers with it; its translator learns from PRAG's samples)."""
        return PragPromptBuilder(tokenizer, chat, EncodeConfig().template())

    def check_ready(self, lm) -> None:
        """Raise ``FileNotFoundError`` (naming the path and how to train one) when there is no translator.

        A server calls it before queueing a request, so a missing translator is the client's
        400, not a failure half-way through an answer.
        """
        load_translator(self.translator or default_translator_path(lm.fingerprint), lm)

    def inject(self, passages: Sequence[Passage], question: str, *, use: int | None = None) -> Injection:
        import torch

        from dynaprag.parametric.translator import average_adapters, embed_passages

        if self.lm is None:
            raise RuntimeError(f"{self.name} injector used before bind(generator)")
        passages = list(passages)[:use]
        context = list(passages) if self.with_context else []
        if not passages:
            return Injection(context=context, kind="in-context")
        net, meta = load_translator(self.translator or default_translator_path(self.lm.fingerprint), self.lm)
        start = time.perf_counter()
        with suspended(), torch.inference_mode():
            embeddings = embed_passages(self.lm, passages, self.max_tokens)
            adapter = average_adapters([net(e) for e in embeddings])
        weights = LoraInjection(self.lm.model, combine([adapter], float(meta["scaling"])))
        notes = [f"{len(passages)} adapters generated and averaged ({time.perf_counter() - start:.2f} s)"]
        return Injection(context=context, weights=weights, kind="combined" if context else "parametric",
                         notes=notes, used=passages)


@dataclass
class DyPragCombineInjector(DyPragInjector):
    """DyPRAG-Combine: generated adapters plus the passages in context."""

    with_context: bool = field(default=True, metadata={"help": "also put the passages in context"})
    name = "dyprag-combine"


INJECTORS.register("prag", PragInjector)
INJECTORS.register("prag-combine", PragCombineInjector)
INJECTORS.register("dyprag", DyPragInjector)
INJECTORS.register("dyprag-combine", DyPragCombineInjector)
