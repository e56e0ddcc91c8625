"""What every reference harness in ``scripts/parity`` sets up: dynaprag's side of a fixture run.

A harness runs a reference repository's own loop behind dynaprag's model, prompt and retriever, so
that the fixture differs from our loop only in the loop. Those inputs are the same for every
harness: SmolLM2-135M in float32 with eager attention on one torch thread (:func:`load`), its
``Generator`` and ``PromptBuilder``, BM25 (``RetrieverConfig`` defaults) over the demo corpus, the
first N demo questions (:func:`demo_questions`), greedy decoding behind the reference's LLM call
(:func:`greedy`), dynaprag's spaCy pipeline where the reference loads ``en_core_web_sm``
(:func:`our_spacy`), stand-ins for the reference's imports that are never called
(:func:`stub_modules`), and the package versions a fixture records (:func:`versions`).
Importing this module sets the environment they run in (the model cache, an offline hub).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "comparison" / "fixtures"
os.environ.setdefault("DYNAPRAG_CACHE", str(ROOT / ".cache" / "dynaprag"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class Inputs:
    """dynaprag's model, its generator and prompt builder, and the demo retriever."""

    lm: Any
    gen: Any
    builder: Any
    retriever: Any


def load() -> Inputs:
    """The fixtures' inputs: SmolLM2-135M float32 with eager attention (the only implementation that
    returns attention weights) on one torch thread, and BM25 over the demo corpus."""
    import torch

    from dynaprag.lm import load_model
    from dynaprag.lm.generator import Generator
    from dynaprag.lm.prompts import PromptBuilder
    from dynaprag.retrieval import RetrieverConfig, build_retriever

    torch.set_num_threads(1)
    lm = load_model("smollm2-135m", dtype="float32")
    lm.model.set_attn_implementation("eager")
    return Inputs(lm=lm, gen=Generator(lm), builder=PromptBuilder(lm.tokenizer, chat=lm.chat_template),
                  retriever=build_retriever(RetrieverConfig(), progress=False))


def demo_questions(n: int) -> list[dict]:
    """The first ``n`` rows of the packaged demo questions (``id``, ``question``, ...)."""
    from dynaprag.retrieval import demo_questions_path

    return [json.loads(line) for line in demo_questions_path().read_text().splitlines()][:n]


def greedy(gen, ids: list[int], max_tokens: int, stop: Callable[[str], str | None]) -> str:
    """Greedy text after the prompt ``ids``: until end of turn (left out), ``max_tokens`` tokens, or
    the first decoded text for which ``stop(text)`` returns the text to keep."""
    from dynaprag.lm.generator import GenerationConfig

    state = gen.start(ids)
    cfg, out, text = GenerationConfig(max_new_tokens=1), [], ""
    for _ in range(max_tokens):
        step = gen.step(state, cfg)
        if step.token_id in gen.eos_ids:
            break
        out.append(step.token_id)
        text = gen.decode(out)
        kept = stop(text)
        if kept is not None:
            return kept
    return text


@contextmanager
def our_spacy() -> Iterator[None]:
    """Within the block, ``spacy.load("en_core_web_sm")`` returns dynaprag's pipeline (the same
    ``en_core_web_sm``, see ``dynaprag.nlp``), so the reference splits and tags text as ours does."""
    import spacy

    from dynaprag import nlp

    real_load = spacy.load
    spacy.load = lambda name, *a, **k: nlp.load() if name == "en_core_web_sm" else real_load(name, *a, **k)
    try:
        yield
    finally:
        spacy.load = real_load


def stub_modules(stubs: dict[str, dict[str, Any]], replace: bool = True) -> None:
    """Put a module with the given attributes under each name in ``sys.modules`` (a reference's
    import that the venv lacks and the harness never calls); ``replace=False`` keeps a real one."""
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        if replace:
            sys.modules[name] = module
        else:
            sys.modules.setdefault(name, module)


def versions(*names: str) -> dict[str, str]:
    """The versions of ``python`` and the named packages, in the order given."""
    return {name: platform.python_version() if name == "python" else __import__(name).__version__ for name in names}


def write_json(path: Path, meta: dict, questions: list[dict]) -> None:
    """``{"meta": ..., "questions": ...}`` indented by one space, as the iterative fixtures are written."""
    path.write_text(json.dumps({"meta": meta, "questions": questions}, indent=1, ensure_ascii=False) + "\n",
                    encoding="utf-8")
