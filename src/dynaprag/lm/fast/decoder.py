"""The fast decoder: prefill and one-token steps over a static KV cache, compiled per length bucket.

:class:`FastDecoder` owns a :class:`~dynaprag.lm.fast.cache.StaticKVCache` of ``batch`` rows and a
:class:`~dynaprag.lm.fast.layers.FastLM` over a loaded transformers model. A row is one
sequence: :meth:`FastDecoder.prefill` feeds its prompt (or the passages appended after a
retrieval), :meth:`FastDecoder.decode` feeds one token to each row of a block of rows at once, and
:meth:`FastDecoder.truncate` rolls a row back by moving its length. Each call returns a
:class:`FastStep`: the next-token logits of each row and the signals the methods read from
the same pass (last-layer attention row when asked, every layer's hidden state of the last
position).

Why length buckets: a compiled graph has fixed shapes, and attention over the whole
preallocated cache would read ``capacity`` keys per layer at every step. So the step attends
over the first ``span`` positions, ``span`` the smallest bucket (128, 256, 512, … up to the
capacity) covering every row; each (rows in the block, bucket, attention read or not) is one
graph, compiled the first time it is needed and then reused for every step in it. A 300-token answer after a
600-token prompt touches two buckets.

Prefill runs the same arithmetic uncompiled: it is bound by the matrix products (hundreds of
tokens at once), where Python's per-layer overhead does not show, and its token count changes
with every prompt. It also keeps the model's float weights when the decode step's are
quantized: weight bytes do not bound it, and the int8 kernel multiplies many rows ~2.8x slower
than bf16 ``mm`` here (``bench/results/generator.md``: prefill 88 against 247 tok/s). The keys
and values of a prompt are then those of the float model, and only decoded tokens carry the
quantization error.

How :class:`~dynaprag.lm.Generator` and :class:`~dynaprag.lm.batch.BatchStepper` use it
(``Generator(lm, decoder="fast")``; :mod:`dynaprag.lm.fast.rows`; nothing changes for a component):

1. The generator owns one :class:`~dynaprag.lm.fast.rows.RowPool` around one decoder; the pool
   starts with one row of ``min(1024, context)`` positions and doubles rows or capacity when a
   state needs more (a copy of the cache, rare), so no batch size or prompt length is fixed up front.
2. A ``DecodeState`` holds a :class:`~dynaprag.lm.fast.rows.FastRow` (a row index from a free
   list, lowest first, given back when the state is dropped) instead of a ``DynamicCache``;
   ``state.fed`` is the row's length.
3. ``Generator._forward`` feeds the row: several tokens → :meth:`FastDecoder.prefill`, one →
   :meth:`FastDecoder.decode` over that row alone (``first=row``); the values are keyed as
   ``signals.read_row`` keys them (``attention``: :meth:`FastStep.attention_row`; ``hidden:L``:
   ``hidden[L]``). ``Generator._feed`` is unchanged: a prefill that reads attention still feeds
   its last token alone, so counters and traces are those of the eager path.
4. ``Generator.truncate`` moves the row's length; ``Generator.prefix`` keeps
   :meth:`export_prefix`'s copy and ``Generator.start`` imports it into a fresh row.
5. ``BatchStepper.feed``: the states waiting for one token are one :meth:`decode` over the block
   of rows they span (idle rows inside the block are inactive): no stacking, no slicing.
6. The ``interrupt`` check (a forward pre-hook on the model, which this path does not call) is
   called before each fast pass.
7. On transformers' forward: ``attention_of`` (fresh passes over texts), SeaKR's
   ``sample_steps`` (from a ``DynamicCache`` copy of the row), a signal other than attention
   or hidden states, and weight changes the pass cannot see. LoRA forward hooks (PRAG,
   DyPRAG) fire in the uncompiled float pass, which calls the model's own ``nn.Linear``
   modules; a compiled graph or int8/int4 copies would miss them, so those passes fall back
   (``Generator.fallbacks`` counts why). In-place weight edits are seen uncompiled or compiled
   (the graph takes the weights as inputs), not by quantized snapshots; modules peft swaps in
   are detected and fall back.

>>> dec = FastDecoder(lm.model, batch=1, capacity=1024)                 # doctest: +SKIP
>>> step = dec.prefill(0, prompt_ids)                                   # doctest: +SKIP
>>> token = int(step.logits[0].argmax())                                # doctest: +SKIP
>>> step = dec.decode([token], want_attention=True)                     # doctest: +SKIP
>>> step.attention_row(0).shape                 # [prompt + 1] positions  # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from dynaprag.lm.fast.cache import CacheShape, StaticKVCache
from dynaprag.lm.fast.compile import compile_module
from dynaprag.lm.fast.layers import FastLM, unsupported_reason

#: the smallest length bucket; each next one doubles, the last is the capacity itself
SMALLEST_BUCKET = 128


def buckets_for(capacity: int, smallest: int = SMALLEST_BUCKET) -> list[int]:
    """Length buckets up to ``capacity``: 128, 256, … and ``capacity`` itself (all ≤ capacity)."""
    out, size = [], smallest
    while size < capacity:
        out.append(size)
        size *= 2
    return out + [capacity]


@dataclass
class FastStep:
    """What one pass returns for each fed row: next-token logits and the signals of that pass.

    ``logits`` [B, V] float32; ``hidden`` [layers+1, B, d] in transformers' ``hidden_states``
    numbering; ``attention`` [B, heads, span] float32 (the last layer's weights of the row's
    last position over positions ``0 .. span-1``, zero past the row's length) or ``None``.
    """

    logits: torch.Tensor
    hidden: torch.Tensor
    attention: torch.Tensor | None
    lengths: list[int] = field(default_factory=list)

    def attention_row(self, row: int, mean_heads: bool = True) -> torch.Tensor:
        """Row ``row``'s attention over its own positions (``[n]`` head-averaged, or ``[heads, n]``)."""
        if self.attention is None:
            raise ValueError("this pass did not read attention (want_attention=False)")
        weights = self.attention[row, :, : self.lengths[row]]
        return weights.mean(0) if mean_heads else weights

    def hidden_of(self, row: int, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """The hidden states of ``layers`` for ``row`` in float32, as ``Generator`` stores them."""
        return {layer: self.hidden[layer, row].float() for layer in layers}


class FastDecoder:
    """Prefill, step and roll back ``batch`` sequences on a static cache; see the module docstring.

    ``compile``: trace the decode step with ``torch.compile`` (one graph per bucket);
    ``quantize``: weight-only ``"int8"`` or ``"int4"`` linear layers (activations in the model's dtype);
    ``capacity``: positions per row (prompt + answer budget), at most the model's context.
    """

    def __init__(self, model, batch: int = 1, capacity: int = 2048, quantize: str | None = None,
                 compile: bool = True, compile_options: dict | None = None):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"no fast decoder for this model: {reason}")
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and capacity > limit:
            raise ValueError(f"capacity {capacity} exceeds the model's context of {limit} positions")
        self.model = model
        self.limit = limit
        # RoPE tables for the whole context (a few MB), so the cache can grow without rebuilding the pass
        self.lm = FastLM(model, positions=max(capacity, limit or 0) + 1, quantize=quantize).eval()
        self.cache = StaticKVCache(CacheShape.of(model), batch, capacity, device=self.lm.cos.device)
        self.buckets = buckets_for(capacity)
        self.batch, self.capacity, self.quantize, self.compiled = batch, capacity, quantize, compile
        self._step = compile_module(self.lm, options=compile_options) if compile else self.lm
        # (rows, bucket, attention) -> seconds its first call took
        self.graphs: dict[tuple[int, int, bool], float] = {}

    @property
    def path(self) -> str:
        """What ran, for ``config.json`` and summaries: e.g. ``fast-compiled-int8-bfloat16``."""
        parts = ["fast", "compiled" if self.compiled else "eager"] + ([self.quantize] if self.quantize else [])
        return "-".join(parts + [str(self.lm.dtype).removeprefix("torch.")])

    def bucket(self, length: int) -> int:
        """The smallest bucket holding ``length`` positions."""
        for size in self.buckets:
            if length <= size:
                return size
        raise ValueError(f"{length} positions exceed the cache's capacity of {self.capacity}")

    # -- rows ---------------------------------------------------------------------------
    @property
    def lengths(self) -> list[int]:
        return list(self.cache.lengths)

    def resize(self, batch: int | None = None, capacity: int | None = None) -> None:
        """Grow to ``batch`` rows of ``capacity`` positions, keeping every row's keys and values.

        A copy of the whole cache, so callers grow by doubling (rarely); a compiled step traces
        new graphs for the new shapes on first use.
        """
        batch, capacity = batch or self.batch, capacity or self.capacity
        if self.limit is not None and capacity > self.limit:
            raise ValueError(f"capacity {capacity} exceeds the model's context of {self.limit} positions")
        if batch < self.batch or capacity < self.capacity:
            raise ValueError("a fast decoder's cache only grows")
        if (batch, capacity) == (self.batch, self.capacity):
            return
        old = self.cache
        self.cache = StaticKVCache(old.shape, batch, capacity, device=old.positions.device)
        for new, before in zip(self.cache.keys + self.cache.values, old.keys + old.values):
            new[: old.batch, :, : old.capacity].copy_(before[:, :, : old.capacity])
        for row, length in enumerate(old.lengths):
            self.cache.set_length(row, length)
        self.batch, self.capacity, self.buckets = batch, capacity, buckets_for(capacity)

    def truncate(self, row: int, length: int) -> None:
        """Roll ``row`` back to its first ``length`` positions (an index move)."""
        self.cache.truncate(row, length)

    def export_prefix(self, row: int, length: int | None = None):
        """A copy of ``row``'s first ``length`` keys/values, to start other rows from (a few-shot prefix)."""
        return self.cache.export_row(row, length)

    def import_prefix(self, row: int, prefix) -> None:
        self.cache.import_row(row, *prefix)

    # -- passes -------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, row: int, ids: Sequence[int], want_attention: bool = False) -> FastStep:
        """Feed ``ids`` after ``row``'s current length (uncompiled); the step predicts the token after them."""
        ids = list(ids)
        start = self.cache.lengths[row]
        if not ids:
            raise ValueError("prefill needs at least one token")
        if start + len(ids) > self.capacity:
            raise ValueError(f"row {row}: {start} + {len(ids)} tokens exceed the cache's capacity {self.capacity}")
        tokens = torch.tensor([ids], dtype=torch.long, device=self.cache.positions.device)
        keys = [k[row:row + 1] for k in self.cache.keys]
        values = [v[row:row + 1] for v in self.cache.values]
        logits, hidden, attention = self.lm(tokens, self.cache.positions[row:row + 1].clone(), keys, values,
                                            span=start + len(ids), want_attention=want_attention, float_weights=True)
        self.cache.set_length(row, start + len(ids))
        return FastStep(logits.float(), hidden, None if attention is None else attention.float(),
                        [self.cache.lengths[row]])

    @torch.inference_mode()
    def decode(self, tokens: Sequence[int] | torch.Tensor, want_attention: bool = False,
               active: Sequence[bool] | None = None, first: int = 0) -> FastStep:
        """Feed one token to each of the rows ``first .. first + len(tokens) - 1``; rows with
        ``active[i]`` False are left as they were.

        An inactive row still flows through the batch (the shapes are fixed) but its length does
        not move, so the key it wrote past its end is never read. Row ``first + i`` of the cache
        is row ``i`` of the returned step. Passing a block of rows rather than all of them keeps
        a step over a few live rows from paying for the idle ones (each block size is its own
        compiled graph).
        """
        n = len(tokens)
        active = [True] * n if active is None else list(active)
        if len(active) != n or not 0 < n <= self.batch - first or first < 0:
            raise ValueError(f"decode needs one token and one active flag per row of a block within the "
                             f"{self.batch} rows, got {n} tokens and {len(active)} flags from row {first}")
        lengths = self.cache.lengths[first:first + n]
        for r, on in enumerate(active):
            if on and lengths[r] >= self.capacity:
                raise ValueError(f"row {first + r} is full ({self.capacity} positions)")
        need = max((lengths[r] + 1 for r in range(n) if active[r]), default=1)
        span = self.bucket(need)
        logits, hidden, attention = self._pass(tokens, span, want_attention, first)
        for r, on in enumerate(active):
            if on:
                self.cache.set_length(first + r, lengths[r] + 1)
        return FastStep(logits.float(), hidden, None if attention is None else attention.float(),
                        self.cache.lengths[first:first + n])

    def _pass(self, tokens, span: int, want_attention: bool, first: int = 0):
        """One compiled step over a block of rows at their current lengths; records a new graph's first-call time."""
        device = self.cache.positions.device
        n = len(tokens)
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=device).view(n, 1)
        whole = first == 0 and n == self.batch
        keys = self.cache.keys if whole else [k[first:first + n] for k in self.cache.keys]
        values = self.cache.values if whole else [v[first:first + n] for v in self.cache.values]
        positions = self.cache.positions if whole else self.cache.positions[first:first + n]
        key = (n, span, bool(want_attention))
        fresh = key not in self.graphs
        began = time.perf_counter()
        out = self._step(tokens, positions, keys, values, span, bool(want_attention))
        if fresh:
            self.graphs[key] = time.perf_counter() - began
        return out

    def warm(self, spans: Sequence[int] | None = None, attention: Sequence[bool] = (False,)) -> float:
        """Compile the graphs of ``spans`` (default: every bucket) ahead of use; returns the seconds it took.

        Each graph runs once with every row inactive: the keys it writes land past the rows'
        ends, where nothing reads them, and no length moves.
        """
        began = time.perf_counter()
        with torch.inference_mode():
            for span in spans or self.buckets:
                for want in attention:
                    if (self.batch, span, want) not in self.graphs:
                        self._pass([0] * self.batch, span, want)
        return time.perf_counter() - began
