"""``--hosts netns`` plumbing on this machine's real kernel: what it says when namespaces are
out of reach; two hosts in their own namespaces talking through the relay and nothing left
behind; a half-made host cleaned up; a dead launcher's leftovers removed, a live one's kept.

Needs root and iproute2 (skipped, saying which is missing, elsewhere)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mixnet.cli import main
from mixnet.faults import FaultSpecError, parse_faults
from mixnet.netns import (
    ROOT_PREFIX,
    STATE_DIR,
    NetnsError,
    NetnsHosts,
    _process_start,
    check_available,
    clean_leftovers,
    ip,
    probe,
    survey,
)
from mixnet.network import NetworkError
from mixnet.testnet import Options, host_names, run_testnet


def _unavailable() -> str | None:
    try:
        probe()
    except NetnsError as exc:
        return str(exc)
    return None


needs_netns = pytest.mark.skipif(
    bool(_unavailable()), reason=f"network namespaces unavailable: {_unavailable()}"
)


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"euid": 1000}, "needs root"),
    ({"euid": 0, "which": lambda _name: None}, "needs the ip command"),
    ({"platform": "darwin"}, "needs Linux network namespaces"),
])
def test_what_is_missing_is_one_line(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(NetnsError) as err:
        check_available(**kwargs)  # type: ignore[arg-type]
    assert says in str(err.value) and "\n" not in str(err.value)
    assert "--hosts local" in str(err.value) or "PATH" in str(err.value)


def test_the_testnet_says_what_is_missing_in_one_line_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no ip command (and, as a user, no root)
    umask = os.umask(0o022)
    try:
        status = main(["testnet", "--hosts", "netns", "--duration", "0"])
    finally:
        os.umask(umask)  # main() gives the process its private umask
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(lines) == 1 and lines[0].startswith("mixnet: error: --hosts netns needs"), lines


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to drop to an unprivileged user")
def test_an_unprivileged_user_is_told_it_needs_root_in_one_line() -> None:
    """As a real non-root user (nobody), not by pretending the euid."""
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
         "mixnet.cli", "testnet", "--hosts", "netns", "--duration", "0"],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
        env={**os.environ, "HOME": "/nonexistent"},
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("mixnet: error: --hosts netns needs root"), lines


def names_with(prefix: str) -> list[str]:
    """Every namespace and link on the machine that carries ``prefix``."""
    listed = ip("netns", "list") + ip("-o", "link", "show")
    words = (word.split("@", 1)[0] for word in listed.replace(":", " ").split())
    return [word for word in words if word.startswith(prefix)]


@needs_netns
def test_two_hosts_talk_through_the_relay_and_nothing_is_left() -> None:
    hosts = NetnsHosts(parse_faults("latency=5ms,loss=5%"), seed=1)
    hosts.open()
    try:
        client = hosts.endpoint("client1", "client")
        mix = hosts.endpoint("mix1", "mix")
        assert client.listen_host != mix.listen_host and mix.port == 9000
        assert (STATE_DIR / f"{hosts.prefix}.json").is_file()
        server = subprocess.Popen(hosts.command("mix1", [sys.executable, "-c", f"""
import socket
s = socket.socket(); s.bind(("{mix.listen_host}", {mix.port})); s.listen(); print("up", flush=True)
c, peer = s.accept(); data = b""
while chunk := c.recv(65536):
    data += chunk
c.sendall(f"{{peer[0]}} {{len(data)}}".encode()); c.close()
"""]), stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline() == "up\n"
        talk = subprocess.run(hosts.command("client1", [sys.executable, "-c", f"""
import socket
s = socket.create_connection(("{mix.public_host}", {mix.port}), 10)
s.sendall(b"x" * 100000); s.shutdown(socket.SHUT_WR); print(s.recv(100).decode())
"""]), capture_output=True, text=True, timeout=60, check=True)
        server.wait(10)
        # The mix saw the client's public address; every byte went through.
        assert talk.stdout.split() == [client.public_host, "100000"]
        stats = hosts.statistics()
        assert stats["hosts"]["mix1"]["namespace"] == f"{hosts.prefix}-mix1"
        assert stats["faults"]["links"]["client1>mix1"]["bytes"] == 100000
        assert stats["faults"]["totals"]["retransmits"] > 0
        assert len(names_with(hosts.prefix)) >= 5  # 2 namespaces, 2 veths, the bridge
        # The bridge keeps its own MAC whatever hosts join: one that follows its ports' lowest
        # MAC changes under the running hosts' neighbour caches, and their replies get lost.
        for i in range(3):
            hosts.endpoint(f"client{i + 2}", "client")
        mac = json.loads(ip("-j", "link", "show", hosts.bridge))[0]["address"]
        assert mac == f"02:6d:78:{hosts.prefix[3:5]}:{hosts.prefix[5:7]}:01"
    finally:
        hosts.close()
    assert names_with(hosts.prefix) == []
    assert not (STATE_DIR / f"{hosts.prefix}.json").exists()
    hosts.close()  # idempotent


@needs_netns
def test_a_host_that_fails_half_made_is_still_removed() -> None:
    hosts = NetnsHosts(parse_faults("latency=1ms"))
    hosts.open()
    try:
        hosts.endpoint("auth1", "authority")
        ip("link", "add", f"{hosts.prefix}v2", "type", "bridge")  # in the way of the next host
        with pytest.raises(NetnsError) as err:
            hosts.endpoint("mix1", "mix")
        assert "\n" not in str(err.value) and "File exists" in str(err.value)
        assert f"{hosts.prefix}-mix1" in names_with(hosts.prefix)  # its namespace was made
    finally:
        hosts.close()
    assert names_with(hosts.prefix) == []


def _unused_prefix() -> str:
    taken = survey()
    while (prefix := f"{ROOT_PREFIX}{random.getrandbits(16):04x}") in taken:
        pass
    return prefix


def _fake_run(prefix: str, owner_pid: int, owner_start: int | None) -> subprocess.Popen[bytes]:
    """What a launcher leaves when it is SIGKILLed: its state file, a namespace with a process
    still running in it, a veth pair and the bridge."""
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    (STATE_DIR / f"{prefix}.json").write_text(json.dumps(
        {"pid": owner_pid, "start": owner_start, "subnet": "10.99.0.0/16"}))
    ip("netns", "add", f"{prefix}-mix1")
    ip("link", "add", f"{prefix}br", "type", "bridge")
    ip("link", "add", f"{prefix}v1", "type", "veth", "peer", "name", f"{prefix}p1")
    ip("link", "set", f"{prefix}p1", "netns", f"{prefix}-mix1")
    return subprocess.Popen(["ip", "netns", "exec", f"{prefix}-mix1", "sleep", "600"])


@needs_netns
def test_a_dead_launchers_leftovers_are_removed_and_a_live_ones_kept() -> None:
    dead_owner = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                capture_output=True, text=True, check=True)
    dead, alive = _unused_prefix(), _unused_prefix()
    orphan = _fake_run(dead, int(dead_owner.stdout), 12345)
    kept = _fake_run(alive, os.getpid(), _process_start(os.getpid()))
    try:
        said: list[str] = []
        assert dead in clean_leftovers(said.append)
        assert names_with(dead) == [] and not (STATE_DIR / f"{dead}.json").exists()
        assert any(f"{dead}: 1 namespaces, 2 links" in line for line in said), said
        orphan.wait(10)  # killed with its namespace
        assert alive not in clean_leftovers(said.append)
        assert set(names_with(alive)) >= {f"{alive}-mix1", f"{alive}br", f"{alive}v1"}
    finally:
        orphan.kill()
        kept.kill()
        kept.wait()
        for name in (f"{alive}-mix1",):
            subprocess.run(["ip", "netns", "delete", name], check=False)
        for link in (f"{alive}v1", f"{alive}br"):
            subprocess.run(["ip", "link", "delete", link], check=False, capture_output=True)
        (STATE_DIR / f"{alive}.json").unlink(missing_ok=True)
    assert names_with(alive) == []


@pytest.mark.parametrize(("options", "says"), [
    ({"faults": parse_faults("latency=10ms")}, "--faults needs --hosts netns"),
    ({"hosts": "netns", "resume": True}, "--resume restarts --hosts local networks only"),
    ({"hosts": "cloud"}, "--hosts must be local or netns"),
])
def test_options_that_cannot_work_fail_before_anything_is_made(
    tmp_path: Path, options: dict[str, object], says: str,
) -> None:
    root = tmp_path / "net"
    with pytest.raises(NetworkError) as err:
        run_testnet(Options(directory=root, report=False, **options))  # type: ignore[arg-type]
    assert says in str(err.value) and "\n" not in str(err.value)
    assert not root.exists()


def test_host_names_are_the_networks_and_partitions_must_name_one() -> None:
    options = Options(authorities=1, layers=1, mixes_per_layer=2, providers=1, clients=2)
    assert host_names(options) == ["auth1", "mix1", "mix2", "provider1", "client1", "client2"]
    parse_faults("partition=mix2:1s").check_hosts(host_names(options))
    with pytest.raises(FaultSpecError, match="'mix3', which this testnet does not have"):
        parse_faults("partition=mix3:1s").check_hosts(host_names(options))
