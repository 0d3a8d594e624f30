"""The CLI: every subcommand answers --help, and without loading torch."""

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
