"""Step-level fixture of IRCoT's own loop (StonyBrookNLP/ircot @3c1820f) on dynaprag's inputs.

Builds the reference's ``ircot_qa`` state machine from its own participant classes
(``commaqa/inference/constants.py`` ``MODEL_NAME_CLASS``) with the settings of
``base_configs/ircot_qa_codex_hotpotqa.jsonnet`` and drives it with its own
``BestFirstDecomposer`` (``commaqa/inference/model_search.py``), one fresh set of participants
per question. Behind its calls: dynaprag's prompt (``PROMPT``, patch PROMPT), BM25 over the demo
corpus (patch RETRIEVER) and SmolLM2-135M in float32 with eager attention, greedy (patch LLM).
Each retrieval / sentence / exit decision is recorded to
``tests/comparison/fixtures/loop_ircot.json``::

    pip install rapidfuzz                     # the reference's own dedup (ircot.py:10)
    git --git-dir=<mirror of StonyBrookNLP/ircot> archive 3c1820f | tar -x -C /work/ref/ircot
    .venv/bin/python scripts/parity/ircot_reference.py --ircot /work/ref/ircot

Patches (run time only; the checkout is not modified, nothing of it is copied here):

* IMPORT: ``openai``, ``diskcache``, ``ftfy`` are stubs (never called: the LLM and the cache are
  replaced; ``ftfy.fix_text`` is only used by ``get_pid_for_title_paragraph_text``, which is
  replaced by the passage id lookup: it names paragraphs for the output, no decision reads it).
* PROMPT: the reference gets no prompt file; its ``prompt`` attributes are set to a marker, so
  each prompt string reads ``MARKER … Wikipedia Title: t\\np … Q: question\\nA: chain``. The
  bridge turns it into ``PromptBuilder.build(question, paragraphs, encode(chain))`` (our
  exemplars, chat template and ``[i] title: text`` knowledge slot; the paragraphs in the
  reference's order; the chain the reference joined, in the answer slot).
* RETRIEVER: ``ircot.safe_post_request`` (the HTTP call to its Elasticsearch server) returns
  dynaprag's BM25 hits for ``query_text`` and ``max_hits_count`` as the server's JSON.
* LLM: ``GPT3Generator.generate_text_sequence`` decodes greedily with dynaprag's ``Generator``
  until end of turn, its stop string ``"\\n"`` (cut off) or ``max_tokens`` (300).
"""
from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import harness  # first: it sets the environment (model cache, offline hub)
import torch

COMMIT = "3c1820f698eea5eeddb4fba3c56b64c961e063e4"
FIXTURE = harness.FIXTURES / "loop_ircot.json"
MARKER = "\x00PROMPT\x00"
REGEX = ".* answer is:? (.*)\\.?"
K, CAP, MAX_TOKENS = 6, 15, 300


def config(end: str = "[EOQ]") -> dict:
    """``ircot_qa_codex_hotpotqa.jsonnet``'s participants (host, corpus and prompt files replaced)."""
    return {
        "start_state": "step_by_step_bm25_retriever", "end_state": end,
        "step_by_step_bm25_retriever": ("retrieve_and_reset_paragraphs", dict(
            next_model="step_by_step_cot_reasoning_gen", retrieval_type="bm25", retriever_host="bridge",
            retriever_port=0, retrieval_count=K, global_max_num_paras=CAP,
            query_source="question_or_last_generated_sentence", source_corpus_name="demo",
            document_type="title_paragraph_text", return_pids=False, cumulate_titles=True, end_state=end)),
        "step_by_step_cot_reasoning_gen": ("step_by_step_cot_gen", dict(
            next_model="step_by_step_exit_controller", prompt_file="", generation_type="sentences",
            reset_queries_as_sentences=False, add_context=True, shuffle_paras=False, terminal_return_type=None,
            disable_exit=True, end_state=end, gen_model="gpt3", engine="code-davinci-002",
            retry_after_n_seconds=50)),
        "step_by_step_exit_controller": ("step_by_step_exit_controller", dict(
            next_model="step_by_step_bm25_retriever", answer_extractor_regex=REGEX,
            answer_extractor_remove_last_fullstop=True, terminal_state_next_model="generate_main_question",
            terminal_return_type="pids", global_max_num_paras=CAP, end_state=end)),
        "generate_main_question": ("copy_question", dict(next_model="answer_main_question", eoq_after_n_calls=1,
                                                         end_state=end)),
        "answer_main_question": ("llmqa", dict(next_model="extract_answer", prompt_file="", end_state=end,
                                               gen_model="gpt3", engine="code-davinci-002",
                                               retry_after_n_seconds=50, add_context=True)),
        "extract_answer": ("answer_extractor", dict(query_source="last_answer", regex=REGEX,
                                                    match_all_on_failure=True, remove_last_fullstop=True)),
    }


def stub_imports() -> None:
    class Cache:  # diskcache: memoize is the identity
        def __init__(self, *a, **k):
            pass

        def memoize(self, *a, **k):
            return lambda f: f

    harness.stub_modules({"openai": {}, "diskcache": {"Cache": Cache}, "ftfy": {"fix_text": lambda t: t}}, replace=False)


class Bridge:
    """dynaprag's prompt, retriever and model behind the reference's prompt strings and calls."""

    def __init__(self, gen, builder, retriever):
        self.gen, self.builder, self.retriever = gen, builder, retriever
        self.passages: dict[tuple[str, str], object] = {}
        self.log: list[dict] = []

    def ids(self, prompt: str) -> list[int]:
        rest = prompt.split(MARKER, 1)[1]
        context, qa = rest.rsplit("\n\nQ: ", 1)
        question, chain = qa.split("\nA:", 1)
        found = []
        for (title, text), passage in self.passages.items():
            at = context.find(f"Wikipedia Title: {title}\n{text.strip()}")
            if at >= 0:
                found.append((at, passage))
        assert len(found) == context.count("Wikipedia Title: "), "a paragraph of the prompt is unknown"
        paragraphs = [p for _, p in sorted(found, key=lambda x: x[0])]
        return self.builder.build(question, paragraphs, self.builder.encode(chain.strip()))

    def generate(self, prompt: str) -> str:
        text = harness.greedy(self.gen, self.ids(prompt.rstrip()), MAX_TOKENS,
                              stop=lambda t: t[: t.index("\n")] if "\n" in t else None)
        self.log.append({"kind": "generate", "output": text})
        return text

    def search(self, url, params):
        query, n = params["query_text"], params["max_hits_count"]
        hits = self.retriever.search_one(query, n) if query.strip() else []
        items = []
        for h in hits:
            p = h.passage
            assert len(p.text.split(" ")) <= 350, "para_to_text would cut this paragraph (350 words)"
            self.passages[(p.title, p.text)] = p
            items.append({"title": p.title, "paragraph_text": p.text, "corpus_name": params["corpus_name"],
                          "id": p.id})
        self.log.append({"kind": "search", "query": query, "hit_ids": [h.passage.id for h in hits]})
        return types.SimpleNamespace(ok=True, json=lambda: {"retrieval": items})

    def pid(self, title, text):
        return self.passages[(title, text)].id


def patch(ircot_mod, gpt3_mod, bridge: Bridge) -> None:
    ircot_mod.safe_post_request = bridge.search
    ircot_mod.get_pid_for_title_paragraph_text = bridge.pid
    gpt3_mod.GPT3Generator.generate_text_sequence = lambda self, prompt: [(bridge.generate(prompt), 0.0)]


def run_question(modules, bridge: Bridge, qid: str, question: str) -> dict:
    constants, model_search, data_instances = modules
    spec = config()
    models = {}
    for name, (cls_name, kwargs) in ((k, v) for k, v in spec.items() if isinstance(v, tuple)):
        model = constants.MODEL_NAME_CLASS[cls_name](**kwargs)
        if hasattr(model, "prompt"):
            model.prompt = MARKER  # PROMPT
        if hasattr(model, "qa_model"):
            model.qa_model.prompt = MARKER
        models[name] = model.query
    models["start_state"], models["end_state"] = spec["start_state"], spec["end_state"]
    steps: list[dict] = []

    def traced(name, func):
        def wrapper(state, debug=False):
            before = len(bridge.log)
            out = func(state, debug=debug)
            new = out[0] if isinstance(out, list) else out
            calls = bridge.log[before:]
            if name == "step_by_step_bm25_retriever":
                search = next((c for c in calls if c["kind"] == "search"), {"query": "", "hit_ids": []})
                slot = [bridge.pid(t, p) for t, p in zip(new.data["titles"], new.data["paras"])]
                steps.append({"query": search["query"], "hit_ids": search["hit_ids"], "slot_ids": slot})
            elif name == "step_by_step_cot_reasoning_gen":
                steps[-1]["continuation"] = calls[-1]["output"]
                steps[-1]["sentence"] = new.data["generated_sentences"][-1]
            elif name == "step_by_step_exit_controller":
                steps[-1]["exit"] = new.next != "step_by_step_bm25_retriever"
            elif name == "answer_main_question":
                record["reader_output"] = calls[-1]["output"]
            elif name == "extract_answer":
                record["answer"] = new.data.get_last_answer()
            return out
        return wrapper

    record: dict = {"id": qid, "question": question}
    for name in [n for n in models if n not in ("start_state", "end_state")]:
        models[name] = traced(name, models[name])
    controller = model_search.ModelController(models, data_class=data_instances.StructuredDataInstance)
    decomposer = model_search.BestFirstDecomposer(controller)
    example = {"qid": qid, "question": question, "titles": [], "paras": [], "metadata": {}}
    final, _ = decomposer.find_answer_decomp(example)
    assert final is not None, f"{qid}: the reference's search failed"
    record["steps"] = steps
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ircot", type=Path, required=True, help="root of a StonyBrookNLP/ircot checkout at 3c1820f")
    parser.add_argument("--questions", type=int, default=8, help="first N demo questions")
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()
    if not (args.ircot / "commaqa" / "inference" / "ircot.py").is_file():
        raise SystemExit(f"{args.ircot}: not an ircot checkout (commaqa/inference/ircot.py missing)")
    stub_imports()
    sys.path.insert(0, str(args.ircot))
    inputs = harness.load()
    rows = harness.demo_questions(args.questions)
    out = []
    with harness.our_spacy(), torch.no_grad():  # the participants load en_core_web_sm as they are built
        from commaqa.inference import constants, data_instances, ircot, model_search
        from commaqa.models import gpt3generator

        bridge = Bridge(inputs.gen, inputs.builder, inputs.retriever)
        patch(ircot, gpt3generator, bridge)
        for row in rows:
            out.append(run_question((constants, model_search, data_instances), bridge, row["id"], row["question"]))
            print(row["id"], len(out[-1]["steps"]), "steps ->", repr(out[-1].get("answer")), flush=True)
    meta = {"preset": "ircot", "reference": {"repo": "StonyBrookNLP/ircot", "commit": COMMIT,
                                             "config": "base_configs/ircot_qa_codex_hotpotqa.jsonnet",
                                             "loop": "commaqa/inference/model_search.py BestFirstDecomposer"},
            "settings": {"bm25_retrieval_count": K, "global_max_num_paras": CAP, "max_tokens": MAX_TOKENS},
            "model": "smollm2-135m float32 eager, greedy", "retriever": "dynaprag BM25 (RetrieverConfig defaults), demo corpus",
            "command": "scripts/parity/ircot_reference.py --ircot <checkout>",
            "versions": harness.versions("torch", "transformers", "python", "spacy")}
    harness.write_json(args.out, meta, out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
