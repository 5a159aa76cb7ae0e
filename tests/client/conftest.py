"""Shared pieces of the client tests: a real consensus, a fast stand-in packet builder, and an
in-memory network of nodes that process real Sphinx packets (``mixcore.sphinx``: layer peeling,
sender-chosen delays, replay tags, SURB replies), with loss and reordering, driven in virtual
time by the cores' own ``next_deadline``.

Every node runs the real packet processor (``mixcore.hop.PacketProcessor``, the one a mix node
runs) and the network acts on its events the way ``mixnode/runtime.py`` does, including the
exit's SURB-ACK (``mixcore.hop.surb_ack``, held for a truncated exponential delay) and its
acknowledgement of payload-stream decoys. What it leaves out is the node's I/O: links, the
delay pool's bound, the SQLite mailbox, rate limits. SURB-ACKs, loops and pulls are exercised
end to end with real cryptography.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from client.actions import (
    Action,
    MessageDelivered,
    MessageReceived,
    MessageUndeliverable,
    SendControl,
    SendPacket,
)
from client.config import ClientConfig
from client.core import ClientCore
from mixcore.consensus import ConsensusDocument, build_consensus
from mixcore.control import ControlKind, ItemType, PullAck, PullItem, PullRequest
from mixcore.descriptor import NodeDescriptor, make_signed_descriptor
from mixcore.hop import (
    AckDecoy,
    Arrival,
    Dropped,
    DropReason,
    Forward,
    LoopReturned,
    PacketProcessor,
    StoreMessage,
    StoreReply,
    surb_ack,
)
from mixcore.keys import IdentityKey, LinkKey
from mixcore.params import NetworkParams
from mixcore.payload import ACK_PAYLOAD, MailboxPayload
from mixcore.poisson import truncated_exponential
from mixcore.routing import SURB_ID_LEN, mailbox_address
from mixcore.sphinx import MixPrivateKey, PathHop, Sphinx, SphinxGeometry, Surb, SurbKeys
from mixcore.topology import NodeRole, Topology

EPOCH = 0
START = 1000.0
PARAMS = NetworkParams(
    layers=3,
    payload_rate=4.0,
    loop_rate=0.5,
    drop_rate=0.5,
    mean_hop_delay=0.05,
    epoch_length=1_000_000.0,
    genesis_time=0.0,
    pull_interval=1.0,
    pull_batch=8,
)


@dataclass(eq=False)
class NodeKeys:
    name: str
    role: NodeRole
    identity: IdentityKey
    link: LinkKey
    mix_keys: dict[int, MixPrivateKey]

    @property
    def node_id(self) -> bytes:
        return self.identity.public

    def descriptor(self, index: int) -> bytes:
        desc = NodeDescriptor(
            identity_key=self.identity.public,
            link_key=self.link.public,
            role=self.role,
            layer=0,
            host=f"10.0.0.{index + 1}",
            port=3000 + index,
            epoch=EPOCH,
            mix_keys=((EPOCH, self.mix_keys[EPOCH].public), (EPOCH + 1, self.mix_keys[1].public)),
            name=self.name,
        )
        return make_signed_descriptor(desc, self.identity).wire


def make_nodes(providers: int, mixes: int) -> list[NodeKeys]:
    nodes = []
    for i in range(providers + mixes):
        role = NodeRole.PROVIDER if i < providers else NodeRole.MIX
        name = f"p{i}" if role is NodeRole.PROVIDER else f"m{i - providers}"
        nodes.append(
            NodeKeys(
                name,
                role,
                IdentityKey.generate(),
                LinkKey.generate(),
                {e: MixPrivateKey.generate() for e in (EPOCH, EPOCH + 1)},
            )
        )
    return nodes


def make_consensus(
    nodes: Sequence[NodeKeys], params: NetworkParams = PARAMS
) -> ConsensusDocument:
    wires = [n.descriptor(i) for i, n in enumerate(nodes)]
    return build_consensus(EPOCH, params, wires)


NODES = make_nodes(providers=3, mixes=6)
CONSENSUS = make_consensus(NODES)


# -- a stand-in packet builder for long timing runs -------------------------------------------


class FakeSphinx:
    """Same geometry and interfaces as ``mixcore.sphinx.Sphinx`` without the public-key work:
    for the 10^4-second timing runs, whose subject is *when* packets leave, not what they are.
    It records the routes it was asked to build."""

    def __init__(self, geometry: SphinxGeometry) -> None:
        self.geometry = geometry
        self.forward_paths: list[tuple[bytes, ...]] = []
        self.surb_paths: list[tuple[bytes, ...]] = []
        self.delays: list[tuple[float, ...]] = []
        self.built: list[tuple[bytes, tuple[bytes, ...] | None]] = []
        """(mailbox, SURB path or None) of every packet, in order."""
        self._surb: tuple[bytes, ...] | None = None

    def create_forward(
        self, path: Sequence[PathHop], delays: Sequence[float], mailbox: bytes, payload: bytes
    ) -> bytes:
        self.forward_paths.append(tuple(h.node_id for h in path))
        self.delays.append(tuple(delays))
        self.built.append((mailbox, self._surb))
        self._surb = None
        return bytes(self.geometry.packet_len)

    def create_surb(
        self, path: Sequence[PathHop], delays: Sequence[float], mailbox: bytes
    ) -> tuple[Surb, SurbKeys]:
        self.surb_paths.append(tuple(h.node_id for h in path))
        self._surb = self.surb_paths[-1]
        g = self.geometry
        surb = Surb(path[0].node_id, bytes(g.header_len), bytes(16))
        return surb, SurbKeys(os.urandom(SURB_ID_LEN), (bytes(16), bytes(16)))

    def decode_reply(self, keys: SurbKeys, body: bytes) -> bytes:
        return ACK_PAYLOAD


# -- driving a core alone -----------------------------------------------------------------------


def open_pull(core: ClientCore, now: float) -> tuple[int, float]:
    """Run the core's timers until it sends a pull request; returns (seq, time)."""
    while True:
        t = core.next_deadline()
        for action in core.poll(t):
            if isinstance(action, SendControl) and action.kind is ControlKind.PULL_REQUEST:
                return PullRequest.decode(action.body).seq, t


def batch_items(
    seq: int, batch: int, real: Sequence[tuple[ItemType, bytes, bytes]], first_id: int = 1
) -> list[bytes]:
    """Encoded PULL_ITEM bodies: ``real`` items (type, surb id, data) then dummies."""
    out = []
    for index in range(batch):
        if index < len(real):
            kind, surb_id, data = real[index]
            item = PullItem(seq, index, batch, kind, first_id + index, surb_id, data)
        else:
            item = PullItem(seq, index, batch, ItemType.DUMMY, 0, bytes(SURB_ID_LEN), b"")
        out.append(item.encode())
    return out


# -- the in-memory network ------------------------------------------------------------------------


@dataclass(eq=False)
class ClientHandle:
    name: str
    core: ClientCore
    provider: bytes
    mailbox: bytes
    received: list[MessageReceived] = field(default_factory=list)
    delivered: list[MessageDelivered] = field(default_factory=list)
    undeliverable: list[MessageUndeliverable] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)


class OneEpochKey:
    """A node's mix key for the one epoch these tests run in (a node's ``KeyRing`` in short)."""

    def __init__(self, epoch: int, key: MixPrivateKey) -> None:
        self._live = [(epoch, key)]

    def live(self, now: float) -> list[tuple[int, MixPrivateKey]]:
        return self._live

    def retired(self, now: float) -> list[tuple[int, MixPrivateKey]]:
        return []


class TagSet(set[bytes]):
    """A node's replay filter: exact, as the tests' packet counts are small."""

    def check_and_add(self, tag: bytes) -> bool:
        if tag in self:
            return False
        self.add(tag)
        return True


class Network:
    """Real processors for every node; links with random latency (which reorders packets) and
    a loss probability applied to every packet on every hop. A node id in ``dead`` swallows
    everything sent to it."""

    def __init__(
        self,
        nodes: Sequence[NodeKeys],
        consensus: ConsensusDocument,
        *,
        seed: int,
        loss: float = 0.0,
        max_latency: float = 0.3,
    ) -> None:
        self.consensus = consensus
        self.params = consensus.params
        self.geometry = SphinxGeometry.from_params(self.params)
        self.sphinx = Sphinx(self.geometry)
        self.rng = random.Random(seed)
        self.seed = seed
        self.loss = loss
        self.max_latency = max_latency
        self.dead: set[bytes] = set()
        self.now = START
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.clients: list[ClientHandle] = []
        self.mailboxes: dict[bytes, list[tuple[int, ItemType, bytes, bytes]]] = defaultdict(list)
        self.owner: dict[bytes, bytes] = {}  # mailbox -> provider id
        self._item_ids = itertools.count(1)
        self.counts: Counter[str] = Counter()
        self.layers = {e.identity_key: e.layer for e in consensus.nodes}
        self.topology = Topology(self.layers, self.params.layers)
        self.tags: dict[bytes, TagSet] = defaultdict(TagSet)
        self.processors = {n.node_id: self._processor(n, consensus.epoch) for n in nodes}
        self.ack_times: list[tuple[float, float]] = []
        self.stored: list[tuple[float, bytes, ItemType, bytes, bytes]] = []
        """Everything a provider stored: (time, mailbox, type, surb id, data) — its view."""

    def _processor(self, node: NodeKeys, epoch: int) -> PacketProcessor:
        """The node's real packet processor, with this network's topology and mailboxes."""
        return PacketProcessor(
            sphinx=self.sphinx,
            keyring=OneEpochKey(epoch, node.mix_keys[epoch]),
            replay_filter=lambda _epoch: self.tags[node.node_id],
            role=node.role,
            node_id=node.node_id,
            topology=lambda _epoch: self.topology,
            max_hop_delay=self.params.max_hop_delay,
            loop_mailbox=os.urandom(16),
            hosts_mailbox=lambda mailbox: self.owner.get(mailbox) == node.node_id,
        )

    def add_client(
        self, name: str, provider: bytes, *, config: ClientConfig | None = None, seed: int = 0
    ) -> ClientHandle:
        mailbox = mailbox_address(LinkKey.generate().public)
        self.owner[mailbox] = provider
        core = ClientCore(
            self.consensus,
            provider=provider,
            mailbox=mailbox,
            rng=random.Random(seed),
            now=self.now,
            config=config,
            sphinx=self.sphinx,
        )
        handle = ClientHandle(name, core, provider, mailbox)
        self.clients.append(handle)
        return handle

    def update_consensus(self, consensus: ConsensusDocument) -> None:
        """The nodes move to a new document too (layers are re-dealt when membership changes;
        keys stay, as the tests keep the epoch)."""
        assert consensus.epoch == self.consensus.epoch
        self.consensus = consensus
        self.layers = {e.identity_key: e.layer for e in consensus.nodes}
        self.topology = Topology(self.layers, self.params.layers)
        for client in self.clients:
            client.core.update_consensus(consensus, self.now)

    # -- scheduling

    def at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._seq), fn))

    def latency(self) -> float:
        return self.rng.uniform(0.001, self.max_latency)

    def transmit(self, to: bytes, packet: bytes, when: float, sender: bytes | None) -> None:
        """A packet on a link from ``sender`` (None: a client): lost with probability
        ``loss``, else delayed randomly."""
        if self.rng.random() < self.loss:
            self.counts["lost"] += 1
            return
        self.at(when + self.latency(), lambda: self.node_receive(to, packet, sender))

    def run_until(self, end: float, stop: Callable[[], bool] | None = None) -> None:
        while True:
            t_net = self._events[0][0] if self._events else float("inf")
            t_cli, who = min(
                ((c.core.next_deadline(), c) for c in self.clients), key=lambda x: x[0]
            )
            t = min(t_net, t_cli)
            if t > end:
                self.now = end
                return
            self.now = t
            if t_net <= t_cli:
                _, _, fn = heapq.heappop(self._events)
                fn()
            else:
                self.dispatch(who, who.core.poll(t))
            if stop is not None and stop():
                return

    # -- clients

    def dispatch(self, client: ClientHandle, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendPacket):
                client.sent[action.kind.value] += 1
                assert action.first_hop == client.provider
                self.transmit(action.first_hop, action.packet, self.now, sender=None)
            elif isinstance(action, SendControl):
                self.control(client, action)
            elif isinstance(action, MessageReceived):
                client.received.append(action)
            elif isinstance(action, MessageDelivered):
                client.delivered.append(action)
            elif isinstance(action, MessageUndeliverable):
                client.undeliverable.append(action)

    def control(self, client: ClientHandle, action: SendControl) -> None:
        box = self.mailboxes[client.mailbox]
        if action.kind is ControlKind.PULL_REQUEST:
            seq = PullRequest.decode(action.body).seq
            batch = self.params.pull_batch
            real = box[:batch]
            items = []
            for index in range(batch):
                if index < len(real):
                    item_id, kind, surb_id, data = real[index]
                    items.append(PullItem(seq, index, batch, kind, item_id, surb_id, data))
                else:
                    items.append(
                        PullItem(seq, index, batch, ItemType.DUMMY, 0, bytes(SURB_ID_LEN), b"")
                    )
            self.rng.shuffle(items)  # the core must not depend on the order within a batch
            when = self.now + self.latency()
            for item in items:
                body = item.encode()
                self.at(
                    when,
                    lambda b=body: self.dispatch(
                        client, client.core.receive_control(ControlKind.PULL_ITEM, b, self.now)
                    ),
                )
        elif action.kind is ControlKind.PULL_ACK:
            ack = PullAck.decode(action.body)
            gone = set(ack.item_ids)
            self.mailboxes[client.mailbox] = [i for i in box if i[0] not in gone]

    # -- nodes

    def node_receive(self, node_id: bytes, packet: bytes, sender: bytes | None) -> None:
        """What a node does: the real processor (``mixcore.hop``) decides, this network acts
        on its event as ``mixnode/runtime.py`` does (hold and forward, store, acknowledge).
        ``sender`` is the node whose link it came on, or None for a client's link."""
        if node_id in self.dead:
            self.counts["swallowed_by_dead_node"] += 1
            return
        arrival = Arrival.CLIENT if sender is None else Arrival.NETWORK
        event = self.processors[node_id].receive(
            packet, self.now, arrival=arrival, previous_node=sender
        )
        if isinstance(event, Forward):
            self.at(
                event.due,
                lambda: self.transmit(event.next_node, event.packet, self.now, sender=node_id),
            )
        elif isinstance(event, StoreMessage):
            payload = MailboxPayload.decode(event.payload, self.geometry)
            self.mailboxes[event.mailbox].append(
                (next(self._item_ids), ItemType.MESSAGE, bytes(SURB_ID_LEN), payload.data)
            )
            self.stored.append(
                (self.now, event.mailbox, ItemType.MESSAGE, bytes(SURB_ID_LEN), payload.data)
            )
            self.counts["stored"] += 1
            # stored durably: acknowledge through the SURB (sent on to its first hop)
            self.acknowledge(node_id, payload)
        elif isinstance(event, StoreReply):
            self.mailboxes[event.mailbox].append(
                (next(self._item_ids), ItemType.REPLY, event.surb_id, event.body)
            )
            self.stored.append(
                (self.now, event.mailbox, ItemType.REPLY, event.surb_id, event.body)
            )
        elif isinstance(event, AckDecoy):  # a payload-stream decoy: ACK it, store nothing
            self.counts["drop_cover_arrived"] += 1
            self.counts["decoys_acked"] += 1
            self.acknowledge(node_id, MailboxPayload.decode(event.payload, self.geometry))
        elif isinstance(event, Dropped) and event.reason is DropReason.COVER:
            self.counts["drop_cover_arrived"] += 1
        elif isinstance(event, Dropped):
            self.counts[f"node_drop_{event.reason.value}"] += 1
        else:
            assert isinstance(event, LoopReturned)  # nodes here send no loops of their own
            self.counts["node_loop_returned"] += 1

    def acknowledge(self, exit_id: bytes, payload: MailboxPayload) -> None:
        """The exit's SURB-ACK (``mixcore.hop.surb_ack``) after an exponential hold drawn like
        a hop's delay (as ``mixnode/runtime.py``), recorded as (arrival, departure) for the
        timing tests."""
        params = self.params
        ack = surb_ack(
            self.sphinx,
            payload.surb,
            self.now,
            lambda: truncated_exponential(self.rng, params.mean_hop_delay, params.max_hop_delay),
        )
        self.ack_times.append((self.now, ack.due))
        self.at(ack.due, lambda: self.transmit(ack.next_node, ack.packet, self.now, exit_id))


# -- fixtures handing the helpers to test modules (importlib mode: no imports from conftest) ----


@dataclass(frozen=True)
class Kit:
    """Everything a test module needs from here, in one fixture."""

    nodes: list[NodeKeys]
    consensus: ConsensusDocument
    start: float
    fake_sphinx: Callable[[], FakeSphinx]
    network: Callable[..., Network]
    make_consensus: Callable[..., ConsensusDocument]
    open_pull: Callable[[ClientCore, float], tuple[int, float]]
    batch_items: Callable[..., list[bytes]]


@pytest.fixture(scope="session")
def kit() -> Kit:
    return Kit(
        nodes=NODES,
        consensus=CONSENSUS,
        start=START,
        fake_sphinx=lambda: FakeSphinx(SphinxGeometry.from_params(PARAMS)),
        network=lambda consensus=CONSENSUS, **kw: Network(NODES, consensus, **kw),
        make_consensus=make_consensus,
        open_pull=open_pull,
        batch_items=batch_items,
    )
