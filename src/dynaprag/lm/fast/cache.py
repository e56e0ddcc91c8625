"""A static KV cache: every layer's keys and values preallocated once, one row per sequence.

Why: transformers' ``DynamicCache`` grows by concatenation, so each decoding step reallocates
every layer's keys and values (30 layers × 2 tensors for SmolLM2), and a rollback (DRAGIN's
discarded sentence, FLARE's regenerated one) crops by copying. Here the buffers are allocated
once for ``capacity`` positions per row; a step writes one slot per layer in place, and a
rollback or a re-prefill after a retrieval only moves the row's length (:meth:`truncate`): the
slots past it are never read again (the attention mask hides them) and are overwritten by the
next write. A fixed buffer is also what a compiled step needs: shapes never change, so the
graph is traced once per (batch, length bucket) and never per step.

Layout ``[batch, kv_heads, capacity + 1, head_dim]`` per layer: attention reads a row's keys
as one contiguous block per head. The one spare slot past ``capacity`` is where a row that is
not stepping writes its throw-away key in a batched step (the batch is rectangular; its result
is discarded) when that row is already full, so a full row is never overwritten.

Each row's length lives twice: as a Python list (:attr:`lengths`, what the decoder reasons
with) and as a tensor (:attr:`positions`) the compiled step reads, kept in sync here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CacheShape:
    """What a model's cache needs: layers, key/value heads, head size, and the data type."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype

    @classmethod
    def of(cls, model, dtype: torch.dtype | None = None) -> "CacheShape":
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(int(config.num_hidden_layers), int(config.num_key_value_heads), int(head_dim),
                   dtype or next(model.parameters()).dtype)


class StaticKVCache:
    """Preallocated keys/values for ``batch`` rows of up to ``capacity`` positions each.

    >>> cache = StaticKVCache(CacheShape(30, 3, 64, torch.float32), batch=2, capacity=512)  # doctest: +SKIP
    >>> cache.lengths
    [0, 0]
    >>> cache.truncate(0, 10)   # a rollback: an index move, nothing is copied  # doctest: +SKIP
    """

    def __init__(self, shape: CacheShape, batch: int, capacity: int, device: str | torch.device = "cpu"):
        if batch < 1 or capacity < 1:
            raise ValueError(f"a static cache needs batch >= 1 and capacity >= 1, got {batch} and {capacity}")
        self.shape, self.batch, self.capacity = shape, batch, capacity
        size = (batch, shape.kv_heads, capacity + 1, shape.head_dim)
        self.keys = [torch.zeros(size, dtype=shape.dtype, device=device) for _ in range(shape.layers)]
        self.values = [torch.zeros(size, dtype=shape.dtype, device=device) for _ in range(shape.layers)]
        self.lengths = [0] * batch
        self.positions = torch.zeros(batch, dtype=torch.long, device=device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def room(self, row: int) -> int:
        """How many more positions ``row`` can take."""
        return self.capacity - self.lengths[row]

    def set_length(self, row: int, length: int) -> None:
        if not 0 <= length <= self.capacity:
            raise ValueError(f"row {row}: length {length} outside the cache's 0..{self.capacity}")
        self.lengths[row] = length
        self.positions[row] = length

    def truncate(self, row: int, length: int) -> None:
        """Keep the first ``length`` positions of ``row`` (a rollback): an index move, no copy."""
        self.set_length(row, min(length, self.lengths[row]))

    def reset(self, row: int) -> None:
        self.set_length(row, 0)

    def copy_row(self, source: int, target: int, length: int | None = None) -> None:
        """Copy the first ``length`` positions of row ``source`` into row ``target`` (a shared prefix)."""
        n = self.lengths[source] if length is None else min(length, self.lengths[source])
        for buffers in (self.keys, self.values):
            for layer in buffers:
                layer[target, :, :n].copy_(layer[source, :, :n])
        self.set_length(target, n)

    def export_row(self, row: int, length: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Copies of a row's first ``length`` keys and values per layer (a prefix kept across questions)."""
        n = self.lengths[row] if length is None else min(length, self.lengths[row])
        return ([k[row, :, :n].clone() for k in self.keys], [v[row, :, :n].clone() for v in self.values])

    def import_row(self, row: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Write exported keys/values (:meth:`export_row`) into ``row`` and set its length to theirs."""
        n = keys[0].shape[1]
        if n > self.capacity:
            raise ValueError(f"a prefix of {n} positions does not fit the cache's capacity {self.capacity}")
        for dst, src in zip(self.keys + self.values, list(keys) + list(values)):
            dst[row, :, :n].copy_(src)
        self.set_length(row, n)
