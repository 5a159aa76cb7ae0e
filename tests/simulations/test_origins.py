"""The origin sweep (every sender's injections forward at once) gives the backward walk's
sender posteriors, and the adversary falls back to the walk wherever the two could differ."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reference_adversary import ReferenceAdversary, reference_entropies

from simulations import adversary, pools
from simulations.adversary import Adversary, default_horizon, epsilons, evaluate_targets
from simulations.config import SimConfig
from simulations.entropy import epsilon_from
from simulations.network import pick_targets, simulate_network
from simulations.observations import Observations

#: What the sweep keeps and the walk prunes (masses below 1e-15 per injection) stays below this.
TOLERANCE = 1e-12

CASES = {
    "stratified": SimConfig(clients=20, client_rate=10.0, layers=3, width=4, providers=0,
                            duration=6.0, warmup=2.0, mix_loop_rate=0.0, seed=3),
    "small": SimConfig(clients=12, client_rate=1.0, layers=2, width=2, providers=1,
                       duration=12.0, warmup=3.0, mix_loop_rate=0.0, seed=7),
    # Corrupt mixes and a corrupt provider pass mass along known links.
    "corrupt": SimConfig(clients=16, client_rate=2.0, layers=3, width=3, providers=2,
                         corrupt_fraction=0.34, corrupt_providers=1, provider_delay=0.0,
                         duration=8.0, warmup=2.0, seed=5),
    # Mix loops relayed by providers: rows no real packet is on drop their mass.
    "loops": SimConfig(clients=15, mix_loop_rate=3.0, provider_delay=0.0, duration=8.0,
                       warmup=2.0, seed=4),
    "zero-delay": SimConfig(clients=10, loop_rate=0.0, drop_rate=0.0, mean_hop_delay=0.0,
                            duration=10.0, warmup=1.0),
    # Quiet pools: many epochs, senders with nothing recent.
    "quiet": SimConfig(clients=6, client_rate=0.2, loop_rate=0.1, drop_rate=0.1, layers=2,
                       width=2, providers=1, duration=30.0, warmup=2.0, seed=11),
}


def setup(cfg: SimConfig, targets: int = 40) -> tuple:
    rng = np.random.default_rng(cfg.seed + 1)
    run = simulate_network(cfg, rng)
    adv = Adversary(run.obs, default_horizon(cfg.mean_hop_delay))
    return run, adv, run.last_row[pick_targets(run, targets, rng)]


def sweep_all(adv: Adversary, rows: np.ndarray) -> np.ndarray:
    assert adv.origins.usable, adv.origins.reason
    return adv.origins.masses(rows, adv._client_label, adv._clients.size)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sweep_equals_the_backward_walk(name: str) -> None:
    _, adv, rows = setup(CASES[name])
    walk = adv.backward_matrix(rows)[:, adv._clients]
    sweep = sweep_all(adv, rows)
    assert rows.size >= 20 and walk.sum() > 0
    np.testing.assert_allclose(sweep, walk, atol=TOLERANCE, rtol=0)
    # A sender the walk excludes outright is excluded by the sweep too.
    assert np.array_equal(sweep == 0, walk == 0)


def test_sweep_reads_any_row() -> None:
    """Targets on every kind of row (injections, a middle layer, relays, a loop's first row)
    read what the walk starting there finds."""
    _, adv, _ = setup(CASES["loops"])
    rows = np.arange(0, adv.obs.n_rows, 7, dtype=np.int64)
    np.testing.assert_allclose(sweep_all(adv, rows), adv.backward_matrix(rows)[:, adv._clients],
                               atol=TOLERANCE, rtol=0)


def test_rebasing_parts_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    _, adv, rows = setup(CASES["stratified"])
    whole = sweep_all(adv, rows)
    monkeypatch.setattr(pools, "REBASE_NATS", 3.0)
    _, adv, rows = setup(CASES["stratified"])
    parts = sweep_all(adv, rows)
    np.testing.assert_allclose(parts, whole, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(parts, adv.backward_matrix(rows)[:, adv._clients], atol=TOLERANCE,
                               rtol=0)


def test_groups_of_labels_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Senders are swept a few at a time to bound memory; any grouping gives the same."""
    _, adv, rows = setup(CASES["stratified"])
    whole = sweep_all(adv, rows)
    monkeypatch.setattr("simulations.origins.STAGE_CELLS", 1)
    _, adv, rows = setup(CASES["stratified"])
    assert np.array_equal(sweep_all(adv, rows), whole)


def test_an_earlier_query_reuses_the_plan() -> None:
    _, adv, rows = setup(CASES["small"])
    late = sweep_all(adv, rows)
    early = rows[adv.obs.t_dep[rows] < np.median(adv.obs.t_dep[rows])]
    again = sweep_all(adv, early)
    assert adv.origins._cached is not None
    np.testing.assert_array_equal(again, late[np.isin(rows, early)])


@pytest.mark.parametrize("name", ["stratified", "small", "corrupt"])
@pytest.mark.parametrize("way", ["sweep", "walk"])
def test_entropies_match_the_per_target_reference_either_way(
        name: str, way: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whichever the adversary picks, the figures are the previous per-target walk's."""
    monkeypatch.setattr(adversary, "SWEEP_CELL_COST", 0.0 if way == "sweep" else math.inf)
    cfg = CASES[name].replace(corrupt_providers=0, mix_loop_rate=0.0)
    rng = np.random.default_rng(cfg.seed)
    run = simulate_network(cfg, rng)
    chosen = pick_targets(run, 25, rng)
    horizon = default_horizon(cfg.mean_hop_delay)
    adv = Adversary(run.obs, horizon)
    assert adv._sweep_pays(run.last_row[chosen], adv._clients.size) == (way == "sweep")
    new = evaluate_targets(adv, run.first_row[chosen], run.last_row[chosen], run.sender[chosen])
    old_adv = ReferenceAdversary(run.obs, horizon)
    _, h_snd = reference_entropies(old_adv, run.first_row[chosen], run.last_row[chosen])
    np.testing.assert_allclose(new.sender_entropy_bits, h_snd, atol=1e-9, rtol=0)
    top = [old_adv.who_sent_it(int(r)).top() for r in run.last_row[chosen]]
    assert new.sender_top1.tolist() == (np.array(top) == run.sender[chosen]).tolist()
    chal = pick_targets(run, 25, rng, senders=(0, 1))
    eps = epsilons(adv, run.last_row[chal], (0, 1))
    old = []
    for row in run.last_row[chal]:
        back = old_adv.who_sent_it(int(row))
        old.append(epsilon_from(back.prob_of(0) / back.mass, back.prob_of(1) / back.mass)
                   if back.mass > 0 else 0.0)
    assert np.array_equal(np.isinf(eps), np.isinf(old))
    np.testing.assert_allclose(eps[np.isfinite(eps)], np.array(old)[np.isfinite(old)],
                               atol=1e-9, rtol=0)


def test_doubtful_targets_are_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A target whose sweep result the walk could prune differently (here: every target, the
    thresholds raised) gets the walk's figures exactly."""
    monkeypatch.setattr(adversary, "SWEEP_CELL_COST", 0.0)
    monkeypatch.setattr(adversary, "AMBIGUOUS_TOTAL", 2.0)
    monkeypatch.setattr(adversary, "AMBIGUOUS_MASS", 2.0)
    _, adv, rows = setup(CASES["quiet"])
    assert np.array_equal(adv.sender_matrix(rows), adv.backward_matrix(rows))
    label = np.full(adv.obs.n_nodes, -1)
    label[[0, 1]] = [0, 1]
    swept = adv.origins.masses(rows, label, 2)
    doubt = ((swept > 0) & (swept < 2.0)).any(axis=1)
    assert doubt.any() and not doubt.all()
    pair = adv.challenge_masses(rows, (0, 1))
    assert np.array_equal(pair[doubt], adv.backward_matrix(rows[doubt])[:, [0, 1]])
    assert np.array_equal(pair[~doubt], swept[~doubt])


def test_quiet_senders_get_the_walks_zeros() -> None:
    """Senders with nothing recent have masses the walk prunes to zero: those targets are
    walked, so epsilon is infinite exactly where the walk says so."""
    _, adv, rows = setup(CASES["quiet"], targets=60)
    walk = adv.backward_matrix(rows)[:, [0, 1]]
    pair = adv.challenge_masses(rows, (0, 1))
    assert np.array_equal(pair == 0, walk == 0)
    assert (walk == 0).any()


def test_the_sweep_is_not_used_where_it_cannot_answer() -> None:
    run, adv, rows = setup(CASES["small"])
    obs = run.obs
    # Without layers nothing orders the rows into stages.
    flat = Observations(t_dep=obs.t_dep, t_arr=obs.t_arr, src=obs.src, dst=obs.dst,
                        node_role=obs.node_role, corrupt=obs.corrupt, next_row=obs.next_row,
                        prev_row=obs.prev_row)
    bare = Adversary(flat, adv.horizon)
    assert not bare.origins.usable and bare.origins.reason == "no layers"
    assert np.array_equal(bare.sender_matrix(rows), bare.backward_matrix(rows))
    # A horizon far shorter than the delays cuts arrivals that still carry mass.
    short = Adversary(obs, 0.05)
    assert not short.origins.usable
    assert "horizon" in short.origins.reason
    assert np.array_equal(short.sender_matrix(rows), short.backward_matrix(rows))


def test_the_cheaper_way_is_picked() -> None:
    """Many targets and few senders: the sweep; a handful of targets: the walk; epsilon's two
    labels: the sweep."""
    _, adv, rows = setup(CASES["stratified"], targets=200)
    assert adv._sweep_pays(rows, adv._clients.size)
    assert not adv._sweep_pays(rows[:2], adv._clients.size)
    assert adv._sweep_pays(rows[:10], 2)
