"""Model + retriever + method -> ``answer(question)``: the public entry point of dynaprag.

A :class:`Pipeline` loads the generator and the retriever once, keeps the few-shot prefix's KV
cache (computed once per prompt config and reused across questions, retrievals and methods), and
runs any registered method through the one dynamic loop. The eval harness, the HTTP server and
the CLI all go through :meth:`Pipeline.answer`.

A method's settings are checked when the config is resolved (:func:`resolve_config`), before
any model or index loads, and the resolved config lists every knob of every axis and every
budget of the loop (:meth:`PipelineConfig.loop_config`).

One route answers, whatever the batch size: :meth:`Pipeline.answer` is
:meth:`Pipeline.answer_many` with one question in one slot, so a question is answered by the same
code alone, in an eval run at any batch size, or in the server's batch. The configured method is
resolved, checked against the model and bound once per pipeline (a few per-call variants are
kept too), not once per question.

>>> from dynaprag.pipeline import Pipeline, PipelineConfig
>>> pipe = Pipeline.from_config(PipelineConfig(method="dragin"))        # doctest: +SKIP
>>> answer = pipe.answer("In what year was the director of Jaws born?")  # doctest: +SKIP
>>> answer.short, len(answer.trace.retrievals)                           # doctest: +SKIP
('1946', 1)
"""
from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from dynaprag.config import Choice, ConfigError, check_ranges
from dynaprag.dynamic.methods import AXES, METHODS, Method, resolve_method
from dynaprag.lm.prompts import PromptBuilder, PromptConfig, exemplar_sets
from dynaprag.retrieval import RetrieverConfig
from dynaprag.trace import Answer

_AXIS_HELP = "{axis} of the method: a name, or knobs ({axis}.KNOB=VALUE); default: the preset's"


@dataclass
class PipelineConfig:
    """Everything that defines a run; written next to results so every number is traceable."""

    model: str = field(default="smollm2-135m", metadata={"help": "model alias, Hugging Face id or local folder"})
    dtype: str = field(default="auto", metadata={"help": "auto | float32 | bfloat16 | float16",
                                                 "choices": ("auto", "float32", "bfloat16", "float16")})
    decoder: str = field(default="eager", metadata={
        "help": "eager (transformers' forward) | fast (static cache, hand-written pass: dynaprag.lm.fast) | auto "
                "(fast only where supported and measured faster; eager for now)", "choices": ("eager", "fast", "auto")})
    compile: bool = field(default=False, metadata={"help": "fast decoder: torch.compile the decode step"})
    quantize: str = field(default="none", metadata={
        "help": "fast decoder: none | int8 | int4 weight-only linear layers (use with dtype=bfloat16; signals "
                "change, see dynaprag.lm.fast.quantize)", "choices": ("none", "int8", "int4")})
    method: str = field(default="dragin", metadata={"help": "a registered method (see `dynaprag methods`)"})
    dataset: str | None = field(default=None, metadata={
        "help": "the questions' dataset: selects a preset's per-dataset reference settings (set by `eval`)"})
    k: int = field(default=3, metadata={
        "help": "passages per retrieval (DRAGIN, TokenRAG, FL-RAG: 3; flare keeps 2 on 2Wiki, selector.k)", "min": 1,
        "max": 100})
    max_new_tokens: int = field(default=128, metadata={"help": "answer length budget in tokens", "min": 1,
                                                       "max": 32768})
    max_retrievals: int = field(default=5, metadata={"help": "retrieval budget per question", "min": 0,
                                                     "max": 1024})
    max_decoded_factor: float = field(default=4.0, metadata={
        "help": "decoding budget: stop after decoding this many times max_new_tokens (kept + discarded tokens; "
                "bounds methods that roll back)", "min": 1.0, "max": 64.0})
    seed: int = field(default=0, metadata={"help": "seed for methods that sample (SeaKR)"})
    retrieval: RetrieverConfig = field(default_factory=RetrieverConfig, metadata={"help": "retriever settings"})
    prompt: PromptConfig = field(default_factory=PromptConfig, metadata={"help": "exemplar set, shots, style"})
    trigger: Choice = field(default_factory=Choice, metadata={"help": _AXIS_HELP.format(axis="trigger")})
    formulator: Choice = field(default_factory=Choice, metadata={"help": _AXIS_HELP.format(axis="query formulator")})
    selector: Choice = field(default_factory=Choice, metadata={"help": _AXIS_HELP.format(axis="hit selector")})
    injector: Choice = field(default_factory=Choice, metadata={"help": _AXIS_HELP.format(axis="injector")})
    options: dict = field(default_factory=dict, metadata={
        "help": "alias: knob overrides routed to the one axis that has the knob, e.g. {theta: 1.5}"})

    def __post_init__(self) -> None:
        for axis in AXES:
            value = getattr(self, axis)
            if value is None or isinstance(value, str):
                setattr(self, axis, Choice({"name": value} if value else {}))
            elif not isinstance(value, Choice):
                setattr(self, axis, Choice(value))

    def choices(self) -> dict[str, dict[str, Any]]:
        return {axis: dict(getattr(self, axis)) for axis in AXES}

    def loop_config(self, max_new_tokens: int | None = None):
        """The loop's budgets, every one of them a field here (so a run sets and records them all).

        Built field by field from :class:`~dynaprag.dynamic.loop.LoopConfig`: a budget the loop
        gains without a field here fails loudly instead of silently keeping its default.
        """
        from dynaprag.dynamic.loop import LoopConfig

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(LoopConfig)}
        if max_new_tokens is not None:
            values["max_new_tokens"] = max_new_tokens
        return LoopConfig(**values)


def resolve_method_of(config: PipelineConfig, method: str | None = None,
                      options: Mapping[str, Any] | None = None) -> Method:
    """The method ``config`` describes (or preset ``method`` with only ``options``), checked.

    Raises :class:`~dynaprag.config.ConfigError` naming the key for an unknown method,
    component or knob and for a value of the wrong type or out of range.
    """
    if method is not None and method != config.method:
        return resolve_method(method, options=options, dataset=config.dataset)
    return resolve_method(config.method, config.choices(), {**config.options, **(options or {})},
                          dataset=config.dataset)


def resolve_config(config: PipelineConfig) -> PipelineConfig:
    """``config`` with every field range-checked and every axis filled with its resolved knobs.

    The result describes the same method with nothing left implicit: ``config.json`` of a
    run records it, and resolving it again gives the same method.
    """
    check_ranges(config)
    check_shots(config.prompt)
    if config.decoder == "eager" and (config.compile or config.quantize != "none"):
        key = "compile" if config.compile else "quantize"
        raise ConfigError(f"{key}: a knob of the fast decoder; set decoder=fast (or auto) to use it")
    settings = resolve_method_of(config).settings()
    return dataclasses.replace(config, options={}, **{axis: Choice(settings[axis]) for axis in AXES})


def check_shots(prompt: PromptConfig) -> None:
    """``prompt.shots`` is at most the size of its exemplar set (more would silently show them all),
    and the set exists; a :class:`~dynaprag.config.ConfigError` names the key otherwise."""
    sets = exemplar_sets()
    if prompt.exemplars not in sets:
        raise ConfigError(f"prompt.exemplars: unknown exemplar set {prompt.exemplars!r}; choose one of: "
                          f"{', '.join(sorted(sets))}")
    available = len(sets[prompt.exemplars]["exemplars"])
    if prompt.shots > available:
        raise ConfigError(f"prompt.shots: must be <= {available} (the exemplar set {prompt.exemplars!r} has "
                          f"{available}), got {prompt.shots}")


def load_config(path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = (),
                **explicit: Any) -> PipelineConfig:
    """A resolved :class:`PipelineConfig` from an optional YAML/JSON file, then the non-None
    ``explicit`` values (command-line flags such as ``method``), then ``key=value`` overrides."""
    from dynaprag.config import apply_overrides, from_dict, load_file

    config = from_dict(PipelineConfig, load_file(path)) if path else PipelineConfig()
    config = apply_overrides(config, {k: v for k, v in explicit.items() if v is not None})
    return resolve_config(apply_overrides(config, overrides))


def method_names() -> list[str]:
    """Every registered method (dynamic and parametric presets)."""
    return METHODS.names()


def stop_strings() -> tuple[str, ...]:
    """Strings that end an answer; a streaming server holds back text that may turn into one."""
    from dynaprag.dynamic.loop import STOP_STRINGS

    return STOP_STRINGS


class Pipeline:
    """A loaded model and retriever that answer questions with any method; not thread-safe."""

    def __init__(self, config: PipelineConfig, lm, retriever):
        from dynaprag.lm import Generator

        self.config = config
        self.lm = lm
        self.retriever = retriever
        self.generator = Generator(lm, decoder=config.decoder, compile=config.compile,
                                   quantize=None if config.quantize == "none" else config.quantize)
        self._builders: dict[tuple, PromptBuilder] = {}
        self._prefixes: dict[tuple, Any] = {}
        self._methods: OrderedDict[str, Method] = OrderedDict()
        self.prefix_computations = 0
        self.method_resolutions = 0

    @classmethod
    def from_config(cls, config: PipelineConfig, *, lm=None, retriever=None) -> "Pipeline":
        """Load what ``config`` names, reusing an already loaded model and/or retriever when given.

        The method's settings are checked first, so a typo fails before anything loads.
        """
        resolve_config(config)
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
        return self.prefix_of(self.builder(prompt))

    def prefix_of(self, builder) -> Any:
        """The KV cache of ``builder``'s fixed prefix, computed once per distinct prefix and kept."""
        key = tuple(builder.prefix_ids)
        if key not in self._prefixes:
            self._prefixes[key] = self.generator.prefix(list(key))
            self.prefix_computations += 1
        return self._prefixes[key]

    def builder_for(self, method: Method):
        """The prompt builder a method answers with: its injector's own (PRAG answers in the
        template its adapters were trained with) or the pipeline's exemplar prompt."""
        own = getattr(method.injector, "prompt_builder", None)
        return own(self.lm.tokenizer, self.lm.chat_template) if callable(own) else self.builder()

    #: per-call method variants kept besides the configured one (a server's per-request knobs,
    #: a calibration's θ): enough for the few a caller alternates between, never unbounded
    METHODS_KEPT = 8

    def method(self, method: str | None = None, options: Mapping[str, Any] | None = None) -> Method:
        """The resolved method this pipeline runs (or preset ``method``), checked against the model
        and bound to the generator: built once and kept, since its components keep no state across
        questions (per-question state lives in each :class:`~dynaprag.dynamic.loop.QuestionRun`)."""
        from dynaprag.dynamic.component import check_model

        key, configured = self._method_key(method, options), self._method_key(None, None)
        if key in self._methods:
            self._methods.move_to_end(key)
            return self._methods[key]
        resolved = resolve_method_of(self.config, method, options)
        check_model(resolved.components(), self.generator)
        resolved.injector.bind(self.generator)
        self.method_resolutions += 1
        self._methods[key] = resolved
        while len(self._methods) > self.METHODS_KEPT + 1:  # + the configured method
            del self._methods[next(k for k in self._methods if k != configured)]
        return resolved

    def _method_key(self, method: str | None, options: Mapping[str, Any] | None) -> str:
        """What a resolved method depends on: the config's method settings (a caller may swap
        ``pipeline.config``, e.g. for another dataset's preset settings) and the call's overrides."""
        cfg = self.config
        call = [None if method in (None, cfg.method) else method, dict(options or {})]
        return json.dumps([cfg.method, cfg.dataset, cfg.choices(), cfg.options, *call], sort_keys=True, default=str)

    def method_for_request(self, method: str | None, options: Mapping[str, Any]) -> Method:
        """:meth:`method` for an untrusted caller: only numeric knobs may be set (see ``check_tunable``)."""
        from dynaprag.dynamic.methods import check_tunable

        resolved = self.method(method, options)
        check_tunable(resolved, options)
        return resolved

    def loop(self, method: str | None = None, options: Mapping[str, Any] | None = None,
             max_new_tokens: int | None = None):
        """The :class:`~dynaprag.dynamic.loop.DynamicLoop` that answers with the configured (or given) method."""
        from dynaprag.dynamic.loop import DynamicLoop

        resolved = self.method(method, options)
        builder = self.builder_for(resolved)
        return DynamicLoop(self.generator, builder, self.retriever, resolved,
                           self.config.loop_config(max_new_tokens or None), prefix=lambda: self.prefix_of(builder))

    def answer_many(self, questions: Sequence[str], *, batch_size: int = 8, method: str | None = None,
                    options: dict | None = None, max_new_tokens: int | None = None,
                    on_event: Callable[[int, dict], None] | None = None,
                    more: Callable[[int], Sequence[str]] | None = None):
        """``(index, Answer or exception)`` for each question, in the order they finish, decoding up to
        ``batch_size`` questions together (:class:`~dynaprag.dynamic.batch.BatchLoop`).

        ``more(free)`` may hand over up to ``free`` late (non-empty) questions whenever a slot is
        free; they join the running batch with the next indices (``len(questions)``, ...). The
        server passes the requests that arrive while a batch runs.

        Each answer is what :meth:`answer` gives for that question alone (greedy decoding; float32
        differences of batching only matter at near ties, docs/dynamic.md). A question that raises
        yields its exception and the others go on. Methods whose injector changes weights (PRAG,
        DyPRAG) decode one question at a time.
        """
        from dynaprag.dynamic.batch import BatchLoop

        empty = [i for i, q in enumerate(questions) if not q or not q.strip()]
        if empty:
            raise ValueError(f"question {empty[0]} is empty")
        batch = BatchLoop(self.loop(method, options, max_new_tokens), batch_size=batch_size)
        return batch.answers(questions, on_event=on_event, more=more)

    def answer(self, question: str, *, method: str | None = None, options: dict | None = None,
               on_event: Callable[[dict], None] | None = None, max_new_tokens: int | None = None) -> Answer:
        """Answer ``question`` with the configured (or given) method; the trace is filled in.

        ``options`` override the method's knobs for this call only (``{"theta": 0.5}`` or
        ``{"trigger.theta": 0.5}``); ``on_event`` receives token, retrieval and rollback events
        while decoding (the HTTP server streams them); ``max_new_tokens`` overrides the answer
        budget for this call.
        """
        if not question or not question.strip():
            raise ValueError("question is empty")
        sink = None if on_event is None else (lambda _index, event: on_event(event))
        answers = self.answer_many([question], batch_size=1, method=method, options=options,
                                   max_new_tokens=max_new_tokens, on_event=sink)
        try:
            (_, result), = answers
        finally:
            answers.close()
        if isinstance(result, BaseException):
            raise result
        return result

    def extract(self, question: str, answer: Answer) -> Answer:
        """``answer`` with its short answer read the one way every method is scored.

        An answer without "So the answer is" gets a short forced continuation from the exemplar
        prompt without passages or adapters (:func:`dynaprag.lm.extraction.force_answer`, as the
        DRAGIN repository scores); its tokens and seconds are added to the trace's costs and the
        trace's ``extraction`` keeps the raw short answer. A method whose protocol defines its
        answer (Search-R1's answer tag, :class:`~dynaprag.dynamic.draft.FinalAnswer`) keeps it.
        """
        from dynaprag.lm.extraction import force_answer, has_marker

        if answer.trace.extraction.get("by_protocol"):
            return answer  # the method's protocol gave its answer (FinalAnswer.by_protocol): scored as is
        builder = self.builder()
        forced = force_answer(self.generator, builder, question, answer.text,
                              prefix=None if has_marker(answer.text) else self.prefix_of(builder))
        trace = answer.trace
        trace.extraction = forced.to_dict()
        trace.forward_passes += forced.forward_passes
        trace.prompt_tokens += forced.prompt_tokens
        trace.generated_tokens += forced.generated_tokens
        trace.seconds += forced.seconds
        return Answer(text=answer.text, short=forced.short, trace=trace)


__all__ = ["ConfigError", "Pipeline", "PipelineConfig", "load_config", "method_names", "resolve_config", "resolve_method_of",
           "stop_strings"]
