"""Step-level fixture of Iter-RetGen's loop on dynaprag's inputs, with FlashRAG's implementation
as the reference (the paper's authors released no code).

Loads ``flashrag/pipeline/active_pipeline.py`` from a RUC-NLPIR/FlashRAG checkout at
``1ee5249`` with the ``flashrag`` package modules it imports replaced by small stand-ins
(patch IMPORT), builds ``IterativePipeline(config, prompt_template, iter_num=3, retriever,
generator)`` and calls its own ``run(dataset)`` on the demo questions, one batch, as
``examples/methods/run_exp.py:412-437`` does. Behind its calls: dynaprag's prompt, BM25 over the
demo corpus and SmolLM2-135M in float32 with eager attention, greedy. Every round's query,
hits and generation are recorded to ``tests/comparison/fixtures/loop_iter_retgen.json``::

    git --git-dir=<mirror of RUC-NLPIR/FlashRAG> archive 1ee5249 flashrag/pipeline | tar -x -C /work/ref/flashrag
    .venv/bin/python scripts/parity/iter_retgen_reference.py --flashrag /work/ref/flashrag

Patches (run time only, nothing of FlashRAG is copied here):

* IMPORT: ``flashrag.utils`` (``get_retriever``/``get_generator``, never called: both are
  passed in), ``flashrag.pipeline.BasicPipeline`` (keeps ``config`` and ``prompt_template``;
  ``evaluate`` returns the dataset unscored), ``flashrag.dataset.utils`` and
  ``flashrag.prompt`` are stand-ins; ``tqdm``/``numpy``/``transformers`` are the real ones.
* PROMPT: ``prompt_template.get_string(question, retrieval_result)`` returns a marker with the
  question and the passage ids; the generator turns it into ``PromptBuilder.build(question,
  passages)`` (our exemplars, chat template and knowledge slot, the passages in FlashRAG's order).
* RETRIEVER: ``batch_search(queries)`` is dynaprag's BM25, top ``k`` = 3 (the run default of
  our loop; FlashRAG's config has 5), as FlashRAG's document dicts.
* LLM: ``generate(prompts)`` decodes each prompt greedily with dynaprag's ``Generator`` until
  end of turn, the loop's answer rule (``dynaprag.dynamic.loop.finished``: our prompt asks for
  "So the answer is X.", where FlashRAG's asks for a short answer within ``max_tokens`` 32) or
  128 tokens (our loop's per-answer budget, ``max_new_tokens``, which the test sets too), and
  returns the decoded text.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import types
from pathlib import Path

import harness  # first: it sets the environment (model cache, offline hub)
import torch

COMMIT = "1ee524901aa3daf009f97b7a31e7a1b58eee8206"
FIXTURE = harness.FIXTURES / "loop_iter_retgen.json"
ITER_NUM, K, MAX_TOKENS = 3, 3, 128
MARKER = "\x00PROMPT\x00"


def load_pipeline_module(checkout: Path) -> types.ModuleType:
    """``active_pipeline.py`` with the flashrag modules it imports stood in for (patch IMPORT)."""
    path = checkout / "flashrag" / "pipeline" / "active_pipeline.py"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (pass the root of a FlashRAG checkout at 1ee5249)")

    class BasicPipeline:
        def __init__(self, config, prompt_template=None):
            self.config, self.prompt_template = config, prompt_template

        def evaluate(self, dataset, do_eval=True, pred_process_fun=None):
            return dataset

    stand_ins = {
        "flashrag": {}, "flashrag.pipeline": {"BasicPipeline": BasicPipeline},
        "flashrag.utils": {"get_retriever": None, "get_generator": None, "selfask_pred_parse": None,
                           "ircot_pred_parse": None},
        "flashrag.dataset": {}, "flashrag.dataset.utils": {"get_batch_dataset": None, "merge_batch_dataset": None},
        "flashrag.prompt": {"PromptTemplate": None},
    }
    harness.stub_modules(stand_ins)
    spec = importlib.util.spec_from_file_location("flashrag_reference_active_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Dataset:
    """FlashRAG's dataset surface the pipeline uses: ``question`` and ``update_output``."""

    def __init__(self, questions):
        self.question = list(questions)
        self.outputs: dict[str, list] = {}

    def update_output(self, key, values):
        self.outputs[key] = list(values)


class Bridge:
    def __init__(self, gen, builder, retriever):
        self.gen, self.builder, self.retriever = gen, builder, retriever
        self.passages: dict[str, object] = {}
        self.queries: list[list[str]] = []  # what each round's batch_search received

    # prompt_template
    def get_string(self, question, retrieval_result, **_):
        return MARKER + json.dumps({"question": question, "ids": [d["id"] for d in retrieval_result]})

    # retriever
    def batch_search(self, queries):
        self.queries.append(list(queries))
        out = []
        for q in queries:
            hits = self.retriever.search_one(q, K) if q.strip() else []
            for h in hits:
                self.passages[h.passage.id] = h.passage
            out.append([{"id": h.passage.id, "title": h.passage.title, "contents": h.passage.text} for h in hits])
        return out

    # generator
    def generate(self, prompts):
        from dynaprag.dynamic.loop import finished

        texts = []
        for prompt in prompts:
            spec = json.loads(prompt.split(MARKER, 1)[1])
            ids = self.builder.build(spec["question"], [self.passages[i] for i in spec["ids"]])
            texts.append(harness.greedy(self.gen, ids, MAX_TOKENS, stop=lambda t: t if finished(t) else None))
        return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flashrag", type=Path, required=True, help="root of a FlashRAG checkout at 1ee5249")
    parser.add_argument("--questions", type=int, default=8, help="first N demo questions")
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()
    module = load_pipeline_module(args.flashrag)

    inputs = harness.load()
    bridge = Bridge(inputs.gen, inputs.builder, inputs.retriever)
    rows = harness.demo_questions(args.questions)
    dataset = Dataset([r["question"] for r in rows])
    pipeline = module.IterativePipeline({}, prompt_template=bridge, iter_num=ITER_NUM, retriever=bridge,
                                        generator=bridge)
    with torch.no_grad():
        pipeline.run(dataset, do_eval=False)
    out = []
    for n, row in enumerate(rows):
        rounds = []
        for t in range(ITER_NUM):
            rounds.append({"query": bridge.queries[t][n], "hit_ids": [d["id"] for d in dataset.outputs[f"retrieval_result_iter_{t}"][n]],
                           "generation": dataset.outputs[f"pred_iter_{t}"][n]})
        out.append({"id": row["id"], "question": row["question"], "rounds": rounds, "answer": dataset.outputs["pred"][n]})
        print(row["id"], [r["hit_ids"] for r in rounds], repr(out[-1]["answer"]), flush=True)
    meta = {"preset": "iter-retgen",
            "reference": {"repo": "RUC-NLPIR/FlashRAG", "commit": COMMIT, "file": "flashrag/pipeline/active_pipeline.py",
                          "class": "IterativePipeline", "run": "examples/methods/run_exp.py iterretgen"},
            "settings": {"iter_num": ITER_NUM, "retrieval_topk": K, "max_tokens": MAX_TOKENS},
            "model": "smollm2-135m float32 eager, greedy", "retriever": "dynaprag BM25 (RetrieverConfig defaults), demo corpus",
            "command": "scripts/parity/iter_retgen_reference.py --flashrag <checkout>",
            "versions": harness.versions("torch", "transformers", "python")}
    harness.write_json(args.out, meta, out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
