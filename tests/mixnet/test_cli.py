"""The ``mixnet`` console command, run as a real process the way a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_a_user_error_inside_a_task_group_is_one_line(tmp_path: Path) -> None:
    """A node whose config points at a missing key file fails in one line, exit 1."""
    root = tmp_path
    init = _run(
        "mixnode", "init", "--dir", str(root / "n"), "--role", "mix", "--listen",
        "127.0.0.1:1", "--authority", "00" * 32 + "@http://127.0.0.1:9", "--json",
    )
    assert init.returncode == 0, init.stderr
    (root / "n" / "identity.key").unlink()
    result = _run("mixnode", "run", "--config", json.loads(init.stdout)["config"])
    assert result.returncode == 1
    assert "identity.key" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_role_refuses_a_bad_params_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "params.json"
    bad.write_text(json.dumps({"bogus_rate": 1}))
    authority = "00" * 32 + "@http://127.0.0.1:9"
    commands = {
        "directory": ["directory", "init", "--dir", str(tmp_path / "d"), "--name", "a",
                      "--listen", "127.0.0.1:1"],
        "mixnode": ["mixnode", "init", "--dir", str(tmp_path / "n"), "--role", "mix",
                    "--listen", "127.0.0.1:2", "--authority", authority],
        "client": ["client", "init", "--dir", str(tmp_path / "c"), "--provider", "p",
                   "--authority", authority],
    }
    for role, argv in commands.items():
        assert main([*argv, "--params", str(bad)]) == 1, role
        err = capsys.readouterr().err
        assert f"params file {bad}" in err and "bogus_rate" in err, role
        assert not list(Path(argv[3]).glob("*.json")), role  # no config from a bad file
