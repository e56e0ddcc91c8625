"""Where parametric knowledge lives on disk, shared per process: adapter stores and translators.

The injectors (:mod:`dynaprag.inject.parametric`), the ``encode`` and ``translator`` commands
and the benchmarks open stores and translators through these functions, so a process loads
each once and every caller resolves the same default locations: the adapter store is
``$DYNAPRAG_ADAPTERS`` or ``$DYNAPRAG_CACHE/adapters``, the translator ``$DYNAPRAG_TRANSLATOR``
or ``$DYNAPRAG_CACHE/translators/<model fingerprint>.safetensors``.
"""
from __future__ import annotations

import os
from pathlib import Path

from dynaprag.files import cache_dir
from dynaprag.parametric.adapters import AdapterStore
from dynaprag.parametric.encode import EncodeConfig

_STORES: dict[tuple, AdapterStore] = {}
_TRANSLATORS: dict[tuple, tuple] = {}


def default_store_root() -> Path:
    return Path(os.environ.get("DYNAPRAG_ADAPTERS") or cache_dir() / "adapters")


def default_translator_path(fingerprint: str) -> Path:
    env = os.environ.get("DYNAPRAG_TRANSLATOR")
    return Path(env) if env else cache_dir() / "translators" / f"{fingerprint}.safetensors"


def open_store(root: str | Path, lm, config: EncodeConfig) -> AdapterStore:
    """The process-wide store for (root, model, config), created on first use."""
    key = (str(Path(root).resolve()), lm.fingerprint, repr(config.store_config()))
    if key not in _STORES:
        _STORES[key] = AdapterStore(root, lm.fingerprint, config.store_config())
    return _STORES[key]


def load_translator(path: str | Path, lm):
    """A translator checked against the model it was trained for (cached per process)."""
    from dynaprag.parametric.translator import ParameterTranslator

    path = Path(path)
    if path.is_dir():  # the --out folder of `dynaprag translator train`
        path = path / "translator.safetensors"
    key = (str(path.resolve()), lm.fingerprint)
    if key not in _TRANSLATORS:
        if not path.is_file():
            raise FileNotFoundError(f"no DyPRAG translator at {path}: train one with "
                                    f"`dynaprag translator train --store DIR --out DIR` (or set $DYNAPRAG_TRANSLATOR)")
        net, meta = ParameterTranslator.load(path)
        if meta.get("model_fingerprint") not in (None, lm.fingerprint):
            raise ValueError(f"translator {path} was trained for model {meta['model_fingerprint']}, "
                             f"not {lm.fingerprint} ({lm.name})")
        _TRANSLATORS[key] = (net.to(lm.device), meta)
    return _TRANSLATORS[key]
