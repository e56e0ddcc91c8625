"""Iter-RetGen (Shao et al. 2023): T rounds of retrieve-then-generate, FlashRAG's implementation as reference.

* :mod:`.components` -- the ``iter-retgen`` trigger and the ``question-and-answer`` query, with
  every deviation;
* :data:`PRESETS` -- ``iter-retgen``, registered in ``METHODS`` by :mod:`dynaprag.dynamic.methods`.
"""
from __future__ import annotations

from dynaprag.dynamic.method import MethodSpec
from dynaprag.dynamic.methods.iter_retgen import components as _components  # noqa: F401 - registers them

PRESETS: dict[str, MethodSpec] = {
    "iter-retgen": MethodSpec(
        "iter-retgen", "question-and-answer", knobs={"trigger": {"rounds": 3}},
        paper="Iter-RetGen (Shao et al. 2023; no official code: FlashRAG @1ee5249 IterativePipeline as reference): "
              "T=3 rounds, query = question + previous answer; deviations in dynaprag.dynamic.methods.iter_retgen"),
}
