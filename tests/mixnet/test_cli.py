"""The ``mixnet`` console command, run as a real process the way a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from mixcore.params import NetworkParams
from mixnet.cli import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixnet.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_params_json_is_one_object_with_the_defaults() -> None:
    result = _run("params", "--json")
    assert result.returncode == 0, result.stderr
    assert NetworkParams.from_dict(json.loads(result.stdout)) == NetworkParams()


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("mixnet ")


def test_unknown_command_fails_without_traceback() -> None:
    result = _run("no-such-command")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_no_command_prints_help_and_fails(capsys: object) -> None:
    assert main([]) == 2
