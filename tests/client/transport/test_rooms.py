"""Each transport room on its own: the pull schedule and its acknowledgement, the loop
monitor's bookkeeping, the outbox's queue order. (The core's tests drive them together.)"""

from __future__ import annotations

import random
from collections import Counter

from client.transport.arq import ArqInput, FragmentState, OutgoingFragment, OutgoingMessage
from client.transport.drops import DropReason
from client.transport.loops import CoverKind, LoopMonitor
from client.transport.outbox import Outbox
from client.transport.pulls import Pulls
from mixcore.control import ControlKind, ItemType, PullAck, PullItem, PullRequest
from mixcore.sphinx import SurbKeys


def _item(seq: int, index: int, kind: ItemType, item_id: int = 0, count: int = 4) -> bytes:
    return PullItem(seq, index, count, kind, item_id, bytes(16), b"d").encode()


def test_a_pull_acknowledges_the_previous_batch_then_asks_and_counts_bad_items() -> None:
    drops: Counter[DropReason] = Counter()
    pulls = Pulls(interval=1.0, batch=4, rng=random.Random(1), now=0.0, drops=drops)
    assert 0.0 <= pulls.next_time < 1.0
    [(k1, ack), (k2, req)] = pulls.fire(pulls.next_time)
    assert (k1, k2) == (ControlKind.PULL_ACK, ControlKind.PULL_REQUEST)
    assert PullAck.decode(ack).item_ids == ()
    seq = PullRequest.decode(req).seq
    assert pulls.accept(_item(seq, 0, ItemType.MESSAGE, 7)) is not None
    assert pulls.accept(_item(seq, 0, ItemType.MESSAGE, 7)) is None  # same index again
    assert pulls.accept(_item(seq + 1, 1, ItemType.DUMMY)) is None  # another batch
    assert pulls.accept(_item(seq, 1, ItemType.DUMMY, count=5)) is None  # wrong batch size
    assert pulls.accept(b"\x00") is None
    for index in (1, 2, 3):
        assert pulls.accept(_item(seq, index, ItemType.DUMMY)) is None
    assert dict(drops) == {DropReason.DUPLICATE_PULL_ITEM: 1, DropReason.STALE_PULL_ITEM: 1,
                           DropReason.BAD_PULL_ITEM: 1, DropReason.MALFORMED_CONTROL: 1}
    [(_, ack), _] = pulls.fire(pulls.next_time)  # the complete batch's ack, at the pull time
    assert PullAck.decode(ack) == PullAck(seq, (7,))
    assert pulls.sent == 2 and pulls.items == 1


def test_an_incomplete_batch_is_counted_and_its_arrived_items_acknowledged() -> None:
    drops: Counter[DropReason] = Counter()
    pulls = Pulls(interval=1.0, batch=4, rng=random.Random(2), now=0.0, drops=drops)
    [_, (_, req)] = pulls.fire(0.5)
    seq = PullRequest.decode(req).seq
    pulls.accept(_item(seq, 2, ItemType.REPLY, 9))
    [(_, ack), _] = pulls.fire(1.5)
    assert PullAck.decode(ack) == PullAck(seq, (9,))
    assert drops[DropReason.INCOMPLETE_PULL] == 1
    pulls.catch_up(late=100.0, now=105.0)  # a suspended laptop: no burst of pulls
    assert pulls.next_time == 105.0


def _keys(n: int) -> SurbKeys:
    return SurbKeys(bytes([n]) * 16, (bytes(16), bytes(16)))


def test_the_loop_monitor_counts_returns_duplicates_acks_and_losses() -> None:
    drops: Counter[DropReason] = Counter()
    monitor = LoopMonitor(ttl=10.0, max_pending=2, drops=drops)
    monitor.sent(CoverKind.LOOP, _keys(1), 0.0, b"L1")
    monitor.sent(CoverKind.DECOY, _keys(2), 0.0)
    monitor.loop_item(b"L1")
    monitor.loop_item(b"L1")  # delivered twice: counted, never a message
    assert drops[DropReason.UNEXPECTED_LOOP] == 1
    assert monitor.ack_keys(_keys(2).surb_id) == (CoverKind.DECOY, _keys(2))
    monitor.acked(CoverKind.LOOP, _keys(1).surb_id, ok=False)  # a bad body keeps it open
    assert monitor.ack_keys(_keys(1).surb_id) is not None
    monitor.acked(CoverKind.LOOP, _keys(1).surb_id, ok=True)
    monitor.acked(CoverKind.DECOY, _keys(2).surb_id, ok=True)
    assert monitor.ack_keys(_keys(1).surb_id) is None
    for n in (3, 4, 5):  # beyond the bound the oldest pending loop counts as lost
        monitor.sent(CoverKind.LOOP, _keys(n), 1.0 + n, bytes([n]))
    assert monitor.next_deadline() == 5.0 + 10.0  # loop 3 (sent at 4) was pushed out
    monitor.expire(100.0)
    c = monitor.counts
    assert (c["loops_sent"], c["loops_returned"], c["loop_acks"], c["decoy_acks"]) == (4, 1, 1, 1)
    assert c["loops_lost"] == 3 and monitor.footprint() == {
        "loops": 0, "loop_surbs": 0, "decoy_surbs": 0}
    assert drops[DropReason.BAD_ACK] == 1


def _message(mid: bytes, n: int) -> OutgoingMessage:
    message = OutgoingMessage(mid, bytes(32), bytes(16), 0.0, bytes(32))
    message.fragments.extend(OutgoingFragment(message, i, b"x") for i in range(n))
    return message


def test_the_outbox_sends_retransmissions_first_and_keeps_a_place() -> None:
    outbox = Outbox(max_finished=1)
    a, b = _message(b"a" * 16, 2), _message(b"b" * 16, 1)
    outbox.add(a)
    outbox.add(b)
    assert outbox.unfinished == 3
    first = outbox.next_queued()
    assert first is a.fragments[0]
    outbox.keep_place(first)  # no route: it is first again
    assert outbox.next_queued() is first
    first.apply(ArqInput.SEND)
    first.apply(ArqInput.RETRY)
    first.apply(ArqInput.RESUME)
    outbox.requeue(first)
    assert outbox.next_queued() is first  # a retransmission before new fragments
    assert outbox.next_queued() is a.fragments[1]
    for f in b.fragments:
        f.apply(ArqInput.ABANDON)
        outbox.fragment_done()
    outbox.finish(b, b.state)
    assert outbox.next_queued() is None  # the abandoned fragment is skipped
    assert outbox.state(b"b" * 16) is b.state and first.state is FragmentState.QUEUED
