"""Pure scoring functions shared by the generic components, over plain values (unit-tested by hand).

Each function is the equation of one paper; the triggers and formulators only gather the values
from the decoding steps and call these. A function only one family uses lives in that family's
folder (DRAGIN's Eq. 4 in :mod:`dynaprag.dynamic.methods.dragin.rind`, Self-RAG's segment score
in :mod:`dynaprag.dynamic.methods.selfrag.scores`).

>>> low_probability([0.9, 0.8, 0.7], 0.8), low_probability([0.9, 0.8, 0.7], 0.8, inclusive=True)
([False, False, True], [False, True, True])
"""
from __future__ import annotations

from typing import Sequence

import torch


def low_probability(probs: Sequence[float] | torch.Tensor, threshold: float, inclusive: bool = False) -> list[bool]:
    """True per token whose probability is below ``threshold`` (``≤`` when ``inclusive``).

    TokenRAG's trigger (``p < θ``), FLARE's trigger (§3.2, "FLARE_direct": any ``p ≤ θ``) and
    FLARE's masked query (§3.2.1, mask ``p ≤ β``) are all this test. Compared as Python floats,
    as the FLARE reference receives them (a float32 0.8 is then not ``≤ 0.8``).
    """
    return [(float(p) <= threshold) if inclusive else (float(p) < threshold) for p in probs]


def top_n_in_order(weights: Sequence[float], n: int) -> list[int]:
    """Indices of the ``n`` largest weights, returned in their original order (DRAGIN's QFS, §3.2)."""
    order = sorted(range(len(weights)), key=lambda i: (-weights[i], i))[:n]
    return sorted(order)
