"""A node's runtime on a virtual clock: exact forwarding times, bounded pool, stores and ACKs,
pull batches, and mix loops that come back unless someone isolates the node."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from mixcore.control import ItemType, PullItem
from mixcore.epochs import EpochClock
from mixcore.payload import ACK_PAYLOAD, DROP_MAILBOX, MailboxPayload
from mixcore.routing import mailbox_address
from mixcore.sphinx import PathHop, Relay, Sphinx
from mixcore.topology import NodeRole
from mixnode.keyring import KeyRing
from mixnode.mailbox import MailboxStore
from mixnode.runtime import NodeRuntime, RuntimeSettings
from mixnode.view import EpochView

SX = Sphinx()
OFFSET = 100.0  # virtual trio time 0 is Unix time 100 (epoch 0 of a 1000 s epoch clock)


class Net:
    """Runtimes for every node of a kit, wired by synchronous in-memory links."""

    def __init__(
        self, kit: Any, tmp: Path, *, loop_rate: float = 0.0, pool: int = 10_000
    ) -> None:
        self.kit = kit
        doc = kit.document(0)
        self.view = EpochView.from_document(doc)
        self.runtimes: dict[bytes, NodeRuntime] = {}
        self.sent: list[tuple[float, bytes, bytes, bytes]] = []  # (time, from, to, packet)
        self.cut: set[bytes] = set()  # nodes whose incoming packets vanish
        clock = EpochClock(0.0, kit.params.epoch_length)
        for node in kit.nodes:
            ring = KeyRing(clock, grace=10.0)
            for epoch, key in node.mix_keys.items():
                ring.add(epoch, key)
            role = node.role
            store = None
            if role is NodeRole.PROVIDER:
                store = MailboxStore(tmp / f"{node.name}.db", ttl=3600.0)
            runtime = NodeRuntime(
                settings=RuntimeSettings(
                    role=role,
                    node_id=node.node_id,
                    max_hop_delay=120.0,
                    pool_capacity=pool,
                    replay_capacity=100_000,
                    replay_fp_rate=1e-6,
                    mix_loop_rate=loop_rate,
                    mean_hop_delay=0.5,
                    pull_batch=4,
                ),
                sphinx=SX,
                keyring=ring,
                send=self._sender(node.node_id),
                rng=random.Random(node.port),
                replay_dir=tmp / node.name,
                mailbox=store,
                time_offset=OFFSET,
            )
            runtime.install_view(self.view)
            self.runtimes[node.node_id] = runtime

    def _sender(self, source: bytes) -> Callable[[bytes, bytes], bool]:
        def send(next_node: bytes, packet: bytes) -> bool:
            self.sent.append((trio.current_time(), source, next_node, packet))
            target = self.runtimes.get(next_node)
            if target is None:
                return False
            if next_node not in self.cut:
                target.handle_packet(packet, previous_node=source)
            return True

        return send

    def layer(self, layer: int) -> list[bytes]:
        return self.view.layer_members(layer)

    def hop(self, node_id: bytes) -> PathHop:
        return self.view.hops[node_id]

    async def run(self, seconds: float, *extra: Callable[[], object]) -> None:
        async with trio.open_nursery() as nursery:
            for runtime in self.runtimes.values():
                nursery.start_soon(runtime.run_pool)
                nursery.start_soon(runtime.run_loops)
            for task in extra:
                nursery.start_soon(task)  # type: ignore[arg-type]
            await trio.sleep(seconds)
            nursery.cancel_scope.cancel()


async def test_forwarding_time_is_exactly_the_senders_delay(
    make_network: Callable[..., Any], tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    net = Net(make_network(mixes=3, providers=2), tmp_path)
    m1, m2, m3 = net.layer(1)[0], net.layer(2)[0], net.layer(3)[0]
    exit_provider = net.layer(0)[0]
    rng = random.Random(7)
    expected: dict[bytes, float] = {}  # output packet -> when it must leave m1
    key = net.kit.by_id(m1).mix_keys[0]

    async def feed() -> None:
        for _ in range(150):
            await trio.sleep(rng.expovariate(5.0))
            delays = [rng.expovariate(2.0) for _ in range(3)]
            path = [net.hop(n) for n in (m1, m2, m3, exit_provider)]
            packet = SX.create_forward(path, delays, bytes(16), b"cover")
            relay = SX.process(key, packet)
            assert isinstance(relay, Relay)
            expected[relay.packet] = trio.current_time() + relay.delay
            net.runtimes[m1].handle_packet(packet)

    net.cut = {m2}  # observe m1's output only
    await net.run(200.0, feed)
    leaving = {packet: t for t, src, _dst, packet in net.sent if src == m1}
    assert len(leaving) == 150
    errors = [leaving[p] - due for p, due in expected.items()]
    assert max(abs(e) for e in errors) < 1e-5
    assert abs(sum(errors) / len(errors)) < 1e-6  # no delay of the node's own, on average either


async def test_pool_overflow_is_refused_and_counted(
    make_network: Callable[..., Any], tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    net = Net(make_network(mixes=3, providers=1), tmp_path, pool=5)
    m1, m2 = net.layer(1)[0], net.layer(2)[0]
    runtime = net.runtimes[m1]
    for _ in range(8):
        runtime.handle_packet(SX.create_forward([net.hop(m1), net.hop(m2)], [50.0], bytes(16), b""))
    stats = runtime.statistics()
    assert stats["pool_size"] == 5
    assert stats["pool_refused"] == 3


async def test_provider_stores_then_acks_and_serves_fixed_size_pulls(
    make_network: Callable[..., Any], tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    net = Net(make_network(mixes=3, providers=2), tmp_path)
    alice_provider, bob_provider = net.layer(0)
    bob_credential = b"b" * 32
    bob_runtime = net.runtimes[bob_provider]
    assert bob_runtime.mailbox is not None
    bob = bob_runtime.mailbox.register(bob_credential, 0.0)
    assert bob == mailbox_address(bob_credential)
    alice_mailbox = net.runtimes[alice_provider].mailbox.register(b"a" * 32, 0.0)  # type: ignore[union-attr]
    mixes = [net.layer(i)[0] for i in (1, 2, 3)]
    surb, surb_keys = SX.create_surb(
        [net.hop(n) for n in (*mixes, alice_provider)], [0.1] * 3, alice_mailbox
    )
    payload = MailboxPayload(surb, b"fragment 1").encode(SX.geometry)
    packet = SX.create_forward(
        [net.hop(n) for n in (alice_provider, *mixes, bob_provider)], [0.0, 0.2, 0.2, 0.2], bob,
        payload,
    )
    net.runtimes[alice_provider].handle_packet(packet)
    await net.run(30.0)
    bodies = bob_runtime.pull_response(bob, seq=1)
    assert len(bodies) == 4
    items = [PullItem.decode(b) for b in bodies]
    assert [i.item_type for i in items] == [ItemType.MESSAGE] + [ItemType.DUMMY] * 3
    assert items[0].data == b"fragment 1"
    # The ACK travelled back through the SURB and is waiting in Alice's mailbox.
    alice_runtime = net.runtimes[alice_provider]
    reply = PullItem.decode(alice_runtime.pull_response(alice_mailbox, seq=1)[0])
    assert reply.item_type is ItemType.REPLY
    assert reply.surb_id == surb_keys.surb_id
    assert SX.decode_reply(surb_keys, reply.data) == ACK_PAYLOAD
    # Delete only after Bob acknowledges his pull.
    assert bob_runtime.acknowledge(bob, [items[0].item_id]) == 1
    assert PullItem.decode(bob_runtime.pull_response(bob, seq=2)[0]).item_type is ItemType.DUMMY


@pytest.mark.parametrize("isolate", [False, True])
async def test_mix_loops_return_unless_the_node_is_isolated(
    make_network: Callable[..., Any],
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    isolate: bool,
) -> None:
    net = Net(make_network(mixes=3, providers=1), tmp_path, loop_rate=0.5)
    target = net.layer(2)[0]
    if isolate:  # an (n-1) attacker drops everything that would reach the target
        net.cut = {target}
    await net.run(200.0)
    stats = net.runtimes[target].statistics()
    assert 60 <= stats["loops_sent"] <= 140  # Poisson(100): far outside this is a bug
    if isolate:
        assert stats["loops_returned"] == 0
        assert stats["loops_lost"] > 0
        assert stats["loop_return_share"] == 0.0
    else:
        assert stats["loops_lost"] == 0
        assert stats["loops_returned"] + stats["loops_in_flight"] == stats["loops_sent"]
        assert stats["loop_return_share"] == 1.0


def ks_exponential(samples: list[float], mean: float) -> float:
    """Kolmogorov-Smirnov distance between ``samples`` and Exp(``mean``)."""
    xs = sorted(samples)
    n = len(xs)
    return max(
        max(abs((i + 1) / n - cdf), abs(i / n - cdf))
        for i, cdf in enumerate(1.0 - math.exp(-x / mean) for x in xs)
    )


async def test_exit_acks_leave_after_an_exponential_delay_for_mail_and_decoys(
    make_network: Callable[..., Any], tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 13 item 3: an ACK leaving the exit at once marks which arrivals were mailbox
    packets. Each ACK (of stored mail and of a payload-stream decoy alike) must leave after an
    Exp(mean hop delay) hold: KS distance below the 0.1% critical value 1.95/sqrt(n)."""
    net = Net(make_network(mixes=3, providers=2), tmp_path)
    alice_provider, bob_provider = net.layer(0)
    mixes = [net.layer(i)[0] for i in (1, 2, 3)]
    bob_runtime = net.runtimes[bob_provider]
    assert bob_runtime.mailbox is not None
    bob = bob_runtime.mailbox.register(b"b" * 32, 0.0)
    net.cut = set(mixes)  # watch the exit's output only
    arrivals: dict[bytes, tuple[str, float]] = {}  # SURB id -> (kind, arrival time)

    async def feed() -> None:
        for i in range(400):
            await trio.sleep(2.0)  # all within the kit's first epoch
            kind = "mail" if i % 2 else "decoy"
            surb, keys = SX.create_surb([net.hop(n) for n in (*mixes, alice_provider)],
                                        [0.1] * 3, bytes(16))
            payload = MailboxPayload(surb, bytes(64)).encode(SX.geometry)
            packet = SX.create_forward([net.hop(bob_provider)], [],
                                       bob if kind == "mail" else DROP_MAILBOX, payload)
            arrivals[keys.surb_id] = (kind, trio.current_time())
            bob_runtime.handle_packet(packet, previous_node=mixes[-1])

    def surb_id_of(ack: bytes) -> bytes:
        """Peel an ACK along its SURB path to learn which packet it answers."""
        for node in (*mixes, alice_provider):
            result = SX.process(net.kit.by_id(node).mix_keys[0], ack)
            if isinstance(result, Relay):
                ack = result.packet
        return result.surb_id  # type: ignore[union-attr]

    await net.run(400 * 2.0 + 120.0, feed)
    delays: dict[str, list[float]] = {"mail": [], "decoy": []}
    for t, src, _dst, ack in net.sent:
        if src == bob_provider:
            kind, arrived = arrivals.pop(surb_id_of(ack))
            delays[kind].append(t - arrived)
    assert not arrivals  # every packet was acknowledged exactly once
    mean = 0.5  # the Net's mean hop delay
    for kind, ds in delays.items():
        assert len(ds) == 200 and min(ds) > 0.0
        assert ks_exponential(ds, mean) < 1.95 / math.sqrt(len(ds)), kind
    stats = bob_runtime.statistics()
    assert stats["decoys_acked"] == 200 and stats["stored_messages"] == 200
