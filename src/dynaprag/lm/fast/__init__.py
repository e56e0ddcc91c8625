"""A fast white-box decoder: static KV cache, compiled decode step, optional int8 weights.

The same arithmetic as transformers' Llama/Qwen2 forward (checked in
``tests/test_fast_decoder.py``), arranged for decoding speed:

- :mod:`~dynaprag.lm.fast.cache`: keys/values preallocated per row; rollback = index move.
- :mod:`~dynaprag.lm.fast.layers`: the hand-written pass (fused SDPA; the last layer's
  attention row computed explicitly only when a component reads it).
- :mod:`~dynaprag.lm.fast.quantize`: weight-only int8 / int4 linear layers.
- :mod:`~dynaprag.lm.fast.compile`: ``torch.compile`` settings and the on-disk graph cache.
- :mod:`~dynaprag.lm.fast.decoder`: :class:`FastDecoder`, prefill / decode / truncate per row,
  one compiled graph per length bucket; its docstring describes how ``Generator`` and
  ``BatchStepper`` plug in.
- :mod:`~dynaprag.lm.fast.rows`: the rows decode states hold (``Generator(decoder="fast")``), and
  which passes fall back to transformers' forward.

Where the time goes and what each piece buys: ``bench/results/generator.md``.
"""
from dynaprag.lm.fast.cache import CacheShape, StaticKVCache
from dynaprag.lm.fast.decoder import FastDecoder, FastStep, buckets_for
from dynaprag.lm.fast.quantize import Int4Linear, Int8Linear
from dynaprag.lm.fast.layers import FastLM, unsupported_reason

__all__ = ["CacheShape", "FastDecoder", "FastLM", "FastStep", "Int4Linear", "Int8Linear", "StaticKVCache", "buckets_for",
           "unsupported_reason"]
