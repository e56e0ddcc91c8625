"""Pure signal functions against hand-computed values, and the contract every signal keeps."""
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


# -- the Signal contract ------------------------------------------------------------------------
def test_the_union_of_declared_signals_keeps_each_once_attention_first():
    got = signals.union([(signals.HiddenState(3),), (signals.ATTENTION, signals.HiddenState(3)), (signals.Attention(),)])
    assert got == (signals.ATTENTION, signals.HiddenState(3))
    assert signals.HiddenState(3) != signals.HiddenState(4) and signals.HiddenState(3).key == "hidden:3"


def test_attention_is_filed_as_rows_over_the_answer_and_the_question():
    row = torch.arange(10, dtype=torch.float32)  # positions: 0-2 prefix, 3-5 question, 6-9 answer
    filed = signals.ATTENTION.file(row, signals.Layout(question=3, answer=6), index=2)
    assert filed.answer.tolist() == [6.0, 7.0] and filed.question.tolist() == [3.0, 4.0, 5.0]
    filed.answer[0] = -1.0
    assert row[6] == 6.0  # a copy: the draft keeps it after the sequence changes


def test_a_signal_says_why_a_model_cannot_give_it():
    from dynaprag.dynamic.component import CapabilityError, Component, check_model
    from dynaprag.testing import ScriptedGenerator

    class ReadsLayer9(Component):
        reads = (signals.HiddenState(9),)

    gen = ScriptedGenerator([], num_hidden_layers=4)
    assert signals.HiddenState(-5).missing(gen) is None and signals.ATTENTION.missing(gen) is None
    try:
        check_model([("trigger/x", ReadsLayer9())], gen)
    except CapabilityError as err:
        assert str(err) == "trigger/x reads hidden layer 9; the model has 4 layers"
    else:
        raise AssertionError("a layer the model lacks must be refused")


def test_the_scripted_double_reports_only_requested_and_scripted_signals():
    from dynaprag.lm.decoding import GenerationConfig
    from dynaprag.testing import ScriptedGenerator, ScriptedStep
    from dynaprag.testing.generator import ANSWER

    gen = ScriptedGenerator([ScriptedStep(" a", signals={"x": 1.5}), ScriptedStep(" b")])
    state = gen.start([ANSWER])

    class X(signals.Signal):
        key = "x"

    first = gen.step(state, GenerationConfig(signals=(X(), signals.ATTENTION)))
    assert first.signals["x"] == 1.5 and first.signals["attention"].shape == (1,)
    assert "x" not in gen.step(state, GenerationConfig(signals=(X(),))).signals  # not scripted: no value

