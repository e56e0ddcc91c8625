"""Generator speed: today's eager decoding against the fast decoder, with llama.cpp as the ceiling.

Variants, all on one model, measured alternately in one run (round-robin over repeats) so
their ratios compare like with like on a shared machine; absolute numbers are for the record:

- ``eager-float32`` / ``eager-bfloat16``: :class:`dynaprag.lm.Generator` as the methods run it
  today (transformers' forward, ``DynamicCache``); batch 8 as plain batched forward passes.
- ``fast-eager-bfloat16``: :mod:`dynaprag.lm.fast`'s hand-written pass over a static cache,
  uncompiled (separates what the pass saves from what compiling saves).
- ``compiled-bfloat16`` / ``compiled-int8`` / ``compiled-int4``: the same pass
  ``torch.compile``-d per length bucket; int8 / int4 = weight-only quantized linear layers
  (per channel / per group of 32) with bf16 activations.
- ``llama.cpp`` (``--with-llama-cpp``): llama-cpp-python built from its PyPI source package
  into ``<dynaprag cache>/bench/llama-cpp-python-<version>`` on first use (~5.5 min on an idle
  machine, ``nice -n 19``; never part of ``make setup``), run in a subprocess on the same GGUF
  the model was converted from, with the same token ids and thread count.

Every decode loop does what a white-box step does: logits → float32 log-softmax → entropy →
argmax (llama.cpp's too, in numpy). Rows per variant: decode tok/s at batch 1 and 8, prefill
tok/s (a ~900-token text), first-token latency of the few-shot prompt, RSS the variant added,
compile seconds. ``--profile`` adds a per-phase profile of batch-1 decoding (torch.profiler:
matmuls, attention, cache moves, other kernels, and the rest of the wall time as Python and
framework overhead); ``--agreement N`` adds how far each variant's signals move from eager
float32 over N questions (the demo questions, then HotpotQA dev from ``../shared/data``):
teacher-forced along eager float32's greedy answer, so ``same_answer_share`` is exact (a greedy
answer is unchanged iff every teacher-forced argmax agrees).

    .venv/bin/python bench/generator.py [--quick] [--model M] [--threads N] [--with-llama-cpp]
                                        [--profile] [--agreement N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (sets cache/offline env before dynaprag loads models)
from _common import RssPeak, load_questions, parse_args, result_name, rss_mb, write_results

QUESTION = "Which country is the birthplace of the composer of The Four Seasons?"
LLAMA_CPP_VERSION = "0.3.36"
SPEED_VARIANTS = ("eager-float32", "eager-bfloat16", "fast-eager-bfloat16", "compiled-bfloat16", "compiled-int8",
                  "compiled-int4")


# -- the variants ------------------------------------------------------------------------------
def _signals(logits):
    """What every white-box step computes from its logits: log-probs, entropy, the greedy token."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logprobs.exp() * logprobs).nan_to_num().sum(-1)
    return logprobs, entropy, logprobs.argmax(-1)


class EagerVariant:
    """Today's path: ``Generator.start/step`` at batch 1; batched forward passes at batch 8."""

    def __init__(self, name: str, lm):
        from dynaprag.lm import Generator

        self.name, self.lm, self.gen = name, lm, Generator(lm)
        self.compile_s = 0.0

    def decode(self, ids: list[int], n: int, batch: int) -> float:
        import torch
        from transformers import DynamicCache

        from dynaprag.lm import GenerationConfig

        if batch == 1:
            state = self.gen.start(ids)
            self.gen.step(state, GenerationConfig())
            began = time.perf_counter()
            for _ in range(n):
                self.gen.step(state, GenerationConfig(stop_at_eos=False))
            return n / (time.perf_counter() - began)
        with torch.inference_mode():
            cache = DynamicCache(config=self.lm.model.config)
            out = self.lm.model(input_ids=torch.tensor([ids] * batch), past_key_values=cache, use_cache=True,
                                logits_to_keep=1)
            cache, tokens = out.past_key_values, _signals(out.logits[:, -1])[2]
            began = time.perf_counter()
            for _ in range(n):
                cache, logits = self.gen.forward_rows(cache, tokens)
                tokens = _signals(logits)[2]
            return n * batch / (time.perf_counter() - began)

    def prefill(self, ids: list[int]) -> float:
        from dynaprag.lm import GenerationConfig

        state = self.gen.start(ids)
        began = time.perf_counter()
        self.gen.step(state, GenerationConfig())
        return time.perf_counter() - began

    def teacher_forced(self, prompt: list[int], answer: list[int]):
        """(argmax, log-prob of the forced token, entropy) at each answer position, one step at a time."""
        import torch

        from dynaprag.lm import GenerationConfig

        state = self.gen.start(prompt)
        out = []
        for token in answer:
            lp = self.gen.next_logprobs(state, GenerationConfig())
            _, ent, arg = _signals(state.logits)
            out.append((int(arg), float(lp[token]), float(ent)))
            state.ids.append(token)
            state.generated.append(True)
            state.logits = None
        return out

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        from dynaprag.lm import GenerationConfig

        return self.gen.generate(self.gen.start(prompt), GenerationConfig(max_new_tokens=n)).token_ids


class FastVariant:
    """:class:`dynaprag.lm.fast.FastDecoder` on a bf16 model: one decoder per batch size."""

    def __init__(self, name: str, lm, compile: bool, quantize: str | None, capacity: int):
        self.name, self.lm, self.compile, self.quantize, self.capacity = name, lm, compile, quantize, capacity
        self.decoders: dict[int, object] = {}
        self.compile_s = 0.0

    def decoder(self, batch: int):
        from dynaprag.lm.fast import FastDecoder

        if batch not in self.decoders:
            self.decoders[batch] = FastDecoder(self.lm.model, batch=batch, capacity=self.capacity,
                                               quantize=self.quantize, compile=self.compile)
        return self.decoders[batch]

    def decode(self, ids: list[int], n: int, batch: int) -> float:
        dec = self.decoder(batch)
        for row in range(batch):
            dec.truncate(row, 0)
        step = dec.prefill(0, ids)
        for row in range(1, batch):
            dec.cache.copy_row(0, row)
        span = dec.bucket(len(ids) + n + 1)
        if self.compile and (batch, span, False) not in dec.graphs:  # compile outside the timing, once per bucket
            self.compile_s += dec.warm(spans=[s for s in dec.buckets if len(ids) < s <= span])
        tokens = _signals(step.logits)[2].repeat(batch)
        began = time.perf_counter()
        for _ in range(n):
            step = dec.decode(tokens)
            tokens = _signals(step.logits)[2]
        return n * batch / (time.perf_counter() - began)

    def prefill(self, ids: list[int]) -> float:
        dec = self.decoder(1)
        dec.truncate(0, 0)
        began = time.perf_counter()
        _signals(dec.prefill(0, ids).logits)
        return time.perf_counter() - began

    def teacher_forced(self, prompt: list[int], answer: list[int]):
        dec = self.decoder(1)
        dec.truncate(0, 0)
        step = dec.prefill(0, prompt)
        out = []
        for token in answer:
            lp, ent, arg = _signals(step.logits[0])
            out.append((int(arg), float(lp[token]), float(ent)))
            step = dec.decode([token])
        return out


class LlamaCppVariant:
    """llama.cpp through llama-cpp-python in a subprocess (its own memory, same threads and ids)."""

    SCRIPT = r"""
import json, sys, time, resource
import numpy as np
from llama_cpp import Llama
args = json.loads(sys.argv[1])
llm = Llama(model_path=args["gguf"], n_ctx=args["n_ctx"], n_threads=args["threads"], n_batch=512, verbose=False)
def signals():
    logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    lp = logits - logits.max(); lp = lp - np.log(np.exp(lp).sum())
    return int(lp.argmax()), float(-(np.exp(lp) * lp).sum())
out = {}
llm.reset(); t = time.perf_counter(); llm.eval(args["long"]); signals(); out["prefill_s"] = time.perf_counter() - t
llm.reset(); t = time.perf_counter(); llm.eval(args["prompt"]); tok, _ = signals(); out["first_token_s"] = time.perf_counter() - t
t = time.perf_counter()
for _ in range(args["n"]):
    llm.eval([tok]); tok, _ = signals()
out["decode_tokens_per_s"] = args["n"] / (time.perf_counter() - t)
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

    def __init__(self, gguf: Path, target: Path, threads: int):
        self.name, self.gguf, self.target, self.threads = "llama.cpp", gguf, target, threads
        self.compile_s, self.last = 0.0, {}

    def run(self, prompt: list[int], long: list[int], n: int) -> dict:
        payload = json.dumps({"gguf": str(self.gguf), "n_ctx": 2048, "threads": self.threads, "prompt": prompt,
                              "long": long, "n": n})
        env = dict(os.environ, PYTHONPATH=str(self.target))
        done = subprocess.run([sys.executable, "-c", self.SCRIPT, payload], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"llama.cpp run failed: {done.stderr.strip()[-500:]}")
        self.last = json.loads(done.stdout.strip().splitlines()[-1])
        return self.last


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _llama_cpp_target() -> Path:
    from dynaprag.files import cache_dir

    return cache_dir() / "bench" / f"llama-cpp-python-{LLAMA_CPP_VERSION}"


def llama_cpp_built() -> bool:
    return (_llama_cpp_target() / "llama_cpp").is_dir()


def build_llama_cpp(wait_s: float = 3600.0) -> Path:
    """llama-cpp-python built from its PyPI sdist into the dynaprag cache (once; niced).

    A build another process is running (a ``.building-<pid>`` marker of a live process) is waited
    for rather than started twice.
    """
    target = _llama_cpp_target()
    deadline = time.monotonic() + wait_s
    while not (target / "llama_cpp").is_dir():
        building = [p for p in target.parent.glob(f"{target.name}.building-*")
                    if p.name.rsplit("-", 1)[1].isdigit() and _alive(int(p.name.rsplit("-", 1)[1]))]
        if not building:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the llama-cpp-python build of another process ({building[0].name}) "
                               f"had not finished after {wait_s / 60:.0f} min of waiting")
        print(f"waiting for the llama-cpp-python build ({building[0].name})", flush=True)
        time.sleep(30)
    if (target / "llama_cpp").is_dir():
        return target
    staging = target.with_name(f"{target.name}.staging-{os.getpid()}")
    marker = target.with_name(f"{target.name}.building-{os.getpid()}")
    target.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    print(f"building llama-cpp-python {LLAMA_CPP_VERSION} from source into {target} (minutes)", flush=True)
    try:
        subprocess.run(["nice", "-n", "19", sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                        "--no-deps", "--no-binary", "llama-cpp-python", "--target", str(staging),
                        f"llama-cpp-python=={LLAMA_CPP_VERSION}", "diskcache==5.6.3"],
                       check=True, env=dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL="2"))
        os.replace(staging, target)
    finally:
        marker.unlink(missing_ok=True)
    return target


def gguf_of(model: str) -> Path:
    """The GGUF file a bundled alias was converted from (multi-part ones assembled into the bench cache)."""
    from dynaprag.files import cache_dir
    from dynaprag.lm import models
    from dynaprag.lm.sources import MODELS

    source = MODELS.get(model)
    parts = source.part_paths()
    if len(parts) == 1:
        return parts[0]
    folder = cache_dir() / "bench" / "gguf"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.gguf_name
    return target if target.exists() else models._assemble_gguf(source, folder)


# -- the profile -------------------------------------------------------------------------------
PHASES = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::_weight_int8pack_mm", "aten::_weight_int4pack_mm",
               "mkldnn::", "onednn::"),
    "attention": ("scaled_dot_product_flash", "scaled_dot_product_efficient", "_scaled_dot_product_attention_math",
                  "aten::_softmax", "aten::_safe_softmax"),
    "cache_moves": ("aten::cat", "aten::index_put", "aten::index_copy", "aten::clone", "aten::stack"),
}
#: composite or view ops whose self time is dispatch, not arithmetic: counted as framework overhead
DISPATCH = {"aten::linear", "aten::matmul", "aten::t", "aten::transpose", "aten::view", "aten::reshape",
            "aten::_reshape_alias", "aten::unsqueeze", "aten::squeeze", "aten::slice", "aten::select", "aten::expand",
            "aten::as_strided", "aten::_unsafe_view", "aten::empty", "aten::empty_strided", "aten::detach",
            "aten::alias", "aten::lift_fresh", "aten::resolve_conj", "aten::resolve_neg", "aten::contiguous",
            "aten::scaled_dot_product_attention", "aten::softmax", "aten::dropout", "aten::to", "aten::item",
            "aten::_local_scalar_dense", "aten::split", "aten::chunk", "aten::narrow", "aten::permute"}


def _phase(name: str) -> str | None:
    if name in DISPATCH:
        return None
    for phase, keys in PHASES.items():
        if any(k in name for k in keys):
            return phase
    return "other_kernels"


def profile_decode(variant, ids: list[int], n: int) -> dict:
    """Shares of batch-1 decode wall time: leaf kernels' self time by phase; the rest of the wall
    time (Python, dispatch, module calls, guards, the profiler's own cost) is overhead."""
    from torch.profiler import ProfilerActivity, profile

    variant.decode(ids, 4, 1)  # warm (and compile) outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        began = time.perf_counter()
        variant.decode(ids, n, 1)
        wall = time.perf_counter() - began
    self_us = {"matmul": 0.0, "attention": 0.0, "cache_moves": 0.0, "other_kernels": 0.0}
    for event in prof.key_averages():
        if event.key.startswith(("aten::", "mkldnn::", "onednn::", "cpp_fused", "quantized::")):
            phase = _phase(event.key)
            if phase is not None:
                self_us[phase] += event.self_cpu_time_total
    total = wall * 1e6
    row = {"ms_per_token_profiled": round(total / 1000 / n, 2)}
    for phase, us in self_us.items():
        row[f"share_{phase}"] = round(us / total, 3)
    row["share_python_and_framework"] = round(max(0.0, 1 - sum(self_us.values()) / total), 3)
    return row


# -- the run -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and tokens")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=2, help="torch (and llama.cpp) threads")
    parser.add_argument("--repeats", type=int, default=None, help="alternating rounds (default 3, --quick 1)")
    parser.add_argument("--tokens", type=int, default=None, help="decoded tokens per case (default 64, --quick 16)")
    parser.add_argument("--variants", default=",".join(SPEED_VARIANTS), help="comma-separated subset")
    parser.add_argument("--with-llama-cpp", action="store_true", help="build (once) and measure llama.cpp")
    parser.add_argument("--llama-cpp-wait", type=float, default=60.0, metavar="MINUTES",
                        help="how long to wait for a llama-cpp-python build another process is running")
    parser.add_argument("--profile", action="store_true", help="add a per-phase profile of batch-1 decoding")
    parser.add_argument("--agreement", type=int, default=0, metavar="N",
                        help="signal agreement with eager float32 over N questions")
    args = parse_args(parser)
    import torch

    torch.set_num_threads(args.threads)
    if args.profile:
        import torch._inductor.config as inductor

        inductor.cpp.enable_kernel_profile = True  # compiled C++ kernels appear as profiler events
    from dynaprag.lm import load_model
    from dynaprag.lm.prompts import PromptBuilder, PromptConfig

    repeats, n_decode = (1, 16) if args.quick else (3, 64)
    repeats, n_decode = args.repeats or repeats, args.tokens or n_decode
    load = os.getloadavg()
    wanted = [v for v in args.variants.split(",") if v]
    models = {}
    for dtype in ("float32", "bfloat16"):
        if any(v.endswith(dtype) for v in wanted) or (dtype == "bfloat16" and any("fast" in v or "compiled" in v
                                                                                  for v in wanted)) \
                or (dtype == "float32" and args.agreement):
            models[dtype] = load_model(args.model, dtype=dtype)
    tok = next(iter(models.values())).tokenizer
    builder = PromptBuilder(tok, chat=next(iter(models.values())).chat_template, config=PromptConfig(shots=4))
    prompt = builder.build(QUESTION)
    long_prompt = (builder.prefix_ids * 3)[:900]
    capacity = 2048

    variants, setup = [], {}
    for name in wanted:
        before = rss_mb()
        began = time.perf_counter()
        if name.startswith("eager-"):
            variant = EagerVariant(name, models[name.removeprefix("eager-")])
        else:
            variant = FastVariant(name, models["bfloat16"], compile=name.startswith("compiled"),
                                  quantize=next((q for q in ("int8", "int4") if q in name), None),
                                  capacity=capacity)
            variant.decoder(1)
        setup[name] = {"setup_s": time.perf_counter() - began, "rss_added_mb": rss_mb() - before}
        variants.append(variant)
    samples: dict[tuple[str, str], list[float]] = {}

    def one_round(label, llama) -> None:
        for variant in variants:
            for batch in (1, 8):
                with RssPeak() as peak:
                    rate = variant.decode(prompt, n_decode, batch)
                samples.setdefault((variant.name, f"decode_b{batch}_tokens_per_s"), []).append(rate)
                samples.setdefault((variant.name, "rss_peak_mb"), []).append(peak.peak_mb)
            samples.setdefault((variant.name, "prefill_tokens_per_s"), []).append(
                len(long_prompt) / variant.prefill(long_prompt))
            samples.setdefault((variant.name, "first_token_s"), []).append(variant.prefill(prompt))
            print(f"round {label}: {variant.name} done", flush=True)
        if llama is not None:
            got = llama.run(prompt, long_prompt, n_decode)
            samples.setdefault(("llama.cpp", "decode_b1_tokens_per_s"), []).append(got["decode_tokens_per_s"])
            samples.setdefault(("llama.cpp", "prefill_tokens_per_s"), []).append(len(long_prompt) / got["prefill_s"])
            samples.setdefault(("llama.cpp", "first_token_s"), []).append(got["first_token_s"])
            samples.setdefault(("llama.cpp", "rss_peak_mb"), []).append(got["peak_rss_mb"])
            print(f"round {label}: llama.cpp done", flush=True)

    # llama.cpp joins the rounds once its build exists; if it was still building, one more
    # round of every variant runs after it, so it is always measured alternately with them
    llama, llama_rounds = None, 0
    for round_ in range(repeats):
        if args.with_llama_cpp and llama is None and llama_cpp_built():
            llama = LlamaCppVariant(gguf_of(args.model), build_llama_cpp(), args.threads)
        one_round(round_, llama)
        llama_rounds += llama is not None
    llama_missing = ""
    if args.with_llama_cpp and llama_rounds == 0:
        try:
            llama = LlamaCppVariant(gguf_of(args.model), build_llama_cpp(args.llama_cpp_wait * 60), args.threads)
        except TimeoutError as exc:
            llama_missing = str(exc)
        else:
            one_round(repeats, llama)
            llama_rounds = 1

    names = [v.name for v in variants] + (["llama.cpp"] if llama_rounds else [])
    rows = []
    for name in names:
        row = {"table": "speed", "variant": name}
        for (who, key), values in samples.items():
            if who == name:
                row[key] = round(statistics.median(values), 4 if key.endswith("_s") else 1)
        variant = next((v for v in variants if v.name == name), None)
        if variant is not None:
            row["setup_s"] = round(setup[name]["setup_s"], 1)
            row["rss_added_mb"] = round(setup[name]["rss_added_mb"], 1)
            row["compile_s"] = round(variant.compile_s, 1)
        rows.append(row)
    base = next((r for r in rows if r["variant"] == "eager-float32"), rows[0])
    ceiling = next((r for r in rows if r["variant"] == "llama.cpp"), None)
    for row in rows:
        row["b1_ratio_to_" + base["variant"]] = round(row["decode_b1_tokens_per_s"] / base["decode_b1_tokens_per_s"], 3)
        if ceiling is not None:
            row["b1_ratio_to_llama_cpp"] = round(row["decode_b1_tokens_per_s"] / ceiling["decode_b1_tokens_per_s"], 3)

    def write(stage: str) -> None:
        """Write what is measured so far (a run stopped later keeps it); the last stage is the full file."""
        load_after = os.getloadavg()
        notes = (f"{args.threads} thread(s) per variant; load average {load[0]:.1f} before the run and "
                 f"{load_after[0]:.1f} when this was written (the machine's 2 cores are shared: compare ratios, "
                 f"not absolute numbers). Decode: {n_decode} tokens after the {len(prompt)}-token few-shot prompt, "
                 f"median of {repeats} alternating rounds; batch 8 = the same prompt in 8 rows. Prefill: "
                 f"{len(long_prompt)} tokens. first_token_s: the few-shot prompt prefilled to its first token's "
                 "signals. rss_added_mb: memory the variant added when set up (weight copies, static cache; "
                 "compiled code comes later); rss_peak_mb: the process's peak while it decoded. compile_s: first "
                 "calls of the compiled step's length buckets, batch 1 and 8 (paid once per model, batch and "
                 f"bucket; cached on disk under the dynaprag cache for later processes). Stages written: {stage}.")
        if not args.with_llama_cpp or llama_missing:
            notes += f" llama.cpp not measured in this run ({llama_missing or '--with-llama-cpp'})."
        else:
            notes += (f" llama.cpp (llama-cpp-python {LLAMA_CPP_VERSION}, built from source, same GGUF, ids and "
                      f"threads) was measured in {llama_rounds} of the rounds, alternating with the others.")
        write_results(result_name("generator", args.model), rows, model=args.model, group_by="table",
                      data={"prompt": "few-shot CoT prompt from dynaprag.lm.prompts (4 shots)",
                            "prompt_tokens": len(prompt), "prefill_tokens": len(long_prompt),
                            "decode_tokens": n_decode, "repeats": repeats, "agreement_questions": args.agreement},
                      extra={"load_average": {"before": load, "after": load_after}}, notes=notes)

    write("speed")
    if args.profile:
        for variant in variants:
            rows.append({"table": "profile (batch-1 decode, torch.profiler)", "variant": variant.name,
                         **profile_decode(variant, prompt, n_decode // 2)})
        write("speed, profile")
    if args.agreement:
        rows += agreement_rows(variants, models, builder, args.agreement)
        write("speed" + (", profile" if args.profile else "") + ", agreement")
    print(open(_common.RESULTS / f"{result_name('generator', args.model)}.md").read())


def agreement_rows(variants, models, builder, n: int) -> list[dict]:
    """Each variant's signals against eager float32, teacher-forced along eager float32's greedy answers."""
    import dynaprag

    demo = Path(dynaprag.__file__).parent / "data" / "demo_questions.jsonl"
    questions = [json.loads(line)["question"] for line in demo.read_text().splitlines() if line.strip()]
    if len(questions) < n:
        questions += [q["question"] for q in load_questions("hotpotqa", n - len(questions))]
    questions = questions[:n]
    reference = next((v for v in variants if v.name == "eager-float32"), None) or EagerVariant(
        "eager-float32", models["float32"])
    answers, forced = [], []
    for q in questions:
        ids = builder.build(q)
        answer = reference.greedy(ids, 32)
        answers.append((ids, answer))
        forced.append(reference.teacher_forced(ids, answer))
    rows = []
    for variant in variants:
        if variant is reference:
            continue
        same, agree, tokens, dlp, dent, max_dent = 0, 0, 0, 0.0, 0.0, 0.0
        for (ids, answer), ref in zip(answers, forced):
            got = variant.teacher_forced(ids, answer)
            same += all(g[0] == r[0] for g, r in zip(got, ref))
            for g, r in zip(got, ref):
                tokens += 1
                agree += g[0] == r[0]
                dlp += abs(g[1] - r[1])
                dent += abs(g[2] - r[2])
                max_dent = max(max_dent, abs(g[2] - r[2]))
        rows.append({"table": "agreement with eager-float32 (teacher-forced along its greedy answers)",
                     "variant": variant.name, "questions": len(answers), "tokens": tokens,
                     "same_answer_share": round(same / len(answers), 3), "top1_agreement": round(agree / tokens, 4),
                     "mean_abs_dlogprob": round(dlp / tokens, 4), "mean_abs_dentropy_nats": round(dent / tokens, 4),
                     "max_abs_dentropy_nats": round(max_dent, 4)})
    return rows


if __name__ == "__main__":
    main()
