"""The sans-IO packet processor of a mix or provider: bytes and a time in, one event out.

It peels one Sphinx layer with whichever live key fits, drops replays, checks the next hop
against the consensus topology (:mod:`mixcore.topology`) and the delay against the node's bound,
and says what to do: hold and forward, store in a mailbox, or drop for a counted reason.

Where a packet came from matters at a provider: a packet from one of its *client* links may
only enter layer 1 (a client cannot hand it a one-hop packet for a mailbox), and mail for a
mailbox is stored only when it arrived from a node of the last mix layer — deliveries come from
the network side, through the mixes, or not at all. It never sleeps, sends or logs; the node's
core (``mixnode/core.py``) runs it beside its delay pool, and the trio shell
(``mixnode/runtime.py``) does the I/O.

It lives in ``mixcore`` (not in ``mixnode``) so that everything that models a node runs the
same decisions: the mix node itself, and the client tests' in-memory network
(``tests/client/conftest.py``). The peel (:func:`unwrap`) is a separate pure function because
it is the node's costly step: ``mixnode/unwrap.py`` carries it to worker processes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from mixcore.errors import BodyMacError, HeaderMacError, PacketError, WrongSuitePacket
from mixcore.payload import ACK_PAYLOAD, DROP_MAILBOX, PAYLOAD_VERSION
from mixcore.sphinx import Deliver, MixPrivateKey, ProcessResult, Relay, Sphinx, Surb
from mixcore.statistics import Statistics
from mixcore.topology import NodeRole, Topology


class DropReason(StrEnum):
    MALFORMED = "malformed"
    WRONG_SUITE = "wrong_suite"
    """The packet's version byte names another Sphinx suite than the network's."""
    BAD_MAC = "bad_mac"
    BAD_PAYLOAD = "bad_payload"
    REPLAY = "replay"
    UNKNOWN_NEXT_HOP = "unknown_next_hop"
    WRONG_LAYER = "wrong_layer"
    EXPIRED_KEY = "expired_key"
    DELAY_TOO_LONG = "delay_too_long"
    UNKNOWN_MAILBOX = "unknown_mailbox"
    POOL_FULL = "pool_full"
    HOP_QUEUE_FULL = "hop_queue_full"
    """The queue to the worker processes was full (a flood): dropped before the hop."""
    WORKER_LOST = "worker_lost"
    """A worker process died holding the packet (it is restarted; the packet is gone)."""
    NO_ROUTE = "no_route"
    CLIENT_DELIVERY = "client_delivery"
    """A packet from a client link tried to end at this provider instead of entering layer 1."""
    NOT_FROM_LAST_LAYER = "not_from_last_layer"
    """Mail for a mailbox that arrived from a node outside the last mix layer."""
    COVER = "cover"
    """A drop cover packet reached its exit and was discarded, as designed (not an error)."""


class Arrival(StrEnum):
    """The side a packet arrived from."""

    NETWORK = "network"
    """A link from a node (its id, when known, is checked for deliveries)."""
    CLIENT = "client"
    """A provider's link from one of its clients."""
    LOCAL = "local"
    """Produced by this node itself."""


@dataclass(frozen=True, slots=True)
class Forward:
    """Hold ``packet`` until ``due`` (absolute time), then send it to ``next_node``."""

    next_node: bytes
    due: float
    packet: bytes


@dataclass(frozen=True, slots=True)
class StoreMessage:
    """Provider: store ``payload`` in ``mailbox``."""

    mailbox: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class StoreReply:
    """Provider: store a SURB reply ``body`` labelled ``surb_id`` in ``mailbox``."""

    mailbox: bytes
    surb_id: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class AckDecoy:
    """Provider: a payload-stream decoy reached its drop mailbox: acknowledge it through the
    SURB in ``payload`` exactly as a stored item would be, store nothing."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class LoopReturned:
    """One of this node's own loop packets came back."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Dropped:
    reason: DropReason


Event = Forward | StoreMessage | StoreReply | AckDecoy | LoopReturned | Dropped


#: What peeling a packet gives: the epoch whose key opened it and the result, or why not.
Unwrapped = tuple[int, ProcessResult] | DropReason

#: The drop reasons the peel itself decides (the rest need the node's state).
HOP_REASONS = (
    DropReason.MALFORMED,
    DropReason.WRONG_SUITE,
    DropReason.BAD_MAC,
    DropReason.BAD_PAYLOAD,
    DropReason.EXPIRED_KEY,
)


class MixKeys(Protocol):
    """The node's mix keys as of a time (``mixnode.keyring.KeyRing`` in a node)."""

    def live(self, now: float) -> Sequence[tuple[int, MixPrivateKey]]:
        """(epoch, key) pairs that may open a packet at ``now``, most likely first."""
        ...

    def retired(self, now: float) -> Sequence[tuple[int, MixPrivateKey]]:
        """Keys past their grace period, tried only to tell ``expired_key`` from ``bad_mac``."""
        ...


class ReplayCheck(Protocol):
    """One epoch's replay filter (``mixnode.replay.ReplayFilter`` in a node)."""

    def check_and_add(self, tag: bytes) -> bool:
        """True for a tag not seen before (and remember it); False for a replay."""
        ...


def _try(sphinx: Sphinx, key: MixPrivateKey, parsed: object) -> ProcessResult | DropReason | None:
    """The result under ``key``; None when the header is not for this key."""
    try:
        return sphinx.process_parsed(key, parsed)  # type: ignore[arg-type]
    except HeaderMacError:
        return None
    except BodyMacError:
        return DropReason.BAD_PAYLOAD
    except PacketError:
        return DropReason.MALFORMED


def unwrap(
    sphinx: Sphinx,
    live: Sequence[tuple[int, MixPrivateKey]],
    retired: Sequence[MixPrivateKey],
    packet: bytes,
) -> Unwrapped:
    """Peel a layer with the first live key whose header MAC verifies (keys most likely first);
    a packet only a retired key opens is ``expired_key``.

    A pure function of its arguments, so a node's worker processes can run it on copies of the
    keys while the processor, with the replay filter, stays in the node process."""
    try:
        parsed = sphinx.parse(packet)  # once, however many keys are tried
    except WrongSuitePacket:
        return DropReason.WRONG_SUITE
    except PacketError:
        return DropReason.MALFORMED
    for epoch, key in live:
        result = _try(sphinx, key, parsed)
        if result is not None:
            return result if isinstance(result, DropReason) else (epoch, result)
    for key in retired:
        if _try(sphinx, key, parsed) is not None:
            return DropReason.EXPIRED_KEY
    return DropReason.BAD_MAC


class PacketProcessor:
    """One node's decisions on the packets it receives, with counts of every outcome.

    Everything stateful it needs comes in as callables (the replay filter and topology of an
    epoch, whether a mailbox is hosted here), so the same object runs in a node and in a test's
    model of a network."""

    def __init__(
        self,
        *,
        sphinx: Sphinx,
        keyring: MixKeys,
        replay_filter: Callable[[int], ReplayCheck],
        role: NodeRole,
        node_id: bytes,
        topology: Callable[[int], Topology | None],
        max_hop_delay: float,
        loop_mailbox: bytes,
        hosts_mailbox: Callable[[bytes], bool] = lambda _m: False,
    ) -> None:
        self.sphinx = sphinx
        self.keyring = keyring
        self._replay_filter = replay_filter
        self.role = role
        self.node_id = node_id
        self._topology = topology
        self.max_hop_delay = max_hop_delay
        self.loop_mailbox = loop_mailbox
        self._hosts_mailbox = hosts_mailbox
        self.received = 0
        self.drops: Counter[DropReason] = Counter()
        self.outcomes: Counter[str] = Counter()

    def receive(
        self,
        packet: bytes,
        now: float,
        *,
        arrival: Arrival = Arrival.NETWORK,
        previous_node: bytes | None = None,
    ) -> Event:
        """Peel, check and decide, in this process (see :meth:`receive_unwrapped`)."""
        live = self.keyring.live(now)
        retired = [key for _, key in self.keyring.retired(now)]
        unwrapped = unwrap(self.sphinx, live, retired, packet)
        return self.receive_unwrapped(
            unwrapped, now, arrival=arrival, previous_node=previous_node
        )

    def receive_unwrapped(
        self,
        unwrapped: Unwrapped,
        now: float,
        *,
        arrival: Arrival = Arrival.NETWORK,
        previous_node: bytes | None = None,
    ) -> Event:
        """Decide on a packet a worker (or :meth:`receive`) peeled: replay filter, topology,
        delay bound, mailbox. ``now`` is when the packet arrived; ``previous_node`` is the node
        id of the link it came on (mail for a mailbox from a node outside the last layer is
        dropped; None skips the check)."""
        self.received += 1
        event = self._decide(unwrapped, now, arrival, previous_node)
        if isinstance(event, Dropped):
            self.drops[event.reason] += 1
        else:
            self.outcomes[type(event).__name__] += 1
        return event

    def count_unprocessed(self, reason: DropReason, n: int = 1) -> None:
        """``n`` packets that arrived but never reached a hop (queue full, worker lost)."""
        self.received += n
        self.drops[reason] += n

    def _decide(
        self, unwrapped: Unwrapped, now: float, arrival: Arrival, previous_node: bytes | None
    ) -> Event:
        if isinstance(unwrapped, DropReason):
            return Dropped(unwrapped)
        epoch, result = unwrapped
        if not self._replay_filter(epoch).check_and_add(result.replay_tag):
            return Dropped(DropReason.REPLAY)
        if arrival is Arrival.CLIENT and not isinstance(result, Relay):
            return Dropped(DropReason.CLIENT_DELIVERY)
        if isinstance(result, Relay):
            topology = self._topology(epoch)
            my_layer = topology.layers.get(self.node_id) if topology else None
            if topology is None or my_layer is None:
                return Dropped(DropReason.NO_ROUTE)
            layer = topology.layers.get(result.next_node)
            if layer is None:
                return Dropped(DropReason.UNKNOWN_NEXT_HOP)
            if layer != topology.expected_next_layer(my_layer):
                return Dropped(DropReason.WRONG_LAYER)
            if result.delay > self.max_hop_delay:
                return Dropped(DropReason.DELAY_TOO_LONG)
            return Forward(result.next_node, now + result.delay, result.packet)
        if result.mailbox == self.loop_mailbox and isinstance(result, Deliver):
            return LoopReturned(result.payload)
        decoy = result.mailbox == DROP_MAILBOX
        if decoy and not (
            self.role is NodeRole.PROVIDER
            and isinstance(result, Deliver)
            and result.payload[:1] == bytes([PAYLOAD_VERSION])
        ):
            return Dropped(DropReason.COVER)  # drop-stream cover: nothing to acknowledge
        hosted = self.role is NodeRole.PROVIDER and self._hosts_mailbox(result.mailbox)
        if not decoy and not hosted:
            return Dropped(DropReason.UNKNOWN_MAILBOX)
        if arrival is Arrival.NETWORK and previous_node is not None:
            topology = self._topology(epoch)
            if topology is None or topology.layers.get(previous_node) != topology.num_layers:
                return Dropped(DropReason.NOT_FROM_LAST_LAYER)
        if decoy:
            assert isinstance(result, Deliver)
            return AckDecoy(result.payload)
        if isinstance(result, Deliver):
            return StoreMessage(result.mailbox, result.payload)
        return StoreReply(result.mailbox, result.surb_id, result.body)

    def statistics(self) -> HopStatistics:
        return HopStatistics(
            received=self.received,
            outcomes=dict(self.outcomes),
            dropped={reason.value: n for reason, n in self.drops.items()},
        )


@dataclass(frozen=True, slots=True)
class HopStatistics(Statistics):
    """What one node's processor decided, in counts (its part of ``stats.json``)."""

    received: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    """By event type: Forward, StoreMessage, StoreReply, LoopReturned, AckDecoy."""
    dropped: dict[str, int] = field(default_factory=dict)
    """By :class:`DropReason` value."""


def surb_ack(sphinx: Sphinx, surb: Surb, now: float, hold: Callable[[], float]) -> Forward:
    """The SURB-ACK an exit provider sends for a stored item or a payload-stream decoy: the
    acknowledgement packet, held ``hold()`` seconds from ``now`` (an exponential draw in a
    node; leaving at once it would tell an observer of the provider's links which arrivals
    were mail), then sent to the SURB's first hop. Raises ``PacketError`` for a SURB that does
    not fit the geometry."""
    packet = sphinx.package_reply(surb, ACK_PAYLOAD)
    return Forward(surb.first_hop, now + hold(), packet)
