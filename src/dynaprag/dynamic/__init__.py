"""Dynamic RAG: one decoding loop with pluggable triggers, query formulators and injectors.

Methods (``wo-rag``, ``sr-rag``, ``fl-rag``, ``fs-rag``, ``token-rag``, ``entity-rag``, ``flare``,
``dragin``, ``seakr``, ``self-rag`` and named variants) are presets in
:data:`dynaprag.dynamic.methods.METHODS`; :class:`dynaprag.pipeline.Pipeline` runs them. The engine
(the loop, the draft, the generic components) sits here; each paper's components, reference math
and presets sit in its folder under :mod:`dynaprag.dynamic.methods`.
Heavy modules are imported where used, so ``import dynaprag.dynamic`` stays cheap.
"""
