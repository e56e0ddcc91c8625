"""The data of step-wise decoding: knobs, per-token outputs, sequence state, and the context limit.

Kept apart from :mod:`dynaprag.lm.generator`, the engine that fills them, which re-exports them:
triggers, batching and traces read these types, and the engine's file stays about decoding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from dynaprag.lm.signals import Signal


class PromptTooLong(ValueError):
    """A prompt (or prompt + answer so far) that does not fit the model's context; says how to shorten it."""

    def __init__(self, tokens: int, limit: int, model: str = "", what: str = "prompt"):
        self.tokens, self.limit = tokens, limit
        super().__init__(
            f"{what} of {tokens} tokens exceeds the context of {limit} tokens of model {model or '?'}; "
            "use a shorter question, fewer passages (k) or fewer shots (prompt.shots)")


#: config attributes that hold a model's context length, most specific first
_CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(config) -> int | None:
    """The longest sequence the model was built for (tokens), or ``None`` when its config says none.

    Llama/SmolLM2, Qwen2 and Gemma store it as ``max_position_embeddings``; multimodal configs
    (Gemma 3) keep it on their text config; GPT-2-style configs call it ``n_positions``.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for source in (text, config):
        for name in _CONTEXT_ATTRIBUTES:
            value = getattr(source, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


@dataclass
class GenerationConfig:
    """Decoding knobs; greedy by default as the DRAGIN/FLARE line of work decodes."""

    max_new_tokens: int = field(default=128, metadata={"help": "token budget for this call"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    seed: int | None = field(default=None, metadata={"help": "seed for sampling (determinism)"})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "stop strings; text is cut before them"})
    top_alternatives: int = field(default=0, metadata={"help": "how many alternatives to report per token"})
    signals: tuple[Signal, ...] = field(default=(), metadata={
        "help": "white-box signals to read from each step's forward pass (dynaprag.lm.signals)"})
    stop_at_eos: bool = field(default=True, metadata={"help": "stop at the model's end-of-turn tokens"})


@dataclass
class StepOutput:
    """One generated token and the signals of the forward pass that predicted it.

    ``signals`` maps each requested :class:`~dynaprag.lm.signals.Signal`'s key to its value,
    which belongs to the *predicting* position (``position - 1``): the attention row is how the
    model looked at positions ``0 .. position-1`` when choosing this token. The row of a
    token's own position arrives with the next step.
    """

    position: int
    token_id: int
    text: str
    logprob: float
    entropy: float
    top_ids: list[int] = field(default_factory=list)
    top_logprobs: list[float] = field(default_factory=list)
    signals: dict[str, Any] = field(default_factory=dict)

    @property
    def prob(self) -> float:
        import torch  # float32 like the log-prob it came from (thresholds compare it)

        return float(torch.tensor(self.logprob).exp())


@dataclass
class DecodeCounters:
    """Costs that traces and benchmarks report."""

    forward_passes: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0


@dataclass
class DecodeState:
    """A sequence being decoded: token ids, the KV cache of its first ``fed`` tokens, the next logits
    and the signals read with them."""

    ids: list[int]
    generated: list[bool]
    cache: object
    fed: int = 0
    logits: torch.Tensor | None = None
    signals: dict[str, Any] = field(default_factory=dict)
    counters: DecodeCounters = field(default_factory=DecodeCounters)

    def __len__(self) -> int:
        return len(self.ids)

    def advance(self, cache, logits: torch.Tensor, signals: dict[str, Any], fed: int) -> None:
        """Take the result of a forward pass that fed the next ``fed`` tokens (batch 1 or one row of B)."""
        self.cache, self.logits, self.signals = cache, logits, signals
        self.counters.forward_passes += 1
        self.counters.prompt_tokens += sum(1 for g in self.generated[self.fed: self.fed + fed] if not g)
        self.fed += fed


@dataclass
class PrefixCache:
    """The KV cache of a fixed prompt prefix, computed once and copied for each new prompt."""

    ids: list[int]
    cache: object
    logits: torch.Tensor


@dataclass
class Generation:
    """The result of :meth:`Generator.generate`: steps in order and the text (stop string cut)."""

    steps: list[StepOutput]
    text: str
    stopped_by: str

    @property
    def token_ids(self) -> list[int]:
        return [s.token_id for s in self.steps]
