"""Batched decoding answers every question as batch 1 does.

Three levels: (a) the scheduler on the scripted generator (continuous batching, per-question
errors, weight-changing injectors run alone); (b) :class:`BatchStepper` against single steps
on the real 135M model in float32 (same greedy tokens, signals equal to summation-order noise,
through joins, a rollback and a re-prefill); (c) every dynamic preset's traces (tokens,
retrieval positions, reasons, queries, hits) at batch 8 against batch 1 on ``QUESTIONS`` demo
questions (more than the batch, so questions join as others finish; SeaKR on 2), on as few tokens and as
small knobs as still cover what batching can break (``TOKENS``, ``OPTIONS``). Differences allowed by
(c) are listed in ``KNOWN_DIFFERENCES`` with their explanation; there are none today.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from dynaprag.dynamic.batch import BatchLoop
from dynaprag.inject import Injection, Injector
from dynaprag.lm.generator import GenerationConfig
from dynaprag.lm.signals import ATTENTION, HiddenState
from dynaprag.testing import ScriptedStep, scripted_loop

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = [ScriptedStep(" Jaws", -0.01), ScriptedStep(" was", -0.01), ScriptedStep(" directed", -3.0),
          ScriptedStep(" by", -0.02), ScriptedStep(" Spielberg.", -0.01), ScriptedStep(" So", -0.01),
          ScriptedStep(" the", -0.01), ScriptedStep(" answer", -0.01), ScriptedStep(" is", -0.01),
          ScriptedStep(" 1946.", -2.5)]
QUESTIONS_SCRIPTED = ["Who directed Jaws?", "When was Spielberg born?", "Where is Paris?", "What is Ulm?",
                      "Which river flows through Ulm?"]
FIRING = {"flare": {"theta": 0.5}, "token-prob": {"theta": 0.1}, "rind": {"theta": 0.1, "look_ahead": 5},
          "token-confidence": {"theta": 0.05, "look_ahead": 7}, "every-n-tokens": {"n": 4}}


def summary(answer) -> dict:
    return {"text": answer.text, "tokens": [t.text for t in answer.trace.tokens],
            "retrievals": [(r.position, r.reason, r.query, r.hit_ids) for r in answer.trace.retrievals]}


# -- (a) the scheduler -----------------------------------------------------------------------
@pytest.mark.parametrize("trigger", ["never", "once", "every-n-tokens", "every-sentence", "token-prob", "flare",
                                     "rind", "token-confidence"])
def test_batch_loop_answers_as_the_single_loop(trigger):
    choices = {"trigger": {"name": trigger, **FIRING.get(trigger, {})}}
    alone = [summary(scripted_loop("sr-rag", SCRIPT, choices=choices).run(q)) for q in QUESTIONS_SCRIPTED]
    loop = scripted_loop("sr-rag", SCRIPT, choices=choices)
    got = BatchLoop(loop, batch_size=3).run(QUESTIONS_SCRIPTED)  # 5 questions: two join later
    assert [summary(a) for a in got] == alone
    if trigger != "never":
        assert all(a.trace.retrievals for a in got)


def test_answers_come_in_finishing_order_with_their_index():
    loop = scripted_loop("sr-rag", SCRIPT)
    pairs = list(BatchLoop(loop, batch_size=2).answers(QUESTIONS_SCRIPTED))
    assert sorted(i for i, _ in pairs) == list(range(len(QUESTIONS_SCRIPTED)))
    assert all(a.trace.retrievals[0].query == QUESTIONS_SCRIPTED[i] for i, a in pairs)


def test_a_failing_question_does_not_stop_the_others():
    loop = scripted_loop("sr-rag", SCRIPT)
    search = loop.retriever.search_one

    def flaky(query, k):
        if "Paris" in query:
            raise RuntimeError("index unavailable")
        return search(query, k)
    loop.retriever.search_one = flaky
    results = dict(BatchLoop(loop, batch_size=4).answers(QUESTIONS_SCRIPTED))
    assert isinstance(results[2], RuntimeError)
    assert all(not isinstance(results[i], Exception) and results[i].text for i in (0, 1, 3, 4))
    with pytest.raises(RuntimeError, match="index unavailable"):
        BatchLoop(loop, batch_size=4).run(QUESTIONS_SCRIPTED)


class _Weights(Injector):
    """Changes weights (a context manager that counts how many are applied at once)."""

    def __init__(self, declared: bool):
        self.may_change_weights = declared
        self.applied = self.most = 0

    def inject(self, passages, question, *, use=None) -> Injection:
        @contextmanager
        def applied():
            self.applied += 1
            self.most = max(self.most, self.applied)
            try:
                yield
            finally:
                self.applied -= 1
        return Injection(context=(), weights=applied(), kind="parametric")


def test_weight_changing_injectors_run_one_question_at_a_time():
    injector = _Weights(declared=True)
    loop = scripted_loop("sr-rag", SCRIPT, injector=injector)
    batch = BatchLoop(loop, batch_size=8)
    assert batch.batch_size == 1
    answers = batch.run(QUESTIONS_SCRIPTED)
    assert injector.most == 1 and injector.applied == 0
    assert [summary(a) for a in answers] == [summary(scripted_loop("sr-rag", SCRIPT, injector=_Weights(True)).run(q))
                                             for q in QUESTIONS_SCRIPTED]


def test_an_undeclared_weight_change_in_a_batch_is_refused():
    injector = _Weights(declared=False)
    loop = scripted_loop("sr-rag", SCRIPT, injector=injector)
    with pytest.raises(RuntimeError, match="may_change_weights"):
        BatchLoop(loop, batch_size=4).run(QUESTIONS_SCRIPTED)
    assert injector.applied == 0  # every question's weights were removed again


# -- (b) the batched step on the real model ---------------------------------------------------
PROMPTS = ["The capital of France is", "Question: Who directed Jaws? Answer: The film Jaws was directed by",
           "Once upon a time, in a small village near the mountains, there lived", "1, 2, 3, 4,",
           "Water boils at"]


@pytest.mark.parametrize("restack", ["on-change", "always"])
def test_batched_steps_match_single_steps(generator, restack):
    from dynaprag.lm.batch import BatchStepper

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = GenerationConfig(signals=(ATTENTION, HiddenState(2), HiddenState(-1)))
        n = 12
        ref = []
        for p in PROMPTS:
            state = generator.start(generator.encode(p))
            ref.append([generator.step(state, cfg) for _ in range(n)])
        stepper = BatchStepper(generator, restack=restack)
        states = [generator.start(generator.encode(p)) for p in PROMPTS[:3]]
        got = [[] for _ in PROMPTS]
        for i in range(n + 5):
            if i == 2:  # two more questions join
                states += [generator.start(generator.encode(p)) for p in PROMPTS[3:]]
            if i == 6:  # one rolls back three tokens and is re-prefilled alone
                generator.truncate(states[1], len(states[1].ids) - 3)
                del got[1][-3:]
            live = [(k, s) for k, s in enumerate(states) if len(got[k]) < n]
            if not live:
                break
            for (k, _), out in zip(live, stepper.step([s for _, s in live], cfg)):
                got[k].append(out)
        assert all(len(g) == n for g in got)
        assert stepper.batched_passes > 0 and stepper.restacks >= 3
        reused = stepper.batched_passes - stepper.restacks
        assert reused == 0 if restack == "always" else reused > stepper.restacks
        for want, have in zip(ref, got):
            assert [s.token_id for s in have] == [s.token_id for s in want]
            for a, b in zip(want, have):
                assert abs(a.logprob - b.logprob) < 1e-4 and abs(a.entropy - b.entropy) < 1e-4
                assert a.signals["attention"].shape == b.signals["attention"].shape
                assert torch.allclose(a.signals["attention"], b.signals["attention"], atol=1e-5)
                for key in ("hidden:2", "hidden:-1"):
                    assert torch.allclose(a.signals[key], b.signals[key], atol=2e-3, rtol=1e-4)
    finally:
        torch.set_num_threads(threads)


# -- (c) every dynamic preset: batch 8 against batch 1 ------------------------------------------
sys.path.insert(0, str(ROOT / "scripts"))
import record_preset_traces as rec  # noqa: E402

#: Demo questions per preset: one more than the batch, so the ninth joins the batch when the first
#: question finishes (SeaKR answers 2, see ``OPTIONS``). Batch 1 answers each question alone, which is
#: most of the test's cost, so every question past the batch adds cost and no code path.
QUESTIONS = int(os.environ.get("DYNAPRAG_BATCH_QUESTIONS", "9"))
BATCH = 8
#: Tokens per answer for the check. Batching acts on every step alike, so the first tokens test the same
#: code as long answers, at a fraction of the cost. 16 still make a mixed batch: on the demo questions
#: some answers end after 8-14 tokens while others run to the budget, so rows leave the batch at
#: different steps and the ninth question joins (asserted: the answers' lengths differ); the presets
#: in ``MID_ANSWER`` retrieve after decoding began (a rollback or re-prefill inside the batch; also
#: asserted), and no preset lost a kind of retrieval it made at 24 tokens (dragin-inline and
#: self-rag-prompted retrieve on none of these questions at 24 either). A batch-path bug that only
#: bites padded rows (one padding key left visible in the batched step's mask) fails this check on
#: sr-rag, fl-rag and dragin at 16 tokens.
TOKENS: dict[str, int] = {}
DEFAULT_TOKENS = 16
#: Knobs made smaller for the check, where the preset's value only multiplies the same batched work:
#: fl-rag retrieves every 12 tokens instead of 32 (a mid-answer retrieval within 16 tokens, not 40);
#: SeaKR draws 4 samples of at most 12 tokens per estimate instead of 20 of 100 (each estimate is one
#: batched sampling pass whatever its size; its scores still decide the retrieval, and its reason
#: string, compared here, prints them), on 2 questions (the second retrieves): the sampling is most of
#: SeaKR's cost, so 12 sample tokens instead of 24 make its case ~1/3 cheaper (58 -> 38 CPU-s here).
OPTIONS = {"fl-rag": {"trigger.n": 12},
           "seakr": {"trigger.samples": 4, "trigger.sample_tokens": 12, "selector.samples": 4,
                     "selector.sample_tokens": 12}}
#: Presets that must retrieve after decoding began on some question within their budget, so the check
#: covers a mid-answer retrieval inside the batch (a shorter budget would silently lose it).
MID_ANSWER = {"fl-rag", "fs-rag", "token-rag", "entity-rag", "flare", "flare-flashrag", "dragin", "seakr"}
#: preset -> number of demo questions whose batch-8 trace may differ, and why (none so far)
KNOWN_DIFFERENCES: dict[str, tuple[int, str]] = {}
XDIST_PER_TEST = True  # no module state: under `pytest -n`, workers share out the tests (conftest.py)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # float32 sums may depend on the thread count
@pytest.mark.parametrize("preset", rec.PRESETS)
def test_batch_8_traces_equal_batch_1(demo_pipeline, preset):
    pipe, tokens, options = demo_pipeline(preset), TOKENS.get(preset, DEFAULT_TOKENS), OPTIONS.get(preset)
    questions = [q["question"] for q in rec.demo_questions(QUESTIONS if preset != "seakr" else 2)]
    answers = [pipe.answer(q, max_new_tokens=tokens, options=options) for q in questions]
    alone = [rec.summarise(a) for a in answers]
    together = dict(pipe.answer_many(questions, batch_size=BATCH, max_new_tokens=tokens, options=options))
    differ = [i for i, q in enumerate(questions) if rec.summarise(together[i]) != alone[i]]
    allowed, why = KNOWN_DIFFERENCES.get(preset, (0, ""))
    assert len(differ) <= allowed, (preset, differ, [(alone[i], rec.summarise(together[i])) for i in differ])
    assert len({len(a.trace.tokens) for a in answers}) > 1, f"{preset}: every answer kept {tokens} tokens, " \
        "so the rows left the batch together; raise TOKENS"
    if preset in MID_ANSWER:  # kept tokens before it, or a discarded draft (a look-ahead rolled back to 0)
        assert any(r.position > 0 or r.discarded for a in answers for r in a.trace.retrievals), \
            f"{preset}: no retrieval after decoding began within {tokens} tokens on any question; raise TOKENS"


# -- (a) late questions join a running batch (the server's continuous batching) ----------------
def test_late_questions_join_a_running_batch_with_the_next_indices():
    """Two questions start; ``more`` hands over one late question per call. Each joins while the
    first two still decode, takes the next index, and every answer is the one it gets alone."""
    alone = [summary(scripted_loop("sr-rag", SCRIPT).run(q)) for q in QUESTIONS_SCRIPTED]
    late, asked, events = list(QUESTIONS_SCRIPTED[2:]), [], []

    def more(free: int) -> list[str]:
        asked.append(free)
        return [late.pop(0)] if late else []
    batch = BatchLoop(scripted_loop("sr-rag", SCRIPT), batch_size=3)
    pairs = list(batch.answers(QUESTIONS_SCRIPTED[:2], on_event=lambda i, e: events.append(i), more=more))
    got = dict(pairs)
    assert sorted(got) == list(range(len(QUESTIONS_SCRIPTED)))
    assert [summary(got[i]) for i in range(len(QUESTIONS_SCRIPTED))] == alone
    last_of_first = max(n for n, index in enumerate(events) if index == 0)
    assert events.index(2) < last_of_first  # the late question decoded while the first one still did
    assert asked and all(1 <= free <= 3 for free in asked)


def test_weight_changing_injectors_take_late_questions_after_each_question():
    injector = _Weights(declared=True)
    batch = BatchLoop(scripted_loop("sr-rag", SCRIPT, injector=injector), batch_size=8)
    late, asked = list(QUESTIONS_SCRIPTED[1:]), []

    def more(free: int) -> list[str]:
        asked.append(free)
        taken = late[:free]
        del late[:free]
        return taken
    pairs = list(batch.answers(QUESTIONS_SCRIPTED[:1], more=more))
    assert [i for i, _ in pairs] == list(range(len(QUESTIONS_SCRIPTED)))
    assert set(asked) == {1} and injector.most == 1 and injector.applied == 0
    assert [summary(a) for _, a in pairs] == [summary(scripted_loop("sr-rag", SCRIPT, injector=_Weights(True)).run(q))
                                              for q in QUESTIONS_SCRIPTED]
