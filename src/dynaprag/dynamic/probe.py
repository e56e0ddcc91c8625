"""Model access for components that need more than the decoding signals.

SeaKR samples each reasoning step 20 times and reads an MLP output per sample
(:meth:`Probe.sample_step`); Self-RAG reads the next-token distribution and generates one
segment per passage in its own prompt format (:meth:`Probe.complete`); the prompted Self-RAG
variant asks the model a side question. Those components declare ``needs_probe = True`` and
receive a :class:`Probe` bound to the question being answered; nothing else can reach the
model, so a component's dependency on it is visible in its class.

:class:`Probe` is the protocol; the loop builds a :class:`LoopProbe` over the real generator,
and :mod:`dynaprag.testing` has a scripted one for unit tests.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Protocol, Sequence

import torch

from dynaprag.corpus import Passage
from dynaprag.lm.generator import Generation, GenerationConfig
from dynaprag.lm.sampling import SampledSteps, StepSampling, fork


class Probe(Protocol):
    """What a component may ask of the model while a question is answered."""

    middle_layer: int  # hidden_states index of the model's middle layer

    def sample_step(self, k: int, spec: StepSampling, passages: Sequence[Passage] | None = None,
                    upto: int | None = None, answer_text: str | None = None) -> SampledSteps:
        """``k`` samples of the next step as one batch, each with its end-token MLP output (SeaKR).

        ``passages=None`` continues the kept answer's first ``upto`` tokens (default: all) under
        the current knowledge slot; a sequence of passages builds a fresh prompt with them in the
        slot, followed by those answer tokens, or by ``answer_text`` when given.
        """

    def next_logprobs(self) -> torch.Tensor:
        """Log-probs of the next answer token."""

    def ask(self, message: str) -> torch.Tensor:
        """Next-token log-probs after a side prompt (a fresh conversation)."""

    def complete(self, prompt: str, max_tokens: int, top_logprobs: int = 0) -> Generation:
        """Greedy continuation of ``prompt`` taken as is (no template, exemplars or knowledge slot).

        The prompt starts with the tokenizer's BOS when the tokenizer adds one, as a plain
        ``tokenizer(prompt)`` call does; decoding stops after the end-of-sequence token (which is
        kept as the last step) or ``max_tokens`` steps. Each step lists its ``top_logprobs``
        most probable tokens (``top_ids``/``top_logprobs``), as vLLM's ``logprobs=N`` reports them.
        """

    def answer_with(self, passages: Sequence[Passage], max_tokens: int, stop: tuple[str, ...] = ()) -> Generation:
        """A fresh greedy answer to the question with ``passages`` in the knowledge slot (IRCoT's
        reader), to end of turn, a ``stop`` string (cut off) or ``max_tokens``."""

    def token_id(self, token: str) -> int | None:
        """The id of a vocabulary token, or None when the tokenizer has no such token."""

    space_marker: str  # the piece character that starts a word (``Ġ``, ``▁``)
    newline_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens)."""

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """Vocabulary pieces of ``ids`` (space markers kept)."""

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """Each id decoded alone (``tokenizer.decode([id])``), as the DRAGIN repository lists tokens."""

    def attention_of(self, ids: Sequence[int], rows: Sequence[int] | None = None) -> torch.Tensor:
        """Last-layer attention rows ``[heads, len(rows), n]`` of a fresh forward pass over ``ids``
        alone (``rows=None``: all ``n`` rows; ask only for the rows you read, memory is their size)."""


class LoopProbe:
    """A :class:`Probe` over the real generator, bound to one question of a :class:`DynamicLoop`."""

    def __init__(self, loop, question: str, seed: int):
        # A weak reference: the run owns its probe, and a strong one back would make a cycle that
        # only the cyclic GC frees, so every finished question's KV cache and per-step logits
        # (~70 MB on qwen2.5-coder-0.5b) piled up between rare gen-2 collections.
        try:
            self._loop = weakref.proxy(loop)
        except TypeError:  # an object without weak references (a test's namespace) owns no probe
            self._loop = loop
        self._question, self._seed = question, seed
        self.middle_layer = int(loop.gen.num_hidden_layers) // 2

    def sample_step(self, k, spec, passages=None, upto=None, answer_text=None):
        loop = self._loop
        upto = len(loop.answer) if upto is None else upto
        if passages is None and answer_text is None:
            state = fork(loop.gen, loop.state, len(loop.state.ids) - len(loop.answer) + upto)
            loop.states.append(state)
        else:
            answer = loop.gen.encode(answer_text) if answer_text is not None else loop.answer[:upto]
            state = loop.start(loop.builder.build(self._question, passages or (), answer))
        return loop.gen.sample_steps(state, k, dataclasses.replace(spec, seed=self._seed))

    def next_logprobs(self):
        return self._loop.gen.next_logprobs(self._loop.state, self._loop.gcfg)

    def ask(self, message):
        gen = self._loop.gen
        tok = gen.tokenizer
        if gen.lm.chat_template and getattr(tok, "chat_template", None):
            message = tok.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                              add_generation_prompt=True)
        else:
            message += "\nAnswer:"
        state = gen.start(gen.encode(message))
        self._loop.states.append(state)
        return gen.next_logprobs(state)

    def complete(self, prompt, max_tokens, top_logprobs=0):
        gen = self._loop.gen
        tok = gen.tokenizer
        ids = gen.encode(prompt)
        bos = getattr(tok, "bos_token_id", None)
        if getattr(tok, "add_bos_token", False) and bos is not None:
            ids = [bos] + ids
        state = gen.start(ids)
        self._loop.states.append(state)
        cfg = GenerationConfig(max_new_tokens=max_tokens, top_alternatives=top_logprobs)
        room = gen.room(state)
        steps = []
        for _ in range(max_tokens if room is None else min(max_tokens, room)):
            steps.append(gen.step(state, cfg))
            if steps[-1].token_id in gen.eos_ids:
                return Generation(steps=steps, text=gen.decode([s.token_id for s in steps[:-1]]), stopped_by="eos")
        stopped_by = "context" if room is not None and room < max_tokens else "max_tokens"
        return Generation(steps=steps, text=gen.decode([s.token_id for s in steps]), stopped_by=stopped_by)

    def answer_with(self, passages, max_tokens, stop=()):
        loop = self._loop
        gen = loop.gen
        state = loop.start(loop.builder.build(self._question, passages, ()))
        cfg = GenerationConfig(max_new_tokens=1)
        room = gen.room(state)
        steps, text = [], ""
        for _ in range(max_tokens if room is None else min(max_tokens, room)):
            steps.append(gen.step(state, cfg))
            if steps[-1].token_id in gen.eos_ids:
                return Generation(steps=steps, text=text, stopped_by="eos")
            text = gen.decode([s.token_id for s in steps])
            hit = next((s for s in stop if s in text), None)
            if hit is not None:
                return Generation(steps=steps, text=text[: text.index(hit)], stopped_by=f"stop:{hit}")
        return Generation(steps=steps, text=text, stopped_by="max_tokens")

    def token_id(self, token):
        return vocabulary_id(self._loop.gen.tokenizer, token)

    @property
    def space_marker(self):
        return self._loop.gen.space_marker

    @property
    def newline_id(self):
        return self._loop.gen.newline_id

    def encode(self, text):
        return self._loop.gen.encode(text)

    def pieces(self, ids):
        return self._loop.gen.pieces(list(ids))

    def token_texts(self, ids):
        return [self._loop.gen.decode([i]) for i in ids]

    def attention_of(self, ids, rows=None):
        self._loop.extra_passes += 1
        return self._loop.gen.attention_of(list(ids), rows)


def vocabulary_id(tokenizer, token: str) -> int | None:
    """The id of ``token`` in ``tokenizer``'s vocabulary, None when it is not a token of its own."""
    tid = tokenizer.convert_tokens_to_ids(token)
    return tid if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id else None
