"""Step-level fixtures of whole reference decoding loops, and the timing of theirs against ours.

Runs a reference repository's own loop (DRAGIN @4d71efc ``src/generate.py``:
``AttnWeightRAG.inference`` for ``dragin``, ``TokenRAG.inference`` for ``token-rag``,
``EntityRAG.inference`` for ``entity-rag``; FLARE @ec4b06b ``QueryAgent.ret_prompt`` for
``flare``, :mod:`flare`; SeaKR @d75fe70 ``MultiHopReasoner.solve``'s first reasoning step for
``seakr``, :mod:`seakr`) on dynaprag's demo questions with dynaprag's
prompt, retriever (BM25 over the demo corpus) and default model (SmolLM2-135M, float32, eager
attention, one thread), patched at run time as listed in ``scripts/parity/README.md``. Each
iteration of the reference loop is one step of the fixture; see
``tests/comparison/fixtures/README.md`` for the fields.

In the same process it answers the same questions with dynaprag's preset through dynaprag's
loop at batch 1 and writes the per-question seconds of both to
``bench/results/preset_parity_timing.{json,md}``.

    .venv/bin/python scripts/parity/run_loops.py --dragin /work/ref/DRAGIN dragin token-rag
    PYTHONPATH=<dir with nltk> .venv/bin/python scripts/parity/run_loops.py --flare /work/ref/FLARE flare
    .venv/bin/python scripts/parity/run_loops.py --seakr /work/ref/SeaKR --questions 4 --no-timing seakr

The reference code is read from the checkout given; nothing of it is copied into dynaprag.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from argparse import Namespace
from pathlib import Path

import harness  # first: it sets the environment (model cache, offline hub)
import torch

import flare
import ours
import seakr
from harness import FIXTURES, ROOT
from reference import (CASE, PromptBridge, Recorder, StopLoop, instrument, load_dragin_generate,
                       patch_dragin_generator)

RESULTS = ROOT / "bench" / "results"
DRAGIN_COMMIT = "4d71efcf6712bf82c4a5c7c81455af4efee20dcc"

# The reference configs (config/Llama2-7b-chat/HotpotQA/{DRAGIN,FLARE}.json; EntityRAG has none:
# our preset's θ and solvers), minus data/model/retriever keys the bridge replaces.
REFERENCE_ARGS = {
    "dragin": dict(method="dragin", generate_max_length=100, query_formulation="real_words",
                   retrieve_keep_top_k=35, retrieve_topk=3, hallucination_threshold=0.8,
                   check_real_words=True, use_counter=True),
    "token-rag": dict(method="token", generate_max_length=100, query_formulation="direct", retrieve_topk=3,
                      hallucination_threshold=0.08, sentence_solver="avg", use_counter=True),
    "entity-rag": dict(method="entity", generate_max_length=100, query_formulation="direct", retrieve_topk=3,
                       hallucination_threshold=0.4, entity_solver="avg", sentence_solver="avg", use_counter=True),
}
LLAMA_TOKEN_TEXT = {"token-rag"}
"""Presets whose fixture is made with TokenRAG's token texts as Llama-2's single-token decode gives
them (leading space dropped: patch TOKEN-TEXT), the behaviour our preset follows by a documented
deviation (``confidence.token_rag_check(strip_token_spaces=True)``)."""
REFERENCE_CLASS = {"dragin": "AttnWeightRAG", "token-rag": "TokenRAG", "entity-rag": "EntityRAG"}
DATASET = {"flare": "2wikimultihopqa"}
"""Presets run with a dataset's settings: FLARE released its config for 2WikiMultihopQA only, so
the reference runs that config unmodified and our preset its 2Wiki settings (k 2)."""
PRESETS = sorted([*REFERENCE_ARGS, "flare", "seakr"])

# Trace points: (function owner, name) -> {statement prefix: (label, locals to record)}.
LOOP_POINTS = {
    "old_len = len(text)": ("iteration", ("text",)),
    "if not hallucination:": ("judged", ("new_text", "ptext", "curr", "curr_tokens", "curr_hit", "hallucination")),
    "docs = self.retrieve(": ("query", ("retrieve_question",)),
    "tokens_count = len(": ("text_after", ("text",)),
}


def instrument_dragin(module, recorder: Recorder) -> None:
    """Trace points in the reference loops (records only; listed in scripts/parity/README.md)."""
    gen, tok, attn = module.BasicGenerator, module.TokenRAG, module.AttnWeightRAG
    instrument(gen, "generate", {"tokens = [self.tokenizer.decode(t)": ("generated", ("generated_tokens",)),
                                 "return text, None, None": ("generated", ("generated_tokens",))}, recorder)
    instrument(gen, "generate_attn", {"seqlist = []": ("generated", ("generated_tokens", "range_")),
                                      "return text, seqlist": ("words", ("seqlist", "attns", "seqentropies"))},
               recorder)
    instrument(attn, "modifier", {"thres = [1 if v": ("sentence", ("sid", "sent", "tl", "tr", "value"))}, recorder)
    instrument(attn, "keep_real_words", {'if "retrieve_keep_top_k" in self.__dict__:':
                                         ("real_words", ("all_text", "curr_st", "real_pairs"))}, recorder)
    instrument(tok, "modifier", {"if p > self.hallucination_threshold:": ("sentence", ("sid", "sent", "tid", "tr", "p"))},
               recorder)
    instrument(module.EntityRAG, "modifier", {"if p > self.hallucination_threshold:": (
        "sentence", ("sid", "sentences", "entity", "entity_intv", "probs", "p"))}, recorder)
    attn_loop = dict(LOOP_POINTS)
    attn_loop["new_text = self.get_top_sentence(new_text)"] = ("regenerated_full", ("new_text",))
    instrument(attn, "inference", attn_loop, recorder)
    tok_loop = dict(LOOP_POINTS)
    tok_loop['text = text.strip() + " " + ptext.strip() + " " + new_text.strip()'] = ("regenerated_full", ("new_text",))
    instrument(tok, "inference", tok_loop, recorder)


def steps_of(preset: str, events: list[tuple[str, dict]], retrievals: list[dict], tokenizer) -> list[dict]:
    """The fixture's steps (one per reference loop iteration), from the trace."""
    steps: list[dict] = []
    hits = iter(retrievals)
    for label, v in events:
        step = steps[-1] if steps else None
        if label == "iteration":
            steps.append({"text_before": v["text"], "sentences": [], "fired": False, "t_start": v["_t"]})
        elif label == "generated" and "look_ahead_ids" not in step:
            ids = v["generated_tokens"][0]
            step["look_ahead_ids"] = ids
            step["look_ahead"] = tokenizer.decode(ids)
            if "range_" in v:
                step["word_ranges"] = v["range_"]
        elif label in ("generated", "words"):
            pass  # the regenerated ids (decoded in regenerated_full) and the merged words (from word_ranges)
        elif label == "sentence":
            step["sentences"].append({k: x for k, x in v.items() if k != "_t"})
        elif label == "judged":
            step["fired"] = bool(v["hallucination"])
            if step["fired"]:
                step["kept_text"] = v["ptext"]
                step["discarded"] = v.get("curr_tokens", v.get("curr"))
                if "curr_hit" in v:
                    step["hits"] = v["curr_hit"]
        elif label == "real_words":
            step["real_words"] = {"all_text": v["all_text"], "curr_st": v["curr_st"]}
        elif label == "query":
            step["query"] = v["retrieve_question"]
            step["hit_ids"] = next(hits)["hit_ids"]
        elif label == "regenerated_full":
            step["regenerated_full"] = v["new_text"]
        elif label == "text_after":
            step["text_after"] = v["text"]
    for step in steps:
        step["token_scores"] = token_scores(preset, step)
        if step["fired"] and preset == "dragin":
            fired = step["sentences"][-1]
            ranges = step["word_ranges"]
            step["fired_sentence"] = fired["sid"]
            step["keep"] = ranges[fired["tl"]][0] if fired["tl"] < len(ranges) else len(step["look_ahead_ids"])
        elif step["fired"]:
            step["fired_sentence"] = step["sentences"][-1]["sid"]
        if "regenerated_full" in step and preset != "dragin":
            step["regenerated"] = step["regenerated_full"].strip()  # TokenRAG appends all of it, stripped
        elif "regenerated_full" in step:  # DRAGIN appends get_top_sentence of it to the " "-joined text
            before = " ".join(s for s in (step["text_before"].strip(), step["kept_text"].strip()) if s)
            after = step["text_after"]
            step["regenerated"] = after[len(before):].strip() if after.startswith(before) else after
    return steps


def token_scores(preset: str, step: dict) -> dict[str, float]:
    """Per look-ahead token, the score the reference gave it (annotation computed by the harness):
    DRAGIN, each word's RIND value on the word's tokens (``range_``); TokenRAG, each sentence's
    mean 1-p on its tokens ``[tid, tr]``; EntityRAG, each entity's 1-exp(solver) on its tokens."""
    out: dict[str, float] = {}
    if preset == "dragin":
        ranges = step["word_ranges"]
        for s in step["sentences"]:
            for w, value in zip(range(s["tl"], s["tr"]), s["value"]):
                a, b = ranges[w]
                for t in range(a, b + 1):
                    out[str(t)] = value
    elif preset == "token-rag":
        n = len(step["look_ahead_ids"])
        for s in step["sentences"]:
            for t in range(s["tid"], min(s["tr"] + 1, n)):
                out[str(t)] = s["p"]
    elif preset == "entity-rag":
        n = len(step["look_ahead_ids"])
        for s in step["sentences"]:
            for (a, b), prob in zip(s["entity_intv"][s["sid"]], s["probs"]):
                for t in range(max(a, 0), min(b + 1, n)):
                    out[str(t)] = prob
    return out


def look_ahead_as_ours(generate, tokenizer, llama_tokens: bool):
    """TokenRAG's look-ahead (``generate(..., return_logprobs=True)``) as our triggers see it:
    patch EOS-TEXT, a final end-of-sequence token is left out of its text, tokens and log-probs
    (our documented deviation, ``lookahead.py``: on the chat prompt nearly every look-ahead ends
    there, and its text ``<|im_end|>`` glued to the last sentence changes spaCy's sentences and
    entities); patch TOKEN-TEXT (``llama_tokens``), token texts without their leading space."""
    eos = tokenizer.eos_token

    def wrapped(input_text, max_length, return_logprobs=False):
        text, tokens, logprobs = generate(input_text, max_length, return_logprobs=return_logprobs)
        if tokens is None:
            return text, tokens, logprobs
        if tokens and tokens[-1] == eos:
            tokens, logprobs = tokens[:-1], logprobs[:-1]
            text = text[: len(text) - len(eos)] if text.endswith(eos) else text
        if llama_tokens:
            tokens = [t.lstrip(" ") for t in tokens]
        return text, tokens, logprobs

    return wrapped


def run_reference(preset: str, module, lm, retriever, builder, questions: list[dict], recorder: Recorder,
                  stop_at_end_of_turn: bool = True) -> list[dict]:
    bridge = PromptBridge(builder, retriever, k=3)
    patch_dragin_generator(module, lm, bridge)
    args = Namespace(model_name_or_path="dynaprag:smollm2-135m", **REFERENCE_ARGS[preset])
    rag = getattr(module, REFERENCE_CLASS[preset])(args)
    rag.retrieve = bridge.retrieve
    if preset in REFERENCE_CLASS and preset != "dragin":
        rag.generator.generate = look_ahead_as_ours(rag.generator.generate, lm.tokenizer, preset in LLAMA_TOKEN_TEXT)
    eos = lm.tokenizer.eos_token
    if stop_at_end_of_turn:
        recorder.stop_when = lambda label, v: label == "iteration" and eos in v["text"]
    out = []
    for q in questions:
        bridge.question, bridge.retrievals = q["question"], []
        recorder.take()
        t0 = time.perf_counter()
        with torch.no_grad():
            try:
                text = rag.inference(q["question"], [], CASE)
                stopped = False
            except StopLoop:
                stopped = True
        seconds = time.perf_counter() - t0
        events = recorder.take()
        if stopped:  # the loop was ended as its next iteration began: its text so far is the answer
            text = events[-1][1]["text"]
            events = events[:-1]
        steps = steps_of(preset, events, bridge.retrievals, lm.tokenizer)
        ends = [i for i, s in enumerate(steps) if eos in s["text_before"]]
        # seconds until the loop re-prompts past its own end of turn (ours stops there)
        until_eos = (steps[ends[0]].pop("t_start") - t0) if ends else seconds
        for s in steps:
            s.pop("t_start", None)
        out.append({"id": q["id"], "question": q["question"], "answer": text, "steps": steps,
                    "seconds": round(seconds, 3), "seconds_until_end_of_turn": round(until_eos, 3)})
        print(f"  reference {preset} {q['id']}: {len(steps)} steps, "
              f"{sum(s['fired'] for s in steps)} retrievals, {seconds:.1f} s", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="*", help=f"any of {', '.join(PRESETS)}")
    parser.add_argument("--dragin", type=Path, help="root of a oneal2000/DRAGIN checkout at 4d71efc")
    parser.add_argument("--flare", type=Path, help="root of a jzbjyb/FLARE checkout at ec4b06b")
    parser.add_argument("--seakr", type=Path, help="root of a THU-KEG/SeaKR checkout at d75fe70")
    parser.add_argument("--questions", type=int, default=8, help="first N demo questions")
    parser.add_argument("--no-timing", action="store_true", help="write the fixtures only")
    parser.add_argument("--render-timing", action="store_true", help="rewrite the timing md from its JSON and exit")
    parser.add_argument("--whole-loop", action="store_true", help=(
        "let the reference loop run past its own <|im_end|> (it has no end-of-sequence stop) until its "
        "stop rules end it; by default it is ended when an iteration starts with <|im_end|> in its text"))
    args = parser.parse_args(argv)
    if args.render_timing:
        _write_timing(_load_timing())
        return 0
    if not args.presets:
        parser.error("give at least one preset")
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        parser.error(f"unknown preset {unknown[0]!r}; choose from {', '.join(PRESETS)}")
    if args.dragin is None and any(p in REFERENCE_ARGS for p in args.presets):
        parser.error("give --dragin (a DRAGIN checkout) for dragin, token-rag and entity-rag")
    if args.flare is None and "flare" in args.presets:
        parser.error("give --flare (a FLARE checkout) for flare")
    if args.seakr is None and "seakr" in args.presets:
        parser.error("give --seakr (a SeaKR checkout) for seakr")

    torch.set_num_threads(1)
    from dynaprag.lm import load_model
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    lm = load_model("smollm2-135m", dtype="float32")
    retriever = build_retriever(RetrieverConfig(), progress=False)
    questions = harness.demo_questions(args.questions)
    recorder = Recorder()
    module = None
    if args.dragin is not None:
        module = load_dragin_generate(args.dragin)
        instrument_dragin(module, recorder)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with ours.eager(lm.model):
        for preset in args.presets:
            pipe = ours.pipeline(lm, retriever, preset, dataset=DATASET.get(preset))
            if preset == "seakr":  # the first reasoning step only (scripts/parity/seakr.py); no timing
                ref = seakr.run_reference(seakr.load_seakr(args.seakr), args.seakr, lm, pipe.loop().gen, retriever,
                                          pipe.builder(), questions, recorder, seed=pipe.loop().config.seed)
                path = FIXTURES / "loop_seakr.json"
                write_seakr_fixture(path, seakr_meta(args), ref)
                print(f"wrote {path.relative_to(ROOT)}", flush=True)
                continue
            if preset == "flare":
                ref = flare.run_reference(flare.load_flare(args.flare), args.flare, lm, retriever, pipe.builder(),
                                          questions, recorder)
            else:
                ref = run_reference(preset, module, lm, retriever, pipe.builder(), questions, recorder,
                                    stop_at_end_of_turn=not args.whole_loop)
            path = FIXTURES / f"loop_{preset.replace('-', '_')}.json"
            write_fixture(path, meta(preset, args, lm), ref)
            print(f"wrote {path.relative_to(ROOT)}", flush=True)
            if args.no_timing:
                continue
            mine = ours.run(pipe, [q["question"] for q in questions])
            ref_s = [q["seconds"] for q in ref]
            ref_eos = [q["seconds_until_end_of_turn"] for q in ref]
            our_s = [mine[q["question"]]["seconds"] for q in questions]
            entry = {
                "reference": (f"jzbjyb/FLARE@{flare.FLARE_COMMIT[:7]} src/openai_api.py QueryAgent.ret_prompt"
                              if preset == "flare" else
                              f"oneal2000/DRAGIN@{DRAGIN_COMMIT[:7]} src/generate.py {REFERENCE_CLASS[preset]}.inference"),
                "questions": [q["id"] for q in questions],
                "reference_seconds": ref_s, "ours_seconds": our_s,
                "reference_mean_s": sum(ref_s) / len(ref_s), "ours_mean_s": sum(our_s) / len(our_s),
                "ratio_reference_over_ours": sum(ref_s) / sum(our_s),
                "reference_seconds_until_end_of_turn": ref_eos,
                "ratio_until_end_of_turn": sum(ref_eos) / sum(our_s),
                "reference_retrievals": [sum(s["fired"] for s in q["steps"]) for q in ref],
                "ours_retrievals": [len(mine[q["question"]]["answer"].trace.retrievals) for q in questions],
                "load_average_1min_at_end": round(os.getloadavg()[0], 1),
            }
            timing = _load_timing()  # re-read: another run may have written other presets meanwhile
            timing["presets"][preset] = entry
            _write_timing(timing)
    return 0


def write_fixture(path: Path, meta_: dict, questions: list[dict]) -> None:
    """The fixture, one step per line (small, diffable, byte-identical across reruns: no timings)."""
    lines = ['{"meta": ' + json.dumps(meta_, ensure_ascii=False) + ',', ' "questions": [']
    for qi, q in enumerate(questions):
        head = {k: q[k] for k in ("id", "question", "answer", "pre_retrieval") if k in q}
        lines.append("  " + json.dumps(head, ensure_ascii=False)[:-1] + ', "steps": [')
        for si, step in enumerate(q["steps"]):
            lines.append("   " + json.dumps(step, ensure_ascii=False) + ("," if si + 1 < len(q["steps"]) else ""))
        lines.append("  ]}" + ("," if qi + 1 < len(questions) else ""))
    lines.append(" ]}")
    text = "\n".join(lines) + "\n"
    json.loads(text)
    path.write_text(text, encoding="utf-8")


def meta(preset: str, args, lm) -> dict:
    if preset == "flare":
        return flare_meta(args, lm)
    return {
        "preset": preset,
        "reference": {"repo": "oneal2000/DRAGIN", "commit": DRAGIN_COMMIT, "file": "src/generate.py",
                      "function": f"{REFERENCE_CLASS[preset]}.inference", "args": REFERENCE_ARGS[preset]},
        "model": "smollm2-135m (dynaprag.lm.load_model, float32, eager attention, 1 torch thread, greedy)",
        "retriever": "dynaprag BM25 (RetrieverConfig defaults) over src/dynaprag/data/demo_corpus.jsonl, top 3",
        "prompt": "dynaprag PromptBuilder (default exemplars, chat template) with the reference's accumulated text "
                  "in the answer slot (scripts/parity/README.md, patch PROMPT)",
        "questions": f"first {args.questions} of src/dynaprag/data/demo_questions.jsonl",
        "loop_end": ("the reference's stop rules" if args.whole_loop else
                     "ended by the harness when an iteration starts with <|im_end|> in the text (patch END-OF-TURN)"),
        "token_text": ("llama (leading space dropped, patch TOKEN-TEXT)" if preset in LLAMA_TOKEN_TEXT else "decode")
                      + ("; final <|im_end|> left out of the look-ahead (patch EOS-TEXT)" if preset != "dragin" else ""),
        "command": f"scripts/parity/run_loops.py --dragin <DRAGIN checkout> {preset}"
                   + (" --whole-loop" if args.whole_loop else ""),
        "versions": harness.versions("python", "torch", "transformers"),
    }


def write_seakr_fixture(path: Path, meta_: dict, questions: list[dict]) -> None:
    """The SeaKR fixture, one question per line (no timings)."""
    rows = [json.dumps({k: v for k, v in q.items() if k != "seconds"}, ensure_ascii=False) for q in questions]
    text = '{"meta": ' + json.dumps(meta_, ensure_ascii=False) + ',\n "questions": [\n  ' + ",\n  ".join(rows) + "\n ]}\n"
    json.loads(text)
    path.write_text(text, encoding="utf-8")


def seakr_meta(args) -> dict:
    return {
        "preset": "seakr",
        "reference": {"repo": "THU-KEG/SeaKR", "commit": seakr.SEAKR_COMMIT, "file": "SEAKR/reasoner.py",
                      "function": "MultiHopReasoner.solve (first reasoning step and its retrieval)",
                      "args": seakr.ARGS},
        "model": "smollm2-135m (dynaprag.lm.load_model, float32, eager attention, 1 torch thread) behind the "
                 "reference's vLLM engine (patch SEAKR-ENGINE): greedy model.generate; samples drawn by "
                 "dynaprag.lm.sampling with the loop's seed; embeddings recomputed at the EOS overwriting each "
                 "sample's last token, MLP output of layer num_layers // 2 - 1; the reference's eigen score",
        "retriever": "dynaprag BM25 (RetrieverConfig defaults) over src/dynaprag/data/demo_corpus.jsonl, top 3",
        "prompt": "dynaprag PromptBuilder (default exemplars, chat template), the chosen documents in the knowledge slot",
        "questions": f"first {args.questions} of src/dynaprag/data/demo_questions.jsonl",
        "command": "scripts/parity/run_loops.py --seakr <SeaKR checkout> seakr",
        "versions": harness.versions("python", "torch", "transformers"),
    }


def flare_meta(args, lm) -> dict:
    return {
        "preset": "flare", "dataset": DATASET["flare"],
        "reference": {"repo": "jzbjyb/FLARE", "commit": flare.FLARE_COMMIT, "file": "src/openai_api.py",
                      "function": "QueryAgent.ret_prompt", "config": flare.CONFIG,
                      "args": flare.reference_args(args.flare), "max_generation_len": flare.MAX_GENERATION_LEN,
                      "model": flare.MODEL, "final_stop_sym": "\n\n", "batch_size": 1},
        "model": "smollm2-135m (dynaprag.lm.load_model, float32, eager attention, 1 torch thread) behind the "
                 "reference's openai_api_call: greedy model.generate, log_softmax log-probs (patch FLARE-API)",
        "retriever": "dynaprag BM25 (RetrieverConfig defaults) over src/dynaprag/data/demo_corpus.jsonl, top 2",
        "prompt": "dynaprag PromptBuilder (default exemplars, chat template) with the reference's case text "
                  "(its continuations as they are) in the answer slot (scripts/parity/README.md, patch FLARE-PROMPT)",
        "sentences": f"NLTK {__import__('nltk').__version__} PunktSentenceTokenizer (the reference's own)",
        "questions": f"first {args.questions} of src/dynaprag/data/demo_questions.jsonl",
        "loop_end": "the reference's own: finish_reason stop (end of sequence or \\n\\n) or max_generation_len",
        "token_text": "incremental decode; a final <|im_end|> ends the completion and is left out (patch FLARE-EOS)",
        "command": "PYTHONPATH=<dir with nltk> scripts/parity/run_loops.py --flare <FLARE checkout> flare",
        "versions": harness.versions("python", "torch", "transformers"),
    }


def _load_timing() -> dict:
    path = RESULTS / "preset_parity_timing.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"presets": {}}


def _write_timing(timing: dict) -> None:
    timing.setdefault("machine", f"{os.cpu_count()} CPU cores shared with other jobs (load average "
                                 f"{os.getloadavg()[0]:.1f} when first written)")
    timing["command"] = "scripts/parity/run_loops.py --dragin <DRAGIN checkout> --flare <FLARE checkout> <presets>"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "preset_parity_timing.json").write_text(json.dumps(timing, indent=1) + "\n", encoding="utf-8")
    rows = ["| preset | reference | questions | reference s/question | ours s/question | reference / ours |",
            "|---|---|---|---|---|---|"]
    for name, p in sorted(timing["presets"].items()):
        rows.append(f"| {name} | {p['reference']} | {len(p['questions'])} | {p['reference_mean_s']:.1f} | "
                    f"{p['ours_mean_s']:.1f} | {p['ratio_reference_over_ours']:.1f}× |")
    text = ("# Preset parity timing: the reference loop vs ours, same questions, model and machine\n\n"
            "Written by `scripts/parity/run_loops.py` (do not edit). Per preset, one process ran the "
            "reference's `inference` and then our preset through `Pipeline.loop` at batch 1 on the same "
            "questions (the first 8 demo questions); both float32, eager attention, one torch thread.\n\n"
            f"Machine: {timing['machine']}. Other helpers' jobs (and the other presets' runs) shared the two "
            "cores at the same time, so absolute seconds are inflated and noisy, and the two sides of a row "
            "ran minutes apart under different load; read the ratio as rough.\n\n" + "\n".join(rows) + "\n\n"
            "The reference is timed until the harness ends its loop at end of turn (patch END-OF-TURN in "
            "`scripts/parity/README.md`): it has no end-of-sequence stop and would go on re-prompting past "
            "the model's `<|im_end|>`, work ours never does; so both sides do the same steps.\n")
    (RESULTS / "preset_parity_timing.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
