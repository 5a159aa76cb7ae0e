"""End to end through nodes that process real Sphinx packets: loss and reordering, a dead
recipient provider, a mix that dies mid-run and a consensus that drops it.

Loss applies to every packet on every hop (client to provider, between nodes, SURB-ACKs); link
latencies are uniform up to 0.3 s, far above the 0.05 s mean hop delay, so packets overtake one
another; pull answers arrive shuffled within their batch.
"""

from __future__ import annotations

import os
import random

from client.config import ClientConfig
from client.transport.arq import MessageState, UndeliverableReason

_DOCS: dict[str, object] = {}


def network_consensus(kit, nodes=None):
    """Lower cover rates than the timing tests: real Sphinx costs ~2-4 ms per packet here."""
    key = "all" if nodes is None else ",".join(sorted(n.name for n in nodes))
    if key not in _DOCS:
        params = kit.consensus.params.replace(payload_rate=3.0, loop_rate=0.2, drop_rate=0.2)
        _DOCS[key] = kit.make_consensus(kit.nodes if nodes is None else nodes, params)
    return _DOCS[key]


def finished(client, count: int) -> bool:
    return len(client.delivered) + len(client.undeliverable) >= count


def test_loss_and_reordering_deliver_every_message_exactly_once(kit) -> None:
    doc = network_consensus(kit)
    net = kit.network(doc, seed=11, loss=0.05)
    p = [d.node_id for d in doc.providers()]
    config = ClientConfig(max_attempts=12)
    alice = net.add_client("alice", p[0], config=config, seed=1)
    bob = net.add_client("bob", p[1], config=config, seed=2)
    rng = random.Random(5)
    to_bob = {}
    for _ in range(6):
        data = rng.randbytes(rng.choice([10, 1700, 3400, 5000]))
        mid = alice.core.send_message(bob.provider, bob.mailbox, data, net.now,
                                      seal_key=bob.core.mailbox_public)
        to_bob[mid] = data
    hi = b"hi alice"
    mid = bob.core.send_message(alice.provider, alice.mailbox, hi, net.now,
                                seal_key=alice.core.mailbox_public)
    to_alice = {mid: hi}

    def done() -> bool:
        return (
            finished(alice, len(to_bob))
            and finished(bob, len(to_alice))
            and len(bob.received) >= len(to_bob)
            and len(alice.received) >= len(to_alice)
        )

    net.run_until(net.now + 300.0, stop=done)
    net.run_until(net.now + 20.0)  # let late duplicates arrive: they must not be delivered
    assert {r.message_id: r.data for r in bob.received} == to_bob
    assert len(bob.received) == len(to_bob)  # exactly once
    assert [(r.message_id, r.data) for r in alice.received] == list(to_alice.items())
    assert {d.message_id for d in alice.delivered} == set(to_bob)
    assert alice.undeliverable == []
    for mid in to_bob:
        assert alice.core.message_state(mid) is MessageState.DELIVERED
    # the network really lost and reordered things, and ARQ really worked
    assert net.counts["lost"] > 20
    a_stats, b_stats = alice.core.statistics(), bob.core.statistics()
    assert a_stats.retransmissions > 0
    assert a_stats.loops_returned > 0 and a_stats.loop_acks > 0
    assert a_stats.loops_returned <= a_stats.loops_sent
    assert b_stats.messages_received == len(to_bob)
    assert "forged_fragment" not in b_stats.drops
    # nodes saw only well-formed, correctly layered packets
    assert not [k for k in net.counts if k.startswith("node_drop")]
    assert net.counts["drop_cover_arrived"] > 0


def test_dead_recipient_provider_ends_undeliverable_without_growing_memory(kit) -> None:
    doc = network_consensus(kit)
    net = kit.network(doc, seed=12)
    p = [d.node_id for d in doc.providers()]
    config = ClientConfig(
        max_attempts=3, max_pending_fragments=8, max_message_fragments=8, max_retired_surbs=16
    )
    alice = net.add_client("alice", p[0], config=config, seed=3)
    bob_mailbox = b"\x07" * 16
    net.dead.add(p[1])
    sent, footprints = 0, []
    for _ in range(6):  # six rounds of messages, one after the other
        alice.core.send_message(p[1], bob_mailbox, bytes(3000), net.now,  # 2 fragments
                                seal_key=os.urandom(32))
        sent += 1
        net.run_until(net.now + 120.0, stop=lambda n=sent: finished(alice, n))
        footprints.append(alice.core.memory_footprint())
    assert len(alice.undeliverable) == sent
    assert alice.delivered == []
    assert {u.reason for u in alice.undeliverable} == {UndeliverableReason.RETRY_BUDGET_EXHAUSTED}
    stats = alice.core.statistics()
    # each fragment at most its budget (the first to spend it abandons its sibling, whose
    # randomized backoff may have left it one attempt behind)
    assert sent * 2 * 2 < alice.sent["real"] <= sent * 2 * 3
    assert stats.retransmissions == alice.sent["real"] - sent * 2
    assert (stats.acks_pending, stats.fragments_queued) == (0, 0)
    # memory: nothing outgoing is held once the messages are given up, and bounded tables
    for fp in footprints:
        assert fp["messages"] == fp["surbs"] == fp["timers"] == fp["queue"] == 0
        assert fp["retired_surbs"] <= 16
    assert footprints[-1] == {**footprints[-1], "finished_messages": sent}
    assert net.counts["swallowed_by_dead_node"] >= alice.sent["real"]


def test_a_mix_dies_and_the_next_consensus_drops_it(kit) -> None:
    doc = network_consensus(kit)
    net = kit.network(doc, seed=13)
    p = [d.node_id for d in doc.providers()]
    config = ClientConfig(max_attempts=8)
    alice = net.add_client("alice", p[0], config=config, seed=4)
    bob = net.add_client("bob", p[1], config=config, seed=5)
    victim = doc.mixes_in_layer(2)[0].node_id
    expected = {}
    for i in range(8):
        data = f"message {i}".encode() * 100
        mid = alice.core.send_message(bob.provider, bob.mailbox, data, net.now,
                                      seal_key=bob.core.mailbox_public)
        expected[mid] = data
        net.run_until(net.now + 0.7)
        if i == 2:
            net.dead.add(victim)  # packets routed through it are now lost
    net.run_until(net.now + 3.0)
    # the next epoch's consensus no longer lists it
    survivors = [n for n in kit.nodes if n.node_id != victim]
    net.update_consensus(network_consensus(kit, survivors))
    swallowed_before = net.counts["swallowed_by_dead_node"]
    net.run_until(net.now + 200.0, stop=lambda: finished(alice, len(expected))
                  and len(bob.received) >= len(expected))
    assert {r.message_id: r.data for r in bob.received} == expected
    assert len(bob.received) == len(expected)
    assert alice.undeliverable == []
    assert {d.message_id for d in alice.delivered} == set(expected)
    assert swallowed_before > 0  # the dead mix did cost packets...
    # ...and new packets avoid it: only those already in flight can still reach it
    net.run_until(net.now + 30.0)
    late = net.counts["swallowed_by_dead_node"] - swallowed_before
    assert late <= 3


def test_mark_node_failed_steers_new_paths(kit) -> None:
    doc = network_consensus(kit)
    net = kit.network(doc, seed=14)
    p = [d.node_id for d in doc.providers()]
    alice = net.add_client("alice", p[0], seed=6)
    victim = doc.mixes_in_layer(1)[0].node_id
    net.dead.add(victim)
    alice.core.mark_node_failed(victim)
    net.run_until(net.now + 30.0)
    assert net.counts["swallowed_by_dead_node"] == 0
    assert alice.core.statistics().loops_returned > 0
