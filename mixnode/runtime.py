"""A running node between its links: process, hold, forward, store, loop — with I/O injected.

The server (``mixnode/server.py``) owns sockets, the directory and signals; this module owns what
happens to a packet once it arrived, with the outbound send passed in as a plain function. That
split lets the tests drive a real node on ``trio.testing.MockClock`` with in-memory links and
check that forwarding times equal the delays the senders chose, to the microsecond.

Time is Unix time as seen through trio's clock (``offset + trio.current_time()``), so epochs and
keys follow wall time in production and virtual time under a mock clock.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from mixcore.control import ItemType, PullItem
from mixcore.errors import PacketError
from mixcore.hop import (
    AckDecoy,
    Arrival,
    Dropped,
    DropReason,
    Event,
    Forward,
    LoopReturned,
    PacketProcessor,
    StoreMessage,
    StoreReply,
    Unwrapped,
    surb_ack,
)
from mixcore.payload import MailboxPayload
from mixcore.poisson import PoissonStream, truncated_exponential
from mixcore.sphinx import Sphinx
from mixcore.topology import PROVIDER_LAYER, NodeRole, Topology
from mixnode.keyring import KeyRing
from mixnode.limits import BucketTable
from mixnode.loops import LoopTracker
from mixnode.mailbox import ItemKind, MailboxFull, MailboxStore
from mixnode.pool import DelayPool
from mixnode.replay import ReplayFilter
from mixnode.view import EpochView

if TYPE_CHECKING:
    from mixnode.workers import HopWorkers

#: ``send(next_node_id, packet) -> accepted``: must not block (queue or refuse).
SendFn = Callable[[bytes, bytes], bool]


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    role: NodeRole
    node_id: bytes
    max_hop_delay: float
    pool_capacity: int
    replay_capacity: int
    replay_fp_rate: float
    mix_loop_rate: float
    mean_hop_delay: float
    pull_batch: int
    loop_slack: float = 30.0
    """Seconds beyond a loop's summed delays before it counts as lost."""
    mailbox_item_rate: float = 10.0
    """Items/s stored into one mailbox, sustained (beyond it: refused, no ACK, sender retries)."""
    mailbox_item_burst: float = 600.0


class NodeRuntime:
    def __init__(
        self,
        *,
        settings: RuntimeSettings,
        sphinx: Sphinx,
        keyring: KeyRing,
        send: SendFn,
        rng: random.Random,
        replay_dir: Path,
        mailbox: MailboxStore | None = None,
        time_offset: float = 0.0,
    ) -> None:
        self.settings = settings
        self.sphinx = sphinx
        self.keyring = keyring
        self._send = send
        self._rng = rng
        self.replay_dir = replay_dir
        self.mailbox = mailbox
        self.time_offset = time_offset
        self.views: dict[int, EpochView] = {}
        self.filters: dict[int, ReplayFilter] = {}
        # Unpredictable, so nobody can address packets to it and fake returning loops.
        self.loop_mailbox = os.urandom(16)
        self.pool = DelayPool(settings.pool_capacity)
        self.loops = LoopTracker()
        self.counts: Counter[str] = Counter()
        self.on_forward: Callable[[bytes, bytes], None] | None = None
        """Testnet tracing only: called with (incoming, outgoing) packet of every relay."""
        self._wakeup = trio.Event()
        self.hops: HopWorkers | None = None
        """Worker processes that peel layers (set by the server); None: peel in this process."""
        self.mailbox_rates = BucketTable(settings.mailbox_item_rate, settings.mailbox_item_burst)
        self.processor = PacketProcessor(
            sphinx=sphinx,
            keyring=keyring,
            replay_filter=self.replay_filter,
            role=settings.role,
            node_id=settings.node_id,
            topology=self._topology,
            max_hop_delay=settings.max_hop_delay,
            loop_mailbox=self.loop_mailbox,
            hosts_mailbox=mailbox.hosts if mailbox is not None else (lambda _m: False),
        )

    # -- time, views and filters --------------------------------------------------------------

    def now(self) -> float:
        return self.time_offset + trio.current_time()

    def _to_trio(self, unix_time: float) -> float:
        return unix_time - self.time_offset

    def _topology(self, epoch: int) -> Topology | None:
        view = self.views.get(epoch)
        return view.topology if view else None

    def install_view(self, view: EpochView) -> None:
        self.views[view.epoch] = view
        for epoch in [e for e in self.views if e < view.epoch - 2]:
            del self.views[epoch]

    def replay_filter(self, epoch: int) -> ReplayFilter:
        existing = self.filters.get(epoch)
        if existing is not None:
            return existing
        # A corrupt file is an error, never a silent reset (that would reopen a replay window).
        loaded = ReplayFilter.open(
            self._filter_path(epoch),
            self.settings.replay_capacity,
            self.settings.replay_fp_rate,
        )
        self.filters[epoch] = loaded
        return loaded

    def _filter_path(self, epoch: int) -> Path:
        return self.replay_dir / f"replay-{epoch}.bloom"

    def save_filters(self) -> None:
        for epoch, f in self.filters.items():
            f.save(self._filter_path(epoch))

    def erase_expired_keys(self) -> list[int]:
        """Forget keys past retirement, their replay filters and their files."""
        gone = self.keyring.erase_expired(self.now())
        for epoch in gone:
            old = self.filters.pop(epoch, None)
            if old is not None:
                old.close()
            path = self._filter_path(epoch)
            path.unlink(missing_ok=True)
            ReplayFilter.journal_path(path).unlink(missing_ok=True)
        return gone

    # -- packets in ---------------------------------------------------------------------------

    def handle_packet(
        self,
        packet: bytes,
        *,
        arrival: Arrival = Arrival.NETWORK,
        previous_node: bytes | None = None,
    ) -> None:
        """A packet arrived on a link: act on it now, or queue it for the hop workers (never
        blocks). With workers, a full queue drops the packet (counted ``hop_queue_full``).

        ``arrival`` says which side it came from (a provider's client links may only feed
        layer 1) and ``previous_node`` which node's link (mail is stored only from the last
        mix layer).
        """
        now = self.now()
        if self.hops is not None:
            if not self.hops.submit(packet, (now, arrival, previous_node)):
                self.processor.count_unprocessed(DropReason.HOP_QUEUE_FULL)
            return
        event = self.processor.receive(packet, now, arrival=arrival, previous_node=previous_node)
        self._act(packet, event, now)
        for f in self.filters.values():
            f.flush_journal()

    def on_hop_results(
        self,
        packets: Sequence[bytes],
        contexts: Sequence[tuple[float, Arrival, bytes | None]],
        results: Sequence[Unwrapped],
    ) -> None:
        """A worker peeled a batch: decide on each packet here, in one place (replay filter
        included), as of the time and side it arrived on. Their replay tags go to the journals
        in one write per filter, before any of them can be forwarded (the pool runs after this
        returns)."""
        filters = self.filters.values()
        for f in filters:
            f.defer_journal()
        receive = self.processor.receive_unwrapped
        try:
            for packet, (now, arrival, previous), result in zip(
                packets, contexts, results, strict=True
            ):
                event = receive(result, now, arrival=arrival, previous_node=previous)
                self._act(packet, event, now)
        finally:
            for f in self.filters.values():
                f.flush_journal()

    def on_hop_lost(self, count: int) -> None:
        """A worker died holding ``count`` packets: they are gone (and counted)."""
        self.processor.count_unprocessed(DropReason.WORKER_LOST, count)

    def _act(self, packet: bytes, event: Event, now: float) -> None:
        if isinstance(event, Forward):
            if self.on_forward is not None:
                self.on_forward(packet, event.packet)
            self._pool_push(event.next_node, event.packet, event.due)
        elif isinstance(event, StoreMessage):
            self._store_message(event, now)
        elif isinstance(event, StoreReply):
            self._store_reply(event, now)
        elif isinstance(event, AckDecoy):
            self._ack_decoy(event, now)
        elif isinstance(event, LoopReturned):
            self.loops.on_return(event.payload)
        else:
            assert isinstance(event, Dropped)

    def _pool_push(self, next_node: bytes, packet: bytes, due: float) -> None:
        if self.pool.push(next_node, packet, due):
            self.counts["pooled"] += 1
            self._wakeup.set()

    def _store_message(self, event: StoreMessage, now: float) -> None:
        assert self.mailbox is not None
        try:
            payload = MailboxPayload.decode(event.payload, self.sphinx.geometry)
        except PacketError:
            self.counts["bad_mailbox_payload"] += 1
            return
        if not self.mailbox_rates.take(event.mailbox, now):
            self.counts["mailbox_rate_limited"] += 1
            return  # no ACK: the sender retries later
        try:
            self.mailbox.store_message(event.mailbox, payload.data, now)
        except MailboxFull:
            self.counts["mailbox_full"] += 1
            return  # no ACK: the sender will retry later
        self.counts["stored_messages"] += 1
        # Durable now: acknowledge through the sender's SURB, so it stops retransmitting.
        self._acknowledge(payload, now)

    def _ack_decoy(self, event: AckDecoy, now: float) -> None:
        """A payload-stream decoy: acknowledged exactly like a stored fragment, then gone."""
        try:
            payload = MailboxPayload.decode(event.payload, self.sphinx.geometry)
        except PacketError:
            self.counts["bad_mailbox_payload"] += 1
            return
        self.counts["decoys_acked"] += 1
        self._acknowledge(payload, now)

    def _acknowledge(self, payload: MailboxPayload, now: float) -> None:
        """Send the SURB-ACK after an exponential delay drawn like a hop's: leaving at once,
        it would tell an observer of this provider's links which arrivals were mail."""
        try:
            ack = surb_ack(self.sphinx, payload.surb, now, self.ack_delay)
        except PacketError:
            self.counts["bad_surb"] += 1
            return
        self.counts["acks_sent"] += 1
        self._pool_push(ack.next_node, ack.packet, ack.due)

    def ack_delay(self) -> float:
        """One SURB-ACK's hold at this exit: Exp(mean hop delay), truncated like a hop's."""
        return self._hop_delay()

    def _store_reply(self, event: StoreReply, now: float) -> None:
        assert self.mailbox is not None
        if not self.mailbox_rates.take(event.mailbox, now):
            self.counts["mailbox_rate_limited"] += 1
            return
        try:
            self.mailbox.store_reply(event.mailbox, event.surb_id, event.body, now)
        except MailboxFull:
            self.counts["mailbox_full"] += 1
            return
        self.counts["stored_replies"] += 1

    # -- pulls (providers) ----------------------------------------------------------------------

    def pull_response(self, address: bytes, seq: int) -> list[bytes]:
        """Exactly ``pull_batch`` item bodies: real items oldest first, then dummies."""
        assert self.mailbox is not None
        batch = self.settings.pull_batch
        items = self.mailbox.fetch(address, batch) if self.mailbox.hosts(address) else []
        bodies = []
        for index in range(batch):
            if index < len(items):
                item = items[index]
                kind = ItemType.MESSAGE if item.kind is ItemKind.MESSAGE else ItemType.REPLY
                surb_id = item.surb_id or bytes(16)
                pulled = PullItem(seq, index, batch, kind, item.item_id, surb_id, item.data)
            else:
                pulled = PullItem(seq, index, batch, ItemType.DUMMY, 0, bytes(16), b"")
            bodies.append(pulled.encode())
        self.counts["pulls_served"] += 1
        self.counts["items_served"] += len(items)
        return bodies

    def acknowledge(self, address: bytes, item_ids: list[int]) -> int:
        assert self.mailbox is not None
        deleted = self.mailbox.ack(address, item_ids)
        self.counts["items_acked"] += deleted
        return deleted

    # -- tasks ----------------------------------------------------------------------------------

    async def run_pool(self) -> None:
        """Sleep until the earliest packet is due (or a new one arrives), send what is due."""
        while True:
            deadline = self.pool.next_deadline()
            if deadline is None or deadline > self.now():
                with trio.move_on_at(self._to_trio(deadline) if deadline else math.inf):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()
            for due in self.pool.pop_due(self.now()):
                if self._send(due.next_node, due.packet):
                    self.counts["sent"] += 1
                else:
                    self.counts["send_failed"] += 1

    async def run_loops(self) -> None:
        """Send this node's loops at ``mix_loop_rate`` and expire the ones that never return."""
        schedule = PoissonStream(self.settings.mix_loop_rate, self._rng, self.now())
        while True:
            await trio.sleep_until(self._to_trio(min(schedule.next_time, self.now() + 1.0)))
            now = self.now()
            for _ in range(schedule.due(now)):
                self.send_loop(now)
            self.loops.expire(now)

    def send_loop(self, now: float) -> bool:
        """Build one loop through every other layer and back; False if no route this epoch."""
        epoch = self.keyring.clock.epoch_at(now)
        view = self.views.get(epoch)
        own_key = self.keyring.get(epoch)
        if view is None or own_key is None:
            self.counts["loops_unroutable"] += 1
            return False
        ids = view.loop_path(self.settings.node_id, self._rng.choice)
        if ids is None or any(i not in view.hops for i in ids):
            self.counts["loops_unroutable"] += 1
            return False
        hops = [view.hops[i] for i in ids]
        delays = [
            self._hop_delay() if view.topology.layers[i] != PROVIDER_LAYER else 0.0
            for i in ids[:-1]
        ]
        loop_id = self.loops.new(now + sum(delays) + self.settings.loop_slack)
        packet = self.sphinx.create_forward(hops, delays, self.loop_mailbox, loop_id)
        self._pool_push(ids[0], packet, now)
        return True

    def _hop_delay(self) -> float:
        """Exp(mean_hop_delay) redrawn above the bound, exactly as clients draw theirs."""
        return truncated_exponential(
            self._rng, self.settings.mean_hop_delay, self.settings.max_hop_delay
        )

    # -- statistics ------------------------------------------------------------------------------

    def statistics(self) -> dict[str, object]:
        proc = self.processor.statistics()
        stats: dict[str, object] = {
            "packets_in": proc["received"],
            "outcomes": proc["outcomes"],
            "dropped": proc["dropped"],
            "pool_size": len(self.pool),
            "pool_refused": self.pool.refused,
            **{k: v for k, v in sorted(self.counts.items())},
            **self.loops.statistics(),
            "mix_key_epochs": self.keyring.epochs(),
        }
        if self.mailbox is not None:
            stats.update(self.mailbox.statistics())
        if self.hops is not None:
            stats["workers"] = self.hops.statistics()
        return stats
