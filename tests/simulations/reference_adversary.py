"""The adversary as it was before it was vectorized across targets: the reference for the tests.

Kept only here (never imported by ``simulations``): a per-target, per-node walk with a
log-domain prefix log-sum-exp per pool, exactly as ``simulations/pools.py`` and
``simulations/adversary.py`` computed it before issue 18. ``test_vectorized.py`` checks the new
adversary against it to 1e-9 bits, and ``benchmarks/simulation_speed.py`` times both in the
same run. It ignores the fields the new model added to ``Observations`` (mix loops, relays,
corrupt-provider disclosures), so compare the two only on runs without them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulations.entropy import shannon_bits
from simulations.observations import Observations

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MAX_HOPS = 64

#: ``log(1 - 1/1)``: the pool emptied, nothing that came before can leave later. -inf would turn
#: differences of cumulative sums into NaN; exp(-800) is already exactly 0.0 in float64.
EMPTY_LOG = -800.0
#: Probabilities below exp(LOG_FLOOR) are dropped from a target's frontier.
LOG_FLOOR = math.log(1e-15)


class ReferencePoolTables:
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


@dataclass(frozen=True, slots=True)
class Posterior:
    """The adversary's distribution over rows (delivered rows, or injecting clients)."""

    keys: IntArray
    probs: FloatArray

    @property
    def mass(self) -> float:
        """Probability that reached the end (below 1 if some was still in flight or pruned)."""
        return float(self.probs.sum())

    def prob_of(self, key: int) -> float:
        """Probability of one row or client (0 when the adversary excluded it)."""
        hit = self.probs[self.keys == key]
        return float(hit.sum()) if hit.size else 0.0

    def entropy_bits(self) -> float:
        return shannon_bits(self.probs)

    def top(self) -> int:
        """The adversary's best single guess (-1 when it has none)."""
        return int(self.keys[int(np.argmax(self.probs))]) if self.keys.size else -1


class ReferenceAdversary:
    """Observes every link row; knows the mean delay only to bound how far back it looks."""

    def __init__(self, obs: Observations, horizon: float) -> None:
        self.obs = obs
        self.tables = ReferencePoolTables(obs, horizon)
        self._mixing_in = obs.mixing_in()
        self._mixing_out = obs.mixing_out()
        self._delivered = obs.delivered()
        self._injected = obs.injected()

    def where_did_it_go(self, row: int) -> Posterior:
        """Distribution over delivered rows for the packet injected on ``row``."""
        return self._walk(row, self._delivered, lambda rows: rows, self._mixing_in, forward=True)

    def who_sent_it(self, row: int) -> Posterior:
        """Distribution over clients for the packet delivered on ``row``."""
        return self._walk(
            row, self._injected, lambda rows: self.obs.src[rows], self._mixing_out, forward=False
        )

    def _walk(
        self,
        row: int,
        ends: BoolArray,
        label: Callable[[IntArray], IntArray],
        continues: BoolArray,
        *,
        forward: bool,
    ) -> Posterior:
        """Spread probability hop by hop from ``row`` (forward or backward through the pools),
        collecting the mass of every row where a path ``ends`` under ``label(row)``."""
        step = self.tables.forward if forward else self.tables.backward
        rows = np.array([row], dtype=np.int64)
        lp = np.zeros(1)
        found_rows: list[IntArray] = []
        found_lp: list[FloatArray] = []
        for _ in range(MAX_HOPS):
            if rows.size == 0:
                break
            done = ends[rows]
            found_rows.append(label(rows[done]))
            found_lp.append(lp[done])
            go = ~done & continues[rows]
            rows, lp = step(rows[go], lp[go])
        return _collect(found_rows, found_lp)


def _collect(rows: list[IntArray], lp: list[FloatArray]) -> Posterior:
    """Sum the probability per key (a client may be reached along many paths)."""
    if not rows:
        return Posterior(np.zeros(0, dtype=np.int64), np.zeros(0))
    keys = np.concatenate(rows)
    probs = np.exp(np.concatenate(lp))
    uniq, inverse = np.unique(keys, return_inverse=True)
    return Posterior(uniq.astype(np.int64), np.bincount(inverse, weights=probs))


def reference_entropies(adv: ReferenceAdversary, inject_rows: IntArray,
                        deliver_rows: IntArray) -> tuple[FloatArray, FloatArray]:
    """Per-target message and sender entropies, one target at a time (the old loop)."""
    h_msg = np.array([adv.where_did_it_go(int(r)).entropy_bits() for r in inject_rows])
    h_snd = np.array([adv.who_sent_it(int(r)).entropy_bits() for r in deliver_rows])
    return h_msg, h_snd


def reference_timing_guesses(run: object, targets: IntArray) -> IntArray:
    """The timing attacker as it was before issue 18 (a 60-mean-delays-per-hop look-back)."""
    cfg = run.config  # type: ignore[attr-defined]
    obs = run.obs  # type: ignore[attr-defined]
    hops = cfg.mixing_hops
    shift = (hops + 1) * cfg.link_latency
    send_t = obs.t_dep[run.first_row]  # type: ignore[attr-defined]
    senders = run.sender  # type: ignore[attr-defined]
    deliver_t = obs.t_arr[run.last_row[targets]]  # type: ignore[attr-defined]
    guesses = np.full(targets.size, -1, dtype=np.int64)
    d = cfg.mean_hop_delay
    reach = shift + (60.0 * hops * d if d > 0 else 0.0)
    for i, t in enumerate(deliver_t):
        lo = np.searchsorted(send_t, t - reach - 1e-9, side="left")
        hi = np.searchsorted(send_t, t - shift + 1e-9, side="right")
        if hi <= lo:
            continue
        x = t - shift - send_t[lo:hi]
        if d > 0:
            x = np.maximum(x, 1e-300)
            logf = (hops - 1) * np.log(x) - x / d - hops * math.log(d) - math.lgamma(hops)
            w = np.exp(logf - logf.max())
        else:
            w = (np.abs(x) <= 1e-9).astype(np.float64)
        score = np.bincount(senders[lo:hi], weights=w, minlength=cfg.clients)
        guesses[i] = int(np.argmax(score)) if score.max() > 0 else -1
    return guesses
