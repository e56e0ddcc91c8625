"""Self-RAG's critique ranking against the released short-form scoring, on scripted segments.

The expected numbers come from :func:`reference_score`, a transcription of the formula in
AkariAsai/self-rag @1fcdc42 ``retrieval_lm/run_short_form.py:100-157`` over plain dicts of
per-position log-probs (vLLM's ``logprobs`` output), independent of the code under test.
No Self-RAG model is available offline, so segments are hand-built: the scripted generator
emits reflection tokens at chosen positions with chosen alternatives.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from dynaprag.dynamic.draft import Draft
from dynaprag.dynamic.probe import LoopProbe
from dynaprag.dynamic.methods.selfrag.components import (PARAGRAPH, PROMPT, RELEVANCE, SUPPORT, UTILITY,
                                                        SelfRagCritiqueSelector, critique)
from dynaprag.lm.generator import Generation, StepOutput
from dynaprag.testing import ScriptedGenerator, ScriptedStep, scripted_loop
from dynaprag.testing.loop import DEFAULT_PASSAGES

QUESTION = "In what year was Steven Spielberg born?"
SPECIAL = ("[Retrieval]", "[No Retrieval]") + RELEVANCE + SUPPORT + UTILITY
DECIDE = {"[Retrieval]": 0.0, "[No Retrieval]": -3.0}  # p([Retrieval]) normalised ≈ 0.95: retrieve


def reference_score(segment: list[tuple[str, dict[str, float]]], use_seqscore: bool = True,
                    w: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> float:
    """The released final score of one segment: ``(generated token, {token: log-prob})`` per position.

    A token missing from a position's dict counts -100; ISREL is read at position 0, ISSUP and
    ISUSE at the first position whose generated token is one of theirs.
    """
    def probs(position: int, group) -> dict[str, float]:
        return {t: math.exp(segment[position][1].get(t, -100.0)) for t in group}

    seq = sum(lps[tok] for tok, lps in segment) / max(len(segment), 1)
    rel = probs(0, RELEVANCE)
    relevance = rel["[Relevant]"] / sum(rel.values())
    at = next((i for i, (tok, _) in enumerate(segment) if tok in SUPPORT), None)
    ground = 0.0
    if at is not None:
        g = probs(at, SUPPORT)
        ground = g["[Fully supported]"] / sum(g.values()) + 0.5 * g["[Partially supported]"] / sum(g.values())
    at = next((i for i, (tok, _) in enumerate(segment) if tok in UTILITY), None)
    utility = 0.0
    if at is not None:
        u = probs(at, UTILITY)
        utility = sum(wt * u[f"[Utility:{i + 1}]"] / sum(u.values()) for i, wt in enumerate((-1, -0.5, 0, 0.5, 1)))
    critic = w[0] * relevance + w[1] * ground + w[2] * utility
    return math.exp(seq) + critic if use_seqscore else critic


def scripted(segment: list[tuple[str, dict[str, float]]]) -> list[ScriptedStep]:
    """The same segment as scripted steps (own token's log-prob + the listed alternatives)."""
    return [ScriptedStep(tok, logprob=lps[tok], alternatives={t: lp for t, lp in lps.items() if t != tok})
            for tok, lps in segment]


# Spielberg's segment: [Relevant] first, then text, [Fully supported] at 4, [Utility:5] at 5, EOS.
# Position 1 lists the relevance tokens the other way round: they must not be read there.
SUPPORTED = [
    ("[Relevant]", {"[Relevant]": -0.1, "[Irrelevant]": -2.5}),
    (" Spielberg", {" Spielberg": -0.2, "[Relevant]": -5.0, "[Irrelevant]": -0.5}),
    (" was", {" was": -0.3}),
    (" born", {" born": -0.25}),
    ("[Fully supported]", {"[Fully supported]": -0.4, "[Partially supported]": -1.5,
                           "[No support / Contradictory]": -3.0}),
    ("[Utility:5]", {"[Utility:5]": -0.2, "[Utility:4]": -1.8, "[Utility:3]": -3.0}),  # 1, 2 unlisted: -100
    ("</s>", {"</s>": -0.05}),
]
# Jaws' segment: judged irrelevant, then [Partially supported] twice (the first counts), no utility token.
PARTIAL = [
    ("[Irrelevant]", {"[Irrelevant]": -0.3, "[Relevant]": -1.4}),
    (" Jaws", {" Jaws": -3.0}),
    ("[Partially supported]", {"[Partially supported]": -0.7, "[Fully supported]": -0.9,
                               "[No support / Contradictory]": -2.0}),
    ("[Partially supported]", {"[Partially supported]": -0.1, "[Fully supported]": -4.0,
                               "[No support / Contradictory]": -4.0}),
    ("</s>", {"</s>": -0.2}),
]


def steps_of(segment, ids: dict[str, int]) -> list[StepOutput]:
    out = []
    for i, (tok, lps) in enumerate(segment):
        ranked = sorted(lps.items(), key=lambda kv: -kv[1])
        out.append(StepOutput(position=i, token_id=ids[tok], text=tok, logprob=lps[tok], entropy=0.0,
                              top_ids=[ids[t] for t, _ in ranked], top_logprobs=[lp for _, lp in ranked]))
    return out


@pytest.fixture
def ids() -> dict[str, int]:
    tokens = list(SPECIAL) + ["</s>", " Spielberg", " was", " born", " Jaws"]
    return {t: i for i, t in enumerate(tokens)}


def groups(ids):
    return [[ids[t] for t in g] for g in (RELEVANCE, SUPPORT, UTILITY)]


def test_critique_reads_each_token_where_the_reference_does(ids):
    c = critique(steps_of(SUPPORTED, ids), *groups(ids))
    assert c.relevance == pytest.approx([math.exp(-0.1), math.exp(-2.5)])  # position 0, not position 1
    assert c.support == pytest.approx([math.exp(-0.4), math.exp(-1.5), math.exp(-3.0)])  # position 4
    assert c.utility == pytest.approx([math.exp(-100), math.exp(-100), math.exp(-3.0), math.exp(-1.8),
                                       math.exp(-0.2)], rel=1e-9)  # position 5; unlisted tokens count -100
    assert c.mean_logprob == pytest.approx((-0.1 - 0.2 - 0.3 - 0.25 - 0.4 - 0.2 - 0.05) / 7)  # EOS counts

    p = critique(steps_of(PARTIAL, ids), *groups(ids))
    assert p.support == pytest.approx([math.exp(-0.9), math.exp(-0.7), math.exp(-2.0)])  # the first one
    assert p.utility == [0.0] * 5  # never generated: utility score 0


@pytest.mark.parametrize("use_seqscore", [True, False])
def test_scores_equal_the_released_formula(ids, use_seqscore):
    selector = SelfRagCritiqueSelector(use_seqscore=use_seqscore)
    for segment in (SUPPORTED, PARTIAL):
        got = selector.score(critique(steps_of(segment, ids), *groups(ids)))
        assert got == pytest.approx(reference_score(segment, use_seqscore), rel=1e-12)
    weighted = SelfRagCritiqueSelector(w_rel=0.5, w_sup=2.0, w_use=0.25, use_seqscore=use_seqscore)
    got = weighted.score(critique(steps_of(SUPPORTED, ids), *groups(ids)))
    assert got == pytest.approx(reference_score(SUPPORTED, use_seqscore, (0.5, 2.0, 0.25)), rel=1e-12)
    # by hand: exp(mean) + e^-.1/(e^-.1+e^-2.5) + (e^-.4+.5e^-1.5)/Σ + (.5e^-1.8+e^-.2-1.5e^-100)/Σ
    sup = math.exp(-0.4) + math.exp(-1.5) + math.exp(-3.0)
    use = math.exp(-0.2) + math.exp(-1.8) + math.exp(-3.0) + 2 * math.exp(-100)
    by_hand = (math.exp(-1.5 / 7) * use_seqscore + 1 / (1 + math.exp(-2.4))
               + (math.exp(-0.4) + 0.5 * math.exp(-1.5)) / sup + (math.exp(-0.2) + 0.5 * math.exp(-1.8)) / use)
    assert selector.score(critique(steps_of(SUPPORTED, ids), *groups(ids))) == pytest.approx(by_hand, rel=1e-12)


class RecordingProbe:
    """A probe that answers :meth:`complete` from hand-built segments keyed by passage title."""

    def __init__(self, ids, segments):
        self.ids, self.segments, self.calls = ids, segments, []

    def token_id(self, token):
        return self.ids[token]

    def complete(self, prompt, max_tokens, top_logprobs=0):
        self.calls.append((prompt, max_tokens, top_logprobs))
        title = prompt.split("<paragraph>")[1].split("\n")[0]
        return Generation(steps=steps_of(self.segments.get(title, [("</s>", {"</s>": 0.0})]), self.ids),
                          text="", stopped_by="eos")


def test_selector_prompts_in_the_reference_format_and_ranks_best_first(ids):
    jaws, spielberg, paris = DEFAULT_PASSAGES[0], DEFAULT_PASSAGES[1], DEFAULT_PASSAGES[2]
    hits = [SimpleNamespace(title=p.title, text=p.text, id=p.id) for p in (jaws, paris, spielberg)]
    probe = RecordingProbe(ids, {jaws.title: PARTIAL, spielberg.title: SUPPORTED})
    ranked = SelfRagCritiqueSelector(keep=0)(hits, Draft(question=QUESTION), probe)
    assert probe.calls[1] == ("### Instruction:\nIn what year was Steven Spielberg born?\n\n### Response:\n"
                              "[Retrieval]<paragraph>Paris\nParis is the capital and largest city of France."
                              "</paragraph>", 100, 5000)
    # scores: Spielberg ≈ 3.3, the empty segment (EOS at log-prob 0) exactly 1 + 0.5, Jaws ≈ 1.3
    scores = {"spielberg": reference_score(SUPPORTED), "paris": reference_score([("</s>", {"</s>": 0.0})]),
              "jaws": reference_score(PARTIAL)}
    assert scores["paris"] == pytest.approx(1.5)
    assert [h.id for h in ranked] == sorted(scores, key=lambda k: -scores[k]) == ["spielberg", "paris", "jaws"]
    assert [h.id for h in SelfRagCritiqueSelector()(hits, Draft(question=QUESTION), probe)] == ["spielberg"]


def test_ties_keep_retrieval_order(ids):
    hits = [SimpleNamespace(title=p.title, text=p.text, id=p.id) for p in DEFAULT_PASSAGES]
    ranked = SelfRagCritiqueSelector(keep=0)(hits, Draft(question=QUESTION), RecordingProbe(ids, {}))
    assert [h.id for h in ranked] == [p.id for p in DEFAULT_PASSAGES]


def side_scripts():
    return {"<paragraph>Steven": scripted(SUPPORTED), "<paragraph>Jaws": scripted(PARTIAL)}


def test_self_rag_through_the_loop_injects_the_best_segment_passage():
    loop = scripted_loop("self-rag", [ScriptedStep(" 1946.")], special_tokens=SPECIAL, next_token_logprobs=DECIDE,
                         side_scripts=side_scripts())
    answer = loop.run(QUESTION)
    (event,) = answer.trace.retrievals
    assert event.hit_ids == ["spielberg"]
    every = scripted_loop("self-rag", [ScriptedStep(" 1946.")], special_tokens=SPECIAL, next_token_logprobs=DECIDE,
                          side_scripts=side_scripts(), options={"selector.keep": 0})
    hits = every.run(QUESTION).trace.retrievals[0].hit_ids
    assert hits[0] == "spielberg" and hits[-1] == "jaws" and len(hits) == 3  # unscripted hit: 1.5, between


def test_top_logprobs_truncate_as_vllm_does():
    """With ``logprobs=2`` only the two best tokens of a position are listed; the rest count -100."""
    gen = ScriptedGenerator([], special_tokens=SPECIAL, side_scripts=side_scripts())
    probe = LoopProbe(SimpleNamespace(gen=gen, states=[]), QUESTION, 0)
    prompt = PROMPT.format(question=QUESTION) + PARAGRAPH.format(title="Steven Spielberg", text="...")
    segment = probe.complete(prompt, 100, top_logprobs=2)
    truncated = [(tok, dict(sorted(lps.items(), key=lambda kv: -kv[1])[:2])) for tok, lps in SUPPORTED]
    groups_ = [[probe.token_id(t) for t in g] for g in (RELEVANCE, SUPPORT, UTILITY)]
    got = SelfRagCritiqueSelector(logprobs=2).score(critique(segment.steps, *groups_))
    assert got == pytest.approx(reference_score(truncated), rel=1e-12)
    assert got != pytest.approx(reference_score(SUPPORTED), rel=1e-6)


def test_probe_complete_keeps_eos_as_the_last_step_and_honours_the_budget():
    gen = ScriptedGenerator([], special_tokens=SPECIAL, side_scripts={"<paragraph>Jaws": scripted(PARTIAL[:-1])})
    states = []
    probe = LoopProbe(SimpleNamespace(gen=gen, states=states), QUESTION, 0)
    out = probe.complete("### Response:\n[Retrieval]<paragraph>Jaws (film)\nJaws.</paragraph>", 100)
    assert out.stopped_by == "eos" and len(out.steps) == len(PARTIAL) and out.steps[-1].token_id in gen.eos_ids
    assert out.text == "[Irrelevant] Jaws[Partially supported][Partially supported]" and len(states) == 1
    short = probe.complete("[Retrieval]<paragraph>Jaws (film)\nJaws.</paragraph>", 2, top_logprobs=3)
    assert short.stopped_by == "max_tokens" and len(short.steps) == 2
    assert len(short.steps[0].top_ids) == 2  # own token + the one alternative scripted there
    gen.tokenizer.add_bos_token, gen.tokenizer.bos_token_id = True, gen.vocab["<prefix>"]
    probe.complete("no script here", 5)
    assert states[-1].ids[0] == gen.vocab["<prefix>"] and states[-1].generated == [False] * 4 + [True]
