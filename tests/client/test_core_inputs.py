"""The core against a user's mistakes and a hostile network: clear errors for the user, counted
drops (never exceptions) for anything a peer sends."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.actions import (
    MessageReceived,
    MessageUndeliverable,
    PacketKind,
    SendControl,
    SendPacket,
)
from client.config import ClientConfig
from client.core import ClientCore
from client.errors import (
    ClientError,
    ConsensusMismatch,
    MessageTooLarge,
    QueueFull,
)
from client.fragments import Fragment, chunk_capacity, new_message_id
from client.mailbox_seal import MailboxKey, seal
from client.transport.arq import MessageState, UndeliverableReason
from mixcore.control import ControlKind, ItemType, PullAck, PullItem
from mixcore.payload import ACK_PAYLOAD, MailboxPayload
from mixcore.routing import SURB_ID_LEN
from mixcore.sphinx import Sphinx

MAILBOX = b"A" * 16
BOB = b"B" * 16
BOB_MAILBOX_KEY = MailboxKey.generate()
BOB_KEY = BOB_MAILBOX_KEY.public


def make_core(kit, *, real: bool = False, **config) -> ClientCore:
    providers = [d.node_id for d in kit.consensus.providers()]
    return ClientCore(
        kit.consensus,
        provider=providers[0],
        mailbox=MAILBOX,
        rng=random.Random(7),
        now=kit.start,
        config=ClientConfig(**config),
        sphinx=None if real else kit.fake_sphinx(),
    )


def other_provider(kit) -> bytes:
    return kit.consensus.providers()[1].node_id


def deliver_batch(core: ClientCore, kit, real_items) -> list:
    """Answer one pull with ``real_items``; the core's actions for them, then those of its next
    pull up to the PULL_ACK (which leaves with the next request, never with the batch)."""
    seq, t = kit.open_pull(core, kit.start)
    actions = []
    for body in kit.batch_items(seq, kit.consensus.params.pull_batch, real_items):
        actions += core.receive_control(ControlKind.PULL_ITEM, body, t)
    assert not any(isinstance(a, SendControl) for a in actions)
    while True:
        for a in core.poll(core.next_deadline()):
            if isinstance(a, SendPacket):
                continue
            actions.append(a)
            if isinstance(a, SendControl) and a.kind is ControlKind.PULL_ACK:
                return actions


# -- the user's mistakes ------------------------------------------------------------------------


def test_oversized_message_is_a_clear_error(kit) -> None:
    core = make_core(kit, max_message_fragments=4)
    limit = core.max_message_len
    assert limit == 4 * chunk_capacity(core.fragment_len)
    core.send_message(other_provider(kit), BOB, bytes(limit), kit.start, seal_key=BOB_KEY)
    with pytest.raises(MessageTooLarge, match=f"limit is {limit} bytes"):
        core.send_message(other_provider(kit), BOB, bytes(limit + 1), kit.start, seal_key=BOB_KEY)
    assert core.statistics().fragments_queued == 4


def test_queue_full_is_a_clear_error_and_queues_nothing(kit) -> None:
    core = make_core(kit, max_pending_fragments=4, max_message_fragments=4)
    three = bytes(chunk_capacity(core.fragment_len) * 3)
    core.send_message(other_provider(kit), BOB, three, kit.start, seal_key=BOB_KEY)
    with pytest.raises(QueueFull, match="3 of 4 are pending") as info:
        core.send_message(other_provider(kit), BOB, three, kit.start, seal_key=BOB_KEY)
    assert (info.value.needed, info.value.pending, info.value.limit) == (3, 3, 4)
    assert core.statistics().fragments_queued == 3
    core.send_message(other_provider(kit), BOB, b"one more fits", kit.start, seal_key=BOB_KEY)


def _until_failed(core: ClientCore) -> tuple[float, list[MessageUndeliverable], int]:
    """Poll at each deadline until a message fails: when, the failures, real packets sent."""
    real = 0
    while True:
        t = core.next_deadline()
        actions = core.poll(t)
        real += sum(isinstance(a, SendPacket) and a.kind is PacketKind.REAL for a in actions)
        failed = [a for a in actions if isinstance(a, MessageUndeliverable)]
        if failed:
            return t, failed, real


def test_an_unknown_recipient_provider_fails_in_words_after_its_grace(kit) -> None:
    # A provider no consensus lists (a stale or mistyped card) is not sent to: the message
    # waits out provider_grace (slots carry decoys meanwhile), then fails saying why.
    core = make_core(kit, provider_grace=30.0)
    mid = core.send_message(b"\x42" * 32, BOB, b"hi", kit.start, seal_key=BOB_KEY)
    t, failed, real = _until_failed(core)
    assert [f.message_id for f in failed] == [mid] and real == 0
    assert failed[0].reason is UndeliverableReason.RECIPIENT_PROVIDER_GONE
    assert "not in the consensus (waited 30 s)" in failed[0].detail
    assert kit.start + 30.0 <= t < kit.start + 40.0
    assert core.statistics().fragments_queued == 0
    with pytest.raises(ClientError, match="16 bytes"):
        core.send_message(other_provider(kit), b"short", b"hi", kit.start, seal_key=BOB_KEY)


def test_a_provider_missing_from_one_consensus_costs_its_messages_nothing(kit) -> None:
    # The network restarted and the recipient's provider missed this epoch's document: a
    # message (or a receipt) written now waits, and goes once the next document lists it,
    # while messages for listed providers are not held up behind it.
    core = make_core(kit, provider_grace=60.0)
    late = kit.consensus.providers()[2].node_id
    without = kit.make_consensus([n for n in kit.nodes if n.node_id != late])
    core.update_consensus(without, kit.start)
    waiting = core.send_message(late, BOB, b"to the late one", kit.start, seal_key=BOB_KEY)
    listed = core.send_message(other_provider(kit), BOB, b"to a listed one", kit.start,
                               seal_key=BOB_KEY)
    t = kit.start
    while t < kit.start + 20.0:
        t = core.next_deadline()
        assert not any(isinstance(a, MessageUndeliverable) for a in core.poll(t))
    listed_progress = core.message_progress(listed)
    waiting_progress = core.message_progress(waiting)
    assert listed_progress is not None and listed_progress[0] == 1, "held up behind the other"
    assert waiting_progress == (0, 0, 1)  # waits, unsent, not failed
    core.update_consensus(kit.consensus, t)  # the next document lists it again
    while (progress := core.message_progress(waiting)) is not None and progress[0] == 0:
        assert t < kit.start + 50.0, "the message did not go once its provider was listed"
        t = core.next_deadline()
        assert not any(isinstance(a, MessageUndeliverable) for a in core.poll(t))
    assert core.message_progress(waiting) is None or core.message_progress(waiting)[0] == 1


def test_resumed_message_keeps_its_id(kit) -> None:
    core = make_core(kit)
    mid = b"\x01" * 16
    assert core.send_message(other_provider(kit), BOB, b"again", kit.start, message_id=mid,
                             seal_key=BOB_KEY) == mid
    assert core.message_state(mid) is MessageState.PENDING
    with pytest.raises(ClientError, match="resumed message id"):
        core.send_message(other_provider(kit), BOB, b"twice", kit.start, message_id=mid,
                          seal_key=BOB_KEY)
    with pytest.raises(ClientError, match="resumed message id"):
        core.send_message(other_provider(kit), BOB, b"short", kit.start, message_id=b"x",
                          seal_key=BOB_KEY)


def test_consensus_with_another_geometry_is_refused(kit) -> None:
    core = make_core(kit)
    other = kit.make_consensus(kit.nodes, kit.consensus.params.replace(body_len=1024))
    with pytest.raises(ConsensusMismatch):
        core.update_consensus(other, kit.start)


# -- what arrives from the network --------------------------------------------------------------


def test_forged_duplicate_and_complete_fragments(kit) -> None:
    core = make_core(kit)
    size = core.fragment_len
    mid = new_message_id()
    half = chunk_capacity(size)
    data = bytes(range(256)) * (2 * half // 256 + 1)
    data = data[: half + 10]
    f0 = seal(core.mailbox_public, Fragment(mid, 0, 2, data[:half]).encode(size))
    f1 = seal(core.mailbox_public, Fragment(mid, 1, 2, data[half:]).encode(size))
    forged = seal(core.mailbox_public, bytes([9]) + bytes(size - 1))  # opens, but no fragment
    no_surb = bytes(SURB_ID_LEN)
    actions = deliver_batch(
        core,
        kit,
        [
            (ItemType.MESSAGE, no_surb, forged),
            (ItemType.MESSAGE, no_surb, b"short garbage"),
            (ItemType.MESSAGE, no_surb, f1),
            (ItemType.MESSAGE, no_surb, f1),  # duplicate before completion
            (ItemType.MESSAGE, no_surb, f0),  # completes
            (ItemType.MESSAGE, no_surb, f0),  # duplicate after delivery
        ],
    )
    received = [a for a in actions if isinstance(a, MessageReceived)]
    assert [(r.message_id, r.data) for r in received] == [(mid, data)]
    drops = core.statistics().drops
    assert drops == {"forged_fragment": 2, "duplicate_fragment": 1, "already_delivered": 1}
    # every real item is acknowledged, junk included, and after the delivery
    ack_index = next(
        i for i, a in enumerate(actions)
        if isinstance(a, SendControl) and a.kind is ControlKind.PULL_ACK
    )
    assert ack_index == len(actions) - 1
    assert actions.index(received[0]) < ack_index
    ack = PullAck.decode(actions[ack_index].body)
    assert sorted(ack.item_ids) == [1, 2, 3, 4, 5, 6]
    assert core.statistics().messages_received == 1


def test_all_dummy_batch_is_acknowledged_too(kit) -> None:
    core = make_core(kit)
    actions = deliver_batch(core, kit, [])
    assert len(actions) == 1
    assert PullAck.decode(actions[0].body).item_ids == ()


def test_acks_for_unknown_surbs_and_malformed_control_are_counted(kit) -> None:
    core = make_core(kit)
    seq, t = kit.open_pull(core, kit.start)
    batch = kit.consensus.params.pull_batch
    core.receive_control(99, b"whatever", t)
    core.receive_control(ControlKind.PULL_ITEM, b"\x00\x01", t)
    core.receive_control(ControlKind.PULL_REQUEST, b"", t)
    stale = PullItem(seq + 5, 0, batch, ItemType.DUMMY, 0, bytes(16), b"").encode()
    core.receive_control(ControlKind.PULL_ITEM, stale, t)
    wrong_count = PullItem(seq, 0, batch + 1, ItemType.DUMMY, 0, bytes(16), b"").encode()
    core.receive_control(ControlKind.PULL_ITEM, wrong_count, t)
    unknown = PullItem(seq, 0, batch, ItemType.REPLY, 7, b"\x01" * 16, bytes(2048)).encode()
    assert core.receive_control(ControlKind.PULL_ITEM, unknown, t) == []
    assert core.receive_control(ControlKind.PULL_ITEM, unknown, t) == []  # same index again
    # a new pull before this batch is complete abandons it
    kit.open_pull(core, t)
    assert core.statistics().drops == {
        "unexpected_control": 2,
        "malformed_control": 1,
        "stale_pull_item": 1,
        "bad_pull_item": 1,
        "unknown_ack": 1,
        "duplicate_pull_item": 1,
        "incomplete_pull": 1,
    }


def test_real_ack_then_stale_and_forged_acks(kit) -> None:
    """Real Sphinx: the ACK body must decode under the SURB's keys to ACK_PAYLOAD."""
    core = make_core(kit, real=True)
    sphinx = core.sphinx
    assert isinstance(sphinx, Sphinx)
    core.send_message(other_provider(kit), BOB, b"ack me", kit.start, seal_key=BOB_KEY)
    packet = None
    while packet is None:
        t = core.next_deadline()
        for a in core.poll(t):
            if isinstance(a, SendPacket) and a.kind is PacketKind.REAL:
                packet = a.packet
    # play the network: peel the five layers, then answer through the SURB
    nodes = {n.node_id: n for n in kit.nodes}
    hop, result = kit.consensus.providers()[0].node_id, None
    while True:
        result = sphinx.process(nodes[hop].mix_keys[kit.consensus.epoch], packet)
        if not hasattr(result, "next_node"):
            break
        hop, packet = result.next_node, result.packet
    payload = MailboxPayload.decode(result.payload, sphinx.geometry)
    assert Fragment.decode(BOB_MAILBOX_KEY.open(payload.data), core.fragment_len).chunk == b"ack me"
    reply = sphinx.package_reply(payload.surb, ACK_PAYLOAD)
    hop = payload.surb.first_hop
    while True:
        result = sphinx.process(nodes[hop].mix_keys[kit.consensus.epoch], reply)
        if not hasattr(result, "next_node"):
            break
        hop, reply = result.next_node, result.packet
    assert hop == core.provider and result.mailbox == MAILBOX
    forged = bytes(len(result.body))
    actions = deliver_batch(
        core,
        kit,
        [
            (ItemType.REPLY, result.surb_id, forged),  # right id, body not from the SURB
            (ItemType.REPLY, result.surb_id, result.body),  # the real ACK
            (ItemType.REPLY, result.surb_id, result.body),  # the same again: stale
        ],
    )
    assert [type(a).__name__ for a in actions] == ["MessageDelivered", "SendControl"]
    assert core.statistics().drops == {"bad_ack": 1, "stale_ack": 1}
    assert core.statistics().messages_delivered == 1
    assert core.memory_footprint()["surbs"] == 0


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kind=st.integers(0, 255), body=st.binary(max_size=300), item=st.booleans())
def test_no_input_makes_the_core_raise(kit, kind: int, body: bytes, item: bool) -> None:
    core = make_core(kit)
    seq, t = kit.open_pull(core, kit.start)
    if item:  # a well-formed item around arbitrary data
        kind = ControlKind.PULL_ITEM
        batch = kit.consensus.params.pull_batch
        body = PullItem(seq, 0, batch, ItemType(body[0] % 3 if body else 1), 1,
                        (body + bytes(16))[:16], body).encode()
    core.receive_control(kind, body, t)
    json.dumps(core.statistics().as_dict())


# -- ARQ through the core -------------------------------------------------------------------------


def test_unacknowledged_fragment_is_resent_fresh_then_undeliverable(kit) -> None:
    core = make_core(kit, max_attempts=3)
    fake = core.sphinx
    mid = core.send_message(other_provider(kit), BOB, b"into the void", kit.start, seal_key=BOB_KEY)
    assert core.message_state(mid) is MessageState.PENDING
    sends, undeliverable = [], []
    while not undeliverable:
        t = core.next_deadline()
        for a in core.poll(t):
            if isinstance(a, SendPacket) and a.kind is PacketKind.REAL:
                sends.append(t)
            if isinstance(a, MessageUndeliverable):
                undeliverable.append(a)
    assert len(sends) == 3  # the retry budget, exactly
    [failed] = undeliverable
    assert failed.message_id == mid
    assert failed.reason is UndeliverableReason.RETRY_BUDGET_EXHAUSTED
    assert "after 3 attempts" in failed.detail
    assert core.message_state(mid) is MessageState.UNDELIVERABLE
    # each retransmission waited at least pull_interval + transit_allowance
    params = kit.consensus.params
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert all(g >= params.pull_interval + core.config.transit_allowance for g in gaps)
    # every attempt had its own SURB and its own (freshly drawn) route
    # (loops make SURBs too: theirs start at our own provider)
    surb_paths = [p for mailbox, p in fake.built if mailbox == BOB]
    assert len(surb_paths) == 3
    assert all(p[-1] == core.provider for p in surb_paths)
    stats = core.statistics()
    assert (stats.retransmissions, stats.acks_pending, stats.fragments_queued) == (2, 0, 0)
    assert core.memory_footprint()["surbs"] == 0
    assert core.memory_footprint()["timers"] == 0


def test_retransmissions_are_fresh_packets(kit) -> None:
    core = make_core(kit, real=True, max_attempts=2)
    core.send_message(other_provider(kit), BOB, b"x", kit.start, seal_key=BOB_KEY)
    packets = []
    while len(packets) < 2:
        t = core.next_deadline()
        actions = core.poll(t)
        packets += [
            a.packet for a in actions if isinstance(a, SendPacket) and a.kind is PacketKind.REAL
        ]
    first, second = packets
    assert len(first) == len(second)
    assert first[1:34] != second[1:34]  # a fresh group element: unlinkable headers
    assert sum(x != y for x, y in zip(first, second, strict=True)) > 0.9 * len(first)


def test_recipient_provider_leaving_the_consensus_makes_the_message_undeliverable(kit) -> None:
    core = make_core(kit, provider_grace=30.0)
    gone = kit.consensus.providers()[2].node_id
    mid = core.send_message(gone, BOB, b"hello", kit.start, seal_key=BOB_KEY)
    smaller = kit.make_consensus([n for n in kit.nodes if n.node_id != gone])
    core.update_consensus(smaller, kit.start)
    t, failed, _ = _until_failed(core)
    assert t >= kit.start + 30.0  # its grace first: it may only have missed one document
    assert failed[0].message_id == mid
    assert failed[0].reason is UndeliverableReason.RECIPIENT_PROVIDER_GONE
    assert core.statistics().fragments_queued == 0


def test_a_late_shell_does_not_burst(kit) -> None:
    core = make_core(kit)
    actions = core.poll(kit.start + 3600.0)  # woke an hour late (a suspended laptop)
    sends = [a for a in actions if isinstance(a, SendPacket)]
    assert len(sends) < 20
    assert core.statistics().skipped_stream_events >= 1
    assert core.next_deadline() > kit.start + 3600.0 - core.config.max_catch_up


def test_statistics_are_counts_only(kit) -> None:
    core = make_core(kit)
    pulls = 0
    for _ in range(50):
        pulls += sum(isinstance(a, SendControl) and a.kind is ControlKind.PULL_REQUEST
                     for a in core.poll(core.next_deadline()))
    stats = core.statistics().as_dict()
    text = json.dumps(stats)
    assert stats["packets_sent"]["drop"] + stats["packets_sent"]["loop"] > 0
    assert pulls > 0 and stats["pulls_sent"] == pulls  # every pull request it sent, counted
    for value in stats.values():
        assert isinstance(value, int | dict)
    assert core.provider.hex() not in text and MAILBOX.hex() not in text


def test_a_cancelled_message_is_never_sent_again(kit) -> None:
    """A disappearing message whose timer ran out while queued must not leave afterwards."""
    core = make_core(kit)
    mid = core.send_message(other_provider(kit), BOB, bytes(5000), kit.start, seal_key=BOB_KEY)
    real = 0
    while real == 0:  # one fragment went out, the rest wait
        real += sum(1 for a in core.poll(core.next_deadline())
                    if isinstance(a, SendPacket) and a.kind is PacketKind.REAL)
    [event] = core.cancel_message(mid, kit.start + 1)
    assert isinstance(event, MessageUndeliverable)
    assert event.reason is UndeliverableReason.CANCELLED
    assert core.cancel_message(mid, kit.start + 2) == []  # once only
    end = core.next_deadline() + 3600
    while (t := core.next_deadline()) < end:
        assert not any(isinstance(a, SendPacket) and a.kind is PacketKind.REAL
                       for a in core.poll(t))
    assert core.message_state(mid) is MessageState.UNDELIVERABLE
    assert core.memory_footprint()["surbs"] == 0 and core.statistics().fragments_queued == 0


def test_the_core_draws_its_random_bytes_from_the_injected_source(kit) -> None:
    """Message ids, seals and cover bytes come from ``randbytes`` (bytes in, like time and
    rng): a test can pin them, production gets the OS generator."""
    drawn: list[int] = []

    def counter(n: int) -> bytes:
        drawn.append(n)
        return bytes([len(drawn) % 256]) * n

    providers = [d.node_id for d in kit.consensus.providers()]
    core = ClientCore(kit.consensus, provider=providers[0], mailbox=MAILBOX,
                      rng=random.Random(7), now=kit.start, sphinx=kit.fake_sphinx(),
                      randbytes=counter)
    mid = core.send_message(providers[1], BOB, b"hi", kit.start, seal_key=BOB_KEY)
    assert mid == bytes([1]) * len(mid)
    kinds: set[PacketKind] = set()
    for _ in range(1000):
        for action in core.poll(core.next_deadline()):
            if isinstance(action, SendPacket):
                kinds.add(action.kind)
        if {PacketKind.REAL, PacketKind.LOOP, PacketKind.DROP} <= kinds:
            break
    assert {PacketKind.REAL, PacketKind.LOOP, PacketKind.DROP} <= kinds
    geometry = core.geometry
    # seal bits (1), loop ids (16) and drop cover (a whole payload) came from it
    assert {1, len(mid), geometry.payload_capacity} <= set(drawn)
