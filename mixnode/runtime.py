"""The trio shell around a node's sans-IO core (:class:`mixnode.core.NodeCore`).

The core decides everything about traffic; this shell does what it cannot: it reads the clock,
owns the replay filters' files, the mailbox database, the hop workers and the one task that
sleeps until the core's next deadline, and it carries out the core's actions:

* each packet (or each batch a hop worker peeled) goes to the core, and the new replay tags it
  returns are appended to their journals in one write per filter *before* the core is told
  (``tags_recorded``) that what those packets caused may enter the pool — a tag is durable
  before its packet can leave, so a node killed at any instant forwards no replay later;
* :meth:`NodeRuntime.run_pool` commits the mail the core asked to store, a batch in one SQLite
  transaction (one fsync, in the event loop), answers the core (``on_stored``: only then is a
  message's SURB-ACK pooled), and sends the forwards ``poll`` returns at their time;
* the replay filters of the key ring's epochs are loaded (:meth:`NodeRuntime.sync_filters`, on
  construction and whenever keys are added) and installed in the core, so the per-packet path
  never opens a file.

The outbound send is passed in as a plain function, so the tests drive a real node on
``trio.testing.MockClock`` with in-memory links and check that forwarding times equal the
delays the senders chose, to the microsecond. The server (``mixnode/server.py``) owns sockets,
the directory and signals.

Time is Unix time as seen through trio's clock (``offset + trio.current_time()``), so epochs and
keys follow wall time in production and virtual time under a mock clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from secrets import token_bytes
from typing import TYPE_CHECKING

import trio

from mixcore.control import ItemType, PullItem
from mixcore.hop import Arrival, DropReason, PacketProcessor, Unwrapped
from mixcore.sphinx import Sphinx
from mixcore.statistics import Tally
from mixnode.core import (
    Action,
    Forward,
    NodeCore,
    NodeSettings,
    NodeStatistics,
    RecordReplayTag,
    StoreItem,
    TraceHop,
)
from mixnode.keyring import KeyRing
from mixnode.mailbox import ItemKind, MailboxStore, StoreFailed
from mixnode.pool import DelayPool
from mixnode.replay import ReplayFilter
from mixnode.view import EpochView

if TYPE_CHECKING:
    from mixnode.workers import HopWorkers

#: ``send(next_node_id, packet) -> accepted``: must not block (queue or refuse).
SendFn = Callable[[bytes, bytes], bool]

#: The core's settings, under the name the server and the tests have always used.
RuntimeSettings = NodeSettings


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
        randbytes: Callable[[int], bytes] = token_bytes,
    ) -> None:
        self.settings = settings
        self.sphinx = sphinx
        self.keyring = keyring
        self._send = send
        self.replay_dir = replay_dir
        self.mailbox = mailbox
        self.time_offset = time_offset
        self.core = NodeCore(
            settings=settings,
            sphinx=sphinx,
            keyring=keyring,
            rng=rng,
            randbytes=randbytes,
            hosts_mailbox=mailbox.hosts if mailbox is not None else None,
        )
        self.filters: dict[int, ReplayFilter] = {}
        self._on_forward: Callable[[bytes, bytes], None] | None = None
        self._wakeup = trio.Event()
        self._sleeping_until = -math.inf
        """The deadline the pool task sleeps until (-inf while it is not asleep)."""
        self._stores: list[StoreItem] = []
        self.hops: HopWorkers | None = None
        """Worker processes that peel layers (set by the server); None: peel in this process."""
        self.sync_filters()

    # -- what the tests and the server read -----------------------------------------------------

    @property
    def views(self) -> dict[int, EpochView]:
        return self.core.views

    @property
    def processor(self) -> PacketProcessor:
        return self.core.processor

    @property
    def counts(self) -> Tally[NodeStatistics]:
        return self.core.counts

    @property
    def pool(self) -> DelayPool:
        return self.core.pool

    @property
    def on_forward(self) -> Callable[[bytes, bytes], None] | None:
        """Testnet tracing only: called with (incoming, outgoing) packet of every relay."""
        return self._on_forward

    @on_forward.setter
    def on_forward(self, fn: Callable[[bytes, bytes], None] | None) -> None:
        self._on_forward = fn
        self.core.trace_hops = fn is not None

    # -- time, views and filters --------------------------------------------------------------

    def now(self) -> float:
        return self.time_offset + trio.current_time()

    def _to_trio(self, unix_time: float) -> float:
        return unix_time - self.time_offset

    def install_view(self, view: EpochView) -> None:
        self.core.install_view(view)

    def _filter_path(self, epoch: int) -> Path:
        return self.replay_dir / f"replay-{epoch}.bloom"

    def sync_filters(self) -> None:
        """Load the replay filter (and journal) of every epoch the key ring holds a key for and
        install it in the core. A corrupt file is an error, never a silent reset (that would
        reopen a replay window); a packet for an epoch without a filter is refused."""
        for epoch in self.keyring.epochs():
            if epoch in self.filters:
                continue
            loaded = ReplayFilter.open(
                self._filter_path(epoch),
                self.settings.replay_capacity,
                self.settings.replay_fp_rate,
            )
            self.filters[epoch] = loaded
            self.core.install_filter(epoch, loaded)

    def save_filters(self) -> None:
        for epoch, f in self.filters.items():
            f.save(self._filter_path(epoch))

    def erase_expired_keys(self) -> list[int]:
        """Forget keys past retirement, their replay filters and their files."""
        gone = self.keyring.erase_expired(self.now())
        for epoch in gone:
            self.core.remove_filter(epoch)
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
                self.core.count_unprocessed(DropReason.HOP_QUEUE_FULL)
            return
        actions = self.core.receive_packet(
            packet, now, arrival=arrival, previous_node=previous_node
        )
        self._carry_out(actions)

    def on_hop_results(
        self,
        packets: Sequence[bytes],
        contexts: Sequence[tuple[float, Arrival, bytes | None]],
        results: Sequence[Unwrapped],
    ) -> None:
        """A worker peeled a batch: the core decides on each packet, as of the time and side
        it arrived on, and the batch's new replay tags go to the journals in one write per
        filter before any of its packets can be forwarded."""
        receive = self.core.receive_unwrapped
        actions: list[Action] = []
        for packet, (now, arrival, previous), result in zip(
            packets, contexts, results, strict=True
        ):
            actions += receive(packet, result, now, arrival=arrival, previous_node=previous)
        self._carry_out(actions)

    def on_hop_lost(self, count: int) -> None:
        """A worker died holding ``count`` packets: they are gone (and counted)."""
        self.core.count_unprocessed(DropReason.WORKER_LOST, count)

    def _carry_out(self, actions: list[Action]) -> None:
        """Journal the tags (one write per filter), then release what they guarded."""
        others: list[Action] = []
        if actions:
            tags: dict[int, list[bytes]] = {}
            for action in actions:
                if isinstance(action, RecordReplayTag):
                    tags.setdefault(action.epoch, []).append(action.tag)
                else:
                    others.append(action)
            try:
                for epoch, batch in tags.items():
                    self.filters[epoch].append_journal(batch)
            except BaseException:
                self.core.discard_unrecorded()  # not durable: none of it may leave
                raise
        self.core.tags_recorded()
        for action in others:
            if isinstance(action, StoreItem):
                self._stores.append(action)
            elif isinstance(action, TraceHop) and self._on_forward is not None:
                self._on_forward(action.incoming, action.outgoing)
        self._wake()

    def _wake(self) -> None:
        """Wake the pool task if there is mail to store or an earlier deadline than its own."""
        if self._stores:
            self._wakeup.set()
            return
        deadline = self.core.next_deadline()
        if deadline is not None and deadline < self._sleeping_until:
            self._wakeup.set()

    # -- mail (providers) -----------------------------------------------------------------------

    def _commit_stores(self) -> None:
        """Store the waiting items in one transaction, then tell the core how each went."""
        items, self._stores = self._stores, []
        assert self.mailbox is not None
        try:
            ids = self.mailbox.store_many(
                [(item.mailbox, item.surb_id, item.data, item.now) for item in items]
            )
        except (StoreFailed, OSError):  # a full or broken disk: nothing stored, no ACK
            for item in items:
                self.core.on_stored(item.token, False, full=False)
            return
        for item, item_id in zip(items, ids, strict=True):
            self.core.on_stored(item.token, item_id is not None)

    def ack_delay(self) -> float:
        """One SURB-ACK's hold at this exit: Exp(mean hop delay), truncated like a hop's."""
        return self.core.ack_delay()

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
        self.core.note_pull(len(items))
        return bodies

    def acknowledge(self, address: bytes, item_ids: list[int]) -> int:
        assert self.mailbox is not None
        deleted = self.mailbox.ack(address, item_ids)
        self.core.note_acked(deleted)
        return deleted

    # -- tasks ----------------------------------------------------------------------------------

    async def run_pool(self) -> None:
        """The node's one timer task: store waiting mail, then sleep until the core's next
        deadline (or until a packet, or mail to store, arrives) and send what is due."""
        floor = -math.inf  # after a timed wake: the deadline slept for (clock rounding)
        while True:
            if self._stores:
                self._commit_stores()
            self._forward(self.core.poll(max(self.now(), floor)))
            floor = -math.inf
            deadline = self.core.next_deadline()
            if self._stores or (deadline is not None and deadline <= self.now()):
                await trio.lowlevel.checkpoint()
                continue
            self._sleeping_until = deadline if deadline is not None else math.inf
            with trio.move_on_at(
                self._to_trio(deadline) if deadline is not None else math.inf
            ) as scope:
                await self._wakeup.wait()
            self._sleeping_until = -math.inf
            self._wakeup = trio.Event()
            if scope.cancelled_caught and deadline is not None:
                floor = deadline

    def _forward(self, forwards: list[Action]) -> None:
        sent = failed = 0
        try:
            for action in forwards:
                assert isinstance(action, Forward)
                if self._send(action.next_node, action.packet):
                    sent += 1
                else:
                    failed += 1
        finally:
            self.core.on_sent(sent, failed)

    async def run_loops(self) -> None:
        """Send this node's loops at ``mix_loop_rate`` and expire the ones that never return,
        for as long as this task runs (the core keeps the schedule; the pool task sends)."""
        self.core.start_loops(self.now())
        self._wakeup.set()
        try:
            await trio.sleep_forever()
        finally:
            self.core.stop_loops()

    def send_loop(self, now: float) -> bool:
        """Build one loop through every other layer and back; False if no route this epoch."""
        sent = self.core.send_loop(now)
        self._wake()
        return sent

    # -- statistics ------------------------------------------------------------------------------

    def statistics(self) -> dict[str, object]:
        stats = self.core.statistics().as_dict()
        if self.mailbox is not None:
            stats.update(self.mailbox.statistics().as_dict())
        if self.hops is not None:
            stats["workers"] = self.hops.statistics().as_dict()
        return stats
