"""PRAG's online cost at equal answer length, next to sr-rag's, in the benchmark's own process.

An answer's time grows with the tokens it generates, and PRAG's answers may be longer or shorter
than sr-rag's (the online rows give the means), so the benchmark's s/question ratio mixes the
method's cost with its answers' length. Here both answer the same questions with exactly
``tokens`` new tokens (greedy, end-of-turn ignored), alternately, so the ratio is the mechanism's:

- sr-rag: its passages in PRAG's template, prefilled after the few-shot prefix's cached keys and
  values, as the decoding loop does;
- prag: the passages' adapters read from the store and summed (one rank-k·r LoRA), then the whole
  prompt prefilled (a LoRA changes the prefix's keys and values, so the loop keeps no prefix cache
  under one) and decoded with the adapter's hooks on.
"""
from __future__ import annotations

import statistics
import time
from typing import Mapping, Sequence


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def fixed_length_rows(lm, store, scaling: float, builder, kept: Mapping[str, Mapping[str, Sequence]],
                      questions: Mapping[str, Sequence], n: int, tokens: int) -> list[dict]:
    """One row per dataset: sr-rag and prag seconds per answer of ``tokens`` tokens on its first ``n`` questions."""
    import torch

    from dynaprag.lm import GenerationConfig, Generator
    from dynaprag.parametric.lora import LoraInjection, combine

    gen = Generator(lm)
    config = GenerationConfig(max_new_tokens=tokens, stop_at_eos=False)
    rows = []
    with torch.inference_mode():
        prefix = gen.prefix(builder.prefix_ids)
        for dataset, qs in questions.items():
            times = {"sr-rag": [], "prag": [], "prag_adapters": [], "prag_prefill_decode": []}
            for i, q in enumerate(qs[:n]):
                passages = list(kept[dataset][q.id])

                def sr_rag():
                    gen.generate(gen.start(builder.build(q.question, passages), prefix=prefix), config)

                def prag():
                    adapters, load = _timed(lambda: LoraInjection(
                        lm.model, combine([store.get(p.content_hash) for p in passages], scaling)))
                    with adapters:
                        _, answer = _timed(lambda: gen.generate(gen.start(builder.build(q.question)), config))
                    times["prag_adapters"].append(load)
                    times["prag_prefill_decode"].append(answer)

                for name, fn in (("sr-rag", sr_rag), ("prag", prag))[:: 1 if i % 2 == 0 else -1]:
                    times[name].append(_timed(fn)[1])
            mean = {k: statistics.fmean(v) for k, v in times.items()}
            per_q = [p / s for p, s in zip(times["prag"], times["sr-rag"])]
            rows.append({"part": "online, fixed length", "case": f"prag vs sr-rag, {tokens} tokens", "dataset": dataset,
                         "questions": len(per_q), "sr_rag_s": mean["sr-rag"], "prag_s": mean["prag"],
                         "prag_adapters_s": mean["prag_adapters"],
                         "prag_prefill_decode_s": mean["prag_prefill_decode"],
                         "ratio_to_sr_rag": mean["prag"] / mean["sr-rag"],
                         "ratio_min": min(per_q), "ratio_max": max(per_q)})
    return rows
