"""What a component of a method declares about itself, and the build-time check of those needs.

Every trigger, query formulator and selector is a dataclass of knobs (with the paper's
defaults) whose class says what it reads and does:

- ``reads``: the white-box signals it reads from every step (:mod:`dynaprag.lm.signals`, e.g.
  ``ATTENTION`` or ``HiddenState(12)``), which the draft then keeps by answer index;
- ``needs_probe``: model access beyond the step signals (:mod:`dynaprag.dynamic.probe`);
- ``required_tokens``: vocabulary tokens the model must have (Self-RAG's reflection tokens);
- ``rolls_back`` (triggers): whether a retrieval may discard already generated text, which a
  streaming server must know before it sends tokens.

The loop captures the union of what the chosen components declare, so any combination gets
the signals it needs, and :func:`check_model` refuses a combination the model cannot serve
before any question is answered.
"""
from __future__ import annotations

from typing import ClassVar, Iterable

from dynaprag.lm.signals import Signal


class Component:
    """Base of triggers, formulators and selectors: the declarations, all off by default."""

    reads: ClassVar[tuple[Signal, ...]] = ()
    needs_probe: ClassVar[bool] = False
    required_tokens: ClassVar[tuple[str, ...]] = ()
    missing_token_hint: ClassVar[str] = ""

    def reset(self) -> None:
        """Forget per-question state (called before each question)."""


class CapabilityError(ValueError):
    """A chosen component needs a signal or token the loaded model cannot give."""


def check_model(components: Iterable[tuple[str, Component]], generator) -> None:
    """Raise :class:`CapabilityError` naming the component if ``generator`` cannot serve it.

    ``components`` are ``(axis/name, component)`` pairs (injectors, which are not
    :class:`Component` subclasses, may declare the same attributes); each signal a component
    reads says itself whether ``generator`` can give it; ``generator`` exposes ``has_token(token)``.
    """
    for label, comp in components:
        for signal in getattr(comp, "reads", ()):
            why = signal.missing(generator)
            if why is not None:
                raise CapabilityError(f"{label} {why}")
        missing = [t for t in getattr(comp, "required_tokens", ()) if not generator.has_token(t)]
        if missing:
            raise CapabilityError(f"{label} needs a model with the token {missing[0]!r}; this tokenizer has none. "
                                  + getattr(comp, "missing_token_hint", ""))
