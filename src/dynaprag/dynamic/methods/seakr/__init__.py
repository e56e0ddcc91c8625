"""SeaKR (Yao et al. 2024) as its reference code runs it: self-aware retrieval by eigen score.

* :mod:`.eigen` -- the reference math, the float32 eigen score of sampled continuations (what
  ``tests/comparison/test_seakr_eigen.py`` pins);
* :mod:`.components` -- the ``seakr`` trigger (with the reasoning integration) and the
  ``seakr-uncertainty`` selector, and the reference's pure step rules; every deviation is there;
* :mod:`.query` -- the ``sure-words`` query formulator and its pure functions;
* :data:`PRESETS` -- ``seakr``, registered in ``METHODS`` by :mod:`dynaprag.dynamic.methods`.
"""
from __future__ import annotations

from dynaprag.dynamic.method import MethodSpec
from dynaprag.dynamic.methods.seakr import components as _components  # noqa: F401 - registers them
from dynaprag.dynamic.methods.seakr import query as _query  # noqa: F401 - registers sure-words

PRESETS: dict[str, MethodSpec] = {
    "seakr": MethodSpec(
        "seakr", "sure-words", "seakr-uncertainty",
        knobs={"trigger": {"samples": 20, "alpha": 1e-3, "theta": -6.0, "max_steps": 7, "max_docs": 5},
               "formulator": {"prob_threshold": 0.1}, "selector": {"samples": 20, "alpha": 1e-3, "max_docs": 5}},
        paper="SeaKR as its reference code runs it (Yao et al. 2024; THU-KEG/SeaKR @d75fe70 reasoner.py): "
              "eigen score of 20 samples per step, one least-uncertain document per retrieval, reasoning integration; "
              "deviations in dynaprag.dynamic.methods.seakr"),
}
