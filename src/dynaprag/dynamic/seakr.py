"""SeaKR: self-aware uncertainty from the hidden states of sampled continuations.

Yao et al. 2024, "SeaKR: Self-aware Knowledge Retrieval for Adaptive Retrieval Augmented
Generation", §3.1-3.3. Before the answer and after each sentence, ``samples`` continuations of
the next sentence are sampled *as one batch*; the hidden state of each continuation's last
token at the model's middle layer forms ``Z`` and the eigen score ``(1/k)·logdet(Z J Zᵀ + αI)``
measures how much they disagree (:func:`~dynaprag.dynamic.eigen.eigen_score`, in float32 as the reference). The trigger
fires when it exceeds θ; the selector re-ranks the retrieved passages by the uncertainty the
model shows with each one in context (lowest first), SeaKR's "self-aware re-ranking" (§3.3).

Defaults: 20 samples, α = 1e-3, θ = -6 as the paper. Deviation: each sample is one sentence of
at most ``sample_tokens`` tokens (the paper samples one reasoning step), to bound CPU time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from dynaprag.dynamic import eigen
from dynaprag.dynamic.draft import Decision, Draft
from dynaprag.dynamic.selectors import SELECTORS, Selector
from dynaprag.dynamic.triggers import TRIGGERS, Trigger


@dataclass
class _Sampling:
    """The knobs of SeaKR's uncertainty estimate, shared by its trigger and its selector."""

    samples: int = field(default=20, metadata={"help": "sampled continuations per estimate (SeaKR: 20)", "min": 2})
    alpha: float = field(default=1e-3, metadata={"help": "regulariser alpha in logdet(Z J Z^T + alpha I)",
                                                 "min": 0.0})
    layer: int = field(default=-1, metadata={"help": "hidden_states index read; -1 = the middle layer"})
    sample_tokens: int = field(default=20, metadata={"help": "token budget of each sampled sentence", "min": 1})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the samples", "min": 0.0})
    needs_probe: ClassVar[bool] = True

    def uncertainty(self, probe, passages=None) -> float:
        layer = probe.middle_layer if self.layer < 0 else self.layer
        samples = probe.sample(self.samples, self.sample_tokens, passages=passages, hidden_layers=(layer,),
                               temperature=self.temperature)
        rows = [g.steps[-1].hidden[layer] for g in samples if g.steps and layer in g.steps[-1].hidden]
        if len(rows) < 2:
            return float("-inf")
        return eigen.eigen_score(torch.stack(rows), self.alpha)


@dataclass
class SeakrTrigger(_Sampling, Trigger):
    """Retrieve when the eigen score of the sampled next sentences exceeds θ (SeaKR Eq. 2)."""

    theta: float = field(default=-6.0, metadata={"help": "retrieve when the eigen score exceeds theta"})
    calibratable: ClassVar[bool] = True

    def __call__(self, draft: Draft, probe=None) -> Decision | None:
        if not (draft.at_start or draft.sentence_end):
            return None
        score = self.uncertainty(probe)
        token_scores = {len(draft.steps) - 1: score} if draft.steps else {}
        if score > self.theta:
            return Decision.fire(f"eigen score {score:.3g} > θ={self.theta:g} over {self.samples} samples",
                                 keep=len(draft.steps), scores={"eigen_score": score}, token_scores=token_scores)
        return Decision.hold(token_scores=token_scores)


@dataclass
class SeakrSelector(_Sampling, Selector):
    """SeaKR's self-aware re-ranking: hits ordered by the uncertainty each leaves (lowest first)."""

    def __call__(self, hits: list, draft: Draft, probe=None) -> list:
        if len(hits) < 2:
            return list(hits)
        scored = [(self.uncertainty(probe, passages=[h.passage]), i, h) for i, h in enumerate(hits)]
        scored.sort(key=lambda t: (t[0], t[1]))
        return [h for _, _, h in scored]


TRIGGERS.register("seakr", SeakrTrigger)
SELECTORS.register("seakr-uncertainty", SeakrSelector)
