"""Speed of the traffic-analysis simulation, beside the previous implementation in the same run.

Three figures, each printed with what it is compared against:

* ``stratified_3x10``: issue 18's case, the whole ``network`` scenario (message and sender
  entropy, epsilon, timing attack, latency) on 50 clients x 100 real messages/s, 3 layers x 10
  mixes, no providers, 200 targets; run with the adversary vectorized across targets and then
  with the previous whole pipeline (``tests/simulations/reference_pipeline.py``: the per-target
  adversary of ``reference_adversary.py``, its own walk for the challenge deliveries, the old
  timing attacker), same seed, each after a small warm-up run. Bound: the new run at least 4x
  faster in CPU seconds; the summaries of both agree (``max_summary_gap``).
* ``busy_network``: issue 9's workload (50 clients x 100/s, 3 x 10 mixes, 2 providers, 60 s),
  the adversary's cost per tracked target (forward and backward) for both implementations, and
  the run's total against issue 9's goal of well under a minute.
* ``scaled``: 1,000 clients with the default rates for 10 simulated minutes, 100 targets, in a
  child process so that its peak memory (max RSS) is its own.

CPU seconds (``process_time``) are printed beside wall seconds: this machine is shared, and CPU
time is what the two implementations are compared on.

    python benchmarks/simulation_speed.py --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from simulations import scenarios
from simulations.adversary import Adversary, default_horizon, evaluate_targets
from simulations.config import SimConfig
from simulations.network import pick_targets, simulate_network, tail_seconds

GOAL_SECONDS = 60.0
SPEEDUP_GOAL = 4.0
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "tests" / "simulations"


def reference() -> ModuleType:
    """The previous adversary, loaded from the tests (it is not part of the package)."""
    return _load("reference_adversary")


def _load(name: str) -> ModuleType:
    """A module of ``tests/simulations`` (the previous code paths, kept there)."""
    if str(REFERENCE_DIR) not in sys.path:
        sys.path.insert(0, str(REFERENCE_DIR))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REFERENCE_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def _gap(new: dict[str, Any], old: dict[str, Any]) -> float:
    """Largest difference between the two pipelines' summaries of the per-target figures."""
    gap = 0.0
    for name in ("message_entropy_bits", "sender_entropy_bits", "epsilon"):
        for stat in ("mean", "p5", "p25", "p50", "p75", "p95", "min", "max"):
            gap = max(gap, abs(float(new[name][stat]) - float(old[name][stat])))
    return gap


def stratified_3x10(seed: int, ref: ModuleType) -> dict[str, Any]:
    """The whole ``network`` scenario, now and as it was (``reference_pipeline.py``), after
    one small warm-up run of each so that neither pays first-call costs (imports, caches)."""
    del ref
    previous = _load("reference_pipeline")
    cfg = SimConfig(clients=50, client_rate=100.0, layers=3, width=10, providers=0,
                    targets=200, seed=seed, mix_loop_rate=0.0)
    warm = cfg.replace(clients=10, client_rate=10.0, duration=5.0, targets=10)
    scenarios.network(warm)
    previous.reference_measure_network(warm)
    with Clock() as new:
        fresh = scenarios.network(cfg).data
    with Clock() as old:
        before = previous.reference_measure_network(cfg)
    speedup = old.cpu / new.cpu if new.cpu > 0 else float("nan")
    return {
        "parameters": cfg.to_dict(),
        "new_wall_s": round(new.wall, 3),
        "new_cpu_s": round(new.cpu, 3),
        "previous_wall_s": round(old.wall, 3),
        "previous_cpu_s": round(old.cpu, 3),
        "speedup_cpu": round(speedup, 2),
        "speedup_goal": SPEEDUP_GOAL,
        "within_goal": bool(speedup >= SPEEDUP_GOAL),
        "max_summary_gap": _gap(fresh, before),
        "message_entropy_mean_bits": {"new": fresh["message_entropy_bits"]["mean"],
                                      "previous": before["message_entropy_bits"]["mean"]},
        "sender_entropy_mean_bits": {"new": fresh["sender_entropy_bits"]["mean"],
                                     "previous": before["sender_entropy_bits"]["mean"]},
        "epsilon_median": {"new": fresh["epsilon"]["p50"], "previous": before["epsilon"]["p50"]},
        "timing_attack_success": {"new": fresh["timing_attack"]["success"],
                                  "previous": before["timing_attack"]["success"]},
    }


def busy_network(targets: int, reference_targets: int, seed: int,
                 ref: ModuleType) -> dict[str, Any]:
    cfg = SimConfig(clients=50, client_rate=100.0, layers=3, width=10, providers=2,
                    duration=55.0, warmup=5.0, targets=targets, seed=seed, mix_loop_rate=0.0)
    rng = np.random.default_rng(seed)
    with Clock() as sim:
        net = simulate_network(cfg, rng)
    with Clock() as tables:
        adv = Adversary(net.obs, default_horizon(cfg.mean_hop_delay))
    chosen = pick_targets(net, cfg.targets, rng)
    with Clock() as walk:
        res = evaluate_targets(adv, net.first_row[chosen], net.last_row[chosen],
                               net.sender[chosen])
    sub = chosen[:reference_targets]
    old_adv = ref.ReferenceAdversary(net.obs, default_horizon(cfg.mean_hop_delay))
    with Clock() as old:
        h_msg, h_snd = ref.reference_entropies(old_adv, net.first_row[sub], net.last_row[sub])
    new_ms = walk.cpu / max(chosen.size, 1) * 1e3
    old_ms = old.cpu / max(sub.size, 1) * 1e3
    total = sim.wall + tables.wall + walk.wall
    packets = int(net.send_time.size)
    gap = max(float(np.abs(h_msg - res.message_entropy_bits[: sub.size]).max()),
              float(np.abs(h_snd - res.sender_entropy_bits[: sub.size]).max())) \
        if sub.size else 0.0
    return {
        "parameters": cfg.to_dict(),
        "wall_s": round(total, 3),
        "goal_wall_s": GOAL_SECONDS,
        "within_goal": total < GOAL_SECONDS,
        "simulate_s": round(sim.wall, 3),
        "pool_tables_s": round(tables.wall, 3),
        "adversary_s": round(walk.wall, 3),
        "packets_simulated": packets,
        "link_rows": net.obs.n_rows,
        "packets_per_s": round(packets / total, 1),
        "targets_tracked": int(chosen.size),
        "adversary_cpu_ms_per_target": round(new_ms, 2),
        "previous_adversary_cpu_ms_per_target": round(old_ms, 2),
        "previous_measured_on_targets": int(sub.size),
        "speedup_per_target": round(old_ms / new_ms, 2) if new_ms > 0 else None,
        "max_entropy_gap_bits": gap,
        "message_entropy_bits_mean": round(float(res.message_entropy_bits.mean()), 3),
        "sender_entropy_bits_mean": round(float(res.sender_entropy_bits.mean()), 3),
        "sender_entropy_max_bits": round(float(np.log2(cfg.clients)), 3),
        "simulated_seconds": round(cfg.warmup + cfg.duration + tail_seconds(cfg), 2),
    }


def scaled(seed: int) -> dict[str, Any]:
    """1,000 clients, default rates, 10 simulated minutes (warm-up, window and drain)."""
    base = SimConfig()
    drain = tail_seconds(base)
    cfg = SimConfig(clients=1000, duration=600.0 - 5.0 - drain, warmup=5.0, targets=100,
                    seed=seed)
    with Clock() as clock:
        out = scenarios.measure_network(cfg, eps=False, timing=False)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "parameters": cfg.to_dict(),
        "simulated_seconds": round(cfg.warmup + cfg.duration + tail_seconds(cfg), 2),
        "wall_s": round(clock.wall, 3),
        "cpu_s": round(clock.cpu, 3),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "packets_simulated": out.data["packets_simulated"],
        "message_entropy_bits_mean": round(out.data["message_entropy_bits"]["mean"], 3),
        "sender_entropy_bits_mean": round(out.data["sender_entropy_bits"]["mean"], 3),
        "sender_entropy_max_bits": round(float(np.log2(cfg.clients)), 3),
    }


def scaled_in_child(seed: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--only-scaled", "--seed", str(seed)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)  # noqa: S603
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--reference-targets", type=int, default=20,
                        help="targets the previous adversary is timed on (it is slow)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-scaled", action="store_true")
    parser.add_argument("--only-scaled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only_scaled:
        print(json.dumps(scaled(args.seed)))
        return 0
    ref = reference()
    result: dict[str, Any] = {
        "benchmark": "simulation_speed",
        "stratified_3x10": stratified_3x10(args.seed, ref),
        "busy_network": busy_network(args.targets, args.reference_targets, args.seed, ref),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    if not args.skip_scaled:
        result["scaled"] = scaled_in_child(args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        for section, value in result.items():
            if isinstance(value, dict):
                print(section)
                for name, item in value.items():
                    if name != "parameters":
                        print(f"  {name:38} {item}")
            else:
                print(f"{section:40} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
