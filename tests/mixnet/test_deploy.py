"""The systemd units in ``deploy/`` stay runnable as the command changes: each parses, has what
a role's service needs (restart, umask 077, SIGTERM for a clean stop), and its ExecStart's
``mixnet ...`` command is one the installed ``mixnet`` accepts: every subcommand exists and every
flag it passes is one that subcommand's ``--help`` lists (argparse stops at ``--help``, so the
help alone would accept an unknown flag). The guide names every unit and links from the
README."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))
ROLES = {"mixnet-authority.service": ["directory", "run"],
         "mixnet-mixnode.service": ["mixnode", "run"],
         "mixnet-client.service": ["client", "run"]}


def parse_unit(path: Path) -> configparser.ConfigParser:
    """A unit file as systemd reads its sections and keys (case kept, no interpolation)."""
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text(), source=str(path))
    return unit


def mixnet_argv(exec_start: str, home: Path) -> list[str]:
    """The arguments after the ``mixnet`` program of an ExecStart line (``%h`` expanded)."""
    argv = shlex.split(exec_start.replace("%h", str(home)))
    if not argv or Path(argv[0]).name != "mixnet" or not Path(argv[0]).is_absolute():
        raise ValueError(f"ExecStart does not start with an absolute path to mixnet: {argv[:1]}")
    return argv[1:]


def help_text(args: list[str]) -> str:
    """``mixnet ARGS --help`` run for real; fails the test on a non-zero status."""
    result = subprocess.run(
        [sys.executable, "-m", "mixnet.cli", *args, "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, f"mixnet {' '.join(args)} --help: {result.stderr.strip()}"
    return result.stdout


def test_every_role_has_a_unit() -> None:
    assert sorted(p.name for p in UNITS) == sorted(ROLES)


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_the_unit_parses_and_its_command_runs(path: Path, tmp_path: Path) -> None:
    unit = parse_unit(path)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    assert service["Type"] == "simple"
    assert service["Restart"] == "on-failure"
    assert service["UMask"] == "0077"
    assert service["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"]
    args = mixnet_argv(service["ExecStart"], tmp_path)
    assert args[:2] == ROLES[path.name]
    text = help_text(args[:2])
    flags = [a.split("=", 1)[0] for a in args[2:] if a.startswith("--")]
    assert flags, "the unit passes no --dir"
    for flag in flags:
        assert flag in text, f"{path.name}: {flag} is not an option of mixnet {' '.join(args[:2])}"
    # And the whole line with --help on the end: argparse accepts what comes before it.
    help_text(args)


def test_a_system_service_runs_as_its_own_user_with_a_private_state_dir() -> None:
    for name in ("mixnet-authority.service", "mixnet-mixnode.service"):
        service = parse_unit(DEPLOY / name)["Service"]
        assert service["User"] == "mixnet" and service["Group"] == "mixnet"
        assert service["StateDirectoryMode"] == "0700"
        assert f"/var/lib/{service['StateDirectory']}" in service["ExecStart"]


def test_a_bad_exec_start_is_caught(tmp_path: Path) -> None:
    """The checks above can fail: a relative program, a wrong subcommand, an unknown flag."""
    with pytest.raises(ValueError, match="absolute path"):
        mixnet_argv("mixnet mixnode run --dir /x", tmp_path)
    with pytest.raises(AssertionError, match="invalid choice"):
        help_text(["mixnode", "serve-all"])
    assert "--no-such-flag" not in help_text(["mixnode", "run"])
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=/x/mixnet\nExecStart=/y/mixnet\n")
    with pytest.raises(configparser.DuplicateOptionError):
        parse_unit(bad)


def test_the_guide_covers_every_unit_and_the_readme_links_it() -> None:
    guide = (DEPLOY / "README.md").read_text()
    for path in UNITS:
        assert path.name in guide
    for topic in ("firewall", "backup", "0600", "upgrade", "public"):
        assert topic in guide.lower(), topic
    assert "deploy/README.md" in (ROOT / "README.md").read_text()
