"""Weight-only int8 linear layers: per-output-channel int8 weights, activations untouched.

Decoding one sequence is bound by reading the weights (MODELS.md: ``aten::mm`` is ~90 % of a
135M step), so halving their bytes against bf16 is the largest single speed-up available.
Each weight row ``w[n]`` is stored as ``round(w[n] / s[n])`` in int8 with the scale
``s[n] = max|w[n]| / 127`` (symmetric, per output channel); the product runs in
``torch._weight_int8pack_mm`` (activations in bf16, fp16 or fp32, int8 weights dequantised in
the kernel), the op torchao's ``Int8WeightOnlyConfig`` dispatches to on CPU, so the extra
dependency buys nothing here. Activations are never quantized: dynamic int8
(``torch.ao.quantization.quantize_dynamic``) also quantizes them per tensor and breaks the
model's signals (MODELS.md: top-1 agreement 0.51, entropy off by 1.1 nats).

Measured effect on the signals (``bench/results/generator*.md``): see the ``int8`` rows. With
fp32 activations the kernel has no fast path (MODELS.md: 3x slower than fp32), so the fast
decoder pairs int8 weights with bf16 activations.

The float model is not modified: :func:`quantize_linears` builds new modules that share
nothing with it, so the eager path and adapters keep working on the original weights.
"""
from __future__ import annotations

import torch
from torch import nn


class Int8Linear(nn.Module):
    """``y = x · dequant(w)ᵀ + b`` with int8 ``w`` [out, in] and one scale per output channel."""

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype) -> "Int8Linear":
        """Quantize ``linear``'s weight (in float32, whatever its dtype); scales and bias in ``dtype``."""
        w = linear.weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
        q = torch.round(w / scales[:, None]).clamp(-128, 127).to(torch.int8).contiguous()
        bias = None if linear.bias is None else linear.bias.detach().to(dtype).clone()
        return cls(q, scales.to(dtype), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if not flat.is_contiguous():
            flat = flat.contiguous()
        y = torch._weight_int8pack_mm(flat, self.weight, self.scales)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize_linear(linear: nn.Module, dtype: torch.dtype) -> nn.Module:
    """An :class:`Int8Linear` copy of an ``nn.Linear`` (anything else is returned as it is)."""
    return Int8Linear.from_linear(linear, dtype) if isinstance(linear, nn.Linear) else linear


def dequantized_error(linear: nn.Linear) -> float:
    """The largest absolute weight error int8 quantization makes on ``linear`` (for reports)."""
    q = Int8Linear.from_linear(linear, torch.float32)
    return float((q.weight.float() * q.scales[:, None] - linear.weight.detach().float()).abs().max())
