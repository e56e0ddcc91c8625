"""Model + retriever + method -> ``answer(question)``: the public entry point of dynaprag.

A :class:`Pipeline` loads the generator and the retriever once, keeps the few-shot prefix's KV
cache (computed once per prompt config and reused across questions, retrievals and methods), and
runs any registered method through the one dynamic loop. The eval harness, the HTTP server and
the CLI all go through :meth:`Pipeline.answer`.

>>> from dynaprag.pipeline import Pipeline, PipelineConfig
>>> pipe = Pipeline.from_config(PipelineConfig(method="dragin"))        # doctest: +SKIP
>>> answer = pipe.answer("In what year was the director of Jaws born?")  # doctest: +SKIP
>>> answer.short, len(answer.trace.retrievals)                           # doctest: +SKIP
('1946', 1)
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from dynaprag.lm.prompts import PromptBuilder, PromptConfig
from dynaprag.retrieval import RetrieverConfig
from dynaprag.trace import Answer


@dataclass
class PipelineConfig:
    """Everything that defines a run; written next to results so every number is traceable."""

    model: str = field(default="smollm2-135m", metadata={"help": "model alias, Hugging Face id or local folder"})
    dtype: str = field(default="auto", metadata={"help": "auto | float32 | bfloat16 | float16"})
    method: str = field(default="dragin", metadata={"help": "a registered method (see `dynaprag ask --help`)"})
    k: int = field(default=3, metadata={"help": "passages per retrieval (DRAGIN/FLARE: 3)"})
    max_new_tokens: int = field(default=128, metadata={"help": "answer length budget in tokens"})
    max_retrievals: int = field(default=5, metadata={"help": "retrieval budget per question"})
    seed: int = field(default=0, metadata={"help": "seed for methods that sample (SeaKR)"})
    retrieval: RetrieverConfig = field(default_factory=RetrieverConfig, metadata={"help": "retriever settings"})
    prompt: PromptConfig = field(default_factory=PromptConfig, metadata={"help": "exemplar set, shots, style"})
    trigger: str | None = field(default=None, metadata={"help": "override the method's trigger"})
    formulator: str | None = field(default=None, metadata={"help": "override the method's query formulator"})
    injector: str | None = field(default=None, metadata={"help": "override the method's injector"})
    options: dict = field(default_factory=dict, metadata={"help": "method knob overrides, e.g. {theta: 1.5}"})


def _load_parametric_presets() -> None:
    """Import :mod:`dynaprag.parametric.presets` (registers prag/dyprag methods) if it exists."""
    try:
        importlib.import_module("dynaprag.parametric.presets")
    except ModuleNotFoundError as exc:
        if exc.name not in ("dynaprag.parametric.presets", "dynaprag.parametric"):
            raise


class Pipeline:
    """A loaded model and retriever that answer questions with any method; not thread-safe."""

    def __init__(self, config: PipelineConfig, lm, retriever):
        from dynaprag.lm import Generator

        self.config = config
        self.lm = lm
        self.retriever = retriever
        self.generator = Generator(lm)
        self._builders: dict[tuple, PromptBuilder] = {}
        self._prefixes: dict[tuple, Any] = {}
        self.prefix_computations = 0
        _load_parametric_presets()

    @classmethod
    def from_config(cls, config: PipelineConfig, *, lm=None, retriever=None) -> "Pipeline":
        """Load what ``config`` names, reusing an already loaded model and/or retriever when given."""
        if lm is None:
            from dynaprag.lm import load_model

            lm = load_model(config.model, dtype=config.dtype)
        if retriever is None:
            from dynaprag.retrieval import build_retriever

            retriever = build_retriever(config.retrieval)
        return cls(config, lm, retriever)

    def builder(self, prompt: PromptConfig | None = None) -> PromptBuilder:
        prompt = prompt or self.config.prompt
        key = (prompt.exemplars, prompt.shots, prompt.style)
        if key not in self._builders:
            self._builders[key] = PromptBuilder(self.lm.tokenizer, self.lm.chat_template, prompt)
        return self._builders[key]

    def prefix(self, prompt: PromptConfig | None = None):
        """The prefix KV cache for a prompt config, computed on first use and kept."""
        prompt = prompt or self.config.prompt
        key = (prompt.exemplars, prompt.shots, prompt.style)
        if key not in self._prefixes:
            self._prefixes[key] = self.generator.prefix(self.builder(prompt).prefix_ids)
            self.prefix_computations += 1
        return self._prefixes[key]

    def answer(self, question: str, *, method: str | None = None, options: dict | None = None,
               on_event: Callable[[dict], None] | None = None) -> Answer:
        """Answer ``question`` with the configured (or given) method; the trace is filled in.

        ``options`` override the method's knobs for this call only; ``on_event`` receives
        token, retrieval and rollback events while decoding (the HTTP server streams them).
        """
        from dynaprag.dynamic.loop import DynamicLoop, LoopConfig
        from dynaprag.dynamic.methods import build_method

        if not question or not question.strip():
            raise ValueError("question is empty")
        cfg = self.config
        name = method or cfg.method
        per_call = method is not None and method != cfg.method
        spec, trigger, formulator, injector = build_method(
            name, trigger=None if per_call else cfg.trigger, formulator=None if per_call else cfg.formulator,
            injector=None if per_call else cfg.injector,
            options={**({} if per_call else cfg.options), **(options or {})})
        injector.bind(self.generator)
        loop = DynamicLoop(self.generator, self.builder(), self.retriever, trigger, formulator, injector,
                           LoopConfig(k=cfg.k, max_new_tokens=cfg.max_new_tokens,
                                      max_retrievals=cfg.max_retrievals, seed=cfg.seed),
                           prefix=self.prefix, method=name)
        return loop.run(question, on_event=on_event)
