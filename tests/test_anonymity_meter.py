"""The anonymity meter end to end: signed figures in descriptors, per-epoch accumulation on the
node, the consensus that carries them, and the client's closed form against the simulator.

Lives at the top of ``tests/`` because it checks mixcore, mixnode and the simulations together.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from client.messenger.commands import _anonymity_line
from mixcore.anonymity import LayerFigures, estimate, gamma_entropy_bits, meter_for
from mixcore.consensus import build_consensus
from mixcore.descriptor import (
    NodeDescriptor,
    TrafficFigures,
    make_signed_descriptor,
    parse_signed_descriptor,
)
from mixcore.encoding import pack, unpack_canonical
from mixcore.errors import DescriptorError, SignatureError
from mixcore.keys import IdentityKey, LinkKey
from mixcore.params import NetworkParams
from mixcore.sphinx import MixPrivateKey
from mixcore.topology import NodeRole
from mixnode.figures import EpochFigures
from simulations.config import SimConfig
from simulations.network import simulate_network
from simulations.scenarios import measure_network

EPOCH = 40
PARAMS = NetworkParams(layers=2, epoch_length=10.0, mean_hop_delay=0.2)
#: The meter's promise: within this of the simulator's adversary on the same parameters.
BOUND_BITS = 0.5


def mix_key() -> bytes:
    """A mix key of the network's Sphinx suite."""
    return MixPrivateKey.generate(PARAMS.sphinx_suite).public


def descriptor(identity: IdentityKey, *, role: NodeRole = NodeRole.MIX, index: int = 0,
               traffic: TrafficFigures | None = None) -> NodeDescriptor:
    return NodeDescriptor(
        identity_key=identity.public, link_key=LinkKey.generate().public, role=role,
        layer=0, host=f"10.0.0.{index + 1}", port=4000 + index, epoch=EPOCH,
        mix_keys=((EPOCH, mix_key()), (EPOCH + 1, mix_key())), name=f"n{index}",
        traffic=traffic)


# -- the figures in a signed descriptor ---------------------------------------------------------

def test_figures_are_signed_with_the_descriptor() -> None:
    ident = IdentityKey.generate()
    fig = TrafficFigures.of(EPOCH - 1, 123.4567, 24.69, 0.987)
    signed = make_signed_descriptor(descriptor(ident, traffic=fig), ident)
    back = parse_signed_descriptor(signed.wire)
    assert back.descriptor.traffic == fig
    assert fig.packets_in_per_s == 123.457 and fig.mean_pool == 24.69
    assert fig.loop_return_share == 0.987
    # A relay that inflates a node's figures breaks its signature.
    body, sig = unpack_canonical(signed.wire)
    items = unpack_canonical(body)
    items[10][1] *= 10
    with pytest.raises(SignatureError):
        parse_signed_descriptor(pack([pack(items), sig]))


def test_descriptors_without_figures_keep_their_bytes() -> None:
    ident = IdentityKey.generate()
    plain = descriptor(ident)
    assert len(unpack_canonical(plain.encode())) == 10
    assert NodeDescriptor.decode(plain.encode()) == plain


@pytest.mark.parametrize("wire", [
    [EPOCH, 1, 1],                 # too short
    [EPOCH, 1, 1, 2000],           # share above 1
    [EPOCH, -5, 1, 500],           # negative rate
    [EPOCH, 1.5, 1, 500],          # not an integer
    [EPOCH + 3, 1, 1, 500],        # figures of a later epoch than the descriptor
    "junk",
])
def test_bad_figures_are_refused(wire: object) -> None:
    items = unpack_canonical(descriptor(IdentityKey.generate()).encode())
    with pytest.raises(DescriptorError):
        NodeDescriptor.from_wire([*items, wire])


# -- the node's per-epoch figures ------------------------------------------------------------

def test_node_figures_freeze_at_each_epoch() -> None:
    figures = EpochFigures(lambda t: int(t // 10))
    for t in range(0, 21):
        # 50 packets/s; pool 4 for the first half of each epoch, 8 for the second; 1 loop lost
        # of every 20 settled.
        pool = 4 if t % 10 < 5 else 8
        figures.observe(float(t), packets_in=50 * t, pool_size=pool, loops_returned=19 * t,
                        loops_lost=t)
        if t < 10:
            assert figures.for_descriptor(1) is None
    frozen = figures.for_descriptor(2)
    assert frozen is not None and frozen.measured_epoch == 1
    assert frozen.packets_in_per_s == 50.0
    assert frozen.mean_pool == 6.0
    assert frozen.loop_return_share == 0.95
    assert figures.for_descriptor(1) is None  # never figures of the descriptor's own epoch
    # Fixed for the epoch: every upload of a descriptor carries the same figures.
    assert figures.for_descriptor(2) is figures.for_descriptor(2)


# -- through the consensus -------------------------------------------------------------------

def consensus_with(figures: list[TrafficFigures | None]) -> object:
    nodes = []
    for i, fig in enumerate(figures):
        ident = IdentityKey.generate()
        nodes.append(make_signed_descriptor(descriptor(ident, index=i, traffic=fig), ident))
    for j in range(2):
        ident = IdentityKey.generate()
        nodes.append(make_signed_descriptor(
            descriptor(ident, role=NodeRole.PROVIDER, index=10 + j), ident))
    return nodes


def test_consensus_carries_the_figures_deterministically() -> None:
    figs = [TrafficFigures.of(EPOCH - 1, 40.0 + i, 8.0 + i, 1.0) for i in range(4)]
    nodes = consensus_with(figs)
    a = build_consensus(EPOCH, PARAMS, nodes)
    b = build_consensus(EPOCH, PARAMS, list(reversed(nodes)))
    assert a.encode() == b.encode()  # every authority builds the same bytes
    meter = meter_for(a)
    assert meter is not None and meter.complete
    assert [lay["mixes"] for lay in meter.layers] == [2, 2]
    assert meter.warnings == []
    assert "bits sender" in _anonymity_line(meter.to_dict())


def test_the_clients_estimate_counts_clients_not_acks_or_node_loops() -> None:
    """A real testnet of 4 clients showed ~7-9: the first layer's input counted whole. Four
    clients' streams and SURB-ACKs plus the nodes' loops, split over layer 1's two mixes, must
    read as four clients."""
    params = PARAMS.replace(mix_loop_rate=1.0)
    per_client = 2 * (params.payload_rate + params.loop_rate) + params.drop_rate
    loops = params.mix_loop_rate * (2 + 2)  # layer 2's two mixes and the two providers
    into_layer_1 = (4 * per_client + loops) / 2
    figs = [TrafficFigures.of(EPOCH - 1, into_layer_1, 8.0, 1.0) for _ in range(4)]
    doc = build_consensus(EPOCH, params, consensus_with(figs))
    meter = meter_for(doc)
    assert meter is not None
    assert meter.clients_estimate == pytest.approx(4.0, rel=0.05)
    assert meter.sender_entropy_bits <= 2.0 + 1e-9  # four clients hide a sender in at most 2 bits


def test_meter_waits_for_figures_and_flags_missing_loops() -> None:
    assert meter_for(build_consensus(EPOCH, PARAMS, consensus_with([None] * 4))) is None
    # One mix of layer 2 got back a fifth of its loops (an (n-1) attack blocks them).
    layers = [LayerFigures(1, (40.0, 40.0), (8.0, 8.0), (1.0, 1.0)),
              LayerFigures(2, (40.0, 40.0), (8.0, 8.0), (1.0, 0.2))]
    meter = estimate(layers, PARAMS.payload_rate + PARAMS.loop_rate + PARAMS.drop_rate)
    assert meter is not None and meter.suspect_layers == [2]
    assert any("active attack" in w and "layer 2" in w for w in meter.warnings)
    quiet = estimate([LayerFigures(1, (3.0,), (0.6,)), LayerFigures(2, (3.0,), (0.6,))], 3.0)
    assert quiet is not None and any("low anonymity" in w for w in quiet.warnings)
    assert "WARNING: low anonymity" in _anonymity_line(quiet.to_dict())


# -- the closed form against the simulator -------------------------------------------------------

def test_one_mix_is_danezis() -> None:
    meter = estimate([LayerFigures(1, (100.0,), (50.0,))], 1.0)
    assert meter is not None
    assert meter.message_entropy_bits == pytest.approx(math.log2(math.e * 100 * 0.5), abs=1e-9)
    assert gamma_entropy_bits(1, 0.5) == pytest.approx(math.log2(math.e * 0.5))


def measured_layers(cfg: SimConfig) -> list[LayerFigures]:
    """What the simulated mixes would publish: packets in per second and mean pool size."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(cfg.runs)[0])
    obs = simulate_network(cfg, rng).obs
    span = cfg.warmup + cfg.duration
    layers = []
    for layer in range(1, cfg.layers + 1):
        rates, pools = [], []
        for mix in np.flatnonzero(obs.node_layer == layer):
            into = np.flatnonzero((obs.dst == mix) & (obs.t_arr < span) & (obs.next_row >= 0))
            rates.append(into.size / span)
            pools.append(float((obs.t_dep[obs.next_row[into]] - obs.t_arr[into]).sum()) / span)
        layers.append(LayerFigures(layer, tuple(rates), tuple(pools)))
    return layers


@pytest.mark.parametrize("changes", [
    {},                                    # the deployed defaults: 20 clients, 3 x 3
    {"clients": 50},
    {"clients": 30, "client_rate": 10.0},
    {"width": 1, "clients": 10},
])
def test_meter_matches_the_simulated_adversary(changes: dict) -> None:
    cfg = SimConfig(provider_delay=0.0, mix_loop_rate=0.0, targets=60, duration=20.0,
                    **changes)
    per_client = cfg.client_rate + cfg.loop_rate + cfg.drop_rate
    meter = estimate(measured_layers(cfg), per_client)
    sim = measure_network(cfg, eps=False, timing=False).data
    assert meter is not None
    assert meter.clients_estimate == pytest.approx(cfg.clients, rel=0.1)
    assert abs(meter.message_entropy_bits - sim["message_entropy_bits"]["mean"]) < BOUND_BITS
    assert abs(meter.sender_entropy_bits - sim["sender_entropy_bits"]["mean"]) < BOUND_BITS


def test_replaced_figures_change_the_meter() -> None:
    base = [LayerFigures(1, (40.0,), (8.0,)), LayerFigures(2, (40.0,), (8.0,))]
    busier = [replace(lay, rates=(400.0,), pools=(80.0,)) for lay in base]
    a, b = estimate(base, 3.0), estimate(busier, 3.0)
    assert a is not None and b is not None
    assert b.message_entropy_bits > a.message_entropy_bits + 3
    assert b.sender_entropy_bits > a.sender_entropy_bits
