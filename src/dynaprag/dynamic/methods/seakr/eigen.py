"""SeaKR's eigen score exactly as the reference computes it: in float32.

SeaKR (Yao et al. 2024, Eq. 2, after INSIDE, Chen et al. 2024, Eq. 4-5) measures the
self-consistency of k sampled continuations by

    E(Z) = (1/k) · logdet(Z J_d Zᵀ + α I_k),   J_d = I_d − (1/d) 1 1ᵀ,   α = 1e-3,

where the rows of ``Z`` (``[k, d]``) are one embedding per sample. Reference: THU-KEG/SeaKR
@d75fe70 ``vllm_uncertainty/vllm/engine/llm_engine.py`` ``LLMEngine._compute_eigen_score``
(lines 738-744), called from ``compute_uncertainty`` on the samples whose text is not empty.

Why float32 and not float64 (the textbook computation):
the reference casts ``Z`` to float32 and forms the Gram matrix through ``J_d`` in float32.
When the samples nearly agree -- exactly the case SeaKR's threshold separates -- the centred
Gram matrix is a difference of nearly equal numbers and float32 keeps only about three of its
digits, so the reference's value carries a rounding error of a few 1e-4 relative that the
float64 computation does not have (``seakr_eigen.json`` case "one shared vector + 1e-3
noise": reference −6.15995, float64 −6.15758, float32 here −6.15943). Both are "right";
this one is the one SeaKR's θ = −6 was read against. The parity test pins it.

>>> import torch
>>> round(eigen_score(torch.zeros(3, 4)), 4)  # identical samples: (1/k) · k · log α
-6.9078
"""
from __future__ import annotations

from typing import Sequence

import torch

DEFAULT_ALPHA = 1e-3
"""``eigen_alpha`` of SeaKR's ``main_simpleqa.py`` and ``main_multihop.py``."""


def eigen_score(embeddings: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> float:
    """``(1/k) · logdet(Z J_d Zᵀ + α I_k)`` computed in float32 like the reference.

    ``embeddings`` is ``Z``, ``[k, d]``: in SeaKR the layer-15 MLP output (no residual) at an
    EOS token appended after each of the k = 20 samples. ``J_d`` centres each row over its
    *features* (not over the samples). ``torch.logdet`` (not ``slogdet``) as in the reference:
    a non-positive determinant, impossible in exact arithmetic, would give NaN.
    """
    z = embeddings.to(torch.float32)
    k, d = z.shape
    centring = (torch.eye(d) - (1 / d) * torch.ones(d, d)).to(z.device)
    gram = z @ centring @ z.t()
    return float((1 / k) * torch.logdet(gram + alpha * torch.eye(k, device=z.device)))


def samples_eigen_score(texts: Sequence[str], embeddings: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> float | None:
    """The eigen score of the samples whose text is not blank (``LLMEngine.compute_uncertainty``).

    The reference drops samples whose ``text.strip()`` is empty before stacking their
    embeddings and returns no score when none is left (``None`` here).
    """
    keep = [i for i, text in enumerate(texts) if text.strip()]
    if not keep:
        return None
    return eigen_score(embeddings[keep], alpha)
