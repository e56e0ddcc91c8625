"""Pure scoring functions of the dynamic methods, over plain tensors (unit-tested by hand).

Each function is the equation of one paper; the triggers in :mod:`dynaprag.dynamic.triggers`
only gather the tensors from the decoding steps and call these.

>>> import torch
>>> rind_scores(torch.tensor([2.0, 1.0]), torch.tensor([0.5, 0.9]), torch.tensor([1.0, 0.0])).tolist()
[1.0, 0.0]
"""
from __future__ import annotations

import math
from typing import Sequence

import torch



def max_attention_received(attention: torch.Tensor) -> torch.Tensor:
    """DRAGIN's ``a_max(i) = max_{j>i} A_{j,i}``: the largest attention any *later* token pays to ``i``.

    ``attention`` is a square ``[n, n]`` matrix whose row ``j`` is how token ``j`` attends to
    tokens ``0..n-1`` (rows are causal, so only ``i < j`` matters). The last token has no later
    token and scores 0.
    """
    n = attention.shape[0]
    strictly_later = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)  # j > i
    masked = torch.where(strictly_later, attention.float(), torch.zeros((), dtype=torch.float32))
    return masked.max(dim=0).values if n else masked.new_zeros(0)


def rind_scores(entropies: torch.Tensor, attention_max: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """DRAGIN's RIND, Eq. (4): ``S_RIND(t_i) = H_i · a_max(i) · s_i``.

    ``H_i`` token entropy (Eq. 2), ``a_max(i)`` the maximum attention later tokens pay to it
    (Eq. 3), ``s_i`` 1 for content words and 0 for stop words. Retrieval fires when ``S > θ``.
    """
    return entropies.float() * attention_max.float() * content.float()


def low_probability(probs: Sequence[float] | torch.Tensor, threshold: float, inclusive: bool = False) -> list[bool]:
    """True per token whose probability is below ``threshold`` (``≤`` when ``inclusive``).

    TokenRAG's trigger (``p < θ``), FLARE's trigger (§3.2, "FLARE_direct": any ``p ≤ θ``) and
    FLARE's masked query (§3.2.1, mask ``p ≤ β``) are all this test. Compared as Python floats,
    as the FLARE reference receives them (a float32 0.8 is then not ``≤ 0.8``).
    """
    return [(float(p) <= threshold) if inclusive else (float(p) < threshold) for p in probs]


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


def top_n_in_order(weights: Sequence[float], n: int) -> list[int]:
    """Indices of the ``n`` largest weights, returned in their original order (DRAGIN's QFS, §3.2)."""
    order = sorted(range(len(weights)), key=lambda i: (-weights[i], i))[:n]
    return sorted(order)
