"""Self-RAG (Asai et al. 2024): reflection-token retrieval and critique ranking, and a prompted variant.

* :mod:`.scores` -- the pure math: the normalised retrieve probability and the segment score;
* :mod:`.components` -- the ``self-rag`` and ``self-rag-prompted`` triggers and the
  ``selfrag-critique`` selector, with every deviation from the released code;
* :data:`PRESETS` -- ``self-rag``, ``self-rag-prompted``, registered in ``METHODS`` by
  :mod:`dynaprag.dynamic.methods`.
"""
from __future__ import annotations

from dynaprag.dynamic.method import MethodSpec
from dynaprag.dynamic.methods.selfrag import components as _components  # noqa: F401 - registers them

PRESETS: dict[str, MethodSpec] = {
    "self-rag": MethodSpec(
        "self-rag", "question", "selfrag-critique", knobs={"trigger": {"theta": 0.2}},
        paper="Self-RAG reflection tokens (Asai et al. 2024); needs a Self-RAG model"),
    "self-rag-prompted": MethodSpec(
        "self-rag-prompted", "question", knobs={"trigger": {"theta": 0.5}},
        paper="variant: the instruct model is asked if it needs retrieval"),
}
