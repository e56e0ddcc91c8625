"""SeaKR's trigger: self-aware uncertainty from the hidden states of sampled continuations.

Yao et al. 2024, "SeaKR: Self-aware Knowledge Retrieval for Adaptive Retrieval Augmented
Generation", §3.1-3.3. Before the answer and after each sentence, ``k`` continuations of the
next sentence are sampled *as one batch*; the hidden state of each continuation's last token at
the model's middle layer forms ``Z`` and the eigen score ``(1/k)·logdet(Z J Zᵀ + αI)`` measures
how much they disagree (:func:`~dynaprag.dynamic.scoring.eigen_score`). Retrieval fires when it
exceeds θ. The retrieved passages are then re-ranked by the uncertainty the model shows with
each one in context (lowest first), SeaKR's "self-aware re-ranking" (§3.3).

Defaults: k = 20, α = 1e-3, θ = -6 as the paper. Deviation: each sample is one sentence of at
most ``sample_tokens`` tokens (the paper samples one reasoning step), to bound CPU time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from dynaprag.dynamic import scoring
from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.triggers import TRIGGERS, Trigger


@dataclass
class SeakrTrigger(Trigger):
    """Retrieve when the eigen score of ``k`` sampled next sentences exceeds θ (SeaKR Eq. 2)."""

    k: int = field(default=20, metadata={"help": "sampled continuations per check (SeaKR: 20)"})
    alpha: float = field(default=1e-3, metadata={"help": "regulariser alpha in logdet(Z J Z^T + alpha I)"})
    theta: float = field(default=-6.0, metadata={"help": "retrieve when the eigen score exceeds theta"})
    layer: int = field(default=-1, metadata={"help": "hidden_states index read; -1 = the middle layer"})
    sample_tokens: int = field(default=20, metadata={"help": "token budget of each sampled sentence"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the k samples"})
    rerank: bool = field(default=True, metadata={"help": "re-rank hits by the uncertainty they leave"})
    hidden_layers: ClassVar[tuple[int, ...]] = ()

    def uncertainty(self, draft: Draft, passages=None) -> float:
        layer = draft.middle_layer if self.layer < 0 else self.layer
        samples = draft.sample(self.k, self.sample_tokens, passages=passages, hidden_layers=(layer,),
                               temperature=self.temperature)
        rows = [g.steps[-1].hidden[layer] for g in samples if g.steps and layer in g.steps[-1].hidden]
        if len(rows) < 2:
            return float("-inf")
        return scoring.eigen_score(torch.stack(rows), self.alpha)

    def __call__(self, draft: Draft) -> Decision | None:
        if not (draft.at_start or draft.sentence_end):
            return None
        score = self.uncertainty(draft)
        if draft.steps:
            draft.scores[len(draft.steps) - 1] = score
        if score > self.theta:
            return Decision(reason=f"eigen score {score:.3g} > θ={self.theta:g} over {self.k} samples",
                            keep=len(draft.steps), scores={"eigen_score": score})
        return None

    def select(self, hits: list, draft: Draft) -> list:
        if not self.rerank or len(hits) < 2:
            return hits
        scored = [(self.uncertainty(draft, passages=[h.passage]), i, h) for i, h in enumerate(hits)]
        scored.sort(key=lambda t: (t[0], t[1]))
        return [h for _, _, h in scored]


TRIGGERS.register("seakr", SeakrTrigger)
