"""IRCoT (Trivedi et al., ACL 2023) as its reference code runs it: one chain-of-thought sentence
at a time, each sentence the next query, the retrieved paragraphs accumulated, then a reader.

Reference: StonyBrookNLP/ircot @ ``3c1820f698eea5eeddb4fba3c56b64c961e063e4``; file:line below
are ``commaqa/inference/ircot.py`` unless named. The system the paper reports is ``ircot_qa``
(``base_configs/ircot_qa_codex_hotpotqa.jsonnet``, the same for every dataset and model but
the prompt file), a state machine of four participants:

1. **retrieve** (``RetrieveAndResetParagraphsParticipant``, :253-536): the query is the
   question before any sentence, afterwards the *last generated sentence that is not a
   reasoning sentence* (``question_or_last_generated_sentence``, :347-353; a reasoning
   sentence starts with "thus", "so", "that is,", "therefore", "hence" or is arithmetic,
   :30-41), with the words who/what/when/where/why/which/how/does/is removed (:58-62, :433);
   an empty query searches nothing (:447-450). BM25 returns ``bm25_retrieval_count`` = **6**
   paragraphs (K; every base config sets 6 and ``run.py:248-251`` tunes it over {2, 4, 6, 8}
   per dataset and model on dev, the chosen values are not in the repository). Each hit is
   appended to the paragraphs collected so far (``cumulate_titles``) unless it has more than
   600 words (:474), closely matches one already kept (:478, ``is_para_closely_matching``,
   :111-130: same title and paragraph, or rapidfuzz ``ratio`` >= 90 on both), or **15**
   paragraphs are kept already (``global_max_num_paras``, :486).
2. **generate one sentence** (``StepByStepCOTGenParticipant``, :711-895): the prompt is the
   exemplars, all collected paragraphs, ``Q: question`` and ``A: `` + the sentences so far
   joined by spaces (:825-839); the model continues to its stop string ``"\\n"``
   (``GPT3Generator`` default, ``commaqa/models/gpt3generator.py:91``) and only spaCy's first
   sentence of the stripped continuation is kept (:845-849).
3. **exit?** (``StepByStepExitControllerParticipant``, :898-996): stop when the last sentence
   matches ``.* answer is:? (.*)\\.?`` (:966), is empty (:954), or **10** sentences exist
   (``max_num_sentences``, :909, :957); otherwise back to 1.
4. **reader** (``generate_main_question`` + ``answer_main_question``, ``llmqa`` in
   ``commaqa/inference/participant_qa.py:92-135``): the question is answered again from
   scratch with all collected paragraphs; with Codex the reader is the same CoT prompt
   (``rc_qa_type = "cot"``), Flan-T5 configs use a direct one; the answer is the regex group
   of its output (``extract_answer``, ``match_all_on_failure``).

Here: :class:`IrcotTrigger` retrieves before the first token and after every sentence (keeping
it: nothing is rolled back), applies the exit rule (``finished``) and runs the reader
(``integrate``, one greedy answer through :meth:`~dynaprag.dynamic.probe.Probe.answer_with`
with the collected paragraphs in the knowledge slot, to ``"\\n"`` as the reference's
generator); :class:`IrcotQuery` is the query rule; :class:`IrcotSelector` the accumulation
with its dedup and cap (``accumulates``: the whole collection is the knowledge slot; its ``k``
is the search size). ``ircot-noreader`` (variant) reads the answer from the chain itself.

Deviations: (a) sentences end at the loop's sentence end (``.``/``!``/``?`` not after a
capital, or a newline; :mod:`dynaprag.dynamic.text`) as the tokens arrive, not at spaCy's first
sentence of a continuation decoded to ``"\\n"``: where the two differ the chains part (the
reference also pays for the discarded rest of every continuation, which is not decoded here);
(b) a newline is kept in the draft where the reference's stop string cuts it and re-prompts
from the stripped text; (c) the prompt is ours (exemplars, chat template, ``[i] title: text``
passages without the 350-word cut of ``para_to_text``), the order is the reference's
(exemplars, paragraphs, question, chain); (d) the short answer is read with the toolkit's one
``extract_answer`` (the reference's regex takes what follows ``answer is``, the same span up to
a final full stop); (e) the run's budgets bind too: ``max_retrievals`` (5 by default; the
reference retrieves up to 10 times, set ``max_retrievals=10``) and ``max_new_tokens`` for the
chain; the reader has its own ``reader_max_tokens`` (300, ``GPT3Generator.max_tokens``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from dynaprag.dynamic.draft import Decision, Draft, FinalAnswer
from dynaprag.dynamic.queries import FORMULATORS, QueryFormulator
from dynaprag.dynamic.selectors import SELECTORS, Selector
from dynaprag.dynamic.text import is_sentence_end
from dynaprag.dynamic.triggers import TRIGGERS, Trigger
from dynaprag.lm.prompts import extract_answer
from dynaprag.retrieval.base import Hit

ANSWER_REGEX = re.compile(r".* answer is:? (.*)\.?")
"""The exit controller's and answer extractor's ``answer_extractor_regex`` (ircot_qa configs)."""
WH_WORDS = frozenset({"who", "what", "when", "where", "why", "which", "how", "does", "is"})
_REASONING_STARTS = ("thus ", "thus,", "so ", "so,", "that is,", "therefore", "hence")
_ARITHMETIC = re.compile(r"(.*)(\d[\d,]*\.?\d+|\d+) ([+-]) (\d[\d,]*\.?\d+|\d+) = (\d[\d,]*\.?\d+|\d+)(.*)")


# -- the reference's text rules, as pure functions ------------------------------------------------
def is_reasoning_sentence(sentence: str) -> bool:
    """A sentence that states no retrievable fact (``is_reasoning_sentence``, :30-41)."""
    return sentence.lower().startswith(_REASONING_STARTS) or bool(_ARITHMETIC.match(sentence))


def remove_wh_words(text: str) -> str:
    """``text`` without question words, split and joined on single spaces (``remove_wh_words``, :58-62)."""
    return " ".join(w for w in text.split(" ") if w.strip().lower() not in WH_WORDS)


def lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence (bit-parallel, Hyyrö 2004)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, ch in enumerate(a):
        masks[ch] = masks.get(ch, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for ch in b:
        u = v & masks.get(ch, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def fuzz_ratio(a: str, b: str) -> float:
    """rapidfuzz's ``fuzz.ratio``: the normalised InDel similarity ``100 · 2·LCS / (|a| + |b|)``."""
    if not a and not b:
        return 100.0
    return 100.0 * 2 * lcs_length(a, b) / (len(a) + len(b))


def closely_matching(titles: Sequence[str], paras: Sequence[str], title: str, para: str,
                     threshold: float = 90) -> bool:
    """``is_para_closely_matching`` (:111-130): title and text already present (not necessarily as
    one pair), or a kept paragraph whose title and text both have ``fuzz_ratio >= threshold``."""
    if title in titles and para in paras:
        return True
    return any(fuzz_ratio(t, title) >= threshold and fuzz_ratio(p, para) >= threshold
               for t, p in zip(titles, paras))


def chain_sentences(draft: Draft) -> list[str]:
    """The chain's sentences, stripped, as the loop delimits them (blank ones kept: a newline
    right after a sentence is the reference's empty generation)."""
    out, start, text = [], 0, ""
    for i, piece in enumerate(draft.pieces, 1):
        text += piece
        if is_sentence_end(text):
            out.append(draft.span_text(start, i))
            start = i
    return out


def exit_reason(sentences: Sequence[str], max_sentences: int) -> str | None:
    """The exit controller's rule (:954-970) on the sentences so far, or None to go on."""
    if not sentences:
        return None
    if not sentences[-1]:
        return "empty sentence"
    if ANSWER_REGEX.match(sentences[-1]):
        return "the sentence gives the answer"
    if len(sentences) >= max_sentences:
        return f"{max_sentences} sentences"
    return None


# -- components -----------------------------------------------------------------------------
@dataclass
class IrcotTrigger(Trigger):
    """Retrieve with the question, then after every chain sentence until the exit rule; then the
    reader answers from all collected paragraphs (module docstring)."""

    max_sentences: int = field(default=10, metadata={
        "help": "chain length limit (the exit controller's max_num_sentences)", "min": 1, "max": 100})
    reader: bool = field(default=True, metadata={
        "help": "answer again from scratch with all collected paragraphs (IRCoT QA's reader)"})
    reader_max_tokens: int = field(default=300, metadata={
        "help": "the reader's token budget (GPT3Generator max_tokens)", "min": 1, "max": 2048})
    needs_probe: ClassVar[bool] = True

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if draft.at_start:
            return Decision.fire("IRCoT: retrieve with the question", keep=0)
        if not draft.sentence_end:
            return None
        sentences = chain_sentences(draft)
        why = exit_reason(sentences, self.max_sentences)
        if why is not None:
            return Decision.hold(notes=(f"IRCoT stops: {why}",))
        end = len(draft.steps)
        return Decision.fire(f"IRCoT: sentence {len(sentences)} generated", keep=end,
                             span=(draft.sentence_start, end))

    def finished(self, draft: Draft) -> bool:
        return draft.sentence_end and exit_reason(chain_sentences(draft), self.max_sentences) is not None

    def integrate(self, draft: Draft, probe=None) -> FinalAnswer | None:
        if not self.reader or probe is None:
            return None
        read = probe.answer_with(list(draft.passages), self.reader_max_tokens, stop=("\n",))
        text = read.text.strip()
        return FinalAnswer(text=text, short=extract_answer(text),
                           notes=(f"IRCoT reader: answered again with the {len(draft.passages)} collected "
                                  f"paragraphs ({len(read.steps)} tokens, stopped by {read.stopped_by})",))


@dataclass
class IrcotQuery(QueryFormulator):
    """The last chain sentence that is not a reasoning sentence, else the question; question
    words removed (``question_or_last_generated_sentence`` + ``remove_wh_words``). An empty
    query still counts as the step's retrieval (nothing new is found, the chain goes on with
    the same paragraphs), as the reference calls its retriever and skips only the search."""

    retrieves_empty_query: ClassVar[bool] = True

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        factual = [s for s in chain_sentences(draft) if not is_reasoning_sentence(s)]
        last = factual[-1].strip() if factual else ""
        return remove_wh_words(last or draft.question)


@dataclass
class IrcotSelector(Selector):
    """The collected paragraphs plus the new hits that are not too long, not close to a kept one,
    while fewer than ``max_paragraphs`` are kept (``RetrieveAndResetParagraphsParticipant``)."""

    k: int = field(default=6, metadata={"help": "paragraphs retrieved per query (bm25_retrieval_count)",
                                        "min": 1, "max": 100})
    max_paragraphs: int = field(default=15, metadata={"help": "cap on collected paragraphs (global_max_num_paras)",
                                                      "min": 1, "max": 100})
    max_words: int = field(default=600, metadata={"help": "skip hits with more words than this", "min": 1})
    match_threshold: float = field(default=90.0, metadata={"help": "rapidfuzz ratio that counts as the same "
                                                                   "paragraph", "min": 0.0, "max": 100.0})
    accumulates: ClassVar[bool] = True

    @property
    def search_k(self) -> int:
        """How many hits the loop asks the retriever for (the run's k bounds nothing here)."""
        return self.k

    def __call__(self, hits: list, draft: Draft, probe=None) -> list:
        kept = [Hit(p, 0.0) for p in draft.passages]
        titles, paras = [p.title for p in draft.passages], [p.text for p in draft.passages]
        for hit in hits:
            p = hit.passage
            if len(p.text.split(" ")) > self.max_words or len(kept) >= self.max_paragraphs:
                continue
            if closely_matching(titles, paras, p.title, p.text, self.match_threshold):
                continue
            kept.append(hit)
            titles.append(p.title)
            paras.append(p.text)
        return kept


TRIGGERS.register("ircot", IrcotTrigger)
FORMULATORS.register("ircot-sentence", IrcotQuery)
SELECTORS.register("ircot-paragraphs", IrcotSelector)
