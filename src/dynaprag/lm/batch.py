"""One decoding step for many sequences at once: the batched half of :class:`~dynaprag.lm.Generator`.

Decoding one sequence on a CPU is bound by reading the weights (MODELS.md: qwen2.5-coder-0.5b
decodes 9.6 tok/s at batch 1 and 40.7 tok/s at batch 8), so the dynamic loop steps all the
questions in flight together. Each sequence keeps its own :class:`~dynaprag.lm.DecodeState`
(its own KV cache, cropped, extended and re-prefilled alone on a retrieval exactly as at batch 1);
:class:`BatchStepper` stacks the caches of the sequences that wait for one token, left-padded to
the longest, runs one forward pass with an additive padding mask and per-row position ids, and
hands each state a view of its row. While the same sequences keep stepping and nobody touched
its cache, the padded batch cache is reused as it is (no re-stacking); any change of membership
or of a sequence's cache re-stacks. ``restack="always"`` re-stacks every step (to measure).

Why per-sequence states rather than one padded cache owned by the batch: every operation the
loop performs on a sequence (crop after a rollback, re-prefill after a retrieval, the probe's
sampling from a copy of the cache) stays the batch-1 code, so a signal means the same at any
batch size. The cost is one copy of the caches whenever membership changes, which
``bench/batch.py`` measures against the reused cache.

On the fast decoder (``Generator(decoder="fast")``) the states' rows already sit in one static
cache: the states waiting for one token are one pass over the block of rows they span, with
nothing stacked or sliced (:meth:`BatchStepper._decode_rows`).

Rows that are not a plain one-token decode are fed alone: a pending prompt (after a retrieval)
is prefilled at batch 1, since prefill gains nothing from batching (MODELS.md), and a model
whose cache has sliding-window layers (Gemma 3) steps its sequences one by one. In float32 the
batched pass differs from batch 1 only by summation order (~1e-6 in log-probs): greedy tokens
agree except at near ties (``tests/test_batch.py``).
"""
from __future__ import annotations

from typing import Sequence

import torch

from dynaprag.lm import signals
from dynaprag.lm.decoding import DecodeState, GenerationConfig, StepOutput
from dynaprag.lm.fast.rows import FastRow


class BatchStepper:
    """Steps many :class:`DecodeState` of one :class:`~dynaprag.lm.Generator` together.

    >>> stepper = BatchStepper(gen)                                         # doctest: +SKIP
    >>> outs = stepper.step([state_a, state_b], GenerationConfig())         # doctest: +SKIP

    Works with any generator that has ``step``; only a real :class:`~dynaprag.lm.Generator`
    (with ``model``) is batched, anything else (the scripted test double) is stepped in turn.
    """

    def __init__(self, generator, restack: str = "on-change"):
        if restack not in ("on-change", "always"):
            raise ValueError("restack must be 'on-change' or 'always'")
        self.gen = generator
        self.restack = restack
        self._last: tuple | None = None  # (states, caches handed out, fed, batch cache, width)
        self.batched_passes = 0
        self.rows_stepped = 0
        self.restacks = 0

    @property
    def batchable(self) -> bool:
        return hasattr(self.gen, "model") and hasattr(self.gen, "_forward")

    def step(self, states: Sequence[DecodeState], config: GenerationConfig,
             rngs: Sequence[torch.Generator | None] | None = None) -> list[StepOutput]:
        """The next token of every state (as :meth:`Generator.step` would choose it), fed together."""
        self.feed(states, config)
        rngs = rngs or [None] * len(states)
        return [self.gen.step(s, config, r) for s, r in zip(states, rngs)]

    # -- feeding -------------------------------------------------------------------------
    def feed(self, states: Sequence[DecodeState], config: GenerationConfig) -> None:
        """Bring every state's cache up to its last token so ``state.logits`` predicts the next one.

        A no-op for a single state or a generator that cannot batch: :meth:`Generator.step` then
        feeds each state itself, exactly as at batch 1.
        """
        gen = self.gen
        if len(states) < 2 or not self.batchable:
            return
        pool = getattr(gen, "fast", None)
        if pool is not None and pool.refuses(config.signals) is not None:
            pool = None  # each state leaves the fast path in its own pass (Generator._forward)
        decode, rows = [], []
        for s in states:
            pending = len(s.ids) - s.fed
            if pending == 1 and s.fed > 0 and pool is not None and isinstance(s.cache, FastRow):
                rows.append(s)
            elif pending == 1 and s.fed > 0 and self._plain(s.cache):
                decode.append(s)
            elif pending > 0:
                gen._feed(s, config.signals)  # alone, as at batch 1
        for group, batched in ((decode, self._decode), (rows, self._decode_rows)):
            if len(group) == 1:
                gen._feed(group[0], config.signals)
            elif group:
                batched(group, config)

    def _decode_rows(self, states: list[DecodeState], config: GenerationConfig) -> None:
        """One fast pass over the static cache's rows of ``states`` (no stacking: each state's row is in place)."""
        if self.gen.interrupt is not None:
            self.gen.interrupt()
        results = self.gen.fast.decode([s.cache for s in states], [s.ids[s.fed] for s in states], config.signals)
        for s, (logits, values) in zip(states, results):
            s.advance(s.cache, logits, values, 1)
        self.batched_passes += 1
        self.rows_stepped += len(states)

    @staticmethod
    def _plain(cache) -> bool:
        """A cache whose layers all grow by concatenation (no sliding window, no static size)."""
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        return bool(layers) and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)

    def _stack(self, states: list[DecodeState]):
        """A batch cache of ``states``' caches, left-padded to the longest (zeros, masked out)."""
        from transformers import DynamicCache

        width = max(s.fed for s in states)
        batch = DynamicCache(config=self.gen.model.config)
        for i, layer in enumerate(batch.layers):
            first = states[0].cache.layers[i]
            shape = (len(states), first.keys.shape[1], width, first.keys.shape[3])
            keys = first.keys.new_zeros(shape)
            values = first.values.new_zeros(shape[:3] + (first.values.shape[3],))
            for b, s in enumerate(states):
                src = s.cache.layers[i]
                keys[b, :, width - s.fed:] = src.keys[0]
                values[b, :, width - s.fed:] = src.values[0]
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
        self.restacks += 1
        return batch, width

    def _reusable(self, states: list[DecodeState]):
        if self.restack == "always" or self._last is None:
            return None
        members, caches, fed, batch, width = self._last
        if len(members) != len(states) or any(a is not b for a, b in zip(members, states)):
            return None
        if any(s.cache is not c or s.fed != f for s, c, f in zip(states, caches, fed)):
            return None
        return batch, width

    @torch.inference_mode()
    def _decode(self, states: list[DecodeState], config: GenerationConfig) -> None:
        """One forward pass feeding each state's one pending token."""
        from transformers import DynamicCache

        gen = self.gen
        reused = self._reusable(states)
        batch, width = reused if reused is not None else self._stack(states)
        device = gen.lm.device
        dtype = batch.layers[0].keys.dtype
        mask = torch.zeros(len(states), 1, 1, width + 1, dtype=dtype, device=device)
        for b, s in enumerate(states):
            mask[b, ..., : width - s.fed] = torch.finfo(dtype).min
        input_ids = torch.tensor([[s.ids[s.fed]] for s in states], dtype=torch.long, device=device)
        position_ids = torch.tensor([[s.fed] for s in states], dtype=torch.long, device=device)
        out, hooked = signals.forward(gen, config.signals, input_ids=input_ids, attention_mask=mask,
                                      position_ids=position_ids, use_cache=True, logits_to_keep=1,
                                      **{gen._cache_kw: batch})
        batch = gen._returned_cache(out)
        width += 1
        caches, fed = [], []
        for b, s in enumerate(states):
            lo = width - (s.fed + 1)
            own = DynamicCache(config=gen.model.config)
            for src, dst in zip(batch.layers, own.layers):
                keys, values = src.keys[b:b + 1, :, lo:], src.values[b:b + 1, :, lo:]
                dst.lazy_initialization(keys, values)
                dst.keys, dst.values = keys, values
            s.advance(own, out.logits[b, -1].float(), signals.read_row(config.signals, out, hooked, b, lo), 1)
            caches.append(own)
            fed.append(s.fed)
        self._last = (list(states), caches, fed, batch, width)
        self.batched_passes += 1
        self.rows_stepped += len(states)
