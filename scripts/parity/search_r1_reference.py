"""Turn-level fixture of Search-R1's own evaluation loop (PeterGriffinJin/Search-R1 @a14dc3a) on dynaprag's inputs.

Runs the reference's ``LLMGenerationManager.run_llm_loop`` (``search_r1/llm_agent/generation.py``,
the loop ``verl/trainer/ppo/ray_trainer.py:_validate`` runs for the paper's tables) on a batch of
demo questions, with SmolLM2-135M (float32, eager attention, greedy) standing in for the vLLM
rollout worker and dynaprag's BM25 over the demo corpus for the retrieval server. The prompt is
the reference's own ``make_prefix`` (``scripts/data_process/qa_search_test_merge.py``) of each
question in the chat template, after the ``-prompted`` variant's demonstration exchange (an
untrained 135M model never writes a tag without it). Every turn's response, action, query, hit
ids and observation, and the answer the reference's scorer extracts
(``verl/utils/reward_score/qa_em.py:extract_solution``), go to
``tests/comparison/fixtures/loop_search_r1.json``::

    git --git-dir=<mirror of PeterGriffinJin/Search-R1> archive a14dc3a | tar -x -C /work/ref/Search-R1
    .venv/bin/python scripts/parity/search_r1_reference.py --search-r1 /work/ref/Search-R1

Patches (run time only; the checkout is not modified, nothing of it is copied here):

* IMPORT: ``verl`` (the training framework) is a stand-in exposing what ``generation.py`` uses:
  ``DataProto`` as a dict of tensors with ``meta_info`` (``from_dict``, ``batch``), and an
  unused ``Tracking``; ``datasets`` and ``verl.utils.hdfs_io`` are stubs so the data script that
  holds ``make_prefix`` imports (only ``make_prefix`` is called). ``qa_em.py`` is loaded from its file.
* ROLLOUT: ``actor_rollout_wg.generate_sequences`` strips each row's left padding (as
  ``vllm_rollout._pre_process_inputs``) and decodes greedily with dynaprag's ``Generator`` until
  an end-of-turn token (kept in the response, as vLLM keeps it) or ``max_response_length``; the
  responses are right-padded with the pad id.
* PAD: SmolLM2's pad token is its ``<|im_end|>``, which its chat template writes into every
  prompt and the reference's masks (``input_ids != pad_id``) would then drop; the pad token is
  set to ``<|endoftext|>`` (id 0, in no prompt), as Qwen2.5's pad differs from its ``<|im_end|>``.
* SERVER: ``_batch_search`` returns dynaprag's BM25 top-k for each query as the server's JSON,
  ``contents`` = ``title + "\\n" + text`` (the corpus format ``_passages2string`` splits); an
  empty query finds nothing (dynaprag's loop does not search it).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("DYNAPRAG_CACHE", str(ROOT / ".cache" / "dynaprag"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

COMMIT = "a14dc3a4ffc6fe88c1e95038d9738e21ba3f7a06"
FIXTURE = ROOT / "tests" / "comparison" / "fixtures" / "loop_search_r1.json"
QUESTIONS = ("q01", "q02", "q03")
"""Demo questions whose greedy trajectories cover a search, an invalid turn, the answer tag and
the final turn after the turn limit."""
MAX_TURNS, MAX_RESPONSE, MAX_OBS, TOPK = 2, 48, 500, 3
"""``max_turns`` and ``max_response_length`` lowered from the paper's evaluation (4, 500) to keep
the test cheap; ``max_obs_length`` and ``retriever.topk`` as ``evaluate.sh``."""


class DataProto:
    """The part of ``verl.DataProto`` ``generation.py`` uses: a dict of tensors and ``meta_info``."""

    def __init__(self, batch=None, meta_info=None):
        self.batch, self.meta_info = dict(batch or {}), dict(meta_info or {})

    @classmethod
    def from_dict(cls, tensors, meta_info=None):
        return cls(tensors, meta_info)


def stub_imports() -> None:
    verl = types.ModuleType("verl")
    verl.DataProto = DataProto
    utils, tracking, hdfs = (types.ModuleType(n) for n in ("verl.utils", "verl.utils.tracking", "verl.utils.hdfs_io"))
    tracking.Tracking = object
    hdfs.copy = hdfs.makedirs = lambda *a, **k: None
    verl.utils, utils.tracking, utils.hdfs_io = utils, tracking, hdfs
    for name, module in {"verl": verl, "verl.utils": utils, "verl.utils.tracking": tracking,
                         "verl.utils.hdfs_io": hdfs, "datasets": types.ModuleType("datasets")}.items():
        sys.modules[name] = module


def load_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Rollout:
    """The vLLM rollout worker's ``generate_sequences``, greedy with dynaprag's generator."""

    def __init__(self, gen, pad_id: int, max_response: int):
        self.gen, self.pad_id, self.max_response = gen, pad_id, max_response
        self.calls = 0

    def generate_sequences(self, batch: DataProto) -> DataProto:
        from dynaprag.lm.generator import GenerationConfig

        rows = []
        for row in batch.batch["input_ids"].tolist():
            first = next(i for i, t in enumerate(row) if t != self.pad_id)
            state = self.gen.start(row[first:])
            out: list[int] = []
            for _ in range(self.max_response):
                step = self.gen.step(state, GenerationConfig(max_new_tokens=1))
                out.append(step.token_id)
                if step.token_id in self.gen.eos_ids:
                    break
            rows.append(out)
        self.calls += 1
        width = max(map(len, rows))
        responses = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, out in enumerate(rows):
            responses[i, : len(out)] = torch.tensor(out)
        return DataProto({"responses": responses})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--search-r1", type=Path, required=True, help="root of a Search-R1 checkout at a14dc3a")
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()
    root = args.search_r1
    if not (root / "search_r1" / "llm_agent" / "generation.py").is_file():
        raise SystemExit(f"{root}: not a Search-R1 checkout (search_r1/llm_agent/generation.py missing)")
    stub_imports()
    sys.path.insert(0, str(root))
    from search_r1.llm_agent import generation  # noqa: E402
    data_script = load_file("qa_search_test_merge", root / "scripts/data_process/qa_search_test_merge.py")
    qa_em = load_file("qa_em", root / "verl/utils/reward_score/qa_em.py")

    from dynaprag.dynamic.methods.search_r1.builder import DEMONSTRATION_QUESTION, demonstration
    from dynaprag.dynamic.methods.search_r1.protocol import PROTOCOLS
    from dynaprag.lm import load_model
    from dynaprag.lm.generator import Generator
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    torch.set_num_threads(1)
    lm = load_model("smollm2-135m", dtype="float32")
    lm.model.set_attn_implementation("eager")
    tok = lm.tokenizer
    tok.pad_token = "<|endoftext|>"  # PAD
    gen = Generator(lm)
    retriever = build_retriever(RetrieverConfig(), progress=False)
    rows = {r["id"]: r for r in map(json.loads, (ROOT / "src/dynaprag/data/demo_questions.jsonl").open())}
    questions = [rows[q] for q in QUESTIONS]

    def prefix(question: str) -> str:
        question = question.strip()
        if question[-1] != "?":  # qa_search_test_merge.py:75-77
            question += "?"
        return data_script.make_prefix({"question": question}, template_type="base")

    demo = [{"role": "user", "content": prefix(DEMONSTRATION_QUESTION)},
            {"role": "assistant", "content": demonstration(PROTOCOLS.get("search-r1"))}]
    prompts = [tok.apply_chat_template(demo + [{"role": "user", "content": prefix(q["question"])}],
                                       add_generation_prompt=True, tokenize=False) for q in questions]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]  # torch_functional.py:236
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, width - len(row):] = torch.tensor(row)  # left padding (rl_dataset.py:138)
    attention = (input_ids != tok.pad_token_id).long()
    positions = (torch.cumsum(attention, dim=1) - 1) * attention

    log: list[list[dict]] = [[] for _ in questions]
    config = generation.GenerationConfig(max_turns=MAX_TURNS, max_start_length=2048, max_prompt_length=4096,
                                         max_response_length=MAX_RESPONSE, max_obs_length=MAX_OBS, num_gpus=1,
                                         search_url="bridge", topk=TOPK)
    manager = generation.LLMGenerationManager(tok, Rollout(gen, tok.pad_token_id, MAX_RESPONSE), config,
                                              is_validation=True)
    searched: list[list[str]] = []

    def server(queries):  # SERVER
        results = []
        for q in queries:
            hits = retriever.search_one(q, TOPK) if q.strip() else []
            searched.append([h.passage.id for h in hits])
            results.append([{"document": {"contents": f"{h.passage.title}\n{h.passage.text}"}, "score": h.score}
                            for h in hits])
        return {"result": results}

    manager._batch_search = server
    execute = manager.execute_predictions

    def traced(predictions, pad_token, active_mask=None, do_search=True):
        before = len(searched)
        next_obs, dones, valid, is_search = execute(predictions, pad_token, active_mask, do_search)
        actions, contents = manager.postprocess_predictions(predictions)
        hits = iter(searched[before:])
        for i, active in enumerate(active_mask.tolist()):
            if not active:
                continue
            turn = {"response": predictions[i], "action": actions[i], "content": contents[i],
                    "observation": next_obs[i] if do_search else None, "final": not do_search}
            if actions[i] == "search":
                turn["hit_ids"] = next(hits) if do_search else []
            log[i].append(turn)
        return next_obs, dones, valid, is_search

    manager.execute_predictions = traced
    batch = DataProto({"input_ids": input_ids, "attention_mask": attention, "position_ids": positions})
    with torch.no_grad():
        final = manager.run_llm_loop(batch, input_ids[:, -config.max_start_length:].clone())
    out = []
    for i, q in enumerate(questions):
        mask = final.batch["attention_mask"][i].bool()
        sequence = tok.decode(final.batch["input_ids"][i][mask])
        responses = final.batch["responses"][i]
        out.append({"id": q["id"], "question": q["question"], "turns": log[i],
                    "responses": tok.decode(responses[responses != tok.pad_token_id], skip_special_tokens=True),
                    "answer": qa_em.extract_solution(sequence)})
        print(q["id"], [t["action"] for t in log[i]], "->", repr(out[-1]["answer"]), flush=True)
    import transformers
    meta = {"preset": "search-r1-prompted",
            "reference": {"repo": "PeterGriffinJin/Search-R1", "commit": COMMIT,
                          "loop": "search_r1/llm_agent/generation.py LLMGenerationManager.run_llm_loop",
                          "prompt": "scripts/data_process/qa_search_test_merge.py make_prefix",
                          "answer": "verl/utils/reward_score/qa_em.py extract_solution"},
            "settings": {"max_turns": MAX_TURNS, "max_response_length": MAX_RESPONSE, "max_obs_length": MAX_OBS,
                         "topk": TOPK},
            "model": "smollm2-135m float32 eager, greedy; pad token <|endoftext|>",
            "retriever": "dynaprag BM25 (RetrieverConfig defaults), demo corpus",
            "command": "scripts/parity/search_r1_reference.py --search-r1 <checkout>",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()}}
    args.out.write_text(json.dumps({"meta": meta, "questions": out}, indent=1, ensure_ascii=False) + "\n",
                        encoding="utf-8")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
