"""``mixnet client ...`` as a newcomer meets it: the data directory from ``$MIXNET_CLIENT_DIR``
for every command, no silent built-in parameters, one daemon per directory (an OS lock; the
second says who holds it), readable state lines, and Ctrl-C as one line with exit status 130
(real processes, waiting on their own log lines, never on sleeps; every timeout is ``HANG``,
a bound on a hung run)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import HANG

from mixcore.params import NetworkParams
from mixnet.cli import main
from mixnet.network import free_port

DIR_ENV = "MIXNET_CLIENT_DIR"


def client_commands() -> list[list[str]]:
    """Every ``mixnet client`` subcommand that works on an existing client, with the
    positional arguments it needs (and no ``--dir``)."""
    address = "ab" * 32 + ":" + "cd" * 16 + ":" + "ef" * 32
    return [
        ["client", "run"],
        ["client", "status"],
        ["client", "address"],
        ["client", "raw-send", address, "x"],
        ["client", "raw-inbox"],
        ["status"],
        ["contact", "list"],
        ["read", "bob"],
    ]


@pytest.mark.parametrize("argv", client_commands(), ids=lambda a: " ".join(a[:2]))
def test_every_client_command_takes_its_directory_from_the_environment(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    empty = tmp_path / "nothing-here"
    monkeypatch.setenv(DIR_ENV, str(empty))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"no client in {empty}" in err and err.count("\n") == 1


def test_init_without_join_or_params_refuses_to_guess(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Built-in defaults (another epoch length and genesis) silently made a client that got
    404 from the authorities forever; now init asks for the network's bootstrap."""
    target = tmp_path / "c"
    status = main(["client", "init", "--dir", str(target), "--provider", "provider1",
                   "--authority", "ab" * 32 + "@http://127.0.0.1:1"])
    assert status == 1
    err = capsys.readouterr().err
    assert "--join" in err and err.count("\n") == 1
    assert not (target / "client.json").exists()


# -- real daemons ---------------------------------------------------------------------------


def _make_client(root: Path) -> Path:
    """A transport-only client whose authority is a port nobody listens on: its daemon waits
    for a consensus forever, which is all these tests need."""
    params = NetworkParams(epoch_length=60.0, genesis_time=float(int(time.time())))
    params_file = root / "params.json"
    params_file.write_text(json.dumps(params.to_dict()))
    data = root / "c"
    env = {k: v for k, v in os.environ.items() if k != "MIXNET_PASSPHRASE"}
    done = subprocess.run(
        [sys.executable, "-m", "mixnet.cli", "client", "init", "--dir", str(data),
         "--provider", "provider1", "--params", str(params_file),
         "--authority", f"{'ab' * 32}@http://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=HANG, check=False, env=env,
    )
    assert done.returncode == 0, done.stderr
    return data


class Daemon:
    """``mixnet client run`` as a child process, its stderr read line by line by a thread."""

    def __init__(self, data: Path) -> None:
        self.data = data
        env = {k: v for k, v in os.environ.items() if k != "MIXNET_PASSPHRASE"}
        env[DIR_ENV] = str(data)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mixnet.cli", "client", "run"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=env, text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, needle: str, timeout: float = HANG) -> str:
        """Block until a stderr line contains ``needle`` (the readiness signal); the timeout
        only bounds a failure."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r}; got {self.lines!r}")

    def rest(self) -> str:
        """Everything it wrote on stderr, once it has exited."""
        while (line := self._queue.get(timeout=HANG)) is not None:
            self.lines.append(line)
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the tests below (they only look at it; the last one stops it)."""
    d = Daemon(_make_client(tmp_path_factory.mktemp("daemon")))
    d.wait_for_line("waiting for a consensus")
    try:
        yield d
    finally:
        d.stop()


def test_second_daemon_on_one_directory_exits_naming_the_first(daemon: Daemon) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MIXNET_PASSPHRASE"}
    second = subprocess.run(
        [sys.executable, "-m", "mixnet.cli", "client", "run", "--dir", str(daemon.data)],
        capture_output=True, text=True, timeout=HANG, check=False, env=env,
    )
    assert second.returncode == 1
    assert str(daemon.proc.pid) in second.stderr and second.stderr.count("\n") == 1
    assert "Traceback" not in second.stderr


def test_no_ready_file_while_the_daemon_waits_for_a_consensus(daemon: Daemon) -> None:
    """A launcher waits for ``ready.json``: it must not appear before the daemon serves."""
    assert daemon.proc.poll() is None
    assert not (daemon.data / "ready.json").exists()
    assert daemon.proc.poll() is None  # the first one is untouched


def test_store_commands_wait_for_the_daemon_to_stop_even_before_it_serves(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """A daemon still waiting for its first consensus has no API socket yet, but holds the
    directory (and would hold the store): its lock, not the socket, tells."""
    assert main(["client", "passphrase", "--dir", str(daemon.data)]) == 1
    err = capsys.readouterr().err
    assert "daemon is running" in err and str(daemon.proc.pid) in err


def test_ctrl_c_while_waiting_for_a_consensus_is_one_line_and_130(daemon: Daemon) -> None:
    """Last: it stops the module's daemon."""
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(timeout=HANG) == 130
    err = daemon.rest()
    assert "Traceback" not in err and "ExceptionGroup" not in err
    assert err.strip().splitlines()[-1] == "mixnet: interrupted"
