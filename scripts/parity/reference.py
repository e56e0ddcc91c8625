"""Run a reference repository's own decoding loop on dynaprag's inputs: the run-time patches.

The reference code is never copied into dynaprag: it is imported from a checkout whose path
the caller passes, and patched at run time. Every patch is listed with its reason in
``scripts/parity/README.md``; this module holds the ones the reference loops share:

* :func:`instrument` recompiles one reference function with ``_record(label, locals())``
  calls inserted before chosen statements (trace only: no value or control flow changes);
* :class:`PromptBridge` replaces the reference's prompt string by dynaprag's prompt ids
  (prompts differ by design, so they are taken out of the comparison) and serves dynaprag's
  retriever behind the reference's retrieval call;
* :func:`load_dragin_generate` imports DRAGIN's ``src/generate.py`` with its Elasticsearch
  retriever module stubbed, spaCy's ``en_core_web_sm`` served by the same pipeline dynaprag
  uses, dynaprag's model (float32, eager attention) in place of ``from_pretrained``, and the
  tokenizer's own space marker and newline id in place of Llama-2's.
"""
from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

import harness

CASE = "\x00CASE\x00"
"""The reference's test-question block (``case``); the bridge puts dynaprag's question slot there."""
DOC = "\x00DOC:{}\x00"
"""How a retrieved passage reaches the reference's prompt string: its id, read back by the bridge."""


# -- tracing --------------------------------------------------------------------------------

class StopLoop(Exception):
    """Raised by :attr:`Recorder.stop_when` to end a reference loop early (after recording)."""


class Recorder:
    """Collects ``(label, values)`` from instrumented reference functions, in call order.

    ``stop_when(label, values)``, if set and true, raises :class:`StopLoop` after the record is
    kept: the harness ends the reference's loop there (the code after it never runs).
    """

    def __init__(self):
        self.events: list[tuple[str, dict]] = []
        self.stop_when = None

    def __call__(self, label: str, scope: dict, names: Iterable[str]) -> None:
        values = {n: _plain(scope[n]) for n in names if n in scope}
        values["_t"] = time.perf_counter()  # when the statement was reached (timing per step)
        self.events.append((label, values))
        if self.stop_when is not None and self.stop_when(label, values):
            raise StopLoop(label)

    def take(self) -> list[tuple[str, dict]]:
        events, self.events = self.events, []
        return events


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a traced value (tensors and numpy arrays to lists, floats as Python floats)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        return float(value)
    return copy.deepcopy(value)


def instrument(owner: Any, name: str, points: dict[str, tuple[str, tuple[str, ...]]], recorder: Recorder) -> None:
    """Recompile ``owner.name`` with ``_record(label, locals(), names)`` before chosen statements.

    ``points`` maps the start of a statement's source line (stripped) to ``(label, names)``;
    each prefix must match exactly one statement, so a changed reference fails loudly. The
    function keeps its module globals and file name (tracebacks point into the reference).
    """
    func = inspect.unwrap(getattr(owner, name))
    lines, first = inspect.getsourcelines(func)
    source = textwrap.dedent("".join(lines))
    tree = ast.parse(source)
    text_lines = source.splitlines()
    found: dict[str, int] = {}

    class Insert(ast.NodeTransformer):
        def generic_visit(self, node):
            super().generic_visit(node)
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if not isinstance(block, list) or not block or not isinstance(block[0], ast.stmt):
                    continue
                out = []
                for stmt in block:
                    line = text_lines[stmt.lineno - 1].strip()
                    for prefix, (label, names) in points.items():
                        if line.startswith(prefix):
                            found[prefix] = found.get(prefix, 0) + 1
                            call = ast.parse(f"_record({label!r}, locals(), {tuple(names)!r})").body[0]
                            out.append(ast.copy_location(call, stmt))
                    out.append(stmt)
                setattr(node, field, out)
            return node

    tree = Insert().visit(tree)
    bad = {p: found.get(p, 0) for p in points if found.get(p, 0) != 1}
    if bad:
        raise RuntimeError(f"instrument {name}: statement prefixes matched {bad} times (need exactly once)")
    ast.increment_lineno(tree, first - 1)
    ast.fix_missing_locations(tree)
    scope = dict(func.__globals__)
    scope["_record"] = recorder
    exec(compile(tree, inspect.getsourcefile(func), "exec"), scope)
    setattr(owner, name, scope[func.__name__])


# -- prompts and retrieval ------------------------------------------------------------------

class PromptBridge:
    """dynaprag's prompt ids and retriever behind the reference's prompt strings and retrieval call.

    The reference is given ``demo = []`` and ``case = CASE``, and its retrieval returns
    ``DOC.format(id)`` strings, so each prompt string it assembles reads
    ``["Context:\\n[1] DOC...\\nAnswer in the same format as before.\\n"] CASE [" " answer]``.
    :meth:`ids` turns that into ``builder.build(question, passages, encode(answer))``: our
    exemplars, knowledge slot and question slot, with the answer text the reference
    accumulated (its own strip-and-join) in the answer slot. The spaces the reference puts
    between ``case``, ``text`` and ``ptext`` are separators: where they lead or dangle (an
    empty ``text`` or ``ptext``: ``case + " " + "" + " " + ""``) they are dropped.
    """

    def __init__(self, builder, retriever, k: int):
        self.builder, self.retriever, self.k = builder, retriever, k
        self.question = ""
        self.passages: dict[str, Any] = {}
        self.retrievals: list[dict] = []

    def is_prompt(self, text: Any) -> bool:
        return isinstance(text, str) and CASE in text

    def ids(self, text: str) -> list[int]:
        head, after = text.split(CASE, 1)
        passages = []
        for part in head.split("\x00DOC:")[1:]:
            passages.append(self.passages[part.split("\x00", 1)[0]])
        answer = after.strip(" ")  # the separators around the reference's case, text and ptext
        return self.builder.build(self.question, passages, self.builder.encode(answer))

    def retrieve(self, query: str, topk: int = 1, **_ignored) -> list[str]:
        """The reference's ``retrieve(query, topk)``: dynaprag's retriever, hits as DOC markers."""
        hits = self.retriever.search_one(query, topk) if query.strip() else []
        for h in hits:
            self.passages[h.passage.id] = h.passage
        self.retrievals.append({"query": query, "topk": topk, "hit_ids": [h.passage.id for h in hits]})
        return [DOC.format(h.passage.id) for h in hits]


class BridgedTokenizer:
    """The reference's tokenizer: encodes a bridged prompt string to dynaprag's prompt ids;
    every other call goes to the real tokenizer unchanged."""

    def __init__(self, tokenizer, bridge: PromptBridge):
        object.__setattr__(self, "_tok", tokenizer)
        object.__setattr__(self, "_bridge", bridge)

    def encode(self, text, *args, return_tensors=None, **kwargs):
        if self._bridge.is_prompt(text):
            ids = self._bridge.ids(text)
            return torch.tensor([ids]) if return_tensors == "pt" else ids
        return self._tok.encode(text, *args, return_tensors=return_tensors, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._tok(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __setattr__(self, name, value):
        setattr(self._tok, name, value)


# -- DRAGIN's generate.py ------------------------------------------------------------------------

def _stub_module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def load_dragin_generate(checkout: Path) -> types.ModuleType:
    """DRAGIN's ``src/generate.py`` imported from ``checkout``: the ``retriever`` module (BM25 over
    Elasticsearch, SGPT) stubbed, never constructed; ``spacy.load("en_core_web_sm")`` served by
    dynaprag's pipeline (the same ``en_core_web_sm`` 3.8.0, see ``dynaprag.nlp``)."""
    path = Path(checkout) / "src" / "generate.py"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (pass the root of a DRAGIN checkout at 4d71efc)")
    sys.modules.setdefault("retriever", _stub_module("retriever", BM25=None, SGPT=None))
    with harness.our_spacy():
        spec = importlib.util.spec_from_file_location("dragin_reference_generate", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def replace_constant(func: Callable, old: Any, new: Any) -> Callable:
    """``func`` with the literal ``old`` in its code replaced by ``new`` (DRAGIN's Llama-2 newline id 13)."""
    code = func.__code__
    if old not in code.co_consts:
        raise RuntimeError(f"{func.__qualname__}: constant {old!r} not found")
    func.__code__ = code.replace(co_consts=tuple(new if c == old and type(c) is type(old) else c
                                                 for c in code.co_consts))
    return func


def patch_dragin_generator(module: types.ModuleType, lm, bridge: PromptBridge) -> None:
    """``BasicGenerator`` on dynaprag's loaded model, the bridged tokenizer, ``Ġ`` and id 198."""
    tokenizer = lm.tokenizer

    def init(self, model_name_or_path):
        self.tokenizer = BridgedTokenizer(tokenizer, bridge)
        self.model_config = lm.model.config
        self.model = lm.model
        self.space_token = tokenizer.tokenize(" ")[0]
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    module.BasicGenerator.__init__ = init
    if not getattr(module, "_newline_patched", False):
        newline = tokenizer.encode("\n", add_special_tokens=False)[0]
        replace_constant(module.BasicGenerator.generate_attn, 13, newline)
        replace_constant(module.AttnWeightRAG.keep_real_words, 13, newline)
        module._newline_patched = True
