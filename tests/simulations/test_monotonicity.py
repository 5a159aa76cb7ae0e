"""Entropy rises with delay, rate and cover traffic, and falls with corruption."""

from __future__ import annotations

from simulations.config import SimConfig
from simulations.scenarios import measure_network, single_mix


def msg_entropy(cfg: SimConfig) -> float:
    return float(measure_network(cfg, eps=False, timing=False).data["message_entropy_bits"]["mean"])


def sender_entropy(cfg: SimConfig) -> float:
    return float(measure_network(cfg, eps=False, timing=False).data["sender_entropy_bits"]["mean"])


def test_single_mix_entropy_rises_with_delay_and_rate() -> None:
    base = SimConfig(clients=10, client_rate=2.0, loop_rate=0.0, drop_rate=0.0,
                     mean_hop_delay=0.2, link_latency=0.0, duration=20.0, warmup=2.0, targets=60)
    by_delay = [single_mix(base.replace(mean_hop_delay=d)).data["message_entropy_bits"]["mean"]
                for d in (0.05, 0.2, 0.8)]
    by_rate = [single_mix(base.replace(client_rate=r)).data["message_entropy_bits"]["mean"]
               for r in (0.5, 2.0, 8.0)]
    # Each step multiplies rate x delay by 4: +2 bits by the closed form; ask for +1.
    assert by_delay[1] > by_delay[0] + 1.0 and by_delay[2] > by_delay[1] + 1.0, by_delay
    assert by_rate[1] > by_rate[0] + 1.0 and by_rate[2] > by_rate[1] + 1.0, by_rate


def test_network_entropy_rises_with_cover(small: SimConfig) -> None:
    bare = small.replace(loop_rate=0.0, drop_rate=0.0)
    covered = small.replace(loop_rate=2.0, drop_rate=2.0)
    assert msg_entropy(covered) > msg_entropy(bare) + 0.5
    assert sender_entropy(covered) > sender_entropy(bare)


def test_network_entropy_rises_with_rate(small: SimConfig) -> None:
    assert msg_entropy(small.replace(client_rate=4.0)) > msg_entropy(small) + 0.5


def test_network_entropy_rises_with_delay(small: SimConfig) -> None:
    assert msg_entropy(small.replace(mean_hop_delay=0.4)) > msg_entropy(small) + 0.5


def test_entropy_falls_with_corruption(small: SimConfig) -> None:
    values = [msg_entropy(small.replace(corrupt_fraction=f)) for f in (0.0, 0.5, 1.0)]
    assert values[0] > values[1] > values[2], values
    senders = [sender_entropy(small.replace(corrupt_fraction=f)) for f in (0.0, 1.0)]
    assert senders[0] > senders[1], senders
