"""Adaptive-RAG's router on the four axes: classify the question, then run the routed strategy.

Reference: starsuzi/Adaptive-RAG @ ``0c88670af8707667eb5c1163151bb5ce61b14acb``. The three
strategies are the repository's systems, all built on IRCoT's code (``base_configs/``):

* ``A`` -- ``nor_qa``: the question answered without retrieval (``nor_qa_flan_t5_xl_hotpotqa.jsonnet:40-70``);
* ``B`` -- ``oner_qa``: one ``retrieve_and_reset_paragraphs`` step with the original question
  (``oner_qa_flan_t5_xl_hotpotqa.jsonnet:44-56``: ``query_source: original_question``, at most 15
  paragraphs), BM25 ``bm25_retrieval_count`` = **15** (``run.py:798-801``; the comment there gives 6
  for GPT), then the reader answers with them;
* ``C`` -- ``ircot_qa``: IRCoT with K = **6** (``run.py:806-809``; 3 for GPT), 15 paragraphs at most.

At inference the reference runs all three systems on every test question and, per question, keeps
the answer of the system the classifier chose (``classifier/postprocess/postprocess_utils.py:18-47``,
``predict_complexity_on_classification_results.py``); its step counts charge 0 / 1 / IRCoT's steps.
Here only the routed strategy runs (the same answer, without the two unused systems' cost):

* :class:`AdaptiveTrigger` classifies at the first step (``draft.at_start``) with the configured
  classifier (:mod:`.classifier`), or the forced ``route``; ``A`` never retrieves, ``B`` retrieves
  once before generating (as ``sr-rag``), ``C`` delegates every call to the ``ircot`` trigger
  (its sentence-by-sentence retrieval, exit rule and reader);
* :class:`AdaptiveQuery` is the question for ``B`` and the ``ircot-sentence`` query for ``C``;
* :class:`AdaptiveSelector` keeps ``B``'s top ``single_k`` hits and, for ``C``, runs the
  ``ircot-paragraphs`` selector (dedup, 600-word limit, 15-paragraph cap) on the top ``multi_k``.

The IRCoT components are looked up by their registered names, so this family imports no other.
The route is the trigger's observation of the draft; the formulator and selector read it from
:data:`ROUTES` (the draft is the engine's and read-only for components; the route is kept beside
it, keyed by the draft, and dropped with it). Components stay free of per-question state, so
questions routed differently decode in one batch. Composed with another trigger (no route), the
formulator and selector act as the single-step route's: the question, the top ``single_k`` hits.

Deviations: (a) the prompt is ours for every route (chain-of-thought exemplars and the chat
template; the reference's Flan-T5 systems answer directly with ``Answer the following
question.``, its GPT systems with chain of thought); (b) one search of ``max(single_k, multi_k)``
hits is cut to the route's K (the same top hits of a deterministic ranking); (c) for ``B`` the
hits are used as retrieved (the ``oner_qa`` participant also applies IRCoT's dedup and 600-word
limit to them); (d) the run's budgets (``max_retrievals``, token budgets) apply to every route.
"""
from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dynaprag.dynamic.draft import Decision, Draft, FinalAnswer
from dynaprag.dynamic.methods.adaptive_rag.classifier import load_classifier
from dynaprag.dynamic.methods.adaptive_rag.labels import LABELS
from dynaprag.dynamic.queries import FORMULATORS, QueryFormulator
from dynaprag.dynamic.selectors import SELECTORS, Selector
from dynaprag.dynamic.triggers import TRIGGERS, Trigger

MULTI_STEP = {"trigger": "ircot", "formulator": "ircot-sentence", "selector": "ircot-paragraphs"}
"""The registered components of the multi-step strategy (the ``ircot`` preset's)."""


class RouteBook:
    """The route chosen for each live draft, dropped when the draft is (drafts are unhashable)."""

    def __init__(self):
        self._routes: dict[int, str] = {}

    def assign(self, draft: Draft, label: str) -> None:
        key = id(draft)
        if key not in self._routes:
            weakref.finalize(draft, self._routes.pop, key, None)
        self._routes[key] = label

    def of(self, draft: Draft) -> str | None:
        """The draft's route, or ``None`` when no ``adaptive-rag`` trigger routed it (another trigger)."""
        return self._routes.get(id(draft))

    def __len__(self) -> int:
        return len(self._routes)


ROUTES = RouteBook()


def _multi_step(axis: str, registry, **knobs: Any):
    return registry.get(MULTI_STEP[axis])(**knobs)


@dataclass(frozen=True)
class Route:
    """The trigger's observation on a decision: the label, and the routed trigger's own observation."""

    label: str
    inner: Any = None


@dataclass
class AdaptiveTrigger(Trigger):
    """Classify the question, then act as the routed strategy's trigger (module docstring)."""

    classifier: str = field(default="", metadata={
        "help": "the complexity classifier: a head trained by `dynaprag adaptive-rag train` (its name under "
                "$DYNAPRAG_CACHE/adaptive-rag, or its folder), or the released T5 classifier (local folder or "
                "Hugging Face id already in the local cache)"})
    route: str = field(default="", metadata={
        "help": "force one route for every question (A no retrieval, B single-step, C multi-step) instead of "
                "classifying: what the silver-label run uses", "choices": ("", *LABELS)})
    max_sentences: int = field(default=10, metadata={
        "help": "the multi-step route's chain length limit (IRCoT's max_num_sentences)", "min": 1, "max": 100})
    reader: bool = field(default=True, metadata={
        "help": "the multi-step route answers again with all collected paragraphs (IRCoT QA's reader)"})
    needs_probe: ClassVar[bool] = True  # the multi-step route's reader

    def __post_init__(self):
        self._multi = _multi_step("trigger", TRIGGERS, max_sentences=self.max_sentences, reader=self.reader)

    def label_of(self, question: str) -> str:
        """The route for ``question``: the forced one, else the classifier's label."""
        return self.route or load_classifier(self.classifier).classify([question])[0]

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        notes: tuple[str, ...] = ()
        if draft.at_start:
            label = self.label_of(draft.question)
            ROUTES.assign(draft, label)
            note = f"Adaptive-RAG: route {label} ({'forced' if self.route else self.classifier})"
            if label == "A":
                return Decision.hold(notes=(f"{note}: no retrieval",))
            if label == "B":
                return Decision.fire(f"{note}: single retrieval with the question", keep=0, observation=Route("B"),
                                     notes=(f"{note}: single-step",))
            notes = (f"{note}: multi-step (IRCoT)",)
        if ROUTES.of(draft) != "C":
            return None
        decision = self._multi(draft, probe)
        if decision is None:
            return None
        return dataclasses.replace(decision, observation=Route("C", decision.observation),
                                   notes=(*notes, *decision.notes))

    def finished(self, draft: Draft) -> bool | None:
        return self._multi.finished(draft) if ROUTES.of(draft) == "C" else None

    def integrate(self, draft: Draft, probe=None) -> FinalAnswer | None:
        return self._multi.integrate(draft, probe) if ROUTES.of(draft) == "C" else None


@dataclass
class AdaptiveQuery(QueryFormulator):
    """The question for the single-step route, IRCoT's sentence query for the multi-step one."""

    retrieves_empty_query: ClassVar[bool] = True  # IRCoT's empty query still counts (multi-step route only)

    def __post_init__(self):
        self._multi = _multi_step("formulator", FORMULATORS)

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        if ROUTES.of(draft) != "C":
            return draft.question
        inner = decision.observation.inner if isinstance(decision.observation, Route) else decision.observation
        return self._multi(draft, dataclasses.replace(decision, observation=inner), probe)


@dataclass
class AdaptiveSelector(Selector):
    """The single-step route's top ``single_k``; IRCoT's paragraph collection for the multi-step one."""

    single_k: int = field(default=15, metadata={
        "help": "paragraphs of the single-step route (oner_qa bm25_retrieval_count: 15)", "min": 1, "max": 100})
    multi_k: int = field(default=6, metadata={
        "help": "paragraphs per query of the multi-step route (ircot_qa bm25_retrieval_count: 6)", "min": 1,
        "max": 100})
    max_paragraphs: int = field(default=15, metadata={
        "help": "cap on the multi-step route's collected paragraphs (global_max_num_paras)", "min": 1, "max": 100})
    accumulates: ClassVar[bool] = True  # the multi-step slot is the whole collection; the single step fills it once

    def __post_init__(self):
        self._multi = _multi_step("selector", SELECTORS, k=self.multi_k, max_paragraphs=self.max_paragraphs)

    @property
    def search_k(self) -> int:
        return max(self.single_k, self.multi_k)

    def __call__(self, hits: list, draft: Draft, probe=None) -> list:
        if ROUTES.of(draft) != "C":
            return list(hits)[: self.single_k]
        return self._multi(list(hits)[: self.multi_k], draft, probe)


TRIGGERS.register("adaptive-rag", AdaptiveTrigger)
FORMULATORS.register("adaptive-rag", AdaptiveQuery)
SELECTORS.register("adaptive-rag", AdaptiveSelector)
