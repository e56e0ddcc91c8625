"""Search-R1, whole loop: our ``search-r1-prompted`` preset against the reference loop's own turns.

``fixtures/loop_search_r1.json`` holds, per demo question, every turn of Search-R1's evaluation
loop (PeterGriffinJin/Search-R1 @a14dc3a, ``LLMGenerationManager.run_llm_loop``;
``scripts/parity/search_r1_reference.py``): the response as the loop keeps it, its action and
content, the hits of a search and the appended observation, the whole response side of the
sequence, and the answer the reference's scorer extracts. It ran on the reference's own prompt
(``make_prefix``) after the variant's demonstration, our BM25 over the demo corpus and
SmolLM2-135M in float32 with eager attention, greedy, at ``max_turns`` 2 and 48 tokens a turn.

Here the same questions go through ``Pipeline.loop`` at batch 1 and batch 3 with the same turn
settings (the run budgets lifted so only the protocol ends an answer), and every turn is
compared: the response text exactly, the query and hit ids of each search, the invalid turns,
the number of turns; the whole response side (turns and observations, re-rendered from the
trace) exactly; and the short answer.

One named deviation (``dynaprag.dynamic.methods.search_r1`` (b)): when the model's turns hold no
answer tag, the reference's scorer reads the last ``<answer>...</answer>`` of the *whole*
sequence, the prompt's example (``Beijing``) or the invalid-action message's ``<answer> and
</answer>`` (``and``); ours reads the model's turns only and gives "".
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from dynaprag.corpus import Passage
from dynaprag.dynamic.methods.search_r1.components import turns_of
from dynaprag.dynamic.methods.search_r1.protocol import INVALID, PROTOCOLS, SEARCH, Action, observation

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "loop_search_r1.json"
PROTOCOL = PROTOCOLS.get("search-r1")
BATCHES = [1, 3]


def fixture() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def loop_settings() -> dict:
    s = fixture()["meta"]["settings"]
    assert (s["topk"], s["max_obs_length"]) == (PROTOCOL.top_k, PROTOCOL.observation_tokens)
    return {"max_new_tokens": 4000, "max_retrievals": 1000,
            "trigger": {"max_turns": s["max_turns"], "turn_tokens": s["max_response_length"]}}


def transcript(answer) -> tuple[list[str], str]:
    """Our turns as the reference keeps them, and the response side re-rendered from the trace."""
    rets = answer.trace.retrievals
    turns = turns_of([t.text for t in answer.trace.tokens], [r.position for r in rets], PROTOCOL)
    side = ""
    for i, turn in enumerate(turns):
        side += turn
        if i < len(rets):
            r = rets[i]
            kind = INVALID if "no search" in r.reason else SEARCH
            passages = [Passage(pid, t, x) for pid, t, x in zip(r.hit_ids, r.hit_titles, r.hit_texts)]
            side += observation(PROTOCOL, Action(kind, r.query), passages if kind == SEARCH else [])
    return turns, side


def compare(ref: dict, answer) -> list[str]:
    """Assert our run equals the reference's turns; return the named deviations met."""
    rets, (turns, side) = answer.trace.retrievals, transcript(answer)
    ref_turns = ref["turns"]
    assert len(turns) == len(ref_turns), f"{ref['id']}: {len(turns)} turns vs {len(ref_turns)}"
    for i, (ours, theirs) in enumerate(zip(turns, ref_turns)):
        where = f"{ref['id']} turn {i + 1}"
        assert ours == theirs["response"], f"{where}: response {ours!r} vs {theirs['response']!r}"
        if theirs["final"] or theirs["action"] == "answer":
            assert i == len(rets), f"{where}: the reference ends here, ours retrieved {len(rets)} times"
            continue
        assert i < len(rets), f"{where}: the reference appended an observation, ours did not"
        if theirs["action"] == "search":
            assert rets[i].query == theirs["content"], f"{where}: query {rets[i].query!r} vs {theirs['content']!r}"
            assert rets[i].hit_ids == theirs["hit_ids"], f"{where}: hits {rets[i].hit_ids} vs {theirs['hit_ids']}"
        else:
            assert rets[i].query == "" and "no search" in rets[i].reason, f"{where}: ours is not an invalid turn"
    assert side == ref["responses"], f"{ref['id']}: response side differs:\n{side!r}\nvs\n{ref['responses']!r}"
    own = re.findall(r"<answer>(.*?)</answer>", "".join(t["response"] for t in ref_turns), flags=re.DOTALL)
    if own:
        assert answer.short == ref["answer"] == own[-1].strip(), f"{ref['id']}: answer {answer.short!r}"
        return []
    assert answer.short == "", f"{ref['id']}: ours answered {answer.short!r} without an answer tag"
    return ["answer outside the turns"]


@pytest.fixture(scope="module")
def answers(eager_lm):
    """Our answers per batch size, computed once per module on one torch thread."""
    from dynaprag.dynamic.batch import BatchLoop
    from dynaprag.pipeline import Pipeline, PipelineConfig
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    retriever = build_retriever(RetrieverConfig(), progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cache: dict = {}

    def get(batch: int) -> list:
        if batch not in cache:
            pipe = Pipeline.from_config(PipelineConfig(method="search-r1-prompted", dtype="float32", **loop_settings()),
                                        lm=eager_lm, retriever=retriever)
            with torch.no_grad():
                questions = [q["question"] for q in fixture()["questions"]]
                cache[batch] = BatchLoop(pipe.loop(), batch_size=batch).run(questions)
        return cache[batch]

    yield get
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
def test_turns_match_reference(answers, batch):
    """Every turn, observation and answer equals the reference's, up to the named deviation."""
    met = {ref["id"]: compare(ref, answer) for ref, answer in zip(fixture()["questions"], answers(batch))}
    assert {d for ds in met.values() for d in ds} <= {"answer outside the turns"}, met
    kinds = {t["action"] for q in fixture()["questions"] for t in q["turns"]}
    assert {"search", "answer", None} <= kinds, "the fixture must cover a search, an answer and an invalid turn"
