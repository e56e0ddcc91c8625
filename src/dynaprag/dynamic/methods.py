"""Named methods: each a preset of trigger × query formulator × injector with the paper's defaults.

Any other composition is a config (``trigger=rind injector=dyprag``); ``options`` override a
preset's knobs by name (``{"theta": 1.5}``) and a name that no axis knows is an error.
Parametric presets (``prag``, ``dyprag``, ...) are registered here by
:mod:`dynaprag.parametric.presets`.

>>> METHODS.get("dragin").trigger, METHODS.get("dragin").formulator
('rind', 'qfs')
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from dynaprag.config import ConfigError, from_dict
from dynaprag.dynamic import seakr as _seakr  # noqa: F401 - registers the "seakr" trigger
from dynaprag.dynamic import selfrag as _selfrag  # noqa: F401 - registers the Self-RAG triggers
from dynaprag.dynamic.queries import FORMULATORS, QueryFormulator
from dynaprag.dynamic.triggers import TRIGGERS, Trigger
from dynaprag.inject import INJECTORS, Injector
from dynaprag.registry import Registry


@dataclass(frozen=True)
class MethodSpec:
    """A named composition: which trigger, formulator and injector, and their default knobs."""

    trigger: str
    formulator: str = "question"
    injector: str = "in-context"
    options: Mapping[str, Any] = field(default_factory=dict)
    paper: str = ""


METHODS: Registry[MethodSpec] = Registry("method")


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()


def _split(options: Mapping[str, Any], *classes: type) -> list[dict]:
    """Route each option to the first axis (trigger, formulator, injector) that has a knob of that name."""
    names = [_fields(cls) for cls in classes]
    known = set().union(*names)
    unknown = [k for k in options if k not in known]
    if unknown:
        valid = ", ".join(sorted(known)) or "(none)"
        raise ConfigError(f"unknown method option {unknown[0]!r}; valid options here: {valid}")
    routed: list[dict] = [{} for _ in classes]
    for key, value in options.items():
        routed[next(i for i, n in enumerate(names) if key in n)][key] = value
    return routed


def build_method(name: str | None = None, *, trigger: str | None = None, formulator: str | None = None,
                 injector: str | None = None, options: Mapping[str, Any] | None = None
                 ) -> tuple[MethodSpec, Trigger, QueryFormulator, Injector]:
    """Resolve a preset (and any axis override) into ready components; options override knobs."""
    spec = METHODS.get(name) if name else MethodSpec(trigger="never")
    spec = dataclasses.replace(spec, trigger=trigger or spec.trigger, formulator=formulator or spec.formulator,
                               injector=injector or spec.injector,
                               options={**spec.options, **(options or {})})
    t_cls, f_cls = TRIGGERS.get(spec.trigger), FORMULATORS.get(spec.formulator)
    i_cls = INJECTORS.get(spec.injector)
    t_opts, f_opts, i_opts = _split(spec.options, t_cls, f_cls, i_cls)
    injector_obj = from_dict(i_cls, i_opts) if dataclasses.is_dataclass(i_cls) else i_cls()
    return spec, from_dict(t_cls, t_opts), from_dict(f_cls, f_opts), injector_obj


METHODS.register("wo-rag", MethodSpec("never", paper="no retrieval"))
METHODS.register("sr-rag", MethodSpec("once", paper="single retrieval with the question"))
METHODS.register("fl-rag", MethodSpec("every-n-tokens", "previous-output", options={"n": 15},
                                      paper="fixed-length retrieval every n tokens (Ram et al. 2023)"))
METHODS.register("fs-rag", MethodSpec("every-sentence", "previous-output",
                                      paper="retrieval every sentence (Trivedi et al. 2023)"))
METHODS.register("token-rag", MethodSpec("token-prob", "masked-sentence", options={"theta": 0.08},
                                         paper="token-probability trigger (DRAGIN baseline)"))
METHODS.register("entity-rag", MethodSpec("entity", "masked-sentence", options={"theta": 0.4},
                                          paper="entity-level confidence (Su et al. 2024, DRAD)"))
METHODS.register("flare", MethodSpec("flare", "masked-sentence", options={"theta": 0.8, "beta": 0.4},
                                     paper="FLARE_direct (Jiang et al. 2023)"))
METHODS.register("flare-flashrag", MethodSpec("flare", "masked-sentence", options={"theta": 0.2, "beta": 0.2},
                                              paper="FLARE with FlashRAG's 0.2/0.2 thresholds (variant)"))
METHODS.register("dragin", MethodSpec("rind", "qfs", options={"theta": 1.2, "variant": "paper", "n": 35,
                                                              "filter": "stopwords"},
                                      paper="DRAGIN RIND + QFS as in the paper (Su et al. 2024)"))
METHODS.register("dragin-reference", MethodSpec("rind", "qfs", options={"theta": 1.2, "variant": "reference",
                                                                        "n": 35, "filter": "pos"},
                                                paper="DRAGIN as its reference code computes it (variant)"))
METHODS.register("seakr", MethodSpec("seakr", "confident-tokens", options={"k": 20, "alpha": 1e-3, "theta": -6.0},
                                     paper="SeaKR eigen-score uncertainty + re-ranking (Yao et al. 2024)"))
METHODS.register("self-rag", MethodSpec("self-rag", "question", options={"threshold": 0.2},
                                        paper="Self-RAG reflection tokens (Asai et al. 2024); needs a Self-RAG model"))
METHODS.register("self-rag-prompted", MethodSpec("self-rag-prompted", "question", options={"threshold": 0.5},
                                                 paper="variant: the instruct model is asked if it needs retrieval"))
