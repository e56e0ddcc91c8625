"""SeaKR's embedding and document choice against the reference's arithmetic (THU-KEG/SeaKR @d75fe70).

``seakr_eigen.json`` pins the eigen score of given matrices. What decides which matrix it gets,
and which document SeaKR keeps, is pinned here:

- **the embedding at an appended EOS.** When a sample stops, the patched vLLM overwrites its
  last token with EOS (``StopChecker._change_last_token``, ``vllm/engine/output_processor/
  stop_checker.py:33-60``) and runs one more step; the sample's vector is the decoder layer's
  output there (``layers/sampler.py:125-139``), in vLLM the MLP output without the residual
  (``models/llama.py:236-240, 299-300``), layer 15 of Llama-2-7B's 32 (``main_multihop.py:145``).
  Expected values come from one plain forward pass of the real model over
  ``prompt + sample[:-1] + [EOS]`` with a hook on that MLP: the reference's input, computed
  without our sampler's batched KV cache.
- **the per-document choice.** ``MultiHopReasoner.rag`` (``SEAKR/reasoner.py:232-275``) reads each
  new document, then ``combined.sort(key=sort_key)``: a stable sort by the eigen score with an
  empty greedy step ranked ``inf``, and keeps ``read_ids[0]``; ``self.docs`` accumulates.
"""
from __future__ import annotations

import pytest
import torch

from dynaprag.corpus import Passage
from dynaprag.dynamic.draft import Draft
from dynaprag.dynamic.methods.seakr.components import SeakrSelector, choose_document
from dynaprag.lm.decoding import Generation
from dynaprag.lm.generator import Generator
from dynaprag.lm.sampling import SampledSteps, StepSampling, decoder_mlp, sample_steps
from dynaprag.retrieval.base import Hit


# ---- the embedding ----------------------------------------------------------------------------
def _mlp_output_at_last(lm, ids: list[int], layer: int) -> torch.Tensor:
    _, mlp = decoder_mlp(lm.model, layer)
    captured = {}
    hook = mlp.register_forward_hook(lambda _m, _i, out: captured.__setitem__("z", out[0, -1].float()))
    try:
        with torch.no_grad():
            lm.model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        hook.remove()
    return captured["z"]


def test_each_samples_embedding_is_the_mlp_output_at_the_eos_that_replaces_its_last_token(lm):
    gen = Generator(lm)
    prompt = gen.encode("Question: Who directed the film Jaws?\nAnswer: The film Jaws was directed by")
    spec = StepSampling(max_tokens=5, seed=7)  # rows stop at 5 tokens: their last token is not EOS
    out = sample_steps(gen, gen.start(prompt), 4, spec)
    eos = gen.tokenizer.eos_token_id
    checked = 0
    for sample, z in zip(out.samples, out.embeddings):
        tokens = [s.token_id for s in sample.steps]
        if tokens[-1] in gen.eos_ids:
            continue  # ended by EOS itself: nothing was replaced
        want = _mlp_output_at_last(lm, prompt + tokens[:-1] + [eos], spec.mlp_layer)
        wrong = _mlp_output_at_last(lm, prompt + tokens, spec.mlp_layer)  # at the last sampled token
        assert torch.allclose(z, want, rtol=1e-3, atol=1e-4), "embedding is not read at the appended EOS"
        assert not torch.allclose(want, wrong, rtol=1e-3, atol=1e-4)  # the two readings differ here
        checked += 1
    assert checked >= 2
    assert decoder_mlp(lm.model, -1)[0] == lm.model.config.num_hidden_layers // 2 - 1  # 15 of 32, scaled


# ---- the document choice ----------------------------------------------------------------------
@pytest.mark.parametrize("candidates, kept", [
    ([("a", -3.0), ("b", -5.0), ("c", -4.0)], 1),  # the lowest eigen score, not the first hit
    ([("a", -1.0), ("b", -1.0), ("c", -2.0)], 2),
    ([("a", -2.0), ("b", -2.0)], 0),  # ties keep the retriever's order (a stable sort)
    ([("  ", -9.0), ("b", -1.0)], 1),  # an empty greedy step ranks last whatever its score
    (["", "  "], 0),
])
def test_the_reference_sort_chooses_the_document(candidates, kept):
    candidates = [(c, 0.0) if isinstance(c, str) else c for c in candidates]
    assert choose_document(candidates) == kept


class ScoresByDocument:
    """The probe's step estimate, with the eigen score given per document last added to the prompt."""

    def __init__(self, scores: dict[str, float], empty: frozenset = frozenset()):
        self.scores, self.empty, self.calls = scores, empty, []

    def sample_step(self, k, spec, passages=None, upto=None, answer_text=None):
        doc = passages[-1].id
        self.calls.append([p.id for p in passages])
        text = "" if doc in self.empty else " x."
        z = torch.full((k, 4), self.scores[doc])  # any matrix: the score below is what is read
        return SampledSteps(greedy=Generation(steps=[], text=text, stopped_by="stop"),
                            samples=[Generation(steps=[], text=" x.", stopped_by="stop")] * k, embeddings=z)


def test_the_selector_keeps_the_least_uncertain_new_document_after_the_chosen_ones(monkeypatch):
    from dynaprag.dynamic.methods.seakr import eigen

    docs = {i: Passage(i, i, f"text {i}") for i in "abcde"}
    monkeypatch.setattr(eigen, "samples_eigen_score", lambda texts, z, alpha: float(z[0, 0]))
    probe = ScoresByDocument({"a": -3.0, "b": -5.0, "c": -4.0, "d": -9.0, "e": -1.0}, empty=frozenset({"d"}))
    selector = SeakrSelector(samples=3)
    assert selector.accumulates  # every chosen document is injected, whatever the run's k
    draft = Draft(question="q")
    hits = [Hit(docs[i], 1.0) for i in "abc"]
    assert [h.id for h in selector(hits, draft, probe)] == ["b"]
    draft.passages = [docs["b"]]
    kept = selector([Hit(docs[i], 1.0) for i in "bcde"], draft, probe)
    assert [h.id for h in kept] == ["b", "c"]  # b was chosen before; d's step is empty, so c beats it
    assert probe.calls[-3:] == [["b", "c"], ["b", "d"], ["b", "e"]]  # each new document after the chosen ones
