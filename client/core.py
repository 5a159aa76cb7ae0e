"""The sans-IO client transport core: time, randomness and cells in; actions out.

One :class:`ClientCore` per user. The shell (the trio daemon) does only this::

    while True:
        sleep until core.next_deadline() (or until a cell or a user request arrives)
        actions = core.poll(now)                        # timers: streams, pulls, timeouts
        actions += core.receive_control(kind, body, now)  # each control cell from the provider
        carry out the actions in order (SendPacket / SendControl on the provider link;
        MessageReceived / MessageDelivered / MessageUndeliverable to the store and the UI)

plus ``send_message`` for the user, ``update_consensus`` each epoch and ``mark_node_failed``
when a link to a node cannot be opened. What the core decides, and why, is in
``docs/traffic-model.md``: three Poisson streams whose timing is drawn independently of all
content, stratified routes, fragments with SURB-ACKs, retransmission with a randomized timeout,
fixed-interval pulls with fixed-size answers, reassembly with exactly-once delivery.

Nothing here raises on input from the network: malformed cells, forged fragments, unknown or
bad ACKs are dropped and counted by reason in :meth:`ClientCore.statistics`.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from secrets import token_bytes
from typing import Any

from client.actions import (
    Action,
    MessageDelivered,
    MessageReceived,
    MessageUndeliverable,
    PacketKind,
    SendControl,
    SendPacket,
)
from client.arq import (
    ArqInput,
    FragmentState,
    MessageState,
    OutgoingFragment,
    OutgoingMessage,
    UndeliverableReason,
    extra_delay_mean,
    retransmit_timeout,
    retry_backoff,
)
from client.codec import CodecError, MessageCodec, PlaintextCodec
from client.config import ClientConfig
from client.errors import (
    ClientError,
    ConsensusMismatch,
    FragmentError,
    MessageTooLarge,
    NoRouteError,
    QueueFull,
    UnknownRecipientProvider,
)
from client.fragments import (
    MESSAGE_ID_LEN,
    LoopItem,
    chunk_capacity,
    decode_item,
    max_message_len,
    new_message_id,
    split_message,
)
from client.mailbox_seal import MAILBOX_KEY_LEN, SEAL_OVERHEAD, MailboxKey, SealError, seal
from client.packets import PacketBuilder, decoy_packet, drop_packet, mailbox_packet
from client.paths import PathSelector, Route
from client.reassembly import Outcome, Reassembler
from client.streams import StreamKind
from mixcore.consensus import ConsensusDocument
from mixcore.control import ControlKind, ItemType, PullAck, PullItem, PullRequest
from mixcore.errors import DecodeError, SurbError
from mixcore.payload import ACK_PAYLOAD, data_capacity
from mixcore.poisson import PoissonStream, fork_rng
from mixcore.routing import MAILBOX_LEN, NODE_ID_LEN
from mixcore.sphinx import Sphinx, SphinxGeometry, SurbKeys

_SEQ_MODULUS = 1 << 32


def _mixes(route: Route) -> tuple[bytes, ...]:
    """The mix node ids of a route (its hops between the two providers)."""
    return tuple(hop.node_id for hop in route.hops[1:-1])


def _first(candidate: tuple[float, object]) -> float:
    return candidate[0]


class DropReason(Enum):
    """Why something that reached the client was discarded (counted, never raised)."""

    UNEXPECTED_CONTROL = "unexpected_control"
    MALFORMED_CONTROL = "malformed_control"
    STALE_PULL_ITEM = "stale_pull_item"
    BAD_PULL_ITEM = "bad_pull_item"
    DUPLICATE_PULL_ITEM = "duplicate_pull_item"
    INCOMPLETE_PULL = "incomplete_pull"
    FORGED_FRAGMENT = "forged_fragment"
    """An item that did not open under our mailbox key, or opened to no valid fragment."""
    UNEXPECTED_LOOP = "unexpected_loop"
    """A loop item we are not waiting for: a duplicate delivery, a late one, or a forgery by
    someone holding our card. Counted here, never shown as a message."""
    DUPLICATE_FRAGMENT = "duplicate_fragment"
    ALREADY_DELIVERED = "already_delivered"
    INCONSISTENT_FRAGMENT = "inconsistent_fragment"
    TOO_MANY_FRAGMENTS = "too_many_fragments"
    UNDECODABLE_MESSAGE = "undecodable_message"
    EXPIRED_PARTIAL = "expired_partial"
    EVICTED_PARTIAL = "evicted_partial"
    UNKNOWN_ACK = "unknown_ack"
    STALE_ACK = "stale_ack"
    BAD_ACK = "bad_ack"


_REASSEMBLY_DROPS = {
    Outcome.DUPLICATE: DropReason.DUPLICATE_FRAGMENT,
    Outcome.ALREADY_DELIVERED: DropReason.ALREADY_DELIVERED,
    Outcome.INCONSISTENT: DropReason.INCONSISTENT_FRAGMENT,
    Outcome.TOO_MANY_FRAGMENTS: DropReason.TOO_MANY_FRAGMENTS,
}


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """Counts only: no addresses, ids or times (statistics are metadata too)."""

    packets_sent: dict[str, int]
    """By :class:`PacketKind` value: real, drop, loop."""
    stream_events: dict[str, int]
    """Firings per :class:`StreamKind` (payload, loop, drop), whatever was sent."""
    retransmissions: int
    fragments_queued: int
    acks_pending: int
    """Fragments sent and awaiting their SURB-ACK."""
    loops_sent: int
    loops_returned: int
    loops_lost: int
    loop_acks: int
    decoys_sent: int
    """Payload-stream slots with nothing queued: a decoy with a SURB-ACK, like a fragment."""
    decoy_acks: int
    messages_queued: int
    messages_delivered: int
    messages_undeliverable: int
    messages_received: int
    pulls_sent: int
    pull_items: int
    """Non-dummy items received in pull answers."""
    no_route: int
    """Stream firings or sends that found no route in the consensus (nothing was sent)."""
    path_fallbacks: int
    skipped_stream_events: int
    """Stream events not sent because the shell woke more than ``max_catch_up`` late."""
    drops: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


#: Fragment states with a timer: an attempt's timeout, or a backoff's end.
_TIMED = (FragmentState.IN_FLIGHT, FragmentState.BACKOFF)


@dataclass(slots=True, eq=False)
class _PullBatch:
    seq: int
    seen: set[int] = field(default_factory=set)
    item_ids: list[int] = field(default_factory=list)


class ClientCore:
    """The transport state of one client: its streams, queues, ARQ and reassembly."""

    def __init__(
        self,
        consensus: ConsensusDocument,
        *,
        provider: bytes,
        mailbox: bytes,
        rng: random.Random,
        now: float,
        config: ClientConfig | None = None,
        sphinx: PacketBuilder | None = None,
        codec: MessageCodec | None = None,
        mailbox_key: MailboxKey | None = None,
        randbytes: Callable[[int], bytes] = token_bytes,
    ) -> None:
        if len(provider) != NODE_ID_LEN or len(mailbox) != MAILBOX_LEN:
            raise ClientError(f"provider id is {NODE_ID_LEN} bytes, mailbox {MAILBOX_LEN}")
        self.provider = provider
        self.mailbox = mailbox
        self._randbytes = randbytes
        """Where message ids, loop ids, seals and cover bytes get their randomness: what a
        provider sees, so the OS generator (``secrets``) unless a test injects its own."""
        self.config = config or ClientConfig()
        self.params = consensus.params
        self.geometry = SphinxGeometry.from_params(self.params)
        self.sphinx: PacketBuilder = sphinx or Sphinx(self.geometry)
        if self.sphinx.geometry != self.geometry:
            raise ConsensusMismatch("the packet builder's geometry differs from the consensus")
        self.codec: MessageCodec = codec or PlaintextCodec()
        self.mailbox_key = mailbox_key or MailboxKey.generate()
        self.item_len = data_capacity(self.geometry)
        """Bytes of every mailbox item (sealed), real, loop or decoy alike."""
        self.fragment_len = self.item_len - SEAL_OVERHEAD
        """Bytes of a fragment or loop item before sealing."""
        # Fork in a fixed order: the streams' timing generators are never shared with content.
        rates = {
            StreamKind.PAYLOAD: self.params.payload_rate,
            StreamKind.LOOP: self.params.loop_rate,
            StreamKind.DROP: self.params.drop_rate,
        }
        self._streams = {
            kind: PoissonStream(rate, fork_rng(rng), now) for kind, rate in rates.items()
        }
        self._stream_order = (
            self._streams[StreamKind.PAYLOAD],
            self._streams[StreamKind.LOOP],
            self._streams[StreamKind.DROP],
        )
        pull_rng = fork_rng(rng)
        self._next_pull = now + pull_rng.uniform(0.0, self.params.pull_interval)
        self._paths = PathSelector(
            consensus,
            fork_rng(rng),
            max_hop_delay=min(self.config.max_hop_delay, consensus.params.max_hop_delay),
        )
        self._arq_rng = fork_rng(rng)
        self._link_up = True
        # outgoing
        self._messages: dict[bytes, OutgoingMessage] = {}
        self._finished: OrderedDict[bytes, MessageState] = OrderedDict()
        self._queue: deque[OutgoingFragment] = deque()
        self._retry_queue: deque[OutgoingFragment] = deque()
        self._unfinished = 0
        self._timers: list[tuple[float, int, OutgoingFragment]] = []
        self._timer_seq = 0
        self._surbs: dict[bytes, tuple[OutgoingFragment, SurbKeys]] = {}
        self._attempt_mixes: dict[bytes, tuple[bytes, ...]] = {}
        self._retired_surbs: OrderedDict[bytes, None] = OrderedDict()
        self._loops: OrderedDict[bytes, float] = OrderedDict()
        self._loop_surbs: OrderedDict[bytes, tuple[SurbKeys, float]] = OrderedDict()
        self._decoy_surbs: OrderedDict[bytes, tuple[SurbKeys, float]] = OrderedDict()
        # incoming
        c = self.config
        self._reassembler = Reassembler(
            max_fragments=c.max_message_fragments,
            max_partial_messages=c.max_partial_messages,
            max_partial_bytes=c.max_partial_bytes,
            partial_ttl=c.partial_ttl,
            delivered_ttl=c.delivered_ttl,
            max_delivered_ids=c.max_delivered_ids,
        )
        self._pull_seq = 0
        self._batch: _PullBatch | None = None
        self._pull_ack = PullAck(0, ())
        """Sent with the next pull request, whatever the batch held (see :meth:`_on_pull`)."""
        # counters
        self._sent: Counter[PacketKind] = Counter()
        self._fired: Counter[StreamKind] = Counter()
        self._drops: Counter[DropReason] = Counter()
        self._n: Counter[str] = Counter()

    # -- the user's side ------------------------------------------------------------------

    @property
    def consensus(self) -> ConsensusDocument:
        return self._paths.consensus

    @property
    def mailbox_public(self) -> bytes:
        """Our mailbox's sealing public key (it goes into our contact card)."""
        return self.mailbox_key.public

    @property
    def max_message_len(self) -> int:
        """Largest encoded message :meth:`send_message` accepts, in bytes."""
        return max_message_len(self.fragment_len, self.config.max_message_fragments)

    def send_message(
        self,
        provider: bytes,
        mailbox: bytes,
        data: bytes,
        now: float,
        *,
        seal_key: bytes,
        message_id: bytes | None = None,
        created: float | None = None,
    ) -> bytes:
        """Queue ``data`` for ``mailbox`` at ``provider``; returns the message's id. Every
        fragment is sealed to ``seal_key``, the mailbox's public key from the recipient's card,
        afresh on each attempt.

        Raises :class:`UnknownRecipientProvider`, :class:`MessageTooLarge` or
        :class:`QueueFull`; nothing is queued then. The message goes out in payload-stream
        slots, replacing drop cover, so the send times do not change.

        ``message_id`` is for a shell re-queuing a persisted message after a restart: with the
        same id (and the same bytes), fragments that arrived before the restart complete the
        same message at the recipient instead of leaving a stale partial one. This needs a
        codec that encodes the same message to the same bytes; a ratchet does not, so its shell
        must resume with a fresh id (the stale partial then expires). New messages leave it None
        and get 16 random bytes. ``created`` is also for resuming: the time the message was
        first queued, from which its retry budget counts (default ``now``).
        """
        if len(mailbox) != MAILBOX_LEN:
            raise ClientError(f"a mailbox address is {MAILBOX_LEN} bytes")
        if len(seal_key) != MAILBOX_KEY_LEN:
            raise ClientError(f"a mailbox key is {MAILBOX_KEY_LEN} bytes")
        if message_id is not None and (
            len(message_id) != MESSAGE_ID_LEN or message_id in self._messages
        ):
            raise ClientError(f"a resumed message id must be {MESSAGE_ID_LEN} new bytes")
        if not self._paths.is_provider(provider):
            raise UnknownRecipientProvider("the recipient's provider is not in the consensus")
        encoded = self.codec.encode(provider, mailbox, data)
        if len(encoded) > self.max_message_len:
            raise MessageTooLarge(len(encoded), self.max_message_len)
        needed = max(1, math.ceil(len(encoded) / chunk_capacity(self.fragment_len)))
        limit = self.config.max_pending_fragments
        if self._unfinished + needed > limit:
            raise QueueFull(needed, self._unfinished, limit)
        message_id = message_id if message_id is not None else new_message_id(self._randbytes)
        fragments = split_message(
            encoded, self.fragment_len, self.config.max_message_fragments, message_id
        )
        message = OutgoingMessage(message_id, provider, mailbox,
                                  now if created is None else min(created, now), seal_key)
        for fragment in fragments:
            out = OutgoingFragment(message, fragment.index, fragment.encode(self.fragment_len))
            message.fragments.append(out)
            self._queue.append(out)
        self._messages[message_id] = message
        self._unfinished += len(fragments)
        self._n["messages_queued"] += 1
        return message_id

    def cancel_message(self, message_id: bytes, now: float) -> list[Action]:
        """Withdraw a message still in progress: none of its fragments is sent again (a
        disappearing message whose timer ran out must not leave after it is gone from the
        store). Returns its :class:`MessageUndeliverable` (reason ``cancelled``), or nothing if
        it is unknown or already finished."""
        message = self._messages.get(message_id)
        actions: list[Action] = []
        if message is not None:
            self._fail_message(message, UndeliverableReason.CANCELLED,
                               "withdrawn before delivery", now, actions)
        return actions

    def message_progress(self, message_id: bytes) -> tuple[int, int, int] | None:
        """``(fragments sent at least once, fragments acknowledged, fragments)`` of a message
        still in progress, for front ends; None once it finished or if unknown."""
        message = self._messages.get(message_id)
        if message is None:
            return None
        fragments = message.fragments
        sent = sum(1 for f in fragments if f.attempts > 0)
        acked = sum(1 for f in fragments if f.state is FragmentState.ACKED)
        return sent, acked, len(fragments)

    def message_state(self, message_id: bytes) -> MessageState | None:
        """PENDING, DELIVERED or UNDELIVERABLE; None if unknown (or long finished)."""
        message = self._messages.get(message_id)
        if message is not None:
            return message.state
        return self._finished.get(message_id)

    # -- the network's side ---------------------------------------------------------------

    def update_consensus(self, consensus: ConsensusDocument, now: float) -> None:
        """Route through the nodes of ``consensus`` only, from now on; forget failure marks."""
        params = consensus.params
        if SphinxGeometry.from_params(params) != self.geometry:
            raise ConsensusMismatch("the new consensus changes the packet geometry")
        self._paths.update(consensus)
        self.params = params
        self._streams[StreamKind.PAYLOAD].set_rate(params.payload_rate, now)
        self._streams[StreamKind.LOOP].set_rate(params.loop_rate, now)
        self._streams[StreamKind.DROP].set_rate(params.drop_rate, now)
        self._next_pull = min(self._next_pull, now + params.pull_interval)

    def set_link(self, up: bool, now: float) -> None:
        """The shell's link to our provider went down or came back. While down, payload slots
        keep their times but carry cover (the shell drops every packet anyway), so no attempt
        is spent into a dead link; when it is back, fragments waiting out a backoff take the
        next slots at once."""
        if up and not self._link_up:
            for message in self._messages.values():
                for fragment in message.fragments:
                    if fragment.state is FragmentState.BACKOFF:
                        fragment.apply(ArqInput.RESUME)
                        fragment.deadline = None
                        self._retry_queue.append(fragment)
        self._link_up = up

    def mark_node_failed(self, node_id: bytes) -> None:
        """Avoid ``node_id`` in new paths until the next consensus (e.g. it cannot be reached)."""
        self._paths.mark_failed(node_id)

    def next_deadline(self) -> float:
        """Absolute time of the next timer; the shell sleeps until then (or an input)."""
        return min((t for t, _ in self._candidates()), default=math.inf)

    def poll(self, now: float) -> list[Action]:
        """Run every timer due at or before ``now``, in time order."""
        actions: list[Action] = []
        self._catch_up(now)
        while True:
            when, handler = min(self._candidates(), key=_first)
            if when > now:
                return actions
            handler(when, actions)

    def receive_control(self, kind: int, body: bytes, now: float) -> list[Action]:
        """Handle one control cell from our provider (the answers to our pulls)."""
        actions: list[Action] = []
        if kind != ControlKind.PULL_ITEM:
            self._drops[DropReason.UNEXPECTED_CONTROL] += 1
            return actions
        try:
            item = PullItem.decode(body)
        except DecodeError:
            self._drops[DropReason.MALFORMED_CONTROL] += 1
            return actions
        batch = self._batch
        if batch is None or item.seq != batch.seq:
            self._drops[DropReason.STALE_PULL_ITEM] += 1
            return actions
        if item.count != self.params.pull_batch:
            self._drops[DropReason.BAD_PULL_ITEM] += 1
            return actions
        if item.index in batch.seen:
            self._drops[DropReason.DUPLICATE_PULL_ITEM] += 1
            return actions
        batch.seen.add(item.index)
        if item.item_type is not ItemType.DUMMY:
            batch.item_ids.append(item.item_id)
            self._n["pull_items"] += 1
            if item.item_type is ItemType.MESSAGE:
                self._receive_fragment(item.data, now, actions)
            else:
                self._receive_ack(item.surb_id, item.data, now, actions)
        if len(batch.seen) == self.params.pull_batch:
            # Acknowledge every real item, including junk, so the provider deletes it: with
            # the next pull request, so its timing says nothing about what the batch held.
            self._pull_ack = PullAck(batch.seq, tuple(batch.item_ids))
            self._batch = None
        return actions

    # -- counts ---------------------------------------------------------------------------

    def statistics(self) -> ClientStatistics:
        in_flight = queued = 0
        for message in self._messages.values():
            for fragment in message.fragments:
                if fragment.state is FragmentState.IN_FLIGHT:
                    in_flight += 1
                elif fragment.state in (FragmentState.QUEUED, FragmentState.BACKOFF):
                    queued += 1
        n = self._n
        return ClientStatistics(
            packets_sent={k.value: self._sent[k] for k in PacketKind},
            stream_events={k.value: self._fired[k] for k in StreamKind},
            retransmissions=n["retransmissions"],
            fragments_queued=queued,
            acks_pending=in_flight,
            loops_sent=n["loops_sent"],
            loops_returned=n["loops_returned"],
            loops_lost=n["loops_lost"],
            loop_acks=n["loop_acks"],
            decoys_sent=n["decoys_sent"],
            decoy_acks=n["decoy_acks"],
            messages_queued=n["messages_queued"],
            messages_delivered=n["messages_delivered"],
            messages_undeliverable=n["messages_undeliverable"],
            messages_received=n["messages_received"],
            pulls_sent=n["pulls_sent"],
            pull_items=n["pull_items"],
            no_route=n["no_route"],
            path_fallbacks=self._paths.fallbacks,
            skipped_stream_events=n["skipped_stream_events"],
            drops={r.value: c for r, c in self._drops.items() if c},
        )

    def memory_footprint(self) -> dict[str, int]:
        """Sizes of every growing container (for tests and the daemon's status page)."""
        return {
            "messages": len(self._messages),
            "finished_messages": len(self._finished),
            "queue": len(self._queue) + len(self._retry_queue),
            "timers": len(self._timers),
            "surbs": len(self._surbs),
            "retired_surbs": len(self._retired_surbs),
            "loops": len(self._loops),
            "loop_surbs": len(self._loop_surbs),
            "decoy_surbs": len(self._decoy_surbs),
            "partial_messages": self._reassembler.partial_messages,
            "partial_bytes": self._reassembler.partial_bytes,
            "delivered_ids": self._reassembler.remembered_ids,
        }

    # -- timers ---------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[float, Callable[[float, list[Action]], None]]]:
        payload, loop, drop = self._stream_order
        out: list[tuple[float, Callable[[float, list[Action]], None]]] = [
            (payload.next_time, self._on_payload),
            (loop.next_time, self._on_loop),
            (drop.next_time, self._on_drop),
            (self._next_pull, self._on_pull),
        ]
        while self._timers:
            when, _, fragment = self._timers[0]
            if fragment.deadline == when and fragment.state in _TIMED:
                out.append((when, self._on_timer))
                break
            heapq.heappop(self._timers)  # stale: acknowledged, abandoned or re-armed
        if self._loops or self._loop_surbs or self._decoy_surbs:
            oldest = min(
                next(iter(self._loops.values()), math.inf),
                next(iter(self._loop_surbs.values()), (None, math.inf))[1],
                next(iter(self._decoy_surbs.values()), (None, math.inf))[1],
            )
            out.append((oldest + self.config.loop_ttl, self._on_loop_expiry))
        expiry = self._reassembler.next_expiry()
        if expiry < math.inf:
            out.append((expiry, self._on_reassembly_expiry))
        return out

    def _catch_up(self, now: float) -> None:
        late = now - self.config.max_catch_up
        for stream in self._streams.values():
            if stream.next_time < late:
                self._n["skipped_stream_events"] += 1
                stream.restart(now)
        if self._next_pull < late:
            self._next_pull = now

    def _on_payload(self, t: float, actions: list[Action]) -> None:
        stream = self._streams[StreamKind.PAYLOAD]
        self._fired[StreamKind.PAYLOAD] += 1
        fragment = self._next_queued() if self._link_up else None
        if fragment is None or not self._send_fragment(fragment, t, actions):
            self._send_decoy(t, actions)
        stream.advance()

    def _on_loop(self, t: float, actions: list[Action]) -> None:
        self._fired[StreamKind.LOOP] += 1
        self._streams[StreamKind.LOOP].advance()
        try:
            forward = self._paths.route(self.provider, self.provider)
            back = self._paths.route(self.provider, self.provider)
        except NoRouteError:
            self._n["no_route"] += 1
            return
        loop_id = new_message_id(self._randbytes)
        data = seal(
            self.mailbox_public,
            LoopItem(loop_id).encode(self.fragment_len),
            randbytes=self._randbytes,
        )
        packet, keys = mailbox_packet(
            self.sphinx, forward, back, mailbox=self.mailbox, own_mailbox=self.mailbox, data=data
        )
        self._loops[loop_id] = t
        self._loop_surbs[keys.surb_id] = (keys, t)
        while len(self._loops) > self.config.max_pending_loops:
            self._loops.popitem(last=False)
            self._n["loops_lost"] += 1
        while len(self._loop_surbs) > self.config.max_pending_loops:
            self._loop_surbs.popitem(last=False)
        self._n["loops_sent"] += 1
        self._emit(
            actions, SendPacket(forward.first_hop, packet, PacketKind.LOOP, StreamKind.LOOP)
        )

    def _on_drop(self, t: float, actions: list[Action]) -> None:
        self._fired[StreamKind.DROP] += 1
        self._streams[StreamKind.DROP].advance()
        self._send_drop(actions, StreamKind.DROP)

    def _on_pull(self, t: float, actions: list[Action]) -> None:
        """Acknowledge the previous batch and ask for the next one, on the pull schedule.

        The acknowledgement leaves here, at the fixed pull time, never when a batch completes:
        had it left once the batch's mail was decrypted and committed, its delay would tell an
        observer of the link whether the batch held mail. A batch still incomplete is
        acknowledged for the items that did arrive (they were handled), and counted."""
        batch = self._batch
        if batch is not None:
            self._drops[DropReason.INCOMPLETE_PULL] += 1
            self._pull_ack = PullAck(batch.seq, tuple(batch.item_ids))
        actions.append(SendControl(ControlKind.PULL_ACK, self._pull_ack.encode()))
        self._pull_ack = PullAck(self._pull_seq, ())
        self._pull_seq = (self._pull_seq + 1) % _SEQ_MODULUS
        self._batch = _PullBatch(self._pull_seq)
        self._next_pull = t + self.params.pull_interval
        self._n["pulls_sent"] += 1
        actions.append(SendControl(ControlKind.PULL_REQUEST, PullRequest(self._pull_seq).encode()))

    def _on_timer(self, t: float, actions: list[Action]) -> None:
        """An attempt's timeout (IN_FLIGHT) or the end of a backoff (BACKOFF)."""
        _, _, fragment = heapq.heappop(self._timers)
        fragment.deadline = None
        message = fragment.message
        budget_end = message.created + self.config.retry_budget
        cap = self.config.max_attempts
        if t >= budget_end or (cap is not None and fragment.attempts >= cap):
            self._fragment_done(fragment, ArqInput.GIVE_UP)
            if cap is not None and fragment.attempts >= cap:
                detail = f"fragment {fragment.index} unacknowledged after {fragment.attempts} "\
                         "attempts"
            else:
                detail = (f"fragment {fragment.index} unacknowledged for {t - message.created:.0f}"
                          f" s (retry budget {self.config.retry_budget:.0f} s, "
                          f"{fragment.attempts} attempts)")
            self._fail_message(message, UndeliverableReason.RETRY_BUDGET_EXHAUSTED, detail, t,
                               actions)
        elif fragment.state is FragmentState.BACKOFF:
            fragment.apply(ArqInput.RESUME)
            self._retry_queue.append(fragment)
        else:
            if fragment.surb_ids:  # the attempt's mixes may be dead: prefer others next time
                self._paths.suspect(self._attempt_mixes.get(fragment.surb_ids[-1], ()))
            fragment.apply(ArqInput.RETRY)
            wait = retry_backoff(fragment.attempts, base=self.config.backoff_base,
                                 cap=self.config.backoff_max, rng=self._arq_rng)
            self._arm(fragment, min(t + wait, budget_end))

    def _arm(self, fragment: OutgoingFragment, when: float) -> None:
        fragment.deadline = when
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, fragment))

    def _on_loop_expiry(self, t: float, actions: list[Action]) -> None:
        ttl = self.config.loop_ttl  # same arithmetic as in _candidates, so this always pops
        while self._loops and next(iter(self._loops.values())) + ttl <= t:
            self._loops.popitem(last=False)
            self._n["loops_lost"] += 1
        for surbs in (self._loop_surbs, self._decoy_surbs):
            while surbs and next(iter(surbs.values()))[1] + ttl <= t:
                surbs.popitem(last=False)

    def _on_reassembly_expiry(self, t: float, actions: list[Action]) -> None:
        expired = self._reassembler.expire(t)
        if expired:
            self._drops[DropReason.EXPIRED_PARTIAL] += expired

    # -- sending --------------------------------------------------------------------------

    def _emit(self, actions: list[Action], action: SendPacket) -> None:
        self._sent[action.kind] += 1
        actions.append(action)

    def _next_queued(self) -> OutgoingFragment | None:
        for queue in (self._retry_queue, self._queue):
            while queue:
                fragment = queue.popleft()
                if fragment.state is FragmentState.QUEUED:
                    return fragment
        return None

    def _send_decoy(self, t: float, actions: list[Action]) -> None:
        """A payload slot with nothing to send: a packet of the same form as a fragment (random
        sealed-length data, a SURB-ACK back to us) to a random provider's drop mailbox. Its
        exit acknowledges it like a stored fragment, so what returns to our mailbox per
        interval depends on our rates only, not on how much we really send."""
        try:
            exit_provider = self._paths.random_provider()
            forward = self._paths.route(self.provider, exit_provider)
            back = self._paths.route(exit_provider, self.provider)
        except NoRouteError:
            self._n["no_route"] += 1
            return
        packet, keys = decoy_packet(
            self.sphinx, forward, back, own_mailbox=self.mailbox, randbytes=self._randbytes
        )
        self._decoy_surbs[keys.surb_id] = (keys, t)
        while len(self._decoy_surbs) > self.config.max_pending_loops:
            self._decoy_surbs.popitem(last=False)
        self._n["decoys_sent"] += 1
        self._emit(
            actions, SendPacket(forward.first_hop, packet, PacketKind.DECOY, StreamKind.PAYLOAD)
        )

    def _send_drop(self, actions: list[Action], stream: StreamKind) -> None:
        try:
            route = self._paths.route(self.provider, self._paths.random_provider())
        except NoRouteError:
            self._n["no_route"] += 1
            return
        packet = drop_packet(self.sphinx, route, randbytes=self._randbytes)
        self._emit(actions, SendPacket(route.first_hop, packet, PacketKind.DROP, stream))

    def _send_fragment(self, fragment: OutgoingFragment, t: float, actions: list[Action]) -> bool:
        """Send one attempt of ``fragment``; False if the slot must carry a drop instead."""
        message = fragment.message
        if not self._paths.is_provider(message.provider):
            self._fail_message(
                message,
                UndeliverableReason.RECIPIENT_PROVIDER_GONE,
                "the recipient's provider left the consensus",
                t,
                actions,
            )
            return False
        try:
            forward = self._paths.route(self.provider, message.provider)
            back = self._paths.route(message.provider, self.provider)
        except NoRouteError:
            self._retry_queue.appendleft(fragment)  # keep its place; it is not an attempt
            return False
        packet, keys = mailbox_packet(
            self.sphinx,
            forward,
            back,
            mailbox=message.mailbox,
            own_mailbox=self.mailbox,
            data=seal(message.seal_key, fragment.encoded, randbytes=self._randbytes),
        )
        fragment.apply(ArqInput.SEND)
        fragment.attempts += 1
        if fragment.attempts > 1:
            self._n["retransmissions"] += 1
        fragment.surb_ids.append(keys.surb_id)
        self._surbs[keys.surb_id] = (fragment, keys)
        self._attempt_mixes[keys.surb_id] = _mixes(forward) + _mixes(back)
        while len(fragment.surb_ids) > self.config.surbs_per_fragment:
            self._retire_surb(fragment.surb_ids.pop(0))
        extra = self.config.extra_delay_mean
        timeout = retransmit_timeout(
            forward,
            back,
            self.params,
            transit_allowance=self.config.transit_allowance,
            extra_mean=extra_delay_mean(self.params) if extra is None else extra,
            rng=self._arq_rng,
        )
        self._arm(fragment, t + timeout)
        self._emit(
            actions, SendPacket(forward.first_hop, packet, PacketKind.REAL, StreamKind.PAYLOAD)
        )
        return True

    def _fragment_done(self, fragment: OutgoingFragment, event: ArqInput) -> None:
        fragment.apply(event)
        fragment.deadline = None
        self._unfinished -= 1
        for surb_id in fragment.surb_ids:
            self._retire_surb(surb_id)
        fragment.surb_ids.clear()

    def _retire_surb(self, surb_id: bytes) -> None:
        """Forget an attempt's SURB; remember its id a while to count a late ACK as stale."""
        self._surbs.pop(surb_id, None)
        self._attempt_mixes.pop(surb_id, None)
        self._retired_surbs[surb_id] = None
        while len(self._retired_surbs) > self.config.max_retired_surbs:
            self._retired_surbs.popitem(last=False)

    def _finish_message(self, message: OutgoingMessage, state: MessageState) -> None:
        message.state = state
        del self._messages[message.message_id]
        self._finished[message.message_id] = state
        while len(self._finished) > self.config.max_finished_messages:
            self._finished.popitem(last=False)

    def _fail_message(
        self,
        message: OutgoingMessage,
        reason: UndeliverableReason,
        detail: str,
        t: float,
        actions: list[Action],
    ) -> None:
        for fragment in message.fragments:
            if not fragment.done:
                self._fragment_done(fragment, ArqInput.ABANDON)
        self._finish_message(message, MessageState.UNDELIVERABLE)
        # abandoned fragments leave the queues lazily; purge when they would dominate, so the
        # queues stay within twice the pending count (amortized O(1) per fragment)
        if len(self._queue) + len(self._retry_queue) > 2 * self._unfinished + 64:
            self._queue = deque(f for f in self._queue if f.state is FragmentState.QUEUED)
            self._retry_queue = deque(
                f for f in self._retry_queue if f.state is FragmentState.QUEUED
            )
        self._n["messages_undeliverable"] += 1
        actions.append(MessageUndeliverable(message.message_id, reason, detail, t))

    # -- receiving ------------------------------------------------------------------------

    def _receive_fragment(self, data: bytes, now: float, actions: list[Action]) -> None:
        try:
            item = decode_item(self.mailbox_key.open(data), self.fragment_len)
        except (SealError, FragmentError):
            self._drops[DropReason.FORGED_FRAGMENT] += 1
            return
        if isinstance(item, LoopItem):
            if self._loops.pop(item.loop_id, None) is not None:
                self._n["loops_returned"] += 1
            else:
                self._drops[DropReason.UNEXPECTED_LOOP] += 1
            return
        fragment = item
        evicted = self._reassembler.evicted
        result = self._reassembler.add(fragment, now)
        if self._reassembler.evicted > evicted:
            self._drops[DropReason.EVICTED_PARTIAL] += self._reassembler.evicted - evicted
        if result.outcome is Outcome.PARTIAL:
            return
        if result.outcome is not Outcome.COMPLETE or result.data is None:
            self._drops[_REASSEMBLY_DROPS[result.outcome]] += 1
            return
        try:
            message = self.codec.decode(result.data)
        except CodecError:
            self._drops[DropReason.UNDECODABLE_MESSAGE] += 1
            return
        self._n["messages_received"] += 1
        actions.append(MessageReceived(fragment.message_id, message, now))

    def _receive_ack(self, surb_id: bytes, body: bytes, now: float, actions: list[Action]) -> None:
        entry = self._surbs.get(surb_id)
        loop_entry = self._loop_surbs.get(surb_id) if entry is None else None
        if entry is None and loop_entry is None:
            decoy = self._decoy_surbs.pop(surb_id, None)
            if decoy is not None:
                try:
                    ok = self.sphinx.decode_reply(decoy[0], body) == ACK_PAYLOAD
                except SurbError:
                    ok = False
                self._n["decoy_acks" if ok else "bad_decoy_acks"] += 1
                if not ok:
                    self._drops[DropReason.BAD_ACK] += 1
                return
            stale = surb_id in self._retired_surbs
            self._drops[DropReason.STALE_ACK if stale else DropReason.UNKNOWN_ACK] += 1
            return
        keys = entry[1] if entry is not None else loop_entry[0]  # type: ignore[index]
        try:
            payload = self.sphinx.decode_reply(keys, body)
        except SurbError:
            payload = None
        if payload != ACK_PAYLOAD:
            self._drops[DropReason.BAD_ACK] += 1
            return
        if entry is None:
            del self._loop_surbs[surb_id]
            self._n["loop_acks"] += 1
            return
        fragment = entry[0]
        self._paths.vouch(self._attempt_mixes.get(surb_id, ()))
        self._fragment_done(fragment, ArqInput.ACK)
        message = fragment.message
        if all(f.state is FragmentState.ACKED for f in message.fragments):
            self._finish_message(message, MessageState.DELIVERED)
            self._n["messages_delivered"] += 1
            actions.append(MessageDelivered(message.message_id, now))
