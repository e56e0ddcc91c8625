"""Method presets: options are routed to the axis that owns the knob, typos are errors."""
import pytest

from dynaprag.config import ConfigError
from dynaprag.dynamic.methods import build_method
from dynaprag.pipeline import _load_parametric_presets


def test_options_reach_trigger_and_injector():
    _load_parametric_presets()
    spec, trigger, _formulator, injector = build_method(
        "dragin", injector="prag", options={"theta": 0.5, "on_missing": "context"})
    assert spec.injector == "prag"
    assert trigger.theta == 0.5
    assert injector.on_missing == "context"


def test_unknown_option_names_the_key():
    with pytest.raises(ConfigError, match="bogus"):
        build_method("dragin", options={"bogus": 1})
