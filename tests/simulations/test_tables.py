"""The pool tables built by sorting arrivals and departures apart equal the previous ones.

``PoolTables`` now sorts each kind of event on its own and merges them per node by binary
search; ``reference_pool_tables.py`` keeps the previous construction (one sort of all events).
Every table must be the same, element for element: the adversary's posteriors are built on them.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference_pool_tables import ReferencePoolTables

from simulations.config import SimConfig
from simulations.network import simulate_network
from simulations.observations import Observations, Role
from simulations.pools import PoolTables, _by_node_and_time

TABLES = ("dep_row", "dep_time", "dep_f", "dep_negf", "dep_e", "dep_inv_n", "arr_row",
          "arr_time", "arr_f", "arr_negf", "arr_e", "dep_start", "dep_end", "arr_start",
          "arr_end", "fwd_slot", "bwd_slot", "bwd_dep", "departure_rate", "arrival_rows",
          "departure_rows")

CASES = {
    "stratified": SimConfig(clients=20, client_rate=10.0, layers=3, width=4, providers=0,
                            duration=6.0, warmup=2.0, mix_loop_rate=0.0, seed=3),
    "providers-and-loops": SimConfig(clients=15, mix_loop_rate=3.0, provider_delay=0.0,
                                     duration=8.0, warmup=2.0, seed=4),
    # Small pools that empty often: many epochs.
    "quiet": SimConfig(clients=6, client_rate=0.2, loop_rate=0.1, drop_rate=0.1, layers=2,
                       width=2, providers=1, duration=30.0, warmup=2.0, seed=11),
    # Zero delay: every arrival meets its departure at the same instant.
    "zero-delay": SimConfig(clients=10, loop_rate=0.0, drop_rate=0.0, mean_hop_delay=0.0,
                            duration=10.0, warmup=1.0),
}


def same_tables(obs: Observations, horizon: float) -> None:
    new, old = PoolTables(obs, horizon), ReferencePoolTables(obs, horizon)
    for name in TABLES:
        assert np.array_equal(getattr(new, name), getattr(old, name)), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_tables_equal_the_previous_construction(name: str) -> None:
    cfg = CASES[name]
    run = simulate_network(cfg, np.random.default_rng(cfg.seed))
    same_tables(run.obs, 8.0)


def test_tied_arrivals_keep_row_order() -> None:
    """Two packets reach one mix at the same instant and leave at once (zero delay): the ties
    are broken in row order, arrivals before departures, as before."""
    role = np.array([Role.CLIENT, Role.CLIENT, Role.MIX, Role.CLIENT], dtype=np.int64)
    t = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 2.5])
    obs = Observations(
        t_dep=t, t_arr=t.copy(), src=np.array([0, 1, 2, 2, 0, 2]),
        dst=np.array([2, 2, 3, 3, 2, 3]), node_role=role, corrupt=np.zeros(4, dtype=bool),
        next_row=np.array([2, 3, -1, -1, 5, -1]), prev_row=np.array([-1, -1, 0, 1, -1, 4]),
    )
    same_tables(obs, 1e9)
    tables = PoolTables(obs, 1e9)
    assert tables.arr_row.tolist() == [0, 1, 4]
    assert tables.dep_inv_n.tolist() == [0.5, 1.0, 1.0]


def test_sorting_by_node_and_time_is_lexsort_with_ties() -> None:
    rng = np.random.default_rng(0)
    node_of = rng.integers(0, 5, 400)
    for times in (rng.uniform(0, 10, 400), rng.integers(0, 20, 400).astype(np.float64)):
        rows = rng.permutation(400)[:300]
        node, time, ordered = _by_node_and_time(node_of, times, np.sort(rows))
        ref = np.sort(rows)[np.lexsort((times[np.sort(rows)], node_of[np.sort(rows)]))]
        assert ordered.tolist() == ref.tolist()
        assert np.array_equal(node, node_of[ref]) and np.array_equal(time, times[ref])
