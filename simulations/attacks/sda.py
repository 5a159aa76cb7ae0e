"""The statistical disclosure attack (Danezis 2003; Mathewson and Dingledine 2004) over rounds.

Model. Time is cut into rounds of ``pull_interval`` seconds. Alice (client 0) sends real messages
at ``client_rate`` to one of her ``contacts`` recipients, chosen uniformly; every other client
sends at the same rate to a uniform random client. Everyone also sends loop cover (back to
themselves) and drop cover (received by nobody) at the configured rates. The adversary sees, per
round, how many packets Alice sent and how many packets each client received. Packets are counted
in the round they were sent: the mix delay is ignored, which only helps the attacker and isolates
what cover traffic does. Seeing per-recipient arrivals assumes corrupt providers or
``providers=0``; with honest providers and padded pulls only per-provider arrivals are visible.

Estimator. The correlation between Alice's activity and each recipient's arrivals, with the
background profile subtracted: ``v = sum_t a_t (o_t - |o_t| u)``, where ``u`` is the recipients'
average share. The guess is the ``contacts`` clients (other than Alice) with the largest ``v``.
Cover dilutes ``a_t``: it still counts packets, but only the real ones move ``o_t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mixcore.errors import ParamsError
from simulations.config import SimConfig

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class SdaResult:
    """Rounds until the guess is right for good, and the success curve over rounds."""

    rounds_to_identify: float
    """First checkpoint from which the guessed contact set stays exact; inf if never."""
    checkpoints: IntArray
    success: FloatArray
    """Share of the true contacts inside the guess, per checkpoint."""


def checkpoints(max_rounds: int) -> IntArray:
    """Roughly geometric round counts at which the guess is scored."""
    pts = np.unique(np.round(np.geomspace(5, max(max_rounds, 5), 40)).astype(np.int64))
    return pts[pts <= max_rounds]


def run_sda(cfg: SimConfig, rng: np.random.Generator) -> SdaResult:
    """One SDA run: draw all rounds at once, score the running estimate at each checkpoint."""
    n = cfg.clients
    if n < cfg.contacts + 2:
        raise ParamsError("clients", "the disclosure attack needs clients >= contacts + 2")
    r = cfg.rounds
    t = cfg.pull_interval
    contacts = 1 + rng.choice(n - 1, cfg.contacts, replace=False)
    alice_real = rng.poisson(cfg.client_rate * t, r)
    alice_cover = rng.poisson((cfg.loop_rate + cfg.drop_rate) * t, r)
    alice_loops = rng.binomial(alice_cover, _share(cfg.loop_rate, cfg.drop_rate))
    observed_sent = alice_real + alice_cover

    received = np.zeros((r, n), dtype=np.float64)
    contact_p = np.zeros(n)
    contact_p[contacts] = 1.0 / cfg.contacts
    received += rng.multinomial(alice_real, contact_p)
    received[:, 0] += alice_loops
    others_real = rng.poisson(cfg.client_rate * t * (n - 1), r)
    received += rng.multinomial(others_real, np.full(n, 1.0 / n))
    loops = rng.poisson(cfg.loop_rate * t, (r, n))
    loops[:, 0] = 0
    received += loops

    pts = checkpoints(r)
    cum_o = np.cumsum(received, axis=0)
    cum_ao = np.cumsum(observed_sent[:, None] * received, axis=0)
    cum_a_tot = np.cumsum(observed_sent * received.sum(axis=1))
    success = np.zeros(pts.size)
    truth = set(contacts.tolist())
    for i, k in enumerate(pts):
        o = cum_o[k - 1]
        u = o / max(o.sum(), 1.0)
        v = cum_ao[k - 1] - cum_a_tot[k - 1] * u
        v[0] = -np.inf
        guess = set(np.argsort(v)[::-1][: cfg.contacts].tolist())
        success[i] = len(guess & truth) / cfg.contacts
    exact = success >= 1.0
    if exact[-1]:
        wrong = np.flatnonzero(~exact)
        first = 0 if wrong.size == 0 else int(wrong[-1]) + 1
        rounds = float(pts[first])
    else:
        rounds = math.inf
    return SdaResult(rounds, pts, success)


def _share(a: float, b: float) -> float:
    return a / (a + b) if a + b > 0 else 0.0
