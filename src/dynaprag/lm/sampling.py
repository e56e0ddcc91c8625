"""One reasoning step sampled k times as one batch, with the embedding SeaKR reads from each sample.

SeaKR (THU-KEG/SeaKR @d75fe70) judges a reasoning step by 20 samples that its patched vLLM
draws from the step's prompt, and reads one vector per sample:

- sampling: temperature, then top-k, then top-p on the logits (vLLM ``Sampler.forward`` and
  ``_apply_top_k_top_p``, ``vllm/model_executor/layers/sampler.py:84-90``), at most
  ``max_tokens`` tokens, cut at stop strings (``reasoner.py:77-86``);
- when a sample stops (end of sequence, a stop string, ``max_tokens``), its *last token is
  overwritten with EOS* and the sequence runs one more step (``engine/output_processor/
  stop_checker.py:33-60``); the output of decoder layer ``selected_intermediate_layer`` at
  that EOS is the sample's embedding (``layers/sampler.py:125-139``). vLLM's decoder layer
  returns the **MLP output without the residual**, which it carries separately
  (``models/llama.py:236-240, 299-300``): here a forward hook on ``model.layers[i].mlp``.

:func:`sample_steps` does this for ``k`` samples (plus, on request, one greedy row, as the
reference's parallel greedy request) in one batch over a copy of the state's KV cache.
:func:`filter_logits` is the pure sampling filter (tested on arrays).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from dynaprag.lm import signals
from dynaprag.lm.decoding import DecodeState, Generation, StepOutput


@dataclass(frozen=True)
class StepSampling:
    """How one step is sampled (the reference's ``sample_params``, ``reasoner.py:77-86``)."""

    max_tokens: int = field(default=100, metadata={"help": "token budget of each sample (reference 100)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (reference 1.0)"})
    top_k: int = field(default=50, metadata={"help": "keep the k most likely tokens; 0 = all (reference 50)"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus mass after top-k (reference 0.9)"})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "stop strings; the text is cut before them"})
    mlp_layer: int = field(default=-1, metadata={
        "help": "decoder layer whose MLP output is read at the end token; -1 = num_layers // 2 - 1 "
                "(the reference's 15 of Llama-2-7B's 32)"})
    greedy: bool = field(default=False, metadata={"help": "add a greedy row (index 0 of the batch)"})
    seed: int | None = field(default=None, metadata={"help": "seed of the sampling generator"})


@dataclass
class SampledSteps:
    """The greedy step (when asked for), the samples, and each sample's end-token embedding."""

    greedy: Generation | None
    samples: list[Generation]
    embeddings: torch.Tensor  # [k, d]: MLP output of the chosen layer at each sample's end token

    @property
    def texts(self) -> list[str]:
        return [g.text for g in self.samples]


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Log-probs of the sampling distribution: ``logits / T``, then top-k, then top-p (as vLLM).

    Top-k keeps every logit at least the k-th largest (ties kept). Top-p sorts ascending and drops
    the tokens whose cumulative probability is ``<= 1 - top_p``, always keeping the most likely one
    (vLLM ``_apply_top_k_top_p``).
    """
    scaled = logits.float() / max(temperature, 1e-6)
    if 0 < top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        ascending, order = torch.sort(scaled, dim=-1)
        drop = torch.softmax(ascending, dim=-1).cumsum(dim=-1) <= 1 - top_p
        drop[..., -1] = False
        ascending = ascending.masked_fill(drop, float("-inf"))
        scaled = torch.empty_like(ascending).scatter_(-1, order, ascending)
    return torch.log_softmax(scaled, dim=-1)


def fork(gen, state: DecodeState, length: int) -> DecodeState:
    """A copy of ``state`` cut to its first ``length`` tokens (the KV cache copied and cropped)."""
    copied = DecodeState(ids=list(state.ids), generated=list(state.generated), cache=copy.deepcopy(state.cache),
                         fed=state.fed, logits=state.logits)
    gen.truncate(copied, length)
    return copied


def decoder_mlp(model, layer: int):
    """``(index, module)`` of decoder layer ``layer``'s MLP (-1: ``num_layers // 2 - 1``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not hasattr(layers[0], "mlp"):
        raise ValueError("SeaKR's embedding is a decoder layer's MLP output; this model has no model.layers[i].mlp")
    index = len(layers) // 2 - 1 if layer < 0 else layer
    if not 0 <= index < len(layers):
        raise ValueError(f"decoder layer {layer} out of range: the model has {len(layers)} layers")
    return index, layers[index].mlp


@torch.inference_mode()
def sample_steps(gen, state: DecodeState, k: int, spec: StepSampling) -> SampledSteps:
    """``k`` samples (and a greedy row if ``spec.greedy``) of the step that continues ``state``.

    All rows decode together over a ``rows``-fold copy of the cache; a row that stops gets EOS as
    its next input in place of its last token, the MLP output at that EOS is its embedding, and
    the row then leaves the batch. ``state`` itself is only prefilled (its counters count every
    batched pass and every sampled token).
    """
    gen.next_logprobs(state)  # prefill whatever is pending, so state.logits predicts the step
    rows = k + (1 if spec.greedy else 0)
    if rows == 0:
        return SampledSteps(greedy=None, samples=[], embeddings=torch.zeros(0, 0))
    _, mlp = decoder_mlp(gen.model, spec.mlp_layer)
    eos = gen.tokenizer.eos_token_id
    rng = torch.Generator().manual_seed(spec.seed) if spec.seed is not None else None
    cache = gen.eager_cache(state)  # transformers' batched cache, whatever path decoded the state
    cache.batch_repeat_interleave(rows)
    logits = state.logits.unsqueeze(0).repeat(rows, 1)
    room = gen.room(state)
    budget = spec.max_tokens if room is None else max(1, min(spec.max_tokens, room - 1))
    steps: list[list[StepOutput]] = [[] for _ in range(rows)]
    stopped = [""] * rows
    ends: list[torch.Tensor | None] = [None] * rows
    live = list(range(rows))  # rows still decoding, in the order of the batch
    captured: dict[str, torch.Tensor] = {}
    hook = mlp.register_forward_hook(lambda _m, _i, out: captured.__setitem__("z", out[:, -1].float()))
    position = len(state.ids)
    try:
        for _ in range(budget):
            logprobs = signals.log_softmax(logits)
            tokens = torch.multinomial(filter_logits(logits, spec.temperature, spec.top_k, spec.top_p).exp(), 1,
                                       generator=rng).squeeze(1)
            if spec.greedy and live[0] == 0:
                tokens[0] = torch.argmax(logprobs[0])
            feed = tokens.clone()
            for b, r in enumerate(live):
                tid = int(tokens[b])
                steps[r].append(StepOutput(position=position, token_id=tid, text="", logprob=float(logprobs[b, tid]),
                                           entropy=0.0))
                stopped[r] = _stop_reason(gen, steps[r], spec, budget)
                if stopped[r]:
                    feed[b] = eos
            state.counters.generated_tokens += len(live)
            cache, logits = gen.forward_rows(cache, feed)
            state.counters.forward_passes += 1
            for b, r in enumerate(live):
                if stopped[r]:
                    ends[r] = captured["z"][b].clone()
            going = [b for b, r in enumerate(live) if not stopped[r]]
            if not going:
                break
            if len(going) < len(live):  # drop finished rows: less work, the same values for the others
                index = torch.tensor(going, dtype=torch.long)
                cache.batch_select_indices(index)
                logits = logits[index]
                live = [live[b] for b in going]
            position += 1
    finally:
        hook.remove()
    generations = [_generation(gen, row, spec, reason) for row, reason in zip(steps, stopped)]
    first = 1 if spec.greedy else 0
    z = torch.stack([e for e in ends[first:]]) if k else torch.zeros(0, 0)
    return SampledSteps(greedy=generations[0] if spec.greedy else None, samples=generations[first:], embeddings=z)


def _stop_reason(gen, row: list[StepOutput], spec: StepSampling, budget: int) -> str:
    """Why the row stops after its last token ("" = it goes on), in the reference's order."""
    if row[-1].token_id in gen.eos_ids:
        return "eos"
    text = gen.decode([s.token_id for s in row])
    hit = next((s for s in spec.stop if s in text), None)
    if hit is not None:
        return f"stop:{hit}"
    return "max_tokens" if len(row) >= budget else ""


def _generation(gen, row: list[StepOutput], spec: StepSampling, reason: str) -> Generation:
    """The row's text as the reference returns it: end token left out, cut before a stop string."""
    text = gen.decode([s.token_id for s in row if s.token_id not in gen.eos_ids])
    hits = [text.index(s) for s in spec.stop if s in text]
    return Generation(steps=row, text=text[: min(hits)] if hits else text, stopped_by=reason or "max_tokens")
