"""Real node processes on loopback: one authority, one mix per layer, two providers.

What a client relies on from its provider and the mixes, end to end over real Noise links:
a message crosses the network, is stored durably, is acknowledged through the SURB, survives a
SIGKILL of the provider, and leaves only after the owner acknowledges the pull; nobody else can
pull it; a stranger's one-hop packets never reach a mailbox; garbage on a link closes that link
only; keys rotate under traffic; the Prometheus endpoint of a real node answers.

Nothing here paces itself on the wall clock: every wait polls a node's statistics or a pull
until a condition holds (``helpers.wait_for_async``), under a deadline (``HANG``) that only
bounds a hung run. Epochs last :data:`EPOCH` seconds, long against what a loaded machine needs
for a step (a provider's SIGKILL and restart with its hop workers, a hop's processing), so that
a key's grace (a quarter epoch, 6 s or more) outlasts such delays and the test's packets meet
the key they were made for. The epoch is sized from a step measured when the module is loaded
(``helpers.measured_step``: 28 steps, 24 s at least, 120 s at most), so a loaded machine gets
longer epochs instead of packets that miss their key.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio
from helpers import HANG, measured_step, wait_for_async

from mixcore.consensus import AuthoritySet
from mixcore.control import ControlKind, ItemType, PullAck, PullItem, PullRequest
from mixcore.epochs import EpochClock
from mixcore.keys import LinkKey
from mixcore.net.directory_client import ConsensusFetcher
from mixcore.net.link import Link, connect_link
from mixcore.params import NetworkParams
from mixcore.payload import ACK_PAYLOAD, MailboxPayload, data_capacity
from mixcore.routing import mailbox_address
from mixcore.sphinx import PathHop, Sphinx, SphinxGeometry, SurbKeys
from mixnet.network import LocalNetwork, free_port, pid_alive
from mixnode.view import EpochView

pytestmark = pytest.mark.slow

#: 28 measured steps (about 0.2 s each on an idle machine), within 24-120 s.
EPOCH = min(120.0, max(24.0, 28 * measured_step()))
PARAMS = NetworkParams(
    epoch_length=EPOCH,
    genesis_time=float(int(time.time()) - 2),
    mean_hop_delay=0.05,
    mix_loop_rate=2.0,
    pull_batch=4,
)
SX = Sphinx(SphinxGeometry.from_params(PARAMS))
CLOCK = EpochClock.from_params(PARAMS)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = LocalNetwork(
        tmp_path_factory.mktemp("net"), params=PARAMS, authorities=1, mixes_per_layer=1,
        providers=2,
    )
    network.create()
    mix1 = network.processes["mix1"].data_dir / "node.json"
    config = json.loads(mix1.read_text())
    config["metrics_port"] = free_port()
    mix1.write_text(json.dumps(config))
    try:
        network.start_all(timeout=HANG)
        yield network
    finally:
        pids = network.pids()
        network.close()
        assert not [p for p in pids if pid_alive(p)], "a node process survived"


def _authorities(net: LocalNetwork) -> tuple[list[str], AuthoritySet]:
    auths = net.of_kind("authority")
    urls = [a.info["url"] for a in auths]
    keys = tuple(bytes.fromhex(a.info["identity_key"]) for a in auths)
    return urls, AuthoritySet.majority(keys)


async def listed_view(net: LocalNetwork, timeout: float = HANG) -> EpochView:
    """The current epoch's view once it lists every node and every node installed it."""
    urls, authorities = _authorities(net)
    fetcher = ConsensusFetcher(urls, authorities, CLOCK, rng=random.Random(1), timeout=3.0)
    nodes = [p for p in net.processes.values() if p.kind in ("mix", "provider")]

    async def listed() -> EpochView | None:
        epoch = CLOCK.epoch_at(time.time())
        # Leave room before the boundary for the test's packets.
        if CLOCK.end(epoch) - time.time() <= 2.5:
            return None
        try:
            verified = await fetcher.fetch(epoch)
        except Exception:  # not published yet
            return None
        if verified is None or len(verified.document.nodes) != len(nodes):
            return None
        stats = [p.stats() or {} for p in nodes]
        if not all(epoch in s.get("consensus_epochs", []) for s in stats):
            return None
        return EpochView.from_document(verified.document)

    view: EpochView = await wait_for_async(
        listed, what="a consensus listing every node, installed by every node", timeout=timeout)
    return view


def provider(net: LocalNetwork, view: EpochView, index: int) -> tuple[bytes, Any]:
    name = f"provider{index}"
    node_id = bytes.fromhex(net.processes[name].info["identity_key"])
    return node_id, view.peers[node_id]


async def client_link(view: EpochView, provider_id: bytes, key: LinkKey) -> Link:
    peer = view.peers[provider_id]
    return await connect_link(
        peer.host, peer.port, local_key=key, remote_static=peer.link_key,
        body_size=SX.geometry.packet_len,
    )


async def pull(link: Link, seq: int) -> list[PullItem]:
    await link.send_cell(ControlKind.PULL_REQUEST, PullRequest(seq).encode())
    items = []
    with trio.fail_after(HANG):  # a hang, not a slow machine
        while len(items) < PARAMS.pull_batch:
            kind, body = await link.receive_cell()
            assert kind == ControlKind.PULL_ITEM
            item = PullItem.decode(body)
            assert item.seq == seq
            assert item.count == PARAMS.pull_batch
            items.append(item)
    return items


async def pull_until(link: Link, want: ItemType, timeout: float = HANG) -> list[PullItem]:
    """Pull until an item of ``want`` arrives; the timeout only bounds a hung run."""
    seq = 0

    async def pulled() -> list[PullItem]:
        nonlocal seq
        seq += 1
        return [i for i in await pull(link, seq) if i.item_type is want]

    real: list[PullItem] = await wait_for_async(pulled, what=f"a {want.name} item",
                                                timeout=timeout)
    return real


def route(view: EpochView, src: bytes, dst: bytes) -> list[PathHop]:
    mixes = [view.layer_members(layer)[0] for layer in range(1, PARAMS.layers + 1)]
    return [view.hops[n] for n in (src, *mixes, dst)]


Address = tuple[bytes, bytes]  # (provider node id, mailbox)


def send_message(
    view: EpochView, alice: Address, bob: Address, data: bytes
) -> tuple[bytes, SurbKeys]:
    """A fragment from Alice to Bob with a SURB-ACK back to Alice."""
    (alice_provider, alice_mailbox), (bob_provider, bob_mailbox) = alice, bob
    ack_route = route(view, bob_provider, alice_provider)[1:]
    surb, keys = SX.create_surb(ack_route, [0.05] * 3, alice_mailbox)
    payload = MailboxPayload(surb, data).encode(SX.geometry)
    forward = route(view, alice_provider, bob_provider)
    packet = SX.create_forward(forward, [0.0, 0.05, 0.05, 0.05], bob_mailbox, payload)
    return packet, keys


async def test_message_is_stored_acked_survives_sigkill_and_leaves_only_after_ack(
    net: LocalNetwork,
) -> None:
    view = await listed_view(net)
    p1, _ = provider(net, view, 1)
    p2, _ = provider(net, view, 2)
    alice_key, bob_key = LinkKey.generate(), LinkKey.generate()
    alice = (p1, mailbox_address(alice_key.public))
    bob = (p2, mailbox_address(bob_key.public))
    data = os.urandom(data_capacity(SX.geometry))
    async with await client_link(view, p1, alice_key) as alice_link:
        async with await client_link(view, p2, bob_key) as bob_link:
            await pull(bob_link, 0)  # registers Bob's mailbox before anything is sent to it
            packet, surb_keys = send_message(view, alice, bob, data)
            await alice_link.send_packet(packet)
            [item] = await pull_until(bob_link, ItemType.MESSAGE)
            assert item.data == data
        [ack] = await pull_until(alice_link, ItemType.REPLY)
        assert ack.surb_id == surb_keys.surb_id
        assert SX.decode_reply(surb_keys, ack.data) == ACK_PAYLOAD

    net.kill("provider2")  # SIGKILL before Bob acknowledged: nothing may be lost
    net.start("provider2")
    net.wait_ready(["provider2"], timeout=HANG)
    async with await client_link(view, p2, bob_key) as bob_link:
        [again] = await pull_until(bob_link, ItemType.MESSAGE)
        assert again.data == data and again.item_id == item.item_id
        await bob_link.send_cell(ControlKind.PULL_ACK, PullAck(99, (again.item_id,)).encode())
        # The acknowledged item leaves: pulls return dummies only (polled, not slept for).
        seq = 99

        async def only_dummies() -> bool:
            nonlocal seq
            seq += 1
            return all(i.item_type is ItemType.DUMMY for i in await pull(bob_link, seq))

        await wait_for_async(only_dummies, what="the acknowledged item to leave")


async def test_a_packet_replayed_after_a_sigkill_is_dropped_with_hop_workers(
    net: LocalNetwork,
) -> None:
    """The entry provider peels in worker processes; it forwards a packet, is SIGKILLed, comes
    back, and is sent the same packet again: the replay tag it journaled before forwarding is
    still there, so the copy is dropped as a ``replay`` and Bob's provider stores the message
    once. (Epochs here last 24 s: should the restart outlast the packet's key on a slow machine,
    the copy is refused as ``expired_key``/``bad_mac`` instead, still never forwarded;
    ``tests/mixnode/test_workers.py`` checks the journal across a crash without a clock.)"""
    async def early_in_its_epoch() -> EpochView | None:  # a whole key's life ahead
        view = await listed_view(net)
        return view if CLOCK.end(view.epoch) - time.time() >= 5.0 else None

    view = await wait_for_async(early_in_its_epoch, what="a listed view early in its epoch")
    epoch = view.epoch
    p1, _ = provider(net, view, 1)
    p2, _ = provider(net, view, 2)
    entry, exit_ = net.processes["provider1"], net.processes["provider2"]
    assert (entry.stats() or {})["workers"]["workers"] >= 1  # the hop runs in workers
    alice_key, bob_key = LinkKey.generate(), LinkKey.generate()
    alice = (p1, mailbox_address(alice_key.public))
    bob = (p2, mailbox_address(bob_key.public))
    async with await client_link(view, p2, bob_key) as bob_link:
        await pull(bob_link, 0)  # registers Bob's mailbox
    stored = (exit_.stats() or {}).get("stored_messages", 0)
    packet, _ = send_message(view, alice, bob, b"only once")
    async with await client_link(view, p1, alice_key) as alice_link:
        await alice_link.send_packet(packet)
        await stats_when(exit_, lambda s: s.get("stored_messages", 0) == stored + 1)
    net.kill("provider1")
    net.start("provider1")
    net.wait_ready(["provider1"], timeout=HANG)
    async with await client_link(view, p1, alice_key) as alice_link:
        key_live = time.time() < CLOCK.end(epoch) + net_grace()
        await alice_link.send_packet(packet)
        if key_live:  # the key still opens it: only the journaled tag can stop it
            after = await stats_when(entry, lambda s: s.get("dropped", {}).get("replay", 0) >= 1)
            assert after["dropped"]["replay"] == 1, after["dropped"]
        else:
            await stats_when(entry, lambda s: _refused(s) >= 1)
    # The entry dropped the copy (above); a copy that had gone through would have reached the
    # exit within this quiet second. A negative check: a slow machine can only make it miss a
    # bug here, never fail a correct run.
    await trio.sleep(1.0)
    assert (exit_.stats() or {}).get("stored_messages", 0) == stored + 1


def net_grace() -> float:
    """How long after its epoch a key still opens packets (the params' default grace), less a
    margin for the node's own clock reading."""
    return PARAMS.key_grace - 0.5


def _refused(stats: dict[str, Any]) -> int:
    """Drops that can be our replayed copy (loops and other traffic never cause these)."""
    dropped = stats.get("dropped", {})
    return int(sum(dropped.get(r, 0) for r in ("replay", "expired_key", "bad_mac")))


async def stats_when(proc: Any, done: Any, timeout: float = HANG) -> dict[str, Any]:
    """The node's statistics once ``done(stats)`` holds (they are written once a second)."""

    def there() -> dict[str, Any] | None:
        stats = proc.stats() or {}
        return stats if stats and done(stats) else None

    stats: dict[str, Any] = await wait_for_async(
        there, what=f"{proc.name}'s statistics to get there", timeout=timeout)
    return stats


async def test_a_burst_in_one_write_is_handled_whole_with_bad_packets_counted(
    net: LocalNetwork,
) -> None:
    """A loaded node takes every cell of a read at once (Link.receive_cells): a replay and a
    malformed packet inside such a batch are counted drops, the packets around them are all
    delivered, and the link stays open."""
    view = await listed_view(net)
    p1, _ = provider(net, view, 1)
    p2, _ = provider(net, view, 2)
    entry, exit_ = net.processes["provider1"], net.processes["provider2"]
    alice_key, bob_key = LinkKey.generate(), LinkKey.generate()
    alice = (p1, mailbox_address(alice_key.public))
    bob = (p2, mailbox_address(bob_key.public))
    packets = [send_message(view, alice, bob, b"burst %d" % i)[0] for i in range(120)]
    malformed = b"\x02" + b"\xff" * 32 + bytes(SX.geometry.packet_len - 33)  # alpha >= 2^255-19
    burst = [*packets[:60], packets[0], malformed, *packets[60:]]
    entry_before = entry.stats() or {}
    exit_before = exit_.stats() or {}
    async with await client_link(view, p2, bob_key) as bob_link:
        await pull(bob_link, 0)  # registers Bob's mailbox
    async with await client_link(view, p1, alice_key) as alice_link:
        await alice_link.send_packets(burst)
        stored = (exit_before.get("stored_messages", 0)) + 120
        exit_after = await stats_when(exit_, lambda s: s.get("stored_messages", 0) >= stored)
        assert exit_after["stored_messages"] == stored  # each packet once, none lost
        dropped_before = entry_before.get("dropped", {})
        entry_after = await stats_when(
            entry, lambda s: s.get("dropped", {}).get("malformed", 0) > 0
        )
        for reason in ("replay", "malformed"):
            assert entry_after["dropped"][reason] == dropped_before.get(reason, 0) + 1
        # The same link still works: the SURB-ACKs of the burst come back on it.
        assert await pull_until(alice_link, ItemType.REPLY)


async def test_another_key_cannot_pull_and_every_response_has_the_same_size(
    net: LocalNetwork,
) -> None:
    view = await listed_view(net)
    p1, _ = provider(net, view, 1)
    p2, _ = provider(net, view, 2)
    alice_key, bob_key, mallory_key = LinkKey.generate(), LinkKey.generate(), LinkKey.generate()
    alice = (p1, mailbox_address(alice_key.public))
    bob = (p2, mailbox_address(bob_key.public))
    async with await client_link(view, p2, bob_key) as bob_link:
        await pull(bob_link, 0)
        async with await client_link(view, p1, alice_key) as alice_link:
            packet, _ = send_message(view, alice, bob, b"for bob only")
            await alice_link.send_packet(packet)
        bob_items = await pull_until(bob_link, ItemType.MESSAGE)
        assert bob_items[0].data == b"for bob only"
    async with await client_link(view, p2, mallory_key) as mallory_link:
        items = await pull(mallory_link, 1)
        assert [i.item_type for i in items] == [ItemType.DUMMY] * PARAMS.pull_batch
        # Acknowledging Bob's item ids from Mallory's link deletes nothing of Bob's.
        await mallory_link.send_cell(
            ControlKind.PULL_ACK, PullAck(2, (bob_items[0].item_id,)).encode()
        )
        stats = mallory_link.statistics()
    assert stats.cells_received == PARAMS.pull_batch  # a fixed number of fixed-size cells
    async with await client_link(view, p2, bob_key) as bob_link:
        assert (await pull_until(bob_link, ItemType.MESSAGE))[0].data == b"for bob only"


async def test_a_strangers_one_hop_packets_never_reach_a_mailbox(net: LocalNetwork) -> None:
    """Issue 15 item 6: one-hop packets on a client link were stored in the named mailbox
    (272 junk items/s, then the owner's real mail was refused as mailbox_full)."""
    view = await listed_view(net)
    p2, _ = provider(net, view, 2)
    exit_ = net.processes["provider2"]
    bob_key, mallory_key = LinkKey.generate(), LinkKey.generate()
    bob_mailbox = mailbox_address(bob_key.public)
    def counts(stats: dict[str, Any]) -> tuple[int, int]:
        dropped = stats.get("dropped", {})
        # A loaded machine may hold a packet past its key's grace: then it is an expired_key
        # drop instead, never a stored message either.
        refused = dropped.get("client_delivery", 0) + dropped.get("expired_key", 0)
        return refused, stats.get("stored_messages", 0)

    refused_before, _ = counts(exit_.stats() or {})
    async with await client_link(view, p2, bob_key) as bob_link:
        await pull(bob_link, 0)  # Bob's mailbox exists
        me = view.hops[p2]
        surb, _ = SX.create_surb([me], [], mailbox_address(mallory_key.public))
        payload = MailboxPayload(surb, b"junk").encode(SX.geometry)
        async with await client_link(view, p2, mallory_key) as mallory_link:
            junk = [SX.create_forward([me], [], bob_mailbox, payload) for _ in range(40)]
            await mallory_link.send_packets(junk)
            await pull(mallory_link, 1)  # handled in order: the junk came first
        after = await stats_when(exit_, lambda s: counts(s)[0] >= refused_before + 40)
        assert counts(after)[0] == refused_before + 40
        assert after["dropped"]["client_delivery"] > 0
        # Nobody else writes to this new Bob: his mailbox got none of it.
        assert all(i.item_type is ItemType.DUMMY for i in await pull(bob_link, 1))


async def test_metrics_endpoint_of_a_real_node_answers_with_its_counters(
    net: LocalNetwork,
) -> None:
    """Issue 15 item 7: every scrape of a real node answered 500 (the exporter's thread read
    trio's clock outside the event loop)."""
    await listed_view(net)
    port = json.loads((net.processes["mix1"].data_dir / "node.json").read_text())["metrics_port"]
    async with httpx.AsyncClient() as http:
        first = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=HANG)
        assert first.status_code == 200, first.text[:300]
        assert "mixnet_node_packets_in " in first.text
        assert 'mixnet_node_dropped{kind=' in first.text or "mixnet_node_loops_sent" in first.text
        packets = _sample(first.text, "mixnet_node_packets_in")

        async def moved() -> bool:
            scrape = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=HANG)
            return _sample(scrape.text, "mixnet_node_packets_in") > packets

        await wait_for_async(moved, what="the counters to move", interval=0.5)


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the scrape")


async def test_garbage_closes_only_that_link_and_the_node_keeps_serving(
    net: LocalNetwork,
) -> None:
    view = await listed_view(net)
    mix = net.processes["mix1"]
    before = (mix.stats() or {}).get("links_rejected", 0)
    for _ in range(3):
        assert await trio.to_thread.run_sync(_node_hangs_up_on_garbage, mix.port)
    # Its statistics (written once a second) count the three rejected links.
    stats = await stats_when(mix, lambda s: s.get("links_rejected", 0) >= before + 3)
    assert mix.running()
    # Traffic still flows through it: its own loops keep coming back.
    returned = stats["loops_returned"]
    await stats_when(mix, lambda s: s["loops_returned"] > returned)
    assert view.peers  # the consensus still lists it


def _node_hangs_up_on_garbage(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=HANG) as s:
        s.sendall(os.urandom(300))
        s.settimeout(HANG)  # the node hangs up; the timeout only bounds a hang
        try:
            return s.recv(100) == b""
        except ConnectionResetError:
            return True


async def test_sigterm_persists_the_replay_filter_and_statistics(net: LocalNetwork) -> None:
    await listed_view(net)
    mix = net.processes["mix2"]
    net.stop("mix2", timeout=HANG)  # SIGTERM: a graceful shutdown (no SIGKILL on a slow one)
    filters = sorted((mix.data_dir / "replay").glob("replay-*.bloom"))
    assert filters, "no replay filter saved at shutdown"
    for bloom in filters:  # the journal was folded into the saved filter
        journal = bloom.with_name(bloom.name + ".journal")
        assert not journal.exists() or journal.stat().st_size == 0
    assert (mix.stats() or {}).get("packets_in", 0) > 0
    net.start("mix2")
    net.wait_ready(["mix2"], timeout=HANG)


async def test_keys_rotate_under_traffic_and_loops_keep_returning(net: LocalNetwork) -> None:
    await listed_view(net)
    start_epoch = CLOCK.epoch_at(time.time())
    nodes = [p for p in net.processes.values() if p.kind != "authority"]
    # Every node has rotated at least once and is past the new epoch's key grace (so the old
    # key's erasure and loops sent across the boundary count); read from their statistics.
    for proc in nodes:
        await stats_when(proc, lambda s: s.get("epoch", -1) >= start_epoch + 1
                         and time.time() > CLOCK.start(s["epoch"]) + PARAMS.key_grace + 1.0)
    for proc in nodes:
        stats = proc.stats() or {}
        epoch = stats["epoch"]
        assert epoch >= start_epoch + 1
        assert epoch in stats["mix_key_epochs"] and epoch + 1 in stats["mix_key_epochs"]
        assert min(stats["mix_key_epochs"]) >= epoch - 1  # old keys erased after their grace
        assert stats["loops_returned"] > 0
        assert stats["loop_return_share"] >= 0.9, (proc.name, stats)
        assert "bad_mac" not in stats["dropped"] and "expired_key" not in stats["dropped"], (
            proc.name, stats)
    assert all(p.running() for p in net.processes.values())
