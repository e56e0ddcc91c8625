"""Threshold calibration: the θ choice on hand-made maxima, and a real fit written as an eval config."""
from __future__ import annotations

import math
import random

import pytest
import yaml
from typer.testing import CliRunner

from dynaprag.cli import app
from dynaprag.config import ConfigError
from dynaprag.eval.calibrate import CalibrationError, calibrate, choose_theta, fire_rate, quantile, write_config


# -- the θ choice on hand-made per-question maxima -------------------------------------------
def test_median_target_fires_on_half_and_holds_the_question_at_theta():
    maxima = [0.3, 0.1, 0.4, 0.2]
    theta = choose_theta(maxima, 0.5)
    assert theta == 0.2  # an observed maximum; its question does not fire (score > θ is strict)
    assert fire_rate(maxima, theta) == 0.5


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.75, 0.9])
def test_theta_is_the_nearest_rank_quantile_of_one_minus_the_rate(rate):
    rng = random.Random(7)
    for n in range(1, 30):
        maxima = [rng.uniform(0, 2) for _ in range(n)]
        theta = choose_theta(maxima, rate)
        assert theta == quantile(maxima, 1 - rate)
        assert fire_rate(maxima, theta) == math.floor(rate * n) / n


def test_rate_zero_never_fires_and_rate_one_fires_on_every_question():
    maxima = [0.5, 0.1, 0.9, 0.1]
    assert choose_theta(maxima, 0.0) == 0.9
    assert fire_rate(maxima, choose_theta(maxima, 0.0)) == 0.0
    low = choose_theta(maxima, 1.0)
    assert low < 0.1 and low == math.nextafter(0.1, -math.inf)
    assert fire_rate(maxima, low) == 1.0


def test_negative_scores_as_seakr_eigen_scores_work_alike():
    assert choose_theta([-5.0, -7.0, -6.0], 1 / 3) == -6.0


def test_ties_at_theta_fire_fewer_than_the_target():
    maxima = [0.2, 0.2, 0.2, 0.9]
    theta = choose_theta(maxima, 0.5)
    assert theta == 0.2 and fire_rate(maxima, theta) == 0.25


def test_unscored_questions_never_fire_and_cap_the_reachable_rate():
    assert choose_theta([-math.inf, 0.5], 0.5) == math.nextafter(0.5, -math.inf)
    with pytest.raises(CalibrationError, match="only 1 of 2 questions"):
        choose_theta([-math.inf, 0.5], 1.0)
    with pytest.raises(CalibrationError, match="no score on any of the 2"):
        choose_theta([-math.inf, -math.inf], 0.5)


@pytest.mark.parametrize("maxima, rate, message", [
    ([], 0.5, "no per-question maxima"),
    ([0.1, math.nan, 0.3], 0.5, "NaN on 1 of 3"),
    ([0.1, 0.2], 1.5, "between 0 and 1"),
    ([0.1, 0.2], -0.1, "between 0 and 1"),
    ([0.1, 0.2], math.nan, "between 0 and 1"),
])
def test_empty_nan_and_out_of_range_are_refused(maxima, rate, message):
    with pytest.raises(CalibrationError, match=message):
        choose_theta(maxima, rate)
    assert issubclass(CalibrationError, ValueError)


# -- refusals before any model loads --------------------------------------------------------
def test_a_trigger_that_does_not_fire_on_a_score_above_theta_is_refused():
    with pytest.raises(ConfigError, match="trigger 'once' of method 'sr-rag' cannot be calibrated"):
        calibrate("sr-rag", "demo", start=0, n=3)


def test_a_split_beyond_the_file_names_the_file_and_the_fix():
    with pytest.raises(ConfigError, match=r"demo_questions.jsonl holds 12 questions.*lower --start or --n"):
        calibrate("dragin", "demo")  # default start 100


def test_run_keys_are_not_overrides():
    with pytest.raises(ConfigError, match="'limit' is a run key"):
        calibrate("dragin", "demo", start=0, n=3, overrides=["limit=5"])


def test_cli_errors_are_one_red_line_and_exit_2(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", "--method", "sr-rag", "--dataset", "demo", "--start", "0",
                                 "--n", "2", "--out", str(tmp_path / "c.yaml")])
    message = " ".join(result.output.split())  # rich wraps the one line at the test terminal's width
    assert result.exit_code == 2 and message.startswith("error: ") and "Traceback" not in message
    assert "trigger 'once' of method 'sr-rag' cannot be calibrated" in message
    result = runner.invoke(app, ["calibrate", "--method", "dragin", "--dataset", "demo", "--start", "0",
                                 "--n", "2", "--target-rate", "1.5", "--out", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2 and "between 0 and 1" in " ".join(result.output.split())
    assert not (tmp_path / "c.yaml").exists()


# -- a real fit: the 135M model on the packaged demo questions ------------------------------
@pytest.fixture(scope="module")
def fitted(lm):
    return calibrate("dragin", "demo", "smollm2-135m", start=0, n=3, max_new_tokens=16, dtype="float32", lm=lm)


def test_fit_records_each_question_and_chooses_theta_from_the_maxima(fitted):
    assert fitted.question_ids == ("q01", "q02", "q03")
    from dynaprag.dynamic.methods import resolve_method

    preset = resolve_method("dragin").settings()["trigger"]
    assert fitted.trigger == preset["name"] and fitted.preset_theta == preset["theta"]
    assert all(math.isfinite(m) and m >= 0 for m in fitted.maxima)
    assert fitted.theta == choose_theta(fitted.maxima, 0.5)
    assert fitted.fire_rate == fire_rate(fitted.maxima, fitted.theta)
    assert "questions 0..2 (0-based)" in fitted.split


def test_the_fitted_theta_fires_on_exactly_the_predicted_questions(fitted, lm):
    from dynaprag.eval.experiment import resolve
    from dynaprag.pipeline import Pipeline
    from dynaprag.retrieval import demo_questions_path
    from dynaprag.eval.datasets import load_examples

    _, pipe_cfg = resolve("demo", method="dragin", overrides=["max_new_tokens=16", "dtype=float32"])
    pipe = Pipeline.from_config(pipe_cfg, lm=lm)
    questions = {ex.id: ex.question for ex in load_examples(demo_questions_path(), limit=3)}
    for qid, top in zip(fitted.question_ids, fitted.maxima):
        answer = pipe.answer(questions[qid], options={"trigger.theta": fitted.theta})
        assert bool(answer.trace.retrievals) == (top > fitted.theta), qid


def test_written_config_is_read_by_eval_with_the_calibrated_theta(fitted, tmp_path):
    from dynaprag.eval.experiment import resolve

    path = write_config(fitted, tmp_path / "dragin-demo.yaml")
    text = path.read_text()
    assert "# split: questions 0..2 (0-based)" in text and "target rate 0.5" in text and "git " in text
    assert yaml.safe_load(text)["trigger"]["theta"] == fitted.theta
    run_cfg, pipe_cfg = resolve(config_file=str(path))
    assert pipe_cfg.trigger["theta"] == fitted.theta
    assert pipe_cfg.trigger == {**fitted.config["trigger"]} and pipe_cfg.method == "dragin"
    assert (pipe_cfg.max_new_tokens, pipe_cfg.dtype, pipe_cfg.model) == (16, "float32", "smollm2-135m")
    assert run_cfg.dataset == "demo" and run_cfg.limit is None  # start 0: no earlier questions to limit to


def test_cli_writes_a_config_whose_split_comes_before_the_eval_slice(tmp_path):
    out = tmp_path / "cal.yaml"
    result = CliRunner().invoke(app, ["calibrate", "--method", "dragin", "--dataset", "demo", "--model",
                                      "smollm2-135m", "--dtype", "float32", "--start", "9", "--n", "2",
                                      "--max-new-tokens", "8", "--target-rate", "0", "--no-progress",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    from dynaprag.eval.experiment import resolve

    run_cfg, pipe_cfg = resolve(config_file=str(out))
    assert run_cfg.limit == 9  # evaluation stops before the calibration questions 9..10
    assert "questions 9..10 (0-based)" in out.read_text()
    assert pipe_cfg.trigger["theta"] == yaml.safe_load(out.read_text())["trigger"]["theta"]
