"""The pool tables as they were built before issue 18's second step: the reference for tests.

Kept only here (never imported by ``simulations``): ``PoolTables.__init__`` as it was, one sort
of all arrivals and departures together. ``simulations/pools.py`` now sorts arrivals and
departures apart and merges them per node; ``test_tables.py`` checks that every table it builds
is the same, element for element, as this one's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from simulations.observations import Observations

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class ReferencePoolTables:
    """Per-pool event tables (departures and arrivals, each node-major and time-ordered)."""

    def __init__(self, obs: Observations, horizon: float) -> None:
        self.obs = obs
        self.horizon = float(horizon)
        in_rows = np.flatnonzero(obs.pool_arrivals())
        out_rows = np.flatnonzero(obs.pool_departures())
        ev_row = np.concatenate([in_rows, out_rows])
        ev_node = np.concatenate([obs.dst[in_rows], obs.src[out_rows]])
        ev_time = np.concatenate([obs.t_arr[in_rows], obs.t_dep[out_rows]])
        ev_dep = np.concatenate(
            [np.zeros(in_rows.size, dtype=bool), np.ones(out_rows.size, dtype=bool)]
        )
        order = _node_time_order(ev_node, ev_time, ev_dep)
        ev_row, ev_node, ev_time, ev_dep = ev_row[order], ev_node[order], ev_time[order], \
            ev_dep[order]
        n_nodes = obs.n_nodes
        counts = np.bincount(ev_node, minlength=n_nodes)
        seg_end = np.cumsum(counts)
        seg_start = seg_end - counts
        cum = np.cumsum(np.where(ev_dep, -1, 1))
        seg_base = np.concatenate([[0], cum])[seg_start[ev_node]] if ev_row.size else cum
        # Pool size just before a departure = size just after it + 1.
        n_before = np.maximum(cum - seg_base + 1, 1).astype(np.float64)
        empty = ev_dep & (n_before <= 1)
        with np.errstate(divide="ignore"):
            term = np.where(ev_dep & ~empty, np.log1p(-1.0 / n_before), 0.0)
        # Exclusive cumulative sums over the whole run: F is non-increasing, the epoch count E
        # non-decreasing, so both can be searched with searchsorted.
        f = np.concatenate([[0.0], np.cumsum(term)[:-1]]) if ev_row.size else np.zeros(0)
        e = np.concatenate([[0], np.cumsum(empty)[:-1]]) if ev_row.size else np.zeros(0, np.int64)

        dep = np.flatnonzero(ev_dep)
        arr = np.flatnonzero(~ev_dep)
        self.dep_row = ev_row[dep]
        self.dep_time = ev_time[dep]
        self.dep_f = f[dep]
        self.dep_negf = -self.dep_f
        self.dep_e = e[dep]
        self.dep_inv_n = 1.0 / n_before[dep]
        self.arr_row = ev_row[arr]
        self.arr_time = ev_time[arr]
        self.arr_f = f[arr]
        self.arr_negf = -self.arr_f
        self.arr_e = e[arr]
        dep_counts = np.bincount(ev_node[dep], minlength=n_nodes)
        arr_counts = np.bincount(ev_node[arr], minlength=n_nodes)
        self.dep_end = np.cumsum(dep_counts)
        self.dep_start = self.dep_end - dep_counts
        self.arr_end = np.cumsum(arr_counts)
        self.arr_start = self.arr_end - arr_counts
        deps_before = np.cumsum(ev_dep) - ev_dep
        arrs_before = np.cumsum(~ev_dep) - ~ev_dep
        # Per row: the slot of an arriving row (first departure after it, global index), and
        # the slot of a departing row (last arrival before it). -1: no such event in the node.
        self.fwd_slot = np.full(obs.n_rows, -1, dtype=np.int64)
        self.fwd_slot[ev_row[arr]] = deps_before[arr]
        arr_node = ev_node[arr]
        bad = self.fwd_slot[ev_row[arr]] >= self.dep_end[arr_node]
        self.fwd_slot[ev_row[arr][bad]] = -1
        self.bwd_slot = np.full(obs.n_rows, -1, dtype=np.int64)
        self.bwd_dep = np.full(obs.n_rows, -1, dtype=np.int64)
        prev_arr = arrs_before[dep] - 1
        dep_node = ev_node[dep]
        ok = prev_arr >= self.arr_start[dep_node]
        self.bwd_slot[ev_row[dep][ok]] = prev_arr[ok]
        self.bwd_dep[ev_row[dep]] = np.arange(dep.size)
        # A departure whose pool emptied since its last arrival carries nothing from before.
        same_epoch = np.zeros(dep.size, dtype=bool)
        same_epoch[ok] = self.dep_e[ok] == self.arr_e[prev_arr[ok]]
        self.bwd_slot[ev_row[dep][~same_epoch]] = -1
        # Mean departures per second of a pool (for sizing batches of targets).
        pools = int(np.count_nonzero(dep_counts))
        span = float(ev_time.max() - ev_time.min()) if ev_time.size else 0.0
        self.departure_rate = dep.size / (pools * span) if pools and span > 0 else 0.0
        self.arrival_rows = np.zeros(obs.n_rows, dtype=bool)
        self.arrival_rows[in_rows] = True
        self.departure_rows = np.zeros(obs.n_rows, dtype=bool)
        self.departure_rows[out_rows] = True


def _node_time_order(node: IntArray, time: FloatArray, dep: BoolArray) -> IntArray:
    """Events node-major, then by time, arrivals before departures at equal times (zero delay).

    Without ties in time (any positive delay), a quicksort on time then a stable counting sort
    on the node gives that order at a third of ``lexsort``'s cost."""
    by_time = np.argsort(time)
    st = time[by_time]
    if st.size > 1 and not bool((st[1:] > st[:-1]).all()):
        return np.lexsort((dep, time, node))
    key = node[by_time]
    small = key.astype(np.int16) if node.size and int(node.max()) < 2**15 else key
    return by_time[np.argsort(small, kind="stable")]
