"""What an idle client daemon costs its machine: CPU share and memory, at the default cover
rates and at ten times them, beside the cost of the packets it must build, measured in one run.

An idle client still sends a Poisson payload stream (drop cover when it has nothing to say),
loops and drops, and pulls its mailbox at a fixed interval: that is the price of unobservability,
and it must stay small (Nym users report 140% of a core while idle; our target is < 5% of one
core at the defaults). For each rate set this script starts a small real network on loopback
(one authority, one mix per layer, one provider), starts one client daemon with the messenger
store, lets it settle, and then reads the daemon's CPU time (``/proc``) over ``--seconds``.

The bound beside it, measured in this process in the same run: the CPU its packet creation
needs at those rates: every payload-stream firing builds a 5-hop forward packet and a SURB-ACK,
every loop a forward packet and a SURB, every drop a forward packet
(``packet_creation_share``). The rest of the measured share is the daemon's own bookkeeping:
scheduling, links, pulls, consensus polls.

    python benchmarks/client_cover_cpu.py --json [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mixcore.keys import IdentityKey
from mixcore.params import NetworkParams
from mixcore.sphinx import MixPrivateKey, PathHop, Sphinx, SphinxGeometry
from mixnet.network import LocalNetwork

TARGET_SHARE = 0.05


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _creation_cost_us(params: NetworkParams, reps: int) -> dict[str, float]:
    """CPU microseconds to build each kind of packet the client sends, in this process."""
    sx = Sphinx(SphinxGeometry.from_params(params))
    keys = [MixPrivateKey.generate(params.sphinx_suite) for _ in range(params.max_hops)]
    path = [PathHop(IdentityKey.generate().public, k.public) for k in keys]
    delays = [0.1] * (len(path) - 1)
    payload = os.urandom(sx.geometry.payload_capacity - sx.geometry.surb_len - 1)

    def timed(fn: object) -> float:
        rounds = []
        for _ in range(5):
            start = time.process_time()
            for _ in range(reps):
                fn()  # type: ignore[operator]
            rounds.append((time.process_time() - start) / reps * 1e6)
        return statistics.median(rounds)

    forward = timed(lambda: sx.create_forward(path, delays, bytes(16), payload))
    surb = timed(lambda: sx.create_surb(path, delays, bytes(16)))
    return {"forward_us": round(forward, 1), "surb_us": round(surb, 1)}


def _measure(params: NetworkParams, seconds: float, settle: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, LocalNetwork(
        Path(tmp), params=params, authorities=1, mixes_per_layer=1, providers=1, workers=0
    ) as net:
        net.create()
        net.start_all()
        client = net.add_client("alice", "provider1", passphrase=os.urandom(12).hex())
        net.start("alice")
        net.wait_ready(["alice"], 120)
        time.sleep(settle)  # past start-up: keys, consensus, first link
        pid = client.pid or 0
        cpu_at, wall_at = _cpu_s(pid), time.monotonic()
        time.sleep(seconds)
        cpu = _cpu_s(pid) - cpu_at
        wall = time.monotonic() - wall_at
        return {"cpu_share": round(cpu / wall, 4), "rss_mb": round(_rss_mb(pid), 1)}


def run(seconds: float, settle: float, reps: int) -> dict[str, object]:
    base = NetworkParams(genesis_time=float(int(time.time()) - 1), epoch_length=600.0)
    sets = {
        "default": base,
        "10x": base.replace(
            payload_rate=base.payload_rate * 10,
            loop_rate=base.loop_rate * 10,
            drop_rate=base.drop_rate * 10,
            pull_interval=base.pull_interval / 10,
        ),
    }
    out: dict[str, object] = {"benchmark": "client_cover_cpu"}
    for name, params in sets.items():
        measured = _measure(params, seconds, settle)
        cost = _creation_cost_us(params, reps)
        per_s = (
            params.payload_rate * (cost["forward_us"] + cost["surb_us"])
            + params.loop_rate * (cost["forward_us"] + cost["surb_us"])
            + params.drop_rate * cost["forward_us"]
        )
        out[name] = {
            "payload_rate": params.payload_rate,
            "loop_rate": params.loop_rate,
            "drop_rate": params.drop_rate,
            "pull_interval": params.pull_interval,
            **measured,
            "packet_creation_share": round(per_s / 1e6, 4),
            **cost,
        }
    default = out["default"]
    assert isinstance(default, dict)
    out.update({
        "target_share_at_defaults": TARGET_SHARE,
        "meets_target": default["cpu_share"] < TARGET_SHARE,
        "suite": base.sphinx_suite,
        "seconds": seconds,
        "note": "cpu_share: CPU-seconds of the client daemon per wall second (1.0 = one core)",
    })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=40)
    args = parser.parse_args(argv)
    result = run(args.seconds, args.settle, args.reps)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
