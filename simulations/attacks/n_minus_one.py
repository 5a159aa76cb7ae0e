"""The (n-1) attack on one mix and its detection through the mix's own loops (Loopix section 4).

The attacker controls every link into one mix. It blocks all inputs for ``block`` seconds so
that the honest packets inside leave, then lets exactly one target packet in (with its own
packets, which it recognizes) and names the first unrecognized departure as the target. It fails
if an honest packet was still inside (it left first) or the mix sent one of its own loops first:
loops look like any other departure.

The mix sends loops at ``mix_loop_rate`` and expects them back. The attacker cannot tell them
from other input, so it blocks them too: no loop returns during the attack. The mix raises the
alarm when no loop has come back for ``alarm_window`` seconds, a window chosen so that an
unattacked mix (loops returning as a Poisson stream) raises a false alarm about once a day.
Monte Carlo over independent trials, all drawn as arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulations.config import SimConfig

#: Seconds between two false alarms that the mix operator accepts.
FALSE_ALARM_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class NMinusOneResult:
    """Shares over the Monte Carlo trials, with the attack's and the alarm's settings."""

    mix_input_rate: float
    block_seconds: float
    alarm_window_seconds: float
    success: float
    """Share of trials in which the attacker names the target's departure."""
    detected: float
    """Share of trials in which the mix raises the alarm during the attack."""
    success_undetected: float
    flush_probability: float
    """Closed form: chance that no honest packet is left after the block."""


def alarm_window(mix_loop_rate: float) -> float:
    """Silence after which the mix alarms.

    Loop returns form a Poisson stream, whose gaps exceed ``w`` at rate lambda_M exp(-lambda_M w);
    setting that to one per ``FALSE_ALARM_SECONDS`` gives ``w``.
    """
    if mix_loop_rate <= 0:
        return math.inf
    return max(math.log(mix_loop_rate * FALSE_ALARM_SECONDS), 0.0) / mix_loop_rate


def mix_input_rate(cfg: SimConfig) -> float:
    """Packets per second into one mix of a layer: all clients' streams spread over the width."""
    per_client = cfg.client_rate + cfg.loop_rate + cfg.drop_rate
    return cfg.clients * per_client / cfg.width + cfg.mix_loop_rate


def default_block(cfg: SimConfig) -> float:
    """The attacker's block time: long enough to flush the pool with probability 0.99."""
    d = cfg.mean_hop_delay
    lam = mix_input_rate(cfg)
    if d <= 0:
        return 0.0
    return d * max(math.log(lam * d / 0.01), 0.0)


def run_n_minus_one(cfg: SimConfig, rng: np.random.Generator, trials: int = 20_000,
                    block: float | None = None) -> NMinusOneResult:
    """Run ``trials`` independent attacks on one mix of the first layer."""
    d = cfg.mean_hop_delay
    lam = mix_input_rate(cfg)
    blk = default_block(cfg) if block is None else block
    window = alarm_window(cfg.mix_loop_rate)
    # Honest packets inside at the block's start: Poisson(lambda d), residual delays Exp(d).
    inside = rng.poisson(lam * d, trials)
    total = int(inside.sum())
    residual = rng.exponential(d, total) if d > 0 else np.zeros(total)
    owner = np.repeat(np.arange(trials), inside)
    left = residual > blk
    earliest_left = np.full(trials, np.inf)
    np.minimum.at(earliest_left, owner[left], residual[left] - blk)
    target = rng.exponential(d, trials) if d > 0 else np.zeros(trials)
    first_loop = (rng.exponential(1.0 / cfg.mix_loop_rate, trials) if cfg.mix_loop_rate > 0
                  else np.full(trials, np.inf))
    success = (target < earliest_left) & (target < first_loop)
    # Silence seen by the mix: time since the last loop came back, plus the whole attack.
    since_last = (rng.exponential(1.0 / cfg.mix_loop_rate, trials) if cfg.mix_loop_rate > 0
                  else np.zeros(trials))
    detected = since_last + blk + target > window
    flush = math.exp(-lam * d * math.exp(-blk / d)) if d > 0 else 1.0
    return NMinusOneResult(
        mix_input_rate=lam,
        block_seconds=blk,
        alarm_window_seconds=window,
        success=float(success.mean()),
        detected=float(detected.mean()),
        success_undetected=float((success & ~detected).mean()),
        flush_probability=flush,
    )
