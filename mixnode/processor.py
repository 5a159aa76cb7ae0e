"""The sans-IO packet processor of a mix or provider: bytes and a time in, one event out.

It peels one Sphinx layer with whichever live key fits, drops replays, checks the next hop
against the consensus topology and the delay against the node's bound, and says what to do:
hold and forward, store in a mailbox, or drop for a counted reason.

Where a packet came from matters at a provider: a packet from one of its *client* links may
only enter layer 1 (a client cannot hand it a one-hop packet for a mailbox), and mail for a
mailbox is stored only when it arrived from a node of the last mix layer — deliveries come from
the network side, through the mixes, or not at all. It never sleeps, sends or
logs; the trio server does the I/O and the delay pool does the waiting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from mixcore.payload import DROP_MAILBOX, PAYLOAD_VERSION
from mixcore.sphinx import Deliver, Relay, Sphinx
from mixcore.topology import NodeRole, Topology
from mixnode.keyring import KeyRing
from mixnode.replay import ReplayFilter
from mixnode.unwrap import Unwrapped, unwrap


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


class PacketProcessor:
    def __init__(
        self,
        *,
        sphinx: Sphinx,
        keyring: KeyRing,
        replay_filter: Callable[[int], ReplayFilter],
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
        if isinstance(unwrapped, str):
            return Dropped(DropReason(unwrapped))
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

    def statistics(self) -> dict[str, object]:
        return {
            "received": self.received,
            "outcomes": dict(self.outcomes),
            "dropped": {reason.value: n for reason, n in self.drops.items()},
        }
