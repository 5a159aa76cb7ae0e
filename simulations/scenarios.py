"""Scenarios: each turns a ``SimConfig`` into one JSON-ready result (plus a curve to plot).

Every result carries the parameters it used, so a number in ``docs/simulations.md`` can be
reproduced from its JSON alone. Runs are seeded from ``SeedSequence(seed).spawn(runs)``: the same
seed gives the same numbers, and runs are independent of each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from simulations.adversary import (
    Adversary,
    default_horizon,
    epsilons,
    epsilons_of,
    evaluate_targets,
)
from simulations.attacks.n_minus_one import run_n_minus_one
from simulations.attacks.sda import run_sda
from simulations.attacks.timing import timing_success
from simulations.config import SimConfig
from simulations.entropy import danezis_entropy_bits, summarize
from simulations.network import NetworkRun, pick_targets, simulate_network
from simulations.trace import Trace, estimate_mean_delay

FloatArray = npt.NDArray[np.float64]

#: The two challenge senders of the epsilon scenario (client ids).
CHALLENGE = (0, 1)


@dataclass(slots=True)
class Curve:
    """What ``--plot`` draws for one result: a labelled x/y series."""

    x: list[float]
    y: list[float]
    xlabel: str
    ylabel: str
    reference: float | None = None
    """A closed-form value to draw as a horizontal or vertical line, when there is one."""


@dataclass(slots=True)
class Outcome:
    """One scenario's JSON object and its curve."""

    data: dict[str, Any]
    curve: Curve | None = field(default=None)
    config: SimConfig | None = field(default=None)
    """The parameters that actually ran, when the scenario overrides some (single-mix)."""

    def parameters(self, asked: SimConfig) -> dict[str, Any]:
        return (self.config or asked).to_dict()


def generators(cfg: SimConfig) -> list[np.random.Generator]:
    """Independent, reproducible generators, one per run, all from ``--seed``."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(cfg.runs)]


def ecdf(values: FloatArray) -> tuple[list[float], list[float]]:
    """Empirical CDF of the finite values: one curve shows a whole per-target distribution."""
    v = np.sort(values[np.isfinite(values)])
    if v.size == 0:
        return [], []
    return v.tolist(), (np.arange(1, v.size + 1) / v.size).tolist()


def latency_figures(runs: list[NetworkRun]) -> dict[str, Any]:
    """Latency percentiles and the sum-of-exponentials prediction they are checked against."""
    cfg = runs[0].config
    mailbox = np.concatenate([r.latency_mailbox[r.kind == 0] for r in runs])
    recipient = np.concatenate([r.latency_recipient[r.kind == 0] for r in runs])
    links = cfg.mixing_hops + 1
    d, p = cfg.mean_hop_delay, cfg.provider_hold
    n_prov = 2 if cfg.providers else 0
    if n_prov and p != d:
        law = (f"{links} x link_latency + Gamma({cfg.layers}, mean_hop_delay) + "
               f"Gamma({n_prov}, provider_delay)")
    else:
        shape = cfg.layers + n_prov
        law = f"{links} x link_latency + Gamma(shape={shape}, scale=mean_hop_delay)"
    out: dict[str, Any] = {
        "latency_mailbox_s": summarize(mailbox),
        "latency_recipient_s": summarize(recipient),
        "latency_mailbox_theory": {
            "distribution": law,
            "mean": links * cfg.link_latency + cfg.layers * d + n_prov * p,
            "sd": math.sqrt(cfg.layers * d * d + n_prov * p * p),
        },
    }
    waits = [r.queue_wait[r.kind == 0] for r in runs if r.queue_wait is not None]
    if waits and cfg.message_rate is not None:
        out["payload_queue_wait_s"] = summarize(np.concatenate(waits))
        lam, mu = cfg.message_rate, cfg.client_rate
        out["payload_queue_wait_theory_mean_s"] = 1.0 / (mu - lam) if mu > lam else math.inf
    return out


def measure_network(cfg: SimConfig, *, entropy: bool = True, eps: bool = True,
                    timing: bool = True) -> Outcome:
    """Simulate the network and let the global passive adversary and the timing attacker at it."""
    h_msg: list[FloatArray] = []
    h_snd: list[FloatArray] = []
    h_rcpt: list[FloatArray] = []
    mass: list[FloatArray] = []
    top_snd: list[FloatArray] = []
    eps_all: list[FloatArray] = []
    timing_hits: list[float] = []
    runs: list[NetworkRun] = []
    packets = 0
    for rng in generators(cfg):
        run = simulate_network(cfg, rng)
        runs.append(run)
        packets += int(run.send_time.size)
        adv = Adversary(run.obs, default_horizon(cfg.mean_hop_delay))
        targets = pick_targets(run, cfg.targets, rng)
        chal = pick_targets(run, cfg.targets, rng, senders=CHALLENGE) \
            if eps and cfg.clients >= 2 else None
        back = None
        if entropy and chal is not None:
            # Both sets of deliveries walked back together: denser batches, fewer walks.
            both = adv.backward_matrix(np.concatenate([run.last_row[targets],
                                                       run.last_row[chal]]))
            back, back_chal = both[: targets.size], both[targets.size:]
            eps_all.append(epsilons_of(back_chal, CHALLENGE))
        elif chal is not None:
            eps_all.append(epsilons(adv, run.last_row[chal], CHALLENGE))
        if entropy:
            res = evaluate_targets(adv, run.first_row[targets], run.last_row[targets],
                                   run.sender[targets], back)
            h_msg.append(res.message_entropy_bits)
            h_snd.append(res.sender_entropy_bits)
            if res.recipient_entropy_bits is not None:
                h_rcpt.append(res.recipient_entropy_bits)
            mass.append(res.delivered_mass)
            top_snd.append(res.sender_top1)
        if timing and targets.size:
            timing_hits.append(timing_success(run, targets))
    data: dict[str, Any] = {"packets_simulated": packets}
    curve: Curve | None = None
    if entropy:
        msg = np.concatenate(h_msg)
        data["message_entropy_bits"] = summarize(msg)
        data["sender_entropy_bits"] = summarize(np.concatenate(h_snd))
        data["sender_entropy_max_bits"] = math.log2(cfg.clients)
        if h_rcpt:
            data["recipient_entropy_bits"] = summarize(np.concatenate(h_rcpt))
        data["delivered_mass_min"] = float(np.concatenate(mass).min()) if msg.size else math.nan
        data["adversary_top1_sender"] = float(np.concatenate(top_snd).mean()) if msg.size \
            else math.nan
        x, y = ecdf(msg)
        curve = Curve(x, y, "message entropy (bits)", "fraction of targets")
    if eps:
        e = np.concatenate(eps_all) if eps_all else np.zeros(0)
        data["epsilon"] = summarize(e)
        data["epsilon_challenge_senders"] = list(CHALLENGE)
        if not entropy:
            x, y = ecdf(e)
            curve = Curve(x, y, "epsilon = |ln(p0/p1)|", "fraction of targets")
    if timing:
        data["timing_attack"] = {
            "success": float(np.mean(timing_hits)) if timing_hits else math.nan,
            "chance": 1.0 / cfg.clients,
        }
    data.update(latency_figures(runs))
    return Outcome(data, curve)


def single_mix(cfg: SimConfig) -> Outcome:
    """One Poisson mix fed by all clients: checked against Danezis' closed form."""
    mix_cfg = cfg.replace(layers=1, width=1, providers=0)
    out = measure_network(mix_cfg, entropy=True, eps=False, timing=False)
    rate = cfg.clients * (cfg.client_rate + cfg.loop_rate + cfg.drop_rate)
    closed = danezis_entropy_bits(rate, cfg.mean_hop_delay)
    out.data["input_rate_per_s"] = rate
    out.data["closed_form_bits"] = closed
    out.data["closed_form"] = "log2(e * input_rate * mean_hop_delay) (Danezis 2004)"
    out.data["difference_bits"] = out.data["message_entropy_bits"]["mean"] - closed
    if out.curve is not None:
        out.curve.reference = closed
    out.config = mix_cfg
    return out


def network(cfg: SimConfig) -> Outcome:
    """The whole model: entropies, epsilon, latency and the timing attack."""
    return measure_network(cfg)


def epsilon(cfg: SimConfig) -> Outcome:
    """Only the challenge senders' packets: cheaper, and its curve is epsilon's ECDF."""
    return measure_network(cfg, entropy=False, eps=True, timing=False)


def timing(cfg: SimConfig) -> Outcome:
    """The edge-only timing attacker beside the global adversary's top-1 sender guess."""
    return measure_network(cfg, entropy=True, eps=False, timing=True)


def sda(cfg: SimConfig) -> Outcome:
    """SDA with the configured cover, and the same network without any cover, side by side."""
    bare = cfg.replace(loop_rate=0.0, drop_rate=0.0)
    with_cover: list[float] = []
    without: list[float] = []
    curve_y = None
    pts = None
    for rng_c, rng_b in zip(generators(cfg), generators(cfg.replace(seed=cfg.seed + 1)),
                            strict=True):
        c = run_sda(cfg, rng_c)
        b = run_sda(bare, rng_b)
        with_cover.append(c.rounds_to_identify)
        without.append(b.rounds_to_identify)
        curve_y = c.success if curve_y is None else curve_y + c.success
        pts = c.checkpoints
    assert curve_y is not None and pts is not None
    data = {
        "sda": {
            "rounds_to_identify_with_cover": summarize(with_cover),
            "rounds_to_identify_without_cover": summarize(without),
            "round_seconds": cfg.pull_interval,
            "max_rounds": cfg.rounds,
        }
    }
    curve = Curve(pts.astype(float).tolist(), (curve_y / cfg.runs).tolist(), "rounds",
                  "share of contacts identified")
    return Outcome(data, curve)


def n_minus_one(cfg: SimConfig) -> Outcome:
    """(n-1) attack at the attacker's default block time, plus success/detection vs block time."""
    rng = generators(cfg)[0]
    res = run_n_minus_one(cfg, rng, trials=20_000 * cfg.runs)
    blocks = np.linspace(0.0, max(4 * res.block_seconds, 1e-3), 12)
    success = [run_n_minus_one(cfg, rng, trials=4000, block=float(b)).success for b in blocks]
    data = {
        "n_minus_one": {
            "mix_input_rate_per_s": res.mix_input_rate,
            "block_seconds": res.block_seconds,
            "alarm_window_seconds": res.alarm_window_seconds,
            "success": res.success,
            "detected": res.detected,
            "success_undetected": res.success_undetected,
            "flush_probability_closed_form": res.flush_probability,
        }
    }
    curve = Curve(blocks.tolist(), success, "block time (s)", "attack success")
    return Outcome(data, curve)


def network_entropy(cfg: SimConfig) -> Outcome:
    """Only the entropies (and latency): the paper figures' points."""
    return measure_network(cfg, entropy=True, eps=False, timing=False)


#: Runnable by name (sweep points), not listed as a command scenario.
HIDDEN = {"network-entropy": network_entropy}

SCENARIOS: dict[str, Callable[[SimConfig], Outcome]] = {
    "single-mix": single_mix,
    "network": network,
    "epsilon": epsilon,
    "timing": timing,
    "sda": sda,
    "n-1": n_minus_one,
}


HEADLINE_LABELS: dict[str, str] = {
    "single-mix": "mean message entropy (bits)",
    "network": "mean message entropy (bits)",
    "epsilon": "median epsilon",
    "timing": "timing attack success",
    "sda": "median rounds to identify (with cover)",
    "n-1": "success without detection",
}


def headline(name: str, data: dict[str, Any]) -> float:
    """The one number a sweep plots against the swept value."""
    if name in ("single-mix", "network"):
        return float(data["message_entropy_bits"]["mean"])
    if name == "epsilon":
        return float(data["epsilon"]["p50"])
    if name == "timing":
        return float(data["timing_attack"]["success"])
    if name == "sda":
        return float(data["sda"]["rounds_to_identify_with_cover"]["p50"])
    if name == "n-1":
        return float(data["n_minus_one"]["success_undetected"])
    raise KeyError(name)


def analyze_trace(trace: Trace, cfg: SimConfig) -> Outcome:
    """The same adversary metrics on a recorded link trace (ground truth from its ``msg`` ids)."""
    obs = trace.obs
    delay = trace.mean_hop_delay
    if delay is None:
        delay = estimate_mean_delay(obs)
    adv = Adversary(obs, default_horizon(delay))
    injected = np.flatnonzero(obs.injected())
    if (trace.kind >= 0).any():
        injected = injected[trace.kind[injected] == 0]
    delivered = obs.delivered()
    ends = np.full(injected.size, -1, dtype=np.int64)
    for i, row in enumerate(injected):
        r = int(row)
        for _ in range(64):
            if delivered[r] or obs.next_row[r] < 0:
                break
            r = int(obs.next_row[r])
        ends[i] = r if delivered[r] else -1
    ok = ends >= 0
    injected, ends = injected[ok], ends[ok]
    rng = np.random.default_rng(cfg.seed)
    if injected.size > cfg.targets:
        pick = np.sort(rng.choice(injected.size, cfg.targets, replace=False))
        injected, ends = injected[pick], ends[pick]
    senders = obs.src[injected]
    res = evaluate_targets(adv, injected, ends, senders)
    clients = int((obs.node_role == 0).sum())
    data: dict[str, Any] = {
        "rows": obs.n_rows,
        "nodes": {"clients": clients, "providers": int((obs.node_role == 1).sum()),
                  "mixes": int((obs.node_role == 2).sum())},
        "sizes_constant": trace.sizes_constant,
        "mean_hop_delay_assumed": delay,
        "link_latency": trace.link_latency,
        "message_entropy_bits": summarize(res.message_entropy_bits),
        "sender_entropy_bits": summarize(res.sender_entropy_bits),
        "sender_entropy_max_bits": math.log2(max(clients, 1)),
        "delivered_mass_min": float(res.delivered_mass.min()) if injected.size else math.nan,
        "adversary_top1_sender": float(res.sender_top1.mean()) if injected.size else math.nan,
        "latency_delivery_s": summarize(obs.t_arr[ends] - obs.t_dep[injected]),
    }
    active = np.unique(senders)
    if active.size >= 2:
        chal = (int(active[0]), int(active[1]))
        mask = np.isin(senders, np.array(chal))
        data["epsilon"] = summarize(epsilons(adv, ends[mask], chal))
        data["epsilon_challenge_senders"] = [obs.node_names[c] for c in chal] \
            if obs.node_names else list(chal)
    x, y = ecdf(res.message_entropy_bits)
    return Outcome(data, Curve(x, y, "message entropy (bits)", "fraction of targets"))
