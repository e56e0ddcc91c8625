"""Method resolution: typed per-axis knobs, checked before any model loads, recorded in full."""
import math

import pytest

from dynaprag.config import ConfigError
from dynaprag.dynamic.methods import AXES, METHODS, check_tunable, resolve_method
from dynaprag.lm.signals import ATTENTION
from dynaprag.pipeline import PipelineConfig, resolve_config


def test_axis_overrides_reach_their_component():
    m = resolve_method("dragin-inline", {"trigger": {"theta": 0.5}, "formulator": {"n": 7},
                                  "selector": {"name": "seakr-uncertainty", "samples": 4},
                                  "injector": {"name": "prag", "on_missing": "context"}})
    assert (m.trigger.theta, m.formulator.n, m.selector.samples, m.injector.on_missing) == (0.5, 7, 4, "context")
    assert m.names == {"trigger": "rind-inline", "formulator": "qfs", "selector": "seakr-uncertainty",
                       "injector": "prag"}


def test_options_alias_routes_to_the_one_axis_with_the_knob():
    m = resolve_method("flare", options={"theta": 0.5, "beta": 0.3})
    assert (m.trigger.theta, m.formulator.beta) == (0.5, 0.3)
    with pytest.raises(ConfigError, match="ambiguous.*trigger.samples or selector.samples"):
        resolve_method("seakr", options={"samples": 4})
    assert resolve_method("seakr", options={"trigger.samples": 4}).trigger.samples == 4


def test_changing_a_component_drops_the_presets_knobs_for_it():
    m = resolve_method("token-rag", {"trigger": {"name": "rind"}})
    assert m.trigger.theta == 0.8  # DRAGIN's own default, not token-rag's 0.08
    assert m.formulator.theta == 0.08  # the formulator was not changed


@pytest.mark.parametrize("choices, options, match", [
    ({"trigger": {"thetta": 1}}, None, "unknown trigger knob 'thetta'.*valid knobs: check_real_words, equation, "
                                       "look_ahead, theta"),
    (None, {"bogus": 1}, "unknown method option 'bogus'.*trigger.theta"),
    ({"trigger": {"theta": "high"}}, None, "trigger.theta: expected a number"),
    ({"trigger": {"theta": math.nan}}, None, "NaN"),
    ({"formulator": {"top_k": -3}}, None, "formulator.top_k: must be >= 1"),
    ({"trigger": {"equation": "fancy"}}, None, "not one of"),
    ({"trigger": {"name": "no-such-trigger"}}, None, "unknown trigger 'no-such-trigger'; choose one of"),
    ({"when": {}}, None, "unknown axis 'when'"),
])
def test_bad_settings_fail_at_resolution_naming_the_key(choices, options, match):
    with pytest.raises(ConfigError, match=match):
        resolve_method("dragin", choices, options)


def test_unknown_method_lists_the_valid_names():
    with pytest.raises(ConfigError, match="unknown method 'dragon'; choose one of: .*dragin"):
        resolve_method("dragon")
    with pytest.raises(ValueError, match="already registered"):
        from dynaprag.dynamic.methods import MethodSpec
        METHODS.register("dragin", MethodSpec("rind"))


def test_resolved_config_lists_every_knob_and_resolves_to_the_same_method():
    cfg = resolve_config(PipelineConfig(method="seakr", options={"theta": -5.0}, selector="top-k"))
    assert set(AXES) == {a for a in AXES if getattr(cfg, a)["name"]}
    assert cfg.trigger == {"name": "seakr", "samples": 20, "alpha": 1e-3, "layer": -1, "sample_tokens": 100,
                           "temperature": 1.0, "top_k": 50, "top_p": 0.9, "theta": -5.0, "max_steps": 7,
                           "max_docs": 5}
    assert cfg.selector == {"name": "top-k", "k": 0} and cfg.options == {}
    assert resolve_config(cfg) == cfg


def test_every_preset_resolves_and_declares_what_it_needs():
    for name in METHODS.names():
        m = resolve_method(name)
        assert m.paper
        assert isinstance(m.rolls_back, bool)
    assert ATTENTION in resolve_method("dragin-inline").formulator.reads and resolve_method("dragin").rolls_back
    assert resolve_method("dragin").trigger.needs_probe and resolve_method("dragin").formulator.needs_probe
    assert not resolve_method("sr-rag").rolls_back
    assert resolve_method("seakr").trigger.needs_probe and resolve_method("seakr").selector.needs_probe


def test_per_dataset_reference_settings():
    hotpot, wiki = resolve_method("dragin", dataset="hotpotqa"), resolve_method("dragin", dataset="2wikimultihopqa")
    assert (hotpot.trigger.theta, hotpot.trigger.look_ahead, hotpot.formulator.top_k) == (0.8, 100, 35)
    assert (wiki.trigger.theta, wiki.trigger.look_ahead, wiki.formulator.top_k) == (1.0, 64, 25)
    assert resolve_method("dragin", {"trigger": {"theta": 2.0}}, dataset="2wikimultihopqa").trigger.theta == 2.0


def test_requests_may_only_set_numeric_knobs():
    check_tunable(resolve_method("prag"), {})
    check_tunable(resolve_method("dragin", options={"theta": 0.3}), {"theta": 0.3})
    for key in ("store", "encode", "on_missing"):
        with pytest.raises(ConfigError, match=f"{key}.*cannot be set per request"):
            check_tunable(resolve_method("prag"), {key: "x"})
    with pytest.raises(ConfigError, match="translator.*cannot be set per request"):
        check_tunable(resolve_method("dyprag"), {"translator": "/etc/passwd"})


def test_every_method_module_is_loaded_through_the_explicit_family_list():
    """A family folder left out of ``FAMILIES`` (or a module its ``__init__`` forgets) would
    register nothing; in a fresh interpreter, importing the catalog loads every module on disk."""
    import subprocess
    import sys
    from pathlib import Path

    from dynaprag.dynamic import methods

    root = Path(methods.__file__).parent
    on_disk = {"dynaprag.dynamic.methods." + ".".join(p.relative_to(root).with_suffix("").parts)
               for p in root.rglob("*.py")}
    on_disk = {name.removesuffix(".__init__") for name in on_disk} - {"dynaprag.dynamic.methods"}
    code = ("import sys, dynaprag.dynamic.methods\n"
            "print('\\n'.join(m for m in sys.modules if m.startswith('dynaprag.dynamic.methods.')))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                 .stdout.split())
    assert on_disk - loaded == set(), "not loaded by dynaprag.dynamic.methods: list the family in FAMILIES"
    assert {f.__name__.rsplit(".", 1)[1] for f in methods.FAMILIES} == {
        p.name for p in root.iterdir() if (p / "__init__.py").exists()}

