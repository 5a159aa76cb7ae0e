"""Shared fixtures: a small signed network (keys, descriptors, consensus) built in memory."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from mixcore.consensus import ConsensusDocument, build_consensus
from mixcore.descriptor import NodeDescriptor, make_signed_descriptor
from mixcore.keys import IdentityKey, LinkKey
from mixcore.params import NetworkParams
from mixcore.sphinx import MixPrivateKey
from mixcore.topology import NodeRole

# Test modules share tests/helpers.py (``from helpers import wait_for``); importlib mode does not
# put this folder on the path by itself.
sys.path.insert(0, str(Path(__file__).parent))

# Hypothesis measures wall time per example: on a loaded CI machine its deadline and its
# too-slow health check fail tests whose logic is fine. Examples stay bounded by max_examples.
settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")


@dataclass
class KitNode:
    name: str
    role: NodeRole
    identity: IdentityKey
    link: LinkKey
    port: int
    mix_keys: dict[int, MixPrivateKey] = field(default_factory=dict)

    @property
    def node_id(self) -> bytes:
        return self.identity.public

    def signed_descriptor(self, epoch: int) -> bytes:
        keys = tuple(
            (e, self.mix_keys.setdefault(e, MixPrivateKey.generate()).public)
            for e in (epoch, epoch + 1)
        )
        desc = NodeDescriptor(
            identity_key=self.identity.public,
            link_key=self.link.public,
            role=self.role,
            layer=0,
            host="127.0.0.1",
            port=self.port,
            epoch=epoch,
            mix_keys=keys,
            name=self.name,
        )
        return make_signed_descriptor(desc, self.identity).wire


@dataclass
class NetworkKit:
    params: NetworkParams
    nodes: list[KitNode]

    def by_name(self, name: str) -> KitNode:
        return next(n for n in self.nodes if n.name == name)

    def by_id(self, node_id: bytes) -> KitNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def document(self, epoch: int) -> ConsensusDocument:
        descriptors = [n.signed_descriptor(epoch) for n in self.nodes]
        return build_consensus(epoch, self.params, descriptors)


@pytest.fixture
def make_network() -> Callable[..., NetworkKit]:
    def make(
        *, mixes: int = 3, providers: int = 2, params: NetworkParams | None = None
    ) -> NetworkKit:
        params = params or NetworkParams(epoch_length=1000.0, genesis_time=0.0)
        nodes = [
            KitNode(f"mix{i}", NodeRole.MIX, IdentityKey.generate(), LinkKey.generate(), 20000 + i)
            for i in range(mixes)
        ] + [
            KitNode(
                f"provider{i}", NodeRole.PROVIDER, IdentityKey.generate(), LinkKey.generate(),
                21000 + i,
            )
            for i in range(providers)
        ]
        return NetworkKit(params, nodes)

    return make
