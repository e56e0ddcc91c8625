"""bench/parametric's fixed-length comparison on the real tiny model and a real adapter store."""
from __future__ import annotations

import torch

from dynaprag.corpus import Passage
from dynaprag.eval.datasets import Example
from dynaprag.parametric.adapters import AdapterStore
from dynaprag.parametric.encode import EncodeConfig, PragPromptBuilder
from dynaprag.parametric.lora import target_modules

from bench_scripts import load_bench

load_bench("parametric")  # puts bench/ on sys.path
from _parametric_overhead import fixed_length_rows  # noqa: E402


def test_prag_and_sr_rag_answer_the_same_questions_at_the_same_length(lm, tmp_path):
    config = EncodeConfig()
    store = AdapterStore(tmp_path / "adapters", lm.fingerprint, config.store_config())
    passages = [Passage(f"p{i}", f"Title {i}", f"Passage number {i} is about the river Ness.") for i in range(3)]
    g = torch.Generator().manual_seed(0)
    for p in passages:
        store.put(p.content_hash, {f"{name}.lora_{part}": torch.randn(shape, generator=g) * 1e-3
                                   for name, linear in target_modules(lm.model).items()
                                   for part, shape in (("A", (config.rank, linear.in_features)),
                                                       ("B", (linear.out_features, config.rank)))})
    questions = [Example(id=f"q{i}", question=f"Where is river {i}?", answers=("Scotland",)) for i in range(2)]
    builder = PragPromptBuilder(lm.tokenizer, lm.chat_template, config.template())
    probe = torch.tensor([builder.build("Where is the Ness?")])
    with torch.inference_mode():
        before = lm.model(probe).logits
    rows = fixed_length_rows(lm, store, config.scaling, builder, {"hotpotqa": {q.id: passages for q in questions}},
                             {"hotpotqa": questions}, n=2, tokens=3)
    [row] = rows
    assert row["dataset"] == "hotpotqa" and row["questions"] == 2 and row["case"] == "prag vs sr-rag, 3 tokens"
    assert row["prag_s"] > row["prag_prefill_decode_s"] > 0 and row["prag_adapters_s"] > 0
    assert row["ratio_min"] <= row["ratio_to_sr_rag"] <= row["ratio_max"]
    with torch.inference_mode():  # the adapters' hooks are gone: the base model answers as before
        assert torch.equal(lm.model(probe).logits, before)
