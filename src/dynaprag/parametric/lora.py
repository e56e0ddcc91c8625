"""LoRA deltas applied on the fly: k rank-r adapters as one rank k·r adapter, base weights untouched.

PRAG (Su et al., SIGIR 2025, §3.3 "Knowledge Infusion") combines the adapters of the k
retrieved documents by summing their low-rank updates, ΔW = Σ_i s·B_i A_i (the reference
code calls peft's ``add_weighted_adapter(..., combination_type="cat")``), merges the sum into
the weights, answers, and unmerges. Summing deltas is exactly one LoRA of rank k·r:

    Σ_i s·B_i A_i  =  [B_1 … B_k] · [s·A_1; …; s·A_k]        (stack A rows, concatenate B columns)

so instead of a full-weight merge/unmerge per question (in bf16 the unmerge does not even
restore the base weights, see MODELS.md) we add ``B(Ax)`` to each target projection's output
with a forward hook: ``y = Wx + B_cat (A_cat x)``. Nothing is copied and the base weights never
change; leaving the context removes the hooks. DyPRAG's generated adapters use the same path.

An adapter is a flat ``{"<module>.lora_A": (r, in), "<module>.lora_B": (out, r)}`` dict, where
``<module>`` is the projection's name in ``model.named_modules()`` (e.g.
``model.layers.0.mlp.gate_proj``) — the same dict is what the store saves as safetensors.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

Adapter = Mapping[str, torch.Tensor]
DEFAULT_TARGETS = ("gate_proj", "up_proj", "down_proj")


def target_modules(model: nn.Module, targets: Sequence[str] = DEFAULT_TARGETS) -> dict[str, nn.Linear]:
    """The linear projections a LoRA attaches to, by full module name (peft's suffix matching)."""
    found = {name: mod for name, mod in model.named_modules()
             if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in targets}
    if not found:
        raise ValueError(f"model {type(model).__name__} has no linear modules named {list(targets)}: "
                         f"parametric injection needs a decoder whose MLP exposes these projections")
    return found


def module_names(adapter: Adapter) -> list[str]:
    """Module names an adapter touches, in a stable order."""
    return sorted({key.rsplit(".", 1)[0] for key in adapter if key.endswith(".lora_A")})


def from_peft_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Normalise peft's ``base_model.model.<module>.lora_A.weight`` keys to ``<module>.lora_A``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.(lora_[AB])(?:\.[^.]+)?\.weight", key)
        if match:
            out[f"{match.group(1)}.{match.group(2)}"] = value.detach().clone().contiguous()
    return out


def combine(adapters: Sequence[Adapter], scaling: float | Sequence[float],
            weights: Sequence[float] | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Concatenate k adapters into one rank-k·r adapter per module: ``{module: (A_cat, B_cat)}``.

    ``scaling`` (alpha/r, per adapter or shared) and the optional per-adapter ``weights`` are
    folded into the A rows, as peft's ``cat`` combination does, so the result applies as
    ``B_cat @ A_cat`` with scale 1 and equals ``Σ_i w_i·s_i·B_i A_i``.
    """
    if not adapters:
        return {}
    k = len(adapters)
    scales = [float(scaling)] * k if isinstance(scaling, (int, float)) else [float(s) for s in scaling]
    weights = [1.0] * k if weights is None else [float(w) for w in weights]
    if len(scales) != k or len(weights) != k:
        raise ValueError(f"combine: {k} adapters but {len(scales)} scalings and {len(weights)} weights")
    names = module_names(adapters[0])
    for i, adapter in enumerate(adapters[1:], 1):
        if module_names(adapter) != names:
            raise ValueError(f"combine: adapter {i} targets different modules than adapter 0")
    out = {}
    for name in names:
        a_rows = [adapter[f"{name}.lora_A"] * (w * s) for adapter, w, s in zip(adapters, weights, scales)]
        b_cols = [adapter[f"{name}.lora_B"] for adapter in adapters]
        out[name] = (torch.cat(a_rows, dim=0), torch.cat(b_cols, dim=1))
    return out


def delta_weight(adapter: Adapter, name: str, scaling: float) -> torch.Tensor:
    """The dense update ``s·B A`` of one module (reference for tests; never used online)."""
    a, b = adapter[f"{name}.lora_A"], adapter[f"{name}.lora_B"]
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return scaling * b.to(dtype) @ a.to(dtype)


_SUSPENDED = [0]


@contextmanager
def suspended() -> Iterator[None]:
    """Run the base model while adapters are applied (embedding or encoding a document mid-answer)."""
    _SUSPENDED[0] += 1
    try:
        yield
    finally:
        _SUSPENDED[0] -= 1


def _hook(a: torch.Tensor, b: torch.Tensor):
    def add_delta(_module, inputs, output):
        if _SUSPENDED[0]:
            return output
        return output + nn.functional.linear(nn.functional.linear(inputs[0], a), b)
    return add_delta


@contextmanager
def applied(model: nn.Module, combined: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> Iterator[int]:
    """Add ``B_cat(A_cat x)`` to each named projection's output while inside the context.

    Yields the number of hooked modules. The factors are cast once to the model's dtype and
    device; hooks are removed on exit even if decoding raises.
    """
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, (a, b) in combined.items():
            if name not in modules:
                raise KeyError(f"adapter targets module {name!r}, which this model does not have "
                               f"(adapter made for a different base model?)")
            mod = modules[name]
            weight = mod.weight
            if a.shape[1] != weight.shape[1] or b.shape[0] != weight.shape[0]:
                raise ValueError(f"adapter for {name}: A {tuple(a.shape)} / B {tuple(b.shape)} do not fit "
                                 f"weight {tuple(weight.shape)}")
            a_ = a.to(device=weight.device, dtype=weight.dtype)
            b_ = b.to(device=weight.device, dtype=weight.dtype)
            handles.append(mod.register_forward_hook(_hook(a_, b_)))
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


class LoraInjection:
    """A re-enterable context manager applying a combined adapter (``Injection.weights``)."""

    def __init__(self, model: nn.Module, combined: Mapping[str, tuple[torch.Tensor, torch.Tensor]]):
        self.model = model
        self.combined = dict(combined)
        self._ctx = None

    @property
    def rank(self) -> int:
        return next(iter(self.combined.values()))[0].shape[0] if self.combined else 0

    def __enter__(self) -> "LoraInjection":
        if self._ctx is not None:
            raise RuntimeError("LoraInjection is already applied")
        self._ctx = applied(self.model, self.combined)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            ctx.__exit__(*exc)
