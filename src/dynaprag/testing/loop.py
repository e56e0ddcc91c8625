"""One call to run a method through the real decoding loop on scripted signals."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from dynaprag.corpus import Passage
from dynaprag.dynamic.loop import DynamicLoop, LoopConfig
from dynaprag.dynamic.methods import resolve_method
from dynaprag.testing.generator import ScriptedGenerator, ScriptedPromptBuilder, ScriptedStep
from dynaprag.testing.retriever import InMemoryRetriever

DEFAULT_PASSAGES = (
    Passage("jaws", "Jaws (film)", "Jaws is a 1975 film directed by Steven Spielberg."),
    Passage("spielberg", "Steven Spielberg", "Steven Spielberg was born in 1946 in Cincinnati, Ohio."),
    Passage("paris", "Paris", "Paris is the capital and largest city of France."),
    Passage("ulm", "Ulm", "Ulm is a city on the river Danube in Germany."),
)


def scripted_loop(method: str, script: Sequence[ScriptedStep], *, with_context: Sequence[ScriptedStep] | None = None,
                  choices: Mapping[str, Mapping[str, Any]] | None = None, options: Mapping[str, Any] | None = None,
                  retriever=None, injector=None, config: LoopConfig | None = None,
                  **generator_kwargs: Any) -> DynamicLoop:
    """A :class:`DynamicLoop` running ``method`` (resolved as usual) over a :class:`ScriptedGenerator`.

    ``injector`` replaces the method's injector with an instance (e.g. a test double that
    changes weights); the retriever defaults to an :class:`InMemoryRetriever` over a few
    passages. ``loop.gen`` is the generator, ``loop.retriever`` the retriever.
    """
    gen = ScriptedGenerator(script, with_context=with_context, **generator_kwargs)
    resolved = resolve_method(method, choices, options)
    if injector is not None:
        resolved.injector = injector
    resolved.injector.bind(gen)
    builder = ScriptedPromptBuilder(gen)
    prefix = gen.prefix(builder.prefix_ids)
    return DynamicLoop(gen, builder, retriever or InMemoryRetriever(DEFAULT_PASSAGES), resolved,
                       config or LoopConfig(max_new_tokens=64), prefix=lambda: prefix)
