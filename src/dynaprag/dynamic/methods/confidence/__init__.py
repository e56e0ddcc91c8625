"""Token-confidence methods: TokenRAG, EntityRAG and FLARE, as their reference code runs them.

* :mod:`.scores` -- the reference math, pure functions over decoded tokens and log-probs (what
  ``tests/comparison/test_{tokenrag,entityrag,flare}.py`` pin against the reference outputs);
* :mod:`.components` -- the triggers (``token-confidence``, ``entity``, ``flare``) and the masked
  queries (``masked-tokens``, ``masked-entities``, ``masked-sentence``), registered there;
* :data:`PRESETS` -- ``token-rag``, ``entity-rag``, ``flare``, ``flare-flashrag``, registered in
  ``METHODS`` by :mod:`dynaprag.dynamic.methods`.
"""
from __future__ import annotations

from dynaprag.dynamic.method import MethodSpec
from dynaprag.dynamic.methods.confidence import components as _components  # noqa: F401 - registers them

PRESETS: dict[str, MethodSpec] = {
    "token-rag": MethodSpec(
        "token-confidence", "masked-tokens", knobs={"trigger": {"theta": 0.08, "look_ahead": 100},
                                                    "formulator": {"theta": 0.08}},
        datasets={"2wikimultihopqa": {"trigger": {"theta": 0.1, "look_ahead": 64}, "formulator": {"theta": 0.1}},
                  "strategyqa": {"trigger": {"theta": 0.1}, "formulator": {"theta": 0.1}},
                  "iirc": {"trigger": {"look_ahead": 128}}},
        paper="TokenRAG as the DRAGIN repository runs it (its Llama2-7b FLARE.json configs, method: token); "
              "deviations in dynaprag.dynamic.lookahead"),
    "entity-rag": MethodSpec(
        "entity", "masked-entities", knobs={"trigger": {"theta": 0.4, "look_ahead": 100},
                                            "formulator": {"theta": 0.4}},
        datasets={"2wikimultihopqa": {"trigger": {"look_ahead": 64}}, "iirc": {"trigger": {"look_ahead": 128}}},
        paper="EntityRAG as the DRAGIN repository computes it (no released config: θ = 0.4 is ours)"),
    "flare": MethodSpec(
        "flare", "masked-sentence", knobs={"trigger": {"theta": 0.8, "initial": True},
                                           "formulator": {"beta": 0.4}},
        datasets={"2wikimultihopqa": {"selector": {"k": 2}}},
        paper="FLARE_direct as its released 2Wiki config runs it (Jiang et al. 2023; topk 2 there); "
              "its max_generation_len 256 is the run's max_new_tokens"),
    "flare-flashrag": MethodSpec(
        "flare", "masked-sentence", knobs={"trigger": {"theta": 0.2}, "formulator": {"beta": 0.2}},
        paper="FLARE with FlashRAG's 0.2/0.2 thresholds (variant)"),
}
