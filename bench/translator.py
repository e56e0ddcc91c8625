"""One DyPRAG translator training step: time and peak memory per KL reduction and loss layout.

The reference sums the KL over the sample padded to 3000 positions (``kl_reduction="padded-sum"``).
Computed directly (``loss_chunk=0``), a step keeps every layer's activations and several float32
copies of the 3000-position logits. ``loss_chunk=256`` (the default,
:mod:`dynaprag.parametric.chunked_loss`) recomputes the layers in the backward pass and runs the
output head and the losses 256 positions at a time. This script measures one step (forward and
backward, as :func:`~dynaprag.parametric.translator.train_translator` takes it) for each
combination of ``kl_reduction`` in (padded-sum, sum) and ``loss_chunk`` in (256, 0).

Each case runs in its own process, so that its peak resident memory (``ru_maxrss``) is its own,
under a data-size limit (``--memory-limit-gb``, default 11: what is left for training on a
24 GB machine that also serves a model). A case that needs more is reported as out of memory,
not allowed to push the machine into swapping or the OOM killer. One torch thread; each case
runs ``--repeats`` steps after one untimed step, and the median is reported.

The sample is the first ``--sample-tokens`` tokens (default 450, about a PRAG training sample of
the 0.5B benchmark) of a fixed text; the teacher is a random PRAG-shaped adapter. Cost depends
on lengths and shapes, not on these values.

    .venv/bin/python bench/translator.py                                  # smollm2-135m
    .venv/bin/python bench/translator.py --model qwen2.5-coder-0.5b --repeats 1
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_MODEL, parse_args, result_name, write_results  # noqa: E402

CASES = [("padded-sum", 256), ("padded-sum", 0), ("sum", 256), ("sum", 0)]
TEXT = ("Zorblat Lake is a freshwater lake in central Finland. It was first mapped in 1873 by the surveyor Anna "
        "Virtanen, who named it after a local legend about a giant pike. The lake covers 42 square kilometres, "
        "reaches a depth of 61 metres and drains north through the Plumbo River into the Gulf of Bothnia. ")


def one_case(model: str, dtype: str, kl: str, chunk: int, tokens: int, repeats: int) -> dict:
    """Run in a child process: load the model, take 1 + ``repeats`` steps, report times and peak memory."""
    import torch

    from dynaprag.corpus import Passage
    from dynaprag.lm import load_model
    from dynaprag.parametric.encode import EncodeConfig
    from dynaprag.parametric.lora import target_modules
    from dynaprag.parametric.translator import ParameterTranslator, TrainingPair, TranslatorConfig, translator_loss

    torch.set_num_threads(1)
    lm = load_model(model, dtype=dtype)
    encode = EncodeConfig()
    for p in lm.model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    shapes = {n: tuple(m.weight.shape) for n, m in target_modules(lm.model, encode.targets).items()}
    teacher = {f"{n}.lora_{ab}": torch.randn(*(encode.rank, s[1]) if ab == "A" else (s[0], encode.rank)) * 1e-2
               for n, s in shapes.items() for ab in "AB"}
    ids = lm.tokenizer.encode(TEXT * (1 + tokens // 50), add_special_tokens=False)[:tokens]
    pair = TrainingPair(Passage("bench", "Zorblat Lake", TEXT), teacher, [ids])
    config = TranslatorConfig(kl_reduction=kl, loss_chunk=chunk)
    net = ParameterTranslator.for_model(lm.model, encode.targets, encode.rank, config.hidden)
    emb = torch.randn(lm.model.config.hidden_size)
    seconds = []
    for step in range(1 + repeats):
        start = time.perf_counter()
        losses = translator_loss(lm, net, emb, pair, ids, encode.scaling, config, backward=True)
        if step:
            seconds.append(time.perf_counter() - start)
    return {"s_per_step": statistics.median(seconds), "steps_timed": len(seconds),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "kl_loss": float(losses["kl"]), "lm_loss": float(losses["lm"])}


def run_child(args, kl: str, chunk: int) -> dict:
    """One case in a fresh process under the data-size limit; out of memory is a result, not a crash."""
    limit = int(args.memory_limit_gb * 1024 ** 3)

    def cap():
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    cmd = [sys.executable, __file__, "--child", json.dumps([args.model, args.dtype, kl, chunk, args.sample_tokens,
                                                            args.repeats])]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cap)
    row = {"case": f"{kl}, loss_chunk={chunk}", "kl_reduction": kl, "loss_chunk": chunk,
           "sample_tokens": args.sample_tokens, "memory_limit_gb": args.memory_limit_gb}
    if proc.returncode == 0:
        return {**row, "status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}
    oom = "can't allocate memory" in proc.stderr or "MemoryError" in proc.stderr
    if not oom:
        raise SystemExit(f"error: case {row['case']} failed:\n{proc.stderr[-2000:]}")
    return {**row, "status": f"out of memory under {args.memory_limit_gb:g} GB"}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--dtype", default="float32", help="float32 (the reference trains in it) | bfloat16")
    ap.add_argument("--sample-tokens", type=int, default=450)
    ap.add_argument("--repeats", type=int, default=2, help="timed steps per case (after one untimed step)")
    ap.add_argument("--memory-limit-gb", type=float, default=11.0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 64-token sample, 1 timed step")
    ap.add_argument("--results", default=None, help="results folder (default bench/results)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parse_args(ap, argv)
    if args.child:
        print(json.dumps(one_case(*json.loads(args.child))))
        return
    if args.quick:
        args.sample_tokens, args.repeats = 64, 1
    rows = []
    for kl, chunk in CASES:
        print(f"[translator] {kl}, loss_chunk={chunk} ...", flush=True)
        rows.append(run_child(args, kl, chunk))
        print(f"  {rows[-1]}", flush=True)
    base = {r["kl_reduction"]: r for r in rows if r["loss_chunk"] == 0 and r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok" and r["kl_reduction"] in base:
            r["time_ratio_to_direct"] = r["s_per_step"] / base[r["kl_reduction"]]["s_per_step"]
            r["memory_ratio_to_direct"] = r["peak_rss_mb"] / base[r["kl_reduction"]]["peak_rss_mb"]
    notes = (f"One translator step (forward + backward) on a {args.sample_tokens}-token sample; padded-sum pads it "
             f"to 3000 positions (the reference). loss_chunk=0 is the direct computation, 256 the default "
             f"(chunked head and losses, layers recomputed in the backward pass). Each case in its own process with "
             f"one torch thread and a {args.memory_limit_gb:g} GB data limit; median of {args.repeats} timed step(s) "
             f"after an untimed one. Ratios compare cases of this run.")
    name = result_name("translator_quick" if args.quick else "translator", args.model)
    path = write_results(name, rows, model=f"{args.model} ({args.dtype})", dtype=args.dtype,
                         data={"sample_tokens": args.sample_tokens, "text": "fixed bench text"}, notes=notes,
                         results_dir=args.results)
    print(path.with_suffix(".md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
