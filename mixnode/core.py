"""The sans-IO core of a mix node or provider: packets, times and randomness in, actions out.

:class:`NodeCore` owns every decision a node makes about traffic — the packet processor
(:class:`mixcore.hop.PacketProcessor`: peel, replay filter, topology, delay bound, mailbox
rules), the delay pool, the node's own loops and their Poisson schedule, the per-mailbox storage
rate, the SURB-ACKs of stored mail, and the statistics — and does no I/O: no sockets, files,
clocks, threads or SQL. Its trio shell (``mixnode/runtime.py``) feeds it packets with the time
they arrived, sleeps until :meth:`NodeCore.next_deadline`, calls :meth:`NodeCore.poll` and
carries out the actions it returns:

* :class:`RecordReplayTag` — append the tag to its epoch's replay journal. What a packet caused
  (its forward, an ACK) is *staged* in the core and reaches the pool only when the shell calls
  :meth:`NodeCore.tags_recorded` after its journal write: so a tag is durable before the packet
  it belongs to can leave, and a node killed at any instant never forwards a replay in its next
  life. A shell that cannot write calls :meth:`NodeCore.discard_unrecorded` instead.
* :class:`Forward` — send ``packet`` to ``next_node`` now; it only ever comes out of
  :meth:`NodeCore.poll`, at the time its sender chose (the shell reports each send's outcome
  with :meth:`NodeCore.on_sent`, so ``pooled == sent + send_failed + pool_size`` holds).
* :class:`StoreItem` — store a mailbox item durably; the shell commits a batch in one
  transaction and answers each with :meth:`NodeCore.on_stored`. Only a stored message's
  SURB-ACK is pooled, so a sender never stops retransmitting what a crash lost.
* :class:`TraceHop` — testnet tracing only (:attr:`NodeCore.trace_hops`).

The replay filters themselves are loaded by the shell (one file per mix key) and installed with
:meth:`NodeCore.install_filter`; the core uses only their in-memory check, so the per-packet path
never opens or writes a file.

**Why one module of ~550 lines:** a coordinator. The state lives in its rooms (the processor in
``mixcore/hop.py``, ``pool.py``, ``loops.py``, ``limits.py``, ``view.py``); this module holds the
actions, the statistics record and short handlers that route packets, timers and the shell's
answers between those rooms, and the staging that orders a tag before its packet, which must
see every output path at once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mixcore.errors import PacketError
from mixcore.hop import (
    AckDecoy,
    Arrival,
    Dropped,
    DropReason,
    Event,
    LoopReturned,
    PacketProcessor,
    StoreMessage,
    StoreReply,
    Unwrapped,
    surb_ack,
)
from mixcore.hop import Forward as HopForward
from mixcore.payload import MailboxPayload
from mixcore.poisson import PoissonStream, truncated_exponential
from mixcore.sphinx import Sphinx
from mixcore.statistics import Statistics, Tally
from mixcore.topology import PROVIDER_LAYER, NodeRole, Topology
from mixnode.keyring import KeyRing
from mixnode.limits import BucketTable
from mixnode.loops import LoopTracker
from mixnode.pool import DelayPool
from mixnode.view import EpochView

#: How often the core counts loops past their deadline as lost (seconds).
LOOP_EXPIRY_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class NodeSettings:
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
    store_backlog: int = 10_000
    """Items handed to the shell to store and not yet answered; beyond it mail is refused."""


# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordReplayTag:
    """Append ``tag`` to the journal of epoch ``epoch``'s replay filter, then (after a batch's
    tags) call :meth:`NodeCore.tags_recorded`."""

    epoch: int
    tag: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """Send ``packet`` on the link to ``next_node`` now (its delay is over)."""

    next_node: bytes
    packet: bytes


@dataclass(frozen=True, slots=True)
class StoreItem:
    """Store ``data`` in ``mailbox`` durably, then call :meth:`NodeCore.on_stored` with
    ``token``. ``surb_id`` None: a message; else a SURB reply labelled ``surb_id``."""

    token: int
    mailbox: bytes
    data: bytes
    surb_id: bytes | None
    now: float


@dataclass(frozen=True, slots=True)
class TraceHop:
    """Testnet tracing only: this node turned ``incoming`` into ``outgoing``."""

    incoming: bytes
    outgoing: bytes


Action = RecordReplayTag | Forward | StoreItem | TraceHop


class TagMemory(Protocol):
    """One epoch's replay filter in memory (``mixnode.replay.ReplayFilter`` in a node)."""

    def remember(self, tag: bytes) -> bool:
        """True for a tag not seen before (and now remembered); False for a replay."""
        ...


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeStatistics(Statistics):
    """Counts only: no addresses, ids or times (statistics are metadata too).

    Every counter is a named field, present from the start (at 0), so the face reads
    ``stats.json`` with :meth:`Statistics.from_document` and a renamed counter fails there
    instead of reading as zero.
    """

    packets_in: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    """Packets refused, by :class:`mixcore.hop.DropReason` value."""
    pool_size: int = 0
    pool_refused: int = 0
    pooled: int = 0
    """Entered the delay pool: always ``sent + send_failed + pool_size``."""
    sent: int = 0
    send_failed: int = 0
    stored_messages: int = 0
    stored_replies: int = 0
    acks_sent: int = 0
    decoys_acked: int = 0
    bad_surb: int = 0
    bad_mailbox_payload: int = 0
    mailbox_rate_limited: int = 0
    mailbox_full: int = 0
    store_failed: int = 0
    store_backlog_full: int = 0
    pulls_served: int = 0
    items_served: int = 0
    items_acked: int = 0
    loops_unroutable: int = 0
    replay_filter_missing: int = 0
    """Packets for an epoch whose replay filter was not loaded: refused."""
    journal_failed: int = 0
    """Packets whose replay tags could not be written: none of them left."""
    loops_sent: int = 0
    loops_returned: int = 0
    loops_lost: int = 0
    loops_in_flight: int = 0
    loop_return_share: float = 0.0
    mix_key_epochs: list[int] = field(default_factory=list)


#: The event counters the core keeps between snapshots (the rest are read off its rooms).
EVENT_COUNTERS = frozenset({
    "pooled", "sent", "send_failed", "stored_messages", "stored_replies", "acks_sent",
    "decoys_acked", "bad_surb", "bad_mailbox_payload", "mailbox_rate_limited", "mailbox_full",
    "store_failed", "store_backlog_full", "pulls_served", "items_served", "items_acked",
    "loops_unroutable", "replay_filter_missing", "journal_failed",
})


# -- the core -----------------------------------------------------------------------------------


class _Recording:
    """The processor's replay check for one epoch: remembers in memory, notes new tags."""

    __slots__ = ("epoch", "memory", "sink")

    def __init__(self, epoch: int, memory: TagMemory, sink: list[RecordReplayTag]) -> None:
        self.epoch = epoch
        self.memory = memory
        self.sink = sink

    def check_and_add(self, tag: bytes) -> bool:
        if self.memory.remember(tag):
            self.sink.append(RecordReplayTag(self.epoch, tag))
            return True
        return False


class _NoFilter:
    """An epoch with a key but no installed filter: refuse (a replay window never opens)."""

    __slots__ = ("counts",)

    def __init__(self, counts: Tally[NodeStatistics]) -> None:
        self.counts = counts

    def check_and_add(self, tag: bytes) -> bool:
        self.counts["replay_filter_missing"] += 1
        return False


@dataclass(slots=True)
class _PendingStore:
    payload: MailboxPayload | None
    """A message's payload (its SURB acknowledges it); None for a SURB reply."""
    arrived: float


class NodeCore:
    """One node's decisions and timers (see the module docstring for the shell's part).

    ``rng`` draws the delays, loop paths and the loop schedule; ``randbytes`` whatever an
    adversary sees (the loop mailbox and loop ids); ``hosts_mailbox`` (providers only) says
    whether a mailbox is hosted here, from memory."""

    def __init__(
        self,
        *,
        settings: NodeSettings,
        sphinx: Sphinx,
        keyring: KeyRing,
        rng: random.Random,
        randbytes: Callable[[int], bytes],
        hosts_mailbox: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.sphinx = sphinx
        self.keyring = keyring
        self._rng = rng
        self.views: dict[int, EpochView] = {}
        self._filters: dict[int, _Recording] = {}
        self._new_tags: list[RecordReplayTag] = []
        # Unpredictable, so nobody can address packets to it and fake returning loops.
        self.loop_mailbox = randbytes(16)
        self.pool = DelayPool(settings.pool_capacity)
        self.loops = LoopTracker(randbytes=randbytes)
        self.counts = Tally(NodeStatistics, only=EVENT_COUNTERS)
        self.trace_hops = False
        """Testnet tracing only: emit a :class:`TraceHop` for every relayed packet."""
        self.mailbox_rates = BucketTable(settings.mailbox_item_rate, settings.mailbox_item_burst)
        self._staged: list[tuple[bytes, bytes, float]] = []  # (next node, packet, due)
        self._staged_tokens: list[int] = []
        self._pending: dict[int, _PendingStore] = {}
        self._next_token = 0
        self._schedule: PoissonStream | None = None
        self._next_expiry = math.inf
        self._no_filter = _NoFilter(self.counts)
        self.processor = PacketProcessor(
            sphinx=sphinx,
            keyring=keyring,
            replay_filter=self._replay_check,
            role=settings.role,
            node_id=settings.node_id,
            topology=self._topology,
            max_hop_delay=settings.max_hop_delay,
            loop_mailbox=self.loop_mailbox,
            hosts_mailbox=hosts_mailbox or (lambda _m: False),
        )

    # -- views and filters --------------------------------------------------------------------

    def _topology(self, epoch: int) -> Topology | None:
        view = self.views.get(epoch)
        return view.topology if view else None

    def install_view(self, view: EpochView) -> None:
        self.views[view.epoch] = view
        for epoch in [e for e in self.views if e < view.epoch - 2]:
            del self.views[epoch]

    def install_filter(self, epoch: int, memory: TagMemory) -> None:
        """Use ``memory`` as epoch ``epoch``'s replay filter (the shell loaded it)."""
        self._filters[epoch] = _Recording(epoch, memory, self._new_tags)

    def remove_filter(self, epoch: int) -> None:
        self._filters.pop(epoch, None)

    def filter_epochs(self) -> list[int]:
        return sorted(self._filters)

    def _replay_check(self, epoch: int) -> _Recording | _NoFilter:
        return self._filters.get(epoch) or self._no_filter

    # -- packets in -----------------------------------------------------------------------------

    def receive_packet(
        self,
        packet: bytes,
        now: float,
        *,
        arrival: Arrival = Arrival.NETWORK,
        previous_node: bytes | None = None,
    ) -> list[Action]:
        """Peel and decide on ``packet``, which arrived at ``now`` from ``arrival``'s side (and
        ``previous_node``'s link). Returns the new replay tags first; what the packet causes is
        staged until :meth:`tags_recorded`."""
        event = self.processor.receive(packet, now, arrival=arrival, previous_node=previous_node)
        return self._act(packet, event, now)

    def receive_unwrapped(
        self,
        packet: bytes,
        unwrapped: Unwrapped,
        now: float,
        *,
        arrival: Arrival = Arrival.NETWORK,
        previous_node: bytes | None = None,
    ) -> list[Action]:
        """As :meth:`receive_packet`, for a packet a hop worker peeled."""
        event = self.processor.receive_unwrapped(
            unwrapped, now, arrival=arrival, previous_node=previous_node
        )
        return self._act(packet, event, now)

    def count_unprocessed(self, reason: DropReason, n: int = 1) -> None:
        """``n`` packets that arrived but never reached a hop (queue full, worker lost)."""
        self.processor.count_unprocessed(reason, n)

    def _act(self, packet: bytes, event: Event, now: float) -> list[Action]:
        actions: list[Action] = list(self._new_tags)
        self._new_tags.clear()
        if isinstance(event, HopForward):
            if self.trace_hops:
                actions.append(TraceHop(packet, event.packet))
            self._staged.append((event.next_node, event.packet, event.due))
        elif isinstance(event, StoreMessage):
            self._store_message(event, now, actions)
        elif isinstance(event, StoreReply):
            self._store(event.mailbox, event.body, event.surb_id, None, now, actions=actions)
        elif isinstance(event, AckDecoy):
            self._ack_decoy(event, now)
        elif isinstance(event, LoopReturned):
            self.loops.on_return(event.payload)
        else:
            assert isinstance(event, Dropped)
        return actions

    def tags_recorded(self) -> None:
        """The shell wrote every :class:`RecordReplayTag` it was given: what those packets
        caused enters the pool (and their stores may proceed)."""
        staged, self._staged = self._staged, []
        self._staged_tokens.clear()
        for next_node, packet, due in staged:
            self._pool_push(next_node, packet, due)

    def discard_unrecorded(self) -> int:
        """The shell could not write the tags: drop what their packets caused (a tag that is
        not durable must not let its packet leave). Returns how many outputs went."""
        gone = len(self._staged) + len(self._staged_tokens)
        self._staged.clear()
        for token in self._staged_tokens:
            self._pending.pop(token, None)
        self._staged_tokens.clear()
        self._new_tags.clear()
        self.counts["journal_failed"] += gone
        return gone

    def _pool_push(self, next_node: bytes, packet: bytes, due: float) -> None:
        if self.pool.push(next_node, packet, due):
            self.counts["pooled"] += 1

    # -- mailboxes (providers) ------------------------------------------------------------------

    def _store_message(self, event: StoreMessage, now: float, actions: list[Action]) -> None:
        try:
            payload = MailboxPayload.decode(event.payload, self.sphinx.geometry)
        except PacketError:
            self.counts["bad_mailbox_payload"] += 1
            return
        self._store(event.mailbox, payload.data, None, payload, now, actions=actions)

    def _store(
        self,
        mailbox: bytes,
        data: bytes,
        surb_id: bytes | None,
        payload: MailboxPayload | None,
        now: float,
        *,
        actions: list[Action],
    ) -> None:
        if not self.mailbox_rates.take(mailbox, now):
            self.counts["mailbox_rate_limited"] += 1
            return  # no ACK: the sender retries later
        if len(self._pending) >= self.settings.store_backlog:
            self.counts["store_backlog_full"] += 1
            return
        self._next_token += 1
        token = self._next_token
        self._pending[token] = _PendingStore(payload, now)
        self._staged_tokens.append(token)
        actions.append(StoreItem(token, mailbox, data, surb_id, now))

    def on_stored(self, token: int, ok: bool, *, full: bool = True) -> None:
        """The shell's answer to :class:`StoreItem` ``token``: ``ok`` once it is durable (a
        message's SURB-ACK is pooled only then); not ``ok``: refused because the mailbox is
        ``full`` (counted ``mailbox_full``), or the store failed (``store_failed``)."""
        pending = self._pending.pop(token, None)
        if pending is None:
            return
        if not ok:
            self.counts["mailbox_full" if full else "store_failed"] += 1
            return  # no ACK: the sender will retry later
        if pending.payload is None:
            self.counts["stored_replies"] += 1
            return
        self.counts["stored_messages"] += 1
        # Durable now: acknowledge through the sender's SURB, so it stops retransmitting.
        self._acknowledge(pending.payload, pending.arrived, staged=False)

    def pending_stores(self) -> int:
        return len(self._pending)

    def _ack_decoy(self, event: AckDecoy, now: float) -> None:
        """A payload-stream decoy: acknowledged exactly like a stored fragment, then gone."""
        try:
            payload = MailboxPayload.decode(event.payload, self.sphinx.geometry)
        except PacketError:
            self.counts["bad_mailbox_payload"] += 1
            return
        self.counts["decoys_acked"] += 1
        self._acknowledge(payload, now, staged=True)

    def _acknowledge(self, payload: MailboxPayload, arrived: float, *, staged: bool) -> None:
        """Pool the SURB-ACK held Exp(mean hop delay) from the packet's arrival, drawn like a
        hop's: leaving at once, it would tell an observer of this provider's links which
        arrivals were mail."""
        try:
            ack = surb_ack(self.sphinx, payload.surb, arrived, self.ack_delay)
        except PacketError:
            self.counts["bad_surb"] += 1
            return
        self.counts["acks_sent"] += 1
        if staged:
            self._staged.append((ack.next_node, ack.packet, ack.due))
        else:
            self._pool_push(ack.next_node, ack.packet, ack.due)

    def ack_delay(self) -> float:
        """One SURB-ACK's hold at this exit: Exp(mean hop delay), truncated like a hop's."""
        return self._hop_delay()

    def note_pull(self, items: int) -> None:
        self.counts["pulls_served"] += 1
        self.counts["items_served"] += items

    def note_acked(self, deleted: int) -> None:
        self.counts["items_acked"] += deleted

    # -- timers ---------------------------------------------------------------------------------

    def start_loops(self, now: float) -> None:
        """Send loops at ``mix_loop_rate`` from ``now`` on (and expire those never back)."""
        self._schedule = PoissonStream(self.settings.mix_loop_rate, self._rng, now)
        self._next_expiry = now + LOOP_EXPIRY_INTERVAL

    def stop_loops(self) -> None:
        self._schedule = None
        self._next_expiry = math.inf

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has something to do next, or None when nothing is scheduled."""
        deadline = min(
            self.pool.next_deadline() or math.inf,
            self._schedule.next_time if self._schedule else math.inf,
            self._next_expiry,
        )
        return None if deadline == math.inf else deadline

    def poll(self, now: float) -> list[Action]:
        """Send due loops, expire lost ones, and every packet whose delay is over by ``now``."""
        if self._schedule is not None:
            for _ in range(self._schedule.due(now)):
                self.send_loop(now)
        if now >= self._next_expiry:
            self.loops.expire(now)
            self._next_expiry = now + LOOP_EXPIRY_INTERVAL
        return [Forward(due.next_node, due.packet) for due in self.pool.pop_due(now)]

    def on_sent(self, sent: int, failed: int = 0) -> None:
        """How many of :meth:`poll`'s forwards the links took and refused."""
        if sent:
            self.counts["sent"] += sent
        if failed:
            self.counts["send_failed"] += failed

    def send_loop(self, now: float) -> bool:
        """Pool one loop through every other layer and back; False if no route this epoch."""
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

    # -- statistics -----------------------------------------------------------------------------

    def statistics(self) -> NodeStatistics:
        hop = self.processor.statistics()
        loops = self.loops
        return NodeStatistics(
            packets_in=hop.received,
            outcomes=hop.outcomes,
            dropped=hop.dropped,
            pool_size=len(self.pool),
            pool_refused=self.pool.refused,
            **self.counts.counts(),
            loops_sent=loops.sent,
            loops_returned=loops.returned,
            loops_lost=loops.lost,
            loops_in_flight=loops.in_flight,
            loop_return_share=loops.return_share,
            mix_key_epochs=self.keyring.epochs(),
        )

