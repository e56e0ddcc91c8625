"""``dynaprag calibrate`` says how often a θ fires as a share of questions ("100 % of the 4 questions")."""
from __future__ import annotations

from typer.testing import CliRunner

from dynaprag.cli import app
from dynaprag.eval.calibrate import Calibration, config_yaml, percent


def _fitted() -> Calibration:
    return Calibration(method="dragin", trigger="rind", dataset="demo", model="smollm2-135m", question_file="q.jsonl",
                       start=4, question_ids=("a", "b", "c", "d"), maxima=(1.0, 2.0, 3.0, 4.0), target_rate=0.5,
                       theta=2.0, preset_theta=0.5, max_new_tokens=16,
                       config={"method": "dragin", "trigger": {"name": "rind", "theta": 2.0}})


def test_percent_reads_as_a_share():
    assert (percent(1.0), percent(0.5), percent(1 / 3), percent(0.0)) == ("100 %", "50 %", "33 %", "0 %")


def test_written_config_and_cli_state_fire_rates_as_shares(tmp_path, monkeypatch):
    cal = _fitted()
    text = config_yaml(cal)
    assert "fires on its no-retrieval draft for 50 % of the split's questions" in text
    assert "at the preset theta it would fire for 100 % of them" in text
    # the command's own sentence (the fit itself is tested on the real model in test_calibrate.py)
    import dynaprag.eval.calibrate as module

    monkeypatch.setattr(module, "calibrate", lambda *args, **kwargs: cal)
    result = CliRunner().invoke(app, ["calibrate", "--method", "dragin", "--dataset", "demo", "--start", "4",
                                      "--n", "4", "--out", str(tmp_path / "c.yaml")])
    assert result.exit_code == 0, result.output
    assert ("fires on 50 % of the 4 questions (target 50 %; at the preset theta 0.5 it would fire on 100 % of "
            "them)") in " ".join(result.output.split())
