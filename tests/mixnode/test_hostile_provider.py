"""Providers that cannot be knocked over, as real processes (issue 15 item 2, issue 13 item 5).

Each attack is made on loopback from other addresses than the honest client's (127.0.0.2 and
up; the nodes and the honest client use 127.0.0.1):

* a flood of held connections up to the provider's cap: the newcomers are refused, the client
  being served keeps being served, and the cap is given back when the flood ends;
* the same with the *default* cap and a descriptor limit of 256 (``RLIMIT_NOFILE`` lowered for
  that process only): the provider used to die of EMFILE; now its cap is derived from the
  limit, it refuses the rest and keeps writing its statistics;
* a flood of new mailbox keys beyond the registration limits and the mailbox table's size: the
  provider refuses them, keeps serving existing clients, and restarts without crashing again
  (``MailboxFull`` used to escape the connection handler, and then every new connection after a
  restart crashed it anew).

One module-scoped network (an authority and three providers; no mixes are needed for client
links), one provider per attack.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import HANG, wait_for_async

from mixcore.control import ControlKind, PullItem, PullRequest
from mixcore.errors import LinkError
from mixcore.keys import LinkKey
from mixcore.net.link import Link, open_link_over_stream
from mixcore.params import NetworkParams
from mixcore.sphinx import Sphinx, SphinxGeometry
from mixnet.network import LocalNetwork, Process, pid_alive

pytestmark = pytest.mark.slow

PARAMS = NetworkParams(epoch_length=60.0, mean_hop_delay=0.05, pull_batch=2)
SX = Sphinx(SphinxGeometry.from_params(PARAMS))
NOFILE = 256

#: Small caps for the first provider, so the test needs tens of sockets, not thousands. The
#: held handshakes must outlast the test's look at them, however slow the machine: HANG.
CAPPED = {"max_connections": 24, "max_connections_per_source": 6, "peer_reserve": 4,
          "handshake_timeout": HANG}
#: The registration limits of the third provider.
REGISTRATIONS = {"registrations_per_source": 4, "registrations_per_window": 1000,
                 "max_mailboxes": 12}

_LIMITED = (
    "import os, resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE})); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def _edit(proc: Process, **changes: Any) -> None:
    path = proc.data_dir / "node.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = LocalNetwork(
        tmp_path_factory.mktemp("hostile"), params=PARAMS, authorities=1, mixes_per_layer=0,
        providers=3,
    )
    network.create()
    _edit(network.processes["provider1"], **CAPPED)
    # Default caps; only the held handshakes last long enough for the test to look.
    _edit(network.processes["provider2"], handshake_timeout=HANG)
    limited = network.processes["provider2"]
    limited.argv = [sys.executable, "-c", _LIMITED, *limited.argv[1:]]
    _edit(network.processes["provider3"], **REGISTRATIONS)
    try:
        network.start_all(timeout=HANG)
        yield network
    finally:
        pids = network.pids()
        network.close()
        assert not [p for p in pids if pid_alive(p)], "a provider process survived"


async def link_from(proc: Process, key: LinkKey, source: str = "127.0.0.1") -> Link:
    stream = await trio.open_tcp_stream("127.0.0.1", proc.port, local_address=source)
    return await open_link_over_stream(
        stream, local_key=key, remote_static=bytes.fromhex(proc.info["link_key"]),
        body_size=SX.geometry.packet_len,
    )


async def pull(link: Link, seq: int) -> list[PullItem]:
    await link.send_cell(ControlKind.PULL_REQUEST, PullRequest(seq).encode())
    items = []
    with trio.fail_after(HANG):  # a hang, not a slow machine
        while len(items) < PARAMS.pull_batch:
            kind, body = await link.receive_cell()
            assert kind == ControlKind.PULL_ITEM
            items.append(PullItem.decode(body))
    return items


async def served(proc: Process, key: LinkKey, source: str = "127.0.0.1") -> bool:
    """Does the provider serve a pull for ``key`` on a new link (False: it closed the link)?"""
    try:
        async with await link_from(proc, key, source) as link:
            return len(await pull(link, 1)) == PARAMS.pull_batch
    except LinkError:
        return False


def hold(port: int, sources: list[str], per_source: int) -> list[socket.socket]:
    """Open (and keep open) ``per_source`` raw TCP connections from each source address."""
    held = []
    for source in sources:
        for _ in range(per_source):
            sock = socket.socket()
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
            held.append(sock)
    return held


def release(held: list[socket.socket]) -> None:
    for sock in held:
        sock.close()


async def stats_when(proc: Process, done: Any, timeout: float = HANG) -> dict[str, Any]:
    """The process's statistics once ``done(stats)`` holds (written every second)."""

    def there() -> dict[str, Any] | None:
        stats = proc.stats() or {}
        if stats and done(stats):
            return stats
        assert proc.running(), f"{proc.name} died: {proc.log_path.read_text()[-1500:]}"
        return None

    stats: dict[str, Any] = await wait_for_async(
        there, what=f"{proc.name}'s statistics to get there", timeout=timeout, interval=0.2)
    return stats


def refused(stats: dict[str, Any]) -> int:
    return int(stats.get("connections_refused", 0))


async def test_a_provider_at_its_connection_cap_keeps_serving_an_existing_client(
    net: LocalNetwork,
) -> None:
    proc = net.processes["provider1"]
    key = LinkKey.generate()
    async with await link_from(proc, key) as client:
        await pull(client, 1)
        sources = [f"127.0.0.{i}" for i in range(2, 10)]
        held = hold(proc.port, sources, CAPPED["max_connections_per_source"])  # 48
        try:
            # Strangers may take the cap less the reserve: 20 places, one of them the
            # client's; the other 29 are refused at once.
            stats = await stats_when(proc, lambda s: refused(s) >= 29)
            assert refused(stats) == 29 and stats["connections"] == 20
            assert await pull(client, 2)  # the client being served is still served
            # A newcomer from another address is refused while the cap is held...
            assert not await served(proc, LinkKey.generate(), "127.0.0.20")
            assert proc.running()
        finally:
            release(held)
        # ...and served once the flood is gone.
        await stats_when(proc, lambda s: s["connections"] == 1)
        assert await served(proc, LinkKey.generate(), "127.0.0.20")
        assert await pull(client, 3)


async def test_the_default_cap_holds_with_few_descriptors(net: LocalNetwork) -> None:
    """RLIMIT_NOFILE 256 for this provider: 400 held connections used to kill it (EMFILE)."""
    proc = net.processes["provider2"]
    stats = await stats_when(proc, lambda s: "connection_limit" in s)
    limit = stats["connection_limit"]
    assert limit == NOFILE // 2  # derived from the descriptor limit it was given
    key = LinkKey.generate()
    async with await link_from(proc, key) as client:
        await pull(client, 1)
        held = hold(proc.port, [f"127.0.0.{i}" for i in range(2, 12)], 40)  # 400
        try:
            stats = await stats_when(proc, lambda s: refused(s) + s["connections"] >= 401)
            reserve = min(64, limit // 4)
            assert stats["connections"] == limit - reserve  # strangers never touch the reserve
            assert await pull(client, 2)
            written = (proc.data_dir / "stats.json").stat().st_mtime_ns
            # Still alive, and still able to open files: its statistics keep being written.
            await stats_when(
                proc, lambda s: (proc.data_dir / "stats.json").stat().st_mtime_ns > written
            )
            assert proc.running()
        finally:
            release(held)
        await stats_when(proc, lambda s: s["connections"] == 1)
        assert await pull(client, 3)
    assert await served(proc, LinkKey.generate(), "127.0.0.30")


async def test_a_flood_of_mailbox_keys_is_refused_and_the_provider_restarts_cleanly(
    net: LocalNetwork,
) -> None:
    proc = net.processes["provider3"]
    existing = LinkKey.generate()
    assert await served(proc, existing)
    accepted = 0
    for i in range(2, 10):
        for _ in range(6):
            accepted += await served(proc, LinkKey.generate(), f"127.0.0.{i}")
    # 12 mailboxes in all (the existing one included), at most 4 per address.
    assert accepted == REGISTRATIONS["max_mailboxes"] - 1
    stats = await stats_when(
        proc, lambda s: s.get("registrations_refused_full", 0)
        + s.get("registrations_refused_per_source", 0) == 48 - accepted
    )
    assert stats["registrations_refused_per_source"] > 0
    assert stats["registrations_refused_full"] > 0
    assert stats["mailboxes"] == REGISTRATIONS["max_mailboxes"]
    assert await served(proc, existing)  # existing clients reconnect freely
    assert proc.running()

    net.restart("provider3", timeout=HANG)
    assert await served(proc, existing)
    for i in range(20, 24):  # new keys after the restart: refused, never a crash
        assert not await served(proc, LinkKey.generate(), f"127.0.0.{i}")
    await stats_when(proc, lambda s: s.get("registrations_refused_full", 0) >= 4)
    assert await served(proc, existing)
    assert proc.running() and proc.starts == 2
    assert "Traceback" not in Path(proc.log_path).read_text()
