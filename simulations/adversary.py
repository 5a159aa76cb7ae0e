"""The global passive adversary: follows target packets through every pool it observes.

For a target packet injected by a client, it propagates the packet's probability forward
through each pool (``PoolTables.forward``) until it reaches delivery rows: the distribution over
delivered packets gives the **message entropy**. For a target delivered packet it propagates
backward to the injection rows: the distribution over clients gives the **sender entropy**, and
for two challenge senders, Loopix's **epsilon**. All targets of a run are walked together in
batches (one dense block per pool and hop), not one walk each. The backward figures can also
come from one forward sweep of every sender's injections (``simulations/origins.py``); the
adversary takes whichever is cheaper, and both give the same posteriors.

Mass that reaches a row no real packet could be on (a node's returning loop, a relay, cover a
corrupt provider recognized, a path that skips or repeats a layer) is dropped: the posterior is
conditioned on the target being a real packet, and ``shannon_bits`` renormalizes.

**Why one module of ~460 lines:** the forward and backward walks and the entropy/epsilon figures
read the same batches and tables; they are one adversary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulations.entropy import shannon_bits
from simulations.observations import Observations, Role
from simulations.origins import OriginSweep
from simulations.pools import FLOOR, Block, PoolTables

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: A frontier never needs more hops than this; it guards against a malformed trace with a cycle.
MAX_HOPS = 64
END = 1
POOL = 2
KNOWN = 3

EndBlock = tuple[IntArray, IntArray, FloatArray]
#: Targets walked together at most.
BATCH = 128
#: What the numpy calls for one pool and hop cost, in cells of a dense block (measured on the
#: benchmark's 3 x 10 stratified case: 25,000 walked it ~15% faster than 12,500; see
#: ``Adversary._batches``).
OVERHEAD_CELLS = 25_000
#: A cell of the origin sweep costs about this share of a cell of the backward walk (measured on
#: the benchmark's 3 x 10 network: 13 ns and 19 ns); it picks the cheaper of the two.
SWEEP_CELL_COST = 0.7
#: Where the sweep keeps what the walk prunes (below FLOOR), the two can disagree on whether a
#: sender has any mass at all, or on a near tie: such targets are walked (see ``origins.py``).
AMBIGUOUS_MASS = 1e-9
AMBIGUOUS_TOTAL = 1e-3
AMBIGUOUS_TIE = 1e-9


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


@dataclass(frozen=True, slots=True)
class Summary:
    """Per-target figures of a forward walk: mass delivered, message entropy, best guess."""

    mass: FloatArray
    entropy_bits: FloatArray
    top: IntArray
    """The most likely delivered row (the smallest among ties; -1 when none)."""
    recipient_entropy_bits: FloatArray | None = None
    """Entropy over recipients: a delivery into a corrupt provider names its mailbox owner, one
    into an honest provider any of that provider's clients alike (None without providers)."""


class Adversary:
    """Observes every link row; knows the mean delay only to bound how far back it looks.

    Targets are walked together, in batches of nearby times, hop by hop: at every hop each pool
    spreads the batch's masses in one dense block (``PoolTables.hop``); a corrupt node or a
    relay passes them along its known link instead.
    """

    def __init__(self, obs: Observations, horizon: float) -> None:
        self.obs = obs
        self.horizon = horizon
        self.tables = PoolTables(obs, horizon)
        self._ends_fwd = obs.endpoints()
        self._ends_bwd = obs.injected()
        self._valid = obs.real_shaped()
        bad = obs.corrupt
        self._known_fwd = (bad[obs.dst] & obs.mixing_in()) | obs.flag("relay")
        self._known_bwd = (bad[obs.src] & obs.mixing_out()) | obs.relay_out()
        # In a layered model every path from an injection to a delivery has the same length, so
        # no target reaches a row twice; a trace is not assumed to be layered.
        self._one_path_length = obs.node_layer is not None
        self._origins: OriginSweep | None = None
        clients = np.flatnonzero(obs.node_role == Role.CLIENT)
        self._clients = clients
        self._client_label = np.full(obs.n_nodes, -1, dtype=np.int64)
        self._client_label[clients] = np.arange(clients.size)

    @property
    def origins(self) -> OriginSweep:
        """The sweep of every sender's injections (built on first use: only backward figures
        need it)."""
        if self._origins is None:
            self._origins = OriginSweep(self.obs, self.tables, valid=self._valid,
                                        injected=self._ends_bwd, known=self._known_bwd)
        return self._origins

    # -- one target ----------------------------------------------------------------------------

    def where_did_it_go(self, row: int) -> Posterior:
        """Distribution over delivered rows for the packet injected on ``row``."""
        ends = self._walk(np.array([row], dtype=np.int64), forward=True)
        return _posterior(*_entries(ends))

    def who_sent_it(self, row: int) -> Posterior:
        """Distribution over clients for the packet delivered on ``row``."""
        ends = self._walk(np.array([row], dtype=np.int64), forward=False)
        _, rows, p = _entries(ends)
        return _posterior(np.zeros(rows.size, dtype=np.int64), self.obs.src[rows], p)

    # -- many targets ----------------------------------------------------------------------------

    def forward_summary(self, rows: IntArray) -> Summary:
        """Message entropy, delivered mass and best guess for each injected row."""
        rows = np.asarray(rows, dtype=np.int64)
        n = rows.size
        mass = np.zeros(n)
        xlx = np.zeros(n)
        best = np.full(n, -np.inf)
        top = np.full(n, -1, dtype=np.int64)
        home = self.obs.home_provider
        labels = home is not None and bool((home >= 0).any())
        n_nodes = self.obs.n_nodes
        by_label = np.zeros((n, n_nodes)) if labels else None
        for batch in self._batches(rows):
            ends = self._walk(rows[batch], forward=True)
            if not self._one_path_length:
                ends = [_merge(*_entries(ends), n_tgt=batch.size)]
            for tids, keys, vals in ends:
                t = batch[tids]
                mass[t] += vals.sum(axis=1)
                logs = np.log2(vals, out=np.zeros_like(vals), where=vals > 0)
                xlx[t] += (vals * logs).sum(axis=1)
                m = vals.max(axis=1)
                pick = np.where(vals == m[:, None], keys[None, :], np.iinfo(np.int64).max)
                k = pick.min(axis=1)
                better = (m > best[t]) | ((m == best[t]) & (k < top[t]))
                best[t[better]] = m[better]
                top[t[better]] = k[better]
                if by_label is not None:
                    label = self.obs.dst[keys]
                    if self.obs.revealed_recipient is not None:
                        named = self.obs.revealed_recipient[keys]
                        label = np.where(named >= 0, named, label)
                    idx = (t * n_nodes)[:, None] + label[None, :]
                    by_label += np.bincount(idx.ravel(), weights=vals.ravel(),
                                            minlength=n * n_nodes).reshape(n, n_nodes)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.where(mass > 0, np.log2(mass) - xlx / mass, 0.0)
        h_rcpt = None
        if by_label is not None and home is not None:
            # A provider's mass is spread evenly over its clients: -m log(m / n_P) each.
            size = np.bincount(home[home >= 0], minlength=n_nodes).astype(np.float64)
            spread = np.where(size > 0, size, 1.0)
            z = by_label.sum(axis=1)
            logs = np.log2(by_label / spread, out=np.zeros_like(by_label), where=by_label > 0)
            xlx_r = (by_label * logs).sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                h_rcpt = np.maximum(np.where(z > 0, np.log2(z) - xlx_r / z, 0.0), 0.0)
        return Summary(mass, np.maximum(h, 0.0), top, h_rcpt)

    def backward_matrix(self, rows: IntArray) -> FloatArray:
        """For each delivered row, the (unnormalized) probability of every node as its sender:
        a dense (rows x nodes) matrix, non-zero only for clients. This walks the targets back
        through the pools; ``sender_matrix`` gives the same, choosing the cheaper way."""
        rows = np.asarray(rows, dtype=np.int64)
        n_nodes = self.obs.n_nodes
        out = np.zeros((rows.size, n_nodes))
        for batch in self._batches(rows):
            ends = self._walk(rows[batch], forward=False)
            part = np.zeros(batch.size * n_nodes)
            for tids, keys, vals in ends:
                idx = (tids * n_nodes)[:, None] + self.obs.src[keys][None, :]
                part += np.bincount(idx.ravel(), weights=vals.ravel(), minlength=part.size)
            out[batch] = part.reshape(batch.size, n_nodes)
        return out

    def sender_matrix(self, rows: IntArray) -> FloatArray:
        """``backward_matrix``'s figures, from the origin sweep when it is cheaper (many
        targets, few senders); targets where the two could differ are walked."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self._sweep_pays(rows, self._clients.size):
            return self.backward_matrix(rows)
        part = self.origins.masses(rows, self._client_label, self._clients.size)
        z = part.sum(axis=1)
        odd = (z > 0) & (z < AMBIGUOUS_TOTAL)
        if part.shape[1] >= 2:
            top2 = np.partition(part, part.shape[1] - 2, axis=1)[:, -2:]
            odd |= (top2[:, 1] > 0) & (top2[:, 1] - top2[:, 0] <= AMBIGUOUS_TIE * top2[:, 1])
        out = np.zeros((rows.size, self.obs.n_nodes))
        out[:, self._clients] = part
        redo = np.flatnonzero(odd)
        if redo.size:
            out[redo] = self.backward_matrix(rows[redo])
        return out

    def challenge_masses(self, rows: IntArray, challenge: tuple[int, int]) -> FloatArray:
        """(rows x 2): the unnormalized posterior of the two challenge senders (clients) for
        each delivered row, by the origin sweep with two labels (targets where a sender's mass
        is near zero, which the walk may prune to exactly zero, are walked)."""
        rows = np.asarray(rows, dtype=np.int64)
        pair = np.array(challenge, dtype=np.int64)
        if not self._sweep_pays(rows, 2):
            return self.backward_matrix(rows)[:, pair]
        label = np.full(self.obs.n_nodes, -1, dtype=np.int64)
        label[pair[1]] = 1
        label[pair[0]] = 0
        out = self.origins.masses(rows, label, 2)
        odd = ((out > 0) & (out < AMBIGUOUS_MASS)).any(axis=1)
        redo = np.flatnonzero(odd)
        if redo.size:
            out[redo] = self.backward_matrix(rows[redo])[:, pair]
        return out

    def backward_figures(self, rows: IntArray, challenge_rows: IntArray,
                         challenge: tuple[int, int]) -> tuple[FloatArray, FloatArray]:
        """``sender_matrix(rows)`` and ``challenge_masses(challenge_rows, challenge)``; where
        both would walk, the two sets of deliveries are walked together (denser batches)."""
        rows = np.asarray(rows, dtype=np.int64)
        challenge_rows = np.asarray(challenge_rows, dtype=np.int64)
        if self._sweep_pays(rows, self._clients.size) or self._sweep_pays(challenge_rows, 2):
            return self.sender_matrix(rows), self.challenge_masses(challenge_rows, challenge)
        both = self.backward_matrix(np.concatenate([rows, challenge_rows]))
        return both[: rows.size], both[rows.size:][:, list(challenge)]

    def _sweep_pays(self, rows: IntArray, n_labels: int) -> bool:
        """Whether the origin sweep is usable here and cheaper than walking ``rows`` back."""
        if rows.size == 0 or n_labels == 0 or self.obs.node_layer is None:
            return False
        sweep = self.origins
        walk = rows.size * sweep.walk_cells_per_target()
        cheaper = SWEEP_CELL_COST * sweep.cells(n_labels, float(self.obs.t_dep[rows].max())) \
            < walk
        return cheaper and sweep.usable

    def _batches(self, rows: IntArray) -> list[IntArray]:
        """Indices of ``rows`` in time order, cut into batches walked together.

        A batch's block in a pool spans the windows of all its targets, so a batch of ``R``
        targets arriving ``lam`` per second costs about ``R * rate * (R / lam + window)`` cells
        per pool (``rate``: the pool's departures per second), plus a fixed cost per pool and hop
        for the numpy calls, worth about ``OVERHEAD_CELLS`` cells. The cost per target is lowest
        at ``R = sqrt(OVERHEAD_CELLS * lam / rate)``."""
        if rows.size == 0:
            return []
        times = self.obs.t_dep[rows]
        order = np.argsort(times, kind="stable")
        size = BATCH
        span = float(times.max() - times.min())
        if rows.size > 1 and span > 0 and self.tables.departure_rate > 0:
            lam = (rows.size - 1) / span
            size = round(math.sqrt(OVERHEAD_CELLS * lam / self.tables.departure_rate))
            size = min(max(size, 1), BATCH)
        return [order[i: i + size] for i in range(0, rows.size, size)]

    def _walk(self, start: IntArray, *, forward: bool) -> list[EndBlock]:
        """Spread each start row's unit mass hop by hop (forward or backward through the pools),
        collecting the mass that reaches a row where a real packet's path ends: a list of
        (target ids, end rows, masses) blocks."""
        n = start.size
        blocks = [Block(np.arange(n, dtype=np.int64), start,
                        np.concatenate([np.eye(n), np.zeros((n, 1))], axis=1),
                        np.arange(n, dtype=np.int64), np.ones(n))]
        found: list[EndBlock] = []
        for hop in range(MAX_HOPS):
            if not blocks:
                break
            bi = np.concatenate([np.full(b.rows.size, i, dtype=np.int64)
                                 for i, b in enumerate(blocks)])
            ci = np.concatenate([np.arange(b.rows.size, dtype=np.int64) for b in blocks])
            status, rows = self._resolve(np.concatenate([b.rows for b in blocks]),
                                         forward=forward, check=hop > 0)
            end = status == END
            if end.any():
                for i in np.unique(bi[end]).tolist():
                    blk = blocks[i]
                    mine = end & (bi == i)
                    vals = blk.values(ci[mine])
                    # The posterior keeps what is above FLOOR, as the per-target walk did.
                    np.multiply(vals, vals > FLOOR, out=vals)
                    found.append((blk.tids, rows[mine], vals))
            pool = status == POOL
            passed = self._pass_known(blocks, bi, ci, rows, status == KNOWN)
            blocks = self.tables.hop(blocks, bi[pool], ci[pool], rows[pool], n, forward=forward)
            blocks.extend(passed)
        return found

    @staticmethod
    def _pass_known(blocks: list[Block], bi: IntArray, ci: IntArray, rows: IntArray,
                    known: BoolArray) -> list[Block]:
        """Mass on rows whose next link is known (a corrupt node, a relay) moves to the linked
        row as it is, taking one hop like a pool does, so that every target's mass crosses the
        network in step and no row is reached at two different hops."""
        out: list[Block] = []
        if not known.any():
            return out
        for i in np.unique(bi[known]).tolist():
            blk = blocks[i]
            mine = known & (bi == i)
            vals = blk.values(ci[mine])
            k = vals.shape[1]
            out.append(Block(blk.tids, rows[mine], np.concatenate(
                [vals, np.zeros((blk.tids.size, 1))], axis=1), np.arange(k, dtype=np.int64),
                np.ones(k)))
        return out

    def _resolve(self, rows: IntArray, *, forward: bool, check: bool
                 ) -> tuple[npt.NDArray[np.int8], IntArray]:
        """What happens to mass on each row: it ENDs there (a delivery forward, an injection
        backward), enters a POOL, follows a KNOWN link (a corrupt node, a relay: ``rows`` then
        holds the row it leads to), or is dropped (not a real packet's row, nowhere to go)."""
        ends = self._ends_fwd if forward else self._ends_bwd
        known = self._known_fwd if forward else self._known_bwd
        link = self.obs.next_row if forward else self.obs.prev_row
        pooled = self.tables.arrival_rows if forward else self.tables.departure_rows
        status = np.zeros(rows.size, dtype=np.int8)
        rows = rows.copy()
        todo = np.arange(rows.size)
        rr = rows
        if check:
            ok = self._valid[rr]
            todo, rr = todo[ok], rr[ok]
        done = ends[rr]
        status[todo[done]] = END
        todo, rr = todo[~done], rr[~done]
        kn = known[rr]
        status[todo[~kn & pooled[rr]]] = POOL
        nxt = link[rr[kn]]
        good = nxt >= 0
        status[todo[kn][good]] = KNOWN
        rows[todo[kn][good]] = nxt[good]
        return status, rows


@dataclass(frozen=True, slots=True)
class TargetResult:
    """Per-target figures: what ``--json`` summarizes."""

    message_entropy_bits: FloatArray
    sender_entropy_bits: FloatArray
    delivered_mass: FloatArray
    message_top1: FloatArray
    sender_top1: FloatArray
    recipient_entropy_bits: FloatArray | None = None


def evaluate_targets(adv: Adversary, inject_rows: IntArray, deliver_rows: IntArray,
                     senders: IntArray, back: FloatArray | None = None) -> TargetResult:
    """Message entropy from each injection, sender entropy back from each matching delivery
    (``back``: the deliveries' ``sender_matrix`` when the caller already has it)."""
    fwd = adv.forward_summary(np.asarray(inject_rows, dtype=np.int64))
    if back is None:
        back = adv.sender_matrix(np.asarray(deliver_rows, dtype=np.int64))
    has = back.any(axis=1)
    return TargetResult(
        message_entropy_bits=fwd.entropy_bits,
        sender_entropy_bits=rows_entropy_bits(back),
        delivered_mass=fwd.mass,
        message_top1=(fwd.top == np.asarray(deliver_rows)).astype(np.float64),
        sender_top1=(np.where(has, back.argmax(axis=1), -1) == np.asarray(senders))
        .astype(np.float64),
        recipient_entropy_bits=fwd.recipient_entropy_bits,
    )


def rows_entropy_bits(matrix: FloatArray) -> FloatArray:
    """Shannon entropy (bits) of each row of a non-negative matrix, renormalized per row."""
    z = matrix.sum(axis=1)
    logs = np.log2(matrix, out=np.zeros_like(matrix), where=matrix > 0)
    xlx = (matrix * logs).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(z > 0, np.log2(z) - xlx / z, 0.0)
    return np.maximum(h, 0.0)


def epsilons(adv: Adversary, deliver_rows: IntArray, challenge: tuple[int, int]) -> FloatArray:
    """Loopix epsilon ``|ln(p0/p1)|`` for each delivered packet sent by a challenge sender."""
    return epsilons_of(adv.challenge_masses(np.asarray(deliver_rows, dtype=np.int64), challenge))


def epsilons_of(pair: FloatArray) -> FloatArray:
    """``epsilon_from`` on every row of the two challenge senders' (unnormalized) masses at
    once, the normalization cancelling in the ratio: 0 when neither has mass, infinite when one
    of them has none."""
    p0, p1 = pair[:, 0], pair[:, 1]
    out = np.zeros(pair.shape[0])
    one = (p0 > 0) != (p1 > 0)
    out[one] = math.inf
    both = (p0 > 0) & (p1 > 0)
    out[both] = np.abs(np.log(p0[both] / p1[both]))
    return out


def _entries(ends: list[EndBlock]) -> tuple[IntArray, IntArray, FloatArray]:
    """The non-zero cells of end blocks as (target, row, mass) entries."""
    if not ends:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    t_parts, r_parts, p_parts = [], [], []
    for tids, rows, vals in ends:
        r, c = np.nonzero(vals)
        t_parts.append(tids[r])
        r_parts.append(rows[c])
        p_parts.append(vals[r, c])
    return np.concatenate(t_parts), np.concatenate(r_parts), np.concatenate(p_parts)


def _merge(tgt: IntArray, keys: IntArray, p: FloatArray, *, n_tgt: int) -> EndBlock:
    """Entries with each (target, key) once, as one dense end block (traces only: small)."""
    uniq = np.unique(keys)
    vals = np.zeros((n_tgt, uniq.size))
    np.add.at(vals, (tgt, np.searchsorted(uniq, keys)), p)
    return np.arange(n_tgt, dtype=np.int64), uniq, vals


def _posterior(tgt: IntArray, keys: IntArray, p: FloatArray) -> Posterior:
    del tgt
    uniq, inverse = np.unique(keys, return_inverse=True)
    return Posterior(uniq.astype(np.int64),
                     np.bincount(inverse, weights=p).astype(np.float64, copy=False))


def default_horizon(mean_hop_delay: float) -> float:
    """How far a pool's memory reaches: after 40 mean delays a target keeps < e^-40 of its mass."""
    return max(40.0 * mean_hop_delay, 1e-9) if math.isfinite(mean_hop_delay) else 1e9
