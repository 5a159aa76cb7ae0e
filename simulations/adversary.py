"""The global passive adversary: follows target packets through every pool it observes.

For a target packet injected by a client, it propagates the packet's probability forward
through each pool (``PoolTables.forward``) until it reaches delivery rows: the distribution over
delivered packets gives the **message entropy**. For a target delivered packet it propagates
backward to the injection rows: the distribution over clients gives the **sender entropy**, and
for two challenge senders, Loopix's **epsilon**.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulations.entropy import epsilon_from, shannon_bits
from simulations.observations import Observations
from simulations.pools import PoolTables

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: A frontier never needs more hops than this; it guards against a malformed trace with a cycle.
MAX_HOPS = 64


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


class Adversary:
    """Observes every link row; knows the mean delay only to bound how far back it looks."""

    def __init__(self, obs: Observations, horizon: float) -> None:
        self.obs = obs
        self.tables = PoolTables(obs, horizon)
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


@dataclass(frozen=True, slots=True)
class TargetResult:
    """Per-target figures: what ``--json`` summarizes."""

    message_entropy_bits: FloatArray
    sender_entropy_bits: FloatArray
    delivered_mass: FloatArray
    message_top1: FloatArray
    sender_top1: FloatArray


def evaluate_targets(adv: Adversary, inject_rows: IntArray, deliver_rows: IntArray,
                     senders: IntArray) -> TargetResult:
    """Message entropy from each injection, sender entropy back from each matching delivery."""
    n = inject_rows.size
    h_msg = np.zeros(n)
    h_snd = np.zeros(n)
    mass = np.zeros(n)
    top_msg = np.zeros(n)
    top_snd = np.zeros(n)
    for i in range(n):
        fwd = adv.where_did_it_go(int(inject_rows[i]))
        h_msg[i] = fwd.entropy_bits()
        mass[i] = fwd.mass
        top_msg[i] = float(fwd.top() == int(deliver_rows[i]))
        back = adv.who_sent_it(int(deliver_rows[i]))
        h_snd[i] = back.entropy_bits()
        top_snd[i] = float(back.top() == int(senders[i]))
    return TargetResult(h_msg, h_snd, mass, top_msg, top_snd)


def epsilons(adv: Adversary, deliver_rows: IntArray, challenge: tuple[int, int]) -> FloatArray:
    """Loopix epsilon ``|ln(p0/p1)|`` for each delivered packet sent by a challenge sender."""
    out = np.zeros(deliver_rows.size)
    for i, row in enumerate(deliver_rows):
        back = adv.who_sent_it(int(row))
        total = back.mass
        p0 = back.prob_of(challenge[0]) / total if total > 0 else 0.0
        p1 = back.prob_of(challenge[1]) / total if total > 0 else 0.0
        out[i] = epsilon_from(p0, p1)
    return out


def default_horizon(mean_hop_delay: float) -> float:
    """How far a pool's memory reaches: after 40 mean delays a target keeps < e^-40 of its mass."""
    return max(40.0 * mean_hop_delay, 1e-9) if math.isfinite(mean_hop_delay) else 1e9
