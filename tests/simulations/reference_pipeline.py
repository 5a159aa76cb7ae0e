"""The ``network`` scenario's whole pipeline as it was before issue 18's speed work: the
reference ``benchmarks/simulation_speed.py`` times the current one against, in the same run.

Kept only here (never imported by ``simulations``), like ``reference_adversary.py``, whose
per-target adversary and timing attacker it uses: the same simulated run (``simulate_network``
is shared: its output is the same array for array), then one forward and one backward walk per
target, the challenge senders' deliveries walked back on their own, and the timing attacker's
60-mean-delays-per-hop look-back. Its figures equal the current pipeline's to rounding
(``test_vectorized.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from reference_adversary import ReferenceAdversary, reference_timing_guesses

from simulations.adversary import default_horizon
from simulations.config import SimConfig
from simulations.entropy import epsilon_from, summarize
from simulations.network import NetworkRun, pick_targets, simulate_network
from simulations.scenarios import CHALLENGE, generators, latency_figures

FloatArray = npt.NDArray[np.float64]


def reference_measure_network(cfg: SimConfig) -> dict[str, Any]:
    """What ``scenarios.network(cfg).data`` computed before (its entropy, epsilon, timing and
    latency figures)."""
    h_msg: list[float] = []
    h_snd: list[float] = []
    mass: list[float] = []
    top_snd: list[float] = []
    eps_all: list[float] = []
    timing_hits: list[float] = []
    runs: list[NetworkRun] = []
    packets = 0
    for rng in generators(cfg):
        run = simulate_network(cfg, rng)
        runs.append(run)
        packets += int(run.send_time.size)
        adv = ReferenceAdversary(run.obs, default_horizon(cfg.mean_hop_delay))
        targets = pick_targets(run, cfg.targets, rng)
        for i in targets.tolist():
            fwd = adv.where_did_it_go(int(run.first_row[i]))
            back = adv.who_sent_it(int(run.last_row[i]))
            h_msg.append(fwd.entropy_bits())
            h_snd.append(back.entropy_bits())
            mass.append(fwd.mass)
            top_snd.append(float(back.top() == int(run.sender[i])))
        if cfg.clients >= 2:
            chal = pick_targets(run, cfg.targets, rng, senders=CHALLENGE)
            for row in run.last_row[chal].tolist():
                back = adv.who_sent_it(int(row))
                total = back.mass
                p0 = back.prob_of(CHALLENGE[0]) / total if total > 0 else 0.0
                p1 = back.prob_of(CHALLENGE[1]) / total if total > 0 else 0.0
                eps_all.append(epsilon_from(p0, p1))
        if targets.size:
            guesses = reference_timing_guesses(run, targets)
            timing_hits.append(float(np.mean(guesses == run.sender[targets])))
    data: dict[str, Any] = {"packets_simulated": packets}
    msg = np.array(h_msg)
    data["message_entropy_bits"] = summarize(msg)
    data["sender_entropy_bits"] = summarize(np.array(h_snd))
    data["sender_entropy_max_bits"] = math.log2(cfg.clients)
    data["delivered_mass_min"] = float(np.min(mass)) if msg.size else math.nan
    data["adversary_top1_sender"] = float(np.mean(top_snd)) if msg.size else math.nan
    data["epsilon"] = summarize(np.array(eps_all))
    data["epsilon_challenge_senders"] = list(CHALLENGE)
    data["timing_attack"] = {
        "success": float(np.mean(timing_hits)) if timing_hits else math.nan,
        "chance": 1.0 / cfg.clients,
    }
    data.update(latency_figures(runs))
    # Per-target values, for comparisons to rounding.
    data["per_target"] = {"message_entropy_bits": msg, "sender_entropy_bits": np.array(h_snd),
                          "epsilon": np.array(eps_all)}
    return data
