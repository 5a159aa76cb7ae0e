"""The sans-IO packet processor (mixcore/hop.py) along a real stratified path, with a node's
real key ring and replay filter, and every drop reason it counts."""

from __future__ import annotations

import os

import pytest

from mixcore.epochs import EpochClock
from mixcore.hop import (
    Arrival,
    Dropped,
    DropReason,
    Forward,
    LoopReturned,
    PacketProcessor,
    StoreMessage,
    StoreReply,
)
from mixcore.params import SPHINX_SUITE_V1
from mixcore.sphinx import MixPrivateKey, PathHop, Sphinx, SphinxGeometry
from mixcore.topology import NodeRole, Topology
from mixnode.keyring import KeyRing
from mixnode.replay import ReplayFilter

CLOCK = EpochClock(genesis_time=0.0, epoch_length=1000.0)
GRACE = 20.0
SX = Sphinx()
NAMES = ["p1", "m1", "m2", "m3", "p2"]
LAYERS = {"p1": 0, "m1": 1, "m2": 2, "m3": 3, "p2": 0}
IDS = {name: name.encode().ljust(32, b"\x00") for name in NAMES}
TOPOLOGY = Topology({IDS[n]: layer for n, layer in LAYERS.items()}, num_layers=3)
BOB = b"B" * 16


class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.keys = {epoch: MixPrivateKey.generate() for epoch in (0, 1)}
        ring = KeyRing(CLOCK, GRACE)
        for epoch, key in self.keys.items():
            ring.add(epoch, key)
        self.filters: dict[int, ReplayFilter] = {}
        self.loop_mailbox = os.urandom(16)
        self.processor = PacketProcessor(
            sphinx=SX,
            keyring=ring,
            replay_filter=lambda e: self.filters.setdefault(e, ReplayFilter(10_000)),
            role=NodeRole.PROVIDER if LAYERS[name] == 0 else NodeRole.MIX,
            node_id=IDS[name],
            topology=lambda _epoch: TOPOLOGY,
            max_hop_delay=60.0,
            loop_mailbox=self.loop_mailbox,
            hosts_mailbox=lambda m: name == "p2" and m == BOB,
        )

    def hop(self, epoch: int = 0) -> PathHop:
        return PathHop(IDS[self.name], self.keys[epoch].public)


NODES = {name: Node(name) for name in NAMES}
BY_ID = {IDS[name]: node for name, node in NODES.items()}


def path(*names: str, epoch: int = 0) -> list[PathHop]:
    return [NODES[n].hop(epoch) for n in names]


def test_forward_packet_crosses_the_network_with_its_delays() -> None:
    delays = [0.0, 1.5, 2.5, 0.5]
    packet = SX.create_forward(path(*NAMES), delays, BOB, b"hi bob")
    now, node = 100.0, NODES["p1"]
    for expected_delay, next_name in zip(delays, NAMES[1:], strict=True):
        event = node.processor.receive(packet, now)
        assert isinstance(event, Forward)
        assert event.next_node == IDS[next_name]
        assert event.due == pytest.approx(now + expected_delay, abs=1e-6)
        now, node, packet = event.due, BY_ID[event.next_node], event.packet
    final = node.processor.receive(packet, now)
    assert final == StoreMessage(BOB, b"hi bob")


def test_replay_is_dropped_and_counted() -> None:
    packet = SX.create_forward(path("m1", "m2", "m3", "p2"), [0.1] * 3, BOB, b"x")
    m1 = NODES["m1"].processor
    assert isinstance(m1.receive(packet, 100.0), Forward)
    before = m1.drops[DropReason.REPLAY]
    assert m1.receive(packet, 100.5) == Dropped(DropReason.REPLAY)
    assert m1.drops[DropReason.REPLAY] == before + 1


def test_tampered_and_garbage_packets_are_dropped() -> None:
    packet = SX.create_forward(path("m1", "m2", "m3", "p2"), [0.1] * 3, BOB, b"x")
    m1 = NODES["m1"].processor
    in_beta = 1 + 32 + 30  # past the version byte and alpha
    tampered = packet[:in_beta] + bytes([packet[in_beta] ^ 1]) + packet[in_beta + 1 :]
    assert m1.receive(tampered, 100.0) == Dropped(DropReason.BAD_MAC)
    other_alpha = packet[:5] + bytes([packet[5] ^ 1]) + packet[6:]  # another point: other keys
    assert m1.receive(other_alpha, 100.0) == Dropped(DropReason.BAD_MAC)
    not_canonical = packet[:32] + bytes([packet[32] | 0x80]) + packet[33:]  # alpha >= 2^255
    assert m1.receive(not_canonical, 100.0) == Dropped(DropReason.MALFORMED)
    assert m1.receive(b"short", 100.0) == Dropped(DropReason.MALFORMED)
    assert m1.receive(os.urandom(len(packet)), 100.0).reason in {  # type: ignore[union-attr]
        DropReason.MALFORMED,
        DropReason.BAD_MAC,
    }


def test_a_packet_of_another_sphinx_suite_is_refused_and_counted() -> None:
    """The network runs suite v2; a v1 packet (sphinxmix over P-256, version byte 1) is refused
    as ``wrong_suite`` whatever its length, and a v2 packet relabelled v1 too."""
    v1 = Sphinx(SphinxGeometry(suite=SPHINX_SUITE_V1))
    v1_key = MixPrivateKey.generate(SPHINX_SUITE_V1)
    v1_packet = v1.create_forward([PathHop(IDS["m1"], v1_key.public)], [], BOB, b"x")
    m1 = NODES["m1"].processor
    before = m1.drops[DropReason.WRONG_SUITE]
    assert m1.receive(v1_packet, 100.0) == Dropped(DropReason.WRONG_SUITE)
    ours = SX.create_forward(path("m1", "m2", "m3", "p2"), [0.1] * 3, BOB, b"x")
    assert m1.receive(b"\x01" + ours[1:], 100.0) == Dropped(DropReason.WRONG_SUITE)
    assert m1.drops[DropReason.WRONG_SUITE] == before + 2
    assert m1.statistics().dropped["wrong_suite"] == before + 2


def test_skipping_a_layer_is_dropped() -> None:
    packet = SX.create_forward(path("p1", "m2", "m3", "p2"), [0.1] * 3, BOB, b"x")
    assert NODES["p1"].processor.receive(packet, 100.0) == Dropped(DropReason.WRONG_LAYER)


def test_unknown_next_hop_is_dropped() -> None:
    stranger = PathHop(b"z" * 32, MixPrivateKey.generate().public)
    packet = SX.create_forward([NODES["m1"].hop(), stranger], [0.1], BOB, b"x")
    assert NODES["m1"].processor.receive(packet, 100.0) == Dropped(DropReason.UNKNOWN_NEXT_HOP)


def test_delay_over_the_bound_is_dropped() -> None:
    packet = SX.create_forward(path("m1", "m2"), [61.0], BOB, b"x")
    assert NODES["m1"].processor.receive(packet, 100.0) == Dropped(DropReason.DELAY_TOO_LONG)


def test_mailbox_not_hosted_here_is_dropped() -> None:
    packet = SX.create_forward(path("p2"), [], b"C" * 16, b"x")
    assert NODES["p2"].processor.receive(packet, 100.0) == Dropped(DropReason.UNKNOWN_MAILBOX)
    packet = SX.create_forward(path("m3"), [], BOB, b"x")
    assert NODES["m3"].processor.receive(packet, 100.0) == Dropped(DropReason.UNKNOWN_MAILBOX)


def test_drop_cover_is_discarded_and_counted() -> None:
    p2 = NODES["p2"].processor
    before = p2.drops[DropReason.COVER]
    packet = SX.create_forward(path("p2"), [], bytes(16), os.urandom(100))
    assert p2.receive(packet, 100.0) == Dropped(DropReason.COVER)
    assert p2.drops[DropReason.COVER] == before + 1


def test_no_topology_for_the_epoch_is_no_route() -> None:
    node = Node("m1")
    node.processor._topology = lambda _epoch: None
    packet = SX.create_forward([node.hop(), NODES["m2"].hop()], [0.1], BOB, b"x")
    assert node.processor.receive(packet, 100.0) == Dropped(DropReason.NO_ROUTE)


def test_own_loop_returns() -> None:
    m2 = NODES["m2"]
    loop = SX.create_forward(path("m2"), [], m2.loop_mailbox, b"loop 1")
    assert m2.processor.receive(loop, 100.0) == LoopReturned(b"loop 1")


def test_surb_reply_is_stored_for_its_creator() -> None:
    surb, keys = SX.create_surb(path("m1", "m2", "m3", "p2"), [0.0] * 3, BOB)
    packet, node = SX.package_reply(surb, b"ack"), BY_ID[surb.first_hop]
    for _ in range(3):
        event = node.processor.receive(packet, 100.0)
        assert isinstance(event, Forward)
        packet, node = event.packet, BY_ID[event.next_node]
    stored = node.processor.receive(packet, 100.0)
    assert isinstance(stored, StoreReply)
    assert stored.surb_id == keys.surb_id
    assert SX.decode_reply(keys, stored.body) == b"ack"


def test_key_rotation_grace_then_expired_then_unknown() -> None:
    m1 = NODES["m1"].processor

    def build() -> bytes:
        return SX.create_forward(path("m1", "m2"), [0.1], BOB, b"x")

    assert isinstance(m1.receive(build(), CLOCK.end(0) + GRACE / 2), Forward)
    assert m1.receive(build(), CLOCK.end(0) + GRACE * 1.5) == Dropped(DropReason.EXPIRED_KEY)
    assert m1.receive(build(), CLOCK.end(0) + GRACE * 2.5) == Dropped(DropReason.BAD_MAC)
    next_epoch = SX.create_forward(path("m1", "m2", epoch=1), [0.1], BOB, b"x")
    assert isinstance(m1.receive(next_epoch, CLOCK.end(0) - GRACE / 2), Forward)


def test_statistics_are_counts_only() -> None:
    stats = NODES["m1"].processor.statistics().as_dict()
    assert stats["received"] >= 1
    assert set(stats) == {"received", "outcomes", "dropped"}
    assert all(isinstance(v, int) for v in stats["dropped"].values())


def test_mail_is_stored_only_from_the_last_layer_and_never_from_a_client_link() -> None:
    """Deliveries come from the network side: a provider stores mail that reached it from a
    node of the last mix layer; a client link may only feed layer 1."""
    p2 = NODES["p2"].processor
    # One hop, handed over on a client link: refused, whatever it carries.
    one_hop = SX.create_forward(path("p2"), [], BOB, b"junk")
    assert p2.receive(one_hop, 1.0, arrival=Arrival.CLIENT) == Dropped(
        DropReason.CLIENT_DELIVERY
    )
    # The same from a node link of layer 1 (a corrupt mix skipping layers 2 and 3): refused.
    one_hop = SX.create_forward(path("p2"), [], BOB, b"junk")
    assert p2.receive(one_hop, 1.0, previous_node=IDS["m1"]) == Dropped(
        DropReason.NOT_FROM_LAST_LAYER
    )
    # From the last layer: stored.
    honest = SX.create_forward(path("p2"), [], BOB, b"mail")
    assert p2.receive(honest, 1.0, previous_node=IDS["m3"]) == StoreMessage(BOB, b"mail")
    # A client's packet into layer 1 passes; into layer 2 does not.
    p1 = NODES["p1"].processor
    to_layer_1 = SX.create_forward(path("p1", "m1", "m2", "m3", "p2"), [0.0] * 4, BOB, b"x")
    assert isinstance(p1.receive(to_layer_1, 1.0, arrival=Arrival.CLIENT), Forward)
    to_layer_2 = SX.create_forward(path("p1", "m2", "m3", "p2"), [0.0] * 3, BOB, b"x")
    assert p1.receive(to_layer_2, 1.0, arrival=Arrival.CLIENT) == Dropped(DropReason.WRONG_LAYER)
