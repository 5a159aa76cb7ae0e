"""Where every delivery came from, for every sender at once: one sweep forward through the pools.

The backward walk (``Adversary.backward_matrix``) spreads a delivery's unit mass back over each
pool's arrivals with the pool rule's weights ``P(a -> d)`` and sums what reaches each sender's
injections. Those weights are the same forward and backward (they are the probability that
arrival ``a`` and departure ``d`` are one packet), so, summed over paths, the mass that sender
``c`` gets at delivery ``d`` is also what a forward spread of *all* of ``c``'s injections (unit
mass each) leaves on ``d``. This module does that spread once for every sender (or for a few
labels: epsilon needs two) and every row, stage by stage through the layers: per pool one
running sum over all its arrivals, a (arrivals x senders) array, with the pool's survival
factors shared by every column (``pools.py``'s rule with every arrival a column). Its cost is
senders x rows instead of targets x window, so it pays when targets are many and senders few.

It answers exactly what the walk answers, rule for rule: an injection ends a path, a corrupt
node or relay passes its mass along the known link, a pool spreads it, and mass on a row no
real packet could be on is dropped (the target row itself is read whatever it is, as the walk
starts there unchecked). What differs is only what the walk prunes: masses below ``FLOOR`` per
(target, injection), window tails below ``FLOOR``, arrivals more than a horizon before a
departure. The sweep keeps them; ``Adversary`` falls back to the walk for the targets where that
could show (a sender near zero, a near tie, almost no mass), so the figures agree to rounding
(``tests/simulations/test_origins.py``).

It needs a layered network (``node_layer``), so that every real-shaped row depends only on rows
of earlier stages, and a horizon that excludes nothing above ``FLOOR``; ``OriginSweep.usable``
says whether both hold, and the adversary walks otherwise.

**Why one module of ~430 lines:** one sweep and the cost model that decides when it is worth
running, with the row tables only it uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from simulations.observations import Observations, Role
from simulations.pools import FLOOR, LOG_FLOOR, PoolTables, _rebase

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Cells (rows x labels) of one stage's masses at most: labels are swept in groups this small,
#: so that the arrays fit in memory the allocator reuses (fresh pages cost more than the sums).
STAGE_CELLS = 2_000_000


class OriginSweep:
    """The stage structure of a layered run and the sweep of labelled injections through it."""

    def __init__(self, obs: Observations, tables: PoolTables, *, valid: BoolArray,
                 injected: BoolArray, known: BoolArray) -> None:
        self.obs = obs
        self.tables = tables
        self.valid = valid
        self.injected = injected
        self.known = known
        self._usable: bool | None = None
        self.reason = "no layers"
        self._cached: _Plan | None = None
        self.node_stage: IntArray | None = None
        if obs.node_layer is None or obs.n_rows == 0:
            return
        node_stage = np.where(obs.node_role == Role.CLIENT, 0, obs.node_layer + 1)
        if bool((node_stage[obs.node_role != Role.CLIENT] < 1).any()):
            self.reason = "a relay node below layer 0"
            return
        self.node_stage = node_stage.astype(np.int64)
        self.reason = ""

    @property
    def usable(self) -> bool:
        """Whether the sweep can answer for this run (its row tables are built on first use:
        the cost estimates do not need them)."""
        if self._usable is None:
            self._usable = self.node_stage is not None and self._prepare()
        return self._usable

    def _prepare(self) -> bool:
        obs, tables, valid, known = self.obs, self.tables, self.valid, self.known
        assert self.node_stage is not None
        self.row_stage = self.node_stage[obs.src]
        prev = obs.prev_row
        self.linked = known & (prev >= 0)
        link_ok = self.linked.copy()
        link_ok[self.linked] = valid[prev[self.linked]]
        self.link_ok = link_ok
        self.n_stages = int(self.row_stage.max()) + 1
        # Every real-shaped row a stage reads must come from an earlier stage.
        arr = tables.arr_row
        arr_node = obs.dst[arr]
        feeds = valid[arr]
        late = self.row_stage[arr[feeds]] >= self.node_stage[arr_node[feeds]]
        lx = np.flatnonzero(link_ok)
        if bool(late.any()) or bool((self.row_stage[prev[lx]] >= self.row_stage[lx]).any()):
            self.reason = "a real-shaped row feeds a stage that is not later"
            return False
        if not self._horizon_excludes_nothing():
            self.reason = "the horizon excludes arrivals above the floor"
            return False
        # The last stage that reads each stage's masses (through a pool or a known link).
        readers = [(self.row_stage[arr[feeds]], self.node_stage[arr_node[feeds]]),
                   (self.row_stage[prev[lx]], self.row_stage[lx])]
        n = self.n_stages
        seen = np.zeros(n * n, dtype=bool)
        for src_stage, reader in readers:
            seen[np.unique(src_stage * n + reader)] = True
        grid = seen.reshape(n, n)
        self.last_reader = np.where(grid.any(axis=1), n - 1 - np.argmax(grid[:, ::-1], axis=1),
                                    -1)
        # Position of each row in its stage's mass array (departures node-major and in time).
        self.pos = np.full(obs.n_rows, -1, dtype=np.int64)
        self.stage_rows: list[IntArray] = []
        dep_stage = self.node_stage[obs.src[tables.dep_row]] if tables.dep_row.size \
            else np.zeros(0, dtype=np.int64)
        for s in range(self.n_stages):
            rows = tables.dep_row[dep_stage == s] if s > 0 else np.zeros(0, dtype=np.int64)
            self.pos[rows] = np.arange(rows.size)
            self.stage_rows.append(rows)
        return True

    def _horizon_excludes_nothing(self) -> bool:
        """Whether every arrival the walk's horizon leaves out of a departure's window would
        have carried less than FLOOR of its mass to it (in practice: always, the horizon being
        40 mean delays; a trace with a wrong mean delay may not be)."""
        t = self.tables
        if t.dep_row.size == 0 or t.arr_row.size == 0:
            return True
        # Per node, the last arrival before each departure's horizon (both are node-major and
        # in time order within a node).
        cut = t.dep_time - t.horizon
        last_out = np.full(t.dep_row.size, -1, dtype=np.int64)
        lo = np.zeros(t.dep_row.size, dtype=np.int64)
        for node in np.flatnonzero((t.dep_end > t.dep_start) & (t.arr_end > t.arr_start)).tolist():
            d0, d1 = int(t.dep_start[node]), int(t.dep_end[node])
            a0, a1 = int(t.arr_start[node]), int(t.arr_end[node])
            last_out[d0:d1] = a0 + np.searchsorted(t.arr_time[a0:a1], cut[d0:d1], side="left") - 1
            lo[d0:d1] = a0
        has = last_out >= lo
        if not has.any():
            return True
        d = np.flatnonzero(has)
        a = last_out[d]
        slot = t.fwd_slot[t.arr_row[a]]
        same = (slot >= 0) & (slot <= d) & (t.arr_e[a] == t.dep_e[d])
        if not same.any():
            return True
        d, slot = d[same], slot[same]
        weight = np.exp(t.dep_f[d] - t.dep_f[slot]) * t.dep_inv_n[d]
        return bool(weight.max() <= FLOOR)

    def cells(self, n_labels: int, t_max: float) -> int:
        """Work of a sweep of ``n_labels`` labels up to time ``t_max``: rows x labels."""
        return int(np.count_nonzero(self.tables.dep_time <= t_max)) * n_labels

    def walk_cells_per_target(self) -> float:
        """About how many cells the backward walk fills per target: at each stage its window
        is as long as the windows of the pools before it together (each ends where a unit of
        mass has decayed below FLOOR, ``-LOG_FLOOR`` nats of the survival sum), times the
        rows per second the stage carries. Only to choose between the two; not a result."""
        t = self.tables
        stage = self.node_stage
        span = float(t.dep_time.max() - t.dep_time.min()) if t.dep_time.size else 0.0
        if stage is None or span <= 0:
            return 0.0
        total = 0.0
        window = 0.0
        for s in range(1, int(stage.max()) + 1):
            nodes = np.flatnonzero((stage == s) & (t.dep_end > t.dep_start))
            if nodes.size == 0:
                continue
            first = t.dep_start[nodes]
            last = t.dep_end[nodes] - 1
            drop = t.dep_f[first] - t.dep_f[last]
            took = t.dep_time[last] - t.dep_time[first]
            decay = np.where(drop > 0, -LOG_FLOOR * took / np.maximum(drop, 1e-300), took)
            window += float(np.mean(decay))
            rate = float((t.dep_end[nodes] - first).sum()) / span
            total += rate * window
        return total

    def masses(self, rows: IntArray, label: IntArray, n_labels: int) -> FloatArray:
        """(rows x labels): the mass each label's injections (unit each; ``label`` per node, -1
        for none) leave on each row, by the backward walk's rules."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((rows.size, n_labels))
        if rows.size == 0 or n_labels == 0:
            return out
        plan = self._plan(float(self.obs.t_dep[rows].max()))
        reads = self._reads(rows)
        widest = max((st.size for st in self.stage_rows), default=1)
        group = max(1, min(n_labels, STAGE_CELLS // max(widest, 1)))
        for g0 in range(0, n_labels, group):
            g1 = min(g0 + group, n_labels)
            part = np.where((label >= g0) & (label < g1), label - g0, -1)
            out[:, g0:g1] = self._sweep(plan, reads, rows, part, g1 - g0)
        return out

    # -- the plan: every index the sweep needs, whatever the labels and targets ---------------

    def _plan(self, t_max: float) -> _Plan:
        """The sweep's indices up to ``t_max`` (kept: a later query up to an earlier time reads
        the same departures, which nothing after them changes)."""
        cached = self._cached
        if cached is not None and cached.t_max >= t_max:
            return cached
        obs, t = self.obs, self.tables
        plan = _Plan(t_max)
        for s in range(self.n_stages):
            pools: list[_PoolPlan] = []
            links = None
            invalid = None
            if s > 0:
                nodes = np.flatnonzero((self.node_stage == s) & (t.dep_end > t.dep_start))
                for node in nodes.tolist():
                    pp = self._pool_plan(int(node), t_max)
                    if pp is not None:
                        pools.append(pp)
                kept = self.stage_rows[s]
                linked = kept[self.known[kept]]
                ok = self.link_ok[linked]
                links = (self.pos[linked], self.pos[linked[ok]],
                         self._sources(obs.prev_row[linked[ok]]))
                # Only real-shaped rows pass their mass on (after the targets read theirs).
                invalid = np.flatnonzero(~self.valid[kept])
            plan.pools.append(pools)
            plan.links.append(links)
            plan.invalid.append(invalid)
        self._cached = plan
        return plan

    def _reads(self, rows: IntArray) -> list[Any]:
        """Per stage, where its targets read their masses: (target index, position) in the
        stage's array, and for rows outside it (a loop's first row, a relay's output, where
        only a known link can bring anything) the known inputs."""
        target_stage = self.row_stage[rows]
        injected = self.injected[rows]
        reads: list[Any] = [None]
        for s in range(1, self.n_stages):
            want = np.flatnonzero((target_stage == s) & ~injected)
            r = rows[want]
            inside = self.pos[r] >= 0
            other = want[~inside]
            ro = rows[other]
            ok = self.link_ok[ro]
            reads.append((want[inside], self.pos[r[inside]], other[ok],
                          self._sources(self.obs.prev_row[ro[ok]])))
        return reads

    def _sources(self, rows: IntArray) -> _Sources:
        """Where the masses of some real-shaped rows of earlier stages are: an injection is one
        unit on its sender's label, any other row is read from its stage's array."""
        st = self.row_stage[rows]
        src = _Sources(rows.size)
        zero = np.flatnonzero((st == 0) & self.injected[rows] & self.valid[rows])
        src.one_hot = (zero, self.obs.src[rows[zero]])
        for s in np.unique(st[st > 0]).tolist():
            mine = np.flatnonzero(st == s)
            p = self.pos[rows[mine]]
            ok = p >= 0
            src.stages.append((int(s), mine[ok], p[ok]))
        return src

    def _pool_plan(self, node: int, t_max: float) -> _PoolPlan | None:
        """One pool: its real-shaped arrivals (weighted, in slot order), its rebasing parts,
        and for every kept departure the running sum it reads and its factor."""
        t = self.tables
        ds, de = int(t.dep_start[node]), int(t.dep_end[node])
        de = ds + int(np.searchsorted(t.dep_time[ds:de], t_max, side="right"))
        if de <= ds:
            return None
        a0, a1 = int(t.arr_start[node]), int(t.arr_end[node])
        arr_rows = t.arr_row[a0:a1]
        slot = t.fwd_slot[arr_rows]
        keep = (slot >= 0) & (slot < de) & self.valid[arr_rows]
        arr_rows, slot = arr_rows[keep], slot[keep]
        if arr_rows.size == 0:
            return None
        f, e = t.dep_f, t.dep_e
        starts = ds + _rebase(f[ds:de])
        weight = np.empty(arr_rows.size)
        parts: list[_Part] = []
        carry_epoch = -1
        has_carry = False
        for k in range(starts.size - 1):
            b0, b1 = int(starts[k]), int(starts[k + 1])
            ref = f[b0]
            i0 = int(np.searchsorted(slot, b0, side="left"))
            i1 = int(np.searchsorted(slot, b1, side="left"))
            s_k = slot[i0:i1]
            weight[i0:i1] = np.exp(ref - f[s_k])
            e_k = e[s_k]
            carry_in = has_carry and carry_epoch == e[b0]
            if carry_in:
                s_k = np.concatenate([[b0], s_k])
                e_k = np.concatenate([[carry_epoch], e_k])
            has_carry = False
            if s_k.size == 0:
                continue
            new_epoch = np.flatnonzero(e_k[1:] != e_k[:-1]) + 1
            reset = None
            if new_epoch.size:
                seg = np.searchsorted(new_epoch, np.arange(e_k.size), side="right")
                before = np.concatenate([[-1], new_epoch - 1])[seg]
                has = np.flatnonzero(before >= 0)
                reset = (has, before[has])
            win = np.arange(b0, b1)
            pick = np.searchsorted(s_k, win, side="right") - 1
            ok = pick >= 0
            ok[ok] = e_k[pick[ok]] == e[win[ok]]
            scale = np.where(ok, np.exp(f[win] - ref) * t.dep_inv_n[win], 0.0)
            p0 = int(self.pos[t.dep_row[b0]])
            carry_out = None
            if b1 < de and e_k[-1] == e[b1 - 1]:
                carry_out = math.exp(f[b1] - ref)
                carry_epoch = int(e_k[-1])
                has_carry = True
            parts.append(_Part(i0, i1, carry_in, reset, np.maximum(pick, 0), scale,
                               slice(p0, p0 + (b1 - b0)), carry_out))
        return _PoolPlan(self._sources(arr_rows), weight, parts)

    # -- one group of labels ------------------------------------------------------------------

    def _sweep(self, plan: _Plan, reads: list[Any], rows: IntArray, label: IntArray,
               width: int) -> FloatArray:
        out = np.zeros((rows.size, width))
        inj = np.flatnonzero(self.injected[rows])
        lab = label[self.obs.src[rows[inj]]]
        ok = lab >= 0
        out[inj[ok], lab[ok]] = 1.0  # the walk ends on an injection at once
        stages: dict[int, FloatArray] = {}
        for s in range(1, self.n_stages):
            mass = np.zeros((self.stage_rows[s].size, width))
            for pool in plan.pools[s]:
                x = self._gather(pool.sources, stages, label, width)
                x *= pool.weight[:, None]
                carry: FloatArray | None = None
                for part in pool.parts:
                    v = x[part.i0: part.i1]
                    if part.carry_in and carry is not None:
                        v = np.concatenate([carry[None, :], v], axis=0)
                    cum = np.cumsum(v, axis=0)
                    if part.reset is not None:
                        has, before = part.reset
                        cum[has] -= cum[before]
                        np.maximum(cum, 0.0, out=cum)
                    dest = mass[part.out_at]
                    np.take(cum, part.pick, axis=0, out=dest)
                    dest *= part.scale[:, None]
                    carry = cum[-1] * part.carry_out if part.carry_out is not None else None
            links = plan.links[s]
            if links is not None and links[0].size:
                every, good, src = links
                mass[every] = 0.0
                mass[good] = self._gather(src, stages, label, width)
            if reads[s] is not None:
                at, pos, other, src = reads[s]
                out[at] = mass[pos]
                if other.size:
                    out[other] = self._gather(src, stages, label, width)
            bad = plan.invalid[s]
            if bad is not None and bad.size:
                mass[bad] = 0.0
            stages[s] = mass
            for old in [k for k in stages if k != s and self.last_reader[k] <= s]:
                del stages[old]
        return out

    @staticmethod
    def _gather(src: _Sources, stages: dict[int, FloatArray], label: IntArray,
                width: int) -> FloatArray:
        """The masses ``src`` points at, for this group of labels."""
        if len(src.stages) == 1 and src.stages[0][1].size == src.n and src.one_hot[0].size == 0:
            s, _, pos = src.stages[0]
            return np.take(stages[s], pos, axis=0)
        x = np.zeros((src.n, width))
        idx, nodes = src.one_hot
        if idx.size:
            lab = label[nodes]
            ok = lab >= 0
            x[idx[ok], lab[ok]] = 1.0
        for s, at, pos in src.stages:
            x[at] = np.take(stages[s], pos, axis=0)
        return x


class _Sources:
    """Rows of earlier stages, as ``(index, sender node)`` of injections and, per stage,
    ``(stage, index, position in that stage's array)``."""

    __slots__ = ("n", "one_hot", "stages")

    def __init__(self, n: int) -> None:
        self.n = n
        self.one_hot: tuple[IntArray, IntArray] = (np.zeros(0, dtype=np.int64),
                                                   np.zeros(0, dtype=np.int64))
        self.stages: list[tuple[int, IntArray, IntArray]] = []


@dataclass(slots=True)
class _Part:
    """One rebasing part of a pool: arrivals ``i0:i1``, whether the previous part's running
    sum is carried in, the epoch restarts, and what the kept departures read."""

    i0: int
    i1: int
    carry_in: bool
    reset: tuple[IntArray, IntArray] | None
    pick: IntArray
    scale: FloatArray
    out_at: slice
    carry_out: float | None


@dataclass(slots=True)
class _PoolPlan:
    sources: _Sources
    weight: FloatArray
    parts: list[_Part]


@dataclass(slots=True)
class _Plan:
    t_max: float
    pools: list[list[_PoolPlan]] = field(default_factory=list)
    links: list[Any] = field(default_factory=list)
    invalid: list[Any] = field(default_factory=list)
