"""Generator speed: decode and prefill tokens/s, fp32 vs bf16, with and without attention capture,
and the few-shot prefix-cache saving.

Cases are measured alternately in one run (round-robin over repeats) so ratios compare like with
like on a noisy machine; absolute numbers are for the record. llama.cpp is the reference for how
fast decoding can be on this CPU, measured only where llama-cpp-python installs as a wheel.

    .venv/bin/python bench/generator.py [--quick]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import _common  # noqa: F401  (sets cache/offline env before dynaprag loads models)
from _common import parse_args, write_results

from dynaprag.lm import GenerationConfig, Generator, load_model
from dynaprag.lm.prompts import PromptBuilder, PromptConfig
from dynaprag.lm.signals import ATTENTION

QUESTION = "Which country is the birthplace of the composer of The Four Seasons?"


def decode_rate(gen: Generator, ids: list[int], n: int, capture: bool) -> float:
    state = gen.start(ids)
    gen.step(state, GenerationConfig(signals=(ATTENTION,) if capture else ()))  # prefill outside the timing
    start = time.perf_counter()
    for _ in range(n - 1):
        gen.step(state, GenerationConfig(signals=(ATTENTION,) if capture else (), stop_at_eos=False))
    return (n - 1) / (time.perf_counter() - start)


def prefill_rate(gen: Generator, ids: list[int], capture: bool) -> float:
    state = gen.start(ids)
    start = time.perf_counter()
    gen.step(state, GenerationConfig(signals=(ATTENTION,) if capture else ()))
    return len(ids) / (time.perf_counter() - start)


def first_token_seconds(gen: Generator, ids: list[int], prefix) -> float:
    state = gen.start(ids, prefix=prefix)
    start = time.perf_counter()
    gen.step(state, GenerationConfig())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and tokens")
    parser.add_argument("--model", default="smollm2-135m")
    args = parse_args(parser)
    repeats, n_decode = (1, 16) if args.quick else (3, 48)

    models = {dtype: load_model(args.model, dtype=dtype) for dtype in ("float32", "bfloat16")}
    gens = {dtype: Generator(lm) for dtype, lm in models.items()}
    tok = models["float32"].tokenizer
    builder = PromptBuilder(tok, chat=models["float32"].chat_template, config=PromptConfig(shots=4))
    prompt = builder.build(QUESTION)
    long_prompt = (builder.prefix_ids * 3)[:1000]

    samples: dict[tuple, list[float]] = {}
    for _ in range(repeats):
        for dtype, gen in gens.items():
            for capture in (False, True):
                samples.setdefault(("decode", dtype, capture), []).append(
                    decode_rate(gen, prompt, n_decode, capture))
                samples.setdefault(("prefill", dtype, capture), []).append(
                    prefill_rate(gen, long_prompt, capture))
    rows = []
    for (kind, dtype, capture), values in samples.items():
        rows.append({"case": f"{kind} {dtype}{' +attention' if capture else ''}", "dtype": dtype,
                     "attention_capture": capture, f"{kind}_tokens_per_s": round(statistics.median(values), 1),
                     "tokens": n_decode if kind == "decode" else len(long_prompt)})
    base = {(r["case"].split()[0], r["dtype"]): r for r in rows if not r["attention_capture"]}
    for r in rows:
        kind = r["case"].split()[0]
        key = f"{kind}_tokens_per_s"
        r["ratio_to_fp32_no_capture"] = round(r[key] / base[(kind, "float32")][key], 3)

    for dtype, gen in gens.items():
        prefix = gen.prefix(builder.prefix_ids)
        cached, full = [], []
        for _ in range(repeats + 1):
            cached.append(first_token_seconds(gen, prompt, prefix))
            full.append(first_token_seconds(gen, prompt, None))
        rows.append({"case": f"first token, few-shot prompt {dtype}", "dtype": dtype,
                     "prompt_tokens": len(prompt), "prefix_tokens": len(builder.prefix_ids),
                     "s_full_prefill": round(statistics.median(full), 4),
                     "s_with_prefix_cache": round(statistics.median(cached), 4),
                     "prefix_cache_speedup": round(statistics.median(full) / statistics.median(cached), 2)})

    has_llama = importlib.util.find_spec("llama_cpp") is not None
    notes = ("llama.cpp reference: not measured — llama-cpp-python has no prebuilt wheel for this "
             "platform on PyPI (only a source build, which a setup step must not do); MODELS.md "
             "records 122 tok/s decode for the same GGUF after a manual 5.5 min source build."
             if not has_llama else "llama.cpp installed: see rows.")
    write_results("generator", rows, model=args.model,
                  data={"prompt": "few-shot CoT prompt from dynaprag.lm.prompts", "decode_tokens": n_decode,
                        "repeats": repeats}, notes=notes)
    print(open(_common.RESULTS / "generator.md").read())


if __name__ == "__main__":
    main()
