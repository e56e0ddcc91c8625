"""FLARE parity: :func:`dynaprag.dynamic.methods.confidence.scores.flare_query` against ``flare.json``.

The fixture is jzbjyb/FLARE @ec4b06b ``ApiReturn.use_as_query(low_prob=0.8, mask_prob=0.4,
mask_method="simple")`` (``configs/2wikihop_flare_config.json``) on 11 token/probability cases,
including probabilities exactly at θ = 0.8 and β = 0.4.
"""
from __future__ import annotations

import pytest

from dynaprag.dynamic.methods.confidence import scores as confidence

from .parity import load, params

FIXTURE = "flare.json"
CASES = params(FIXTURE, lambda d: d["cases"], lambda c: c["name"])


@pytest.mark.parametrize("case", CASES)
def test_use_as_query(case):
    meta = load(FIXTURE)["meta"]
    assert "".join(case["tokens"]) == case["text"]
    query = confidence.flare_query(case["tokens"], case["probs"], meta["low_prob"], meta["mask_prob"])
    assert query == case["query"]


@pytest.mark.parametrize("case", CASES)
def test_trigger_is_any_token_at_or_below_theta(case):
    meta = load(FIXTURE)["meta"]
    no_mask = confidence.flare_query(case["tokens"], case["probs"], meta["low_prob"], mask_prob=0)
    assert (no_mask != "") == case["retrieval_triggered"]


def test_empty_query_means_no_retrieval_even_when_triggered():
    case = next(c for c in load(FIXTURE)["cases"] if c["name"] == "all_low_p")
    assert case["retrieval_triggered"] and confidence.flare_query(case["tokens"], case["probs"]) == ""
