"""Two real client daemons exchange messages through real mixes and providers on loopback,
with zero loss, also when a mix is killed mid-run; and the daemon's API, persistence and socket
permissions hold as a user relies on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import HANG
from helpers import wait_for as wait_until

from client.messenger.commands import call
from mixcore.errors import MixnetError
from mixcore.params import NetworkParams
from mixnet.network import LocalNetwork, pid_alive

pytestmark = pytest.mark.slow

PARAMS = NetworkParams(
    epoch_length=10.0,
    genesis_time=float(int(time.time()) - 3),
    mean_hop_delay=0.05,
    payload_rate=5.0,
    loop_rate=1.0,
    drop_rate=1.0,
    mix_loop_rate=1.0,
    pull_interval=0.5,
)


def mixnet(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixnet.cli", *args],
        capture_output=True,
        text=stdin is None,
        input=stdin,
        timeout=HANG,
        check=False,
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = LocalNetwork(
        tmp_path_factory.mktemp("clients"), params=PARAMS, authorities=1, mixes_per_layer=2,
        providers=2,
    )
    network.create()
    try:
        network.start_all(timeout=HANG)
        network.add_client("alice", "provider1")
        network.add_client("bob", "provider2")
        network.start("alice")
        network.start("bob")
        network.wait_ready(["alice", "bob"], timeout=HANG)
        yield network
    finally:
        pids = network.pids()
        network.close()
        assert not [p for p in pids if pid_alive(p)], "a process survived the network"


def send(net: LocalNetwork, sender: str, recipient: str, text: str) -> str:
    """Send at once: on a busy machine a node can miss the first epoch's consensus, and a
    message for a provider not listed yet waits for the next document (``provider_grace``)
    instead of being refused."""
    result = mixnet(
        "client", "raw-send", "--dir", str(net.processes[sender].data_dir),
        net.address(recipient), text, "--json",
    )
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["message_id"])


def api(net: LocalNetwork, name: str, op: str, **args: object) -> Any:
    """The daemon's API in-process: what the commands call, without starting an interpreter
    per poll (the waits below poll often)."""
    return trio.run(lambda: call(net.processes[name].data_dir, op, **args))


def inbox(net: LocalNetwork, name: str) -> list[str]:
    """Every raw payload's text, read through the API (polled)."""
    rows = api(net, name, "inbox", unread_only=False, limit=1000)
    return [r["data"].decode(errors="replace") for r in rows]


def inbox_cli(net: LocalNetwork, name: str) -> list[str]:
    """The same through ``mixnet client raw-inbox --all --json``, as a user reads it."""
    data_dir = str(net.processes[name].data_dir)
    result = mixnet("client", "raw-inbox", "--dir", data_dir, "--all", "--json")
    assert result.returncode == 0, result.stderr
    return [m["text"] for m in json.loads(result.stdout)["messages"]]


def wait_for(predicate: Callable[[], object], what: str) -> None:
    """Poll until ``predicate()`` (``helpers.wait_for``: its timeout, ``HANG``, only bounds a
    failure; a MixnetError is a daemon between two states, restarting)."""
    wait_until(predicate, what=what, interval=0.3, ignore=(MixnetError,))


def states(net: LocalNetwork, name: str) -> dict[str, Any]:
    """The outbox counts of the daemon's status (through the API: polled)."""
    return {k: v for k, v in api(net, name, "status").items() if k.startswith("outbox_")}


def states_cli(net: LocalNetwork, name: str) -> dict[str, Any]:
    """The same through ``mixnet client status --json``, as a user reads it."""
    result = mixnet("client", "status", "--dir", str(net.processes[name].data_dir), "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    return {k: v for k, v in status.items() if k.startswith("outbox_")}


def test_messages_both_ways_with_zero_loss(net: LocalNetwork) -> None:
    sent_to_bob = [f"to bob {i}" for i in range(6)]
    sent_to_alice = [f"to alice {i}" for i in range(6)]
    for a, b in zip(sent_to_bob, sent_to_alice, strict=True):
        send(net, "alice", "bob", a)
        send(net, "bob", "alice", b)
    wait_for(lambda: set(sent_to_bob) <= set(inbox(net, "bob")), "Bob's messages")
    wait_for(lambda: set(sent_to_alice) <= set(inbox(net, "alice")), "Alice's messages")
    bob_inbox = inbox_cli(net, "bob")
    assert sorted(m for m in bob_inbox if m.startswith("to bob")) == sorted(sent_to_bob)  # once
    wait_for(lambda: states(net, "alice").get("outbox_pending", 0) == 0, "delivery acks")
    assert states_cli(net, "alice").get("outbox_delivered", 0) >= len(sent_to_bob)
    assert states_cli(net, "alice").get("outbox_undeliverable", 0) == 0


def test_zero_loss_when_a_mix_dies_mid_run(net: LocalNetwork) -> None:
    texts = [f"through the storm {i}" for i in range(8)]
    for text in texts[:4]:
        send(net, "alice", "bob", text)
    net.kill("mix1")  # SIGKILL: in-flight packets at mix1 are lost; ARQ must recover
    for text in texts[4:]:
        send(net, "alice", "bob", text)
    wait_for(lambda: set(texts) <= set(inbox(net, "bob")), "every message despite mix1")
    assert all(inbox(net, "bob").count(t) == 1 for t in texts)
    wait_for(lambda: states(net, "alice").get("outbox_pending", 0) == 0, "acks")
    assert states(net, "alice").get("outbox_undeliverable", 0) == 0


def test_daemon_restart_keeps_unread_messages_and_queued_sends(net: LocalNetwork) -> None:
    send(net, "alice", "bob", "read me after a restart")
    wait_for(lambda: "read me after a restart" in inbox(net, "bob"), "the message")
    net.restart("bob", timeout=HANG)
    assert "read me after a restart" in inbox_cli(net, "bob")
    send(net, "alice", "bob", "queued across a restart")
    net.restart("alice", timeout=HANG)  # at once: the message is most likely still in flight
    wait_for(lambda: "queued across a restart" in inbox(net, "bob"), "the queued message")
    assert inbox(net, "bob").count("queued across a restart") == 1


def test_api_errors_are_replies_and_the_daemon_keeps_running(net: LocalNetwork) -> None:
    bob_dir = str(net.processes["bob"].data_dir)
    bad = mixnet("client", "raw-send", "--dir", bob_dir, "not-an-address", "x")
    assert bad.returncode != 0
    assert "address" in bad.stderr and "Traceback" not in bad.stderr
    script = (
        "import socket, struct, msgpack, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "def call(obj):\n"
        "    body = msgpack.packb(obj); s.sendall(struct.pack('>I', len(body)) + body)\n"
        "    n = struct.unpack('>I', s.recv(4))[0]; data = b''\n"
        "    while len(data) < n: data += s.recv(n - len(data))\n"
        "    return msgpack.unpackb(data)\n"
        "before = call({'id': 0, 'op': 'status'})['result']['daemon']['api_errors']\n"
        "print(call({'id': 1, 'op': 'no-such-op'}))\n"
        "print(call({'id': 2, 'op': 'send', 'provider': 'x'}))\n"
        "body = b'\\xc1garbage'; s.sendall(struct.pack('>I', len(body)) + body)\n"
        "n = struct.unpack('>I', s.recv(4))[0]; print(msgpack.unpackb(s.recv(n)))\n"
        "after = call({'id': 3, 'op': 'status'})\n"
        "print(after['ok'], after['result']['daemon']['api_errors'] - before)\n"
    )
    sock = str(Path(bob_dir) / "api.sock")
    result = subprocess.run(
        [sys.executable, "-c", script, sock], capture_output=True, text=True, timeout=HANG,
        check=False,
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert "unknown operation" in lines[0] and "'ok': False" in lines[0]
    assert "'ok': False" in lines[1]
    assert "'ok': False" in lines[2]
    assert lines[3] == "True 3"  # each refused request counted, by name
    assert net.processes["bob"].running()


def test_socket_is_private_to_its_owner(net: LocalNetwork) -> None:
    data_dir = net.processes["bob"].data_dir
    assert os.stat(data_dir).st_mode & 0o777 == 0o700
    assert os.stat(data_dir / "api.sock").st_mode & 0o777 == 0o600
    if os.getuid() != 0:
        pytest.skip("needs root to impersonate a second local user")
    script = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1]); print('connected')\n"
        "except PermissionError:\n"
        "    print('denied')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(data_dir / "api.sock")],
        capture_output=True, text=True, timeout=HANG, check=False,
    )
    assert result.stdout.strip() == "denied", result.stderr


def test_commands_say_how_to_start_a_stopped_daemon(tmp_path: Path, net: LocalNetwork) -> None:
    net.add_client("carol", "provider1")  # created, never started
    result = mixnet("client", "raw-inbox", "--dir", str(net.processes["carol"].data_dir))
    assert result.returncode == 1
    assert "not running" in result.stderr and "mixnet client run" in result.stderr
    assert "Traceback" not in result.stderr
