"""DyPRAG translator conventions of the reference (Trae1ounG/DyPRAG @8c999be): architecture,
initialisation, delta scale and the KL term, on small arrays (no model needed)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dynaprag.parametric.translator import ParameterTranslator, TranslatorConfig, kl_term
from floats import approx32

SHAPES = {"model.layers.0.mlp.gate_proj": (12, 8), "model.layers.1.mlp.down_proj": (8, 12)}  # (out, in)


def test_separate_a_and_b_networks_without_bias_and_small_normal_init():
    torch.manual_seed(0)
    net = ParameterTranslator(SHAPES, embed_dim=8, rank=2, hidden=32)
    for name, (out_f, in_f) in SHAPES.items():
        hyper = net.nets[name.replace(".", "__")]
        for sub, width in ((hyper.net_a, 2 * in_f), (hyper.net_b, out_f * 2)):
            first, act, last = sub
            assert isinstance(act, nn.ReLU)
            assert (first.in_features, first.out_features, last.out_features) == (8 + 1, 32, width)
            assert first.bias is None and last.bias is None
            for w in (first.weight, last.weight):
                assert 0 < float(w.std()) < 1e-6
        assert hyper.net_a is not hyper.net_b and not any(p is q for p in hyper.net_a.parameters()
                                                          for q in hyper.net_b.parameters())
    out = net(torch.randn(8))
    assert out["model.layers.0.mlp.gate_proj.lora_A"].shape == (2, 8)
    assert out["model.layers.0.mlp.gate_proj.lora_B"].shape == (12, 2)
    assert out["model.layers.1.mlp.down_proj.lora_A"].shape == (2, 12)


def test_layer_index_enters_the_input():
    torch.manual_seed(0)
    net = ParameterTranslator({"model.layers.0.mlp.up_proj": (4, 4), "model.layers.5.mlp.up_proj": (4, 4)}, 4, 2, 8)
    zero = net.nets["model__layers__0__mlp__up_proj"].net_a[0]
    five = net.nets["model__layers__5__mlp__up_proj"].net_a[0]
    five.weight.data.copy_(zero.weight.data)
    x = torch.ones(4)
    assert not torch.equal(zero(torch.cat([x, x.new_tensor([0.0])])), five(torch.cat([x, x.new_tensor([5.0])])))


def test_reference_delta_scale_is_one():
    assert TranslatorConfig().generated_scale(16.0) == 1.0
    assert TranslatorConfig(delta_scale="alpha-over-r").generated_scale(16.0) == 16.0
    with pytest.raises(ValueError, match="delta_scale"):
        TranslatorConfig(delta_scale="half")


def test_kl_term_sums_over_positions_like_batchmean_with_batch_one():
    student = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]]])
    teacher = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])
    expected = 0.0
    for pos in range(2):
        p = torch.softmax(teacher[0, pos], -1)
        q = torch.softmax(student[0, pos], -1)
        expected += float((p * (p.log() - q.log())).sum())
    assert float(kl_term(student, teacher, "padded-sum")) == approx32(expected)
    assert float(kl_term(student, teacher, "sum")) == approx32(expected)
    assert float(kl_term(student, teacher, "mean")) == approx32(expected / 2)
    assert float(kl_term(teacher, teacher, "sum")) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.slow
def test_padded_kl_adds_the_pad_positions_on_the_real_model(lm):
    """The reference's KL runs over the sample padded to 3000 positions: padded-sum >= sum, and
    the LM loss (labels -100 on pads) is the same either way. (A short pad keeps this fast.)"""
    from dynaprag.corpus import Passage
    from dynaprag.parametric.lora import target_modules
    from dynaprag.parametric.translator import TrainingPair, translator_loss

    torch.manual_seed(0)
    shapes = {n: tuple(m.weight.shape) for n, m in target_modules(lm.model).items()}
    net = ParameterTranslator(shapes, lm.model.config.hidden_size, 2, 32)
    teacher = {f"{n}.lora_{ab}": torch.randn(*(2, s[1]) if ab == "A" else (s[0], 2)) * 1e-2
               for n, s in shapes.items() for ab in "AB"}
    pair = TrainingPair(Passage("d", "", "x"), teacher, [])
    sample = lm.tokenizer.encode("Zorblat Lake is in Finland.", add_special_tokens=False)
    emb = torch.randn(lm.model.config.hidden_size)
    with torch.no_grad():
        padded = translator_loss(lm, net, emb, pair, sample, 16.0, TranslatorConfig(kl_pad_to=len(sample) + 8))
        plain = translator_loss(lm, net, emb, pair, sample, 16.0, TranslatorConfig(kl_reduction="sum"))
    assert float(padded["kl"]) > float(plain["kl"]) > 0
    assert float(padded["lm"]) == pytest.approx(float(plain["lm"]), rel=1e-4)


@pytest.mark.slow
def test_training_resumes_after_a_kill_with_the_same_weights(lm, tmp_path):
    """A run stopped after step 2 and resumed from its saved state takes the same remaining steps
    and ends with the same weights and losses as an uninterrupted run; a state saved by other
    settings is refused with the file named."""
    from dataclasses import replace

    from dynaprag.corpus import Passage
    from dynaprag.parametric.lora import target_modules
    from dynaprag.parametric.training_state import TrainingStateError
    from dynaprag.parametric.translator import TrainingPair, train_translator

    torch.manual_seed(0)
    shapes = {n: tuple(m.weight.shape) for n, m in target_modules(lm.model).items()}
    texts = ["Zorblat Lake is in Finland.", "Qwerty Pike is in Chile.", "The Plumbo River is in Peru."]
    pairs = [TrainingPair(Passage(f"d{i}", "", text),
                          {f"{n}.lora_{ab}": torch.randn(*(2, s[1]) if ab == "A" else (s[0], 2)) * 1e-2
                           for n, s in shapes.items() for ab in "AB"},
                          [lm.tokenizer.encode(text, add_special_tokens=False)])
             for i, text in enumerate(texts)]
    config = TranslatorConfig(learning_rate=1e-3, epochs=2, max_tokens=16, kl_reduction="sum")
    targets = sorted({n.rsplit(".", 1)[-1] for n in shapes})

    def train(cfg=config, **kw):
        return train_translator(lm, pairs, 16.0, targets, 2, cfg, **kw)

    whole, whole_curve = train()

    class Killed(Exception):
        pass

    def kill_at_step_2(row):
        if row["step"] == 2:
            raise Killed

    state = tmp_path / "translator.state.safetensors"
    with pytest.raises(Killed):
        train(state_path=state, save_every=0, progress=kill_at_step_2)
    resumed, curve = train(state_path=state, save_every=0)
    assert [r["step"] for r in curve] == list(range(1, 2 * len(pairs) + 1))
    assert [(r["doc"], r["total_loss"]) for r in curve] == [(r["doc"], r["total_loss"]) for r in whole_curve]
    mine = resumed.state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in whole.state_dict().items())
    torch.manual_seed(config.seed)  # the initial weights train_translator starts from
    start = ParameterTranslator.for_model(lm.model, targets, 2, config.hidden).state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in mine.items())  # the steps changed the weights
    with pytest.raises(TrainingStateError, match="other documents or settings") as err:
        train(replace(config, learning_rate=1e-4), state_path=state)
    assert str(state) in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["padded-sum", "mean"])
def test_chunked_loss_equals_the_whole_logits_loss_on_the_real_model(lm, reduction):
    """The chunked head and losses with recomputed layers (the default) give the losses and the
    translator gradients of the direct computation, and leave the model as they found it."""
    from dynaprag.corpus import Passage
    from dynaprag.parametric.lora import target_modules
    from dynaprag.parametric.translator import TrainingPair, translator_loss

    torch.manual_seed(0)
    shapes = {n: tuple(m.weight.shape) for n, m in target_modules(lm.model).items()}
    teacher = {f"{n}.lora_{ab}": torch.randn(*(2, s[1]) if ab == "A" else (s[0], 2)) * 1e-2
               for n, s in shapes.items() for ab in "AB"}
    pair = TrainingPair(Passage("d", "", "x"), teacher, [])
    sample = lm.tokenizer.encode("Zorblat Lake is a lake in Finland, found in 1873.", add_special_tokens=False)
    emb = torch.randn(lm.model.config.hidden_size)
    net = ParameterTranslator(shapes, lm.model.config.hidden_size, 2, 32)
    with torch.no_grad():  # weights large enough for the generated adapter to move the logits
        for p in net.parameters():
            p.mul_(2e3)
    results = {}
    for chunk in (0, 7):
        net.zero_grad()
        cfg = TranslatorConfig(kl_reduction=reduction, kl_pad_to=len(sample) + 12, loss_chunk=chunk)
        losses = translator_loss(lm, net, emb, pair, sample, 16.0, cfg, backward=True)
        results[chunk] = (losses, {k: p.grad.clone() for k, p in net.named_parameters()})
    (direct, direct_grads), (chunked, chunked_grads) = results[0], results[7]
    assert float(direct["kl"]) > 1e-6 and float(direct["lm"]) > 0
    for key in ("total", "lm", "kl", "mse"):
        assert float(chunked[key]) == pytest.approx(float(direct[key]), rel=1e-4, abs=1e-7), key
    scale = max(float(g.abs().max()) for g in direct_grads.values())
    assert scale > 0
    for k, g in direct_grads.items():
        torch.testing.assert_close(chunked_grads[k], g, rtol=1e-3, atol=1e-4 * scale)
    from dynaprag.parametric.chunked_loss import layer_checkpointing

    with layer_checkpointing(lm.model) as on:  # what the chunked run used: layers really recomputed
        assert on and lm.model.training and lm.model.is_activation_checkpointing
    assert not lm.model.training and not lm.model.is_activation_checkpointing
