"""Parametric RAG: documents as LoRA adapters (PRAG) or adapters generated on the fly (DyPRAG).

Submodules are imported lazily by their users: ``augment`` (LLM rewrites + QA pairs),
``encode`` (one LoRA per document with peft), ``adapters`` (the safetensors store),
``lora`` (rank-k·r on-the-fly deltas), ``translator`` (DyPRAG hypernetwork), ``distributed``
(Ray), ``injectors`` and ``presets`` (the methods prag, prag-combine, dyprag, dyprag-combine).
"""
