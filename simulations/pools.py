"""The adversary's bookkeeping of every mix pool, vectorized over all events at once.

The rule (derived in docs/simulations.md, "The pool rule"). A node whose every packet is held for
an independent Exp(mu) delay is observed: arrivals and departures with their times. For any
assignment of departures to earlier arrivals the likelihood is ``prod mu exp(-mu (out_i - in_i))``
times ``exp(-mu (T - in_k))`` for packets still inside at the end, and the exponent's sum does not
depend on the assignment. So every consistent assignment is equally likely, and a uniformly random
one is drawn by letting each departure pick uniformly among the ``n`` packets inside at that
moment. Hence, exactly:

    P(arrival a left as departure d) = (1 / n_d) * prod over departures k with a < k < d of
                                       (1 - 1 / n_k)

Writing ``LX[e]`` for the sum of ``log(1 - 1/n_k)`` over departures before event ``e`` (one
cumulative sum for the whole run; a departure that empties the pool counts as EMPTY_LOG and is
tallied separately so that it costs no precision elsewhere), this is
``exp(LX[d] - LX[a]) / n_d``. Forward (where did this packet go?) is a prefix log-sum-exp over
the arrivals, backward (where did this packet come from?) a suffix one over the departures. No
probability vector per packet or per pool is kept; only the run-wide cumulative sums, and the
targets' sparse frontiers.

Assignments at different nodes are independent given the observations (the likelihood factors
by node), so chaining the per-node kernels gives the exact network posterior.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from simulations.observations import Observations

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: ``log(1 - 1/1)``: the pool emptied, nothing that came before can leave later. -inf would turn
#: differences of cumulative sums into NaN; exp(-800) is already exactly 0.0 in float64.
EMPTY_LOG = -800.0
#: Probabilities below exp(LOG_FLOOR) are dropped from a target's frontier.
LOG_FLOOR = math.log(1e-15)


class PoolTables:
    """Per-node event tables (node-major, time-ordered) and the forward/backward kernels."""

    def __init__(self, obs: Observations, horizon: float) -> None:
        self.obs = obs
        self.horizon = float(horizon)
        mix_in = obs.mixing_in()
        mix_out = obs.mixing_out()
        in_rows = np.flatnonzero(mix_in)
        out_rows = np.flatnonzero(mix_out)
        ev_row = np.concatenate([in_rows, out_rows])
        ev_node = np.concatenate([obs.dst[in_rows], obs.src[out_rows]])
        ev_time = np.concatenate([obs.t_arr[in_rows], obs.t_dep[out_rows]])
        ev_dep = np.concatenate(
            [np.zeros(in_rows.size, dtype=bool), np.ones(out_rows.size, dtype=bool)]
        )
        # Node-major, then time, arrivals before departures at equal times (zero delay).
        order = np.lexsort((ev_dep, ev_time, ev_node))
        self.ev_row = ev_row[order]
        self.ev_node = ev_node[order]
        self.ev_time = ev_time[order]
        self.ev_dep = ev_dep[order]
        n_ev = self.ev_row.size
        n_nodes = obs.n_nodes
        counts = np.bincount(self.ev_node, minlength=n_nodes)
        self.seg_end = np.cumsum(counts)
        self.seg_start = self.seg_end - counts
        delta = np.where(self.ev_dep, -1, 1)
        cum = np.cumsum(delta)
        seg_base = np.concatenate([[0], cum])[self.seg_start[self.ev_node]]
        after = cum - seg_base
        # Pool size just before a departure = size just after it + 1.
        n_before = np.maximum(after + 1, 1)
        self.log_n = np.where(self.ev_dep, np.log(n_before), 0.0)
        with np.errstate(divide="ignore"):
            term = np.where(self.ev_dep, np.log1p(-1.0 / n_before), 0.0)
        empty = ~np.isfinite(term)
        term = np.where(empty, 0.0, term)
        # Exclusive cumulative sums, kept apart so that a difference across no emptying is exact
        # to rounding of small numbers, whatever happened earlier in the run (see ``_lx``).
        self.f = np.concatenate([[0.0], np.cumsum(term)[:-1]]) if n_ev else np.zeros(0)
        self.e = np.concatenate([[0], np.cumsum(empty)[:-1]]) if n_ev else np.zeros(0, np.int64)
        self.pos_arr = np.full(obs.n_rows, -1, dtype=np.int64)
        self.pos_dep = np.full(obs.n_rows, -1, dtype=np.int64)
        positions = np.arange(n_ev, dtype=np.int64)
        self.pos_arr[self.ev_row[~self.ev_dep]] = positions[~self.ev_dep]
        self.pos_dep[self.ev_row[self.ev_dep]] = positions[self.ev_dep]

    def _lx(self, pos: IntArray, ref: int) -> FloatArray:
        """``LX[pos] - LX[ref]``: log of the survival factor between two events of one node."""
        return (self.f[pos] - self.f[ref]) + EMPTY_LOG * (self.e[pos] - self.e[ref])

    # -- forward: arrivals -> departures -----------------------------------------------------

    def forward(self, rows: IntArray, logp: FloatArray) -> tuple[IntArray, FloatArray]:
        """Rows arriving at pools (with log-probabilities) -> departure rows that may carry them."""
        return self._propagate(rows, logp, self.pos_arr, self.obs.next_row, self._forward_node)

    def _propagate(
        self,
        rows: IntArray,
        logp: FloatArray,
        positions: IntArray,
        corrupt_link: IntArray,
        step: Callable[[int, IntArray, FloatArray], tuple[IntArray, FloatArray]],
    ) -> tuple[IntArray, FloatArray]:
        """One hop in either direction, node by node: a corrupt node reveals the true link
        (``corrupt_link``), an honest one spreads the mass over its pool (``step``)."""
        if rows.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        pos = positions[rows]
        nodes = self.ev_node[pos]
        out_rows: list[IntArray] = []
        out_lp: list[FloatArray] = []
        order = np.lexsort((pos, nodes))
        pos, nodes, rows, logp = pos[order], nodes[order], rows[order], logp[order]
        bounds = np.flatnonzero(np.diff(nodes)) + 1
        for group in np.split(np.arange(pos.size), bounds):
            node = int(nodes[group[0]])
            if self.obs.corrupt[node]:
                linked = corrupt_link[rows[group]]
                ok = linked >= 0
                out_rows.append(linked[ok])
                out_lp.append(logp[group][ok])
                continue
            r, lp = step(node, pos[group], logp[group])
            out_rows.append(r)
            out_lp.append(lp)
        if not out_rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(out_rows), np.concatenate(out_lp)

    def _forward_node(
        self, node: int, a: IntArray, lp: FloatArray
    ) -> tuple[IntArray, FloatArray]:
        end = int(self.seg_end[node])
        last = int(a[-1])
        t_stop = self.ev_time[last] + self.horizon
        hi = last + 1 + int(np.searchsorted(self.ev_time[last + 1 : end], t_stop, side="right"))
        cand = np.arange(int(a[0]) + 1, hi)
        cand = cand[self.ev_dep[cand]]
        if cand.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        ref = int(a[0])
        prefix = np.logaddexp.accumulate(lp - self._lx(a, ref))
        k = np.searchsorted(a, cand)
        ok = k > 0
        cand, k = cand[ok], k[ok]
        lpo = self._lx(cand, ref) - self.log_n[cand] + prefix[k - 1]
        keep = lpo > LOG_FLOOR
        return self.ev_row[cand[keep]], lpo[keep]

    # -- backward: departures -> arrivals ----------------------------------------------------

    def backward(self, rows: IntArray, logp: FloatArray) -> tuple[IntArray, FloatArray]:
        """Rows leaving pools (with log-probabilities) -> arrival rows they may have come from."""
        return self._propagate(rows, logp, self.pos_dep, self.obs.prev_row, self._backward_node)

    def _backward_node(
        self, node: int, d: IntArray, lp: FloatArray
    ) -> tuple[IntArray, FloatArray]:
        start = int(self.seg_start[node])
        first = int(d[0])
        t_stop = self.ev_time[first] - self.horizon
        lo = start + int(np.searchsorted(self.ev_time[start:first], t_stop, side="left"))
        cand = np.arange(lo, int(d[-1]))
        cand = cand[~self.ev_dep[cand]]
        if cand.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        ref = int(d[-1])
        w = lp + self._lx(d, ref) - self.log_n[d]
        suffix = np.logaddexp.accumulate(w[::-1])[::-1]
        k = np.searchsorted(d, cand, side="right")
        ok = k < d.size
        cand, k = cand[ok], k[ok]
        lpa = suffix[k] - self._lx(cand, ref)
        keep = lpa > LOG_FLOOR
        return self.ev_row[cand[keep]], lpa[keep]
