"""The fast decoder behind :class:`~dynaprag.lm.Generator`: decode states hold rows of one static cache.

A :class:`RowPool` owns one :class:`~dynaprag.lm.fast.FastDecoder`; each decode state on the fast
path holds a :class:`FastRow` (its ``cache``) instead of a transformers ``DynamicCache``. Rows come
from a free list, lowest index first, so the live rows of a batch sit together at the top of
the cache and a batched step runs over that block only; a row returns to the list when the
state that held it is dropped (its ``FastRow`` is freed with it) or leaves the fast path.
When every row is taken the pool doubles its rows, and a row that needs more positions than
the cache holds doubles the capacity (up to the model's context): both copy the cache once.
Memory is rows × capacity whatever the sequences' lengths: a row of 1024 positions holds
47 MB for SmolLM2-135M in float32 (30 layers × keys and values × 3 heads × 64), 13 MB for
Qwen2.5-0.5B in bfloat16; a question keeps its states (and rows) until it is answered.

The pass gives what :mod:`dynaprag.lm.signals` reads from transformers' forward pass, from
the same arithmetic (``tests/test_fast_decoder.py`` and the integration tests in
``tests/test_fast_generator.py``): ``attention`` (the last layer's head-averaged row) and
``hidden:L`` (the last position's ``hidden_states[L]``). Any other signal, and any pass the
fast arithmetic would get wrong, runs on transformers' forward instead (:meth:`RowPool.refuses`):

- a forward hook on a layer the pass calls (PRAG/DyPRAG add their LoRA deltas this way) is seen
  by the uncompiled float pass, which calls the model's own ``nn.Linear`` modules, but not by a
  compiled graph or by int8/int4 copies of the weights: those fall back;
- a model whose layers were swapped after the pool was built (a peft ``LoraLayer``) falls back.

Falling back moves the state's keys and values into a ``DynamicCache`` (:meth:`FastRow.to_dynamic`)
and the state stays on transformers' path from then on; the generator counts each reason
(``Generator.fallbacks``) and logs it once.
"""
from __future__ import annotations

from typing import Sequence

import torch

from dynaprag.lm.fast.decoder import FastDecoder, FastStep
from dynaprag.lm.fast.layers import unsupported_reason
from dynaprag.lm.fast.quantize import SCHEMES
from dynaprag.lm.signals import Attention, HiddenState, Signal

#: ``decoder=`` choices: transformers' forward with a ``DynamicCache``, the fast decoder
#: (:mod:`dynaprag.lm.fast`), or the faster of the two where the model supports both
DECODERS = ("eager", "fast", "auto")

#: positions per row a pool starts with (it doubles when a sequence needs more, up to the context)
START_CAPACITY = 1024


def choose_decoder(model, name: str, decoder: str, compile: bool = False, quantize: str | None = None) -> str:
    """``"eager"`` or ``"fast"``: the path ``decoder`` (one of :data:`DECODERS`) means for ``model`` (called ``name``).

    ``"fast"`` raises ``ValueError`` (naming why) for a model the fast pass cannot run, and
    ``"eager"`` with ``compile`` or ``quantize`` (knobs of the fast decoder only) is refused.
    ``"auto"`` stays ``"eager"`` for now: the bench has not shown the fast path faster at equal
    answers (``bench/results/generator.md``, batch-1 decode against eager bfloat16 in the same
    run: the uncompiled fast pass 0.83x, compiled 0.95x; compiled int8 weights 1.7x and int4
    2.5x, but they change answers), so it takes no path a measurement has not shown faster.
    ``bench/decoders.py`` measures whole methods side by side.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if quantize is not None and quantize not in SCHEMES:
        raise ValueError(f"quantize must be one of {SCHEMES} or None, got {quantize!r}")
    if decoder == "eager" and (compile or quantize):
        raise ValueError("compile and quantize are knobs of the fast decoder: set decoder=fast (or auto)")
    if decoder != "fast":
        return "eager"
    reason = unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"decoder=fast: no fast decoder for model {name}: {reason}")
    return "fast"


class FastRow:
    """One decode state's row of the pool's static cache (what ``DecodeState.cache`` holds on the fast path)."""

    __slots__ = ("index", "pool", "__weakref__")

    def __init__(self, pool: "RowPool", index: int):
        self.pool: RowPool | None = pool
        self.index = index

    @property
    def length(self) -> int:
        return self.pool.decoder.cache.lengths[self.index]

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions: an index move, nothing is copied."""
        self.pool.decoder.truncate(self.index, length)

    def export(self):
        """Copies of this row's keys and values per layer (a prefix kept across questions)."""
        return self.pool.decoder.export_prefix(self.index)

    def to_dynamic(self, config):
        """A transformers ``DynamicCache`` holding a copy of this row's keys and values."""
        return dynamic_cache(*self.export(), config)

    def release(self) -> None:
        """Give the row back to the pool (the state no longer uses it)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.release(self.index)

    def __deepcopy__(self, memo) -> "FastRow":
        """A new row holding the same keys and values (``sampling.fork`` copies a state this way)."""
        copy = self.pool.acquire()
        self.pool.decoder.cache.copy_row(self.index, copy.index)
        return copy

    def __del__(self):
        self.release()

    def __repr__(self) -> str:
        return f"FastRow({self.index}, length={self.length if self.pool else '-'})"


def dynamic_cache(keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], config):
    """A ``DynamicCache`` of one sequence from per-layer keys/values ``[kv_heads, n, head_dim]``."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    if keys and keys[0].shape[1]:
        for i, (k, v) in enumerate(zip(keys, values)):
            cache.update(k.unsqueeze(0).clone(), v.unsqueeze(0).clone(), i)
    return cache


def layers_of(cache) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer keys/values ``[kv_heads, n, head_dim]`` of a one-sequence ``DynamicCache``."""
    return [layer.keys[0] for layer in cache.layers], [layer.values[0] for layer in cache.layers]


class RowPool:
    """A :class:`FastDecoder` whose rows are handed out to decode states; see the module docstring."""

    def __init__(self, model, compile: bool = False, quantize: str | None = None, rows: int = 1,
                 capacity: int | None = None):
        limit = getattr(model.config, "max_position_embeddings", None)
        capacity = capacity or (min(START_CAPACITY, limit) if limit else START_CAPACITY)
        self.model = model
        self.decoder = FastDecoder(model, batch=rows, capacity=capacity, quantize=quantize, compile=compile)
        self._free = list(range(rows))
        self._modules = self._called_modules()

    @property
    def path(self) -> str:
        return self.decoder.path

    # -- rows -----------------------------------------------------------------------------
    def acquire(self) -> FastRow:
        """The lowest free row, emptied (the pool doubles its rows when none is free)."""
        if not self._free:
            old = self.decoder.batch
            self.decoder.resize(batch=2 * old)
            self._free = list(range(old, 2 * old))
        index = min(self._free)
        self._free.remove(index)
        self.decoder.cache.reset(index)
        return FastRow(self, index)

    def release(self, index: int) -> None:
        self._free.append(index)  # no module globals here: a row may be freed at interpreter exit

    @property
    def rows_in_use(self) -> int:
        return self.decoder.batch - len(self._free)

    def _room_for(self, length: int) -> None:
        """Double the capacity until ``length`` positions fit a row."""
        dec = self.decoder
        capacity = dec.capacity
        while capacity < length:
            capacity *= 2
        if capacity != dec.capacity:
            dec.resize(capacity=min(capacity, dec.limit) if dec.limit else capacity)

    def load(self, row: FastRow, prefix) -> None:
        """Write exported keys/values (:meth:`FastRow.export`) into ``row``: a cached prefix."""
        self._room_for(prefix[0][0].shape[1])
        self.decoder.import_prefix(row.index, prefix)

    # -- what the pass can serve ----------------------------------------------------------------
    def _called_modules(self) -> list[torch.nn.Module]:
        """The model's own modules whose arithmetic the fast pass does (or holds quantized copies of)."""
        base = self.model.model
        mods = [base.embed_tokens, self.model.lm_head]
        for layer in base.layers:
            attn, mlp = layer.self_attn, layer.mlp
            mods += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        return mods

    def refuses(self, wanted: Sequence[Signal]) -> str | None:
        """Why the fast pass cannot serve a pass reading ``wanted`` now (``None``: it can)."""
        for signal in wanted:
            if not isinstance(signal, (Attention, HiddenState)):
                return f"signal {signal.key!r} is read from transformers' forward pass"
        if self._called_modules() != self._modules:
            return "the model's layers were replaced after the fast decoder was built (an adapter?)"
        if any(m._forward_hooks or m._forward_pre_hooks for m in self._modules):
            if self.decoder.compiled or self.decoder.quantize:
                return ("forward hooks change the model's layers (PRAG/DyPRAG adapters); the compiled or "
                        "quantized fast pass would not see them")
        return None

    # -- passes ---------------------------------------------------------------------------
    def feed(self, row: FastRow, ids: Sequence[int], wanted: Sequence[Signal]) -> tuple[torch.Tensor, dict]:
        """Feed ``ids`` after ``row``'s length: ``(logits [V] float32, signal values)`` of the last one."""
        if len(ids) == 1:
            return self.decode([row], ids, wanted)[0]
        self._room_for(row.length + len(ids))
        step = self.decoder.prefill(row.index, ids, want_attention=any(isinstance(s, Attention) for s in wanted))
        return step.logits[0], values_of(step, 0, wanted)

    def decode(self, rows: Sequence[FastRow], tokens: Sequence[int],
               wanted: Sequence[Signal]) -> list[tuple[torch.Tensor, dict]]:
        """One token for each of ``rows`` in one pass over the block of rows they span.

        Compiled, the block starts at row 0 and spans a power of two rows (each block size is a
        graph to compile; rows are handed out lowest first, so the live ones sit at the top).
        """
        self._room_for(max(r.length for r in rows) + 1)
        first, last = min(r.index for r in rows), max(r.index for r in rows)
        if self.decoder.compiled:  # blocks from row 0 in powers of two: few graphs to compile
            first, last = 0, min(self.decoder.batch, 1 << last.bit_length()) - 1
        feed, active = [0] * (last - first + 1), [False] * (last - first + 1)
        for row, token in zip(rows, tokens):
            feed[row.index - first], active[row.index - first] = int(token), True
        want = any(isinstance(s, Attention) for s in wanted)
        step = self.decoder.decode(feed, want_attention=want, active=active, first=first)
        return [(step.logits[r.index - first], values_of(step, r.index - first, wanted)) for r in rows]


def values_of(step: FastStep, row: int, wanted: Sequence[Signal]) -> dict:
    """The signal values of one row of a fast pass, keyed and shaped as :func:`dynaprag.lm.signals.read_row` gives them."""
    out = {}
    for signal in wanted:
        if isinstance(signal, Attention):
            out[signal.key] = step.attention_row(row)
        else:
            out[signal.key] = step.hidden[signal.layer, row].float()
    return out
