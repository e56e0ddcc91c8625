"""White-box signals: the pure per-token functions, and the one contract every captured signal keeps.

The pure functions (tested on hand-made arrays) are the quantities of every step: the
log-probability of the chosen token, the Shannon entropy of the full next-token distribution
(DRAGIN Eq. 2), top alternatives, the sampling distribution. The generator computes them from
the logits of each step and they stay fields of :class:`~dynaprag.lm.decoding.StepOutput`.

Any other signal (the last layer's attention row, a layer's hidden state, whatever a new paper
reads) is one :class:`Signal` object that says everything about itself, so that the generator,
the batch stepper, the loop, the draft and the test double never change for a new one:

- ``key``: its name in the maps that carry it (``StepOutput.signals``, ``DecodeState.signals``,
  ``Draft.signals``);
- :meth:`Signal.missing`: why a model cannot give it (``None``: it can), asked before any question;
- :meth:`Signal.forward_kwargs` and :meth:`Signal.hook`: what the forward pass must be asked for
  and what must watch it (a forward hook, an attention implementation switched for the pass);
- :meth:`Signal.read`: its value for one row of the pass's output, the same code at batch 1
  (row 0) and batch B (row b, whose keys start at ``start`` in the left-padded batch);
- :meth:`Signal.file`: what the draft keeps of it for an answer token, given where the
  question and the answer sit in the sequence (:class:`Layout`), so that it survives a change
  of the knowledge slot.

A component declares the signals it reads (``reads = (ATTENTION,)``); the loop captures the
union. :func:`forward` and :func:`read_row` are the capture both decoding paths share.

>>> class LogitNorm(Signal):                     # a new signal: one class, nothing else changes
...     key = "logit-norm"
...     def read(self, out, hooked, row, start):
...         return float(out.logits[row, -1].float().norm())
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, ContextManager, Sequence

import torch


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities in float32, whatever the model's dtype (bf16 log-probs are too coarse)."""
    return torch.log_softmax(logits.float(), dim=-1)


def entropy(logprobs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats, ``-sum p log p`` over the last axis; zero-probability terms add 0."""
    probs = logprobs.exp()
    return -(probs * torch.where(probs > 0, logprobs, torch.zeros_like(logprobs))).sum(-1)


def top_alternatives(logprobs: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
    """The ``k`` most probable token ids of a 1-D log-prob vector and their log-probs."""
    if k <= 0:
        return [], []
    values, ids = torch.topk(logprobs, k)
    return ids.tolist(), values.tolist()


def apply_sampling(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Log-probs of the sampling distribution after temperature and nucleus (top-p) filtering."""
    scaled = logits.float() / max(temperature, 1e-6)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.log_softmax(scaled, dim=-1)


@dataclass(frozen=True)
class Layout:
    """Where the question slot and the answer start in the sequence a signal was read from."""

    question: int
    answer: int


class Signal:
    """One white-box signal of the forward pass that predicts each token; see the module docstring.

    Values belong to the *predicting* position: the value that comes with token ``i`` was read
    at the position before it. Subclasses set ``key`` and override :meth:`read`; the rest has
    defaults for a signal that any model gives and the draft keeps as it is.
    """

    key: ClassVar[str] = ""
    solo_pass: ClassVar[bool] = False  # readable only from a pass over one new token (prefill splits)

    def missing(self, generator) -> str | None:
        """Why ``generator`` cannot give this signal, as "reads ..., which ..." (``None``: it can)."""
        return None

    def forward_kwargs(self) -> dict[str, Any]:
        """Arguments the model's forward pass needs for this signal (e.g. ``output_hidden_states``)."""
        return {}

    def hook(self, generator) -> ContextManager[Any]:
        """A context that watches one forward pass; what it yields is handed to :meth:`read`."""
        return contextlib.nullcontext()

    def read(self, out, hooked, row: int, start: int) -> Any:
        """The value for batch row ``row`` of the pass's output ``out`` (its keys start at ``start``)."""
        raise NotImplementedError

    def file(self, value, layout: Layout, index: int) -> Any:
        """What the draft keeps for answer token ``index`` (default: the value as read)."""
        return value

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.key == other.key

    def __hash__(self) -> int:
        return hash((type(self), self.key))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r})"


@dataclass(frozen=True)
class AttentionRow:
    """The attention a position paid to the answer before it and to the question slot."""

    answer: torch.Tensor
    question: torch.Tensor


class Attention(Signal):
    """The last decoder layer's attention row of the predicting position, averaged over heads.

    Only the last layer runs eager attention for the pass (sdpa returns no weights), through
    :class:`~dynaprag.lm.attention.LastLayerAttentionTap`; a prefill therefore feeds its last
    token alone (``solo_pass``), since the eager layer would need an explicit causal mask. The
    draft keeps, for answer token ``i``, the row of the position before it over the answer
    tokens ``0 .. i-1`` and over the question slot; token ``j``'s own row is filed under
    ``j + 1`` (it arrives with the next token).
    """

    key = "attention"
    solo_pass = True

    def missing(self, generator) -> str | None:
        model = getattr(generator, "model", None)
        if model is None or _tap(generator).module is not None:
            return None  # a scripted double scripts every signal
        return "reads attention rows, which this model/backend does not expose"

    def hook(self, generator):
        return _tap(generator)

    def read(self, out, hooked, row, start):
        weights = hooked.weights
        return None if weights is None else weights[row, :, -1, start:].float().mean(0)

    def file(self, value, layout, index):
        a, q = layout.answer, layout.question
        return AttentionRow(answer=value[a: a + index].clone(), question=value[q: a].clone())


def _tap(generator):
    """The generator's one last-layer attention tap (its forward hook is registered once per generator)."""
    from dynaprag.lm.attention import LastLayerAttentionTap

    taps = generator.__dict__.setdefault("signal_hooks", {})
    if "attention" not in taps:
        taps["attention"] = LastLayerAttentionTap(generator.model)
    return taps["attention"]


class HiddenState(Signal):
    """The hidden state of the predicting position at ``hidden_states[layer]`` (0 = embeddings)."""

    def __init__(self, layer: int):
        self.layer = int(layer)

    @property
    def key(self) -> str:  # type: ignore[override]
        return f"hidden:{self.layer}"

    def missing(self, generator) -> str | None:
        layers = getattr(generator, "num_hidden_layers", None)
        if layers is not None and not -layers - 1 <= self.layer <= layers:
            return f"reads hidden layer {self.layer}; the model has {layers} layers"
        return None

    def forward_kwargs(self):
        return {"output_hidden_states": True}

    def read(self, out, hooked, row, start):
        return out.hidden_states[self.layer][row, -1].float()


ATTENTION = Attention()
"""The attention signal every attention-reading component declares."""


def forward(generator, signals: Sequence[Signal], **kwargs) -> tuple[Any, list[Any]]:
    """Run ``generator.model(**kwargs)`` watched by ``signals``: ``(out, hooked)``.

    ``hooked`` holds what each signal's :meth:`Signal.hook` yielded, in order, for
    :func:`read_row` (hooks keep what they saw after their context closes).
    """
    extra: dict[str, Any] = {}
    for signal in signals:
        extra.update(signal.forward_kwargs())
    with contextlib.ExitStack() as stack:
        hooked = [stack.enter_context(signal.hook(generator)) for signal in signals]
        out = generator.model(**kwargs, **extra)
    return out, hooked


def read_row(signals: Sequence[Signal], out, hooked, row: int, start: int = 0) -> dict[str, Any]:
    """Every signal's value for one row of a pass (batch 1: row 0, start 0)."""
    return {signal.key: signal.read(out, h, row, start) for signal, h in zip(signals, hooked)}


def union(groups: Sequence[Sequence[Signal]]) -> tuple[Signal, ...]:
    """The signals of several components, each once, in a stable order (attention first, then by key)."""
    seen: dict[Signal, None] = {}
    for group in groups:
        for signal in group:
            seen.setdefault(signal, None)
    return tuple(sorted(seen, key=lambda s: (s.key != "attention", s.key)))
