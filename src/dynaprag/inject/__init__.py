"""The injection layer: how retrieved passages enter the model (in context, as LoRA weights, both).

Importing it registers every injector: ``in-context`` here, and PRAG's and DyPRAG's parametric
injectors, whose heavy parts (peft, the adapter store, the translator) load on first use.
"""
from dynaprag.inject.base import INJECTORS, InContextInjector, Injection, Injector

__all__ = ["INJECTORS", "InContextInjector", "Injection", "Injector"]

from dynaprag.inject import parametric as _parametric  # noqa: E402,F401 - registers prag/dyprag
