"""Pure signal functions against hand-computed values."""
import math

import torch

from dynaprag.lm import signals
from floats import approx32


def test_entropy_uniform_and_peaked():
    uniform = torch.log(torch.full((4,), 0.25))
    assert float(signals.entropy(uniform)) == approx32(math.log(4))
    probs = torch.tensor([0.5, 0.25, 0.25, 0.0])
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert float(signals.entropy(torch.log(probs))) == approx32(expected)


def test_log_softmax_is_float32_and_normalised():
    logits = torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16)
    lp = signals.log_softmax(logits)
    assert lp.dtype == torch.float32
    assert float(lp.exp().sum()) == approx32(1.0)


def test_top_alternatives_order():
    lp = torch.log(torch.tensor([0.1, 0.6, 0.3]))
    ids, values = signals.top_alternatives(lp, 2)
    assert ids == [1, 2]
    assert values[0] == approx32(math.log(0.6))


def test_top_p_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    lp = signals.apply_sampling(logits, temperature=1.0, top_p=0.7)
    kept = (lp > float("-inf")).tolist()
    assert kept == [True, True, False, False]
    assert float(lp.exp().sum()) == approx32(1.0)
    assert float(lp[0].exp()) == approx32(0.5 / 0.8)
