"""The fast decoder computes what transformers computes, on the real 135M model in float32.

Each check feeds the same tokens to :class:`~dynaprag.lm.fast.FastDecoder` (static cache,
hand-written pass, compiled or not) and to transformers' own forward pass over the whole
sequence (no cache, eager attention so it returns weights), and compares the next-token
logits, every layer's hidden state of the last position, and the last layer's attention row,
over several steps, through a rollback (a truncated row then fed a different token: stale
slots past the row's end must stay invisible), and with two rows of different lengths in one
batch, one of them inactive for a step. Tolerances are float32 summation-order noise.
"""
from __future__ import annotations

import pytest
import torch

from dynaprag.lm.fast import CacheShape, FastDecoder, Int4Linear, Int8Linear, StaticKVCache, buckets_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

PROMPT = "Question: Marie Curie was born in the capital of which country?\nAnswer:"
ATOL_LOGITS, ATOL_HIDDEN, RTOL_HIDDEN, ATOL_ATTENTION = 2e-4, 2e-4, 1e-4, 2e-5  # hidden states reach |h| ~ 100


@torch.inference_mode()
def reference(model, ids: list[int]):
    """transformers' logits, hidden states and last-layer attention row for the last position of ``ids``."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True, output_attentions=True)
    finally:
        model.set_attn_implementation(before)
    return out.logits[0, -1].float(), torch.stack([h[0, -1] for h in out.hidden_states]), out.attentions[-1][0, :, -1]


def check(step, row: int, model, ids: list[int]) -> None:
    logits, hidden, attention = reference(model, ids)
    assert step.lengths[row] == len(ids)
    assert torch.allclose(step.logits[row], logits, atol=ATOL_LOGITS, rtol=0)
    assert torch.allclose(step.hidden[:, row].float(), hidden.float(), atol=ATOL_HIDDEN, rtol=RTOL_HIDDEN), \
        float((step.hidden[:, row].float() - hidden.float()).abs().max())
    if step.attention is not None:
        got = step.attention_row(row, mean_heads=False)
        assert got.shape == attention.shape
        assert torch.allclose(got, attention.float(), atol=ATOL_ATTENTION, rtol=0)
        assert torch.all(step.attention[row, :, len(ids):] == 0)  # padding and stale slots get no weight


def run_steps(dec: FastDecoder, step, model, ids: list[int], n: int) -> list[int]:
    """Greedy ``n`` steps on row 0 after ``step``, each checked against transformers; returns the grown ids."""
    for _ in range(n):
        token = int(step.logits[0].argmax())
        ids = ids + [token]
        step = dec.decode([token], want_attention=True)
        check(step, 0, model, ids)
    return ids


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_steps_and_rollback_match_transformers(lm, compiled):
    """Steps, a rollback and a pending prefill against transformers, eager and compiled.

    The compiled case compiles one graph, the one that reads attention: all its layers but the
    last run the SDPA code of the no-attention graph and the last one the explicit softmax, so
    both attention paths are compiled and compared with transformers (logits, every hidden state,
    the attention row) on every step. The no-attention graph is the same code with the last layer
    on SDPA too; compiling it as well costs a second inductor compile (~45 of ~95 CPU-seconds on a
    fresh cache, which CI always has) and would only check that it returns no attention, which
    the eager case checks on the same ``FastLM.forward``.
    """
    ids = lm.tokenizer.encode(PROMPT, add_special_tokens=False)
    dec = FastDecoder(lm.model, batch=1, capacity=128, compile=compiled)
    step = dec.prefill(0, ids, want_attention=True)
    check(step, 0, lm.model, ids)
    grown = run_steps(dec, step, lm.model, ids, 4)
    # roll back two tokens (an index move) and continue with a different token than before
    keep = len(grown) - 2
    dec.truncate(0, keep)
    assert dec.lengths == [keep]
    other = (grown[keep] + 1) % lm.model.config.vocab_size
    step = dec.decode([other], want_attention=True)
    check(step, 0, lm.model, grown[:keep] + [other])
    # a pending multi-token feed after the rollback (passages after a retrieval) is a prefill
    extra = lm.tokenizer.encode(" Warsaw is in Poland.", add_special_tokens=False)
    step = dec.prefill(0, extra, want_attention=True)
    check(step, 0, lm.model, grown[:keep] + [other] + extra)
    if compiled:  # one graph: its SDPA layers are the no-attention graph's code (see the docstring)
        assert set(dec.graphs) == {(1, 128, True)}  # (rows, bucket, attention read)
        return
    step = dec.decode([int(step.logits[0].argmax())])
    assert step.attention is None


def test_batch_rows_are_independent(lm):
    """Two rows of different lengths step together; an inactive row neither moves nor changes."""
    a = lm.tokenizer.encode(PROMPT, add_special_tokens=False)
    b = lm.tokenizer.encode("The Danube flows through", add_special_tokens=False)
    dec = FastDecoder(lm.model, batch=2, capacity=128, compile=False)
    dec.prefill(0, a)
    dec.prefill(1, b)
    step = dec.decode([11, 12], want_attention=True)
    a, b = a + [11], b + [12]
    check(step, 0, lm.model, a)
    check(step, 1, lm.model, b)
    step = dec.decode([13, 14], want_attention=True, active=[False, True])
    b = b + [14]
    assert dec.lengths == [len(a), len(b)]
    check(step, 1, lm.model, b)
    step = dec.decode([15, 16], want_attention=True)  # row 0's throw-away key at its end is overwritten
    check(step, 0, lm.model, a + [15])
    check(step, 1, lm.model, b + [16])


def test_prefix_export_and_import(lm):
    ids = lm.tokenizer.encode(PROMPT, add_special_tokens=False)
    dec = FastDecoder(lm.model, batch=2, capacity=128, compile=False)
    dec.prefill(0, ids[:10])
    dec.import_prefix(1, dec.export_prefix(0))
    step = dec.prefill(1, ids[10:])
    check(step, 0, lm.model, ids)


def test_static_cache_rollback_moves_only_the_index():
    cache = StaticKVCache(CacheShape(2, 1, 4, torch.float32), batch=1, capacity=8)
    pointers = [t.data_ptr() for t in cache.keys + cache.values]
    cache.set_length(0, 6)
    cache.truncate(0, 3)
    assert cache.lengths == [3] and int(cache.positions[0]) == 3
    assert [t.data_ptr() for t in cache.keys + cache.values] == pointers
    with pytest.raises(ValueError):
        cache.set_length(0, 9)
    assert buckets_for(1000) == [128, 256, 512, 1000]


def test_int8_linear_is_its_dequantized_weight():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=True)
    q = Int8Linear.from_linear(linear, torch.float32)
    dequantized = q.weight.float() * q.scales[:, None]
    assert (dequantized - linear.weight).abs().max() <= q.scales.max() / 2 + 1e-7
    x = torch.randn(3, 64)
    assert torch.allclose(q(x), x @ dequantized.T + linear.bias, atol=1e-5)


def test_int4_linear_recovers_a_4bit_grid():
    """Weights already on a 4-bit min/max grid per 32 inputs (as the bundled GGUF files store them)
    come back up to the bf16 rounding of scale and offset; the product matches the dequantized weight."""
    torch.manual_seed(0)
    codes = torch.randint(0, 16, (48, 64)).float()
    codes[:, ::32], codes[:, 1::32] = 0, 15  # every group spans its grid, as min/max quantization makes it
    scale, low = torch.rand(48, 2, 1) * 0.01 + 1e-3, torch.randn(48, 2, 1) * 0.01
    linear = torch.nn.Linear(64, 48, bias=False)
    linear.weight.data = (codes.view(48, 2, 32) * scale + low).view(48, 64)
    codes_fit, scale_fit, zero_fit = Int4Linear.grid(linear.weight)  # in float32 the grid is recovered exactly
    refit = ((codes_fit.view(48, 2, 32).float() - 8) * scale_fit[..., None] + zero_fit[..., None]).view(48, 64)
    assert torch.allclose(refit, linear.weight, atol=1e-6, rtol=0)
    q = Int4Linear.from_linear(linear, torch.bfloat16)  # stored in bf16: off by bf16 rounding only
    assert (q.dequantized() - linear.weight).abs().max() <= float(linear.weight.abs().max()) * 2 ** -7
    x = torch.randn(3, 64).bfloat16()
    assert torch.allclose(q(x).float(), x.float() @ q.dequantized().T, atol=2e-2, rtol=1e-2)


def test_unsupported_model_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    tiny = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=8))
    with pytest.raises(ValueError, match="no fast decoder"):
        FastDecoder(tiny)
