"""Self-RAG's segment scores against the reference code's own output on scripted reflection log-probs.

AkariAsai/self-rag @1fcdc42 ``retrieval_lm/run_short_form.py`` ``call_model_rerank_w_scores_batch``
(L51-199) scores each evidence's segment from vLLM's ``token_ids``, ``cumulative_logprob`` and
per-position ``logprobs`` dicts: relevance at the first position, support and utility at the
first position generating a token of their group, a token missing from a position's dict counts
-100, ``exp(cumulative/len) + w_rel·rel + w_sup·sup + w_use·use`` with ``--use_seqscore`` and the
argparse weights 1, 1, 1 (L281-286). The expected scores below were produced by that function
itself: its source extracted from the file and run with a stand-in ``model.generate`` returning
exactly these three segments (ids: [Relevant] 1, [Irrelevant] 2, [Fully supported] 3,
[Partially supported] 4, [No support / Contradictory] 5, [Utility:1..5] 6-10;
``mode="always_retrieve"``, ``use_seqscore=True``, ``w_rel = w_sup = w_use = 1.0``).
"""
from __future__ import annotations

import pytest

from dynaprag.corpus import Passage
from dynaprag.dynamic.draft import Draft
from dynaprag.dynamic.methods import resolve_method
from dynaprag.dynamic.methods.selfrag.components import RELEVANCE, SUPPORT, UTILITY, critique
from dynaprag.lm.decoding import Generation, StepOutput
from dynaprag.retrieval.base import Hit

IDS = {tok: i for i, tok in enumerate(RELEVANCE + SUPPORT + UTILITY, start=1)}
GROUPS = ([IDS[t] for t in RELEVANCE], [IDS[t] for t in SUPPORT], [IDS[t] for t in UTILITY])

# (generated ids, their log-probs, the listed log-probs per position) and the reference's final_score
SEGMENTS = [
    ([100, 101, 4, 102, 9, 10], [-0.5, -0.3, -0.7, -0.1, -0.4, -0.9],
     [{100: -0.5, 1: -0.2, 2: -1.8}, {101: -0.3}, {4: -0.7, 3: -1.2}, {102: -0.1},
      {9: -0.4, 6: -5.0, 7: -4.0, 8: -2.0, 10: -1.5}, {10: -0.9}], 2.6521972243513576),
    ([100, 7, 103], [-1.0, -0.6, -0.2],  # no support token; [Irrelevant] not listed (-100)
     [{100: -1.0, 1: -0.05}, {7: -0.6, 6: -1.1, 8: -2.5, 9: -3.0, 10: -4.0}, {103: -0.2}], 1.0021657446733563),
    ([104, 3, 105], [-0.05, -0.3, -0.02],  # no utility token
     [{104: -0.05, 1: -3.0, 2: -0.1}, {3: -0.3, 4: -1.6, 5: -2.2}, {105: -0.02}], 1.7351279116136378),
]


def steps_of(ids, logprobs, listed) -> list[StepOutput]:
    return [StepOutput(position=i, token_id=t, text=f"<{t}>", logprob=lp, entropy=0.0,
                       top_ids=list(d), top_logprobs=list(d.values()))
            for i, (t, lp, d) in enumerate(zip(ids, logprobs, listed))]


@pytest.mark.parametrize("ids, logprobs, listed, expected", SEGMENTS, ids=["all-groups", "no-support", "no-utility"])
def test_segment_score_is_the_references(ids, logprobs, listed, expected):
    selector = resolve_method("self-rag").selector
    assert selector.score(critique(steps_of(ids, logprobs, listed), *GROUPS)) == pytest.approx(expected, rel=1e-9)


class SegmentsByTitle:
    """``complete`` returns the scripted segment of the passage whose title is in the prompt."""

    def __init__(self):
        self.by_title = {f"doc{i}": steps_of(*seg[:3]) for i, seg in enumerate(SEGMENTS)}

    def token_id(self, token):
        return IDS[token]

    def complete(self, prompt, max_tokens, top_logprobs=0):
        title = next(t for t in self.by_title if f"<paragraph>{t}\n" in prompt)
        return Generation(steps=self.by_title[title], text="", stopped_by="eos")


def test_the_best_scored_segment_is_kept():
    """The reference answers with the best-scoring path (L189-195); ties are impossible here."""
    selector = resolve_method("self-rag").selector
    hits = [Hit(Passage(f"doc{i}", f"doc{i}", "text"), 1.0) for i in range(3)]
    assert [h.id for h in selector(hits, Draft(question="q"), SegmentsByTitle())] == ["doc0"]
    selector.keep = 0
    assert [h.id for h in selector(hits, Draft(question="q"), SegmentsByTitle())] == ["doc0", "doc2", "doc1"]
