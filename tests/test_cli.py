"""The CLI: every subcommand answers --help, and without loading torch."""

import os
import subprocess
import sys

import pytest

from valuedrift.cli import COMMANDS


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help(command):
    out = subprocess.run(["valuedrift", command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "usage: valuedrift " + command in out.stdout


def test_parsing_the_cli_imports_no_heavy_library():
    code = ("import sys; from valuedrift.cli import make_parser; make_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'sklearn', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def run_missing_config(tmp_path, *options, env=None):
    """`valuedrift check-config` on a config file that does not exist: an input error."""
    environ = {k: v for k, v in os.environ.items() if k != "VALUEDRIFT_DEBUG"}
    return subprocess.run(["valuedrift", *options, "check-config", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, env={**environ, **(env or {})})


def test_input_errors_show_a_traceback_only_with_debug(tmp_path):
    plain = run_missing_config(tmp_path)
    assert plain.returncode == 2
    assert "No such file or directory" in plain.stderr and "missing.yaml" in plain.stderr
    assert "Traceback" not in plain.stderr
    for debug in (run_missing_config(tmp_path, "--debug"), run_missing_config(tmp_path, env={"VALUEDRIFT_DEBUG": "1"})):
        assert debug.returncode == 2, debug.stderr
        assert "Traceback (most recent call last)" in debug.stderr
        assert "FileNotFoundError" in debug.stderr and "missing.yaml" in debug.stderr
    assert "Traceback" not in run_missing_config(tmp_path, env={"VALUEDRIFT_DEBUG": "0"}).stderr
