"""The presets of the engine's own components: baselines and parametric RAG.

They compose only the generic triggers, formulators and selectors of :mod:`dynaprag.dynamic`
and the injectors of :mod:`dynaprag.inject`, so they belong to no method folder; a paper's
presets live in its folder (``dynamic/methods/<family>/__init__.py``). A preset named after a
paper sets that paper's defaults; a variant carries a suffix. Any other composition is a config,
e.g. ``--method dragin selector=seakr-uncertainty injector=dyprag``.

:mod:`dynaprag.dynamic.methods` registers these with every family's presets in ``METHODS``.
"""
from __future__ import annotations

from dynaprag.dynamic.method import MethodSpec

BASELINES: dict[str, MethodSpec] = {
    "wo-rag": MethodSpec("never", paper="no retrieval"),
    "sr-rag": MethodSpec("once", paper="single retrieval with the question"),
    "fl-rag": MethodSpec(
        "every-n-tokens", "previous-output", knobs={"trigger": {"n": 32}},
        datasets={"2wikimultihopqa": {"trigger": {"n": 16}}},
        paper="fixed-length retrieval every n tokens (Ram et al. 2023) as the DRAGIN repository ran it: "
              "fix_length 32, 16 on 2Wiki (its Llama2 FL-RAG configs before commit 6108a97 deleted the key)"),
    "fs-rag": MethodSpec("every-sentence", "previous-output",
                         paper="retrieval every sentence (Trivedi et al. 2023)"),
}

# Parametric RAG: both papers retrieve once with the question (top-3), then inject.
PARAMETRIC: dict[str, MethodSpec] = {
    "prag": MethodSpec("once", injector="prag",
                       paper="PRAG: sum of per-document LoRAs, no context (Su et al. 2025)"),
    "prag-combine": MethodSpec("once", injector="prag-combine",
                               paper="PRAG-Combine: LoRAs + passages in context (Su et al. 2025)"),
    "dyprag": MethodSpec("once", injector="dyprag",
                         paper="DyPRAG: translator-generated LoRAs, no context (Tan et al. 2025)"),
    "dyprag-combine": MethodSpec("once", injector="dyprag-combine",
                                 paper="DyPRAG-Combine: generated LoRAs + context (Tan et al. 2025)"),
}
