"""SeaKR's own reasoner (THU-KEG/SeaKR @d75fe70 ``SEAKR/reasoner.py`` ``MultiHopReasoner.solve``) on
dynaprag's inputs, for its **first reasoning step** and the retrieval that step causes.

The reference is imported from the checkout given (nothing of it is copied); its patched vLLM
engine is replaced by :class:`EngineStandIn`, which answers ``generate(prompt, sampling_params)``
as the patched engine does:

* the greedy request (``n`` 1, temperature 0): greedy ``model.generate`` of dynaprag's model on
  the bridged prompt ids, cut at the first stop string (the text before it) or end of sequence,
  at most ``max_tokens``; per token ``{id: Logprob(logprob, decoded_token)}``, the last token
  overwritten by EOS with log-prob 0 and text ``""`` unless it was EOS (``stop_checker.py:33-60``);
* the 20-sample request: the sampled **token ids are dynaprag's** (``dynaprag.lm.sampling
  .sample_steps`` with the loop's seed, the reference's temperature, top-k, top-p, stop strings
  and budget, drawn as our estimate for that call draws them: a greedy row first in the
  selector's batch; vLLM's own draws cannot be reproduced), so the sampled texts are fixed by
  that seed; each sample's **embedding is computed here independently**, the way the patched engine
  reads it: one fresh forward pass over prompt + sample with the sample's last token overwritten
  by EOS, the output of ``model.layers[L].mlp`` (vLLM's decoder layer returns the MLP output, the
  residual apart) at that EOS, ``L = num_layers // 2 - 1`` (the reference's 15 of 32); the eigen
  score is the reference's own ``LLMEngine._compute_eigen_score``
  (``vllm_uncertainty/vllm/engine/llm_engine.py``, compiled from the checkout) over the non-empty
  samples (``compute_uncertainty``).

Its prompt (``Dataset.__call__``) is bridged to dynaprag's ``PromptBuilder`` and its retriever to
dynaprag's BM25. The run ends when the reasoner starts its second step or its final reading:
from the second step on the two prompts differ by a documented deviation (the reference's step
text loses its final ". " to the stop string and every "." inside it, ``dataset.py:20``; ours
keeps the step as generated), so nothing after it is compared. Patches: ``scripts/parity/README.md``
(section SeaKR).
"""
from __future__ import annotations

import ast
import asyncio
import importlib
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch

import harness
from reference import CASE, PromptBridge, Recorder, StopLoop, _stub_module, instrument

SEAKR_COMMIT = "d75fe707d22df4798794a8a8ae0040764e32b0d7"
PACKAGE = "SEAKR"
ARGS = {"eigen_threshold": -6.0, "prob_threshold": 0.1, "max_reasoning_steps": 7, "max_docs": 5, "eigen_alpha": 1e-3}
"""``main_multihop.py``'s defaults as the README runs them (θ −6, α 1e-3; 7 steps and 5 documents are
the README's commands, ``--max_reasoning_steps 7 --max_docs 5``)."""


@dataclass
class Logprob:
    """``vllm.sequence.Logprob``."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class SamplingParams:
    """``vllm.SamplingParams``: the keyword arguments as attributes."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


async def merge_async_iterators(*iterators):
    """``vllm.utils.merge_async_iterators``: ``(index, item)`` from each iterator (here in order)."""
    for i, it in enumerate(iterators):
        async for item in it:
            yield i, item


def load_seakr(checkout: Path) -> types.ModuleType:
    """``SEAKR/reasoner.py`` imported from ``checkout`` with ``vllm`` stubbed (the classes it names),
    ``.retriever`` (FAISS/BEIR/Elasticsearch) and ``.dataset`` stubbed (both are passed in), and
    ``spacy.load("en_core_web_sm")`` served by dynaprag's pipeline (the same model)."""
    root = Path(checkout)
    if not (root / "SEAKR" / "reasoner.py").is_file():
        raise SystemExit(f"{root / 'SEAKR' / 'reasoner.py'}: not found (pass the root of a SeaKR checkout at d75fe70)")
    if f"{PACKAGE}.reasoner" in sys.modules:
        return sys.modules[f"{PACKAGE}.reasoner"]
    vllm = _stub_module("vllm", AsyncLLMEngine=object, SamplingParams=SamplingParams)
    stubs = {"vllm": vllm, "vllm.sequence": _stub_module("vllm.sequence", Logprob=Logprob),
             "vllm.utils": _stub_module("vllm.utils", merge_async_iterators=merge_async_iterators),
             f"{PACKAGE}.retriever": _stub_module(f"{PACKAGE}.retriever", BM25=None),
             f"{PACKAGE}.dataset": _stub_module(f"{PACKAGE}.dataset", Dataset=object)}
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(root / PACKAGE)]
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules[PACKAGE] = package
    sys.modules.update(stubs)
    try:
        with harness.our_spacy():
            module = importlib.import_module(f"{PACKAGE}.reasoner")
    finally:
        for name, old in saved.items():
            if name.startswith("vllm"):
                if old is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = old
    return module


def eigen_function(checkout: Path):
    """The reference's ``LLMEngine._compute_eigen_score``, compiled alone from the checkout's source."""
    path = Path(checkout) / "vllm_uncertainty" / "vllm" / "engine" / "llm_engine.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "_compute_eigen_score":
            scope = {"torch": torch}
            exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), scope)
            return scope["_compute_eigen_score"]
    raise RuntimeError(f"{path}: _compute_eigen_score not found")


class SeakrBridge(PromptBridge):
    """``Dataset.__call__(question, cot_steps, docs)`` → a marker string; :meth:`ids` → dynaprag's
    prompt ids with the passages in the knowledge slot. Only the first step's prompts reach it
    (no ``cot_steps``: the run ends before the second step)."""

    def dataset(self, question: str, cot_steps=None, docs=None) -> str:
        if cot_steps:
            raise StopLoop("a prompt with reasoning steps (the comparison ends before it)")
        return "".join(docs or ()) + CASE

    def ids(self, text: str) -> list[int]:
        head, answer = text.split(CASE, 1)
        assert not answer, answer
        passages = [self.passages[part.split("\x00", 1)[0]] for part in head.split("\x00DOC:")[1:]]
        return self.builder.build(self.question, passages, [])


class SeakrRetriever:
    """``BM25.retrieve(queries, topk, max_query_length)`` → dynaprag's BM25; docs are DOC markers."""

    def __init__(self, bridge: SeakrBridge):
        self.bridge = bridge

    def retrieve(self, queries, topk: int = 1, max_query_length=None):
        ids, docs = [], []
        for q in queries:
            docs.append(self.bridge.retrieve(q, topk))
            ids.append(self.bridge.retrievals[-1]["hit_ids"])
        return ids, docs


class _Out(types.SimpleNamespace):
    pass


class EngineStandIn:
    """The patched ``AsyncLLMEngine`` (module docstring); every request is recorded (``"request"``)."""

    def __init__(self, lm, gen, bridge: SeakrBridge, recorder: Recorder, eigen, alpha: float, seed: int):
        self.lm, self.gen, self.bridge, self.recorder = lm, gen, bridge, recorder
        self.eigen = types.MethodType(eigen, types.SimpleNamespace(eigen_alpha=alpha))
        self.seed = seed
        self.eos = lm.tokenizer.eos_token_id
        layers = lm.model.model.layers
        self.mlp = layers[len(layers) // 2 - 1].mlp

    async def abort(self, request_id):
        return None

    async def generate(self, inputs, sampling_params, request_id):
        p = sampling_params
        ids = self.bridge.ids(inputs)
        stops = tuple(p.stop or ())
        if p.n == 1 and p.temperature == 0:
            out = self.greedy(ids, p.max_tokens, stops)
        else:
            out = self.samples(ids, p, stops)
        self.recorder("request", {"request_id": request_id, "passages": [x.id for x in self.bridge.last_passages],
                                  **out.record}, ("request_id", "passages", *out.record))
        yield out

    def _cut(self, tokens: list[int], stops: tuple[str, ...]) -> tuple[list[int], str]:
        """vLLM's stop: the first token after which the text holds a stop string (or EOS) ends it;
        the text is cut before the stop string."""
        tok = self.lm.tokenizer
        for i in range(len(tokens)):
            if tokens[i] == self.eos:
                return tokens[: i + 1], tok.decode(tokens[:i])
            text = tok.decode(tokens[: i + 1])
            hits = [text.index(s) for s in stops if s in text]
            if hits:
                return tokens[: i + 1], text[: min(hits)]
        return tokens, tok.decode(tokens)

    def greedy(self, ids: list[int], max_tokens: int, stops) -> _Out:
        tok = self.lm.tokenizer
        x = torch.tensor([ids])
        with torch.no_grad():
            out = self.lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_tokens,
                                         do_sample=False, num_beams=1, output_logits=True,
                                         return_dict_in_generate=True, eos_token_id=self.eos, pad_token_id=self.eos)
        gen = out.sequences[0, len(ids):].tolist()
        logprobs = [float(torch.log_softmax(lg[0].float(), -1)[t]) for lg, t in zip(out.logits, gen)]
        kept, text = self._cut(gen, stops)
        lps = []
        for i, t in enumerate(kept):
            piece = tok.decode(kept[: i + 1])[len(tok.decode(kept[:i])):]
            lps.append({t: Logprob(logprobs[i], 1, piece)})
        if kept and kept[-1] != self.eos:  # the stop token overwritten by EOS (stop_checker._change_last_token)
            lps[-1] = {self.eos: Logprob(0.0, 1, "")}
        elif kept:
            lps[-1] = {self.eos: Logprob(logprobs[len(kept) - 1], 1, "")}
        output = _Out(text=text, logprobs=lps)
        return _Out(outputs=[output], uncertainty={},
                    record={"kind": "greedy", "ids": kept, "text": text, "logprobs": logprobs[: len(kept)]})

    def samples(self, ids: list[int], p, stops) -> _Out:
        from dynaprag.lm.sampling import StepSampling

        # the draws are made as our estimate for the same call makes them: in the selector's batch (a
        # prompt with documents, SeakrSelector) a greedy row comes first and takes its share of the draws
        spec = StepSampling(max_tokens=p.max_tokens, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
                            stop=stops, seed=self.seed, greedy=bool(self.bridge.last_passages))
        state = self.gen.start(ids)
        drawn = self.gen.sample_steps(state, p.n, spec)
        rows = [[s.token_id for s in g.steps] for g in drawn.samples]
        texts = [self._cut(r, stops)[1] for r in rows]
        z = self.embeddings(ids, rows)
        valid = [z[i] for i, t in enumerate(texts) if t.strip()]
        score = self.eigen(torch.stack(valid)) if valid else None
        outputs = [_Out(text=t, logprobs=[]) for t in texts]
        return _Out(outputs=outputs, uncertainty={} if score is None else {"eigen_score": score},
                    record={"kind": "samples", "sample_ids": rows, "sample_texts": texts, "eigen_score": score})

    def embeddings(self, ids: list[int], rows: list[list[int]]) -> torch.Tensor:
        """Per sample, the MLP output of layer L at its last token overwritten by EOS (one batched
        forward, right padding: every real token keeps its position)."""
        seqs = [ids + r[:-1] + [self.eos] for r in rows]
        width = max(len(s) for s in seqs)
        x = torch.full((len(seqs), width), self.eos, dtype=torch.long)
        mask = torch.zeros_like(x)
        for i, s in enumerate(seqs):
            x[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        captured = {}
        hook = self.mlp.register_forward_hook(lambda _m, _i, out: captured.__setitem__("z", out.float()))
        try:
            with torch.no_grad():
                self.lm.model(input_ids=x, attention_mask=mask)
        finally:
            hook.remove()
        return torch.stack([captured["z"][i, len(s) - 1] for i, s in enumerate(seqs)])


SOLVE_POINTS = {
    "self.logger.info(f\"\\n{'='*50}\\nStep": ("iteration", ()),
    "self.running_steps.append(candidate_next_step)": ("direct", ("candidate_next_step",)),
    "self.running_steps.append(rag_candidate_next_step)": ("rag_step", ("rag_candidate_next_step",)),
    "await self.read_all_steps()": ("final", ()),
}
RAG_POINTS = {"combined = list(zip(read_ids, read_docs, read_outputs))": ("read", ("query", "read_ids"))}


def run_reference(module, checkout: Path, lm, gen, retriever, builder, questions: list[dict], recorder: Recorder,
                  seed: int = 0) -> list[dict]:
    """The reasoner's first step per question (module docstring); one fixture entry per question."""
    bridge = SeakrBridge(builder, retriever, k=3)
    original_ids = bridge.ids

    def ids(text):  # remember the passages of the prompt (recorded with each request)
        head = text.split(CASE, 1)[0]
        bridge.last_passages = [bridge.passages[p.split("\x00", 1)[0]] for p in head.split("\x00DOC:")[1:]]
        return original_ids(text)

    bridge.ids = ids
    engine = EngineStandIn(lm, gen, bridge, recorder, eigen_function(checkout), ARGS["eigen_alpha"], seed)
    instrument(module.MultiHopReasoner, "solve", SOLVE_POINTS, recorder)
    instrument(module.MultiHopReasoner, "rag", RAG_POINTS, recorder)
    out = []
    for q in questions:
        bridge.question, bridge.retrievals = q["question"], []
        recorder.take()
        iterations = []
        recorder.stop_when = lambda label, v: label == "final" or (
            label == "iteration" and iterations.append(1) is None and len(iterations) > 1)
        reasoner = module.MultiHopReasoner(q["id"], q["question"], bridge.dataset, engine, SeakrRetriever(bridge),
                                           eigen_threshold=ARGS["eigen_threshold"],
                                           prob_threshold=ARGS["prob_threshold"])
        reasoner.logger.disabled = True
        t0 = time.perf_counter()
        try:
            asyncio.run(reasoner.solve(max_reasoning_steps=ARGS["max_reasoning_steps"], max_docs=ARGS["max_docs"]))
            raise RuntimeError("the reasoner finished without starting a second step or its final reading")
        except StopLoop:
            pass
        recorder.stop_when = None
        entry = first_step(recorder.take(), bridge.retrievals, reasoner)
        entry.update(id=q["id"], question=q["question"], seconds=round(time.perf_counter() - t0, 3))
        out.append(entry)
        print(f"  reference seakr {q['id']}: first step {entry['status']}, eigen {entry['eigen_score']}, "
              f"{entry['seconds']:.1f} s", flush=True)
    return out


def first_step(events: list[tuple[str, dict]], retrievals: list[dict], reasoner) -> dict:
    """The fixture entry: the first greedy step, its samples and eigen score, the decision, and, if
    it retrieved, the query, the hits, each new hit's step and eigen score, the chosen document and
    the step generated with it."""
    requests = [v for label, v in events if label == "request"]
    direct = next(v for label, v in events if label == "direct")["candidate_next_step"]
    greedy, samples = requests[0], requests[1]
    entry = {"step": greedy["text"], "step_ids": greedy["ids"], "step_logprobs": greedy["logprobs"],
             "sample_texts": samples["sample_texts"], "sample_ids": samples["sample_ids"],
             "eigen_score": samples["eigen_score"], "status": direct.status.name,
             "states_answer": reasoner._check_final_answer(direct.content) is not None}
    rag = [v for label, v in events if label == "rag_step"]
    if entry["status"] == "DIRECT_FAILED":
        entry["query"] = retrievals[0]["query"] if retrievals else None
        entry["hit_ids"] = retrievals[0]["hit_ids"] if retrievals else []
        per_doc = []
        for greedy_r, sample_r in zip(requests[2::2], requests[3::2]):
            per_doc.append({"doc": greedy_r["passages"][-1], "step": greedy_r["text"],
                            "eigen_score": sample_r["eigen_score"]})
        entry["per_doc"] = per_doc
        if rag:
            step = rag[0]["rag_candidate_next_step"]
            entry.update(chosen=step.best_docid, regenerated=step.content, regenerated_eigen=step.score)
        else:
            entry.update(chosen=None, regenerated=None)
    return entry

