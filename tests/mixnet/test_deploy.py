"""``deploy/``: one systemd unit per role whose command really exists. Each unit is parsed, its
``ExecStart`` is run with ``--help`` by the real ``mixnet`` command (every flag it passes must be
one that command documents), its files land where the guide says, and ``systemd-analyze verify``
accepts it where systemd is installed."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HANG

from mixnet.cli import run_command

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = {
    "mixnet-authority.service": ("directory", "run"),
    "mixnet-mixnode.service": ("mixnode", "run"),
    "mixnet-client.service": ("client", "run"),
}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: ``[Section]``, ``Key=value`` (keys may repeat), ``#``/``;``
    comments, a trailing backslash continues a line."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, eq, value = line.partition("=")
        assert eq and current is not None, f"not a Key=value line in a section: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_parser_reads_what_systemd_reads() -> None:
    unit = parse_unit("# c\n[Service]\nExecStart=/bin/x \\\n  --a b\nEnvironment=A=1\n"
                      "Environment=B=2\n; c\n")
    assert unit == {"Service": {"ExecStart": ["/bin/x --a b"],
                                "Environment": ["A=1", "B=2"]}}
    with pytest.raises(AssertionError):
        parse_unit("ExecStart=/bin/x\n")


def units() -> dict[str, dict[str, dict[str, list[str]]]]:
    return {name: parse_unit((DEPLOY / name).read_text()) for name in UNITS}


def test_there_is_one_unit_per_role_and_nothing_else() -> None:
    assert sorted(p.name for p in DEPLOY.glob("*.service")) == sorted(UNITS)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_each_units_command_exists_with_every_flag_it_passes(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unit = units()[name]
    assert unit["Unit"]["Description"] and unit["Install"]["WantedBy"]
    service = unit["Service"]
    assert service["Type"] == ["simple"] and service["Restart"] == ["on-failure"]
    assert service["UMask"] == ["0077"] and service["KillSignal"] == ["SIGTERM"]
    (exec_start,) = unit["Service"]["ExecStart"]
    argv = shlex.split(exec_start.replace("%h", str(tmp_path)))
    assert argv[0].endswith("/bin/mixnet") and argv[1:3] == list(UNITS[name]), argv
    # The command's own parser, in-process (an interpreter start per unit costs seconds here).
    with pytest.raises(SystemExit) as exited:
        run_command([*argv[1:], "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert out.startswith(f"usage: mixnet {' '.join(UNITS[name])}")
    flags = [a for a in argv[1:] if a.startswith("--")]
    assert flags and all(f in out for f in flags), (flags, out)
    with pytest.raises(SystemExit) as exited:  # and a flag it lacks would fail the check
        run_command([*argv[1:], "--no-such-flag"])
    assert exited.value.code == 2
    capsys.readouterr()


def test_system_units_run_as_mixnet_in_their_private_state_directory() -> None:
    for name in ("mixnet-authority.service", "mixnet-mixnode.service"):
        service = units()[name]["Service"]
        assert service["User"] == ["mixnet"] and service["Group"] == ["mixnet"]
        assert service["StateDirectoryMode"] == ["0700"]
        (state,) = service["StateDirectory"]
        argv = shlex.split(service["ExecStart"][0])
        assert argv[argv.index("--dir") + 1] == f"/var/lib/{state}"
        assert service["KillSignal"] == ["SIGTERM"]
    client = units()["mixnet-client.service"]["Service"]
    assert client["UMask"] == ["0077"] and "User" not in client  # a user unit


def test_the_guide_names_every_unit_and_its_command() -> None:
    guide = (DEPLOY / "README.md").read_text()
    for name, words in UNITS.items():
        assert name in guide and f"mixnet {' '.join(words)}" in guide
    for topic in ("public address", "Firewall", "backup", "File modes", "Upgrades", "0600"):
        assert topic.lower() in guide.lower(), topic
    assert "deploy/README.md" in (DEPLOY.parent / "README.md").read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_each_unit(tmp_path: Path) -> None:
    mixnet = Path(sys.executable).with_name("mixnet")
    if not mixnet.exists():
        pytest.skip(f"no mixnet command beside {sys.executable}")
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        text = text.replace("/opt/mixnet/venv/bin/mixnet", str(mixnet))
        text = text.replace("%h/.local/share/mixnet/venv/bin/mixnet", str(mixnet))
        (tmp_path / name).write_text(text)
    # It complains about what it does not know, e.g. a misspelt directive.
    (tmp_path / "broken.service").write_text(
        (tmp_path / "mixnet-mixnode.service").read_text().replace("UMask=", "UMasq="))
    for name in [*UNITS, "broken.service"]:
        result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)],
                                capture_output=True, text=True, timeout=HANG, check=False)
        complaints = (result.stdout + result.stderr).strip()
        if name == "broken.service":
            assert "UMasq" in complaints
        else:
            assert result.returncode == 0 and not complaints, (name, complaints)
