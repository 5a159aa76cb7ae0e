"""The adversary vectorized across targets gives the per-target walk's entropies (1e-9 bits).

The previous implementation is kept only here (``reference_adversary.py``), one walk per
target and pool in log-domain; the new one walks batches of targets through dense blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference_adversary import ReferenceAdversary, reference_entropies, reference_timing_guesses

from simulations import pools
from simulations.adversary import Adversary, default_horizon, epsilons, evaluate_targets
from simulations.attacks.timing import timing_guesses
from simulations.config import SimConfig
from simulations.entropy import epsilon_from
from simulations.network import pick_targets, simulate_network

TOLERANCE_BITS = 1e-9

CASES = {
    # Small pools that empty often: many epochs per window.
    "small": SimConfig(clients=12, client_rate=1.0, layers=2, width=2, providers=1,
                       duration=12.0, warmup=3.0, mix_loop_rate=0.0, seed=7),
    # A busier stratified network without providers, as in issue 18's case, scaled down.
    "stratified": SimConfig(clients=20, client_rate=10.0, layers=3, width=4, providers=0,
                            duration=6.0, warmup=2.0, mix_loop_rate=0.0, seed=3),
    # Corrupt mixes reveal their links; two providers mix too.
    "corrupt": SimConfig(clients=16, client_rate=2.0, layers=3, width=3, providers=2,
                         corrupt_fraction=0.34, duration=8.0, warmup=2.0, mix_loop_rate=0.0,
                         seed=5),
}


def both(cfg: SimConfig, targets: int = 25) -> tuple:
    rng = np.random.default_rng(cfg.seed)
    run = simulate_network(cfg, rng)
    chosen = pick_targets(run, targets, rng)
    horizon = default_horizon(cfg.mean_hop_delay)
    new = evaluate_targets(Adversary(run.obs, horizon), run.first_row[chosen],
                           run.last_row[chosen], run.sender[chosen])
    old = reference_entropies(ReferenceAdversary(run.obs, horizon), run.first_row[chosen],
                              run.last_row[chosen])
    return run, chosen, new, old


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_entropies_as_the_per_target_walk(name: str) -> None:
    _, chosen, new, (h_msg, h_snd) = both(CASES[name])
    assert chosen.size >= 20
    np.testing.assert_allclose(new.message_entropy_bits, h_msg, atol=TOLERANCE_BITS, rtol=0)
    np.testing.assert_allclose(new.sender_entropy_bits, h_snd, atol=TOLERANCE_BITS, rtol=0)
    assert (new.message_entropy_bits > 0.5).mean() > 0.5  # the case actually mixes


def test_rebasing_parts_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows split into many rebasing parts (carried sums) give the same posteriors."""
    cfg = CASES["stratified"]
    _, _, whole, _ = both(cfg)
    monkeypatch.setattr(pools, "REBASE_NATS", 3.0)
    _, _, parts, (h_msg, h_snd) = both(cfg)
    np.testing.assert_allclose(parts.message_entropy_bits, h_msg, atol=TOLERANCE_BITS, rtol=0)
    np.testing.assert_allclose(parts.sender_entropy_bits, h_snd, atol=TOLERANCE_BITS, rtol=0)
    np.testing.assert_allclose(parts.message_entropy_bits, whole.message_entropy_bits,
                               atol=TOLERANCE_BITS, rtol=0)


def test_single_target_queries_match() -> None:
    cfg = CASES["corrupt"]
    rng = np.random.default_rng(2)
    run = simulate_network(cfg, rng)
    horizon = default_horizon(cfg.mean_hop_delay)
    new, old = Adversary(run.obs, horizon), ReferenceAdversary(run.obs, horizon)
    for p in pick_targets(run, 8, rng):
        a, b = new.where_did_it_go(int(run.first_row[p])), old.where_did_it_go(
            int(run.first_row[p]))
        keep = b.probs > 1e-12
        assert set(b.keys[keep].tolist()) <= set(a.keys.tolist())
        assert a.prob_of(int(run.last_row[p])) == pytest.approx(
            b.prob_of(int(run.last_row[p])), abs=1e-12)
        c = new.who_sent_it(int(run.last_row[p]))
        d = old.who_sent_it(int(run.last_row[p]))
        assert c.keys.tolist() == d.keys.tolist()
        np.testing.assert_allclose(c.probs, d.probs, atol=1e-12)


def test_epsilon_and_timing_unchanged() -> None:
    cfg = CASES["stratified"]
    rng = np.random.default_rng(4)
    run = simulate_network(cfg, rng)
    horizon = default_horizon(cfg.mean_hop_delay)
    chal = pick_targets(run, 20, rng, senders=(0, 1))
    new = epsilons(Adversary(run.obs, horizon), run.last_row[chal], (0, 1))
    old_adv = ReferenceAdversary(run.obs, horizon)
    old = []
    for row in run.last_row[chal]:
        back = old_adv.who_sent_it(int(row))
        old.append(epsilon_from(back.prob_of(0) / back.mass, back.prob_of(1) / back.mass))
    np.testing.assert_allclose(new, old, atol=1e-9)
    targets = pick_targets(run, 40, rng)
    assert np.array_equal(timing_guesses(run, targets), reference_timing_guesses(run, targets))


def test_whole_network_scenario_matches_the_previous_pipeline() -> None:
    """The scenario's figures (one backward walk for both delivery sets, folded weights) equal
    those of the pipeline the speed benchmark compares against, to 1e-9."""
    from reference_pipeline import reference_measure_network

    from simulations import scenarios

    cfg = CASES["stratified"].replace(targets=30)
    new = scenarios.network(cfg).data
    old = reference_measure_network(cfg)
    for name in ("message_entropy_bits", "sender_entropy_bits", "epsilon"):
        for stat in ("count", "mean", "p5", "p50", "p95", "min", "max"):
            assert new[name][stat] == pytest.approx(old[name][stat], abs=TOLERANCE_BITS), \
                (name, stat)
    assert new["timing_attack"] == old["timing_attack"]
    assert new["latency_mailbox_s"] == old["latency_mailbox_s"]


@pytest.mark.parametrize("resolution", [None, 0.1])
def test_node_time_order_is_lexsort(resolution: float | None) -> None:
    """The per-node sort gives lexsort's order, ties in time (rounded times) included."""
    rng = np.random.default_rng(9)
    node = rng.integers(0, 7, 5000)
    time = rng.uniform(0.0, 20.0, 5000)
    if resolution is not None:
        time = np.round(time / resolution) * resolution
    dep = rng.random(5000) < 0.5
    assert np.array_equal(pools._node_time_order(node, time, dep),
                          np.lexsort((dep, time, node)))
