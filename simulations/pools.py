"""The adversary's bookkeeping of every mix pool, and the pool rule applied to many targets at once.

The rule (derived in docs/simulations.md, "The pool rule"). A node whose every packet is held for
an independent Exp(mu) delay is observed: arrivals and departures with their times. For any
assignment of departures to earlier arrivals the likelihood is ``prod mu exp(-mu (out_i - in_i))``
times ``exp(-mu (T - in_k))`` for packets still inside at the end, and the exponent's sum does not
depend on the assignment. So every consistent assignment is equally likely, and a uniformly random
one is drawn by letting each departure pick uniformly among the ``n`` packets inside at that
moment. Hence, exactly:

    P(arrival a left as departure d) = (1 / n_d) * prod over departures k with a < k < d of
                                       (1 - 1 / n_k)

Writing ``F[k]`` for the sum of ``log(1 - 1/n_j)`` over the departures before ``k`` (one
cumulative sum for the whole run, shared by every target), this is ``exp(F[d] - F[a]) / n_d``. A
departure that empties the pool (``n = 1``) ends an *epoch* of that pool: nothing that arrived
before it can leave after it.

**Many targets per pool.** Index a pool's departures ``j = 0, 1, ...`` and give every arrival the
index of the first departure after it (its *slot*). For a set of targets with masses ``p`` on
arrivals of one pool, the mass each departure carries is

    out[t, j] = exp(F[j]) / n_j * cumsum over slots s <= j of (sum of p[t, a] exp(-F[a]) in s)

so the pool's factors ``exp(+-F)`` and ``1/n`` are one row vector shared by every target, and
what is per target is one cumulative sum along the departures: a dense (targets x departures)
block over the window the targets occupy, instead of one small walk per target and node.
Backward (where did this departure come from?) is the mirror image: a suffix sum over departures
into the arrivals before them. ``F`` is rebased inside every block (the exponents stay below
``REBASE_NATS``, so nothing overflows), and each epoch starts from zero. Results are the same as
the per-target walk (kept in ``tests/simulations/reference_adversary.py``) to rounding.

Assignments at different nodes are independent given the observations (the likelihood factors
by node), so chaining the per-node kernels gives the exact network posterior.

**Why one module of ~540 lines:** the pool tables and the pool rule's forward and backward
spreads share one data layout (sorted events per node); split apart, each half would restate it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulations.observations import Observations

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Probabilities below this are dropped from a target's frontier (log: ``LOG_FLOOR``).
FLOOR = 1e-15
LOG_FLOOR = math.log(FLOOR)
#: A block's survival exponents stay within this many nats of its reference (exp(300) and
#: exp(-300) are comfortably inside float64), so long-lived small pools cannot overflow.
REBASE_NATS = 300.0
#: Slack on the floor-based cut of a window, so rounding never drops a value above ``FLOOR``.
CUT_MARGIN_NATS = 1e-6


class PoolTables:
    """Per-pool event tables (departures and arrivals, each node-major and time-ordered)."""

    def __init__(self, obs: Observations, horizon: float) -> None:
        self.obs = obs
        self.horizon = float(horizon)
        in_rows = np.flatnonzero(obs.pool_arrivals())
        out_rows = np.flatnonzero(obs.pool_departures())
        n_nodes = obs.n_nodes
        # Arrivals and departures are sorted apart (node-major, then time) and merged per node
        # by binary search: at equal times an arrival comes first (zero delay).
        arr_node, self.arr_time, self.arr_row = _by_node_and_time(obs.dst, obs.t_arr, in_rows)
        dep_node, self.dep_time, self.dep_row = _by_node_and_time(obs.src, obs.t_dep, out_rows)
        arr_counts = np.bincount(arr_node, minlength=n_nodes)
        dep_counts = np.bincount(dep_node, minlength=n_nodes)
        self.arr_end = np.cumsum(arr_counts)
        self.arr_start = self.arr_end - arr_counts
        self.dep_end = np.cumsum(dep_counts)
        self.dep_start = self.dep_end - dep_counts
        # Per departure: arrivals of its node up to it; per arrival: departures of its node
        # before it (both counted within the node).
        arrs_upto = np.zeros(self.dep_row.size, dtype=np.int64)
        deps_before = np.zeros(self.arr_row.size, dtype=np.int64)
        for node in np.flatnonzero((dep_counts > 0) | (arr_counts > 0)).tolist():
            a0, a1 = int(self.arr_start[node]), int(self.arr_end[node])
            d0, d1 = int(self.dep_start[node]), int(self.dep_end[node])
            arrs_upto[d0:d1] = np.searchsorted(self.arr_time[a0:a1], self.dep_time[d0:d1],
                                               side="right")
            deps_before[a0:a1] = np.searchsorted(self.dep_time[d0:d1], self.arr_time[a0:a1],
                                                 side="left")
        # Pool size just before a departure: arrivals so far minus earlier departures.
        k = np.arange(self.dep_row.size, dtype=np.int64) - self.dep_start[dep_node]
        n_before = np.maximum(arrs_upto - k, 1).astype(np.float64)
        empty = n_before <= 1
        with np.errstate(divide="ignore"):
            term = np.where(~empty, np.log1p(-1.0 / n_before), 0.0)
        # Exclusive cumulative sums over the whole run (departures node-major; an arrival adds
        # nothing): F is non-increasing, the epoch count E non-decreasing, so both can be
        # searched with searchsorted. ``*_ext`` also hold the sums after the last departure.
        f_ext = np.concatenate([[0.0], np.cumsum(term)])
        e_ext = np.concatenate([[0], np.cumsum(empty)])
        self.dep_f = f_ext[:-1]
        self.dep_negf = -self.dep_f
        self.dep_e = e_ext[:-1]
        self.dep_inv_n = 1.0 / n_before
        arr_slot = self.dep_start[arr_node] + deps_before
        self.arr_f = f_ext[arr_slot]
        self.arr_negf = -self.arr_f
        self.arr_e = e_ext[arr_slot]
        # Per row: the slot of an arriving row (first departure after it, global index), and
        # the slot of a departing row (last arrival before it). -1: no such event in the node.
        self.fwd_slot = np.full(obs.n_rows, -1, dtype=np.int64)
        self.fwd_slot[self.arr_row] = np.where(arr_slot < self.dep_end[arr_node], arr_slot, -1)
        self.bwd_slot = np.full(obs.n_rows, -1, dtype=np.int64)
        self.bwd_dep = np.full(obs.n_rows, -1, dtype=np.int64)
        prev_arr = self.arr_start[dep_node] + arrs_upto - 1
        ok = arrs_upto > 0
        # A departure whose pool emptied since its last arrival carries nothing from before.
        ok[ok] = self.dep_e[ok] == self.arr_e[prev_arr[ok]]
        self.bwd_slot[self.dep_row] = np.where(ok, prev_arr, -1)
        self.bwd_dep[self.dep_row] = np.arange(self.dep_row.size)
        # Mean departures per second of a pool (for sizing batches of targets).
        pools = int(np.count_nonzero(dep_counts))
        times = [x for x in (self.arr_time, self.dep_time) if x.size]
        span = float(max(x.max() for x in times) - min(x.min() for x in times)) if times \
            else 0.0
        self.departure_rate = self.dep_row.size / (pools * span) if pools and span > 0 else 0.0
        self.arrival_rows = np.zeros(obs.n_rows, dtype=bool)
        self.arrival_rows[in_rows] = True
        self.departure_rows = np.zeros(obs.n_rows, dtype=bool)
        self.departure_rows[out_rows] = True

    # -- one hop of a batch of targets -------------------------------------------------------

    def hop(self, blocks: list[Block], bi: IntArray, ci: IntArray, rows: IntArray, n_tgt: int,
            *, forward: bool) -> list[Block]:
        """Spread masses through pools: column ``ci[k]`` of ``blocks[bi[k]]`` enters (forward) or
        leaves (backward) a pool on ``rows[k]``. Returns one block per pool."""
        if rows.size == 0:
            return []
        node = self.obs.dst[rows] if forward else self.obs.src[rows]
        slot = self.fwd_slot[rows] if forward else self.bwd_slot[rows]
        live = slot >= 0
        if not live.all():
            bi, ci, rows, node, slot = bi[live], ci[live], rows[live], node[live], slot[live]
        if rows.size == 0:
            return []
        # Sort the columns by pool, then by block (a counting sort on a small key), so that
        # every (pool, block) pair is one contiguous run.
        key = node * len(blocks) + bi
        top = int(key.max())
        small = key.astype(np.int16) if top < 2**15 else key.astype(np.int32) if top < 2**31 \
            else key
        order = np.argsort(small, kind="stable")
        bi, ci, rows, node, slot, key = (a[order] for a in (bi, ci, rows, node, slot, key))
        cut = np.flatnonzero(key[1:] != key[:-1]) + 1
        run_start = np.concatenate([[0], cut])
        run_end = np.concatenate([cut, [key.size]])
        run_node = node[run_start]
        pool_cut = np.flatnonzero(run_node[1:] != run_node[:-1]) + 1
        pool_first = np.concatenate([[0], pool_cut])
        pool_last = np.concatenate([pool_cut, [run_node.size]])
        out: list[Block] = []
        for p0, p1 in zip(pool_first.tolist(), pool_last.tolist(), strict=True):
            c0, c1 = int(run_start[p0]), int(run_end[p1 - 1])
            runs = [(int(bi[run_start[r]]), int(run_start[r]) - c0, int(run_end[r]) - c0)
                    for r in range(p0, p1)]
            cols = PoolColumns(int(run_node[p0]), runs, ci[c0:c1], rows[c0:c1], slot[c0:c1])
            block = (self._forward_pool if forward else self._backward_pool)(blocks, cols, n_tgt)
            if block is not None:
                out.append(block)
        return out

    def _forward_pool(self, blocks: list[Block], cols: PoolColumns, n_tgt: int) -> Block | None:
        """Masses on the arrivals of one pool -> masses its departures carry."""
        ds, de = int(self.dep_start[cols.node]), int(self.dep_end[cols.node])
        slot = cols.slot
        lo = int(slot.min())
        # The window ends a horizon after the last arrival (where the old per-target walk cut
        # each target's window), or where even a whole unit of mass that arrived last has
        # decayed below FLOOR, whichever comes first.
        s_max = int(slot.max())
        # The latest arrival is among those of the last slot (an earlier slot's arrivals came
        # before that slot's departure, hence before every arrival after it).
        t_end = float(self.obs.t_arr[cols.rows[slot == s_max]].max()) + self.horizon
        by_time = np.searchsorted(self.dep_time[ds:de], t_end, side="right")
        slowest = float(self.dep_f[s_max])
        by_mass = np.searchsorted(self.dep_negf[ds:de],
                                  -(slowest + LOG_FLOOR - CUT_MARGIN_NATS), side="right")
        hi = ds + min(int(by_time), int(by_mass))
        if hi <= lo:
            return None
        # Arrival a (in slot s) weighs exp(ref - F[s]) >= 1 and departure j carries
        # exp(F[j] - ref) / n_j of the running sum, ref being the survival sum at the first
        # departure of the rebasing part (see ``_rebase``); a new epoch restarts the sum. The
        # arrivals' weights are applied as their masses are gathered (one pass less).
        f, e = self.dep_f, self.dep_e
        starts = lo + _rebase(f[lo:hi])
        if starts.size == 2:
            return self._forward_one_part(blocks, cols, n_tgt, lo, hi)
        keep = slot < hi
        part_of = np.clip(np.searchsorted(starts, slot, side="right") - 1, 0, starts.size - 2)
        weight = np.exp(f[starts[part_of]] - f[slot])
        tids, raw, a_slot = _gather(blocks, cols, keep, n_tgt, descending=False, weight=weight)
        if a_slot.size == 0:
            return None
        vals = raw[:, :-1]
        cums: list[FloatArray] = []
        col_slot: list[IntArray] = []
        col_epoch: list[IntArray] = []
        col_part: list[IntArray] = []
        carry: FloatArray | None = None
        carry_epoch = -1
        at = 0
        for k in range(starts.size - 1):
            b0, b1 = int(starts[k]), int(starts[k + 1])
            ref = f[b0]
            n_k = int(np.searchsorted(a_slot[at:], b1, side="left"))
            v = vals[:, at: at + n_k]
            s_k, e_k = a_slot[at: at + n_k], e[a_slot[at: at + n_k]]
            at += n_k
            if carry is not None and carry_epoch == e[b0]:
                v = np.concatenate([carry[:, None], v], axis=1)
                s_k = np.concatenate([[b0], s_k])
                e_k = np.concatenate([[carry_epoch], e_k])
            # One part: the running sums overwrite the gathered masses in place.
            cum = _running_sums(v, e_k, out=v if starts.size == 2 else None)
            cums.append(cum)
            col_slot.append(s_k)
            col_epoch.append(e_k)
            col_part.append(np.full(s_k.size, k, dtype=np.int64))
            carry = None
            if b1 < hi and e_k.size and e_k[-1] == e[b1 - 1]:
                carry = cum[:, -1] * math.exp(f[b1] - ref)
                carry_epoch = int(e_k[-1])
        cum = raw if starts.size == 2 else np.concatenate([*cums, np.zeros((tids.size, 1))],
                                                          axis=1)
        c_slot = np.concatenate(col_slot)
        c_epoch = np.concatenate(col_epoch)
        win = np.arange(lo, hi)
        pick = np.searchsorted(c_slot, win, side="right") - 1
        part = np.searchsorted(starts, win, side="right") - 1
        ok = pick >= 0
        c_part = np.concatenate(col_part)
        ok[ok] = (c_epoch[pick[ok]] == e[win[ok]]) & (c_part[pick[ok]] == part[ok])
        scale = np.exp(f[lo:hi] - f[starts[part]]) * self.dep_inv_n[lo:hi]
        return _block(tids, self.dep_row[lo:hi], cum, np.where(ok, pick, -1), scale)

    def _forward_one_part(self, blocks: list[Block], cols: PoolColumns, n_tgt: int, lo: int,
                          hi: int) -> Block | None:
        """``_forward_pool`` for a window of one rebasing part (nearly every window): each
        column is read from its block, times its block's factor and its weight
        ``exp(F[lo] - F[slot])``, straight into its place in slot order; one running sum in
        place; departures find their column by counting (slots are integers in the window)."""
        f, e = self.dep_f, self.dep_e
        keep = cols.slot < hi
        has = np.zeros(n_tgt, dtype=bool)
        for b, _, _ in cols.runs:
            has[blocks[b].tids] = True
        tids = np.flatnonzero(has)
        loc = np.cumsum(has) - 1
        pieces: list[tuple[int, IntArray, int]] = []
        slots: list[IntArray] = []
        for b, r0, r1 in cols.runs:
            k = keep[r0:r1]
            which = cols.ci[r0:r1][k]
            if which.size:
                pieces.append((b, which, sum(x.size for x in slots)))
                slots.append(cols.slot[r0:r1][k])
        if not slots:
            return None
        slot = np.concatenate(slots)
        width = slot.size
        order = np.argsort(slot, kind="stable")
        a_slot = slot[order]
        dest = np.empty(width, dtype=np.int64)
        dest[order] = np.arange(width)
        weight = np.exp(f[lo] - f[slot])
        cum = np.zeros((tids.size, width + 1))
        for b, which, at in pieces:
            blk = blocks[b]
            pick = blk.pick[which]
            vals = np.take(blk.cum, np.where(pick >= 0, pick, blk.cum.shape[1] - 1), axis=1)
            vals *= blk.scale[which] * weight[at: at + which.size]
            d = dest[at: at + which.size]
            if blk.tids.size == tids.size:
                cum.T[d] = vals.T
            else:
                cum[loc[blk.tids][:, None], d[None, :]] = vals
        body = cum[:, :width]
        np.cumsum(body, axis=1, out=body)
        c_epoch = e[a_slot]
        if c_epoch[0] != c_epoch[-1]:
            _restart_epochs(body, c_epoch)
        # Departure j reads the last column whose slot is <= j.
        pick = np.cumsum(np.bincount(a_slot - lo, minlength=hi - lo)) - 1
        if e[lo] != e[hi - 1]:
            ok = pick >= 0
            win = np.arange(lo, hi)
            ok[ok] = c_epoch[pick[ok]] == e[win[ok]]
            pick = np.where(ok, pick, -1)
        scale = np.exp(f[lo:hi] - f[lo]) * self.dep_inv_n[lo:hi]
        return _block(tids, self.dep_row[lo:hi], cum, pick, scale)

    def _backward_pool(self, blocks: list[Block], cols: PoolColumns, n_tgt: int) -> Block | None:
        """Masses on the departures of one pool -> masses on the arrivals they came from."""
        a_s, a_e = int(self.arr_start[cols.node]), int(self.arr_end[cols.node])
        slot = cols.slot
        d_all = self.bwd_dep[cols.rows]
        hi = int(slot.max()) + 1
        # The window starts a horizon before the first departure, or where even a whole unit of
        # mass leaving first would have decayed below FLOOR (see ``_forward_pool``).
        t_start = float(self.dep_time[d_all].min()) - self.horizon
        by_time = np.searchsorted(self.arr_time[a_s:a_e], t_start, side="left")
        top = float(self.dep_f[d_all].max())
        by_mass = np.searchsorted(self.arr_negf[a_s:a_e],
                                  -(top - LOG_FLOOR + CUT_MARGIN_NATS), side="left")
        lo = a_s + max(int(by_time), int(by_mass))
        if hi <= lo:
            return None
        # Columns run by descending slot. A departure d weighs exp(F[d] - ref) / n_d and
        # arrival i gets exp(ref - F[i]) of the running (suffix) sum of the departures after
        # it, ref being the survival sum at the last arrival of the rebasing part. The
        # departures' weights are applied as their masses are gathered.
        f, e = self.arr_f, self.arr_e
        starts = lo + _rebase(f[lo:hi])
        n_parts = starts.size - 1
        keep = slot >= lo
        part_of = np.clip(np.searchsorted(starts, slot, side="right") - 1, 0, n_parts - 1)
        weight = self.dep_inv_n[d_all] * np.exp(self.dep_f[d_all] - f[starts[part_of + 1] - 1])
        tids, raw, d_slot = _gather(blocks, cols, keep, n_tgt, descending=True, weight=weight)
        if d_slot.size == 0:
            return None
        vals = raw[:, :-1]
        cums: list[FloatArray] = []
        col_slot: list[IntArray] = []
        col_epoch: list[IntArray] = []
        col_part: list[IntArray] = []
        carry: FloatArray | None = None
        carry_epoch = -1
        at = 0
        for k in range(n_parts - 1, -1, -1):
            b0, b1 = int(starts[k]), int(starts[k + 1])
            ref = f[b1 - 1]
            n_k = int(np.searchsorted(-d_slot[at:], -b0, side="right"))
            sel = slice(at, at + n_k)
            v = vals[:, sel]
            s_k, e_k = d_slot[sel], e[d_slot[sel]]
            at += n_k
            if carry is not None and carry_epoch == e[b1 - 1]:
                # The carry stands for the departures above this part: it sits half a slot
                # below b1, so that arrivals of the part above do not read it.
                v = np.concatenate([carry[:, None], v], axis=1)
                s_k = np.concatenate([[b1 - 0.5], s_k])
                e_k = np.concatenate([[carry_epoch], e_k])
            cum = _running_sums(v, e_k, out=v if n_parts == 1 else None)
            cums.append(cum)
            col_slot.append(s_k)
            col_epoch.append(e_k)
            col_part.append(np.full(s_k.size, k, dtype=np.int64))
            carry = None
            if k > 0 and e_k.size and e_k[-1] == e[b0]:
                carry = cum[:, -1] * math.exp(ref - f[b0 - 1])
                carry_epoch = int(e_k[-1])
        cum = raw if n_parts == 1 else np.concatenate([*cums, np.zeros((tids.size, 1))], axis=1)
        c_slot = np.concatenate(col_slot)
        c_epoch = np.concatenate(col_epoch)
        win = np.arange(lo, hi)
        pick = np.searchsorted(-c_slot, -win, side="right") - 1
        if starts.size == 2:
            # One part, and one epoch unless the count changes (see ``_forward_pool``).
            if e[lo] != e[hi - 1]:
                ok = pick >= 0
                ok[ok] = c_epoch[pick[ok]] == e[win[ok]]
                pick = np.where(ok, pick, -1)
            scale = np.exp(f[hi - 1] - f[lo:hi])
            return _block(tids, self.arr_row[lo:hi], cum, pick, scale)
        part = np.searchsorted(starts, win, side="right") - 1
        ok = pick >= 0
        c_part = np.concatenate(col_part)
        ok[ok] = (c_epoch[pick[ok]] == e[win[ok]]) & (c_part[pick[ok]] == part[ok])
        scale = np.exp(f[starts[part + 1] - 1] - f[lo:hi])
        return _block(tids, self.arr_row[lo:hi], cum, np.where(ok, pick, -1), scale)


@dataclass(frozen=True, slots=True)
class PoolColumns:
    """The columns of a hop that reach one pool: ``runs`` lists (block, start, end) ranges of
    ``ci`` (column in that block), ``rows`` and ``slot``."""

    node: int
    runs: list[tuple[int, int, int]]
    ci: IntArray
    rows: IntArray
    slot: IntArray


@dataclass(slots=True)
class Block:
    """Masses of some targets on some rows, kept as running sums: target ``tids[i]`` has
    ``cum[i, pick[j]] * scale[j]`` on ``rows[j]`` (``pick`` -1: nothing).

    ``cum`` holds one pool's running sums over its sorted arrivals (forward) or departures
    (backward); each row of the pool's window reads one of its columns. Between hops a walk is a
    list of these, one per pool it just crossed: the next pools gather exactly the cells they
    need, and no (targets x window) array is ever written."""

    tids: IntArray
    rows: IntArray
    cum: FloatArray
    pick: IntArray
    scale: FloatArray

    def values(self, cols: IntArray) -> FloatArray:
        """The (targets x len(cols)) masses on columns ``cols``."""
        pick = self.pick[cols]
        vals = np.take(self.cum, np.where(pick >= 0, pick, self.cum.shape[1] - 1), axis=1)
        vals *= self.scale[cols]
        return vals


def _gather(blocks: list[Block], cols: PoolColumns, keep: BoolArray, n_tgt: int, *,
            descending: bool, weight: FloatArray) -> tuple[IntArray, FloatArray, IntArray]:
    """The kept columns of one pool, each times its ``weight``, as one (targets x columns + 1)
    array sorted by slot (ascending forward, descending backward) whose last column is zero
    (the cell a row with no mass reads), with the targets present and the sorted slots."""
    has = np.zeros(n_tgt, dtype=bool)
    for b, _, _ in cols.runs:
        has[blocks[b].tids] = True
    tids = np.flatnonzero(has)
    loc = np.cumsum(has) - 1
    slot = cols.slot[keep]
    width = slot.size
    full = all(blocks[b].tids.size == tids.size for b, _, _ in cols.runs)
    raw = np.empty((tids.size, width + 1)) if full else np.zeros((tids.size, width + 1))
    raw[:, width] = 0.0
    w_kept = weight[keep]
    at = 0
    for b, r0, r1 in cols.runs:
        k = keep[r0:r1]
        which = cols.ci[r0:r1][k]
        n = which.size
        if not n:
            continue
        blk = blocks[b]
        pick = blk.pick[which]
        vals = np.take(blk.cum, np.where(pick >= 0, pick, blk.cum.shape[1] - 1), axis=1)
        vals *= blk.scale[which] * w_kept[at: at + n]
        if full:
            raw[:, at: at + n] = vals
        else:
            raw[loc[blk.tids], at: at + n] = vals
        at += n
    if width > 1 and bool((slot[1:] > slot[:-1]).any() if descending
                          else (slot[1:] < slot[:-1]).any()):
        order = np.argsort(-slot if descending else slot, kind="stable")
        raw = np.take(raw, np.append(order, width), axis=1)
        slot = slot[order]
    # (Already in order: a stable sort would not move anything.)
    return tids, raw, slot


def _rebase(f: FloatArray) -> IntArray:
    """Starts of the window's rebasing parts, and its end: each part spans less than
    ``REBASE_NATS`` of the survival sum ``f`` (non-increasing), so that exp(+-(f - ref)) stays
    finite; [0, n] (one part) in all but very long windows."""
    n = f.size
    if n == 0 or f[0] - f[-1] < REBASE_NATS:
        return np.array([0, n], dtype=np.int64)
    starts = [0]
    while True:
        b0 = starts[-1]
        b1 = b0 + max(1, int(np.searchsorted(-f[b0:], -(f[b0] - REBASE_NATS), side="left")))
        if b1 >= n:
            break
        starts.append(b1)
    return np.array([*starts, n], dtype=np.int64)


def _running_sums(vals: FloatArray, epoch: IntArray, out: FloatArray | None = None
                  ) -> FloatArray:
    """Running sums along the columns, restarting wherever the pool's epoch changes (into
    ``out`` when given, which may be ``vals`` itself)."""
    cum = np.cumsum(vals, axis=1, out=out)
    _restart_epochs(cum, epoch)
    return cum


def _restart_epochs(cum: FloatArray, epoch: IntArray) -> None:
    """Turn running sums into sums since each column's epoch began (in place)."""
    new_epoch = np.flatnonzero(epoch[1:] != epoch[:-1]) + 1
    if new_epoch.size:
        # Subtract the sum before each epoch's first column. The rounding error is that of the
        # mass that left before the pool emptied (at most ~1e-16 of a probability).
        seg = np.searchsorted(new_epoch, np.arange(epoch.size), side="right")
        before = np.concatenate([[-1], new_epoch - 1])[seg]
        has = before >= 0
        cum[:, has] -= cum[:, before[has]]
        np.maximum(cum, 0.0, out=cum)


def _block(tids: IntArray, rows: IntArray, cum: FloatArray, pick: IntArray,
           scale: FloatArray) -> Block | None:
    """A pool's block, without the rows at either end of its window whose mass is below FLOOR
    for every target."""
    col_max = cum.max(axis=0)
    top = np.where(pick >= 0, col_max[np.maximum(pick, 0)], 0.0) * scale
    used = np.flatnonzero(top > FLOOR)
    if used.size == 0:
        return None
    a, b = int(used[0]), int(used[-1]) + 1
    return Block(tids, rows[a:b], cum, pick[a:b], scale[a:b])


def _by_node_and_time(node_of: IntArray, time_of: FloatArray,
                      rows: IntArray) -> tuple[IntArray, FloatArray, IntArray]:
    """``rows`` ordered node-major, then by time, ties in row order: (nodes, times, rows).

    A stable counting sort on the node, then a quicksort on time within each node (a few
    thousand events, in cache: faster than one sort of the whole run); where two events of a
    node share a time (zero delay), ``lexsort`` keeps them in row order."""
    node = node_of[rows]
    time = time_of[rows]
    if node.size == 0:
        return node, time, rows
    small = node.astype(np.int16) if int(node.max()) < 2**15 else node
    by_node = np.argsort(small, kind="stable")
    node_s = node[by_node]
    time_s = time[by_node]
    cut = np.flatnonzero(node_s[1:] != node_s[:-1]) + 1
    bounds = np.concatenate([[0], cut, [node_s.size]]).tolist()
    order = np.empty(node.size, dtype=np.int64)
    for a, b in itertools.pairwise(bounds):
        order[a:b] = by_node[a:b][np.argsort(time_s[a:b])]
    st = time[order]
    same_node = node_s[1:] == node_s[:-1]
    if bool((same_node & (st[1:] <= st[:-1])).any()):
        order = np.lexsort((time, node))
        st = time[order]
    return node[order], st, rows[order]
