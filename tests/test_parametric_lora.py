"""k rank-r adapters applied as one rank k·r delta equal the sum of their deltas (PRAG's combine)."""
from __future__ import annotations

import torch
from torch import nn

from dynaprag.parametric.lora import LoraInjection, applied, combine, delta_weight, from_peft_state_dict


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj = nn.Linear(8, 12, bias=False)
        self.up_proj = nn.Linear(8, 12, bias=False)
        self.down_proj = nn.Linear(12, 8, bias=False)

    def forward(self, x):
        return self.down_proj(torch.nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def _random_adapter(model, rank, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in ("gate_proj", "up_proj", "down_proj"):
        w = getattr(model, name).weight
        out[f"{name}.lora_A"] = torch.randn(rank, w.shape[1], generator=g, dtype=torch.float64)
        out[f"{name}.lora_B"] = torch.randn(w.shape[0], rank, generator=g, dtype=torch.float64)
    return out


def test_combined_delta_equals_sum_of_deltas_on_a_layer():
    torch.manual_seed(0)
    layer = nn.Linear(8, 6, bias=True).double()
    adapters = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        adapters.append({"lora_A": torch.randn(2, 8, generator=g, dtype=torch.float64),
                         "lora_B": torch.randn(6, 2, generator=g, dtype=torch.float64)})
    keyed = [{f"layer.{k}": v for k, v in a.items()} for a in adapters]
    holder = nn.Module()
    holder.layer = layer
    x = torch.randn(5, 8, dtype=torch.float64)
    scaling, weights = 16.0, [1.0, 0.5, 2.0]
    reference_w = layer.weight + sum(w * delta_weight(a, "layer", scaling).double() for a, w in zip(keyed, weights))
    reference = x @ reference_w.T + layer.bias
    combined = combine(keyed, scaling, weights)
    assert combined["layer"][0].shape == (6, 8) and combined["layer"][1].shape == (6, 6)  # rank k·r = 6
    before = layer.weight.detach().clone()
    with applied(holder, combined):
        out = holder.layer(x)
    torch.testing.assert_close(out, reference, rtol=1e-10, atol=1e-10)
    assert torch.equal(layer.weight, before)  # no merge: base weights never change
    torch.testing.assert_close(holder.layer(x), x @ before.T + layer.bias)  # hooks removed on exit


def test_combined_model_matches_peft_cat_combination():
    """Our on-the-fly rank-k·r delta equals peft's add_weighted_adapter(combination_type="cat")."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    torch.manual_seed(0)
    base = TinyMLP()
    x = torch.randn(4, 8)
    ours = [{k: v.float() for k, v in _random_adapter(base, 2, s).items()} for s in range(3)]
    with LoraInjection(base, combine(ours, 32 / 2)):
        expected = base(x)
    plain = base(x)
    cfg = LoraConfig(r=2, lora_alpha=32, lora_dropout=0.0, target_modules=["gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(base, cfg, adapter_name="a0")
    for i in (1, 2):
        model.add_adapter(f"a{i}", cfg)
    for i, adapter in enumerate(ours):
        state = {f"base_model.model.{k}.weight": v for k, v in adapter.items()}
        set_peft_model_state_dict(model, state, adapter_name=f"a{i}")
    assert from_peft_state_dict(get_peft_model_state_dict(model, adapter_name="a1")).keys() == ours[1].keys()
    model.add_weighted_adapter(["a0", "a1", "a2"], [1.0, 1.0, 1.0], "sum", combination_type="cat")
    model.set_adapter("sum")
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(plain, expected)
