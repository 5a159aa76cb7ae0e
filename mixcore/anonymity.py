"""The anonymity meter's closed form: expected entropy from a layer's traffic figures.

Nodes publish, per epoch, packets in per second, mean pool size and the share of their own loops
that came back (``mixcore.descriptor.TrafficFigures``); the consensus carries them. From those a
client estimates what a global passive adversary is left with for one of its messages, without
simulating anything:

* per layer ``l``: the layer's input rate ``Lambda_l`` (all its mixes) and mean holding time
  ``d_l = sum(pool) / sum(rate)`` (Little's law, so the delay actually applied counts);
* a message's delivery time after injection is a sum of one Exp(d_l) per layer, about
  Gamma(L, mean d_l), whose differential entropy is
  ``h = L + ln Gamma(L) + (1 - L) digamma(L) + ln d`` nats;
* **message entropy** ~ ``log2(Lambda) + h / ln 2``: the adversary weighs each delivered packet
  by that density (Danezis 2004; one mix gives ``log2(e lambda d)``), over the exit layer's
  whole output (``Lambda = Lambda_L``) once a path branches, over one mix's for a single layer;
* **sender entropy**: the same count backwards gives ``M = 2^(log2(Lambda_1) + h / ln 2)``
  equally likely injections, spread over ``N`` clients (estimated as ``Lambda_1`` over the
  per-client rate the consensus fixes): ``log2 N - log2(1 + N / M)``, which is ``log2 N`` when
  every client is likely and ``log2 M`` when few packets are.

Assumptions (docs/simulations.md, "The anonymity meter"): Poisson traffic in steady state over
the epoch, every packet a mix receives is indistinguishable cover (mix loops included), no
corrupt mix, providers that hold for 0 and honest. Validated against the simulator's adversary
on the same parameters (``tests/test_anonymity_meter.py``). Mix loops that go missing above
the expected loss are reported as a possible (n-1) attack on their layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Below these the client warns that its messages are not well hidden (bits).
LOW_SENDER_ENTROPY_BITS = 3.0
LOW_MESSAGE_ENTROPY_BITS = 4.0
#: Share of a node's loops that may go missing in an epoch before it counts as suspect: lost
#: packets on a healthy network are rare (a restart, a dropped link), an (n-1) attack drops
#: them all.
LOOP_LOSS_ALLOWED = 0.1


@dataclass(frozen=True, slots=True)
class LayerFigures:
    """One layer's published traffic: its mixes' input rates, pool sizes, loop returns."""

    layer: int
    rates: tuple[float, ...]
    pools: tuple[float, ...]
    loop_returns: tuple[float | None, ...] = ()

    @property
    def rate(self) -> float:
        return float(sum(self.rates))

    @property
    def holding(self) -> float | None:
        """Mean seconds a packet spends in the layer's pools (Little's law)."""
        return sum(self.pools) / self.rate if self.rate > 0 else None


@dataclass(frozen=True, slots=True)
class Meter:
    """What the client shows: expected entropies, and warnings."""

    message_entropy_bits: float
    sender_entropy_bits: float
    clients_estimate: float
    layers: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    suspect_layers: list[int] = field(default_factory=list)
    complete: bool = True
    """False when some mix published no figures (its layer is counted from the others)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_entropy_bits": round(self.message_entropy_bits, 2),
            "sender_entropy_bits": round(self.sender_entropy_bits, 2),
            "clients_estimate": round(self.clients_estimate, 1),
            "layers": self.layers,
            "warnings": list(self.warnings),
            "suspect_layers": list(self.suspect_layers),
            "complete": self.complete,
        }

    def headline(self) -> str:
        """One line for a status screen."""
        text = (f"anonymity ~{self.sender_entropy_bits:.1f} bits sender, "
                f"~{self.message_entropy_bits:.1f} bits message")
        if self.warnings:
            text += " - " + "; ".join(self.warnings)
        return text


def gamma_entropy_bits(shape: int, scale: float) -> float:
    """Differential entropy (bits) of Gamma(shape, scale)."""
    k = float(shape)
    nats = k + math.lgamma(k) + (1.0 - k) * _digamma(k) + math.log(scale)
    return nats / math.log(2.0)


def _digamma(x: float) -> float:
    result = 0.0
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    return result + math.log(x) - 0.5 / x - f * (1 / 12 - f * (1 / 120 - f / 252))


def estimate(layers: Sequence[LayerFigures], per_client_rate: float, *,
             complete: bool = True, background_rate: float = 0.0) -> Meter | None:
    """The meter for a network of ``layers`` (in path order); None without usable figures.

    ``per_client_rate`` is what one client puts into the first layer per second and
    ``background_rate`` what enters it from elsewhere (nodes' own loops): the clients are
    estimated from the first layer's input less the background."""
    if not layers or any(lay.rate <= 0 or lay.holding is None for lay in layers):
        return None
    holdings = [lay.holding for lay in layers]
    assert all(h is not None for h in holdings)
    d = sum(h for h in holdings if h is not None) / len(holdings)
    if d <= 0:
        return Meter(0.0, 0.0, 0.0, [], ["no mixing delay"], [], complete)
    h_time = gamma_entropy_bits(len(layers), d)
    first, last = layers[0], layers[-1]
    exit_rate = last.rate if len(layers) > 1 else last.rate / max(len(last.rates), 1)
    h_msg = max(math.log2(exit_rate) + h_time, 0.0)
    entry_rate = first.rate if len(layers) > 1 else first.rate / max(len(first.rates), 1)
    m_eff = 2.0 ** (math.log2(entry_rate) + h_time)
    from_clients = max(first.rate - background_rate, 0.0)
    clients = max(from_clients / per_client_rate, 1.0) if per_client_rate > 0 else 1.0
    h_snd = max(math.log2(clients) - math.log2(1.0 + clients / m_eff), 0.0)
    warnings: list[str] = []
    suspects: list[int] = []
    for lay in layers:
        lost = [1.0 - r for r in lay.loop_returns if r is not None]
        if lost and max(lost) > LOOP_LOSS_ALLOWED:
            suspects.append(lay.layer)
    if suspects:
        warnings.append("possible active attack: mix loops missing in layer "
                        + ", ".join(str(s) for s in suspects))
    if h_snd < LOW_SENDER_ENTROPY_BITS or h_msg < LOW_MESSAGE_ENTROPY_BITS:
        warnings.append("low anonymity: few packets are mixing now")
    report = [{"layer": lay.layer, "mixes": len(lay.rates), "packets_in_per_s": round(lay.rate, 2),
               "mean_holding_s": round(lay.holding or 0.0, 4)} for lay in layers]
    return Meter(h_msg, h_snd, clients, report, warnings, suspects, complete)


def layers_from(mixes: Iterable[tuple[int, Any]]) -> tuple[list[LayerFigures], bool]:
    """Group (layer, TrafficFigures or None) pairs into layers; whether all mixes had figures."""
    by_layer: dict[int, list[Any]] = {}
    complete = True
    for layer, fig in mixes:
        if fig is None:
            complete = False
            continue
        by_layer.setdefault(layer, []).append(fig)
    out = [LayerFigures(layer, tuple(f.packets_in_per_s for f in figs),
                        tuple(f.mean_pool for f in figs),
                        tuple(f.loop_return_share for f in figs))
           for layer, figs in sorted(by_layer.items())]
    return out, complete


#: Figures older than this many epochs before the document's are not used.
MAX_FIGURE_AGE_EPOCHS = 2


def meter_for(document: Any) -> Meter | None:
    """The meter for a consensus document (``mixcore.consensus.ConsensusDocument``): its mixes'
    published figures, its parameters' per-client rate. None until enough mixes publish."""
    params = document.params
    pairs: list[tuple[int, Any]] = []
    for layer in range(1, params.layers + 1):
        for desc in document.mixes_in_layer(layer):
            fig = desc.traffic
            if fig is not None and fig.measured_epoch < document.epoch - MAX_FIGURE_AGE_EPOCHS:
                fig = None
            pairs.append((layer, fig))
    layers, complete = layers_from(pairs)
    if len(layers) != params.layers:
        return None
    return estimate(layers, client_input_rate(params), complete=complete,
                    background_rate=node_loop_input_rate(document))


def client_input_rate(params: Any) -> float:
    """Packets per second one client puts into the first mix layer: its three streams, and the
    SURB-ACK that every payload slot and every loop brings back through the layers (the exit's
    ACK enters layer 1 too)."""
    return float(2 * (params.payload_rate + params.loop_rate) + params.drop_rate)


def node_loop_input_rate(document: Any) -> float:
    """The nodes' own loops entering the first layer: every node's but the first layer's
    mixes' (their loops go through every *other* layer), at ``mix_loop_rate`` each."""
    outside = len(document.nodes) - len(document.mixes_in_layer(1))
    return float(document.params.mix_loop_rate) * outside
