"""FLARE's own loop (jzbjyb/FLARE @ec4b06b ``src/openai_api.py`` ``QueryAgent.ret_prompt``) on dynaprag's inputs.

The reference is imported as a package from the checkout given (nothing of it is copied) and
run with its released 2WikiMultihopQA config (``configs/2wikihop_flare_config.json``, read from
the checkout) and ``max_generation_len`` 256 (``openai.sh``). Its OpenAI completion call
(``openai_api_call``) is served by :class:`CompletionStandIn`: greedy ``model.generate`` of
dynaprag's model on dynaprag's prompt ids (the bridge turns the reference's prompt string into
them), returning what the completions API returned: ``text``, ``logprobs.tokens`` (each token's
text, concatenating to ``text``), ``token_logprobs``, ``text_offset`` (counted from the prompt
string's start, as the API counts them) and ``finish_reason``. Its retriever is dynaprag's BM25.
Sentence boundaries are the reference's own: NLTK's ``PunktSentenceTokenizer`` (untrained,
``min_sent_len`` 5), so ``nltk`` must be importable (``pip install --target DIR nltk``,
``PYTHONPATH=DIR``; it is no dynaprag dependency). Every patch is listed in
``scripts/parity/README.md`` (section FLARE).
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

import harness
from reference import CASE, PromptBridge, Recorder, _stub_module, instrument

FLARE_COMMIT = "ec4b06b502b5ab54f3f9236b0112a5d28482e7bb"
CONFIG = "configs/2wikihop_flare_config.json"
MAX_GENERATION_LEN = 256
"""``openai.sh``'s ``--max_generation_len`` for the released runs (REAUDIT F2)."""
MODEL = "text-davinci-003"
"""The reference's default ``--model`` (a completion model: ``Utils.is_chat`` is false, so
``complete`` asks for log-probs and ``final_stop_sym`` is ``"\\n\\n"``)."""
PACKAGE = "flare_reference"


# -- loading ------------------------------------------------------------------------------------

class _ApiError(Exception):
    """Stands for the ``openai.error`` classes ``utils.py`` names in default arguments (never raised)."""


def load_flare(checkout: Path) -> types.ModuleType:
    """``src/openai_api.py`` of a FLARE checkout, imported as the package ``flare_reference``.

    Stubbed, never used by the loop: ``.retriever`` (Elasticsearch/BEIR/Bing) and ``.datasets``
    (HF datasets/BEIR loaders); ``openai`` while ``.utils`` is imported (it names
    ``openai.error.*`` classes of the pre-1.0 client; the call itself is replaced); ``tenacity``
    (the retry decorator on ``QueryAgent.retrieve``: identity) and ``tiktoken`` (only used when an
    API return has no tokens; ours always has) if they are not installed. ``spacy.load`` serves
    dynaprag's ``en_core_web_sm`` (``ApiReturn.spacy_nlp``; unused with the ``nltk`` sentencizer).
    """
    src = Path(checkout) / "src"
    if not (src / "openai_api.py").is_file():
        raise SystemExit(f"{src / 'openai_api.py'}: not found (pass the root of a FLARE checkout at ec4b06b)")
    try:
        import nltk.tokenize.punkt  # noqa: F401
    except ImportError:
        raise SystemExit("FLARE splits sentences with NLTK's Punkt: pip install --target DIR nltk "
                         "and run with PYTHONPATH=DIR (it is no dynaprag dependency)") from None
    if PACKAGE in sys.modules:
        return sys.modules[f"{PACKAGE}.openai_api"]
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(src)]
    sys.modules[PACKAGE] = package
    sys.modules[f"{PACKAGE}.retriever"] = _stub_module(f"{PACKAGE}.retriever", BM25=None)
    sys.modules[f"{PACKAGE}.datasets"] = _stub_module(f"{PACKAGE}.datasets", StrategyQA=None, WikiMultiHopQA=None,
                                                      WikiAsp=None, ASQA=None)
    stubs = {}
    try:
        importlib.import_module("tenacity")
    except ImportError:
        identity = lambda *a, **k: (lambda f: f)  # noqa: E731
        stubs["tenacity"] = _stub_module("tenacity", retry=identity, stop_after_attempt=lambda n: None,
                                         wait_fixed=lambda s: None)
    try:
        importlib.import_module("tiktoken")
    except ImportError:
        stubs["tiktoken"] = _stub_module("tiktoken")
    errors = types.SimpleNamespace(**{n: _ApiError for n in (
        "RateLimitError", "ServiceUnavailableError", "APIError", "Timeout", "APIConnectionError",
        "InvalidRequestError", "AuthenticationError")})
    saved_openai = sys.modules.get("openai")
    sys.modules.update(stubs)
    sys.modules["openai"] = _stub_module("openai", error=errors)
    try:
        with harness.our_spacy():
            module = importlib.import_module(f"{PACKAGE}.openai_api")
    finally:
        if saved_openai is None:
            sys.modules.pop("openai", None)
        else:
            sys.modules["openai"] = saved_openai
    return module


# -- the stand-ins ------------------------------------------------------------------------------

class FlareBridge(PromptBridge):
    """:class:`PromptBridge` for FLARE's prompt strings: the reference's ``CtxPrompt.format``
    (``ctx_position: before_case``) reads ``"Search results …:\\n[1]: DOC…\\n[2]: DOC…\\n" CASE
    answer``; FLARE appends its continuations to ``case`` as they are (no strip, no join), so
    the answer text goes to our answer slot unchanged."""

    def ids(self, text: str) -> list[int]:
        head, answer = text.split(CASE, 1)
        passages = [self.passages[part.split("\x00", 1)[0]] for part in head.split("\x00DOC:")[1:]]
        return self.builder.build(self.question, passages, self.builder.encode(answer))


class FlareRetriever:
    """The reference's ``BM25.retrieve(queries, topk, max_query_length)`` served by dynaprag's BM25
    (:meth:`PromptBridge.retrieve`): passage ids and DOC markers as the arrays it returns. The
    reference truncates each query to its last ``max_query_length`` GPT-2 tokens (64; none for the
    question); ours searches the whole query (the fixture records its length)."""

    def __init__(self, bridge: FlareBridge, recorder: Recorder):
        self.bridge, self.recorder = bridge, recorder

    def retrieve(self, queries, topk: int = 1, max_query_length=None, filter_ids=None):
        ids, texts = [], []
        for query in queries:
            markers = self.bridge.retrieve(query, topk)
            hit_ids = self.bridge.retrievals[-1]["hit_ids"]
            self.recorder("retrieval", {"query": query, "hit_ids": hit_ids, "max_query_length": max_query_length},
                          ("query", "hit_ids", "max_query_length"))
            ids.append(hit_ids)
            texts.append(markers)
        return np.array(ids, dtype=object), np.array(texts, dtype=object)


class CompletionStandIn:
    """``openai_api_call`` for a completion model, served by dynaprag's model.

    Greedy ``model.generate`` (the API's ``temperature`` 0, ``top_p`` 1) of at most ``max_tokens``
    tokens on the bridged prompt ids; each token's log-prob is ``log_softmax`` of its step's
    logits (float32). The end-of-sequence token ends the completion (``finish_reason`` "stop")
    and is left out of ``text``, tokens and log-probs (patch FLARE-EOS); a ``stop`` string ends it
    too, cut off as the API does (the tokens kept are those starting before it). Token texts are
    incremental decodes, so they concatenate to ``text``; ``text_offset`` counts characters from
    the start of the prompt string the reference sent (its ``ApiReturn`` subtracts
    ``len(prompt)``). Every call is recorded (``"call"``: answer text, ids, log-probs, the
    end-of-sequence token's log-prob).
    """

    def __init__(self, lm, bridge: FlareBridge, recorder: Recorder):
        self.lm, self.bridge, self.recorder = lm, bridge, recorder
        tok = lm.tokenizer
        self.eos_ids = {tok.eos_token_id} | set(_as_list(lm.model.generation_config.eos_token_id))

    def __call__(self, *args, **kwargs):
        assert "messages" not in kwargs, "FLARE ran a completion model here"
        assert kwargs.get("temperature") == 0 and not kwargs.get("echo") and not kwargs.get("logit_bias"), kwargs
        assert not kwargs.get("frequency_penalty"), kwargs
        stop = kwargs.get("stop")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        choices = [self.complete(p, kwargs["max_tokens"], stops) for p in kwargs["prompt"]]
        return {"model": MODEL, "choices": choices}

    def complete(self, prompt: str, max_tokens: int, stops: list[str]) -> dict:
        tok = self.lm.tokenizer
        ids = self.bridge.ids(prompt)
        x = torch.tensor([ids])
        with torch.no_grad():
            out = self.lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_tokens,
                                         do_sample=False, num_beams=1, output_logits=True,
                                         return_dict_in_generate=True, eos_token_id=sorted(self.eos_ids),
                                         pad_token_id=tok.eos_token_id)
        gen = out.sequences[0, len(ids):].tolist()
        logprobs = [float(torch.log_softmax(logits[0].float(), -1)[t]) for logits, t in zip(out.logits, gen)]
        finish, eos_logprob = "length", None
        if gen and gen[-1] in self.eos_ids:
            gen, eos_logprob = gen[:-1], logprobs.pop()
            finish = "stop"
        pieces, text = [], ""
        for i in range(len(gen)):
            now = tok.decode(gen[: i + 1])
            if not now.startswith(text):  # a character split over byte tokens: earlier pieces shrink
                keep = len(os.path.commonprefix([now, text]))
                excess = len(text) - keep
                for j in range(len(pieces) - 1, -1, -1):
                    cut = min(len(pieces[j]), excess)
                    pieces[j], excess = pieces[j][: len(pieces[j]) - cut], excess - cut
                text = text[:keep]
            pieces.append(now[len(text):])
            text = now
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        if cut >= 0:
            finish = "stop"
            starts = np.cumsum([0] + [len(p) for p in pieces])[:-1]
            n = int(sum(1 for s in starts if s < cut))
            gen, pieces, logprobs, text = gen[:n], pieces[:n], logprobs[:n], text[:cut]
            if pieces:
                pieces[-1] = pieces[-1][: cut - int(starts[n - 1])]
        offsets = (len(prompt) + np.cumsum([0] + [len(p) for p in pieces])[:-1]).tolist()
        answer = prompt.split(CASE, 1)[1]
        self.recorder("call", {"answer": answer, "answer_ids": self.bridge.builder.encode(answer), "ids": gen,
                               "logprobs": logprobs, "eos_logprob": eos_logprob, "finish_reason": finish,
                               "max_tokens": max_tokens},
                      ("answer", "answer_ids", "ids", "logprobs", "eos_logprob", "finish_reason", "max_tokens"))
        return {"text": text, "finish_reason": finish,
                "logprobs": {"tokens": pieces, "token_logprobs": logprobs, "text_offset": offsets}}


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


# -- the run --------------------------------------------------------------------------------

LOOP_POINTS = {
    "look_aheads: List[str] = ['']": ("iteration", ("step_ind", "max_gen_len", "final_outputs")),
    "look_aheads = [ar.use_as_query(": ("look_ahead", ("apireturns",)),
    "if self.use_gold:": ("query", ("look_aheads",)),
    "new_queries = []": ("appended", ("apireturns", "max_gen_len")),
}
"""Trace points in ``QueryAgent.ret_prompt`` (records only): the text at each iteration, the
look-ahead after ``truncate_at_boundary``, the query ``use_as_query`` made of it, and the
continuation appended (after ``truncate_at_boundary`` and the stop symbol)."""


def reference_args(checkout: Path) -> dict:
    """The released 2Wiki FLARE config, as ``openai_api.py``'s ``__main__`` merges it over its defaults
    (the keys ``ret_prompt`` reads that the config leaves out keep the ``__init__`` defaults, which
    equal those of ``__main__``)."""
    return json.loads((Path(checkout) / CONFIG).read_text(encoding="utf-8"))


def make_agent(module, checkout: Path, lm, builder, retriever, recorder: Recorder):
    """A ``QueryAgent`` on the stand-ins, with ``CtxPrompt``'s class settings as ``__main__`` sets them."""
    templates = sys.modules[f"{PACKAGE}.templates"]
    bridge = FlareBridge(builder, retriever, k=0)
    module.openai_api_call = CompletionStandIn(lm, bridge, recorder)
    kwargs = dict(reference_args(checkout))
    kwargs.update(retriever=FlareRetriever(bridge, recorder), final_stop_sym="\n\n", debug=False)
    CtxPrompt = templates.CtxPrompt
    CtxPrompt.format_reference_method = "searchresultsrank"
    CtxPrompt.ctx_position = "before_case"
    CtxPrompt.clean_reference = False
    CtxPrompt.add_ref_suffix = CtxPrompt.add_ref_prefix = None
    CtxPrompt.ret_instruction = CtxPrompt.instruction = None
    agent = module.QueryAgent(model=MODEL, max_generation_len=MAX_GENERATION_LEN, temperature=0,
                              retrieval_kwargs=kwargs, tokenizer=None)
    return agent, bridge, CtxPrompt


def run_reference(module, checkout: Path, lm, retriever, builder, questions: list[dict], recorder: Recorder):
    """FLARE's loop per question (batch 1: with a batch the reference's length rule takes the
    shortest continuation of the batch); one fixture entry per question."""
    import time

    instrument(module.QueryAgent, "ret_prompt", LOOP_POINTS, recorder)
    agent, bridge, CtxPrompt = make_agent(module, checkout, lm, builder, retriever, recorder)
    out = []
    for q in questions:
        bridge.question, bridge.retrievals = q["question"], []
        recorder.take()
        prompt = CtxPrompt(demo=[], case=CASE, question=q["question"], qid=q["id"])
        t0 = time.perf_counter()
        with torch.no_grad():
            outputs, probs, retrievals, traces = agent.prompt([prompt])
        seconds = time.perf_counter() - t0
        events = recorder.take()
        pre, steps = steps_of(events, lm.tokenizer)
        out.append({"id": q["id"], "question": q["question"], "answer": outputs[0], "pre_retrieval": pre,
                    "steps": steps, "seconds": round(seconds, 3), "seconds_until_end_of_turn": round(seconds, 3)})
        print(f"  reference flare {q['id']}: {len(steps)} steps, {sum(s['fired'] for s in steps)} retrievals "
              f"after the first, {seconds:.1f} s", flush=True)
    return out


def steps_of(events: list[tuple[str, dict]], tokenizer) -> tuple[dict, list[dict]]:
    """The question's retrieval with the question, and one step per ``ret_prompt`` iteration."""
    pre: dict = {}
    steps: list[dict] = []
    for label, v in events:
        step = steps[-1] if steps else None
        if label == "iteration":
            steps.append({"text_before": v["final_outputs"][0], "max_gen_len": v["max_gen_len"], "fired": False})
        elif label == "retrieval" and step is not None and "raw_ids" not in step:
            pre = {"query": v["query"], "hit_ids": v["hit_ids"], "max_query_length": v["max_query_length"]}
        elif label == "retrieval":
            step.update(fired=True, query=v["query"], hit_ids=v["hit_ids"], max_query_length=v["max_query_length"])
        elif label == "call" and "raw_ids" not in step:
            step.update(raw_ids=v["ids"], raw_look_ahead=tokenizer.decode(v["ids"]),
                        raw_finish_reason=v["finish_reason"], eos_logprob=v["eos_logprob"],
                        prompt_answer_ids=v["answer_ids"])
        elif label == "call":
            step["appended_ids"] = v["ids"]
        elif label == "look_ahead":
            ar = v["apireturns"][0]
            n = len(ar.tokens)
            probs = [float(p) for p in ar.probs]
            step.update(look_ahead_ids=step["raw_ids"][:n], look_ahead=ar.text, tokens=list(ar.tokens),
                        probs=probs, token_scores={str(i): 1.0 - p for i, p in enumerate(probs)},
                        truncated_finish_reason=ar.finish_reason,
                        discarded=tokenizer.decode(step["raw_ids"][n:]))
        elif label == "query":
            step["masked_query"] = v["look_aheads"][0]
        elif label == "appended":
            ar = v["apireturns"][0]
            step.update(appended=ar.text, finish_reason=ar.finish_reason, max_gen_len_after=v["max_gen_len"])
            if step["fired"]:
                step["regenerated"] = ar.text
    return pre, steps
