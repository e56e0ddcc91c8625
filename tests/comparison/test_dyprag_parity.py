"""DyPRAG's translator forward pass and the delta it injects, against the reference's arithmetic.

Trae1ounG/DyPRAG @8c999be, computed from its code's formulas on fixed weights:

- ``ProjectorLoRA`` / ``MLPHypernet`` (``src/projector.py:34-91``): the input is the document
  embedding with the layer index appended (``torch.cat([x, idx])``); ``A = linear2(relu(linear1(in)))``
  reshaped to ``(r, in_features)`` and, by a separate network, ``B`` to ``(out_features, r)``;
  no biases.
- the k passages' outputs are averaged element-wise, A with A and B with B
  (``src/inference_dyprag.py:104-106``);
- ``delta_inject`` sets ``delta = lora_B @ lora_A`` with no α/r (``src/utils.py:282-298``) and the
  patched MLP adds ``x @ delta.T`` to the projection's output (``src/models/modeling_qwen2.py:59-64``,
  ``modeling_llama.py:192-201``).

The test runs the real 135M model's projections, a translator with fixed (non-negligible)
weights saved as ``dynaprag translator train`` saves it, and the ``dyprag`` injector itself.
"""
from __future__ import annotations

import torch

from dynaprag.corpus import Passage
from dynaprag.inject.parametric import DyPragInjector
from dynaprag.lm.generator import Generator
from dynaprag.parametric.translator import (ParameterTranslator, TranslatorConfig, embed_passages,
                                            translator_metadata)

MODULE = "model.layers.5.mlp.down_proj"  # in = intermediate, out = hidden: A and B have different shapes
PRAG_SCALING = 16.0  # PRAG's LoRA α/r (α 32, r 2): the teacher's scale, not the generated adapter's


def _fixed(translator: ParameterTranslator) -> None:
    """Deterministic weights large enough that the delta shows (the reference initialises N(0, 1e-7))."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in translator.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def _reference_factors(translator: ParameterTranslator, embedding: torch.Tensor, name: str):
    """``MLPHypernet.forward`` of ``A_hypernet`` and ``B_hypernet`` for one module (projector.py:34-39, 86-91)."""
    net = translator.nets[name.replace(".", "__")]
    layer = int(name.split(".")[2])
    x = torch.cat([embedding.float(), torch.tensor([float(layer)])])
    w1a, w2a = net.net_a[0].weight, net.net_a[2].weight
    w1b, w2b = net.net_b[0].weight, net.net_b[2].weight
    a = (w2a @ torch.relu(w1a @ x)).reshape(translator.rank, net.in_features)
    b = (w2b @ torch.relu(w1b @ x)).reshape(net.out_features, translator.rank)
    return a, b


def test_the_injected_delta_is_the_mean_factors_product_without_alpha_over_r(lm, tmp_path):
    translator = ParameterTranslator.for_model(lm.model, ["down_proj"], rank=2, hidden=32)
    _fixed(translator)
    path = tmp_path / "translator.safetensors"
    translator.save(path, translator_metadata(lm, TranslatorConfig(), PRAG_SCALING, ["down_proj"]))
    passages = [Passage("p1", "", "Jaws is a 1975 film directed by Steven Spielberg."),
                Passage("p2", "", "Steven Spielberg was born in 1946 in Cincinnati, Ohio.")]
    with torch.no_grad():
        embeddings = embed_passages(lm, passages)
        factors = [_reference_factors(translator, e, MODULE) for e in embeddings]
        a = torch.stack([f[0] for f in factors]).mean(0)
        b = torch.stack([f[1] for f in factors]).mean(0)
        delta = b @ a
    injector = DyPragInjector(translator=str(path))
    injector.bind(Generator(lm))
    injection = injector.inject(passages, "Who directed Jaws?")
    module = dict(lm.model.named_modules())[MODULE]
    x = torch.randn(3, module.in_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = module(x)
        with injection.apply():
            injected = module(x)
    assert torch.allclose(injected - plain, x @ delta.T, rtol=1e-4, atol=1e-4)  # float32 sums of ~10-sized terms
    assert injection.kind == "parametric" and not injection.context
