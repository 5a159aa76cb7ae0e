"""Sustained forwarding rate of a real provider process, with its hop workers, beside its bounds.

Setup, all on loopback: a one-authority network (3 layers x 1 mix, 1 provider) with zero delays;
once the consensus lists every node, the layer-1 mix is stopped and this process takes its
place as a *sink* (it holds that mix's link key, so the provider's Noise handshake succeeds and
counts every packet that arrives). This process then pushes pre-built 2-hop packets
(provider -> layer-1 mix) into the provider over a client link as fast as the link takes them.
The provider peels a Sphinx layer per packet (in its hop workers, or itself with ``--workers
0``), checks its replay filter, pools it for 0 s and forwards it: the figure is forwarded packets
per second seen at the sink at saturation.

``--workers 1,0`` measures each listed worker count in turn (the provider is restarted with
``mixnet mixnode run --workers N`` and an empty replay filter between them). For each count:

* ``forwarded_per_s`` and, measured in the same cycles on one core, ``own_hop_per_s`` (the
  suite's ``Sphinx.process``, parsing included) and ``ratio_own_hop`` = forwarded / own hop
  (the issue's bar with one worker: >= 0.8). Wall-clock rates on a shared machine swing by 2x
  from second to second, so ``ratio_own_hop_cpu`` says the same from CPU time: the hop's CPU
  cost in this process over the node's bottleneck per packet (with one worker the larger of
  the node process's and the worker's CPU per packet, each having a core). ``bound_per_s`` and
  ``ratio`` (raw sphinxmix ``sphinx_process``) are printed when ``--suite`` is v1;
* ``main_cpu_us_per_packet``: CPU the node process spent per forwarded packet (links, replay
  filter, pool, frames to and from the workers); ``worker_cpu_us_per_hop``: CPU the workers
  spent per packet; RSS of both;
* ``predicted_per_s``: what those two imply for a machine with 1, 2, 4, 8 and 16 cores:
  ``min(1 / main, (cores - 1) / worker)`` (one core for the node process, the rest for workers;
  with one core, ``1 / (main + worker)``). The bar: the 8-core figure >= 20,000/s.

This machine has 2 cores shared by everything, so **the load generator and the sink share the
cores with the node** and the measured figures understate what a machine with free cores would
do; the predicted figures come from CPU time, not wall time, and do not suffer from that. A
paced run at half the measured rate checks that nothing is lost below saturation.

    python benchmarks/mixnode_throughput.py --json [--workers 1,0] [--packets 20000] [--cycles 4]

**Why one module of ~490 lines:** a self-contained benchmark: it builds its network, its sink
and its load, and measures the bounds in the same run, so that it can be run and read alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from mixcore.consensus import AuthoritySet
from mixcore.epochs import EpochClock
from mixcore.errors import ConsensusError
from mixcore.keys import LinkKey, load_link_key
from mixcore.loading import load_mix_key
from mixcore.net.directory_client import ConsensusFetcher
from mixcore.net.link import Link, accept_link, connect_link
from mixcore.params import SPHINX_SUITE_V1, SPHINX_SUITES, NetworkParams
from mixcore.sphinx import MixPrivateKey, Sphinx, SphinxGeometry
from mixnet.network import LocalNetwork, Process
from mixnode.view import EpochView

#: Packets per write from the load generator: it must not be what limits the run.
SEND_BATCH = 64
CORES = (1, 2, 4, 8, 16)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sys_s(pid: int) -> float:
    """Of :func:`_cpu_s`, the part spent in the kernel (on loopback that includes the TCP
    receive path of the peer, which a real network's NIC and the peer's kernel would carry)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """The node's worker processes (its direct children)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out |= {int(c) for c in (task / "children").read_text().split()}
    return sorted(out)


def _rate(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def _cpu_us(fn: Callable[[], object], reps: int) -> float:
    """CPU microseconds per call in this process (robust to other processes taking cores)."""
    start = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - start) / reps * 1e6


def _bound_rounds(
    sx: Sphinx, packet: bytes, key: MixPrivateKey, rounds: dict[str, list[float]]
) -> None:
    """Rounds of our own hop (parsing included) per second on one core, and for suite v1 of raw
    sphinxmix ``sphinx_process``, alternating so that both see the same machine."""
    raw: Callable[[], object] | None = None
    if sx.geometry.suite == SPHINX_SUITE_V1:
        from sphinxmix.SphinxNode import sphinx_process  # the first issue's bound itself

        header, body = sx.parse(packet)
        params, secret = sx._params, key._secret  # type: ignore[attr-defined]
        raw = lambda: sphinx_process(params, secret, header, body)  # noqa: E731
    for _ in range(5):
        if raw is not None:
            rounds["raw"].append(_rate(raw, 0.3))
        rounds["own"].append(_rate(lambda: sx.process(key, packet), 0.3))
        rounds["own_cpu"].append(_cpu_us(lambda: sx.process(key, packet), 300))


def _predict(main_us: float, worker_us: float) -> dict[str, float]:
    """Packets/s for a machine of ``c`` cores: one core runs the node process, the rest run
    workers; a one-core machine runs both in turn."""
    out = {}
    for cores in CORES:
        if cores == 1:
            rate = 1e6 / (main_us + worker_us)
        else:
            rate = min(1e6 / main_us, (cores - 1) * 1e6 / worker_us)
        out[str(cores)] = round(rate)
    return out


async def _load(  # noqa: PLR0917
    args: argparse.Namespace,
    sx: Sphinx,
    peer: Any,
    prov: Process,
    packets: list[bytes],
    probe: bytes,
    key: MixPrivateKey,
) -> tuple[list[dict[str, Any]], float, float]:
    """Cycles of (bounds, load) against the running provider; per-cycle figures."""
    client = await connect_link(
        peer.host, peer.port, local_key=LinkKey.generate(),
        remote_static=peer.link_key, body_size=sx.geometry.packet_len,
    )
    per_cycle = len(packets) // args.cycles
    cycles: list[dict[str, Any]] = []
    pid = prov.pid or 0
    rss_main = rss_workers = 0.0
    async with client:
        for c in range(args.cycles):
            rounds: dict[str, list[float]] = {"raw": [], "own": [], "own_cpu": []}
            _bound_rounds(sx, probe, key, rounds)
            workers = _children(pid)
            cpu_at, sys_at = _cpu_s(pid), _sys_s(pid)
            worker_cpu_at = sum(_cpu_s(w) for w in workers)
            sent_at = time.perf_counter()
            chunk = packets[c * per_cycle : (c + 1) * per_cycle]
            for i in range(0, len(chunk), SEND_BATCH):
                await client.send_packets(chunk[i : i + SEND_BATCH])
            sent_until = time.perf_counter()
            rss_main = max(rss_main, _rss_mb(pid))
            rss_workers = max(rss_workers, sum(_rss_mb(w) for w in workers))
            await _drained(prov)  # before the next bounds; CPU counted through it
            cycles.append({
                "start": sent_at, "end": sent_until, "drained": time.perf_counter(),
                "n": len(chunk),
                "node_cpu_s": _cpu_s(pid) - cpu_at,
                "node_sys_s": _sys_s(pid) - sys_at,
                "worker_cpu_s": sum(_cpu_s(w) for w in workers) - worker_cpu_at,
                "raw": statistics.median(rounds["raw"]) if rounds["raw"] else 0.0,
                "own": statistics.median(rounds["own"]),
                "own_cpu_us": statistics.median(rounds["own_cpu"]),
            })
    return cycles, rss_main, rss_workers


async def _drained(prov: Process, timeout: float = 120.0) -> None:
    """Wait until the node holds nothing: no packet queued for a worker, pooled or queued on a
    link, and its input count stopped moving (its statistics are rewritten every second)."""
    deadline = trio.current_time() + timeout
    last = None
    while trio.current_time() < deadline:
        await trio.sleep(1.1)
        stats = prov.stats() or {}
        held = (stats.get("workers") or {}).get("queued", 0) + stats.get("pool_size", 0)
        held += (stats.get("links") or {}).get("queued", 0)
        if held == 0 and stats.get("packets_in") == last:
            return
        last = stats.get("packets_in")


async def _paced(sx: Sphinx, peer: Any, packets: list[bytes], rate: float) -> float:
    """Send ``packets`` at ``rate``/s in small groups; how long it took."""
    client = await connect_link(
        peer.host, peer.port, local_key=LinkKey.generate(),
        remote_static=peer.link_key, body_size=sx.geometry.packet_len,
    )
    group = 8
    start = trio.current_time()
    async with client:
        for i in range(0, len(packets), group):
            await trio.sleep_until(start + i / rate)
            await client.send_packets(packets[i : i + group])
    return trio.current_time() - start


def _arrivals_in(arrivals: list[float], lo: float, hi: float) -> list[float]:
    return [t for t in arrivals if lo <= t <= hi]


async def _run(args: argparse.Namespace) -> dict[str, object]:
    worker_counts = [int(w) for w in str(args.workers).split(",")]
    params = NetworkParams(
        epoch_length=480.0,  # the whole run (every worker count) fits one epoch and its grace
        genesis_time=float(int(time.time()) - 1),
        mean_hop_delay=0.0,
        mix_loop_rate=0.0,
        pull_batch=1,
        sphinx_suite=args.suite,
    )
    sx = Sphinx(SphinxGeometry.from_params(params))
    clock = EpochClock.from_params(params)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, LocalNetwork(
        Path(tmp), params=params, authorities=1, mixes_per_layer=1, providers=1,
        workers=worker_counts[0],
    ) as net:
        net.create()
        # The feeder is one client link sending as fast as it can: lift the per-client-link
        # packet rate a provider enforces (a client's own rates times five, by default).
        node_json = net.of_kind("provider")[0].data_dir / "node.json"
        settings = json.loads(node_json.read_text())
        settings.update(client_packet_rate=1e9, client_packet_burst=1e9)
        node_json.write_text(json.dumps(settings))
        net.start_all()
        auth = net.of_kind("authority")[0]
        fetcher = ConsensusFetcher(
            [auth.info["url"]],
            AuthoritySet.majority([bytes.fromhex(auth.info["identity_key"])]),
            clock,
        )
        view = None
        for _ in range(200):
            with contextlib.suppress(ConsensusError):  # not yet published
                verified = await fetcher.fetch(clock.epoch_at(time.time()))
                if len(verified.document.nodes) == 4:
                    view = EpochView.from_document(verified.document)
                    break
            await trio.sleep(0.25)
        if view is None:
            raise SystemExit("consensus never listed every node")
        provider = view.layer_members(0)[0]
        mix = view.layer_members(1)[0]
        mix_proc = next(p for p in net.of_kind("mix") if p.info["identity_key"] == mix.hex())
        prov = net.of_kind("provider")[0]
        await trio.sleep(1.0)  # the provider installs the view
        net.stop(mix_proc.name)
        hops = [view.hops[provider], view.hops[mix]]
        paced_n = min(2000, args.packets // 4)
        built_at = time.perf_counter()
        packets = [
            sx.create_forward(hops, [0.0], os.urandom(16), b"")
            for _ in range(args.packets + paced_n)
        ]
        build_s = time.perf_counter() - built_at
        load, paced = packets[: args.packets], packets[args.packets :]
        key = _provider_key(prov, view.epoch)
        probe = sx.create_forward(hops, [0.0], bytes(16), b"x")
        peer = view.peers[provider]
        for index, workers in enumerate(worker_counts):
            if index:  # the same packets again: a fresh replay filter, the other worker count
                net.stop(prov.name)
                shutil.rmtree(prov.data_dir / "replay", ignore_errors=True)
                argv = prov.argv
                base = argv[: argv.index("--workers")] if "--workers" in argv else argv
                prov.argv = [*base, "--workers", str(workers)]
                net.start(prov.name)
                net.wait_ready([prov.name])
                await trio.sleep(1.5)  # consensus fetched and installed
            sink = subprocess.Popen(  # noqa: S603  # this very script, as the sink
                [sys.executable, __file__, "--sink", str(mix_proc.port),
                 str(mix_proc.data_dir / "link.key"), str(sx.geometry.packet_len)],
                stdout=subprocess.PIPE,
                text=True,
            )
            await trio.sleep(1.5)  # the sink is listening
            cycles, rss_main, rss_workers = await _load(args, sx, peer, prov, load, probe, key)
            # Below saturation, into the same sink: half the measured rate, nothing may be lost.
            stats_before_paced = prov.stats() or {}
            paced_start = time.perf_counter()
            rates = [c["n"] / (c["drained"] - c["start"]) for c in cycles]
            rate = max(50.0, statistics.median(rates))
            await _paced(sx, peer, paced, rate / 2)
            await _drained(prov)
            sink.send_signal(signal.SIGTERM)
            out, _ = sink.communicate(timeout=60)
            arrivals = json.loads(out)["arrivals"]
            for cycle in cycles:
                # Saturation: this cycle's arrivals after the first 10% of them (the pipeline
                # filling) up to the last (the node draining what it queued).
                within = _arrivals_in(arrivals, cycle["start"], cycle["drained"])
                within = within[len(within) // 10 :]
                window = within[-1] - within[0] if len(within) > 20 else 0.0
                cycle["forwarded"] = (len(within) - 1) / window if window > 0 else 0.0
            forwarded_rate = statistics.median(c["forwarded"] for c in cycles)
            arrivals_paced = [t for t in arrivals if t >= paced_start]
            stats = prov.stats() or {}
            runs[str(workers)] = _summary(
                workers, cycles, forwarded_rate, rss_main, rss_workers, stats,
                stats_before_paced, len(paced), len(arrivals_paced),
            )
        return _report(runs, worker_counts, sx, build_s, args)


def _summary(  # noqa: PLR0917
    workers: int,
    cycles: list[dict[str, Any]],
    forwarded: float,
    rss_main: float,
    rss_workers: float,
    stats: dict[str, Any],
    before_paced: dict[str, Any],
    paced_sent: int,
    paced_arrived: int,
) -> dict[str, Any]:
    n = sum(c["n"] for c in cycles)
    load_s = sum(c["end"] - c["start"] for c in cycles)
    node_cpu = sum(c["node_cpu_s"] for c in cycles)
    worker_cpu = sum(c["worker_cpu_s"] for c in cycles)
    dropped = stats.get("dropped") or {}
    dropped_before = before_paced.get("dropped") or {}
    own_cpu = statistics.median(c["own_cpu_us"] for c in cycles)
    main_us = node_cpu / n * 1e6
    worker_us = worker_cpu / n * 1e6
    # With a core each for the node process and its one worker, the slower of the two sets
    # the rate; with the hop in the node process, their sum does.
    bottleneck = max(main_us, worker_us) if workers else main_us
    out: dict[str, Any] = {
        "workers": workers,
        "own_hop_cpu_us": round(own_cpu, 1),
        "ratio_own_hop_cpu": round(own_cpu / bottleneck, 3) if workers <= 1 else None,
        "forwarded_per_s": round(forwarded, 1),
        "own_hop_per_s": round(statistics.median(c["own"] for c in cycles), 1),
        "ratio_own_hop": round(statistics.median(c["forwarded"] / c["own"] for c in cycles), 3),
        "main_cpu_us_per_packet": round(node_cpu / n * 1e6, 1),
        "main_kernel_us_per_packet": round(sum(c["node_sys_s"] for c in cycles) / n * 1e6, 1),
        "worker_cpu_us_per_hop": round(worker_cpu / n * 1e6, 1) if workers else None,
        "node_cpu_share": round(node_cpu / load_s, 3),
        "workers_cpu_share": round(worker_cpu / load_s, 3),
        "rss_mb_main": round(rss_main, 1),
        "rss_mb_workers": round(rss_workers, 1),
        "cycles": [{k: round(c[k], 1) for k in ("forwarded", "own", "raw")} for c in cycles],
        "dropped_at_saturation": dropped_before,
        "paced": {
            "sent": paced_sent, "arrived": paced_arrived,
            "lost": paced_sent - paced_arrived,
            "dropped_by_node": sum(dropped.values()) - sum(dropped_before.values()),
        },
        "node_workers_stats": stats.get("workers"),
        "node_links": stats.get("links"),
    }
    if cycles[0]["raw"]:
        out["bound_per_s"] = round(statistics.median(c["raw"] for c in cycles), 1)
        out["ratio"] = round(statistics.median(c["forwarded"] / c["raw"] for c in cycles), 3)
    return out


def _report(
    runs: dict[str, dict[str, Any]],
    counts: list[int],
    sx: Sphinx,
    build_s: float,
    args: argparse.Namespace,
) -> dict[str, object]:
    with_workers = [runs[str(w)] for w in counts if w > 0]
    result: dict[str, object] = {"benchmark": "mixnode_throughput", "suite": sx.geometry.suite}
    if with_workers:
        best = with_workers[0]
        main_us, worker_us = best["main_cpu_us_per_packet"], best["worker_cpu_us_per_hop"]
        result.update({
            "main_cpu_us_per_packet": main_us,
            "main_kernel_us_per_packet": best["main_kernel_us_per_packet"],
            "worker_cpu_us_per_hop": worker_us,
            "predicted_per_s": _predict(main_us, worker_us),
            "predicted_8_core_target": 20_000,
        })
    one = runs.get("1")
    if one is not None:
        result["ratio_own_hop_one_worker"] = one["ratio_own_hop"]
        result["ratio_own_hop_cpu_one_worker"] = one["ratio_own_hop_cpu"]
        result["ratio_own_hop_target"] = 0.8
    result["measured_per_s"] = {w: r["forwarded_per_s"] for w, r in runs.items()}
    result["runs"] = runs
    result["note"] = (
        f"{os.cpu_count()} cores shared by the node, its workers, the load generator and the "
        "sink (and anything else running): measured figures understate a machine with free "
        "cores; predicted figures come from CPU time per packet"
    )
    result.update({
        "packets_per_run": args.packets,
        "packet_bytes": sx.geometry.packet_len,
        "build_s": round(build_s, 1),
        "node": "provider (entry hop: Sphinx, replay filter, pool, Noise link out)",
    })
    return result


def _provider_key(proc: Process, epoch: int) -> MixPrivateKey:
    _, key = load_mix_key(proc.data_dir / "mixkeys" / f"mix-{epoch}.key")
    return key


def _sink(port: int, key_file: str, body_size: int) -> None:
    """Accept the provider's link as the stopped mix would; print arrival times at SIGTERM."""
    key = load_link_key(key_file)
    arrivals: list[float] = []

    async def conn(stream: trio.SocketStream) -> None:
        try:
            link: Link = await accept_link(stream, local_key=key, body_size=body_size)
            async with link:
                while True:
                    cells = await link.receive_cells()
                    now = time.perf_counter()
                    arrivals.extend(now for _ in cells)
        except Exception:  # the provider went away: the run is over
            return

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
            nursery.start_soon(trio.serve_listeners, conn, listeners)
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()

    trio.run(serve)
    print(json.dumps({"arrivals": arrivals}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--cycles", type=int, default=4, help="alternations of bounds and load")
    parser.add_argument(
        "--workers", default="1,0",
        help="hop worker counts to measure, comma-separated (0: the hop in the node process)",
    )
    parser.add_argument("--suite", default=NetworkParams().sphinx_suite, choices=SPHINX_SUITES)
    parser.add_argument(
        "--sink", nargs=3, metavar=("PORT", "KEYFILE", "BODY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.sink:
        _sink(int(args.sink[0]), args.sink[1], int(args.sink[2]))
        return 0
    result = trio.run(_run, args)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:24} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
