"""The parametric methods as presets of the one loop: single retrieval with the question, then
a parametric injector (PRAG, Su et al. SIGIR 2025; DyPRAG, Tan et al. 2025).

Both papers retrieve once, before generation, with the question as the query (top-3), which
is the ``once`` trigger and the ``question`` formulator. Any other trigger composes the same
way: ``PipelineConfig(method="dragin", injector="dyprag")`` runs DRAGIN's RIND timing with
DyPRAG's injection. Importing this module registers the injectors and the four methods.
"""
from __future__ import annotations

from dynaprag.dynamic.methods import METHODS, MethodSpec
from dynaprag.parametric import injectors as _injectors  # noqa: F401 - registers the injectors

METHODS.register("prag", MethodSpec("once", "question", injector="prag",
                                    paper="PRAG: sum of per-document LoRAs, no context (Su et al. 2025)"))
METHODS.register("prag-combine", MethodSpec("once", "question", injector="prag-combine",
                                            paper="PRAG-Combine: LoRAs + passages in context (Su et al. 2025)"))
METHODS.register("dyprag", MethodSpec("once", "question", injector="dyprag",
                                      paper="DyPRAG: translator-generated LoRAs, no context (Tan et al. 2025)"))
METHODS.register("dyprag-combine", MethodSpec("once", "question", injector="dyprag-combine",
                                              paper="DyPRAG-Combine: generated LoRAs + context (Tan et al. 2025)"))
