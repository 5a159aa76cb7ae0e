"""The messenger commands end to end: three real client daemons (each with its encrypted
store) on a loopback network of real mixes and providers. Contacts both ways through cards,
send and read with receipts, verification, a group with add/remove, a disappearing timer on a
short clock, an attachment with a matching hash, and person-readable errors."""

from __future__ import annotations

import hashlib
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

from client.daemon import parse_address
from client.messenger.commands import call
from mixcore.errors import MixnetError
from mixcore.params import NetworkParams
from mixnet.network import LocalNetwork, pid_alive

pytestmark = pytest.mark.slow

PARAMS = NetworkParams(
    epoch_length=5.0,
    genesis_time=float(int(time.time()) - 3),
    mean_hop_delay=0.02,
    payload_rate=10.0,
    loop_rate=1.0,
    drop_rate=1.0,
    mix_loop_rate=0.5,
    pull_interval=0.3,
)
PASSPHRASE = "correct horse battery staple"


def mixnet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mixnet.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    old = os.environ.get("MIXNET_PASSPHRASE")
    os.environ["MIXNET_PASSPHRASE"] = PASSPHRASE  # client init (in-process) and client run
    network = LocalNetwork(
        tmp_path_factory.mktemp("messenger"), params=PARAMS, authorities=1, mixes_per_layer=1,
        providers=2,
    )
    network.create()
    try:
        network.start_all()
        for name, provider in (("alice", "provider1"), ("bob", "provider2"),
                               ("carol", "provider1")):
            network.add_client(name, provider)
            network.start(name)
        network.wait_ready(["alice", "bob", "carol"], timeout=60)
        wait_until_providers_listed(network)
        yield network
    finally:
        if old is None:
            os.environ.pop("MIXNET_PASSPHRASE", None)
        else:
            os.environ["MIXNET_PASSPHRASE"] = old
        pids = network.pids()
        network.close()
        assert not [p for p in pids if pid_alive(p)], "a process survived the network"


def wait_until_providers_listed(net: LocalNetwork) -> None:
    """A starting network may publish a consensus without every provider yet: wait until each
    client's consensus routes to every other client's provider (a raw one-byte send)."""
    for sender, recipient in (("alice", "bob"), ("bob", "alice"), ("carol", "bob")):
        provider, mailbox = parse_address(net.address(recipient))

        def routable(s: str = sender, p: bytes = provider, m: bytes = mailbox) -> bool:
            try:
                api(net, s, "send", provider=p, mailbox=m, data=b"warm-up")
            except MixnetError:
                return False
            return True

        wait_for(routable, 45, f"{recipient}'s provider in {sender}'s consensus")


def cli(net: LocalNetwork, who: str, *args: str) -> Any:
    result = mixnet(*args, "--dir", str(net.processes[who].data_dir), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def api(net: LocalNetwork, who: str, op: str, **args: Any) -> Any:
    """In-process API call: for polling, cheaper than starting the CLI each time."""
    return trio.run(lambda: call(net.processes[who].data_dir, op, **args))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def texts(net: LocalNetwork, who: str, name: str) -> list[str]:
    messages = api(net, who, "conversation", name=name)["messages"]
    return [m["text"] for m in messages if m["direction"] != "event"]


def last_state(net: LocalNetwork, who: str, name: str) -> str:
    out = [m for m in api(net, who, "conversation", name=name)["messages"]
           if m["direction"] == "out"]
    return str(out[-1]["state"])


def test_store_is_encrypted_and_locked_without_passphrase(net: LocalNetwork) -> None:
    data = net.processes["alice"].data_dir
    assert os.stat(data / "messenger.db").st_mode & 0o777 == 0o600
    result = mixnet("client", "run", "--dir", str(data), env={"MIXNET_PASSPHRASE": "wrong"})
    assert result.returncode == 1
    assert "wrong passphrase" in result.stderr and "Traceback" not in result.stderr


def test_contacts_send_read_receipts_and_verify(net: LocalNetwork) -> None:
    cards = {n: cli(net, n, "contact", "card")["card"] for n in ("alice", "bob")}
    assert cli(net, "alice", "contact", "add", cards["bob"], "--name", "bob")["name"] == "bob"
    assert cli(net, "bob", "contact", "add", cards["alice"], "--name", "alice")["name"] == "alice"
    carol_card = api(net, "carol", "card")["text"]
    api(net, "alice", "contact_add", card=carol_card, name="carol")
    api(net, "carol", "contact_add", card=cards["alice"], name="alice")
    assert [c["name"] for c in cli(net, "alice", "contact", "list")["contacts"]] == [
        "bob", "carol"]
    sent = cli(net, "alice", "send", "bob", "hello through the mixnet")
    assert sent["state"] in ("queued", "sent")
    wait_for(lambda: "hello through the mixnet" in texts(net, "bob", "alice"), 30, "message")
    wait_for(lambda: last_state(net, "alice", "bob") == "delivered", 30, "receipt")
    api(net, "bob", "msg_send", to="alice", text="hi alice")
    wait_for(lambda: api(net, "alice", "msg_inbox") != [], 30, "inbox entry")
    assert cli(net, "alice", "inbox")["conversations"][0]["conversation"] == "bob"
    read = cli(net, "alice", "read", "bob")["messages"]
    assert [m["text"] for m in read] == ["hello through the mixnet", "hi alice"]
    assert read[0]["state"] == "delivered"
    va = cli(net, "alice", "contact", "verify", "bob")
    vb = api(net, "bob", "contact_verify", name="alice")
    assert va["digits"] == vb["digits"] and va["verification"] == "unverified"
    assert cli(net, "alice", "contact", "verify", "bob", "--confirm")["verification"] == "verified"


def test_group_add_remove_send(net: LocalNetwork) -> None:
    cli(net, "alice", "group", "create", "team", "bob")
    wait_for(lambda: api(net, "bob", "groups") != [], 30, "bob's group")
    cli(net, "alice", "group", "add", "team", "carol")
    wait_for(lambda: api(net, "carol", "groups") != [], 30, "carol's group")
    cli(net, "alice", "group", "send", "team", "welcome both")
    wait_for(lambda: "welcome both" in texts(net, "carol", "#team"), 30, "carol reads group")
    wait_for(lambda: "welcome both" in texts(net, "bob", "#team"), 30, "bob reads group")
    cli(net, "alice", "group", "remove", "team", "carol")
    wait_for(lambda: api(net, "carol", "groups")[0]["left"], 30, "removal")
    cli(net, "alice", "group", "send", "team", "only bob now")
    wait_for(lambda: "only bob now" in texts(net, "bob", "#team"), 30, "bob after removal")
    assert "only bob now" not in texts(net, "carol", "#team")


def test_attachment_round_trip_with_matching_hash(net: LocalNetwork, tmp_path: Path) -> None:
    blob = os.urandom(5000)  # several fragments
    (tmp_path / "photo.bin").write_bytes(blob)
    out = mixnet("send", "bob", "--file", str(tmp_path / "photo.bin"), "--wait", "30",
                 "--dir", str(net.processes["alice"].data_dir))
    assert out.returncode == 0, out.stderr
    assert "fragments" in out.stderr or "at_provider" in out.stderr  # progress was shown
    wait_for(lambda: any(m["kind"] == "file" for m in api(
        net, "bob", "conversation", name="alice")["messages"]), 30, "attachment")
    saved = cli(net, "bob", "read", "alice", "--save", str(tmp_path / "in"))
    [f] = [m["file"] for m in saved["messages"] if m["kind"] == "file"]
    assert f["sha256"] == hashlib.sha256(blob).hexdigest()
    assert (tmp_path / "in" / "photo.bin").read_bytes() == blob
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(300_000))
    refused = mixnet("send", "bob", "--file", str(big),
                     "--dir", str(net.processes["alice"].data_dir))
    assert refused.returncode == 1 and "too" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_disappearing_timer_agreement_and_expiry(net: LocalNetwork) -> None:
    cli(net, "alice", "timer", "set", "bob", "4")
    wait_for(lambda: api(net, "bob", "contacts")[0]["timer_proposed_by_them"] == 4, 30,
             "proposal")
    assert cli(net, "alice", "contact", "list")["contacts"][0]["timer"] == 0
    api(net, "bob", "timer_accept", name="alice")
    wait_for(lambda: api(net, "alice", "contacts")[0]["timer"] == 4, 30, "acceptance")
    cli(net, "alice", "send", "bob", "this will vanish")
    wait_for(lambda: "this will vanish" in texts(net, "bob", "alice"), 15, "ephemeral message")
    time.sleep(4.5)
    assert "this will vanish" not in texts(net, "bob", "alice")
    assert "this will vanish" not in texts(net, "alice", "bob")


def test_errors_a_person_understands(net: LocalNetwork) -> None:
    alice = str(net.processes["alice"].data_dir)
    unknown = mixnet("send", "nobody", "hi", "--dir", alice)
    assert unknown.returncode == 1 and "unknown contact" in unknown.stderr
    assert unknown.stderr.count("\n") == 1 and "Traceback" not in unknown.stderr
    net.add_client("dave", "provider2")  # created, never started
    down = mixnet("read", "bob", "--dir", str(net.processes["dave"].data_dir))
    assert down.returncode == 1 and "mixnet client run" in down.stderr
    status = cli(net, "alice", "status")
    assert status["connected"] and status["epoch"] is not None
    assert {"payload", "loop", "drop"} <= set(status["rates_per_s"])
    assert "acks_pending" in status and status["messenger"]["received"] >= 1
    raw = mixnet("client", "send", "--dir", alice, net.address("bob"), "raw testnet bytes")
    assert raw.returncode == 0, raw.stderr
    bob = str(net.processes["bob"].data_dir)

    def raw_arrived() -> bool:
        return any(r["data"] == b"raw testnet bytes" for r in api(net, "bob", "inbox"))

    wait_for(raw_arrived, 30, "raw payload in the transport inbox")
    assert api(net, "bob", "status")["messenger"].get("undecryptable", 0) >= 1
    out = mixnet("client", "inbox", "--dir", bob, "--all", "--json")
    assert "raw testnet bytes" in out.stdout


def test_passphrase_change_refuses_while_the_daemon_holds_the_store(net: LocalNetwork) -> None:
    alice = net.processes["alice"].data_dir
    result = mixnet("client", "passphrase", "--dir", str(alice),
                    env={"MIXNET_NEW_PASSPHRASE": "another one"})
    assert result.returncode == 1 and "daemon is running" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert api(net, "alice", "status")["connected"]  # untouched, still serving
