"""SeaKR as its reference code runs it: judge each reasoning step by the eigen score of 20 samples.

Yao et al. 2024, "SeaKR: Self-aware Knowledge Retrieval for Adaptive RAG"; reference
THU-KEG/SeaKR @d75fe70 ``SEAKR/reasoner.py`` (``MultiHopReasoner``) and its patched vLLM. The
procedure, mapped onto the four axes of the loop:

- **trigger** ``seakr``. The loop generates a step greedily (one sentence); the trigger then
  draws ``samples`` = 20 samples of the same step from the same prefix *as one batch* (T = 1.0,
  top-k 50, top-p 0.9, ≤ 100 tokens, stop at ``". "``, ``"\\n\\n"``, ``"\\nQuestion:"``,
  ``"\\nContext"`` and, once there is a previous step, ``"\\n"``; ``reasoner.py:67-86, 348-360``).
  Each sample's embedding is the MLP output of decoder layer ``num_layers // 2 - 1`` at the EOS
  that replaces its last token (:mod:`dynaprag.lm.sampling`); the eigen score
  ``(1/k)·logdet(Z J Zᵀ + αI)`` of the non-empty samples (:mod:`dynaprag.dynamic.methods.seakr.eigen`, float32,
  α = 1e-3; no score counts as 0) above θ = −6 discards the step and retrieves
  (``answer_direct``, 362-385). A step that states the answer is accepted unjudged
  (``solve``, 438-441); reasoning stops at the answer, after 7 steps or 5 documents (452-454).
- **formulator** ``sure-words`` (:mod:`dynaprag.dynamic.methods.seakr.query`): the words of the discarded
  step the model was sure of; a repeated query ends the reasoning (``rag``, 224-231).
- **selector** ``seakr-uncertainty``: for each top-3 hit not chosen before, the step is
  generated (greedy + 20 samples) with the documents chosen so far plus that hit; the hit whose
  samples have the lowest eigen score (an empty greedy step ranks last) joins the chosen
  documents, which accumulate and are all injected (``rag``, 232-282). No new hit ends the
  reasoning. The step generated with them is accepted unjudged.
- **injector** ``in-context``; then the trigger's :meth:`SeakrTrigger.integrate` is SeaKR's
  reasoning integration (``read_all_steps``, ``read_all_docs``, ``compare_answer``; 284-331,
  396-431): answer once from the reasoning steps as context (greedy + 20 samples, forced "So the
  answer is" when no answer is stated), once from all chosen documents, and keep the answer whose
  samples have the lower eigen score ("unknown"/no answer loses).

Remaining deviations, and why:

- **Steps** are the loop's sentences (a ``.``, ``!``, ``?`` or newline ends one) and include
  their period; the reference stops the greedy step at the stop strings above, so ``"L. Cahn"``
  ends a step there and not here. A bare newline after a sentence is not a step (the
  reference's ``"\\n"`` stop ends the previous one). The samples use the reference's stop strings.
  So a step stating the answer with more text after it (``"The answer is Paris. The …"``) is
  accepted unjudged here, while the reference's step loses its period to the ``". "`` stop,
  ``_check_final_answer``'s ``[,.]`` misses the answer, and the step is judged and may retrieve
  (found by the first-step parity test, demo q04).
- **The greedy step with the chosen document is decoded twice**: once in the selector's batch
  (to rank an empty step last) and once by the loop, which then continues from it with its KV
  cache. Same tokens up to float summation order (a batch row vs. batch 1).
- **A draft that ends at end-of-sequence before a sentence end** is not judged (the loop stops);
  the reference would judge that unfinished step.
- **Prompts** are ours (chat template, our exemplars, ``Context:`` block) in the reference's
  order; the forced answer is appended as ``"So the answer is"`` without the trailing space (see
  :mod:`dynaprag.lm.extraction`). The reference's prompt also deletes every "." inside previous
  steps; ours keeps the text as generated.
- **Cost only**: samples the reference draws but never reads are not drawn (those of a step that
  states the answer, of a forced "So the answer is" after the steps, and of the documents' first
  answer when it states none); the documents' greedy answer is decoded before its samples.
- **Sampling randomness**: each estimate uses a generator seeded with the loop's seed, as the
  reference seeds every request with 42; the draws themselves are torch's, not vLLM's.
- **θ = −6** was set for Llama-2-7B's layer-15 MLP output (d = 4096); on a small model the eigen
  score sits on another scale (``dynaprag calibrate`` fits θ per model).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from dynaprag.corpus import Passage
from dynaprag.dynamic.draft import AfterRetrieval, Decision, Draft, FinalAnswer
from dynaprag.dynamic.methods.seakr import eigen
from dynaprag.dynamic.selectors import SELECTORS, Selector
from dynaprag.dynamic.text import is_sentence_end
from dynaprag.dynamic.triggers import TRIGGERS, Trigger
from dynaprag.lm.prompts import ANSWER_MARKER
from dynaprag.lm.sampling import SampledSteps, StepSampling
from dynaprag.retrieval.base import Hit

BASE_STOPS = ("\n\n", "\nQuestion:", "\nContext")
"""``prepare_llm_input`` (reasoner.py:349); a step adds ``"\\n"`` once there are steps, and ``". "``."""
READ_STEPS_STOPS = BASE_STOPS + ("\n",)  # read_all_steps: "\n" appended, ". " removed (418-419)
READ_DOCS_STOPS = BASE_STOPS  # read_all_docs: is_final, no steps (287); the forced call adds "\n" (300)


def step_stops(has_previous_steps: bool) -> tuple[str, ...]:
    """The stop strings of one reasoning step (``prepare_llm_input``, reasoner.py:348-360)."""
    return BASE_STOPS + (("\n",) if has_previous_steps else ()) + (". ",)


# -- pure functions (tested on hand-made inputs) ---------------------------------------------
_FINAL = re.compile(r"the answer is(?:\s*:\s*)?(.*?)[,.]", re.DOTALL)
_FINAL_AFTER = re.compile(r"[.?!]\s*([^?!]*?)\s+is the answer\b", re.DOTALL)


def final_answer(text: str) -> str | None:
    """``_check_final_answer`` (reasoner.py:333-345): the answer a step states, else None.

    Matched on the lower-cased text as the reference; returned in the text's own case.
    """
    if not text:
        return None
    low = text.lower()
    source = text if len(low) == len(text) else low
    for pattern in (_FINAL, _FINAL_AFTER):
        m = pattern.search(low)
        if m:
            return source[m.start(1): m.end(1)].strip()
    return None


def choose_document(candidates: Sequence[tuple[str, float]]) -> int | None:
    """Index of the document to keep: the lowest eigen score of its step's samples; a blank greedy
    step ranks last; ties keep the retriever's order (``rag``'s stable sort, reasoner.py:253-267)."""
    if not candidates:
        return None
    keys = [score if text.strip() else float("inf") for text, score in candidates]
    return min(range(len(keys)), key=lambda i: (keys[i], i))


def unknown(answer: str | None) -> bool:
    """``compare_answer``'s ``check_none_or_unknown`` (reasoner.py:310-315)."""
    return answer is None or "unknown" in answer.lower()


def pick_answer(step_answer: str | None, step_score: float, read_answer: str | None,
                read_score: float) -> tuple[str | None, str]:
    """``compare_answer`` (reasoner.py:308-331): ``(answer, "steps" | "documents")``."""
    if unknown(step_answer):
        return read_answer, "documents"
    if unknown(read_answer):
        return step_answer, "steps"
    return (step_answer, "steps") if step_score < read_score else (read_answer, "documents")


def without_answer_sentences(steps: list[str]) -> list[str]:
    """``filter_last_step`` (reasoner.py:396-409): drop the last step's spaCy sentences that state
    the answer; drop the step when nothing is left."""
    from dynaprag import nlp

    if not steps:
        return steps
    kept = [s.text for s in nlp.parse(steps[-1].strip()).sents
            if "the answer is" not in s.text.lower() and "is the answer" not in s.text.lower()]
    rest = " ".join(kept)
    return steps[:-1] if not rest.strip() else steps[:-1] + [rest]


def step_spans(draft: Draft) -> list[tuple[int, int]]:
    """``(start, end)`` answer indices of the draft's non-blank steps, the unfinished last one included."""
    spans, start = [], 0
    for i in range(1, len(draft.pieces) + 1):
        if is_sentence_end("".join(draft.pieces[:i])) or i == len(draft.pieces):
            if draft.span_text(start, i):
                spans.append((start, i))
            start = i
    return spans


def _with_answer(reasoning: str, answer: str | None) -> str:
    return f"{reasoning.strip()} {ANSWER_MARKER} {(answer or '').strip().rstrip('.')}.".strip()


# -- components ---------------------------------------------------------------------------
@dataclass
class _Estimator:
    """SeaKR's uncertainty estimate, shared by its trigger and its selector."""

    samples: int = field(default=20, metadata={"help": "samples per estimate, decoded as one batch (SeaKR: 20)",
                                               "min": 1, "max": 64})
    alpha: float = field(default=1e-3, metadata={"help": "alpha in (1/k) logdet(Z J Z^T + alpha I)", "min": 0.0})
    layer: int = field(default=-1, metadata={
        "help": "decoder layer whose MLP output at each sample's end token forms Z; -1 = num_layers // 2 - 1",
        "min": -1, "max": 1024})
    sample_tokens: int = field(default=100, metadata={"help": "token budget of each sample (SeaKR: 100)", "min": 1,
                                                    "max": 512})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (SeaKR: 1.0)", "min": 0.0})
    top_k: int = field(default=50, metadata={"help": "top-k of the samples, 0 = off (SeaKR: 50)", "min": 0,
                                            "max": 1_000_000})
    top_p: float = field(default=0.9, metadata={"help": "top-p of the samples (SeaKR: 0.9)", "min": 0.0, "max": 1.0})
    needs_probe: ClassVar[bool] = True

    def kv_copies(self) -> int:
        """Caches held at once beyond the answer's: a fork of it and the samples' batch (+1 greedy row)."""
        return self.samples + 2

    def estimate(self, probe, stop: tuple[str, ...], k: int | None = None, greedy: bool = False,
                 **where) -> tuple[SampledSteps, float]:
        """Samples of the next step (``where``: see :meth:`Probe.sample_step`) and their eigen score
        (0 when every sample is blank, the reference's default)."""
        spec = StepSampling(max_tokens=self.sample_tokens, temperature=self.temperature, top_k=self.top_k,
                            top_p=self.top_p, stop=stop, mlp_layer=self.layer, greedy=greedy)
        out = probe.sample_step(self.samples if k is None else k, spec, **where)
        score = eigen.samples_eigen_score(out.texts, out.embeddings, self.alpha) if out.samples else None
        return out, 0.0 if score is None else score


@dataclass
class SeakrTrigger(_Estimator, Trigger):
    """Judge each greedy step by its samples' eigen score; SeaKR's stop rule and reasoning integration."""

    theta: float = field(default=-6.0, metadata={"help": "retrieve when the eigen score exceeds theta (SeaKR: -6)"})
    max_steps: int = field(default=7, metadata={"help": "stop reasoning after this many steps (SeaKR: 7)",
                                                "min": 1, "max": 64})
    max_docs: int = field(default=5, metadata={
        "help": "stop reasoning after this many retrievals, one document each (SeaKR: 5)", "min": 1, "max": 64})
    calibratable: ClassVar[bool] = True
    rolls_back: ClassVar[bool] = True
    #: the regenerated step is accepted unchecked; a retrieval that cannot happen (empty or repeated
    #: query, no new document) ends the reasoning before the doubted step
    after_retrieval: ClassVar[AfterRetrieval] = AfterRetrieval(recheck=False, on_skip="end")

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if draft.at_start or not draft.sentence_end:
            return None
        start, end = draft.sentence_start, len(draft.steps)
        text = draft.span_text(start, end)
        if not text or final_answer(text) is not None:
            return None  # a bare newline closes the previous step; a step with the answer is accepted
        _, score = self.estimate(probe, step_stops(start > 0), upto=start)
        token_scores = {end - 1: score}
        if score > self.theta:
            return Decision.fire(f"eigen score {score:.3g} > θ={self.theta:g} over {self.samples} samples of the step",
                                 keep=start, span=(start, end), scores={"eigen_score": score},
                                 token_scores=token_scores)
        return Decision.hold(token_scores=token_scores)

    def finished(self, draft: Draft) -> bool | None:
        """Stop at a step that states the answer, after ``max_steps`` steps or ``max_docs`` retrievals."""
        if not draft.sentence_end:
            return None
        spans = step_spans(draft)
        if spans and final_answer(draft.span_text(*spans[-1])) is not None:
            return True
        return True if len(spans) >= self.max_steps or draft.retrievals >= self.max_docs else None

    def integrate(self, draft: Draft, probe=None) -> FinalAnswer | None:
        """SeaKR's reasoning integration (module docstring) over the steps and ``draft.passages``."""
        steps = without_answer_sentences([draft.span_text(a, b) for a, b in step_spans(draft)])
        as_docs = [Passage(id=f"step-{i + 1}", title="", text=s) for i, s in enumerate(steps)]
        out, step_score = self.estimate(probe, READ_STEPS_STOPS, greedy=True, passages=as_docs, upto=0)
        step_answer = final_answer(out.greedy.text)
        if not step_answer:
            forced, _ = self.estimate(probe, READ_STEPS_STOPS, k=0, greedy=True, passages=as_docs,
                                      answer_text=ANSWER_MARKER)
            step_answer = forced.greedy.text.strip()
        docs = list(draft.passages)
        first, _ = self.estimate(probe, READ_DOCS_STOPS, k=0, greedy=True, passages=docs, upto=0)
        read_full = first.greedy.text.strip()
        read_answer = final_answer(read_full)
        if read_answer is None:
            out, read_score = self.estimate(probe, READ_DOCS_STOPS + ("\n",), greedy=True, passages=docs,
                                            answer_text=ANSWER_MARKER)
            read_answer = out.greedy.text.strip()
        else:
            _, read_score = self.estimate(probe, READ_DOCS_STOPS, passages=docs, upto=0)
            read_full = re.split(r"(?i)(?:so\s+)?the answer is", read_full)[0]
        answer, winner = pick_answer(step_answer, step_score, read_answer, read_score)
        reasoning = " ".join(steps) if winner == "steps" else read_full
        note = (f"seakr reasoning integration: from the steps {step_answer!r} (eigen {step_score:.3g}), "
                f"from {len(docs)} documents {read_answer!r} (eigen {read_score:.3g}); the {winner}' answer wins")
        return FinalAnswer(text=_with_answer(reasoning, answer), short=(answer or "").strip().rstrip(".").strip(),
                           notes=(note,))


@dataclass
class SeakrSelector(_Estimator, Selector):
    """Keep the one new hit whose step is least uncertain, after the passages already in the
    knowledge slot (``draft.passages``): chosen documents accumulate (≤ ``max_docs``) and all of
    them enter every later prompt (``self.docs``, reasoner.py:237, 272), whatever the run's k,
    which bounds only the search (``accumulates``)."""

    max_docs: int = field(default=5, metadata={
        "help": "most documents kept, the oldest leave first past it (SeaKR: 5, when its reasoning also stops)",
        "min": 1, "max": 64})
    accumulates: ClassVar[bool] = True

    def __call__(self, hits: list, draft: Draft, probe=None) -> list:
        upto = len(draft.steps) if draft.retrieving_at is None else draft.retrieving_at
        chosen = [Hit(p, 0.0) for p in draft.passages]
        known = {h.id for h in chosen}
        fresh = [h for h in hits if h.id not in known]
        if not fresh:
            return []
        base = list(draft.passages)
        runs = [self.estimate(probe, step_stops(upto > 0), greedy=True, passages=base + [h.passage], upto=upto)
                for h in fresh]
        best = choose_document([(out.greedy.text, score) for out, score in runs])
        return (chosen + [fresh[best]])[-self.max_docs:]


TRIGGERS.register("seakr", SeakrTrigger)
SELECTORS.register("seakr-uncertainty", SeakrSelector)
