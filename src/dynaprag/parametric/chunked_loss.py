"""DyPRAG's LM and KL losses over a long padded sample, without holding all of its logits.

The reference pads each translator sample to 3000 positions and sums the KL over all of them
(``TranslatorConfig.kl_reduction="padded-sum"``). Computed directly, one step on
Qwen2.5-Coder-0.5B keeps every layer's activations for the backward pass, and holds the
logits of 3000 positions x 151,936 tokens several times (teacher, student, two
log-softmaxes, the KL terms, the cross-entropy: 1.8 GB each in float32). That is more than
11 GB (measured: such a step ran out of an 11 GB limit in the student forward), too much
for a 24 GB machine that also answers questions. Here the same sums are computed with less:

* the student's decoder runs with activation checkpointing (:func:`layer_checkpointing`):
  each layer keeps only its input and recomputes its activations in the backward pass;
* the output head, the cross-entropy and the KL run position chunk by position chunk under
  :func:`torch.utils.checkpoint.checkpoint`, so only one chunk's logits exist at a time.

The results equal the direct computation up to floating-point summation order
(``tests/test_parametric_translator.py`` compares losses and gradients on the real model).
The backward pass must run while the adapters' hooks are still applied, because the
recomputed layers must see them again.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

_HEAD_CHECKED: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()


def has_dropout(model: nn.Module) -> bool:
    """Whether training mode would change the model's outputs (dropout anywhere, attention's included)."""
    attention = float(getattr(model.config, "attention_dropout", 0.0) or 0.0)
    return attention > 0 or any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


@contextmanager
def layer_checkpointing(model: nn.Module) -> Iterator[bool]:
    """Recompute each decoder layer's activations in the backward pass, inside the context.

    transformers checkpoints layers only in training mode, so the model is put in training
    mode and restored on exit. Yields whether checkpointing is on: it is not for a model with
    dropout, whose outputs training mode would change (that model keeps its activations).
    """
    if has_dropout(model) or not getattr(model, "supports_gradient_checkpointing", False):
        yield False
        return
    new_api = hasattr(type(model), "is_activation_checkpointing")  # transformers >= 5.2x renamed it
    was_on = bool(model.is_activation_checkpointing if new_api else model.is_gradient_checkpointing)
    was_training = model.training
    if not was_on:
        if new_api:
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:  # pragma: no cover - older transformers
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    try:
        yield True
    finally:
        model.train(was_training)
        if not was_on:
            (model.activation_checkpointing_disable if new_api else model.gradient_checkpointing_disable)()


def final_hidden(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden states (after its final norm): what the output head reads."""
    return model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state


def check_head(model: nn.Module, ids: torch.Tensor) -> None:
    """Refuse a model whose logits are not ``head(final_hidden)`` (e.g. soft-capped logits), once per model."""
    if _HEAD_CHECKED.get(model):
        return
    probe = ids[:, : min(8, ids.shape[1])]
    with torch.no_grad():
        direct = model(input_ids=probe, use_cache=False).logits.float()
        mine = model.get_output_embeddings()(final_hidden(model, probe, torch.ones_like(probe))).float()
    if not torch.allclose(direct, mine, rtol=1e-3, atol=1e-3):
        raise ValueError(f"{type(model).__name__}: its logits are not its output head applied to the decoder's "
                         f"last hidden states, so the chunked translator loss cannot compute them; set "
                         f"translator.loss_chunk=0 (the whole sample's logits at once)")
    _HEAD_CHECKED[model] = True


def chunked_lm_and_kl(model: nn.Module, hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                      labels: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean next-token cross-entropy over the labelled positions, KL summed over every position
    and the vocabulary), as transformers' causal-LM loss and ``kl_div(..., "batchmean")`` at batch 1
    compute them, from the student's and the teacher's last hidden states."""
    head = model.get_output_embeddings()
    targets = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], dim=1)  # next token
    count = int((targets != -100).sum())

    def piece(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor):
        log_p = F.log_softmax(head(student).float(), dim=-1)
        with torch.no_grad():
            log_q = F.log_softmax(head(teacher).float(), dim=-1)
        ce = F.nll_loss(log_p.flatten(0, 1), target.flatten(), ignore_index=-100, reduction="sum")
        return ce, F.kl_div(log_p, log_q, log_target=True, reduction="sum")

    ce_sum = kl_sum = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[1], chunk):
        end = start + chunk
        ce, kl = checkpoint(piece, hidden[:, start:end], teacher_hidden[:, start:end], targets[:, start:end],
                            use_reentrant=False)
        ce_sum, kl_sum = ce_sum + ce, kl_sum + kl
    return ce_sum / max(count, 1), kl_sum / hidden.shape[0]
