"""Attack sanity: timing correlation, statistical disclosure, (n-1) with loop detection, epsilon."""

from __future__ import annotations

import numpy as np

from simulations.attacks.n_minus_one import alarm_window, run_n_minus_one
from simulations.attacks.sda import run_sda
from simulations.attacks.timing import timing_success
from simulations.config import SimConfig
from simulations.network import pick_targets, simulate_network
from simulations.scenarios import measure_network


def timing(cfg: SimConfig) -> float:
    rng = np.random.default_rng(cfg.seed)
    run = simulate_network(cfg, rng)
    return timing_success(run, pick_targets(run, 200, rng))


def test_timing_identifies_senders_without_delay_or_cover() -> None:
    cfg = SimConfig(clients=20, loop_rate=0.0, drop_rate=0.0, mean_hop_delay=0.0,
                    duration=20.0, warmup=1.0)
    assert timing(cfg) > 0.95


def test_timing_near_chance_with_default_parameters() -> None:
    cfg = SimConfig(clients=20, duration=20.0, warmup=2.0)
    success = timing(cfg)
    chance = 1 / cfg.clients
    assert success < 4 * chance, success


def test_global_adversary_names_senders_without_delay() -> None:
    cfg = SimConfig(clients=10, loop_rate=0.0, drop_rate=0.0, mean_hop_delay=0.0,
                    duration=10.0, warmup=1.0, targets=20)
    data = measure_network(cfg, eps=False, timing=False).data
    assert data["adversary_top1_sender"] == 1.0
    assert data["message_entropy_bits"]["max"] == 0.0


def test_sda_needs_more_rounds_with_cover() -> None:
    cfg = SimConfig(clients=30, client_rate=1.0, loop_rate=2.0, drop_rate=2.0, rounds=4000,
                    contacts=3)
    bare = cfg.replace(loop_rate=0.0, drop_rate=0.0)
    with_cover = [run_sda(cfg, np.random.default_rng(s)).rounds_to_identify for s in range(8)]
    without = [run_sda(bare, np.random.default_rng(s)).rounds_to_identify for s in range(8)]
    assert np.all(np.isfinite(without))
    assert np.median(with_cover) > 1.5 * np.median(without), (with_cover, without)


def test_sda_eventually_identifies_contacts() -> None:
    cfg = SimConfig(clients=20, client_rate=1.0, loop_rate=0.0, drop_rate=0.0, rounds=3000)
    res = run_sda(cfg, np.random.default_rng(1))
    assert res.success[-1] == 1.0
    assert res.success[0] < 1.0


def test_n_minus_one_detection_rises_with_mix_loops() -> None:
    cfg = SimConfig(clients=20, width=3, mean_hop_delay=0.2)
    rates = (0.5, 2.0, 8.0)
    results = [run_n_minus_one(cfg.replace(mix_loop_rate=r), np.random.default_rng(2))
               for r in rates]
    detected = [r.detected for r in results]
    undetected = [r.success_undetected for r in results]
    assert detected[0] < detected[1] < detected[2], detected
    assert undetected[0] > undetected[2], undetected
    assert alarm_window(0.0) == float("inf")


def test_n_minus_one_succeeds_without_mix_loops() -> None:
    cfg = SimConfig(clients=20, width=3, mean_hop_delay=0.2, mix_loop_rate=0.0)
    res = run_n_minus_one(cfg, np.random.default_rng(3))
    assert res.detected == 0.0
    assert res.success > 0.95
    assert abs(res.flush_probability - 0.99) < 1e-3


def test_epsilon_falls_with_layers() -> None:
    base = SimConfig(clients=10, client_rate=1.0, width=2, providers=1, duration=20.0,
                     warmup=2.0, targets=60, seed=4)
    eps = [measure_network(base.replace(layers=n), entropy=False, timing=False)
           .data["epsilon"]["mean"] for n in (1, 3)]
    assert eps[0] > eps[1], eps
