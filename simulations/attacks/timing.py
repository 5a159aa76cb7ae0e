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
    reach = shift + (60.0 * hops * d if d > 0 else 0.0)
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
