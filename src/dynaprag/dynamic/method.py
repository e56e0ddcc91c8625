"""A method is four typed components: a trigger, a query formulator, a selector and an injector.

:class:`MethodSpec` names them with the knob values a preset sets (the presets live with their
families, :mod:`dynaprag.dynamic.methods`); :func:`build_method` turns a spec plus overrides into
a :class:`Method` of ready components, checking every name and knob *before* any model or index
loads. This module is the engine's side: it knows the axes and their registries, never a
family, so it sits below the method folders (``dynaprag.dynamic.methods.resolve_method`` looks a
preset up by name and calls it). Overrides address an axis explicitly::

    {"trigger": {"theta": 0.8}}             # a knob of the preset's trigger
    {"trigger": {"name": "rind"}}           # another trigger (the preset's trigger knobs are dropped)
    {"selector": {"name": "seakr-uncertainty"}, "injector": {"name": "dyprag"}}

and ``options`` remain an alias for knobs whose name exactly one axis of the method has
(``{"theta": 0.8}``); an ambiguous or unknown knob is an error that lists the valid names.
:meth:`Method.settings` gives every resolved knob of every axis, which each run records.

>>> from dynaprag.dynamic.methods import resolve_method
>>> m = resolve_method("dragin", {"trigger": {"theta": 0.8}})
>>> m.settings()["trigger"]
{'name': 'rind', 'look_ahead': 100, 'theta': 0.8, 'equation': 'reference', 'check_real_words': True}
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from dynaprag.config import ConfigError, from_dict, to_dict
from dynaprag.dynamic.component import Component
from dynaprag.dynamic.queries import FORMULATORS, QueryFormulator
from dynaprag.dynamic.selectors import SELECTORS, Selector
from dynaprag.dynamic.triggers import TRIGGERS, Trigger
from dynaprag.inject import INJECTORS, Injector
from dynaprag.registry import Registry, UnknownNameError

AXES = ("trigger", "formulator", "selector", "injector")
_REGISTRIES = {"trigger": TRIGGERS, "formulator": FORMULATORS, "selector": SELECTORS, "injector": INJECTORS}


@dataclass(frozen=True)
class MethodSpec:
    """A named composition: one component per axis, and the knob values the preset sets."""

    trigger: str
    formulator: str = "question"
    selector: str = "top-k"
    injector: str = "in-context"
    knobs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # axis -> {knob: value}
    paper: str = ""
    datasets: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)  # dataset -> knobs

    def knobs_for(self, dataset: str | None) -> dict[str, dict[str, Any]]:
        """The preset's knobs, with the reference's per-dataset settings for ``dataset`` on top."""
        merged = {axis: dict(values) for axis, values in self.knobs.items()}
        for axis, values in self.datasets.get(dataset or "", {}).items():
            merged.setdefault(axis, {}).update(values)
        return merged

    def name_of(self, axis: str) -> str:
        return getattr(self, axis)


@dataclass
class Method:
    """A resolved method: ready components, the preset it came from, and its full settings."""

    name: str
    trigger: Trigger
    formulator: QueryFormulator
    selector: Selector
    injector: Injector
    names: Mapping[str, str]  # axis -> registered component name
    paper: str = ""

    def components(self) -> list[tuple[str, Any]]:
        """``(label, component)`` for every axis, e.g. ``("trigger 'rind'", DraginTrigger(...))``."""
        return [(f"{axis} {self.names[axis]!r}", getattr(self, axis)) for axis in AXES]

    @property
    def rolls_back(self) -> bool:
        """May a retrieval discard text already generated (so a stream must hold it back)?"""
        return bool(getattr(self.trigger, "rolls_back", False))

    def settings(self) -> dict[str, dict[str, Any]]:
        """Every axis's component name and knob values, JSON-ready (what ``config.json`` records)."""
        return {axis: {"name": self.names[axis], **knobs_of(getattr(self, axis))} for axis in AXES}

    def reset(self) -> None:
        for _, comp in self.components():
            if isinstance(comp, Component):
                comp.reset()


def knobs_of(component: Any) -> dict[str, Any]:
    return to_dict(component) if dataclasses.is_dataclass(component) else {}


def knob_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}


def build_method(name: str, spec: MethodSpec, choices: Mapping[str, Mapping[str, Any]] | None = None,
                 options: Mapping[str, Any] | None = None, dataset: str | None = None) -> Method:
    """Build preset ``spec`` (named ``name``) with per-axis ``choices`` and alias ``options``.

    ``dataset`` selects a preset's per-dataset reference settings (e.g. DRAGIN's θ, look-ahead
    and query length differ between HotpotQA and 2Wiki); explicit choices override them.
    Component names resolve in the axis registries, which hold a family's components once its
    folder is imported (:mod:`dynaprag.dynamic.methods` imports every listed family).

    Raises :class:`~dynaprag.config.ConfigError` (unknown component or knob, wrong type, out
    of range) naming the key and the valid names; nothing heavy is loaded.
    """
    choices = {axis: dict(value or {}) for axis, value in (choices or {}).items()}
    unknown = [axis for axis in choices if axis not in AXES]
    if unknown:
        raise ConfigError(f"unknown axis {unknown[0]!r}; the axes are {', '.join(AXES)}")
    names: dict[str, str] = {}
    knobs: dict[str, dict[str, Any]] = {}
    for axis in AXES:
        choice = choices.get(axis, {})
        chosen = str(choice.pop("name", None) or spec.name_of(axis))
        lookup(_REGISTRIES[axis], chosen)  # validates the name, listing the choices
        names[axis] = chosen
        preset = dict(spec.knobs_for(dataset).get(axis, {})) if chosen == spec.name_of(axis) else {}
        knobs[axis] = {**preset, **choice}
    for key, value in (options or {}).items():
        axis, knob = _route(key, names)
        knobs[axis][knob] = value
    built = {axis: _build(axis, names[axis], knobs[axis]) for axis in AXES}
    return Method(name=name, names=names, paper=spec.paper, **built)


#: the upper bound of a count knob that declares no ``max`` of its own, when a request sets it
REQUEST_COUNT_CAP = 1024


def check_tunable(method: Method, options: Mapping[str, Any]) -> None:
    """Refuse ``options`` that are not numeric or boolean knobs of ``method``'s components.

    What an untrusted caller (an HTTP request) may set: thresholds, counts, weights. Paths,
    stores, names and nested training settings are the operator's configuration only, so a
    request can never choose a file on disk or start a training run with its own settings.
    Every numeric knob has an upper bound in a request: its ``max`` (e.g. SeaKR's ``samples``
    ≤ 64), or :data:`REQUEST_COUNT_CAP` for an integer knob that declares none, so no knob
    can multiply the work of one request without limit.
    """
    for key, value in options.items():
        axis, knob = _route(key, method.names)
        cls = type(getattr(method, axis))
        fields = knob_fields(cls)
        hint = typing.get_type_hints(cls).get(knob) if knob in fields else None
        if hint not in (int, float, bool):
            raise ConfigError(f"option {key!r} cannot be set per request: only numeric knobs of the method's "
                              f"components can (set the rest in the server's configuration)")
        upper = fields[knob].metadata.get("max", REQUEST_COUNT_CAP if hint is int else None)
        if upper is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and value > upper:
            raise ConfigError(f"option {key!r}: must be <= {upper} in a request, got {value!r}")


def lookup(registry: Registry, name: str) -> Any:
    """``registry.get(name)``, an unknown name raised as a :class:`ConfigError` listing the choices."""
    try:
        return registry.get(name)
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from None


def _route(key: str, names: Mapping[str, str]) -> tuple[str, str]:
    """The axis an ``options`` key belongs to: ``axis.knob`` explicitly, or the one axis with that knob."""
    if "." in key:
        axis, knob = key.split(".", 1)
        if axis not in AXES:
            raise ConfigError(f"unknown axis {axis!r} in option {key!r}; the axes are {', '.join(AXES)}")
        return axis, knob
    owners = [axis for axis in AXES if key in knob_fields(_REGISTRIES[axis].get(names[axis]))]
    if len(owners) == 1:
        return owners[0], key
    if owners:
        raise ConfigError(f"option {key!r} is ambiguous in this method: write "
                          + " or ".join(f"{axis}.{key}" for axis in owners))
    valid = [f"{axis}.{k}" for axis in AXES for k in knob_fields(_REGISTRIES[axis].get(names[axis]))]
    raise ConfigError(f"unknown method option {key!r}; valid knobs here: {', '.join(valid) or '(none)'}")


def _build(axis: str, name: str, knobs: Mapping[str, Any]) -> Any:
    cls = _REGISTRIES[axis].get(name)
    if not dataclasses.is_dataclass(cls):
        if knobs:
            raise ConfigError(f"{axis} {name!r} has no knobs; got {', '.join(knobs)}")
        return cls()
    valid = knob_fields(cls)
    unknown = [k for k in knobs if k not in valid]
    if unknown:
        raise ConfigError(f"unknown {axis} knob {unknown[0]!r} for {axis} {name!r}; valid knobs: "
                          f"{', '.join(sorted(valid)) or '(none)'}")
    try:
        return from_dict(cls, knobs, prefix=f"{axis}.")
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{axis} {name!r}: {exc}") from None
