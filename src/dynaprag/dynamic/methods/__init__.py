"""Every named method: the engine's presets and the method families, listed explicitly.

A family is a folder, as peft keeps its tuners: ``methods/<family>/`` holds a paper's components
(registered into the engine's axis registries at the bottom of their modules), its pure
reference math (what ``tests/comparison`` pins) and its presets (``PRESETS`` in its
``__init__``). The engine (:mod:`dynaprag.dynamic`: the loop, the draft, the generic components)
never imports a family, and families never import each other (``lint-imports`` checks both).

:data:`FAMILIES` is the one list of what is loaded: a folder not in it is not imported, so its
components and presets do not exist (``tests/test_methods.py`` fails on a folder left out).
Adding a family is a folder plus one entry here.

>>> METHODS.get("dragin").trigger, METHODS.get("dragin").formulator
('rind', 'real-words')
>>> resolve_method("dragin", {"trigger": {"theta": 0.8}}).settings()["trigger"]["theta"]
0.8
"""
from __future__ import annotations

from typing import Any, Mapping

from dynaprag.dynamic import presets
from dynaprag.dynamic.method import AXES, Method, MethodSpec, build_method, check_tunable, lookup
from dynaprag.dynamic.methods import adaptive_rag, confidence, dragin, ircot, iter_retgen, seakr, search_r1, selfrag
from dynaprag.registry import Registry

__all__ = ["AXES", "FAMILIES", "METHODS", "Method", "MethodSpec", "check_tunable", "resolve_method"]

FAMILIES = (confidence, dragin, seakr, selfrag, ircot, iter_retgen, search_r1, adaptive_rag)
"""The method families, each a package with a ``PRESETS`` mapping; nothing else is loaded."""

METHODS: Registry[MethodSpec] = Registry("method")
for _presets in (presets.BASELINES, *(family.PRESETS for family in FAMILIES), presets.PARAMETRIC):
    for _name, _spec in _presets.items():
        METHODS.register(_name, _spec)  # a name two families claim fails here, at import


def resolve_method(name: str, choices: Mapping[str, Mapping[str, Any]] | None = None,
                   options: Mapping[str, Any] | None = None, dataset: str | None = None) -> Method:
    """Resolve preset ``name`` with per-axis ``choices`` and alias ``options`` into components.

    ``dataset`` selects a preset's per-dataset reference settings; explicit choices override
    them (:func:`~dynaprag.dynamic.method.build_method`). Raises
    :class:`~dynaprag.config.ConfigError` for an unknown method, component or knob, naming the
    valid names; nothing heavy is loaded.
    """
    return build_method(name, lookup(METHODS, name), choices, options, dataset)
