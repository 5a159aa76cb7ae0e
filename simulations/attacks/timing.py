"""End-to-end timing correlation: match deliveries to sends by the known latency distribution.

The attacker watches only the edges (who sends when, which delivery happens when), not the pools.
A delivery at time t is scored against every client by the likelihood that one of that client's
sends produced it: the visible latency is a fixed number of link latencies plus a sum of
``hops`` independent Exp(mean_hop_delay) delays, i.e. a shifted Gamma(hops, mean_hop_delay). The
guess is the client with the largest summed likelihood. With zero delay the latency is exactly the
links' sum, and the first matching send names the sender.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from simulations.network import NetworkRun

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Two times closer than this are "the same" when there is no delay to blur them.
EXACT_TOLERANCE = 1e-9
#: Sends whose latency likelihood is below exp(-TAIL_NATS) of the law's peak are not scored:
#: they could change a guess only between two scores equal to 30 significant digits.
TAIL_NATS = 70.0


def latency_reach(hops: int, mean_delay: float) -> float:
    """Largest Gamma(hops, mean_delay) latency whose density is within ``TAIL_NATS`` of the
    peak: solves ``(hops - 1) log(x / x*) - (x - x*) / mean_delay = -TAIL_NATS`` past the mode
    ``x* = (hops - 1) mean_delay`` by bisection."""
    if mean_delay <= 0:
        return 0.0
    mode = (hops - 1) * mean_delay

    def drop(x: float) -> float:
        lead = (hops - 1) * math.log(x / mode) if mode > 0 else 0.0
        return lead - (x - mode) / mean_delay + TAIL_NATS

    lo, hi = max(mode, 1e-12), max(mode, mean_delay)
    while drop(hi) > 0:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if drop(mid) > 0:
            lo = mid
        else:
            hi = mid
    return hi


def timing_guesses(run: NetworkRun, targets: IntArray) -> IntArray:
    """The attacker's sender guess for each target packet (index into the run's packets)."""
    cfg = run.config
    obs = run.obs
    hops = cfg.mixing_hops
    shift = (hops + 1) * cfg.link_latency
    send_t = obs.t_dep[run.first_row]
    senders = run.sender
    deliver_t = obs.t_arr[run.last_row[targets]]
    guesses = np.full(targets.size, -1, dtype=np.int64)
    d = cfg.mean_hop_delay
    reach = shift + latency_reach(hops, d)
    for i, t in enumerate(deliver_t):
        lo = np.searchsorted(send_t, t - reach - EXACT_TOLERANCE, side="left")
        hi = np.searchsorted(send_t, t - shift + EXACT_TOLERANCE, side="right")
        if hi <= lo:
            continue
        x = t - shift - send_t[lo:hi]
        if d > 0:
            x = np.maximum(x, 1e-300)
            logf = (hops - 1) * np.log(x) - x / d - hops * math.log(d) - math.lgamma(hops)
            w = np.exp(logf - logf.max())
        else:
            w = (np.abs(x) <= EXACT_TOLERANCE).astype(np.float64)
        score = np.bincount(senders[lo:hi], weights=w, minlength=cfg.clients)
        guesses[i] = int(np.argmax(score)) if score.max() > 0 else -1
    return guesses


def timing_success(run: NetworkRun, targets: IntArray) -> float:
    """Share of targets whose sender the timing attacker names correctly."""
    if targets.size == 0:
        return math.nan
    return float(np.mean(timing_guesses(run, targets) == run.sender[targets]))
