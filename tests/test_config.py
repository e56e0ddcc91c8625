"""Typed configs: overrides, files, and errors that name the key."""
from dataclasses import dataclass, field

import pytest

from dynaprag.config import ConfigError, apply_overrides, from_dict, load_file, to_dict


@dataclass
class Inner:
    theta: float = 1.2
    names: tuple[str, ...] = ()


@dataclass
class Outer:
    method: str = "dragin"
    k: int = 3
    verbose: bool = False
    seed: int | None = None
    inner: Inner = field(default_factory=Inner)
    options: dict = field(default_factory=dict)


def test_overrides_are_typed():
    cfg = apply_overrides(Outer(), ["k=5", "inner.theta=0.5", "verbose=true", "seed=none",
                                    "inner.names=a,b", "options.alpha=0.1"])
    assert (cfg.k, cfg.inner.theta, cfg.verbose, cfg.seed) == (5, 0.5, True, None)
    assert cfg.inner.names == ("a", "b")
    assert cfg.options == {"alpha": 0.1}


@pytest.mark.parametrize("pair, key", [("kk=1", "kk"), ("inner.thetta=1", "inner.thetta"),
                                      ("k=abc", "k"), ("verbose=maybe", "verbose")])
def test_bad_overrides_name_the_key(pair, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        apply_overrides(Outer(), [pair])


def test_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: flare\nk: 4\ninner:\n  theta: 2.0\n")
    cfg = apply_overrides(from_dict(Outer, load_file(path)), ["k=6"])
    assert (cfg.method, cfg.k, cfg.inner.theta) == ("flare", 6, 2.0)
    assert to_dict(cfg)["inner"] == {"theta": 2.0, "names": []}


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("methd: flare\n")
    with pytest.raises(ConfigError, match="methd"):
        from_dict(Outer, load_file(path))


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_file(path)
