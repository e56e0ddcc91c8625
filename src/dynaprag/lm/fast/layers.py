"""The decoder forward pass of the Llama and Qwen2 families, written out over a static KV cache.

Why hand-written: transformers' forward builds masks, cache objects and output records in
Python on every call (~40 % of a 135M step, ``bench/results/generator_profile.md``), and its
``StaticCache`` attends over the whole preallocated length. This pass does only the model's
arithmetic, reads the keys of the first ``span`` positions (a length bucket, see
:mod:`dynaprag.lm.fast.decoder`), and is one graph ``torch.compile`` can trace whole.

It computes what transformers' ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` compute, with the
transformers modules' own weights (the ``nn.Linear`` layers are used as they are, or replaced
by int8/int4 copies, :mod:`~dynaprag.lm.fast.quantize`): RMSNorm in float32 cast back,
RoPE from the model's own rotary module (any static ``rope_type``), grouped-query attention,
SiLU-gated MLP, tied or untied head. ``tests/test_fast_decoder.py`` checks logits, attention
rows and hidden states against transformers' forward.

Attention reads the cache without repeating keys per query head: a decode query of shape
``[batch, heads, T, d]`` is viewed as ``[batch, kv_heads, groups·T, d]`` (the heads sharing a
key head become extra query rows), so one fused SDPA call per layer does grouped attention.
When the caller wants attention weights, the *last* layer alone computes them explicitly as
transformers' eager attention does (``softmax(q·kᵀ·scale + mask)`` in float32, cast to the
query's dtype) for the query rows asked (the last position: what DRAGIN/attention triggers read).

Hidden states follow transformers' ``output_hidden_states`` numbering: index 0 the
embeddings, index i the output of decoder layer i, the last index after the final norm.
"""
from __future__ import annotations

import torch
from torch import nn

from dynaprag.lm.fast.quantize import quantize_linear

#: model types whose transformers implementation this pass reproduces
SUPPORTED_TYPES = ("llama", "qwen2")


def unsupported_reason(model) -> str | None:
    """Why the fast pass cannot run ``model`` (``None``: it can)."""
    config = model.config
    if getattr(config, "model_type", None) not in SUPPORTED_TYPES:
        return f"model type {getattr(config, 'model_type', None)!r} is not one of {SUPPORTED_TYPES}"
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()):
        return "sliding-window attention layers"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") == "dynamic":
        return "dynamic RoPE (its frequencies change with the sequence length)"
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "mlp_bias", False):
        return "an MLP other than SiLU-gated without bias"
    return None


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' ``LlamaRMSNorm``/``Qwen2RMSNorm``: normalise in float32, cast back, scale."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class FastLayer(nn.Module):
    """One decoder layer's weights: the transformers modules themselves, or int8 copies."""

    def __init__(self, layer, dtype: torch.dtype, quantize: str | None):
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        pick = (lambda m: quantize_linear(m, dtype, quantize)) if quantize else (lambda m: m)
        self.q, self.k, self.v, self.o = (pick(attn.q_proj), pick(attn.k_proj), pick(attn.v_proj), pick(attn.o_proj))
        self.gate, self.up, self.down = pick(mlp.gate_proj), pick(mlp.up_proj), pick(mlp.down_proj)
        self.ln1, self.ln2 = layer.input_layernorm, layer.post_attention_layernorm
        self.scaling = float(attn.scaling)


class FastLM(nn.Module):
    """The arithmetic of a Llama/Qwen2 causal LM over a :class:`~dynaprag.lm.fast.cache.StaticKVCache`.

    Computes in the model's dtype. ``quantize`` (``"int8"`` or ``"int4"``) replaces every linear
    layer, the head included, by a quantized copy (activations stay in the model's dtype: use a
    bf16 model, fp32 activations have no fast int8 kernel); ``None`` uses the model's own layers
    as they are (nothing is copied); ``float_weights=True`` in :meth:`forward` runs the model's own
    layers even then (prefill). ``positions`` is how many RoPE positions to tabulate.
    """

    def __init__(self, model, positions: int, quantize: str | None = None):
        super().__init__()
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"no fast decoder for this model: {reason}")
        config = model.config
        base = model.model
        self.dtype = next(model.parameters()).dtype
        self.layers = nn.ModuleList(FastLayer(layer, self.dtype, quantize) for layer in base.layers)
        # the model's own layers (nothing copied), for a prefill of many tokens under quantized weights:
        # it is bound by compute, where the int8/int4 kernels are slower than the float product
        self.float_layers = (nn.ModuleList(FastLayer(layer, self.dtype, None) for layer in base.layers)
                             if quantize else self.layers)
        self.embed = base.embed_tokens
        self.norm = base.norm
        # the head stays int8 under int4: the GGUF files keep the (tied) embedding at 8 bits or more,
        # so 4 bits would be a real loss there (max weight error 0.09 against int8's 0.008 on SmolLM2)
        head_scheme = "int8" if quantize == "int4" else quantize
        self.head = quantize_linear(model.lm_head, self.dtype, head_scheme) if quantize else model.lm_head
        self.float_head = model.lm_head
        self.eps = float(base.norm.variance_epsilon)
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        # RoPE tables for every position the cache can hold, from the model's own rotary module
        probe = torch.zeros(1, dtype=self.dtype)
        cos, sin = base.rotary_emb(probe, torch.arange(positions).unsqueeze(0))
        self.register_buffer("cos", cos[0].to(self.dtype), persistent=False)
        self.register_buffer("sin", sin[0].to(self.dtype), persistent=False)

    def forward(self, tokens: torch.Tensor, start: torch.Tensor, keys: list[torch.Tensor],
                values: list[torch.Tensor], span: int, want_attention: bool = False, float_weights: bool = False):
        """Feed ``tokens`` [B, T] at positions ``start[b] .. start[b]+T-1`` of each row; write their keys.

        Attention reads positions ``< span`` (which must exceed every ``start[b] + T - 1`` that
        matters). Returns ``(logits [B, V], hidden [layers+1, B, d], attention)`` for each row's
        last fed position; ``attention`` is the last layer's weights ``[B, heads, span]`` of that
        position when ``want_attention``, else ``None``.
        """
        batch, width = tokens.shape
        where = start[:, None] + torch.arange(width, device=tokens.device)            # [B, T]
        rows = torch.arange(batch, device=tokens.device)[:, None].expand(batch, width)
        cos, sin = self.cos[where][:, None], self.sin[where][:, None]                  # [B, 1, T, d]
        visible = torch.arange(span, device=tokens.device) <= where[..., None]         # [B, T, span]
        groups = self.heads // self.kv_heads
        mask = visible[:, None, None].expand(batch, 1, groups, width, span).reshape(batch, 1, groups * width, span)
        x = self.embed(tokens)
        hidden = [x[:, -1]]
        attention = None
        layers, head = (self.float_layers, self.float_head) if float_weights else (self.layers, self.head)
        last = len(layers) - 1
        for i, layer in enumerate(layers):
            h = _rms_norm(x, layer.ln1.weight, self.eps)
            q = layer.q(h).view(batch, width, self.heads, self.head_dim).transpose(1, 2)
            k = layer.k(h).view(batch, width, self.kv_heads, self.head_dim).transpose(1, 2)
            v = layer.v(h).view(batch, width, self.kv_heads, self.head_dim)
            q = q * cos + _rotate_half(q) * sin
            k = (k * cos + _rotate_half(k) * sin).transpose(1, 2)                       # [B, T, kvh, d]
            keys[i][rows, :, where] = k
            values[i][rows, :, where] = v
            ks, vs = keys[i][:, :, :span], values[i][:, :, :span]
            qg = q.reshape(batch, self.kv_heads, groups * width, self.head_dim)
            if want_attention and i == last:
                scores = torch.matmul(qg, ks.transpose(2, 3)) * layer.scaling
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
                weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
                out = torch.matmul(weights, vs)
                attention = weights.view(batch, self.heads, width, span)[:, :, -1]
            else:
                out = torch.nn.functional.scaled_dot_product_attention(qg, ks, vs, attn_mask=mask,
                                                                       scale=layer.scaling)
            out = out.view(batch, self.heads, width, self.head_dim).transpose(1, 2).reshape(batch, width, -1)
            x = x + layer.o(out)
            h = _rms_norm(x, layer.ln2.weight, self.eps)
            x = x + layer.down(torch.nn.functional.silu(layer.gate(h)) * layer.up(h))
            hidden.append(x[:, -1])
        final = _rms_norm(x[:, -1], self.norm.weight, self.eps)
        hidden[-1] = final
        logits = head(final)
        return logits, torch.stack(hidden), attention
