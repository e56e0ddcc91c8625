"""White-box step-wise decoding with a KV cache: the one place the model is run token by token.

Each generated token yields its id, text, log-prob, entropy of the full distribution and top
alternatives, and the white-box signals the caller asks for (:mod:`dynaprag.lm.signals`: the
last layer's head-averaged attention row, hidden states of chosen layers, any new
:class:`~dynaprag.lm.signals.Signal`), all from the forward pass that produced it (no extra
pass to read signals). Batch 1 and :class:`~dynaprag.lm.batch.BatchStepper` capture and store
them with the same code (:func:`~dynaprag.lm.signals.forward`, :meth:`DecodeState.advance`).
A fresh pass over a text (:meth:`Generator.attention_of`, DRAGIN's) computes only the rows a
component reads, in chunks (:mod:`dynaprag.lm.attention`), so its memory is linear in the text.
Before every forward pass the generator calls its ``interrupt`` (when set), so a server stops
work nobody waits for within one pass.

>>> from dynaprag.lm.models import load_model
>>> gen = Generator(load_model())                                  # doctest: +SKIP
>>> state = gen.start(gen.encode("The capital of France is"))      # doctest: +SKIP
>>> gen.generate(state, GenerationConfig(max_new_tokens=5)).text   # doctest: +SKIP
' Paris.'

Two paths run the model (``Generator(lm, decoder=...)``): transformers' forward pass with a
``DynamicCache`` per state (``eager``, the default), or the fast decoder (``fast``,
:mod:`dynaprag.lm.fast`: the states hold rows of one static cache, a rollback is an index move,
a batched step is one pass over the rows in place). Both fill the same :class:`StepOutput`.

Sequences never outgrow the model's context (:func:`context_length`): :meth:`Generator.start`
and :meth:`Generator.extend`, through which every prompt passes, refuse a longer prompt with
:class:`PromptTooLong` before the model runs (a 20,000-word question once ran 400 s at 2.7 GB
to no output). The answer budget ``max_new_tokens`` is deliberately *not* reserved: answers
usually end at EOS far below the budget, so reserving it would refuse prompts that can be
answered. Instead decoding stops at the context's end (``Generation.stopped_by == "context"``),
and a :meth:`Generator.step` that would run past it raises :class:`PromptTooLong`.
"""
from __future__ import annotations

import copy
import inspect
import logging
import weakref
from typing import Callable, Iterator, Sequence

import torch

from dynaprag.lm import signals
from dynaprag.lm.attention import AttentionRowsTap
from dynaprag.lm.decoding import (DecodeCounters, DecodeState, Generation, GenerationConfig, PrefixCache,
                                  PromptTooLong, StepOutput, context_length)
from dynaprag.lm.fast.rows import DECODERS, FastRow, RowPool, choose_decoder, dynamic_cache, layers_of
from dynaprag.lm.models import LoadedModel

log = logging.getLogger(__name__)

# the decoding data types live in dynaprag.lm.decoding; they are imported from here too
__all__ = ["DECODERS", "DecodeCounters", "DecodeState", "Generation", "GenerationConfig", "Generator", "PrefixCache",
           "PromptTooLong", "StepOutput", "choose_decoder", "context_length"]


def _check_before_every_pass(gen: "Generator") -> None:
    """Call ``gen.interrupt()`` (when set) before every forward pass of its model.

    A forward pre-hook on the model itself, so no pass escapes it: decoding steps, prefills,
    batched steps, SeaKR's sample batches, attention passes. A server sets ``interrupt`` to
    raise when the client has gone, so work nobody waits for stops within one pass. The hook
    holds the generator weakly (several generators may share one loaded model).
    """
    ref = weakref.ref(gen)

    def before_pass(_module, _args):
        owner = ref()
        if owner is not None and owner.interrupt is not None:
            owner.interrupt()

    gen.model.register_forward_pre_hook(before_pass)


class Generator:
    """Step-wise decoder over a loaded model. One instance per model; not thread-safe.

    ``decoder``: ``"eager"`` runs transformers' forward pass with a ``DynamicCache`` per state;
    ``"fast"`` runs :mod:`dynaprag.lm.fast` (a static cache whose rows the states hold, the
    hand-written Llama/Qwen2 pass, ``compile``-d per length bucket and with ``quantize``-d
    weights when asked; :mod:`dynaprag.lm.fast.rows`), and refuses a model it cannot run;
    ``"auto"`` picks the fast path only where it is supported and measured faster
    (:func:`choose_decoder`). On the fast path in float32, uncompiled, greedy decoding gives
    the eager path's tokens, and the same signals within float32 summation noise
    (``tests/test_fast_generator.py``: log-probs and entropies within 1e-4, attention rows 1e-5,
    hidden states 2e-3). :attr:`path` says which path runs.

    Where the fast path is not exact, against eager float32 along its greedy answers
    (``bench/results/generator.md``, agreement table, 6 questions, 102 teacher-forced tokens,
    135M): fast bfloat16 moves log-probs by 0.018 and entropies by 0.022 nats on average
    (max 0.11), top-1 agreement 1.0, as eager bfloat16 does (0.022, 0.025 nats, 0.990);
    compiled int8 weights by 0.048 and 0.052 nats (max 0.37), top-1 0.941, the same answer on
    1 of 6 questions; int4 weights by 0.023 and 0.031 nats (max 0.22), top-1 0.971, 3 of 6.
    ``bench/decoders.py --signals N`` measures the same along with attention rows and hidden
    states for each decoder variant, and whole methods' s/question side by side.
    """

    def __init__(self, lm: LoadedModel, decoder: str = "eager", compile: bool = False, quantize: str | None = None):
        from transformers import DynamicCache

        self.lm = lm
        self.model = lm.model
        self.tokenizer = lm.tokenizer
        self._new_cache = lambda: DynamicCache(config=self.model.config)
        self.fast = None  # the RowPool of the fast path, when it runs
        self.fallbacks: dict[str, int] = {}  # why passes left the fast path, and how often
        if choose_decoder(lm.model, lm.name, decoder, compile, quantize) == "fast":
            self.fast = RowPool(self.model, compile=compile, quantize=quantize)
        self._rows = AttentionRowsTap(self.model)
        self.interrupt: Callable[[], None] | None = None
        _check_before_every_pass(self)
        self.eos_ids = self._end_ids()
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.context_length = context_length(self.model.config)

    @property
    def path(self) -> str:
        """Which decoding path runs, for ``config.json`` and summaries: ``eager`` or e.g. ``fast-eager-float32``."""
        return "eager" if self.fast is None else self.fast.path

    # -- what components may ask for (checked when a method is built) -------------------
    @property
    def num_hidden_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def has_token(self, token: str) -> bool:
        """Whether ``token`` is a token of its own in the vocabulary (e.g. Self-RAG's ``[Retrieval]``)."""
        tid = self.tokenizer.convert_tokens_to_ids(token)
        return isinstance(tid, int) and tid >= 0 and tid != self.tokenizer.unk_token_id

    def room(self, state: "DecodeState") -> int | None:
        """How many more tokens ``state`` may generate before it outgrows the context (``None``: no limit)."""
        return None if self.context_length is None else self.context_length - len(state.ids) + 1

    def _check_fits(self, length: int, what: str) -> None:
        if self.context_length is not None and length > self.context_length:
            raise PromptTooLong(length, self.context_length, self.lm.name, what)

    def _end_ids(self) -> set[int]:
        ids: set[int] = set()
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        for value in (eos if isinstance(eos, list) else [eos]):
            if value is not None:
                ids.add(int(value))
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        for token in ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>"):
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tid >= 0:
                ids.add(tid)
        return ids

    @property
    def space_marker(self) -> str:
        """The piece character that marks a word start (``Ġ`` for byte-level BPE, ``▁`` for sentencepiece)."""
        pieces = self.tokenizer.tokenize(" a")
        first = pieces[0] if pieces else ""
        return first[:-1] if len(first) > 1 and first.endswith("a") else " "

    @property
    def newline_id(self) -> int:
        return self.encode("\n")[0]

    def pieces(self, ids: list[int]) -> list[str]:
        """The vocabulary pieces of ``ids`` (``convert_ids_to_tokens``: space markers kept)."""
        return list(self.tokenizer.convert_ids_to_tokens(list(ids)))

    @torch.inference_mode()
    def attention_of(self, ids: list[int], rows: Sequence[int] | None = None) -> torch.Tensor:
        """The last layer's attention rows ``[heads, len(rows), n]`` of a fresh pass over ``ids`` alone.

        DRAGIN's reference scores a look-ahead with such a pass over the generated tokens (no
        prompt, no cache) and builds its query from one over question + answer. ``rows`` are the
        query rows to return (``None``: all ``n``, for a short look-ahead). Memory is bounded by
        what is returned: every layer computes eager attention in chunks of rows, bit-for-bit the
        reference's eager pass, and only the last keeps weights (:mod:`dynaprag.lm.attention`).
        """
        self._check_fits(len(ids), "attention pass")
        with self._rows.reading(rows) as request:
            self.model(input_ids=torch.tensor([list(ids)], dtype=torch.long, device=self.lm.device),
                       use_cache=False, logits_to_keep=1)
        return request.weights

    # -- text <-> ids --------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- state management ----------------------------------------------------------------
    def prefix(self, ids: list[int]) -> PrefixCache:
        """Compute the KV cache of a fixed prefix once (instructions + few-shot exemplars)."""
        state = self.start(ids)
        self._feed(state, ())
        cache = state.cache.export() if isinstance(state.cache, FastRow) else state.cache
        return PrefixCache(ids=list(ids), cache=cache, logits=state.logits)

    def start(self, ids: list[int], prefix: PrefixCache | None = None) -> DecodeState:
        """A new state for ``ids``; reuses ``prefix``'s KV cache when ``ids`` starts with it.

        Raises :class:`PromptTooLong` when ``ids`` does not fit the model's context.
        """
        self._check_fits(len(ids), "prompt")
        fast = self.fast is not None and self._fast_serves(())
        state = DecodeState(ids=list(ids), generated=[False] * len(ids),
                            cache=self.fast.acquire() if fast else self._new_cache())
        if prefix is not None and len(prefix.ids) <= len(ids) and ids[: len(prefix.ids)] == prefix.ids:
            exported = isinstance(prefix.cache, tuple)  # keys and values of a fast row
            if fast:
                self.fast.load(state.cache, prefix.cache if exported else layers_of(prefix.cache))
            else:
                state.cache = dynamic_cache(*prefix.cache, self.model.config) if exported else copy.deepcopy(prefix.cache)
            state.fed = len(prefix.ids)
            state.logits = prefix.logits if state.fed == len(ids) else None
        return state

    def extend(self, state: DecodeState, ids: list[int]) -> None:
        """Append prompt tokens (e.g. passages after a retrieval); they are prefilled lazily.

        Raises :class:`PromptTooLong`, leaving ``state`` as it was, when the result would not fit
        the model's context.
        """
        self._check_fits(len(state.ids) + len(ids), "prompt with passages and answer so far")
        state.ids.extend(ids)
        state.generated.extend([False] * len(ids))
        if ids:
            state.logits = None

    def truncate(self, state: DecodeState, length: int) -> None:
        """Cut the sequence to its first ``length`` tokens, cropping the KV cache to match."""
        if length >= len(state.ids):
            return
        del state.ids[length:]
        del state.generated[length:]
        keep = max(0, min(state.fed, length - 1))
        if state.fed > keep:
            if isinstance(state.cache, FastRow):
                state.cache.truncate(keep)  # an index move
            else:
                state.cache.crop(-(state.fed - keep))
            state.fed = keep
        state.logits, state.signals = None, {}

    # -- forward passes ------------------------------------------------------------------
    def _returned_cache(self, out):
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    @torch.inference_mode()
    def _forward(self, state: DecodeState, ids: list[int], wanted: Sequence[signals.Signal]) -> None:
        if isinstance(state.cache, FastRow) and self._stays_fast(state, wanted):
            if self.interrupt is not None:  # the model's pre-hook does not see the fast pass
                self.interrupt()
            logits, values = self.fast.feed(state.cache, ids, wanted)
            state.advance(state.cache, logits, values, len(ids))
            return
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.lm.device)
        out, hooked = signals.forward(self, wanted, input_ids=input_ids, **{self._cache_kw: state.cache},
                                      use_cache=True, logits_to_keep=1)
        state.advance(self._returned_cache(out), out.logits[0, -1].float(),
                      signals.read_row(wanted, out, hooked, 0), len(ids))

    def _stays_fast(self, state: DecodeState, wanted: Sequence[signals.Signal]) -> bool:
        """Whether ``state``'s row can take this pass; if not, its keys/values move to a ``DynamicCache``
        and the state decodes on transformers' path from now on (the reason is counted and logged once)."""
        if self._fast_serves(wanted):
            return True
        row, state.cache = state.cache, state.cache.to_dynamic(self.model.config)
        row.release()
        return False

    def _fast_serves(self, wanted: Sequence[signals.Signal]) -> bool:
        """Whether the fast pass can serve a pass reading ``wanted``; a refusal is counted in
        :attr:`fallbacks` and logged the first time."""
        reason = self.fast.refuses(wanted)
        if reason is None:
            return True
        if reason not in self.fallbacks:
            log.warning("%s: decoding on transformers' path instead of the fast decoder: %s", self.lm.name, reason)
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
        return False

    def eager_cache(self, state: DecodeState):
        """A ``DynamicCache`` copy of ``state``'s keys and values (SeaKR's batched sampling runs on transformers' path)."""
        if isinstance(state.cache, FastRow):
            return state.cache.to_dynamic(self.model.config)
        return copy.deepcopy(state.cache)

    def _feed(self, state: DecodeState, wanted: Sequence[signals.Signal]) -> None:
        """Bring the cache up to the end of ``state.ids`` so ``state.logits`` predicts the next token.

        When a wanted signal reads only from a one-token pass (``solo_pass``: attention, whose
        eager layer would need an explicit causal mask), a multi-token prefill runs plain for
        all but the last token and watched for the last one alone.
        """
        pending = state.ids[state.fed:]
        if not pending:
            if state.logits is None:
                raise RuntimeError("empty sequence: nothing to predict from")
            return
        if len(pending) > 1 and any(s.solo_pass for s in wanted):
            self._forward(state, pending[:-1], ())
            pending = pending[-1:]
        self._forward(state, pending, wanted)

    def next_logprobs(self, state: DecodeState, config: GenerationConfig | None = None) -> torch.Tensor:
        """Log-probs of the next token without choosing it (prefills whatever is pending).

        Self-RAG reads its reflection tokens' probabilities this way; a following :meth:`step`
        reuses the same logits (no extra forward pass).
        """
        if state.logits is None or state.fed < len(state.ids):
            self._feed(state, (config or GenerationConfig()).signals)
        return signals.log_softmax(state.logits)

    # -- decoding ------------------------------------------------------------------------
    def step(self, state: DecodeState, config: GenerationConfig,
             rng: torch.Generator | None = None) -> StepOutput:
        """Choose the next token (greedy or sampled), append it, and return it with its signals."""
        self._check_fits(len(state.ids), "prompt with answer so far")
        if state.logits is None or state.fed < len(state.ids):
            self._feed(state, config.signals)
        logprobs = signals.log_softmax(state.logits)
        if config.do_sample:
            sample_lp = signals.apply_sampling(state.logits, config.temperature, config.top_p)
            token = int(torch.multinomial(sample_lp.exp(), 1, generator=rng))
        else:
            token = int(torch.argmax(logprobs))
        top_ids, top_lps = signals.top_alternatives(logprobs, config.top_alternatives)
        out = StepOutput(
            position=len(state.ids), token_id=token, text="",
            logprob=float(logprobs[token]), entropy=float(signals.entropy(logprobs)),
            top_ids=top_ids, top_logprobs=top_lps,
            signals=dict(state.signals),
        )
        state.ids.append(token)
        state.generated.append(True)
        state.logits = None
        state.counters.generated_tokens += 1
        return out

    def iter_steps(self, state: DecodeState, config: GenerationConfig) -> Iterator[StepOutput]:
        """Yield steps with their ``text`` piece filled in, until EOS or the token budget."""
        rng = torch.Generator().manual_seed(config.seed) if config.seed is not None else None
        start = len(state.ids)
        decoded = ""
        room = self.room(state)
        for _ in range(config.max_new_tokens if room is None else min(config.max_new_tokens, room)):
            out = self.step(state, config, rng)
            if config.stop_at_eos and out.token_id in self.eos_ids:
                out.text = ""
                yield out
                return
            full = self.decode(state.ids[start:])
            out.text, decoded = full[len(decoded):], full
            yield out

    def generate(self, state: DecodeState, config: GenerationConfig,
                 should_stop: Callable[[StepOutput, str], bool] | None = None) -> Generation:
        """Decode until EOS, a stop string, the budget, or ``should_stop(step, text_so_far)``."""
        steps: list[StepOutput] = []
        room = self.room(state)
        text = ""
        stopped_by = "context" if room is not None and room < config.max_new_tokens else "max_tokens"
        for out in self.iter_steps(state, config):
            steps.append(out)
            if config.stop_at_eos and out.token_id in self.eos_ids:
                stopped_by = "eos"
                break
            text += out.text
            hit = next((s for s in config.stop if s in text), None)
            if hit is not None:
                text, stopped_by = text[: text.index(hit)], f"stop:{hit}"
                break
            if should_stop is not None and should_stop(out, text):
                stopped_by = "callback"
                break
        return Generation(steps=steps, text=text, stopped_by=stopped_by)

    @torch.inference_mode()
    def forward_rows(self, cache, tokens: torch.Tensor) -> tuple[object, torch.Tensor]:
        """Feed one token per row (``tokens``, ``[rows]``) after a batched ``cache``: (cache, logits ``[rows, V]``)."""
        out = self.model(input_ids=tokens.unsqueeze(1).to(self.lm.device), **{self._cache_kw: cache},
                         use_cache=True, logits_to_keep=1)
        return self._returned_cache(out), out.logits[:, -1].float()

    def sample_steps(self, state: DecodeState, k: int, spec):
        """SeaKR's samples of the next step with their end-token MLP outputs (:func:`dynaprag.lm.sampling.sample_steps`)."""
        from dynaprag.lm.sampling import sample_steps

        return sample_steps(self, state, k, spec)
