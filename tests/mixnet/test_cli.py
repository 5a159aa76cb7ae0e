"""The ``mixnet`` console command, run as a real process the way a user runs it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest
import trio

import mixnet.cli as cli_module
from mixcore.params import NetworkParams
from mixnet.cli import ROLE_CLIS, ROLE_COMMANDS, build_parser, main, roles_for


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixnet.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard only: a loaded machine's interpreter start is slow
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


def test_a_user_error_inside_a_task_group_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A node whose config points at a missing key file fails in one line, exit 1. (In-process:
    the node fails before it listens, so no subprocess and no timer of ours is involved.)"""
    root = tmp_path
    (root / "params.json").write_text(json.dumps(NetworkParams().to_dict()))
    assert main([
        "mixnode", "init", "--dir", str(root / "n"), "--role", "mix", "--listen",
        "127.0.0.1:1", "--authority", "00" * 32 + "@http://127.0.0.1:9", "--json",
        "--params", str(root / "params.json"),
    ]) == 0
    config = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["config"]
    (root / "n" / "identity.key").unlink()
    assert main(["mixnode", "run", "--config", config]) == 1
    err = capsys.readouterr().err
    assert "identity.key" in err and "does not exist" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


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


# -- one convention: help text everywhere, COMMAND metavars, --json on read commands ---------


def _leaf_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser, by its full name (``client init``, ``contact add``, ...)."""
    out: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append((name, parser))
        for action in subs:
            seen: set[int] = set()
            for sub_name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases share one parser
                    seen.add(id(sub))
                    walk(f"{name} {sub_name}".strip(), sub)

    walk("", build_parser())
    return out


def test_every_option_and_argument_has_help_text() -> None:
    missing = [
        f"{name}: {action.option_strings or action.dest}"
        for name, parser in _leaf_parsers()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        and action.help != argparse.SUPPRESS and not (action.help or "").strip()
    ]
    assert not missing, missing


def test_every_group_of_commands_calls_them_COMMAND() -> None:
    def metavars(parser: argparse.ArgumentParser) -> list[str]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.append(str(action.metavar))
                for sub in action.choices.values():
                    found += metavars(sub)
        return found

    assert set(metavars(build_parser())) == {"COMMAND"}


#: Commands that print nothing a script would parse (the chat screen).
NO_JSON = {"chat"}


def test_every_command_that_reports_takes_json() -> None:
    lacking = [name for name, parser in _leaf_parsers()
               if name not in NO_JSON and "--json" not in parser._option_string_actions]
    assert not lacking, lacking


def test_each_command_loads_only_its_own_role() -> None:
    """The routing table that keeps commands quick matches what each role registers."""
    for role in ROLE_CLIS:
        parser = build_parser(roles=(role,))
        [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        assert set(sub.choices) - {"params", "testnet"} == set(ROLE_COMMANDS[role]), role
        for command in ROLE_COMMANDS[role]:
            assert roles_for([command, "--json"]) == (role,)
    assert roles_for(["--help"]) == ROLE_CLIS and roles_for(["nonsense"]) == ROLE_CLIS


def test_every_help_page_renders(capsys: pytest.CaptureFixture[str]) -> None:
    for name, _ in _leaf_parsers():
        with pytest.raises(SystemExit) as exit_:
            main([*name.split(), "--help"])
        assert exit_.value.code == 0, name
    assert "usage: mixnet" in capsys.readouterr().out


def test_params_says_whose_values_it_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """``mixnet params`` printed the built-in defaults, which a testnet does not use; now it
    says so, and ``--testnet`` prints what the testnet runs with."""
    from mixnet.testnet import Options, testnet_params

    assert main(["params"]) == 0
    assert "built-in defaults" in capsys.readouterr().out
    assert main(["params", "--testnet", "--json"]) == 0
    shown = NetworkParams.from_dict(json.loads(capsys.readouterr().out))
    expected = testnet_params(Options())
    assert shown.replace(genesis_time=0) == expected.replace(genesis_time=0)


# -- Ctrl-C and exception groups -------------------------------------------------------------


def _parser_raising(exc: BaseException) -> Callable[..., argparse.ArgumentParser]:
    def build(**kw: object) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="mixnet")
        parser.set_defaults(func=lambda args: (_ for _ in ()).throw(exc))
        return parser

    return build


@pytest.mark.parametrize("exc", [
    KeyboardInterrupt(),
    BaseExceptionGroup("tasks", [KeyboardInterrupt()]),
    BaseExceptionGroup("outer", [BaseExceptionGroup("inner", [KeyboardInterrupt()]),
                                 trio.Cancelled._create()]),
], ids=["plain", "group", "nested"])
def test_ctrl_c_anywhere_is_one_line_and_130(
    exc: BaseException, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_module, "build_parser", _parser_raising(exc))
    assert main([]) == 130
    assert capsys.readouterr().err == "mixnet: interrupted\n"


def test_ctrl_c_during_testnet_start_up_is_not_reported_as_a_failed_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An interrupt inside a client's setup (in-process, as the harness calls it) used to
    become "interrupted" followed by a misleading "error: mixnet client init failed"; it is
    the KeyboardInterrupt it is, and nothing says "failed"."""
    import mixnet.network
    from mixnet.network import LocalNetwork

    def interrupted(*args: object, **kwargs: object) -> NoReturn:
        raise KeyboardInterrupt

    net = LocalNetwork(tmp_path, params=NetworkParams(), authorities=1, mixes_per_layer=1,
                       providers=1)
    net.create()
    monkeypatch.setattr(mixnet.network, "init_client", interrupted)
    with pytest.raises(KeyboardInterrupt):
        net.add_client("c1", "provider1")
    assert "failed" not in capsys.readouterr().err
