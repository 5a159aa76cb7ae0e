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

The state lives in the rooms of :mod:`client.transport` (streams, outbox, ARQ attempts, loop
monitor, pulls, reassembly); this class only routes timers and inputs between them and the
packet builder, so each room keeps one concern and its own tests.

Nothing here raises on input from the network: malformed cells, forged fragments, unknown or
bad ACKs are dropped and counted by reason in :meth:`ClientCore.statistics`.

**Why one module of ~680 lines:** a coordinator: about twenty short handlers that route timers
and inputs between the rooms of client/transport/ and the packet builder; the rooms hold the
state.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from secrets import token_bytes

from client.actions import (
    Action,
    MessageDelivered,
    MessageReceived,
    MessageUndeliverable,
    PacketKind,
    SendControl,
    SendPacket,
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
from client.transport.acks import AttemptTracker
from client.transport.arq import (
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
from client.transport.drops import DropReason
from client.transport.loops import CoverKind, LoopMonitor
from client.transport.outbox import Outbox
from client.transport.pulls import Pulls
from client.transport.reassembly import Outcome, Reassembler
from client.transport.streams import SendStreams, StreamKind
from mixcore.consensus import ConsensusDocument
from mixcore.control import ControlKind, ItemType
from mixcore.errors import SurbError
from mixcore.params import NetworkParams
from mixcore.payload import ACK_PAYLOAD, data_capacity
from mixcore.poisson import fork_rng
from mixcore.routing import MAILBOX_LEN, NODE_ID_LEN
from mixcore.sphinx import Sphinx, SphinxGeometry
from mixcore.statistics import Statistics

__all__ = ["ClientCore", "ClientStatistics", "DropReason"]

Handler = Callable[[float, list[Action]], None]


def _mixes(route: Route) -> tuple[bytes, ...]:
    """The mix node ids of a route (its hops between the two providers)."""
    return tuple(hop.node_id for hop in route.hops[1:-1])


def _first(candidate: tuple[float, object]) -> float:
    return candidate[0]


def _rates(params: NetworkParams) -> dict[StreamKind, float]:
    return {
        StreamKind.PAYLOAD: params.payload_rate,
        StreamKind.LOOP: params.loop_rate,
        StreamKind.DROP: params.drop_rate,
    }


_REASSEMBLY_DROPS = {
    Outcome.DUPLICATE: DropReason.DUPLICATE_FRAGMENT,
    Outcome.ALREADY_DELIVERED: DropReason.ALREADY_DELIVERED,
    Outcome.INCONSISTENT: DropReason.INCONSISTENT_FRAGMENT,
    Outcome.TOO_MANY_FRAGMENTS: DropReason.TOO_MANY_FRAGMENTS,
}


@dataclass(frozen=True, slots=True)
class ClientStatistics(Statistics):
    """Counts only: no addresses, ids or times (statistics are metadata too)."""

    packets_sent: dict[str, int]
    """By :class:`PacketKind` value: real, decoy, drop, loop."""
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



class _SlotUse(Enum):
    """What a payload slot did with the fragment it took."""

    SENT = "sent"
    NO_ROUTE = "no_route"
    """No path at all (an empty layer): the fragment keeps its place, the slot is a decoy."""
    PROVIDER_MISSING = "provider_missing"
    """Its recipient's provider is not listed (within its grace): passed over for now."""
    MESSAGE_FAILED = "message_failed"
    """Its provider stayed missing past the grace: the message failed, the slot is free."""


class ClientCore:
    """The transport of one client: coordinates its rooms (see the module docstring)."""

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
        self.config = c = config or ClientConfig()
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
        self._drops: Counter[DropReason] = Counter()
        # Fork in a fixed order: the streams' timing generators are never shared with content.
        self._streams = SendStreams(_rates(self.params), rng, now)
        self._pulls = Pulls(interval=self.params.pull_interval, batch=self.params.pull_batch,
                            rng=fork_rng(rng), now=now, drops=self._drops)
        self._paths = PathSelector(
            consensus,
            fork_rng(rng),
            max_hop_delay=min(c.max_hop_delay, consensus.params.max_hop_delay),
        )
        self._arq_rng = fork_rng(rng)
        self._link_up = True
        self._outbox = Outbox(max_finished=c.max_finished_messages)
        self._attempts = AttemptTracker(surbs_per_fragment=c.surbs_per_fragment,
                                        max_retired=c.max_retired_surbs)
        self._cover = LoopMonitor(ttl=c.loop_ttl, max_pending=c.max_pending_loops,
                                  drops=self._drops)
        self._reassembler = Reassembler(
            max_fragments=c.max_message_fragments,
            max_partial_messages=c.max_partial_messages,
            max_partial_bytes=c.max_partial_bytes,
            partial_ttl=c.partial_ttl,
            delivered_ttl=c.delivered_ttl,
            max_delivered_ids=c.max_delivered_ids,
        )
        self._sent: Counter[PacketKind] = Counter()
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
    def provider_grace(self) -> float:
        """Seconds a message waits for its recipient's provider to be in the consensus."""
        grace = self.config.provider_grace
        return 3 * self.params.epoch_length if grace is None else grace

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

        Raises :class:`MessageTooLarge` or :class:`QueueFull`; nothing is queued then. A
        provider the consensus does not list (yet, or any more) is not refused here: the
        message waits up to :attr:`provider_grace` for it, then fails as
        ``RECIPIENT_PROVIDER_GONE``. The message goes out in payload-stream
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
            len(message_id) != MESSAGE_ID_LEN or message_id in self._outbox.messages
        ):
            raise ClientError(f"a resumed message id must be {MESSAGE_ID_LEN} new bytes")
        encoded = self.codec.encode(provider, mailbox, data)
        if len(encoded) > self.max_message_len:
            raise MessageTooLarge(len(encoded), self.max_message_len)
        needed = max(1, math.ceil(len(encoded) / chunk_capacity(self.fragment_len)))
        limit = self.config.max_pending_fragments
        if self._outbox.unfinished + needed > limit:
            raise QueueFull(needed, self._outbox.unfinished, limit)
        message_id = message_id if message_id is not None else new_message_id(self._randbytes)
        fragments = split_message(
            encoded, self.fragment_len, self.config.max_message_fragments, message_id
        )
        message = OutgoingMessage(message_id, provider, mailbox,
                                  now if created is None else min(created, now), seal_key)
        if not self._paths.is_provider(provider):
            message.provider_missing_since = now  # it waits (provider_grace), see _send_fragment
        message.fragments.extend(
            OutgoingFragment(message, f.index, f.encode(self.fragment_len)) for f in fragments
        )
        self._outbox.add(message)
        self._n["messages_queued"] += 1
        return message_id

    def cancel_message(self, message_id: bytes, now: float) -> list[Action]:
        """Withdraw a message still in progress: none of its fragments is sent again (a
        disappearing message whose timer ran out must not leave after it is gone from the
        store). Returns its :class:`MessageUndeliverable` (reason ``cancelled``), or nothing if
        it is unknown or already finished."""
        message = self._outbox.messages.get(message_id)
        actions: list[Action] = []
        if message is not None:
            self._fail_message(message, UndeliverableReason.CANCELLED,
                               "withdrawn before delivery", now, actions)
        return actions

    def message_progress(self, message_id: bytes) -> tuple[int, int, int] | None:
        """``(fragments sent at least once, fragments acknowledged, fragments)`` of a message
        still in progress, for front ends; None once it finished or if unknown."""
        message = self._outbox.messages.get(message_id)
        if message is None:
            return None
        fragments = message.fragments
        sent = sum(1 for f in fragments if f.attempts > 0)
        acked = sum(1 for f in fragments if f.state is FragmentState.ACKED)
        return sent, acked, len(fragments)

    def message_state(self, message_id: bytes) -> MessageState | None:
        """PENDING, DELIVERED or UNDELIVERABLE; None if unknown (or long finished)."""
        return self._outbox.state(message_id)

    # -- the network's side ---------------------------------------------------------------

    def update_consensus(self, consensus: ConsensusDocument, now: float) -> None:
        """Route through the nodes of ``consensus`` only, from now on; forget failure marks."""
        params = consensus.params
        if SphinxGeometry.from_params(params) != self.geometry:
            raise ConsensusMismatch("the new consensus changes the packet geometry")
        self._paths.update(consensus)
        self.params = params
        self._streams.set_rates(_rates(params), now)
        self._pulls.update(interval=params.pull_interval, batch=params.pull_batch, now=now)

    def set_link(self, up: bool, now: float) -> None:
        """The shell's link to our provider went down or came back. While down, payload slots
        keep their times but carry cover (the shell drops every packet anyway), so no attempt
        is spent into a dead link; when it is back, fragments waiting out a backoff take the
        next slots at once."""
        if up and not self._link_up:
            for fragment in self._outbox.fragments():
                if fragment.state is FragmentState.BACKOFF:
                    fragment.apply(ArqInput.RESUME)
                    fragment.deadline = None
                    self._outbox.requeue(fragment)
        self._link_up = up

    def mark_node_failed(self, node_id: bytes) -> None:
        """Avoid ``node_id`` in new paths until the next consensus (e.g. it cannot be reached)."""
        self._paths.mark_failed(node_id)

    def next_deadline(self) -> float:
        """Absolute time of the next timer; the shell sleeps until then (or an input)."""
        return min(t for t, _ in self._candidates())

    def poll(self, now: float) -> list[Action]:
        """Run every timer due at or before ``now``, in time order."""
        actions: list[Action] = []
        late = now - self.config.max_catch_up
        self._streams.catch_up(late, now)
        self._pulls.catch_up(late, now)
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
        item = self._pulls.accept(body)
        if item is None:
            pass
        elif item.item_type is ItemType.MESSAGE:
            self._receive_item(item.data, now, actions)
        else:
            self._receive_ack(item.surb_id, item.data, now, actions)
        return actions

    # -- counts ---------------------------------------------------------------------------

    def statistics(self) -> ClientStatistics:
        in_flight = queued = 0
        for fragment in self._outbox.fragments():
            if fragment.state is FragmentState.IN_FLIGHT:
                in_flight += 1
            elif fragment.state in (FragmentState.QUEUED, FragmentState.BACKOFF):
                queued += 1
        n, cover = self._n, self._cover.counts
        return ClientStatistics(
            packets_sent={k.value: self._sent[k] for k in PacketKind},
            stream_events={k.value: self._streams.fired[k] for k in StreamKind},
            retransmissions=n["retransmissions"],
            fragments_queued=queued,
            acks_pending=in_flight,
            loops_sent=cover["loops_sent"],
            loops_returned=cover["loops_returned"],
            loops_lost=cover["loops_lost"],
            loop_acks=cover["loop_acks"],
            decoys_sent=cover["decoys_sent"],
            decoy_acks=cover["decoy_acks"],
            messages_queued=n["messages_queued"],
            messages_delivered=n["messages_delivered"],
            messages_undeliverable=n["messages_undeliverable"],
            messages_received=n["messages_received"],
            pulls_sent=self._pulls.sent,
            pull_items=self._pulls.items,
            no_route=n["no_route"],
            path_fallbacks=self._paths.fallbacks,
            skipped_stream_events=self._streams.skipped,
            drops={r.value: c for r, c in self._drops.items() if c},
        )

    def memory_footprint(self) -> dict[str, int]:
        """Sizes of every growing container (for tests and the daemon's status page)."""
        return {
            **self._outbox.footprint(),
            **self._attempts.footprint(),
            **self._cover.footprint(),
            "partial_messages": self._reassembler.partial_messages,
            "partial_bytes": self._reassembler.partial_bytes,
            "delivered_ids": self._reassembler.remembered_ids,
        }

    # -- timers ---------------------------------------------------------------------------

    def _candidates(self) -> list[tuple[float, Handler]]:
        s = self._streams
        return [
            (s.next_time(StreamKind.PAYLOAD), self._on_payload),
            (s.next_time(StreamKind.LOOP), self._on_loop),
            (s.next_time(StreamKind.DROP), self._on_drop),
            (self._pulls.next_time, self._on_pull),
            (self._attempts.next_timer(), self._on_timer),
            (self._cover.next_deadline(), self._on_cover_expiry),
            (self._reassembler.next_expiry(), self._on_reassembly_expiry),
        ]

    def _on_payload(self, t: float, actions: list[Action]) -> None:
        """One payload slot: the first fragment that can go, else a decoy. Fragments whose
        recipient's provider is missing from the consensus are passed over (and put back
        behind the others), so they hold up no one."""
        passed_over: list[OutgoingFragment] = []
        sent = False
        while self._link_up:
            fragment = self._outbox.next_queued()
            if fragment is None:
                break
            outcome = self._send_fragment(fragment, t, actions)
            if outcome is _SlotUse.PROVIDER_MISSING:
                passed_over.append(fragment)
                continue
            if outcome is _SlotUse.MESSAGE_FAILED:
                continue  # the slot is still free
            sent = outcome is _SlotUse.SENT
            break
        for fragment in passed_over:
            self._outbox.requeue(fragment)
        if not sent:
            self._send_decoy(t, actions)
        self._streams.fire(StreamKind.PAYLOAD)

    def _on_loop(self, t: float, actions: list[Action]) -> None:
        self._streams.fire(StreamKind.LOOP)
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
        self._cover.sent(CoverKind.LOOP, keys, t, loop_id)
        self._emit(
            actions, SendPacket(forward.first_hop, packet, PacketKind.LOOP, StreamKind.LOOP)
        )

    def _on_drop(self, t: float, actions: list[Action]) -> None:
        self._streams.fire(StreamKind.DROP)
        self._send_drop(actions, StreamKind.DROP)

    def _on_pull(self, t: float, actions: list[Action]) -> None:
        """Acknowledge the previous batch and ask for the next one, on the pull schedule
        (never when a batch completes: see :mod:`client.transport.pulls`)."""
        actions.extend(SendControl(kind, body) for kind, body in self._pulls.fire(t))

    def _on_timer(self, t: float, actions: list[Action]) -> None:
        """An attempt's timeout (IN_FLIGHT) or the end of a backoff (BACKOFF)."""
        fragment = self._attempts.pop_timer()
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
            self._outbox.requeue(fragment)
        else:
            if fragment.surb_ids:  # the attempt's mixes may be dead: prefer others next time
                self._paths.suspect(self._attempts.mixes(fragment.surb_ids[-1]))
            fragment.apply(ArqInput.RETRY)
            wait = retry_backoff(fragment.attempts, base=self.config.backoff_base,
                                 cap=self.config.backoff_max, rng=self._arq_rng)
            self._attempts.arm(fragment, min(t + wait, budget_end))

    def _on_cover_expiry(self, t: float, actions: list[Action]) -> None:
        self._cover.expire(t)

    def _on_reassembly_expiry(self, t: float, actions: list[Action]) -> None:
        expired = self._reassembler.expire(t)
        if expired:
            self._drops[DropReason.EXPIRED_PARTIAL] += expired

    # -- sending --------------------------------------------------------------------------

    def _emit(self, actions: list[Action], action: SendPacket) -> None:
        self._sent[action.kind] += 1
        actions.append(action)

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
        self._cover.sent(CoverKind.DECOY, keys, t)
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

    def _send_fragment(
        self, fragment: OutgoingFragment, t: float, actions: list[Action]
    ) -> _SlotUse:
        """Send one attempt of ``fragment``, or say why it did not go."""
        message = fragment.message
        if not self._paths.is_provider(message.provider):
            since = message.provider_missing_since
            if since is None:
                message.provider_missing_since = since = t
            grace = self.provider_grace
            if t - since >= grace:
                self._fail_message(
                    message,
                    UndeliverableReason.RECIPIENT_PROVIDER_GONE,
                    f"the recipient's provider is not in the consensus (waited {grace:.0f} s)",
                    t,
                    actions,
                )
                return _SlotUse.MESSAGE_FAILED
            return _SlotUse.PROVIDER_MISSING
        message.provider_missing_since = None
        try:
            forward = self._paths.route(self.provider, message.provider)
            back = self._paths.route(message.provider, self.provider)
        except NoRouteError:
            self._outbox.keep_place(fragment)  # it is not an attempt
            return _SlotUse.NO_ROUTE
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
        self._attempts.attempt(fragment, keys, _mixes(forward) + _mixes(back))
        extra = self.config.extra_delay_mean
        timeout = retransmit_timeout(
            forward,
            back,
            self.params,
            transit_allowance=self.config.transit_allowance,
            extra_mean=extra_delay_mean(self.params) if extra is None else extra,
            rng=self._arq_rng,
        )
        self._attempts.arm(fragment, t + timeout)
        self._emit(
            actions, SendPacket(forward.first_hop, packet, PacketKind.REAL, StreamKind.PAYLOAD)
        )
        return _SlotUse.SENT

    def _fragment_done(self, fragment: OutgoingFragment, event: ArqInput) -> None:
        self._attempts.finish(fragment, event)
        self._outbox.fragment_done()

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
        self._outbox.finish(message, MessageState.UNDELIVERABLE)
        self._n["messages_undeliverable"] += 1
        actions.append(MessageUndeliverable(message.message_id, reason, detail, t))

    # -- receiving ------------------------------------------------------------------------

    def _receive_item(self, data: bytes, now: float, actions: list[Action]) -> None:
        """A MESSAGE item of our mailbox: open it; a loop goes to the monitor, a fragment to
        reassembly, a complete message through the codec to the shell."""
        try:
            item = decode_item(self.mailbox_key.open(data), self.fragment_len)
        except (SealError, FragmentError):
            self._drops[DropReason.FORGED_FRAGMENT] += 1
            return
        if isinstance(item, LoopItem):
            self._cover.loop_item(item.loop_id)
            return
        evicted = self._reassembler.evicted
        result = self._reassembler.add(item, now)
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
        actions.append(MessageReceived(item.message_id, message, now))

    def _receive_ack(self, surb_id: bytes, body: bytes, now: float, actions: list[Action]) -> None:
        """A SURB reply: an attempt's ACK (the ARQ), or a loop's or decoy's (the monitor)."""
        entry = self._attempts.lookup(surb_id)
        cover = self._cover.ack_keys(surb_id) if entry is None else None
        if entry is None and cover is None:
            stale = self._attempts.is_retired(surb_id)
            self._drops[DropReason.STALE_ACK if stale else DropReason.UNKNOWN_ACK] += 1
            return
        keys = entry[1] if entry is not None else cover[1]  # type: ignore[index]
        try:
            ok = self.sphinx.decode_reply(keys, body) == ACK_PAYLOAD
        except SurbError:
            ok = False
        if cover is not None:
            self._cover.acked(cover[0], surb_id, ok)
            return
        if not ok:
            self._drops[DropReason.BAD_ACK] += 1
            return
        assert entry is not None
        fragment = entry[0]
        self._paths.vouch(self._attempts.mixes(surb_id))
        self._fragment_done(fragment, ArqInput.ACK)
        message = fragment.message
        if all(f.state is FragmentState.ACKED for f in message.fragments):
            self._outbox.finish(message, MessageState.DELIVERED)
            self._n["messages_delivered"] += 1
            actions.append(MessageDelivered(message.message_id, now))
