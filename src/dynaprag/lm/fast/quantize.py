"""Weight-only quantized linear layers (int8 per channel, int4 per group of 32), activations untouched.

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

**int4** (:class:`Int4Linear`): 4-bit weights in groups of 32 input features, each group with
its own scale and offset (``w = (q - 8)·scale + zero``, the layout of
``torch._weight_int4pack_mm_for_cpu``). This is the byte budget llama.cpp decodes with, and for
the bundled models it is nearly lossless: their weights *are* 4-bit already (the GGUF files are
Q4_1 / Q4_K: blocks of 32 along the input dimension, min/max quantised, which is exactly what
:meth:`Int4Linear.from_linear` fits), so re-quantising them on the same grid recovers the file's
values up to the bf16 rounding of scale and offset. A linear layer whose input size is not a
multiple of 32 stays int8.

The float model is not modified: :func:`quantize_linear` builds new modules that share
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


class Int4Linear(nn.Module):
    """``y = x · dequant(w)ᵀ + b`` with 4-bit ``w`` in groups of ``GROUP`` input features (packed for CPU)."""

    GROUP = 32

    def __init__(self, packed: torch.Tensor, scales_zeros: torch.Tensor, bias: torch.Tensor | None,
                 in_features: int, out_features: int):
        super().__init__()
        self.register_buffer("packed", packed)
        self.register_buffer("scales_zeros", scales_zeros)
        self.register_buffer("bias", bias)
        self.in_features, self.out_features = in_features, out_features

    @staticmethod
    def fits(linear: nn.Linear) -> bool:
        return linear.in_features % Int4Linear.GROUP == 0

    @classmethod
    def grid(cls, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes ``q`` in 0..15 [out, in], scales and zeros [out, in/GROUP]: min/max per group of 32."""
        out_f, in_f = weight.shape
        w = weight.detach().float().view(out_f, in_f // cls.GROUP, cls.GROUP)
        low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=1e-12)
        q = torch.round((w - low) / scale).clamp(0, 15)
        zero = low + 8 * scale
        return q.to(torch.int32).view(out_f, in_f), scale.squeeze(-1), zero.squeeze(-1)

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype) -> "Int4Linear":
        q, scale, zero = cls.grid(linear.weight)
        scales_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(dtype)
        packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
        bias = None if linear.bias is None else linear.bias.detach().to(dtype).clone()
        return cls(packed, scales_zeros, bias, linear.in_features, linear.out_features)

    def dequantized(self) -> torch.Tensor:
        """The weight this layer multiplies by, [out, in] float32 (for tests and reports)."""
        eye = torch.eye(self.in_features, dtype=self.scales_zeros.dtype)
        return torch._weight_int4pack_mm_for_cpu(eye, self.packed, self.GROUP, self.scales_zeros).float().T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if not flat.is_contiguous():
            flat = flat.contiguous()
        y = torch._weight_int4pack_mm_for_cpu(flat, self.packed, self.GROUP, self.scales_zeros)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 weights (groups of 32)"


#: ``quantize=`` choices of the fast decoder
SCHEMES = ("int8", "int4")


def quantize_linear(linear: nn.Module, dtype: torch.dtype, scheme: str = "int8") -> nn.Module:
    """A quantized copy of an ``nn.Linear`` (``scheme`` int8 or int4); anything else is returned as it is."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization {scheme!r}; choose one of {SCHEMES}")
    if not isinstance(linear, nn.Linear):
        return linear
    if scheme == "int4" and Int4Linear.fits(linear):
        return Int4Linear.from_linear(linear, dtype)
    return Int8Linear.from_linear(linear, dtype)


def dequantized_error(linear: nn.Linear) -> float:
    """The largest absolute weight error int8 quantization makes on ``linear`` (for reports)."""
    q = Int8Linear.from_linear(linear, torch.float32)
    return float((q.weight.float() * q.scales[:, None] - linear.weight.detach().float()).abs().max())
