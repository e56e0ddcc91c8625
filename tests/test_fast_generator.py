"""The generator on the fast decoder gives what the eager path gives (float32, uncompiled, greedy).

``tests/test_fast_decoder.py`` checks the fast pass against transformers' forward; here the
whole decoding stack runs on it (``Generator(decoder="fast")``: states holding rows of one
static cache, rollbacks as index moves, the few-shot prefix exported and imported, one batched
pass per step) and is compared with the eager path on what the methods read:

- the batched stepper through joins, a rollback and a re-prefill: the same greedy tokens, and
  log-probs, entropies, attention rows and hidden states within float32 summation noise;
- recorded preset traces (``tests/fixtures/preset_traces.json``) for a subset that covers every
  kind of pass: single retrieval (prefix + re-prefill), FLARE's look-ahead rollback, DRAGIN's
  attention rows and rollback, entity-rag's rollback without attention;
- DRAGIN batched against batch 1, both on the fast path;
- weight changes (PRAG/DyPRAG's LoRA hooks): seen by the uncompiled float pass, and a quantized
  pass falls back to the eager path visibly (``Generator.fallbacks``) with the eager result.
"""
from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest
import torch

from dynaprag.lm.generator import GenerationConfig, Generator
from dynaprag.lm.signals import ATTENTION, HiddenState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import record_preset_traces as rec  # noqa: E402
from test_preset_traces import FIXTURE  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # float32 sums as recorded

PROMPTS = ["The capital of France is", "Question: Who directed Jaws? Answer: The film Jaws was directed by",
           "Once upon a time, in a small village near the mountains, there lived", "1, 2, 3, 4,",
           "Water boils at"]
SIGNALS = (ATTENTION, HiddenState(2), HiddenState(-1))


@pytest.fixture(scope="module")
def fast(lm):
    return Generator(lm, decoder="fast")


@pytest.fixture(scope="module")
def fast_pipeline(lm):
    """``fast_pipeline(method)``: the demo pipeline of that preset on the fast decoder (as ``demo_pipeline``)."""
    from dynaprag.pipeline import Pipeline, PipelineConfig

    made: dict = {}

    def get(method: str):
        if method not in made:
            retriever = next(iter(made.values())).retriever if made else None
            made[method] = Pipeline.from_config(PipelineConfig(method=method, dtype="float32", decoder="fast"),
                                                lm=lm, retriever=retriever)
            assert made[method].generator.path == "fast-eager-float32"
        return made[method]
    return get


def assert_same_steps(want, have) -> None:
    assert [s.token_id for s in have] == [s.token_id for s in want]
    for a, b in zip(want, have):
        assert abs(a.logprob - b.logprob) < 1e-4 and abs(a.entropy - b.entropy) < 1e-4
        assert set(a.signals) == set(b.signals)
        if "attention" in a.signals:
            assert a.signals["attention"].shape == b.signals["attention"].shape
            assert torch.allclose(a.signals["attention"], b.signals["attention"], atol=1e-5)
        for key in (k for k in a.signals if k.startswith("hidden:")):
            assert torch.allclose(a.signals[key], b.signals[key], atol=2e-3, rtol=1e-4)


def test_batched_fast_steps_match_eager_single_steps(generator, fast):
    """Eager batch 1 against the fast path batched, through two joins, a rollback and a re-prefill."""
    from dynaprag.lm.batch import BatchStepper

    cfg, n = GenerationConfig(signals=SIGNALS), 8
    ref = []
    for p in PROMPTS:
        state = generator.start(generator.encode(p))
        ref.append([generator.step(state, cfg) for _ in range(n)])
    stepper = BatchStepper(fast)
    states = [fast.start(fast.encode(p)) for p in PROMPTS[:3]]
    got = [[] for _ in PROMPTS]
    for i in range(n + 5):
        if i == 2:
            states += [fast.start(fast.encode(p)) for p in PROMPTS[3:]]
        if i == 6:  # one rolls back three tokens (an index move) and is re-prefilled alone
            fast.truncate(states[1], len(states[1].ids) - 3)
            del got[1][-3:]
        live = [(k, s) for k, s in enumerate(states) if len(got[k]) < n]
        if not live:
            break
        for k, out in zip([k for k, _ in live], stepper.step([s for _, s in live], cfg)):
            got[k].append(out)
    assert stepper.batched_passes > 0 and stepper.restacks == 0  # no cache was stacked: rows stay in place
    assert all(s.fed == s.cache.length for s in states)
    for want, have in zip(ref, got):
        assert_same_steps(want, have)
    assert fast.fallbacks == {}
    rows = fast.fast.rows_in_use
    del states, live, stepper
    gc.collect()
    assert fast.fast.rows_in_use == rows - len(PROMPTS)  # a dropped state gives its row back


def test_prefix_fork_and_eager_copy(generator, fast):
    """A prefix computed on the fast path starts fast and eager states alike; a fork copies the row."""
    import copy

    from dynaprag.lm.sampling import fork

    head, tail = generator.encode("Answer briefly.\n"), generator.encode("Question: Where is Ulm?\nAnswer:")
    prefix = fast.prefix(head)
    cfg = GenerationConfig(max_new_tokens=6, signals=(ATTENTION,), stop_at_eos=False)
    want = generator.generate(generator.start(head + tail), cfg).steps
    for gen in (generator, fast):
        state = gen.start(head + tail, prefix=prefix)
        assert_same_steps(want, gen.generate(state, cfg).steps)
    state = fast.start(head + tail, prefix=prefix)
    fast.generate(state, cfg)
    copied = fork(fast, state, len(head + tail) + 2)
    assert copied.cache.index != state.cache.index and copied.fed == copied.cache.length == len(head + tail) + 1
    again = copy.deepcopy(state.cache)
    assert again.length == state.cache.length
    eager = fast.eager_cache(state)
    assert eager.get_seq_length() == state.fed
    assert_same_steps(want[2:], fast.generate(copied, cfg).steps[:4])


#: one question each of presets that together take every kind of pass (SeaKR's sampling runs on
#: transformers' path from a copy of the row: ``test_prefix_fork_and_eager_copy``)
CASES = [("sr-rag", 0), ("flare", 0), ("dragin", 0), ("entity-rag", 0)]


@pytest.mark.parametrize("preset, index", CASES)
def test_preset_trace_is_unchanged_on_the_fast_path(fast_pipeline, preset, index):
    qid = list(FIXTURE["traces"][preset])[index]
    question = next(q for q in rec.demo_questions(100) if q["id"] == qid)["question"]
    pipe = fast_pipeline(preset)
    got = rec.summarise(pipe.answer(question, max_new_tokens=FIXTURE["max_new_tokens"]))
    assert got == FIXTURE["traces"][preset][qid]
    assert pipe.generator.fallbacks == {}


def test_dragin_batched_equals_batch_1_on_the_fast_path(fast_pipeline):
    """Three questions at batch 3 against batch 1 (``test_batch.py`` runs every preset at batch 8 on the
    eager path; here the one preset that reads attention rows and rolls back, on few tokens)."""
    pipe = fast_pipeline("dragin")
    questions = [q["question"] for q in rec.demo_questions(3)]
    answers = [pipe.answer(q, max_new_tokens=16) for q in questions]
    together = dict(pipe.answer_many(questions, batch_size=3, max_new_tokens=16))
    assert [rec.summarise(together[i]) for i in range(len(questions))] == [rec.summarise(a) for a in answers]
    assert any(r.position > 0 or r.discarded for a in answers for r in a.trace.retrievals)  # a mid-answer retrieval


def _lora(model, rank: int = 2, scale: float = 0.5) -> dict:
    """A random rank-``rank`` delta on every FFN projection, through PRAG/DyPRAG's hooks' format."""
    torch.manual_seed(0)
    combined = {}
    for name, module in model.named_modules():
        if name.endswith(("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")):
            d_out, d_in = module.weight.shape
            combined[name] = (torch.randn(rank, d_in) * scale / d_in ** 0.5, torch.randn(d_out, rank) * scale / rank)
    return combined


def test_weight_hooks_are_seen_or_fall_back_visibly(lm, generator, fast):
    """PRAG/DyPRAG change the weights with forward hooks (``parametric.lora``): the uncompiled float
    pass calls the hooked modules and gives the eager result; a quantized pass cannot see them, so
    it decodes on the eager path, says so in ``fallbacks``, and gives the eager result too."""
    from dynaprag.parametric.lora import LoraInjection

    ids = generator.encode("Question: Who wrote Hamlet?\nAnswer:")
    cfg = GenerationConfig(max_new_tokens=5, signals=(ATTENTION,))
    plain = generator.generate(generator.start(ids), cfg).steps
    quantized = Generator(lm, decoder="fast", quantize="int8")
    with LoraInjection(lm.model, _lora(lm.model)):
        want = generator.generate(generator.start(ids), cfg).steps
        assert abs(want[0].entropy - plain[0].entropy) > 1e-2  # the delta changes what the model says
        assert_same_steps(want, fast.generate(fast.start(ids), cfg).steps)
        state = quantized.start(ids)
        assert not hasattr(state.cache, "index")  # started on transformers' path
        assert_same_steps(want, quantized.generate(state, cfg).steps)
    assert fast.fallbacks == {}
    assert list(quantized.fallbacks) and "forward hooks" in next(iter(quantized.fallbacks))
    state = quantized.start(ids)  # hooks gone: back on the (int8) fast path
    assert hasattr(state.cache, "index")


def test_decoder_choice_is_checked(lm):
    from transformers import GPT2Config, GPT2LMHeadModel

    from dynaprag.lm.models import LoadedModel

    assert Generator(lm, decoder="auto").path == "eager"  # until the bench shows the fast path faster
    with pytest.raises(ValueError, match="decoder must be one of"):
        Generator(lm, decoder="turbo")
    with pytest.raises(ValueError, match="knobs of the fast decoder"):
        Generator(lm, quantize="int8")
    from dynaprag.config import ConfigError, to_dict
    from dynaprag.pipeline import load_config

    with pytest.raises(ConfigError, match="quantize: a knob of the fast decoder"):
        load_config(overrides=["quantize=int8"])
    recorded = to_dict(load_config(overrides=["decoder=fast", "quantize=int4", "compile=true"]))  # config.json's
    assert (recorded["decoder"], recorded["quantize"], recorded["compile"]) == ("fast", "int4", True)
    tiny = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=8))
    other = LoadedModel(model=tiny, tokenizer=lm.tokenizer, name="tiny-gpt2", fingerprint="-", dtype=torch.float32,
                        chat_template=False)
    with pytest.raises(ValueError, match="no fast decoder for model tiny-gpt2"):
        Generator(other, decoder="fast")


def test_interrupt_is_checked_before_every_fast_pass(fast):
    """The eager path checks ``interrupt`` in a pre-hook on the model, which the fast pass never calls."""
    calls = []

    def gone():
        calls.append(1)
        if len(calls) == 3:
            raise TimeoutError("client gone")

    state = fast.start(fast.encode("The capital of France is"))
    fast.interrupt = gone
    try:
        with pytest.raises(TimeoutError):
            fast.generate(state, GenerationConfig(max_new_tokens=8, stop_at_eos=False))
    finally:
        fast.interrupt = None
    assert len(calls) == 3 and len(state.ids) - state.fed == 1  # stopped before the third pass
