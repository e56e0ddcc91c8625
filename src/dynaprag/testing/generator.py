"""A scripted decoder with the interface of :class:`dynaprag.lm.Generator`, for unit tests.

The answer is a fixed script of :class:`ScriptedStep` tokens, each with the log-prob, entropy
and map of white-box signals (:mod:`dynaprag.lm.signals`, by key) a test wants a component
to see; a step of a signal nobody scripted has no value for it, as a model that gives none. The generator reads the answer
position from the prompt (:class:`ScriptedPromptBuilder` marks where the answer starts), so a
rollback to token ``keep`` regenerates the script from ``keep``; with passages in the prompt
it follows ``with_context`` instead, when given. A side prompt without an answer start (e.g.
Self-RAG's segment per passage, :meth:`~dynaprag.dynamic.probe.Probe.complete`) follows the
``side_scripts`` entry whose key it contains. Words are tokens: ``encode`` splits text into
whitespace-led pieces.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import torch

from dynaprag.lm.decoding import DecodeState, Generation, GenerationConfig, PrefixCache, StepOutput
from dynaprag.lm.signals import HiddenState
from dynaprag.lm.sampling import SampledSteps

EOS, PREFIX, CONTEXT, ANSWER = 0, 1, 2, 3
_PIECE = re.compile(r"\s*\S+|\s+")


@dataclass
class ScriptedStep:
    """One scripted answer token and the signals of the pass that produced it.

    ``signals`` maps a signal's key to the value the step reports for it, exactly as the
    generator would read it. Two shorthands build the common ones: ``attend`` (answer index ->
    attention weight it receives; every other position gets 0.01) makes the ``attention`` row
    over the whole sequence, and ``hidden`` the hidden state of every requested layer.
    """

    text: str
    logprob: float = -0.05
    entropy: float = 0.5
    attend: Mapping[int, float] = field(default_factory=dict)
    hidden: Sequence[float] | None = None
    alternatives: Mapping[str, float] = field(default_factory=dict)  # other tokens' log-probs here (top_ids)
    signals: Mapping[str, Any] = field(default_factory=dict)


class _Tokenizer:
    """The part of a Hugging Face tokenizer the loop and the probe use."""

    unk_token_id = -1
    chat_template = None

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.vocab.get(token, self.unk_token_id)


class ScriptedGenerator:
    """Emits ``script`` (or ``with_context`` once passages are in the prompt), then end of sequence.

    ``special_tokens`` are vocabulary entries that are never generated (e.g. Self-RAG's
    reflection tokens); ``next_token_logprobs`` gives some tokens a log-prob for
    :meth:`next_logprobs` (all others share the rest); ``sample_spread`` scales how much the
    hidden states of sampled continuations disagree (SeaKR's uncertainty). ``side_scripts``
    maps a piece of text to the continuation of any side prompt (one with no answer start)
    that contains it, the first key found winning; other side prompts end at once. A step
    asked for ``top_alternatives`` lists its own token and its ``alternatives``, most probable
    first.
    """

    def __init__(self, script: Sequence[ScriptedStep], *, with_context: Sequence[ScriptedStep] | None = None,
                 num_hidden_layers: int = 4, hidden_size: int = 8, special_tokens: Sequence[str] = (),
                 next_token_logprobs: Mapping[str, float] | None = None, sample_spread: float = 1.0,
                 side_scripts: Mapping[str, Sequence[ScriptedStep]] | None = None):
        self.script, self.with_context = list(script), None if with_context is None else list(with_context)
        self.side_scripts = {key: list(steps) for key, steps in (side_scripts or {}).items()}
        self.num_hidden_layers, self.hidden_size = num_hidden_layers, hidden_size
        self.vocab: dict[str, int] = {"</s>": EOS, "<prefix>": PREFIX, "<context>": CONTEXT, "<answer>": ANSWER}
        self.texts: dict[int, str] = {EOS: "", PREFIX: "", CONTEXT: "", ANSWER: ""}
        for token in special_tokens:
            self._id(token)
        self.next_token_logprobs = dict(next_token_logprobs or {})
        self.sample_spread = sample_spread
        self.tokenizer = _Tokenizer(self.vocab)
        self.lm = SimpleNamespace(chat_template=False, name="scripted")
        self.eos_ids = {EOS}
        self.calls: dict[str, int] = {"step": 0, "sample_steps": 0, "next_logprobs": 0}

    # -- vocabulary ------------------------------------------------------------------------
    def _id(self, piece: str) -> int:
        if piece not in self.vocab:
            self.vocab[piece] = len(self.vocab)
            self.texts[self.vocab[piece]] = piece
        return self.vocab[piece]

    def encode(self, text: str) -> list[int]:
        return [self._id(p) for p in _PIECE.findall(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.texts[i] for i in ids)

    def has_token(self, token: str) -> bool:
        return token in self.vocab

    space_marker = " "
    newline_id = -2  # words are never split at a newline token

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.texts[i] for i in ids]

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        return [self.texts[i] for i in ids]

    def attention_of(self, ids: Sequence[int], rows: Sequence[int] | None = None, heads: int = 2) -> torch.Tensor:
        """Causal uniform attention ``[heads, len(rows), n]`` (each row spreads evenly over its prefix)."""
        n = len(ids)
        full = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1).unsqueeze(1)
        picked = full if rows is None else full[list(rows)]
        return picked.expand(heads, *picked.shape).clone()

    def room(self, state: DecodeState) -> None:
        """No context limit."""
        return None

    # -- states ----------------------------------------------------------------------------
    def prefix(self, ids: list[int]) -> PrefixCache:
        return PrefixCache(ids=list(ids), cache=None, logits=torch.zeros(1))

    def start(self, ids: list[int], prefix: PrefixCache | None = None) -> DecodeState:
        state = DecodeState(ids=list(ids), generated=[False] * len(ids), cache=None)
        state.counters.prompt_tokens += len(ids) - (len(prefix.ids) if prefix is not None else 0)
        return state

    def extend(self, state: DecodeState, ids: list[int]) -> None:
        state.ids.extend(ids)
        state.generated.extend([False] * len(ids))
        state.counters.prompt_tokens += len(ids)

    def truncate(self, state: DecodeState, length: int) -> None:
        del state.ids[length:]
        del state.generated[length:]

    @staticmethod
    def _answer_start(state: DecodeState) -> int:
        return len(state.ids) - state.ids[::-1].index(ANSWER)

    def _script_for(self, state: DecodeState) -> list[ScriptedStep]:
        return self.with_context if self.with_context is not None and CONTEXT in state.ids else self.script

    def _side_script(self, state: DecodeState) -> list[ScriptedStep]:
        prompt = self.decode([i for i, generated in zip(state.ids, state.generated) if not generated])
        return next((steps for key, steps in self.side_scripts.items() if key in prompt), [])

    def _top(self, scripted: ScriptedStep | None, token: int, k: int) -> tuple[list[int], list[float]]:
        if k <= 0:
            return [], []
        listed = {token: 0.0 if scripted is None else scripted.logprob}
        for text, lp in ({} if scripted is None else scripted.alternatives).items():
            listed[self._id(text)] = lp
        ranked = sorted(listed.items(), key=lambda item: -item[1])[:k]
        return [i for i, _ in ranked], [lp for _, lp in ranked]

    # -- decoding --------------------------------------------------------------------------
    def step(self, state: DecodeState, config: GenerationConfig, rng=None) -> StepOutput:
        self.calls["step"] += 1
        if ANSWER in state.ids:
            start = self._answer_start(state)
            position, script = len(state.ids) - start, self._script_for(state)
        else:
            start = len(state.ids) - sum(state.generated)
            position, script = sum(state.generated), self._side_script(state)
        scripted = script[position] if position < len(script) else None
        token = EOS if scripted is None else self._id(scripted.text)
        top_ids, top_logprobs = self._top(scripted, token, config.top_alternatives)
        out = StepOutput(position=len(state.ids), token_id=token, text="", top_ids=top_ids, top_logprobs=top_logprobs,
                         logprob=0.0 if scripted is None else scripted.logprob,
                         entropy=0.0 if scripted is None else scripted.entropy,
                         signals=self._signals(scripted, state, start, config))
        state.ids.append(token)
        state.generated.append(True)
        state.counters.forward_passes += 1
        state.counters.generated_tokens += 1
        return out

    @staticmethod
    def _signals(scripted: ScriptedStep | None, state: DecodeState, start: int, config: GenerationConfig) -> dict:
        """The requested signals' values at this step: scripted ones, then the shorthands."""
        values: dict[str, Any] = {}
        for signal in config.signals:
            if scripted is not None and signal.key in scripted.signals:
                values[signal.key] = scripted.signals[signal.key]
            elif signal.key == "attention":
                row = torch.full((len(state.ids),), 0.01)
                for j, w in ({} if scripted is None else scripted.attend).items():
                    if start + j < len(state.ids):
                        row[start + j] = w
                values[signal.key] = row
            elif isinstance(signal, HiddenState) and scripted is not None and scripted.hidden is not None:
                values[signal.key] = torch.tensor(list(scripted.hidden), dtype=torch.float32)
        return values

    def next_logprobs(self, state: DecodeState, config: GenerationConfig | None = None) -> torch.Tensor:
        """Log-probs over the vocabulary: the configured ones, the rest spread evenly."""
        self.calls["next_logprobs"] += 1
        ids = {token: self._id(token) for token in self.next_token_logprobs}
        logits = torch.full((len(self.vocab),), -20.0)
        for token, lp in self.next_token_logprobs.items():
            logits[ids[token]] = lp
        return torch.log_softmax(logits, dim=-1)

    def sample_steps(self, state: DecodeState, k: int, spec) -> SampledSteps:
        """``k`` one-token samples (and a greedy one if asked) whose end embeddings spread by ``sample_spread``."""
        self.calls["sample_steps"] = self.calls.get("sample_steps", 0) + 1
        rng = torch.Generator().manual_seed(spec.seed or 0)
        base = torch.randn(self.hidden_size, generator=rng)
        rows = torch.stack([base + self.sample_spread * torch.randn(self.hidden_size, generator=rng)
                            for _ in range(k)]) if k else torch.zeros(0, self.hidden_size)
        step = StepOutput(position=len(state.ids), token_id=self._id(" ."), text=" .", logprob=-0.1, entropy=0.5)
        samples = [Generation(steps=[step], text=" .", stopped_by="stop") for _ in range(k)]
        greedy = Generation(steps=[step], text=" .", stopped_by="stop") if spec.greedy else None
        return SampledSteps(greedy=greedy, samples=samples, embeddings=rows)


class ScriptedPromptBuilder:
    """Prompts for :class:`ScriptedGenerator`: ``<prefix> [<context> passages] Question: q <answer> answer``."""

    def __init__(self, generator: ScriptedGenerator):
        self.gen = generator
        self.prefix_ids = [PREFIX]

    def question_ids(self, question: str) -> list[int]:
        return self.gen.encode(f" Question: {question}") + [ANSWER]

    def build(self, question: str, passages, answer_ids: Sequence[int]) -> list[int]:
        context = [CONTEXT] + self.gen.encode(" " + " ".join(p.text for p in passages)) if passages else []
        return self.prefix_ids + context + self.question_ids(question) + list(answer_ids)
