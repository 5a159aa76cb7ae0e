"""End-to-end message latency of a real testnet against what the parameters imply.

Two testnet runs on this machine (real processes on loopback, see ``mixnet testnet``):

1. calibration, with ``mean_hop_delay`` 0: its latencies are the model's waits (the next
   payload-stream slot, Exp(payload_rate); the recipient's next pull, U(0, pull_interval)) plus
   the system's own overhead (Sphinx processing, links, SQLite, the API). The mean excess over
   the model is the measured overhead ``c``.
2. the measured run with the chosen ``mean_hop_delay``: the prediction is the model (slot wait +
   one Exp(mean_hop_delay) per mix layer + pull wait) shifted by ``c``.

Prints the percentiles of both distributions and the two-sample KS statistic between the
measured latencies and samples of the prediction.

    python benchmarks/e2e_latency.py --json [--duration 40] [--mean-hop-delay 0.2]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from typing import Any

from mixcore.params import NetworkParams
from mixnet.testnet import Options, latency_model, run_testnet, testnet_params


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "p50": round(q(0.5), 4),
        "p90": round(q(0.9), 4),
        "p95": round(q(0.95), 4),
        "p99": round(q(0.99), 4),
        "mean": round(statistics.fmean(ordered), 4),
    }


def _ks(a: list[float], b: list[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (sup of the CDF difference)."""
    xs, ys = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(xs) and j < len(ys):
        if xs[i] <= ys[j]:
            i += 1
        else:
            j += 1
        d = max(d, abs(i / len(xs) - j / len(ys)))
    return d


def _run(options: Options) -> tuple[list[float], NetworkParams, dict[str, Any]]:
    summary = run_testnet(options)
    return summary["latency_s"]["samples"], testnet_params(options), summary["messages"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--mean-hop-delay", type=float, default=0.2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--message-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    common = {
        "duration": args.duration, "clients": args.clients,
        "message_interval": args.message_interval, "json": True, "seed": 1, "report": False,
    }
    calibration, params0, _ = _run(Options(mean_hop_delay=0.0, **common))
    rng = random.Random(2)
    overhead = statistics.fmean(calibration) - statistics.fmean(latency_model(params0, 20000, rng))
    measured, params, messages = _run(Options(mean_hop_delay=args.mean_hop_delay, **common))
    predicted = [x + overhead for x in latency_model(params, 20000, rng)]
    result = {
        "benchmark": "e2e_latency",
        "messages": messages,
        "measured_s": _percentiles(measured),
        "predicted_s": _percentiles(predicted),
        "ks_statistic": round(_ks(measured, predicted), 4),
        "overhead_s": round(overhead, 4),
        "calibration_messages": len(calibration),
        "parameters": {
            "layers": params.layers,
            "mean_hop_delay": params.mean_hop_delay,
            "payload_rate": params.payload_rate,
            "pull_interval": params.pull_interval,
            **{k: v for k, v in common.items() if k not in ("json", "report")},
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:22} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
