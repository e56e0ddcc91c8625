"""When to retrieve: small callables that read a step's signals and answer "retrieve now?".

A :class:`Trigger` is called once before the first token (``draft.at_start``) and after every
generated token; sentence-level triggers act only when ``draft.sentence_end`` is true. It
returns ``None`` or a :class:`~dynaprag.dynamic.draft.Decision` saying how much of the draft to
keep and why. Knobs are dataclass fields with the paper's defaults; the scoring itself lives
in :mod:`dynaprag.dynamic.scoring` as pure functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from dynaprag.dynamic import scoring
from dynaprag.dynamic.draft import Decision, Draft, content_flags, word_groups
from dynaprag.registry import Registry


@dataclass
class Trigger:
    """Base trigger: never retrieves. Subclasses override :meth:`__call__`."""

    needs_attention: ClassVar[bool] = False
    hidden_layers: ClassVar[tuple[int, ...]] = ()

    def reset(self) -> None:
        """Forget per-question state (called before each question)."""

    def __call__(self, draft: Draft) -> Decision | None:
        return None

    def select(self, hits: list, draft: Draft) -> list:
        """Choose which retrieved hits to inject (identity; SeaKR re-ranks)."""
        return hits


@dataclass
class NeverTrigger(Trigger):
    """wo-rag: the model answers from its parameters alone."""


@dataclass
class OnceTrigger(Trigger):
    """sr-rag: retrieve once with the question before generating (standard single-round RAG)."""

    def __call__(self, draft: Draft) -> Decision | None:
        if draft.at_start:
            return Decision(reason="single retrieval before generation", keep=0)
        return None


@dataclass
class EveryNTokensTrigger(Trigger):
    """FL-RAG: retrieve every ``n`` generated tokens, plus once before generating.

    Khandelwal et al. 2020 / Ram et al. 2023 (In-Context RALM, stride s); ``n = 15`` as in the
    DRAGIN and FlashRAG toolkits. The query is the window of the last ``n`` tokens.
    """

    n: int = field(default=15, metadata={"help": "retrieval stride in tokens"})
    initial: bool = field(default=True, metadata={"help": "retrieve with the question before generating"})

    def __call__(self, draft: Draft) -> Decision | None:
        if draft.at_start:
            return Decision(reason="retrieval before generation", keep=0) if self.initial else None
        done = len(draft.steps) - draft.last_retrieval_at
        if done >= self.n:
            end = len(draft.steps)
            return Decision(reason=f"{done} tokens since the last retrieval (every {self.n})", keep=end,
                            span=(max(0, end - self.n), end))
        return None


@dataclass
class EverySentenceTrigger(Trigger):
    """FS-RAG (Trivedi et al. 2023, IRCoT-style): retrieve after every generated sentence."""

    initial: bool = field(default=True, metadata={"help": "retrieve with the question before generating"})

    def __call__(self, draft: Draft) -> Decision | None:
        if draft.at_start:
            return Decision(reason="retrieval before generation", keep=0) if self.initial else None
        if draft.sentence_end:
            start, end = draft.sentence_start, len(draft.steps)
            return Decision(reason="sentence finished", keep=end, span=(start, end))
        return None


@dataclass
class TokenProbTrigger(Trigger):
    """TokenRAG (the DRAGIN paper's token-level baseline): retrieve when a token's ``p < θ``.

    Checked at each sentence end over that sentence's new tokens; the sentence is discarded,
    a query is formed from it with the low-probability tokens masked, and it is regenerated
    with the passages. θ = 0.08 is the threshold of the DRAGIN repository's token-probability
    configs (``method: token``).
    """

    theta: float = field(default=0.08, metadata={"help": "retrieve when any token has p < theta"})
    inclusive: ClassVar[bool] = False
    label: ClassVar[str] = "token"

    def __call__(self, draft: Draft) -> Decision | None:
        if not draft.sentence_end:
            return None
        start, end = max(draft.sentence_start, draft.checked), len(draft.steps)
        probs = draft.probs(start, end)
        low = [start + i for i, p in enumerate(probs) if (p <= self.theta if self.inclusive else p < self.theta)]
        for i, p in zip(range(start, end), probs):
            draft.scores[i] = 1.0 - p
        if not low:
            return None
        return Decision(
            reason=f"{len(low)} {self.label}(s) with p {'≤' if self.inclusive else '<'} {self.theta:g}",
            keep=draft.sentence_start, span=(draft.sentence_start, end),
            scores={draft.pieces[i]: draft.steps[i].prob for i in low},
            masked=frozenset(self._mask(draft, draft.sentence_start, end)), accept_next_sentence=True)

    def _mask(self, draft: Draft, start: int, end: int) -> list[int]:
        return [i for i in range(start, end) if draft.steps[i].prob < self.theta]


@dataclass
class FlareTrigger(TokenProbTrigger):
    """FLARE_direct (Jiang et al. 2023, §3.2): generate a look-ahead sentence; if any token has
    ``p ≤ θ`` retrieve with the sentence (tokens with ``p ≤ β`` masked, §3.2.1) and regenerate it.

    Defaults θ = 0.8, β = 0.4 from the paper's released configs; FlashRAG's variant uses 0.2/0.2
    (method ``flare-flashrag``).
    """

    theta: float = field(default=0.8, metadata={"help": "retrieve if any look-ahead token has p <= theta"})
    beta: float = field(default=0.4, metadata={"help": "mask tokens with p <= beta in the query"})
    inclusive: ClassVar[bool] = True
    label: ClassVar[str] = "token"

    def _mask(self, draft: Draft, start: int, end: int) -> list[int]:
        return [start + i for i, m in enumerate(scoring.flare_mask(draft.probs(start, end), self.beta)) if m]


def entity_spans(pieces: list[str]) -> list[list[int]]:
    """Named-entity token spans: spaCy's NER when installed, else a capitalisation/number heuristic.

    The fallback (no NER model is installed here) takes maximal runs of capitalised or numeric
    words, ignoring a lone capitalised word at the start of a sentence.
    """
    text = "".join(pieces)
    offsets, pos = [], 0
    for p in pieces:
        offsets.append((pos, pos + len(p)))
        pos += len(p)
    try:
        import spacy  # optional

        nlp = _spacy_model(spacy)
    except (ImportError, OSError):
        nlp = None
    if nlp is not None:
        spans = []
        for ent in nlp(text).ents:
            idx = [i for i, (a, b) in enumerate(offsets) if a < ent.end_char and b > ent.start_char]
            if idx:
                spans.append(idx)
        return spans
    spans: list[list[int]] = []
    groups = word_groups(pieces)
    current: list[int] = []
    prev_word = ""
    for group in groups:
        word = "".join(pieces[i] for i in group).strip()
        sentence_initial = prev_word == "" or prev_word[-1:] in ".!?\n"
        capital = word[:1].isupper() or word[:1].isdigit()
        if capital and word.lower() not in ("i",) and not (sentence_initial and not current and word.lower() in
                                                           _COMMON_INITIALS):
            current += group
        else:
            if current:
                spans.append(current)
            current = []
        prev_word = word or prev_word
    if current:
        spans.append(current)
    return spans


_COMMON_INITIALS = frozenset("the a an he she it they this that there these those his her its their so in on "
                             "at of for but and yes no".split())
_SPACY: dict = {}


def _spacy_model(spacy):
    if "nlp" not in _SPACY:
        _SPACY["nlp"] = spacy.load("en_core_web_sm")
    return _SPACY["nlp"]


@dataclass
class EntityTrigger(TokenProbTrigger):
    """Entity-level confidence (DRAD, Su et al. 2024 "Mitigating entity-level hallucination"):
    an entity's confidence is the mean probability of its tokens; retrieve when one is below θ.

    θ = 0.4 and mean aggregation follow the DRAD repository's example. Entities come from spaCy
    when ``en_core_web_sm`` is installed, else from a capitalisation heuristic (documented).
    """

    theta: float = field(default=0.4, metadata={"help": "retrieve when an entity's mean token p < theta"})
    label: ClassVar[str] = "entity"

    def __call__(self, draft: Draft) -> Decision | None:
        if not draft.sentence_end:
            return None
        start, end = draft.sentence_start, len(draft.steps)
        low: list[list[int]] = []
        for span in entity_spans(draft.pieces[start:end]):
            idx = [start + i for i in span if start + i >= draft.checked]
            if not idx:
                continue
            conf = sum(draft.steps[i].prob for i in idx) / len(idx)
            for i in idx:
                draft.scores[i] = 1.0 - conf
            if conf < self.theta:
                low.append(idx)
        if not low:
            return None
        return Decision(reason=f"{len(low)} entit{'y' if len(low) == 1 else 'ies'} with mean p < {self.theta:g}",
                        keep=start, span=(start, end),
                        scores={draft.span_text(s[0], s[-1] + 1): sum(draft.steps[i].prob for i in s) / len(s)
                                for s in low},
                        masked=frozenset(i for s in low for i in s), accept_next_sentence=True)


@dataclass
class RindTrigger(Trigger):
    """DRAGIN's RIND (Su et al. 2024, §3.1, Eq. 4): ``S(t_i) = H_i · a_max(i) · s_i > θ``.

    ``H_i`` is the token's entropy, ``a_max(i)`` the largest last-layer (head-averaged)
    attention a later token of the answer pays to it, ``s_i`` 0 for stop words. Evaluated at
    each sentence end over the sentence's new tokens, with the attention rows captured by the
    forward passes that produced them (no extra pass); the last token of a sentence has no
    later token yet and scores 0. On a hit the draft is cut *at* the triggering token.

    ``variant="reference"`` reproduces the DRAGIN code instead: attention normalised over the
    sentence and multiplied by its length (see :func:`scoring.rind_scores_reference`).
    θ = 1.2 is the paper's 2Wiki setting (1.4 for HotpotQA). With raw attention (paper
    variant) a 135M model's scores stay below it; the preset keeps the paper's value and
    ``bench/dragin_theta.py`` rescales θ for a model on a held-out split.
    """

    theta: float = field(default=1.2, metadata={"help": "retrieve when S_RIND > theta (paper: 1.2 2Wiki, 1.4 HotpotQA)"})
    variant: str = field(default="paper", metadata={"help": "paper (Eq. 4) | reference (DRAGIN code normalisation)"})
    needs_attention: ClassVar[bool] = True

    def scores(self, draft: Draft, start: int, end: int) -> torch.Tensor:
        m = end
        att = torch.zeros(m, m)
        for j in range(m):
            row = draft.rows.get(j)
            if row is not None:
                att[j, : min(m, row.numel())] = row[:m]
        a_max = scoring.max_attention_received(att)[start:end]
        ent = torch.tensor([s.entropy for s in draft.steps[start:end]])
        content = torch.tensor(content_flags(draft.pieces[start:end]))
        if self.variant == "reference":
            return scoring.rind_scores_reference(ent, a_max, content)
        if self.variant != "paper":
            raise ValueError(f"rind variant must be 'paper' or 'reference', not {self.variant!r}")
        return scoring.rind_scores(ent, a_max, content)

    def __call__(self, draft: Draft) -> Decision | None:
        if not draft.sentence_end:
            return None
        start, end = draft.sentence_start, len(draft.steps)
        s = self.scores(draft, start, end)
        for i in range(start, end):
            draft.scores[i] = float(s[i - start])
        for i in range(max(start, draft.checked), end):
            if s[i - start] > self.theta:
                return Decision(reason=f"RIND {float(s[i - start]):.3g} > θ={self.theta:g} at {draft.pieces[i]!r}",
                                keep=i, span=(0, i), focus=i,
                                scores={draft.pieces[t]: float(s[t - start]) for t in range(start, end)
                                        if s[t - start] > 0})
        return None


TRIGGERS: Registry[type[Trigger]] = Registry("trigger")
TRIGGERS.register("never", NeverTrigger)
TRIGGERS.register("once", OnceTrigger)
TRIGGERS.register("every-n-tokens", EveryNTokensTrigger)
TRIGGERS.register("every-sentence", EverySentenceTrigger)
TRIGGERS.register("token-prob", TokenProbTrigger)
TRIGGERS.register("entity", EntityTrigger)
TRIGGERS.register("flare", FlareTrigger)
TRIGGERS.register("rind", RindTrigger)
