"""Path choice from the current consensus: stratified routes with sender-chosen delays.

Every route is ``entry provider -> one mix per layer -> exit provider`` (the layers in
:func:`mixcore.topology.mix_layers`' order), each mix drawn uniformly from its layer, so every
packet (real, drop, loop, SURB-ACK) has the same shape. Delays (Loopix): a mix holds a packet
for Exp(mean ``mean_hop_delay``) seconds, chosen here by the sender and written into the routing
command; providers hold for 0. A draw above ``max_hop_delay`` (what nodes refuse) is redrawn,
i.e. the delay is Exp truncated there (``mixcore.poisson.truncated_exponential``, as nodes draw
theirs), which at the default 60 s and mean 0.2 s changes nothing measurable.

Only nodes of the current document are used. :meth:`PathSelector.mark_failed` takes a node out
of the choice until the next consensus (a link that would not open, say); if every mix of a layer
is marked failed, the whole layer is used again rather than sending nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from client.errors import NoRouteError
from mixcore.consensus import ConsensusDocument
from mixcore.descriptor import NodeDescriptor
from mixcore.poisson import truncated_exponential
from mixcore.sphinx import PathHop
from mixcore.topology import mix_layers


@dataclass(frozen=True, slots=True)
class Route:
    """A path and the delays its hops hold the packet: ``delays[i]`` is for ``hops[i]``."""

    hops: tuple[PathHop, ...]
    delays: tuple[float, ...]

    @property
    def first_hop(self) -> bytes:
        return self.hops[0].node_id

    @property
    def total_delay(self) -> float:
        """Sum of the sampled holding delays: the route's latency without link transit."""
        return sum(self.delays)


class PathSelector:
    def __init__(
        self, consensus: ConsensusDocument, rng: random.Random, *, max_hop_delay: float = 60.0
    ) -> None:
        self.rng = rng
        self.max_hop_delay = max_hop_delay
        self.fallbacks = 0
        self._failed: set[bytes] = set()
        self._suspicion: dict[bytes, int] = {}
        self.update(consensus)

    @property
    def consensus(self) -> ConsensusDocument:
        return self._consensus

    def update(self, consensus: ConsensusDocument) -> None:
        """Use a new document; failure marks are forgotten (the document is fresher news)."""
        self._consensus = consensus
        self._epoch = consensus.epoch
        self._providers = {d.node_id: self._hop(d) for d in consensus.providers()}
        self._layer_numbers = mix_layers(consensus.params.layers)
        self._layers = [
            tuple(self._hop(d) for d in consensus.mixes_in_layer(i)) for i in self._layer_numbers
        ]
        self._failed.clear()
        self._suspicion.clear()
        self._refresh()

    def suspect(self, node_ids: Iterable[bytes]) -> None:
        """An attempt through these mixes went unacknowledged: prefer others for a while.

        A retransmission then avoids the mixes of the failed attempt when the layer has others
        (a mix that died mid-epoch stays in the consensus until its descriptor expires, up to
        two epochs). Suspicion only orders choices inside a layer, never empties one, and is
        cleared by an acknowledgement through the node or by the next consensus, so an
        adversary who drops packets can push a client away from a node for at most an epoch.
        """
        for node_id in node_ids:
            self._suspicion[node_id] = self._suspicion.get(node_id, 0) + 1

    def vouch(self, node_ids: Iterable[bytes]) -> None:
        """An attempt through these mixes was acknowledged: they work."""
        for node_id in node_ids:
            self._suspicion.pop(node_id, None)

    def _least_suspect(self, choices: tuple[PathHop, ...]) -> tuple[PathHop, ...]:
        if not self._suspicion:
            return choices
        lowest = min(self._suspicion.get(h.node_id, 0) for h in choices)
        return tuple(h for h in choices if self._suspicion.get(h.node_id, 0) == lowest)

    def _refresh(self) -> None:
        """Recompute the hops paths may use (after a new document or a failure mark)."""
        self._alive = [
            tuple(h for h in hops if h.node_id not in self._failed) for hops in self._layers
        ]
        ids = sorted(self._providers)
        self._drop_targets = [i for i in ids if i not in self._failed] or ids

    def mark_failed(self, node_id: bytes) -> None:
        if self._consensus.node_by_id(node_id) is not None:
            self._failed.add(node_id)
            self._refresh()

    @property
    def failed(self) -> frozenset[bytes]:
        return frozenset(self._failed)

    def is_provider(self, node_id: bytes) -> bool:
        return node_id in self._providers

    def random_provider(self) -> bytes:
        """A provider for drop cover, avoiding failed ones when any other is left."""
        if not self._drop_targets:
            raise NoRouteError("the consensus lists no provider")
        return self._drop_targets[self.rng.randrange(len(self._drop_targets))]

    def _hop(self, desc: NodeDescriptor) -> PathHop:
        key = desc.mix_key(self._epoch)
        if key is None:  # the document's invariants exclude this; be explicit anyway
            raise NoRouteError("a node in the consensus has no key for its epoch")
        return PathHop(desc.node_id, key)

    def route(self, entry: bytes, exit_: bytes) -> Route:
        """A fresh route from provider ``entry`` to provider ``exit_``."""
        try:
            first, last = self._providers[entry], self._providers[exit_]
        except KeyError:
            raise NoRouteError("a provider of the route is not in the consensus") from None
        mean = self._consensus.params.mean_hop_delay
        hops = [first]
        delays = [0.0]
        for layer, mixes, alive in zip(
            self._layer_numbers, self._layers, self._alive, strict=True
        ):
            if not mixes:
                raise NoRouteError(f"mix layer {layer} is empty in this consensus")
            choices = alive
            if not choices:
                self.fallbacks += 1
                choices = mixes
            choices = self._least_suspect(choices)
            hops.append(choices[self.rng.randrange(len(choices))])
            delays.append(truncated_exponential(self.rng, mean, self.max_hop_delay))
        hops.append(last)
        return Route(tuple(hops), tuple(delays))
