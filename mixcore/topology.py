"""Who is where in a stratified network: node roles, layers and the one order packets follow.

Loopix arranges mixes in layers and every packet (real, drop, loop, SURB-ACK) goes provider ->
layer 1 -> layer 2 -> ... -> layer L -> provider. This module is the only place that order is
written down: a node checks a packet's next hop with :func:`expected_next_layer`, a client
builds its routes over :func:`mix_layers`, and a node's own loops visit :func:`cycle_from`. If
each computed it separately, a change to one would make the others drop honest packets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

#: The layer number of every provider (mixes are numbered 1 .. L).
PROVIDER_LAYER = 0


class NodeRole(StrEnum):
    """What a node does: relay between layers (a mix) or serve clients and mailboxes (a
    provider). The values are the words operators write in config files and on the command
    line; the descriptor's wire format gives each role its own integer code."""

    MIX = "mix"
    PROVIDER = "provider"


def expected_next_layer(layer: int, num_layers: int) -> int:
    """The layer a packet must go to from ``layer``: provider -> 1 -> ... -> L -> provider."""
    if layer == PROVIDER_LAYER:
        return 1
    return layer + 1 if layer < num_layers else PROVIDER_LAYER


def cycle_from(layer: int, num_layers: int) -> list[int]:
    """The layers a packet visits after ``layer`` until it would reach ``layer`` again, in
    stratified order: a provider's are ``1 .. L``, a mix at ``l`` has ``l+1 .. L``, the
    provider layer, then ``1 .. l-1``."""
    if not 0 <= layer <= num_layers or num_layers < 1:
        raise ValueError(f"layer {layer} is not in a network of {num_layers} mix layers")
    out: list[int] = []
    nxt = expected_next_layer(layer, num_layers)
    while nxt != layer:
        out.append(nxt)
        nxt = expected_next_layer(nxt, num_layers)
    return out


def mix_layers(num_layers: int) -> list[int]:
    """The mix layers a route crosses between its two providers, in order."""
    return cycle_from(PROVIDER_LAYER, num_layers)


@dataclass(frozen=True, slots=True)
class Topology:
    """Who is where in one epoch, from its consensus: node id -> layer (0 for providers).

    Layers are reassigned every epoch, so a packet is checked against the topology of the epoch
    whose key opened it, not today's: packets in flight across a boundary stay valid.
    """

    layers: Mapping[bytes, int]
    num_layers: int

    def expected_next_layer(self, my_layer: int) -> int:
        """Stratified order: provider -> 1 -> 2 -> ... -> L -> provider."""
        return expected_next_layer(my_layer, self.num_layers)

    def members(self, layer: int) -> list[bytes]:
        """Node ids in ``layer``, in the document's order."""
        return [node for node, at in self.layers.items() if at == layer]
