"""The command line: a thin layer whose errors are one line that says what to do."""
import subprocess
import sys

import pytest

from typer.testing import CliRunner

from dynaprag.cli import app

runner = CliRunner()


def test_models_lists_aliases_and_install_state():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for alias in ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        assert alias in result.output


def test_console_script_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "dynaprag.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "models" in out.stdout


@pytest.mark.parametrize("args, needle", [
    (["--method", "dragin", "trigger.thetta=1"], "valid knobs: check_real_words, equation, look_ahead, theta"),
    (["--method", "no-such-method"], "unknown method 'no-such-method'; choose one of"),
    (["--method", "dragin", "k=-3"], "k: must be >= 1"),
])
def test_eval_refuses_bad_settings_before_anything_loads_or_is_written(tmp_path, args, needle):
    from typer.testing import CliRunner

    from dynaprag.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["eval", "--dataset", "demo", "--out", str(out), *args])
    assert result.exit_code == 2
    assert needle in " ".join(result.output.split())
    assert not out.exists()
