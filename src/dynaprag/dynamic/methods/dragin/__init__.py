"""DRAGIN (Su et al. 2024) as its reference code runs it, and its two variants.

* :mod:`.rind` -- the reference math: RIND per sentence and the real-words query of
  oneal2000/DRAGIN, plus the paper's printed Eq. 3-4 (what ``tests/comparison/test_dragin.py``
  pins against the reference outputs);
* :mod:`.components` -- the ``rind`` trigger and the ``real-words`` query (the reference
  procedure, step by step, with every deviation);
* :mod:`.inline` -- the ``rind-inline`` trigger and ``qfs`` query of the cheap variant;
* :data:`PRESETS` -- ``dragin``, ``dragin-paper``, ``dragin-inline``, registered in ``METHODS``
  by :mod:`dynaprag.dynamic.methods`.
"""
from __future__ import annotations

from dynaprag.dynamic.method import MethodSpec
from dynaprag.dynamic.methods.dragin import components as _components  # noqa: F401 - registers them
from dynaprag.dynamic.methods.dragin import inline as _inline  # noqa: F401 - registers them

PRESETS: dict[str, MethodSpec] = {
    "dragin": MethodSpec(
        "rind", "real-words", knobs={"trigger": {"theta": 0.8, "look_ahead": 100}, "formulator": {"top_k": 35}},
        datasets={"2wikimultihopqa": {"trigger": {"theta": 1.0, "look_ahead": 64}, "formulator": {"top_k": 25}},
                  "strategyqa": {"trigger": {"theta": 0.75}},
                  "iirc": {"trigger": {"theta": 0.6, "look_ahead": 128}}},
        paper="DRAGIN as its reference code runs it (Su et al. 2024; oneal2000/DRAGIN, Llama-2-7B configs)"),
    "dragin-paper": MethodSpec(
        "rind", "real-words", knobs={"trigger": {"theta": 1.2, "look_ahead": 100, "equation": "paper"},
                                     "formulator": {"top_k": 35}},
        datasets={"2wikimultihopqa": {"trigger": {"look_ahead": 64}, "formulator": {"top_k": 25}}},
        paper="DRAGIN's printed Eq. 4 per token (variant; reference code where the paper is silent)"),
    "dragin-inline": MethodSpec(
        "rind-inline", "qfs", knobs={"trigger": {"theta": 1.2}, "formulator": {"n": 35, "filter": "stopwords"}},
        paper="variant: Eq. 4 on generation-time attention, no look-ahead pass (cheapest)"),
}
