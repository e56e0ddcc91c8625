"""Every named method, dynamic and parametric, in one place: a preset of four components.

A preset named after a paper sets that paper's defaults; a variant carries a suffix
(``flare-flashrag``, ``self-rag-prompted``). Any other composition is a config, e.g.
``--method dragin selector=seakr-uncertainty injector=dyprag``.

>>> METHODS.get("dragin").trigger, METHODS.get("dragin").formulator
('rind', 'real-words')
"""
from __future__ import annotations

from dynaprag.dynamic import dragin as _dragin  # noqa: F401 - registers DRAGIN's trigger and query
from dynaprag.dynamic import ircot as _ircot  # noqa: F401 - registers IRCoT's trigger, query and selector
from dynaprag.dynamic import iter_retgen as _iter_retgen  # noqa: F401 - registers Iter-RetGen's trigger and query
from dynaprag.dynamic import lookahead as _lookahead  # noqa: F401 - registers TokenRAG's and EntityRAG's triggers
from dynaprag.dynamic import seakr as _seakr  # noqa: F401 - registers SeaKR's trigger and selector
from dynaprag.dynamic import selfrag as _selfrag  # noqa: F401 - registers Self-RAG's trigger and selector
from dynaprag.dynamic.methods import METHODS, MethodSpec

__all__ = ["METHODS"]

METHODS.register("wo-rag", MethodSpec("never", paper="no retrieval"))
METHODS.register("sr-rag", MethodSpec("once", paper="single retrieval with the question"))
METHODS.register("fl-rag", MethodSpec(
    "every-n-tokens", "previous-output", knobs={"trigger": {"n": 32}},
    datasets={"2wikimultihopqa": {"trigger": {"n": 16}}},
    paper="fixed-length retrieval every n tokens (Ram et al. 2023) as the DRAGIN repository ran it: "
          "fix_length 32, 16 on 2Wiki (its Llama2 FL-RAG configs before commit 6108a97 deleted the key)"))
METHODS.register("fs-rag", MethodSpec("every-sentence", "previous-output",
                                      paper="retrieval every sentence (Trivedi et al. 2023)"))
METHODS.register("token-rag", MethodSpec(
    "token-confidence", "masked-tokens", knobs={"trigger": {"theta": 0.08, "look_ahead": 100},
                                                "formulator": {"theta": 0.08}},
    datasets={"2wikimultihopqa": {"trigger": {"theta": 0.1, "look_ahead": 64}, "formulator": {"theta": 0.1}},
              "strategyqa": {"trigger": {"theta": 0.1}, "formulator": {"theta": 0.1}},
              "iirc": {"trigger": {"look_ahead": 128}}},
    paper="TokenRAG as the DRAGIN repository runs it (its Llama2-7b FLARE.json configs, method: token); "
          "deviations in dynaprag.dynamic.lookahead"))
METHODS.register("entity-rag", MethodSpec(
    "entity", "masked-entities", knobs={"trigger": {"theta": 0.4, "look_ahead": 100}, "formulator": {"theta": 0.4}},
    datasets={"2wikimultihopqa": {"trigger": {"look_ahead": 64}}, "iirc": {"trigger": {"look_ahead": 128}}},
    paper="EntityRAG as the DRAGIN repository computes it (no released config: θ = 0.4 is ours)"))
METHODS.register("flare", MethodSpec(
    "flare", "masked-sentence", knobs={"trigger": {"theta": 0.8, "initial": True}, "formulator": {"beta": 0.4}},
    datasets={"2wikimultihopqa": {"selector": {"k": 2}}},
    paper="FLARE_direct as its released 2Wiki config runs it (Jiang et al. 2023; topk 2 there); "
          "its max_generation_len 256 is the run's max_new_tokens"))
METHODS.register("flare-flashrag", MethodSpec(
    "flare", "masked-sentence", knobs={"trigger": {"theta": 0.2}, "formulator": {"beta": 0.2}},
    paper="FLARE with FlashRAG's 0.2/0.2 thresholds (variant)"))
METHODS.register("dragin", MethodSpec(
    "rind", "real-words", knobs={"trigger": {"theta": 0.8, "look_ahead": 100}, "formulator": {"top_k": 35}},
    datasets={"2wikimultihopqa": {"trigger": {"theta": 1.0, "look_ahead": 64}, "formulator": {"top_k": 25}},
              "strategyqa": {"trigger": {"theta": 0.75}},
              "iirc": {"trigger": {"theta": 0.6, "look_ahead": 128}}},
    paper="DRAGIN as its reference code runs it (Su et al. 2024; oneal2000/DRAGIN, Llama-2-7B configs)"))
METHODS.register("dragin-paper", MethodSpec(
    "rind", "real-words", knobs={"trigger": {"theta": 1.2, "look_ahead": 100, "equation": "paper"},
                                 "formulator": {"top_k": 35}},
    datasets={"2wikimultihopqa": {"trigger": {"look_ahead": 64}, "formulator": {"top_k": 25}}},
    paper="DRAGIN's printed Eq. 4 per token (variant; reference code where the paper is silent)"))
METHODS.register("dragin-inline", MethodSpec(
    "rind-inline", "qfs", knobs={"trigger": {"theta": 1.2}, "formulator": {"n": 35, "filter": "stopwords"}},
    paper="variant: Eq. 4 on generation-time attention, no look-ahead pass (cheapest)"))
METHODS.register("seakr", MethodSpec(
    "seakr", "sure-words", "seakr-uncertainty",
    knobs={"trigger": {"samples": 20, "alpha": 1e-3, "theta": -6.0, "max_steps": 7, "max_docs": 5},
           "formulator": {"prob_threshold": 0.1}, "selector": {"samples": 20, "alpha": 1e-3, "max_docs": 5}},
    paper="SeaKR as its reference code runs it (Yao et al. 2024; THU-KEG/SeaKR @d75fe70 reasoner.py): "
          "eigen score of 20 samples per step, one least-uncertain document per retrieval, reasoning integration; "
          "deviations in dynaprag.dynamic.seakr"))
METHODS.register("self-rag", MethodSpec(
    "self-rag", "question", "selfrag-critique", knobs={"trigger": {"theta": 0.2}},
    paper="Self-RAG reflection tokens (Asai et al. 2024); needs a Self-RAG model"))
METHODS.register("self-rag-prompted", MethodSpec(
    "self-rag-prompted", "question", knobs={"trigger": {"theta": 0.5}},
    paper="variant: the instruct model is asked if it needs retrieval"))
METHODS.register("ircot", MethodSpec(
    "ircot", "ircot-sentence", "ircot-paragraphs",
    paper="IRCoT QA as its reference code runs it (Trivedi et al. 2023; StonyBrookNLP/ircot @3c1820f, ircot_qa "
          "configs): a query per chain sentence, K=6 paragraphs each, up to 15 collected, exit at 'answer is' or "
          "10 sentences, then a reader; deviations in dynaprag.dynamic.ircot"))
METHODS.register("ircot-noreader", MethodSpec(
    "ircot", "ircot-sentence", "ircot-paragraphs", knobs={"trigger": {"reader": False}},
    paper="variant: IRCoT's retrieval chain, the answer read from the chain itself (no reader step)"))
METHODS.register("iter-retgen", MethodSpec(
    "iter-retgen", "question-and-answer", knobs={"trigger": {"rounds": 3}},
    paper="Iter-RetGen (Shao et al. 2023; no official code: FlashRAG @1ee5249 IterativePipeline as reference): "
          "T=3 rounds, query = question + previous answer; deviations in dynaprag.dynamic.iter_retgen"))

# Parametric RAG: both papers retrieve once with the question (top-3), then inject.
METHODS.register("prag", MethodSpec("once", injector="prag",
                                    paper="PRAG: sum of per-document LoRAs, no context (Su et al. 2025)"))
METHODS.register("prag-combine", MethodSpec("once", injector="prag-combine",
                                            paper="PRAG-Combine: LoRAs + passages in context (Su et al. 2025)"))
METHODS.register("dyprag", MethodSpec("once", injector="dyprag",
                                      paper="DyPRAG: translator-generated LoRAs, no context (Tan et al. 2025)"))
METHODS.register("dyprag-combine", MethodSpec("once", injector="dyprag-combine",
                                              paper="DyPRAG-Combine: generated LoRAs + context (Tan et al. 2025)"))
