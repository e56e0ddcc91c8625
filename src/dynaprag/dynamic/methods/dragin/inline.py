"""The ``dragin-inline`` variant: DRAGIN's printed Eq. 4 on the attention captured while generating.

Neither component is the reference's procedure (that is :mod:`.components`): the trigger scores
each token as it is generated, with no look-ahead pass, and the query keeps the context words the
triggering token attends to most (the paper's QFS, §3.2). The cheapest attention-based method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from dynaprag import nlp
from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.methods.dragin import rind
from dynaprag.dynamic.queries import FORMULATORS, QueryFormulator
from dynaprag.dynamic.scoring import top_n_in_order
from dynaprag.dynamic.text import content_flags, is_content_word, word_groups
from dynaprag.dynamic.triggers import TRIGGERS, Trigger
from dynaprag.lm.signals import ATTENTION


@dataclass
class InlineRindTrigger(Trigger):
    """RIND inline (variant ``dragin-inline``): DRAGIN's Eq. 4, ``S(t_i) = H_i · a_max(i) · s_i > θ``,
    on the attention rows captured while generating (no extra forward pass, no look-ahead).

    ``H_i`` is the token's entropy, ``a_max(i)`` the largest last-layer (head-averaged)
    attention a later token of the answer pays to it (the full prompt in context), ``s_i`` 0
    for stop words. Evaluated at each sentence end over the sentence's new tokens; the last
    token of a sentence has no later token yet and scores 0. On a hit the draft is cut *at* the
    triggering token. It is the cheapest attention trigger, not the reference's procedure
    (that is ``rind``, :mod:`dynaprag.dynamic.methods.dragin.components`): its scores live on another scale.
    """

    theta: float = field(default=1.2, metadata={"help": "retrieve when S_RIND > theta"})
    reads: ClassVar[tuple] = (ATTENTION,)
    rolls_back: ClassVar[bool] = True
    calibratable: ClassVar[bool] = True

    def scores(self, draft: Draft, start: int, end: int) -> torch.Tensor:
        m = end
        att = torch.zeros(m, m)
        rows = draft.filed(ATTENTION)
        for j in range(m):
            filed = rows.get(j + 1)  # token j's own row arrives with the step that chose token j + 1
            if filed is not None:
                att[j, : min(m, filed.answer.numel())] = filed.answer[:m]
        a_max = rind.max_attention_received(att)[start:end]
        ent = torch.tensor([s.entropy for s in draft.steps[start:end]])
        content = torch.tensor(content_flags(draft.pieces[start:end]))
        return rind.rind_scores(ent, a_max, content)

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if not draft.sentence_end:
            return None
        start, end = draft.sentence_start, len(draft.steps)
        s = self.scores(draft, start, end)
        token_scores = {i: float(s[i - start]) for i in range(start, end)}
        for i in range(max(start, draft.checked), end):
            if s[i - start] > self.theta:
                return Decision.fire(
                    f"RIND {float(s[i - start]):.3g} > θ={self.theta:g} at {draft.pieces[i]!r}",
                    keep=i, span=(0, i), at=i, token_scores=token_scores,
                    scores={draft.pieces[t]: float(s[t - start]) for t in range(start, end) if s[t - start] > 0})
        return Decision.hold(token_scores=token_scores)


@dataclass
class AttentionQuery(QueryFormulator):
    """DRAGIN's QFS (Su et al. 2024, §3.2): the ``n`` context words the triggering token attends
    to most (last layer, head-averaged), stop words removed, kept in their original order.

    The context is the question and the answer before the triggering token; the attention row
    is the triggering token's own (captured by the next step's forward pass), or the row of the
    pass that chose it when the token ended the sentence. ``n = 35`` is the HotpotQA setting
    of the paper's code (25 in the paper's text for 2Wiki). ``filter="pos"`` keeps words with a
    spaCy noun, verb, adjective, proper noun or number, as the reference code's word filter.
    """

    n: int = field(default=35, metadata={"help": "words kept in the query (DRAGIN: 25-40)", "min": 1,
                                               "max": 1000})
    filter: str = field(default="stopwords", metadata={"help": "stopwords (paper) | pos (reference code, spaCy)",
                                                       "choices": ("stopwords", "pos")})
    reads: ClassVar[tuple] = (ATTENTION,)

    def __call__(self, draft: Draft, decision: Decision, probe=None) -> str:
        i = decision.at if decision.at is not None else max(0, len(draft.steps) - 1)
        rows = draft.filed(ATTENTION)
        filed = rows.get(i + 1, rows.get(i))  # its own row if it has come, else the row that chose it
        answer_row = None if filed is None else filed.answer
        question_row = None if filed is None else filed.question
        pieces = list(draft.question_pieces) + draft.pieces[:i]
        weights = ([] if question_row is None else question_row.tolist())[: len(draft.question_pieces)]
        weights += [0.0] * (len(draft.question_pieces) - len(weights))
        answer_w = [] if answer_row is None else answer_row.tolist()[:i]
        weights += answer_w + [0.0] * (i - len(answer_w))
        groups = word_groups(pieces)
        keep_word = self._filter(["".join(pieces[j] for j in g) for g in groups])
        words, word_w = [], []
        for group, ok in zip(groups, keep_word):
            if ok:
                words.append("".join(pieces[j] for j in group).strip())
                word_w.append(max(weights[j] for j in group))
        if not words:
            return draft.question
        return " ".join(words[j] for j in top_n_in_order(word_w, self.n))

    def _filter(self, words: list[str]) -> list[bool]:
        if self.filter == "pos":
            real = nlp.real_words("".join(words))
            return [bool(w.strip()) and nlp.contains_real_word(w.strip(), real) for w in words]
        return [is_content_word(w) for w in words]


TRIGGERS.register("rind-inline", InlineRindTrigger)
FORMULATORS.register("qfs", AttentionQuery)
