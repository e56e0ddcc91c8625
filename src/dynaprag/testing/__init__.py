"""Test doubles shipped with dynaprag, so users can test their own components offline.

- :class:`ScriptedGenerator` and :class:`ScriptedPromptBuilder`: a decoder that emits a fixed
  script of tokens with chosen log-probs, entropies, attention and hidden states, through the
  same interface as :class:`dynaprag.lm.Generator`, so the real
  :class:`~dynaprag.dynamic.loop.DynamicLoop` runs any trigger, formulator and selector on
  hand-built signals;
- :class:`InMemoryRetriever`: word-overlap search over a list of passages.

They are for unit tests of one component. A test that claims to test the real model or a real
retriever must use the real ones (dspy ships its ``DummyLM`` the same way).

>>> from dynaprag.testing import ScriptedStep, scripted_loop
>>> loop = scripted_loop("sr-rag", [ScriptedStep(" Paris."), ScriptedStep(" So the answer is Paris.")])
>>> answer = loop.run("What is the capital of France?")
>>> [r.position for r in answer.trace.retrievals]
[0]
"""
from dynaprag.testing.generator import ScriptedGenerator, ScriptedPromptBuilder, ScriptedStep
from dynaprag.testing.retriever import InMemoryRetriever
from dynaprag.testing.loop import scripted_loop

__all__ = ["InMemoryRetriever", "ScriptedGenerator", "ScriptedPromptBuilder", "ScriptedStep", "scripted_loop"]
