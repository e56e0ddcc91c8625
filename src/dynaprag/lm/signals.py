"""Pure per-token signal functions over logits (tested on hand-made arrays).

These are the white-box quantities the dynamic methods read: log-probability of the chosen
token, Shannon entropy of the full next-token distribution (DRAGIN Eq. 2), top alternatives.
"""
from __future__ import annotations

import torch


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities in float32, whatever the model's dtype (bf16 log-probs are too coarse)."""
    return torch.log_softmax(logits.float(), dim=-1)


def entropy(logprobs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats, ``-sum p log p`` over the last axis; zero-probability terms add 0."""
    probs = logprobs.exp()
    return -(probs * torch.where(probs > 0, logprobs, torch.zeros_like(logprobs))).sum(-1)


def top_alternatives(logprobs: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
    """The ``k`` most probable token ids of a 1-D log-prob vector and their log-probs."""
    if k <= 0:
        return [], []
    values, ids = torch.topk(logprobs, k)
    return ids.tolist(), values.tolist()


def apply_sampling(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Log-probs of the sampling distribution after temperature and nucleus (top-p) filtering."""
    scaled = logits.float() / max(temperature, 1e-6)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.log_softmax(scaled, dim=-1)
