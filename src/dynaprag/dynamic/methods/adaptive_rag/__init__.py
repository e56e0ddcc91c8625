"""Adaptive-RAG (Jeong et al., NAACL 2024): a query-complexity classifier routes each question to no
retrieval, single-step retrieval or multi-step retrieval (IRCoT).

Reference: starsuzi/Adaptive-RAG @ ``0c88670af8707667eb5c1163151bb5ce61b14acb``.

* :mod:`.labels` -- the labels ``A``/``B``/``C``, silver labels (the simplest strategy that answered
  a training question correctly) and the datasets' inductive-bias labels;
* :mod:`.classifier` -- the classifier, pluggable: the released T5 classifier (local folder or a
  Hugging Face id already on this machine) or a MiniLM head trained here (a deviation);
* :mod:`.train` -- the head's training and its atomic safetensors + JSON output;
* :mod:`.components` -- the ``adaptive-rag`` trigger, query and selector that route each question;
* :data:`PRESETS` -- ``adaptive-rag`` (any classifier, ``trigger.classifier=...``) and
  ``adaptive-rag-minilm`` (the head ``dynaprag adaptive-rag train`` writes under the cache as
  ``minilm``), registered in ``METHODS`` by :mod:`dynaprag.dynamic.methods`.
"""
from __future__ import annotations

from dynaprag.dynamic.method import MethodSpec
from dynaprag.dynamic.methods.adaptive_rag import classifier, labels, train  # noqa: F401 - the family's modules
from dynaprag.dynamic.methods.adaptive_rag import components as _components  # noqa: F401 - registers them

PRESETS: dict[str, MethodSpec] = {
    "adaptive-rag": MethodSpec(
        "adaptive-rag", "adaptive-rag", "adaptive-rag",
        paper="Adaptive-RAG (Jeong et al. 2024; starsuzi/Adaptive-RAG @0c88670): a complexity classifier routes "
              "each question to A no retrieval, B one retrieval (K=15) or C IRCoT (K=6); set trigger.classifier to "
              "the released T5 classifier or a trained head; deviations in dynaprag.dynamic.methods.adaptive_rag"),
    "adaptive-rag-minilm": MethodSpec(
        "adaptive-rag", "adaptive-rag", "adaptive-rag", knobs={"trigger": {"classifier": "minilm"}},
        paper="variant: Adaptive-RAG routed by a MiniLM embedding + linear head trained on this model's silver "
              "labels by `dynaprag adaptive-rag train` (the paper fine-tunes t5-large)"),
}
