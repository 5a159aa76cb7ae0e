"""One epoch's consensus seen from a node: who is in which layer, how to reach them, their keys.

Built once per document so the per-packet path does dictionary lookups only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mixcore.consensus import ConsensusDocument
from mixcore.descriptor import NodeDescriptor
from mixcore.sphinx import PathHop
from mixcore.topology import Topology, cycle_from


@dataclass(frozen=True, slots=True)
class Peer:
    node_id: bytes
    host: str
    port: int
    link_key: bytes
    name: str


@dataclass(frozen=True, slots=True)
class EpochView:
    epoch: int
    document: ConsensusDocument
    topology: Topology
    peers: dict[bytes, Peer]
    hops: dict[bytes, PathHop]

    @classmethod
    def from_document(cls, document: ConsensusDocument) -> EpochView:
        epoch = document.epoch
        layers: dict[bytes, int] = {}
        peers: dict[bytes, Peer] = {}
        hops: dict[bytes, PathHop] = {}
        for entry in document.nodes:
            desc: NodeDescriptor = entry.descriptor
            layers[desc.node_id] = entry.layer
            peers[desc.node_id] = Peer(desc.node_id, desc.host, desc.port, desc.link_key, desc.name)
            mix_key = desc.mix_key(epoch)
            if mix_key is not None:
                hops[desc.node_id] = PathHop(desc.node_id, mix_key)
        topology = Topology(layers, document.params.layers)
        return cls(epoch, document, topology, peers, hops)

    def layer_members(self, layer: int) -> list[bytes]:
        return self.topology.members(layer)

    def link_keys(self) -> set[bytes]:
        return {p.link_key for p in self.peers.values()}

    def loop_path(
        self, node_id: bytes, rng_choice: Callable[[list[bytes]], bytes]
    ) -> list[bytes] | None:
        """Node ids of a loop from ``node_id`` through every other layer and back to it.

        The layers in between are :func:`mixcore.topology.cycle_from` the node's own: a node
        at layer ``l`` visits ``l+1 .. L``, a provider (for mixes), ``1 .. l-1`` and ends at
        itself. ``rng_choice`` picks one member of a list (``random.Random.choice``).
        """
        layer = self.topology.layers.get(node_id)
        if layer is None:
            return None
        path: list[bytes] = []
        for hop_layer in cycle_from(layer, self.topology.num_layers):
            members = self.layer_members(hop_layer)
            if not members:
                return None
            path.append(rng_choice(members))
        path.append(node_id)
        return path
