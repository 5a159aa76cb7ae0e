"""The node's sans-IO core driven directly: explicit times, a fixed RNG, no trio, no files.

What it promises its shell: a packet's replay tag comes out before anything the packet caused
can leave (and nothing leaves until the shell says the tags are written); a forward comes only
from ``poll``, at the time its sender chose; replays, malformed bytes and missing filters are
counted drops; mail is a ``StoreItem`` and its SURB-ACK exists only once the shell stored it.
Last, the shell itself: a batch's tags reach the journal in one write, and a failed write lets
nothing of the batch leave.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixcore.epochs import EpochClock
from mixcore.hop import Arrival, unwrap
from mixcore.payload import ACK_PAYLOAD, MailboxPayload
from mixcore.sphinx import Relay, Sphinx, SurbReply
from mixcore.statistics import StatisticsError
from mixcore.topology import NodeRole
from mixnode.core import (
    Forward,
    NodeCore,
    NodeSettings,
    NodeStatistics,
    RecordReplayTag,
    StoreItem,
    TraceHop,
)
from mixnode.keyring import KeyRing
from mixnode.mailbox import MailboxStore
from mixnode.replay import ReplayFilter
from mixnode.runtime import NodeRuntime
from mixnode.view import EpochView

SX = Sphinx()
NOW = 100.0  # inside epoch 0 of the kit's 1000 s epochs


class Tags:
    """A replay filter in memory: exactly a set."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()

    def remember(self, tag: bytes) -> bool:
        if tag in self.seen:
            return False
        self.seen.add(tag)
        return True


def settings_for(role: NodeRole, node_id: bytes, **kw: Any) -> NodeSettings:
    base: dict[str, Any] = dict(
        role=role, node_id=node_id, max_hop_delay=120.0, pool_capacity=1000,
        replay_capacity=10_000, replay_fp_rate=1e-6, mix_loop_rate=0.0, mean_hop_delay=0.5,
        pull_batch=4,
    )
    base.update(kw)
    return NodeSettings(**base)


class Setup:
    """A kit's consensus and one core for the node ``node_id``."""

    def __init__(self, kit: Any) -> None:
        self.kit = kit
        self.view = EpochView.from_document(kit.document(0))
        self.mixes = [self.view.layer_members(i)[0] for i in (1, 2, 3)]
        self.providers = self.view.layer_members(0)

    def core(
        self,
        node_id: bytes,
        *,
        hosts: Callable[[bytes], bool] | None = None,
        filters: bool = True,
        seed: int = 1,
        **kw: Any,
    ) -> NodeCore:
        node = self.kit.by_id(node_id)
        ring = KeyRing(EpochClock(0.0, self.kit.params.epoch_length), grace=10.0)
        for epoch, key in node.mix_keys.items():
            ring.add(epoch, key)
        core = NodeCore(
            settings=settings_for(node.role, node_id, **kw), sphinx=SX, keyring=ring,
            rng=random.Random(seed), randbytes=random.Random(seed + 1).randbytes,
            hosts_mailbox=hosts,
        )
        core.install_view(self.view)
        if filters:
            for epoch in ring.epochs():
                core.install_filter(epoch, Tags())
        return core

    def hop(self, node_id: bytes) -> Any:
        return self.view.hops[node_id]


@pytest.fixture
def setup(make_network: Callable[..., Any]) -> Setup:
    return Setup(make_network(mixes=3, providers=2))


def books_balance(core: NodeCore) -> bool:
    stats = core.statistics().as_dict()
    return stats.get("pooled", 0) == (
        stats.get("sent", 0) + stats.get("send_failed", 0) + stats["pool_size"]
    )


def test_the_tag_comes_first_and_the_forward_only_from_poll_at_its_delay(setup: Setup) -> None:
    m1, m2, m3 = setup.mixes
    core = setup.core(m1)
    packet = SX.create_forward([setup.hop(n) for n in (m1, m2, m3)], [2.5, 1.0], bytes(16), b"")
    relay = SX.process(setup.kit.by_id(m1).mix_keys[0], packet)
    assert isinstance(relay, Relay)
    actions = core.receive_packet(packet, NOW)
    assert actions == [RecordReplayTag(0, relay.replay_tag)]
    # Until the shell says the tag is written, nothing leaves, however late it is.
    assert core.poll(NOW + 1000.0) == []
    assert core.next_deadline() is None
    core.tags_recorded()
    assert core.next_deadline() == NOW + 2.5
    assert core.poll(NOW + 2.4) == []
    assert core.poll(NOW + 2.5) == [Forward(m2, relay.packet)]
    assert core.poll(NOW + 10.0) == []
    core.on_sent(1)
    stats = core.statistics().as_dict()
    assert stats["pooled"] == stats["sent"] == 1
    assert stats["outcomes"] == {"Forward": 1}
    assert books_balance(core)


def test_tags_not_written_let_nothing_leave(setup: Setup) -> None:
    m1, m2, _ = setup.mixes
    core = setup.core(m1)
    for _ in range(3):
        packet = SX.create_forward([setup.hop(m1), setup.hop(m2)], [0.0], bytes(16), b"")
        assert isinstance(core.receive_packet(packet, NOW)[0], RecordReplayTag)
    assert core.discard_unrecorded() == 3
    core.tags_recorded()
    assert core.poll(NOW + 100.0) == []
    assert core.statistics().journal_failed == 3
    assert books_balance(core)


def test_a_replay_is_dropped_and_counted(setup: Setup) -> None:
    m1, m2, _ = setup.mixes
    core = setup.core(m1)
    packet = SX.create_forward([setup.hop(m1), setup.hop(m2)], [0.0], bytes(16), b"")
    assert len(core.receive_packet(packet, NOW)) == 1
    core.tags_recorded()
    assert core.receive_packet(packet, NOW + 1.0) == []  # no new tag, nothing staged
    core.tags_recorded()
    assert len(core.poll(NOW + 1.0)) == 1
    stats = core.statistics()
    assert stats.dropped == {"replay": 1}
    assert stats.packets_in == 2


def test_an_epoch_without_an_installed_filter_refuses_the_packet(setup: Setup) -> None:
    m1, m2, _ = setup.mixes
    core = setup.core(m1, filters=False)
    packet = SX.create_forward([setup.hop(m1), setup.hop(m2)], [0.0], bytes(16), b"")
    assert core.receive_packet(packet, NOW) == []
    core.tags_recorded()
    assert core.poll(NOW + 1.0) == []
    stats = core.statistics()
    assert stats.dropped == {"replay": 1}
    assert stats.replay_filter_missing == 1


@pytest.mark.parametrize("packet", [b"", b"\x00", b"short", bytes(SX.geometry.packet_len - 1)])
def test_malformed_and_truncated_packets_are_counted_drops(setup: Setup, packet: bytes) -> None:
    core = setup.core(setup.mixes[0])
    assert core.receive_packet(packet, NOW) == []
    stats = core.statistics()
    assert stats.packets_in == 1
    assert sum(stats.dropped.values()) == 1
    assert set(stats.dropped) <= {"malformed", "wrong_suite"}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=64),
        st.binary(min_size=SX.geometry.packet_len, max_size=SX.geometry.packet_len),
    ),
    arrival=st.sampled_from(list(Arrival)),
    at=st.floats(0.0, 5000.0),
)
def test_random_bytes_never_raise(setup: Setup, data: bytes, arrival: Arrival, at: float) -> None:
    core = setup.core(setup.providers[0], hosts=lambda _m: True)
    before = core.statistics().packets_in
    actions = core.receive_packet(data, at, arrival=arrival, previous_node=setup.mixes[-1])
    core.tags_recorded()
    assert all(isinstance(a, RecordReplayTag) for a in actions)
    assert core.poll(at + 1000.0) == []
    stats = core.statistics()
    assert stats.packets_in == before + 1
    assert sum(stats.dropped.values()) + sum(stats.outcomes.values()) == stats.packets_in


def _mail(setup: Setup, bob: bytes, data: bytes) -> tuple[bytes, Any]:
    alice_provider, bob_provider = setup.providers
    surb, keys = SX.create_surb(
        [setup.hop(n) for n in (*setup.mixes, alice_provider)], [0.1] * 3, bytes(16)
    )
    payload = MailboxPayload(surb, data).encode(SX.geometry)
    return SX.create_forward([setup.hop(bob_provider)], [], bob, payload), keys


def test_mail_is_a_store_item_and_acknowledged_only_once_stored(setup: Setup) -> None:
    bob = b"B" * 16
    core = setup.core(setup.providers[1], hosts=lambda m: m == bob)
    last_mix = setup.mixes[-1]
    packet, keys = _mail(setup, bob, b"fragment")
    actions = core.receive_packet(packet, NOW, previous_node=last_mix)
    assert isinstance(actions[0], RecordReplayTag)
    (store,) = actions[1:]
    assert isinstance(store, StoreItem)
    assert (store.mailbox, store.data, store.surb_id, store.now) == (bob, b"fragment", None, NOW)
    core.tags_recorded()
    assert core.poll(NOW + 1000.0) == []  # no ACK before the store
    assert core.pending_stores() == 1
    core.on_stored(store.token, True)
    due = core.next_deadline()
    assert due is not None and NOW < due <= NOW + 120.0  # held Exp(mean) from the arrival
    (ack,) = core.poll(due)
    assert isinstance(ack, Forward) and ack.next_node == setup.mixes[0]
    # The ACK is the SURB's reply: peeled along the SURB's path, Alice reads the ACK payload.
    packet, result = ack.packet, None
    for node in (*setup.mixes, setup.providers[0]):
        result = SX.process(setup.kit.by_id(node).mix_keys[0], packet)
        if isinstance(result, Relay):
            packet = result.packet
    assert isinstance(result, SurbReply)
    assert SX.decode_reply(keys, result.body) == ACK_PAYLOAD
    core.on_sent(1)
    stats = core.statistics()
    assert stats.stored_messages == 1 and stats.acks_sent == 1
    assert books_balance(core)


def test_a_refused_or_failed_store_is_counted_and_never_acknowledged(setup: Setup) -> None:
    bob = b"B" * 16
    core = setup.core(setup.providers[1], hosts=lambda m: m == bob)
    tokens = []
    for i in range(2):
        packet, _ = _mail(setup, bob, b"x%d" % i)
        actions = core.receive_packet(packet, NOW, previous_node=setup.mixes[-1])
        tokens += [a.token for a in actions if isinstance(a, StoreItem)]
    core.tags_recorded()
    core.on_stored(tokens[0], False)  # the mailbox is full
    core.on_stored(tokens[1], False, full=False)  # the disk refused the batch
    core.on_stored(tokens[1], True)  # a second answer for a token is ignored
    assert core.next_deadline() is None
    assert core.poll(NOW + 1000.0) == []
    stats = core.statistics()
    assert stats.mailbox_full == 1 and stats.store_failed == 1
    assert stats.stored_messages == 0 and stats.acks_sent == 0


def _drive(core: NodeCore, until: float) -> list[tuple[float, Forward]]:
    """Poll ``core`` at each of its deadlines up to ``until``, as the shell does."""
    out: list[tuple[float, Forward]] = []
    t = NOW
    while t < until:
        deadline = core.next_deadline()
        assert deadline is not None
        t = deadline
        out += [(t, f) for f in core.poll(t) if isinstance(f, Forward)]
    return out


def test_loops_leave_from_poll_and_are_lost_unless_they_return(setup: Setup) -> None:
    m2 = setup.mixes[1]
    core = setup.core(m2, mix_loop_rate=0.5, seed=3)
    assert core.next_deadline() is None  # no schedule until the shell starts it
    core.start_loops(NOW)
    sent = _drive(core, NOW + 200.0)
    stats = core.statistics()
    assert 60 <= stats.loops_sent <= 140 and len(sent) == stats.loops_sent
    # layer 2 -> 3 -> provider -> 1 -> 2: the first hop is the layer-3 mix
    assert all(f.next_node == setup.mixes[2] for _, f in sent)
    assert stats.loops_lost > 0 and stats.loops_returned == 0  # nobody carried them back
    assert stats.loops_lost + stats.loops_in_flight == stats.loops_sent
    # The same seed, the same schedule.
    again = setup.core(m2, mix_loop_rate=0.5, seed=3)
    again.start_loops(NOW)
    assert [t for t, _ in _drive(again, NOW + 200.0)] == [t for t, _ in sent]
    core.stop_loops()
    assert core.poll(NOW + 10_000.0) == [] and core.next_deadline() is None


def test_traced_relays_name_both_packets(setup: Setup) -> None:
    m1, m2, _ = setup.mixes
    core = setup.core(m1)
    core.trace_hops = True
    packet = SX.create_forward([setup.hop(m1), setup.hop(m2)], [0.0], bytes(16), b"")
    actions = core.receive_packet(packet, NOW)
    assert [type(a) for a in actions] == [RecordReplayTag, TraceHop]


def test_statistics_name_every_counter_from_the_start_and_read_back(setup: Setup) -> None:
    core = setup.core(setup.mixes[0])
    fresh = core.statistics().as_dict()
    # stats.json's keys, each present at 0 before its event: a reader never has to guess.
    assert {"packets_in", "outcomes", "dropped", "pool_size", "pool_refused", "pooled", "sent",
            "send_failed", "stored_messages", "acks_sent", "loops_sent", "loops_returned",
            "loop_return_share", "mix_key_epochs"} <= set(fresh)
    assert fresh["sent"] == fresh["send_failed"] == fresh["stored_messages"] == 0
    core.on_sent(2, 1)
    core.note_pull(0)
    d = core.statistics().as_dict()
    assert (d["send_failed"], d["sent"], d["pulls_served"], d["items_served"]) == (1, 2, 1, 0)
    assert d["mix_key_epochs"] == [0, 1]
    # The face reads stats.json (with the shell's extra keys) back into the snapshot.
    document = json.loads(json.dumps({**d, "links": {"peers": 2}, "mailboxes": 0}))
    assert NodeStatistics.from_document(document) == core.statistics()
    del document["send_failed"]
    with pytest.raises(StatisticsError, match="send_failed"):
        NodeStatistics.from_document(document)


# -- the shell ------------------------------------------------------------------------------------


def _runtime(setup: Setup, tmp: Path) -> NodeRuntime:
    m1 = setup.mixes[0]
    node = setup.kit.by_id(m1)
    ring = KeyRing(EpochClock(0.0, setup.kit.params.epoch_length), grace=10.0)
    for epoch, key in node.mix_keys.items():
        ring.add(epoch, key)
    runtime = NodeRuntime(
        settings=settings_for(NodeRole.MIX, m1), sphinx=SX, keyring=ring,
        send=lambda _n, _p: True, rng=random.Random(1), replay_dir=tmp / "replay",
        time_offset=NOW,
    )
    runtime.install_view(setup.view)
    return runtime


def _peeled_batch(
    setup: Setup, runtime: NodeRuntime, n: int
) -> tuple[list[bytes], list[Any], list[Any]]:
    m1, m2, _ = setup.mixes
    packets = [
        SX.create_forward([setup.hop(m1), setup.hop(m2)], [5.0], bytes(16), b"") for _ in range(n)
    ]
    live = runtime.keyring.live(NOW)
    results = [unwrap(SX, live, [], p) for p in packets]
    contexts = [(NOW, Arrival.NETWORK, None)] * n
    return packets, contexts, results


def test_the_shell_journals_a_batch_of_tags_in_one_write(setup: Setup, tmp_path: Path) -> None:
    runtime = _runtime(setup, tmp_path)
    assert sorted(runtime.filters) == [0, 1]  # loaded up front, for every key
    writes: list[int] = []
    journal = runtime.filters[0]
    append = journal.append_journal

    def counting(tags: Any) -> None:
        tags = list(tags)
        writes.append(len(tags))
        append(tags)

    journal.append_journal = counting  # type: ignore[method-assign]
    runtime.on_hop_results(*_peeled_batch(setup, runtime, 12))
    assert writes == [12]
    path = ReplayFilter.journal_path(tmp_path / "replay" / "replay-0.bloom")
    assert path.stat().st_size == 12 * 16
    assert runtime.statistics()["pool_size"] == 12


def test_a_failed_journal_write_lets_nothing_of_the_batch_leave(
    setup: Setup, tmp_path: Path
) -> None:
    runtime = _runtime(setup, tmp_path)

    def full_disk(_tags: Any) -> None:
        raise OSError(28, "No space left on device")

    runtime.filters[0].append_journal = full_disk  # type: ignore[method-assign]
    with pytest.raises(OSError):
        runtime.on_hop_results(*_peeled_batch(setup, runtime, 5))
    stats = runtime.statistics()
    assert stats["pool_size"] == 0 and stats["journal_failed"] == 5
    assert stats.get("pooled", 0) == 0


async def test_the_shell_stores_a_batch_of_mail_in_one_transaction_then_acks(
    setup: Setup, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    bob_provider = setup.providers[1]
    node = setup.kit.by_id(bob_provider)
    ring = KeyRing(EpochClock(0.0, setup.kit.params.epoch_length), grace=10.0)
    for epoch, key in node.mix_keys.items():
        ring.add(epoch, key)
    store = MailboxStore(tmp_path / "mail.db", ttl=3600.0)
    bob = store.register(b"b" * 32, NOW)
    sent: list[bytes] = []
    runtime = NodeRuntime(
        settings=settings_for(NodeRole.PROVIDER, bob_provider), sphinx=SX, keyring=ring,
        send=lambda _n, p: sent.append(p) is None, rng=random.Random(1),
        replay_dir=tmp_path / "replay", mailbox=store, time_offset=NOW - trio.current_time(),
    )
    runtime.install_view(setup.view)
    batches: list[int] = []
    store_many = store.store_many

    def counting(items: Any) -> list[int | None]:
        batches.append(len(items))
        return store_many(items)

    store.store_many = counting  # type: ignore[method-assign]
    for i in range(5):
        packet, _ = _mail(setup, bob, b"m%d" % i)
        runtime.handle_packet(packet, previous_node=setup.mixes[-1])
    assert runtime.statistics()["pool_size"] == 0  # no ACK before the store
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run_pool)
        await trio.sleep(200.0)
        nursery.cancel_scope.cancel()
    assert batches == [5]
    stats = runtime.statistics()
    assert stats["stored_messages"] == 5 and stats["acks_sent"] == 5 and len(sent) == 5
    assert stats["stored_items"] == 5
    store.close()
