"""Self-RAG's scores, pure functions over reflection-token probabilities (unit-tested by hand).

The retrieval decision's normalised probability and the short-form segment score of Asai et al.
2024 (§3.3 Eq. 4 and the released inference); :mod:`.components` only reads the probabilities
from the model and calls these.

>>> round(selfrag_segment_score(0.0, [1.0, 0.0], [1.0, 0.0, 0.0], [0, 0, 0, 0, 1]), 3)
3.5
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def normalised_probability(logprobs: torch.Tensor, positive: Sequence[int], negative: Sequence[int]) -> float:
    """``Σ p(positive) / (Σ p(positive) + Σ p(negative))`` over token ids (Self-RAG's retrieve score)."""
    p = logprobs.float().exp()
    pos = float(p[list(positive)].sum())
    neg = float(p[list(negative)].sum())
    return pos / (pos + neg) if pos + neg > 0 else 0.0


UTILITY_WEIGHTS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def selfrag_segment_score(sequence_logprob: float, relevance: Sequence[float], support: Sequence[float],
                          utility: Sequence[float], w_rel: float = 1.0, w_sup: float = 1.0,
                          w_use: float = 0.5) -> float:
    """Self-RAG short-form segment score (Asai et al. 2024, §3.3 Eq. 4 and the released inference).

    ``exp(mean log-prob) + w_rel·s_rel + w_sup·s_sup + w_use·s_use`` where each critique score is
    a normalised probability over its reflection tokens:
    ``relevance`` = p([Relevant]), p([Irrelevant]) → ``s_rel = p(Relevant)/Σ``;
    ``support`` = p([Fully supported]), p([Partially supported]), p([No support]) →
    ``s_sup = (p_full + 0.5·p_partial)/Σ``; ``utility`` = p([Utility:1..5]) →
    ``s_use = Σ_i u_i p_i / Σ`` with ``u = (-1, -0.5, 0, 0.5, 1)``. Paper weights 1, 1, 0.5.
    """
    rel = torch.as_tensor(relevance, dtype=torch.float64)
    sup = torch.as_tensor(support, dtype=torch.float64)
    use = torch.as_tensor(utility, dtype=torch.float64)
    s_rel = float(rel[0] / rel.sum()) if rel.sum() > 0 else 0.0
    s_sup = float((sup[0] + 0.5 * sup[1]) / sup.sum()) if sup.sum() > 0 else 0.0
    s_use = float((use * torch.tensor(UTILITY_WEIGHTS, dtype=torch.float64)).sum() / use.sum()) if use.sum() > 0 else 0.0
    return math.exp(sequence_logprob) + w_rel * s_rel + w_sup * s_sup + w_use * s_use
