"""The model's additions, each against a closed form or a limiting case: the payload stream,
mix loops, corrupt providers and pulls as built."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulations.config import SimConfig
from simulations.network import pick_targets, simulate_network
from simulations.observations import Kind, Role
from simulations.scenarios import measure_network

BASE = SimConfig(clients=12, client_rate=2.0, layers=3, width=2, providers=2, duration=10.0,
                 warmup=2.0, targets=20, seed=4, mix_loop_rate=0.0)


def entropies(cfg: SimConfig) -> dict:
    return measure_network(cfg, eps=False, timing=False).data


# -- payload stream ---------------------------------------------------------------------------

def test_payload_stream_is_an_mm1_queue() -> None:
    """Poisson messages into Poisson slots: M/M/1, mean wait 1/(mu - lambda)."""
    cfg = SimConfig(clients=40, client_rate=2.0, message_rate=1.2, duration=200.0, warmup=0.0,
                    mix_loop_rate=0.0, layers=1, width=1, providers=0)
    run = simulate_network(cfg, np.random.default_rng(1))
    wait = run.queue_wait[run.kind == Kind.REAL]
    assert np.all(wait >= 0)
    assert np.mean(wait) == pytest.approx(1.0 / (2.0 - 1.2), rel=0.08)
    every_slot = simulate_network(cfg.replace(message_rate=None), np.random.default_rng(1))
    real_share = (run.kind == Kind.REAL).sum() / (every_slot.kind == Kind.REAL).sum()
    assert real_share == pytest.approx(1.2 / 2.0, abs=0.05)


def test_payload_stream_changes_no_timing() -> None:
    """What a slot carries is not visible: the rows are those of the all-real model."""
    base = BASE.replace(message_rate=None)
    a = simulate_network(base, np.random.default_rng(3))
    b = simulate_network(base.replace(message_rate=0.5), np.random.default_rng(3))
    np.testing.assert_array_equal(a.send_time, b.send_time)
    assert ((a.kind == Kind.REAL) & (b.kind == Kind.DROP)).any()
    assert not ((a.kind != Kind.REAL) & (b.kind == Kind.REAL)).any()


# -- mix loops ------------------------------------------------------------------------------------

def test_no_loops_in_the_limit_of_a_zero_rate() -> None:
    """Loops draw from their own generator: at a vanishing rate the run is the loop-free one."""
    a = entropies(BASE)
    b = entropies(BASE.replace(mix_loop_rate=1e-9))
    assert a["message_entropy_bits"] == b["message_entropy_bits"]
    assert a["sender_entropy_bits"] == b["sender_entropy_bits"]


def test_loop_traffic_into_a_mix_matches_its_closed_form() -> None:
    """Per mix: its own loops return (lambda_M), loops of every other layer's mixes pass once
    ((L - 1) lambda_M), and each provider's loops cross one mix per layer (P lambda_M / W)."""
    lam, layers, width, providers = 3.0, 3, 2, 2
    cfg = BASE.replace(mix_loop_rate=lam, client_rate=0.1, loop_rate=0.0, drop_rate=0.0,
                       duration=100.0)
    run = simulate_network(cfg, np.random.default_rng(9))
    obs = run.obs
    loop_rows = np.arange(run.n_client_rows, obs.n_rows)
    mixes = np.flatnonzero(obs.node_role == Role.MIX)
    span = float(obs.t_arr[loop_rows].max() - obs.t_dep[loop_rows].min())
    expected = lam * ((layers - 1) + 1 + providers / width) * span
    counts = np.bincount(obs.dst[loop_rows], minlength=obs.n_nodes)[mixes]
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected)), (counts, expected)
    # The adversary is told each loop's first and last row, and sees relays through providers.
    assert obs.fresh[run.loop_first_row].all()
    assert obs.absorbed[run.loop_first_row + run.loop_links - 1].all()
    # Every mix loop passes one provider, which relays it; provider loops pass none.
    mix_loops = int(np.isin(obs.src[run.loop_first_row], mixes).sum())
    assert int(obs.relay.sum()) == mix_loops


def test_recognized_loops_only_dilute_a_pool() -> None:
    """One honest pool B (layers A, B, C, one mix each, A and C corrupt). Loops of A pass B
    and C reveals that they go back to A; C's own loops return to C from B. So every loop
    leaving B is recognized downstream: the target's posterior over B's departures, renormalized
    to the real ones, keeps Danezis' entropy for the real input rate alone, log2(e lambda_c d),
    and the share of mass that reaches a delivery is lambda_c / (lambda_c + 2 lambda_M)."""
    lam_c, lam_m, d = 100.0, 50.0, 0.2
    cfg = SimConfig(clients=10, client_rate=lam_c / 10, loop_rate=0.0, drop_rate=0.0, layers=3,
                    width=1, providers=0, mean_hop_delay=d, link_latency=0.0, duration=20.0,
                    warmup=3.0, targets=150, seed=2, mix_loop_rate=lam_m)
    rng = np.random.default_rng(cfg.seed)
    run = simulate_network(cfg, rng)
    first_mix = cfg.clients
    corrupt = run.obs.corrupt.copy()
    corrupt[[first_mix, first_mix + 2]] = True
    from dataclasses import replace

    from simulations.adversary import Adversary, default_horizon, evaluate_targets

    obs = replace(run.obs, corrupt=corrupt)
    chosen = pick_targets(run, cfg.targets, rng)
    res = evaluate_targets(Adversary(obs, default_horizon(d)), run.first_row[chosen],
                           run.last_row[chosen], run.sender[chosen])
    assert np.mean(res.message_entropy_bits) == pytest.approx(math.log2(math.e * lam_c * d),
                                                              abs=0.2)
    assert np.mean(res.delivered_mass) == pytest.approx(lam_c / (lam_c + 2 * lam_m), abs=0.05)


# -- corrupt providers ----------------------------------------------------------------------------

def test_honest_providers_leave_their_clients_indistinguishable() -> None:
    """All mixes corrupt, providers honest and holding for 0 (as built): the adversary knows
    the delivery exactly, hence the recipient's provider, and nothing more: log2(clients on
    it) bits, exactly."""
    cfg = BASE.replace(corrupt_fraction=1.0, provider_delay=0.0)
    data = entropies(cfg)
    per_provider = cfg.clients // cfg.providers
    assert data["message_entropy_bits"]["max"] == 0.0
    assert data["recipient_entropy_bits"]["min"] == pytest.approx(math.log2(per_provider))
    assert data["recipient_entropy_bits"]["max"] == pytest.approx(math.log2(per_provider))


def test_corrupt_providers_name_senders_and_recipients() -> None:
    cfg = BASE.replace(corrupt_fraction=1.0, corrupt_providers=BASE.providers)
    data = entropies(cfg)
    assert data["recipient_entropy_bits"]["max"] == 0.0
    assert data["sender_entropy_bits"]["max"] == 0.0
    assert data["adversary_top1_sender"] == 1.0


def test_a_corrupt_exit_provider_sees_drop_cover() -> None:
    cfg = BASE.replace(corrupt_providers=1)
    run = simulate_network(cfg, np.random.default_rng(2))
    bad = np.flatnonzero(run.obs.corrupt)
    drops = run.last_row[run.kind == Kind.DROP]
    into_bad = np.isin(run.obs.dst[drops], bad)
    assert into_bad.any()
    np.testing.assert_array_equal(run.obs.known_cover[drops], into_bad)
    honest = measure_network(cfg.replace(corrupt_providers=0), eps=False, timing=False).data
    corrupt = measure_network(cfg, eps=False, timing=False).data
    assert corrupt["recipient_entropy_bits"]["mean"] < honest["recipient_entropy_bits"]["mean"]


# -- pulls -----------------------------------------------------------------------------------------

def test_pull_wait_is_half_an_interval_at_light_load() -> None:
    cfg = BASE.replace(duration=60.0, pull_interval=1.0)
    run = simulate_network(cfg, np.random.default_rng(5))
    real = run.kind == Kind.REAL
    extra = run.latency_recipient[real] - run.latency_mailbox[real] - cfg.link_latency
    assert np.all(extra >= -1e-9) and np.all(extra <= cfg.pull_interval + 1e-9)
    assert np.mean(extra) == pytest.approx(0.5, abs=0.05)


def test_pulls_return_at_most_a_batch() -> None:
    """A mailbox filling faster than pull_batch per interval empties at exactly that rate."""
    cfg = SimConfig(clients=3, client_rate=0.2, loop_rate=4.0, drop_rate=0.0, layers=1,
                    width=1, providers=1, pull_batch=2, pull_interval=1.0, duration=60.0,
                    warmup=0.0, mix_loop_rate=0.0)
    run = simulate_network(cfg, np.random.default_rng(6))
    pulled = run.latency_recipient + run.send_time
    for c in range(cfg.clients):
        mine = (run.recipient == c) & np.isfinite(pulled)
        per_pull = np.unique(np.round(pulled[mine], 6), return_counts=True)[1]
        assert per_pull.max() == cfg.pull_batch
        # Backlogged: most pulls are full, and late items wait far longer than an interval.
        assert np.mean(per_pull == cfg.pull_batch) > 0.9
    assert np.nanmax(run.latency_recipient) > 10 * cfg.pull_interval


def test_new_fields_validate() -> None:
    with pytest.raises(Exception, match="corrupt_providers"):
        SimConfig(providers=1, corrupt_providers=2)
    with pytest.raises(Exception, match="message_rate"):
        SimConfig(message_rate=-1.0)
    assert pick_targets(simulate_network(BASE.replace(message_rate=0.0),
                                         np.random.default_rng(1)), 5,
                        np.random.default_rng(1)).size == 0
