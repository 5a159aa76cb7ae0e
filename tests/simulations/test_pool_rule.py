"""The adversary's pool rule: hand-computed cases and a brute-force Bayesian check."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from simulations.adversary import Adversary
from simulations.entropy import shannon_bits
from simulations.observations import Observations, Role


def one_mix(arrivals: list[float], departures: list[list[float]] | list[float],
            truth: list[int] | None = None, corrupt: bool = False) -> Observations:
    """Clients 0..k-1 each send one packet into mix k, which delivers to sink client k+1.

    ``arrivals[i]`` is when client i's packet enters; ``departures`` are the mix's output times;
    ``truth[j]`` is the client whose packet leaves at ``departures[j]``.
    """
    k = len(arrivals)
    mix, sink = k, k + 1
    outs = list(departures)
    if truth is None:
        truth = list(range(k))
    t_dep = np.array([*arrivals, *outs], dtype=float)
    src = np.array([*range(k), *([mix] * len(outs))])
    dst = np.array([*([mix] * k), *([sink] * len(outs))])
    role = np.array([Role.CLIENT] * k + [Role.MIX, Role.CLIENT])
    next_row = np.full(t_dep.size, -1)
    prev_row = np.full(t_dep.size, -1)
    for j, client in enumerate(truth):
        next_row[client] = k + j
        prev_row[k + j] = client
    return Observations(t_dep=t_dep, t_arr=t_dep.copy(), src=src, dst=dst, node_role=role,
                        corrupt=np.array([False] * k + [corrupt, False]),
                        next_row=next_row, prev_row=prev_row)


def test_two_senders_one_mix() -> None:
    # A enters at 0, B at 1; outputs at 2 and 3. Each output is A or B with 1/2: one bit each way.
    obs = one_mix([0.0, 1.0], [2.0, 3.0])
    adv = Adversary(obs, horizon=100.0)
    fwd = adv.where_did_it_go(0)
    assert fwd.keys.tolist() == [2, 3]
    assert fwd.probs.tolist() == [0.5, 0.5]
    assert fwd.entropy_bits() == 1.0
    back = adv.who_sent_it(3)
    assert back.probs.tolist() == [0.5, 0.5]
    assert back.entropy_bits() == 1.0


def test_hand_computed_four_packets() -> None:
    # Pool sizes at the outputs at 1, 4, 6, 7 are 1, 2, 2, 1.
    # A (in 0) surely leaves at 1. B (in 2): 1/2 at 4, then 1/2 * 1/2 at 6, the rest 1/4 at 7.
    obs = one_mix([0.0, 2.0, 3.0, 5.0], [1.0, 4.0, 6.0, 7.0])
    adv = Adversary(obs, horizon=100.0)
    a = adv.where_did_it_go(0)
    assert a.keys.tolist() == [4] and a.probs.tolist() == [1.0]
    b = adv.where_did_it_go(1)
    assert b.keys.tolist() == [5, 6, 7]
    assert b.probs.tolist() == pytest.approx([0.5, 0.25, 0.25], abs=1e-15)
    assert b.entropy_bits() == pytest.approx(1.5, abs=1e-12)
    # Backward from the output at 7: B 1/4, C 1/4, D 1/2; A is impossible (the pool emptied).
    last = adv.who_sent_it(7)
    assert last.keys.tolist() == [1, 2, 3]
    assert last.probs.tolist() == pytest.approx([0.25, 0.25, 0.5], abs=1e-15)
    assert last.entropy_bits() == pytest.approx(1.5, abs=1e-12)


def brute_force(arrivals: list[float], departures: list[float], mu: float) -> np.ndarray:
    """P(input i left as output j) by enumerating every assignment with its exponential
    likelihood: the posterior the pool rule claims to compute, with no shortcut."""
    n = len(arrivals)
    post = np.zeros((n, n))
    total = 0.0
    for perm in itertools.permutations(range(n)):
        delays = [departures[j] - arrivals[perm[j]] for j in range(n)]
        if min(delays) < 0:
            continue
        weight = math.prod(mu * math.exp(-mu * d) for d in delays)
        total += weight
        for j in range(n):
            post[perm[j], j] += weight
    return post / total


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pool_rule_is_the_exact_posterior(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 6
    arrivals = np.sort(rng.uniform(0, 3, n))
    departures = np.sort(arrivals + rng.exponential(1.0, n))
    # Relabel so the departures are a valid (time-ordered) mapping for the ground truth.
    obs = one_mix(arrivals.tolist(), departures.tolist())
    adv = Adversary(obs, horizon=1e6)
    exact = brute_force(arrivals.tolist(), departures.tolist(), mu=1.0)
    for i in range(n):
        fwd = adv.where_did_it_go(i)
        got = np.zeros(n)
        got[fwd.keys - n] = fwd.probs
        np.testing.assert_allclose(got, exact[i], atol=1e-12)
    for j in range(n):
        back = adv.who_sent_it(n + j)
        got = np.zeros(n)
        got[back.keys] = back.probs
        np.testing.assert_allclose(got, exact[:, j], atol=1e-12)


def test_corrupt_mix_reveals_its_links() -> None:
    obs = one_mix([0.0, 1.0, 2.0], [3.0, 4.0, 5.0], truth=[2, 0, 1], corrupt=True)
    adv = Adversary(obs, horizon=100.0)
    fwd = adv.where_did_it_go(0)
    assert fwd.keys.tolist() == [4] and fwd.entropy_bits() == 0.0
    back = adv.who_sent_it(3)
    assert back.keys.tolist() == [2] and back.entropy_bits() == 0.0


def test_shannon_bits() -> None:
    assert shannon_bits(np.array([0.25] * 4)) == 2.0
    assert shannon_bits(np.array([1.0, 0.0])) == 0.0
    # Renormalized: half the mass still in flight does not change the shape.
    assert shannon_bits(np.array([0.25, 0.25])) == 1.0


def chain(n: int, seed: int) -> Observations:
    """n clients each send one packet through mix A then mix B to a sink; rows are
    (client->A, A->B, B->sink) per packet, with Exp(1) delays and 0.01 s links."""
    rng = np.random.default_rng(seed)
    a, b, sink = n, n + 1, n + 2
    send = rng.uniform(0, 1, n)
    d = rng.exponential(1.0, (n, 2))
    t0 = send
    t1 = t0 + 0.01 + d[:, 0]
    t2 = t1 + 0.01 + d[:, 1]
    t_dep = np.stack([t0, t1, t2], axis=1).ravel()
    src = np.stack([np.arange(n), np.full(n, a), np.full(n, b)], axis=1).ravel()
    dst = np.stack([np.full(n, a), np.full(n, b), np.full(n, sink)], axis=1).ravel()
    rows = np.arange(3 * n).reshape(n, 3)
    nxt = rows + 1
    nxt[:, -1] = -1
    prv = rows - 1
    prv[:, 0] = -1
    role = np.array([Role.CLIENT] * n + [Role.MIX, Role.MIX, Role.CLIENT])
    return Observations(t_dep=t_dep, t_arr=t_dep + 0.01, src=src, dst=dst, node_role=role,
                        corrupt=np.zeros(n + 3, dtype=bool), next_row=nxt.ravel(),
                        prev_row=prv.ravel())


@pytest.mark.parametrize("seed", [0, 1])
def test_chained_pools_are_the_exact_network_posterior(seed: int) -> None:
    """Two pools in a row: enumerate every pair of assignments with its likelihood."""
    n = 5
    obs = chain(n, seed)
    per_node = []
    for node in (n, n + 1):
        ins = np.flatnonzero(obs.dst == node)
        outs = np.flatnonzero(obs.src == node)
        options = []
        for perm in itertools.permutations(ins.tolist()):
            delays = obs.t_dep[outs] - obs.t_arr[np.array(perm)]
            if (delays >= 0).all():
                options.append((dict(zip(perm, outs.tolist(), strict=True)),
                                math.prod(math.exp(-x) for x in delays)))
        per_node.append(options)
    exact = np.zeros((n, obs.n_rows))
    total = 0.0
    for (map_a, w_a), (map_b, w_b) in itertools.product(*per_node):
        total += w_a * w_b
        for p in range(n):
            exact[p, map_b[map_a[3 * p]]] += w_a * w_b
    exact /= total
    assert (exact.max(axis=1) < 0.99).any()  # the case is not trivially unmixed
    adv = Adversary(obs, horizon=1e6)
    for p in range(n):
        fwd = adv.where_did_it_go(3 * p)
        got = np.zeros(obs.n_rows)
        got[fwd.keys] = fwd.probs
        np.testing.assert_allclose(got, exact[p], atol=1e-12)
        back = adv.who_sent_it(3 * p + 2)
        senders = np.zeros(n)
        senders[back.keys] = back.probs
        np.testing.assert_allclose(senders, exact[:, 3 * p + 2], atol=1e-12)
