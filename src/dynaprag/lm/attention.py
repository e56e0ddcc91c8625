"""The last layer's attention *rows*, computed only for the rows a component reads, in chunks.

Why: DRAGIN reads attention from a fresh forward pass over a text (its look-ahead, or the
question + answer so far for its query). Asking transformers for ``output_attentions`` makes
every layer eager and keeps every layer's ``[heads, n, n]`` weights: memory grows with
``layers · heads · n²`` (a 7k-token question took a server to 18.7 GB). A component reads one
layer and, for the query, a few rows of it. So here only the last decoder layer gets a custom
attention function (registered with transformers' ``AttentionInterface``); every other layer
keeps the model's own implementation (SDPA: memory linear in ``n``). That function computes
the layer's output with SDPA too, and the requested rows of its weights the way eager
attention computes them (``softmax(q·kᵀ·scaling + mask)`` in float32, cast to the query's
dtype), a chunk of query rows at a time (as many as keep a chunk's scores near 32 MiB, at
least 16), so the extra memory is ``heads · rows · n`` floats plus one chunk.

>>> tap = AttentionRowsTap(model)                                          # doctest: +SKIP
>>> with tap.reading(rows=[5, 6]) as got:                                  # doctest: +SKIP
...     model(input_ids=ids, use_cache=False, logits_to_keep=1)            # doctest: +SKIP
>>> got.weights.shape                                                      # doctest: +SKIP
torch.Size([9, 2, 40])
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

IMPLEMENTATION = "dynaprag_rows"
"""The name under which :func:`rows_attention` is registered with transformers."""


@dataclass
class RowRequest:
    """Which query rows to keep (``None``: all), and the weights once the pass has run."""

    rows: Sequence[int] | None
    chunk_rows: int | None = None  # None: as many rows as keep one chunk's scores near ``chunk_bytes``
    chunk_bytes: int = 32 << 20
    keep: bool = True  # False: a layer whose weights nobody reads (only its output is computed)
    weights: torch.Tensor | None = field(default=None, init=False)  # [heads, len(rows), n]


def _row_mask(attention_mask: torch.Tensor | None, rows: torch.Tensor, q_len: int, k_len: int,
              dtype: torch.dtype) -> torch.Tensor:
    """The additive mask of the chosen query rows ``[1|B, 1|H, len(rows), k_len]`` (0 or -inf)."""
    if attention_mask is None:  # SDPA's "causal, no padding": query row r sits at key position k_len - q_len + r
        position = rows.unsqueeze(-1) + (k_len - q_len)
        visible = torch.arange(k_len, device=rows.device).unsqueeze(0) <= position
    elif attention_mask.dtype == torch.bool:  # SDPA's boolean mask: True = may attend
        visible = attention_mask[..., rows, :k_len]
    else:  # eager's additive mask (0 or the dtype's minimum)
        return attention_mask[..., rows, :k_len].to(dtype)
    zero = torch.zeros((), dtype=dtype, device=rows.device)
    return torch.where(visible, zero, torch.tensor(float("-inf"), dtype=dtype, device=rows.device))


def rows_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention computed ``chunk_rows`` query rows at a time, keeping the requested rows' weights.

    Each chunk is ``softmax(q·kᵀ·scaling + mask)`` in float32, cast to the query's dtype, times
    the values: the same operations as transformers' eager attention, so the output and the
    weights are bit-for-bit eager's (a test checks it), without its ``[heads, n, n]`` matrix.
    The request is ``module._dynaprag_rows`` (:class:`RowRequest`, set by
    :meth:`AttentionRowsTap.reading`); a layer whose request keeps no rows only computes its output.
    """
    from transformers.integrations.sdpa_attention import repeat_kv

    request: RowRequest = module._dynaprag_rows
    q_len, k_len = query.shape[2], key.shape[2]
    groups = getattr(module, "num_key_value_groups", 1)
    keys, values = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    softcap = kwargs.get("softcap")
    keep = None if not request.keep else (
        set(range(q_len)) if request.rows is None else {int(r) % q_len for r in request.rows})
    kept: dict[int, torch.Tensor] = {}
    outputs = []
    step = request.chunk_rows or max(16, request.chunk_bytes // (4 * query.shape[1] * k_len))
    for start in range(0, q_len, step):
        chunk = torch.arange(start, min(q_len, start + step), device=query.device)
        scores = torch.matmul(query[:, :, start:start + step], keys.transpose(2, 3)) * scale
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        scores = scores + _row_mask(attention_mask, chunk, q_len, k_len, scores.dtype)
        weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        del scores
        outputs.append(torch.matmul(weights, values))
        if keep:
            for j, row in enumerate(range(start, start + len(chunk))):
                if row in keep:
                    kept[row] = weights[0, :, j].float()
        del weights
    output = torch.cat(outputs, dim=2).transpose(1, 2).contiguous()
    if request.keep:
        order = range(q_len) if request.rows is None else [int(r) % q_len for r in request.rows]
        request.weights = (torch.stack([kept[r] for r in order], dim=1) if order
                           else query.new_zeros((query.shape[1], 0, k_len)).float())
    return output, None


def _register() -> None:
    from transformers import AttentionInterface

    if IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(IMPLEMENTATION, rows_attention)


class AttentionRowsTap:
    """Gives every decoder layer :func:`rows_attention` while a :meth:`reading` block runs.

    All layers, not only the last, so that the pass is bit-for-bit the eager pass DRAGIN's
    reference runs (SDPA's output differs from eager's in the 6th digit, which would move the
    attention values the parity tests pin); every layer computes in chunks of rows, and only
    the last keeps weights.
    """

    def __init__(self, model):
        layers = getattr(getattr(model, "model", None), "layers", None)
        self.modules = [layer.self_attn for layer in layers or () if hasattr(layer, "self_attn")]
        self.module = self.modules[-1] if layers is not None and hasattr(layers[-1], "self_attn") else None
        if self.module is not None:
            _register()

    @contextlib.contextmanager
    def reading(self, rows: Sequence[int] | None = None, chunk_rows: int | None = None) -> Iterator[RowRequest]:
        """Within the block, a forward pass fills the yielded request's ``weights`` (the last pass wins)."""
        if self.module is None:
            raise RuntimeError("attention rows need a decoder with model.layers[-1].self_attn")
        request = RowRequest(rows, chunk_rows)
        others = RowRequest(None, chunk_rows, keep=False)
        saved = [m.config for m in self.modules]
        try:
            for m in self.modules:
                m.config = copy.copy(m.config)
                m.config._attn_implementation = IMPLEMENTATION
                m._dynaprag_rows = request if m is self.module else others
            yield request
        finally:
            for m, config in zip(self.modules, saved):
                m.config = config
                m.__dict__.pop("_dynaprag_rows", None)


class LastLayerAttentionTap:
    """Switch only the last decoder layer to eager attention and keep its weights via a hook.

    For the decoding steps' one query row (the row of the token being predicted): eager on one
    row costs ``heads · n``, and the other layers keep the model's own attention.
    """

    def __init__(self, model):
        self.module = None
        self.weights: torch.Tensor | None = None
        layers = getattr(getattr(model, "model", None), "layers", None)
        if layers is not None and hasattr(layers[-1], "self_attn"):
            self.module = layers[-1].self_attn
            self._config = self.module.config
            self._eager = copy.copy(self._config)
            self._eager._attn_implementation = "eager"
            self.module.register_forward_hook(self._hook)
        self.active = False

    def _hook(self, _module, _inputs, output):
        if self.active and isinstance(output, tuple) and len(output) > 1 and output[1] is not None:
            self.weights = output[1].detach()

    def __enter__(self):
        if self.module is None:
            raise RuntimeError("attention capture needs a decoder with model.layers[-1].self_attn")
        self.module.config = self._eager
        self.active, self.weights = True, None
        return self

    def __exit__(self, *exc):
        self.module.config = self._config
        self.active = False
