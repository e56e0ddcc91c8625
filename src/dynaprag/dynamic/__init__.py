"""Dynamic RAG: one decoding loop with pluggable triggers, query formulators and injectors.

Methods (``wo-rag``, ``sr-rag``, ``fl-rag``, ``fs-rag``, ``token-rag``, ``entity-rag``, ``flare``,
``dragin``, ``seakr``, ``self-rag`` and named variants) are presets in
:data:`dynaprag.dynamic.methods.METHODS`; :class:`dynaprag.pipeline.Pipeline` runs them.
Heavy modules are imported where used, so ``import dynaprag.dynamic`` stays cheap.
"""
