"""``mixnet testnet``: the whole network on this machine, clients talking, and a summary.

Starts real processes on loopback (authorities, mixes, providers, client daemons; see
:mod:`mixnet.network`), waits for a consensus, has every client send messages to random other
clients at Poisson times through the daemons' local API, shows live progress, optionally injects
faults (``--chaos``), then waits for the last messages and prints a summary. Every figure is read
from the processes' own statistics files and the daemons' inboxes and outboxes, never assumed.
Ctrl-C or the end of the run stops every process it started (by PID).

What it says, on stderr: the start-up stages with a count of processes up (updated in place
on a terminal, one plain line per stage when piped), where the logs are, the bootstrap line
clients join with; during the traffic a live table (terminal) or a plain line every
:data:`PIPED_PROGRESS_INTERVAL` seconds (piped); then, on stdout, the summary and a one-line
verdict (the words are :mod:`mixnet.report`'s). ``--resume DIR`` restarts a network kept in
``DIR`` (``testnet.json``) with its keys and ports, so clients made against it (``mixnet
client init --join DIR/bootstrap.txt``) keep working.

``--hosts netns`` runs every process in its own network namespace (:mod:`mixnet.netns`) with
every link through the fault injector (:mod:`mixnet.relay`, :mod:`mixnet.faults`), which
``--faults`` configures; the summary then says what the faults cost, per link.

**Why one module of ~780 lines:** one run's story, told in order: its options, the latency
model its verdict is judged against, the start-up, the traffic, chaos and soak tasks, the drain
and the summary all share one :class:`Run` and one cancellation scope (Ctrl-C at any point stops
every process the run started). What could stand alone already does: the processes
(:mod:`mixnet.network`), the words (:mod:`mixnet.report`), the soak rules (:mod:`mixnet.soak`),
the namespaces and faults (:mod:`mixnet.netns`, :mod:`mixnet.faults`).
"""

from __future__ import annotations

import math
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from client.api import ApiClient
from client.core import ClientStatistics
from client.daemon import parse_address
from mixcore.errors import MixnetError
from mixcore.lockfile import FileLock, LockHeld
from mixcore.net.directory_client import ConsensusUnavailable, fetch_network
from mixcore.params import NetworkParams
from mixnet.faults import FaultSpec
from mixnet.network import BOOTSTRAP_NAME, MANIFEST_NAME, Hosts, LocalNetwork, NetworkError
from mixnet.report import Reporter, print_summary, verdict
from mixnet.soak import Rule, Soak, brief, sample_network
from mixnode.core import NodeStatistics

if TYPE_CHECKING:
    from mixnet.netns import NetnsHosts

MESSAGE_TAG = "tn"
PIPED_PROGRESS_INTERVAL = 10.0
#: One-way link crossings of a message besides those between mix layers: sender to its
#: provider, provider to the first layer, last layer to the recipient's provider, and that
#: provider's pull reply to the recipient (``layers + LEGS_BESIDES_LAYERS - 1`` in all).
LEGS_BESIDES_LAYERS = 4
LOCK_NAME = "testnet.lock"
START_TIMEOUT = 180.0

@dataclass
class Options:
    duration: float = 60.0
    clients: int = 4
    layers: int = 3
    mixes_per_layer: int = 2
    authorities: int = 3
    providers: int = 2
    mean_hop_delay: float = 0.1
    epoch_length: float = 20.0
    message_interval: float = 3.0
    """Mean seconds between two messages of one client (Poisson)."""
    drain: float = 60.0
    seed: int | None = None
    chaos: bool = False
    keep_running: bool = False
    directory: Path | None = None
    resume: bool = False
    """Restart the network kept in ``directory`` instead of making a new one."""
    trace: Path | None = None
    json: bool = False
    report: bool = True
    """Print stages, progress and the summary (off for library callers like benchmarks)."""
    passphrase: str = "testnet"  # noqa: S105  # demo clients on a throwaway local network
    """The clients' message-store passphrase (they are demo clients)."""
    soak: bool = False
    """Sample every process's RSS, descriptors and databases; fail if one grows (soak.py)."""
    soak_interval: float = 60.0
    hosts: str = "local"
    """``local``: every process on 127.0.0.1; ``netns``: each in its own network namespace."""
    faults: FaultSpec | None = None
    """Link faults between hosts (``--hosts netns`` only)."""


@dataclass
class Sent:
    token: str
    sender: str
    recipient: str
    t_send: float
    message_id: bytes = b""


@dataclass
class Run:
    options: Options
    net: LocalNetwork
    params: NetworkParams
    rng: random.Random
    clients: list[str] = field(default_factory=list)
    addresses: dict[str, tuple[bytes, bytes, bytes]] = field(default_factory=dict)
    sent: dict[str, Sent] = field(default_factory=dict)
    latencies: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    events: list[str] = field(default_factory=list)
    started: float = 0.0
    first_epoch: int = 0
    send_errors: Counter[str] = field(default_factory=Counter)
    failed_ids: set[bytes] = field(default_factory=set)
    hosts_report: dict[str, Any] | None = None
    """``--hosts netns``: each host's namespace and addresses, the relay's counters per link."""

    @property
    def traffic(self) -> bool:
        """Whether this run sends messages (it needs two clients and some duration)."""
        return len(self.clients) >= 2 and self.options.duration > 0

    def log(self, text: str) -> None:
        self.events.append(f"{time.time() - self.started:6.1f}s {text}")


def testnet_params(options: Options) -> NetworkParams:
    """Short epochs and brisk rates so a minute shows rotation, loops and traffic."""
    return NetworkParams(
        layers=options.layers,
        mean_hop_delay=options.mean_hop_delay,
        epoch_length=options.epoch_length,
        genesis_time=float(int(time.time()) - 1),
        payload_rate=5.0,
        loop_rate=1.0,
        drop_rate=1.0,
        mix_loop_rate=1.0,
        pull_interval=0.5,
    )


def latency_model(
    params: NetworkParams, samples: int, rng: random.Random, link_delay: float = 0.0
) -> list[float]:
    """Samples of what the parameters imply for one message, processing overhead excluded:
    the wait for the next payload-stream slot (Exp, rate ``payload_rate``), one exponential
    delay per mix layer, the wait for the recipient's next pull (uniform over
    ``pull_interval``), and ``link_delay`` (the injected faults' delay over the message's
    links, :func:`fault_link_delay`; 0 on loopback)."""
    mean = params.mean_hop_delay
    return [
        rng.expovariate(params.payload_rate)
        + sum(rng.expovariate(1 / mean) if mean > 0 else 0.0 for _ in range(params.layers))
        + rng.uniform(0, params.pull_interval)
        + link_delay
        for _ in range(samples)
    ]


def fault_link_delay(params: NetworkParams, faults: FaultSpec | None) -> float:
    """What ``--faults`` adds to a message on average: its mean one-way delay (losses
    included) on each link the message crosses (partitions are left out: they are events)."""
    if faults is None:
        return 0.0
    return (params.layers + LEGS_BESIDES_LAYERS - 1) * faults.expected_delay()


def predicted_latency(
    params: NetworkParams, samples: int = 20000, seed: int = 0, link_delay: float = 0.0
) -> dict[str, float]:
    values = sorted(latency_model(params, samples, random.Random(seed), link_delay))
    out = {
        "mean": statistics.fmean(values),
        "p50": values[len(values) // 2],
        "p95": values[int(len(values) * 0.95)],
    }
    if link_delay:
        out["link_delay"] = link_delay
    return out


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def _api(run: Run, name: str, op: str, **args: Any) -> Any:
    proc = run.net.processes[name]
    client = await ApiClient.connect(str(proc.data_dir / "api.sock"), str(proc.data_dir))
    try:
        return await client.call(op, **args)
    finally:
        await client.aclose()


async def _traffic(run: Run, until: float) -> None:
    """Each client sends to a random other client at Poisson times."""

    async def one_client(name: str) -> None:
        while True:
            await trio.sleep(run.rng.expovariate(1 / run.options.message_interval))
            if time.time() >= until:
                return
            recipient = run.rng.choice([c for c in run.clients if c != name])
            token = f"{MESSAGE_TAG}-{run.rng.getrandbits(64):016x}"
            provider, mailbox, mailbox_key = run.addresses[recipient]
            entry = Sent(token, name, recipient, time.time())
            try:
                result = await _api(
                    run, name, "send", provider=provider, mailbox=mailbox,
                    mailbox_key=mailbox_key,
                    data=f"{token} {entry.t_send:.6f} hello from {name}".encode(),
                )
            except MixnetError as exc:  # the daemon is restarting (chaos) or refused
                run.send_errors[type(exc).__name__] += 1
                continue
            entry.message_id = result["message_id"]
            run.sent[token] = entry

    async with trio.open_nursery() as nursery:
        for name in run.clients:
            nursery.start_soon(one_client, name)


async def _collect(run: Run) -> None:
    """Read every client's inbox; match tokens to measure end-to-end latency."""
    last_seq = dict.fromkeys(run.clients, 0)
    while True:
        for name in run.clients:
            try:
                rows = await _api(run, name, "inbox", after=last_seq[name], limit=1000)
            except MixnetError:
                continue
            for row in rows:
                last_seq[name] = max(last_seq[name], row["seq"])
                text = row["data"].decode(errors="replace")
                token = text.split(" ", 1)[0]
                if not token.startswith(MESSAGE_TAG):
                    continue
                entry = run.sent.get(token)
                if token in run.latencies:
                    run.duplicates += 1
                elif entry is not None:
                    run.latencies[token] = row["received_at"] - entry.t_send
        await trio.sleep(0.5)


async def _chaos(run: Run, duration: float) -> None:
    """SIGKILL and restart one mix and one provider; stop one authority for good."""
    net = run.net

    async def kill_and_restart(name: str) -> None:
        net.kill(name)
        run.log(f"chaos: SIGKILL {name}")
        await trio.sleep(3.0)
        await trio.to_thread.run_sync(lambda: net.restart(name, 90))
        run.log(f"chaos: restarted {name}")

    await trio.sleep(duration * 0.25)
    await kill_and_restart(net.of_kind("mix")[0].name)
    await trio.sleep(duration * 0.15)
    await kill_and_restart(net.of_kind("provider")[-1].name)
    await trio.sleep(duration * 0.1)
    authority = net.of_kind("authority")[-1].name
    net.stop(authority)
    run.log(f"chaos: stopped {authority} (for the rest of the run)")


async def _soak(run: Run, soak: Soak, until: float) -> None:
    """Every ``soak_interval`` while the traffic runs: one sample of every process (soak.py)."""
    t0 = time.time()
    while time.time() < until:
        procs = [(p.name, p.pid, p.data_dir) for p in run.net.processes.values()
                 if p.running() and p.pid is not None]
        usage = await trio.to_thread.run_sync(sample_network, procs)
        for name, values in usage.items():
            soak.add(time.time() - t0, name, values)
        print(f"soak {(time.time() - t0) / 60:5.1f} min: {brief(usage)}", file=sys.stderr,
              flush=True)
        await trio.sleep(run.options.soak_interval)


async def _states(run: Run) -> dict[bytes, str]:
    states: dict[bytes, str] = {}
    for name in run.clients:
        try:
            for row in await _api(run, name, "outbox"):
                states[row["message_id"]] = row["state"]
        except MixnetError:
            continue
    return states


#: With ``--faults partition=...`` the wait after the traffic grows by this many times the
#: longest cut: a sender's retransmission backoff doubles through a cut (1 s, 2 s, 4 s, ...),
#: so its next attempt may come well after the cut healed.
PARTITION_DRAIN_FACTOR = 3.0


def drain_seconds(options: Options) -> float:
    """How long the run waits after the traffic for the last messages."""
    cuts = [p.duration for p in options.faults.partitions] if options.faults else []
    return options.drain + PARTITION_DRAIN_FACTOR * max(cuts, default=0.0)


async def _drain(run: Run) -> None:
    """After the traffic stops: wait until every message is received or given up."""
    deadline = time.time() + drain_seconds(run.options)
    while time.time() < deadline:
        states = await _states(run)
        pending = [
            t for t, s in run.sent.items()
            if t not in run.latencies and states.get(s.message_id) != "undeliverable"
        ]
        if not pending:
            return
        await trio.sleep(1.0)


def _render_progress(run: Run) -> Any:
    from rich.table import Table  # noqa: PLC0415  # only for the live view

    table = Table(title=f"mixnet testnet — {time.time() - run.started:5.0f} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    lat = list(run.latencies.values())
    table.add_row("messages sent", str(len(run.sent)))
    table.add_row("messages delivered", str(len(run.latencies)))
    table.add_row("latency p50 (s)", f"{_percentile(lat, 0.5) or 0:.2f}")
    for proc in run.net.processes.values():
        if proc.kind in ("mix", "provider"):
            document = proc.stats()
            node = NodeStatistics.from_document(document) if document else NodeStatistics()
            table.add_row(
                f"{proc.name} in/loops",
                f"{node.packets_in} / {node.loops_returned}"
                f" {'(down)' if not proc.running() else ''}",
            )
    for line in run.events[-3:]:
        table.add_row("event", line)
    return table


async def _progress(run: Run) -> None:
    """A live table on a terminal; a plain line every few seconds when stderr is piped (a live
    view written to a file is a screenful of escape codes, and its last frame has no newline
    for whatever is printed next)."""
    if not sys.stderr.isatty():
        while True:
            await trio.sleep(PIPED_PROGRESS_INTERVAL)
            print(f"{time.time() - run.started:6.0f} s: sent {len(run.sent)}, "
                  f"delivered {len(run.latencies)}", file=sys.stderr, flush=True)
    from rich.console import Console  # noqa: PLC0415
    from rich.live import Live  # noqa: PLC0415

    console = Console(stderr=True)
    with Live(_render_progress(run), console=console, refresh_per_second=2,
              transient=True) as live:
        while True:
            await trio.sleep(1.0)
            live.update(_render_progress(run))


def summarize(run: Run) -> dict[str, Any]:
    """Every figure from the processes' own statistics."""
    net, params = run.net, run.params
    nodes: dict[str, Any] = {}
    drops: Counter[str] = Counter()
    acks = 0
    epochs: list[int] = []
    for proc in net.processes.values():
        if proc.kind not in ("mix", "provider"):
            continue
        document = proc.stats()
        # Typed: a counter renamed in the node fails here, it does not read as 0. A node that
        # has not written its first stats.json yet counts as zeros.
        node = NodeStatistics.from_document(document) if document else NodeStatistics()
        document = document or {}
        drops.update(node.dropped)
        acks += node.acks_sent
        if "epoch" in document:
            epochs.append(document["epoch"])
        outcomes = sum(node.outcomes.values())
        dropped = sum(node.dropped.values())
        nodes[proc.name] = {
            "role": proc.kind,
            "packets_in": node.packets_in,
            "processed": outcomes,
            "dropped": dropped,
            "pooled_now": node.pool_size,
            "sent": node.sent,
            "in_equals_processed_plus_dropped": node.packets_in == outcomes + dropped,
            # Every packet that entered the pool (relayed, or the node's own loops and ACKs)
            # has left it (handed to a link, or refused by a full link queue) or is still in it.
            "pooled_equals_sent_plus_failed_plus_waiting":
                node.pooled == node.sent + node.send_failed + node.pool_size,
            "loops_sent": node.loops_sent,
            "loops_returned": node.loops_returned,
            "loop_return_share": node.loop_return_share,
            "restarts": proc.starts - 1,
            "hop_workers": (document.get("workers") or {}).get("workers", 0),
        }
    kinds: Counter[str] = Counter()
    client_loops = {"sent": 0, "returned": 0}
    retransmissions = 0
    for name in run.clients:
        status = net.processes[name].stats() or {}
        if not status.get("transport"):
            continue  # no consensus reached this client yet: nothing sent
        transport = ClientStatistics.from_dict(status["transport"])
        kinds.update(transport.packets_sent)
        retransmissions += transport.retransmissions
        client_loops["sent"] += transport.loops_sent
        client_loops["returned"] += transport.loops_returned
    latencies = list(run.latencies.values())
    failed = sum(
        1 for s in run.sent.values()
        if s.token not in run.latencies and s.message_id in run.failed_ids
    )
    predicted = predicted_latency(params, link_delay=fault_link_delay(params, run.options.faults))
    summary: dict[str, Any] = {
        "messages": {
            "sent": len(run.sent),
            "delivered": len(run.latencies),
            "failed": failed,
            "lost": len(run.sent) - len(run.latencies) - failed,
            "duplicates": run.duplicates,
            "send_errors": dict(run.send_errors),
            "retransmissions": retransmissions,
        },
        "latency_s": {
            "p50": _percentile(latencies, 0.5),
            "p95": _percentile(latencies, 0.95),
            "max": max(latencies) if latencies else None,
            "mean": statistics.fmean(latencies) if latencies else None,
            "predicted": predicted,
            "samples": sorted(latencies),
        },
        "packets_by_kind": {**dict(kinds), "ack": acks},
        "client_loops": client_loops,
        "drops_by_reason": dict(drops),
        "epochs_rotated": (max(epochs) - run.first_epoch) if epochs else 0,
        "nodes": nodes,
        "events": run.events,
        "parameters": {
            **params.to_dict(),
            "clients": len(run.clients),
            "mixes_per_layer": run.options.mixes_per_layer,
            "authorities": run.options.authorities,
            "providers": run.options.providers,
            "duration": run.options.duration,
            "traffic": run.traffic,
            "message_interval": run.options.message_interval,
            "drain": drain_seconds(run.options),
            "chaos": run.options.chaos,
            "seed": run.options.seed,
        },
        "directory": str(net.root),
        "logs": str(net.root / "*" / "process.log"),
        "bootstrap": net.bootstrap().to_text(),
        "pids": net.pids(),
    }
    if run.hosts_report is not None:
        summary["hosts"] = run.hosts_report
        summary["parameters"]["hosts"] = run.options.hosts
        summary["parameters"]["faults"] = (run.options.faults.text()
                                           if run.options.faults else None)
    return summary


async def _wait_for_consensus(net: LocalNetwork, timeout: float) -> int:
    """Until the authorities' current consensus (verified against their keys) lists every mix
    and provider; returns its epoch. Clients that join need their provider listed."""
    bootstrap = net.bootstrap()
    wanted = {p.name for p in net.processes.values() if p.kind in ("mix", "provider")}
    missing = set(wanted)
    with trio.move_on_after(timeout):
        while True:
            try:
                verified = await fetch_network(bootstrap.urls, bootstrap.authority_set,
                                               timeout=5.0)
            except ConsensusUnavailable:
                pass
            else:
                listed = {e.descriptor.name for e in verified.document.nodes}
                missing = wanted - listed
                if not missing:
                    return verified.epoch
            await trio.sleep(0.5)
    raise NetworkError(f"no consensus lists every node after {timeout:.0f} s "
                       f"(missing: {', '.join(sorted(missing))})")


async def _start(run: Run, reporter: Reporter) -> None:
    options, net = run.options, run.net
    if not options.resume:
        reporter.progress("writing keys and configs", done=False)
        await trio.to_thread.run_sync(net.create)
        reporter.progress("keys and configs written", done=True)
    else:
        reporter.progress(f"keys and configs kept in {net.root}", done=True)
    await trio.to_thread.run_sync(lambda: net.start_all(START_TIMEOUT, on_stage=reporter.count))
    providers = [p.name for p in net.of_kind("provider")]
    if options.resume:
        run.clients = [p.name for p in net.of_kind("client")]
    else:
        for i in range(options.clients):
            name = f"client{i + 1}"
            await trio.to_thread.run_sync(partial(
                net.add_client, name, providers[i % len(providers)],
                passphrase=options.passphrase))
            run.clients.append(name)
    for name in run.clients:
        net.start(name)
    nodes = len(net.of_kind("mix")) + len(providers)
    state = {"consensus": False, "clients": 0}

    def show() -> None:
        listed = "lists all" if state["consensus"] else "does not list yet all"
        reporter.progress(
            f"consensus {listed} {nodes} nodes; clients connected: "
            f"{state['clients']}/{len(run.clients)}",
            done=bool(state["consensus"]) and state["clients"] == len(run.clients),
        )

    def client_ready(done: int, _total: int) -> None:
        state["clients"] = done
        show()

    show()
    async with trio.open_nursery() as nursery:

        async def consensus() -> None:
            await _wait_for_consensus(net, START_TIMEOUT)
            state["consensus"] = True
            show()

        nursery.start_soon(consensus)
        await trio.to_thread.run_sync(
            lambda: net.wait_ready(run.clients, START_TIMEOUT, client_ready))
    for name in run.clients:
        run.addresses[name] = parse_address(net.address(name))


async def _main(run: Run, reporter: Reporter) -> dict[str, Any]:
    options, net = run.options, run.net
    await _start(run, reporter)
    run.first_epoch = min(
        (p.stats() or {}).get("epoch", 1 << 30) for p in net.of_kind("mix")
    )
    run.log("network up: consensus published, clients connected")
    reporter.line(f"network up in {time.time() - run.started:.1f} s; logs: "
                  f"{net.root}/<process>/process.log")
    if options.keep_running:
        reporter.line(f"bootstrap: {net.bootstrap().to_text()}")
        reporter.line(f"join it:   mixnet client init --dir DIR --join {net.root / BOOTSTRAP_NAME}"
                      "  (docs/quickstart.md)")
    soak = Soak(Rule(warmup_s=0.2 * options.duration)) if options.soak else None
    netns = _netns_hosts(net)
    cuts = []
    if netns is not None and run.traffic:
        cuts = await trio.to_thread.run_sync(netns.begin, options.duration)
    # The traffic's window opens once the faults' clock has started: taken before, a loaded
    # machine's slow start of the relays' schedule ate the whole window (nothing was sent).
    until = time.time() + options.duration
    async with trio.open_nursery() as nursery:
        for cut in cuts:
            nursery.start_soon(_log_cut, run, cut)
        if run.traffic:
            nursery.start_soon(_collect, run)
            if soak is not None:
                nursery.start_soon(_soak, run, soak, until)
            if options.report and not options.json:
                nursery.start_soon(_progress, run)
            if options.chaos:
                nursery.start_soon(_chaos, run, options.duration)
            await _traffic(run, until)
            run.log("traffic stopped; waiting for the last messages")
            await _drain(run)
            states = await _states(run)
            run.failed_ids = {m for m, s in states.items() if s == "undeliverable"}
            await trio.sleep(1.5)  # one more statistics write everywhere
        nursery.cancel_scope.cancel()
    if netns is not None:
        run.hosts_report = await trio.to_thread.run_sync(netns.statistics)
    summary = summarize(run)
    summary["verdict"] = verdict(summary)
    if soak is not None:
        judged = soak.verdict()
        summary["soak"] = {"ok": judged.ok, "text": judged.text(), "rule": str(soak.rule),
                           "series": [v.to_dict() for v in judged.series],
                           "samples": {f"{p} {r}": pts for (p, r), pts in soak.series.items()}}
        summary["verdict"]["ok"] = summary["verdict"]["ok"] and judged.ok
        summary["verdict"]["text"] += f"; {judged.text()}"
    return summary


async def _log_cut(run: Run, cut: dict[str, Any]) -> None:
    """Put a partition into the run's events when it starts and when it heals (the relay
    applies it on its own clock; this only tells the reader)."""
    start = trio.current_time()
    await trio.sleep_until(start + cut["start_s"])
    run.log(f"faults: {cut['host']} cut off from every host")
    await trio.sleep_until(start + cut["end_s"])
    run.log(f"faults: {cut['host']} reachable again")


def _netns_hosts(net: LocalNetwork) -> Any:
    """The network's :class:`mixnet.netns.NetnsHosts`, or None on loopback."""
    return net.hosts if net.hosts.mode == "netns" else None


def host_names(options: Options) -> list[str]:
    """The hosts a new testnet of these options has (as :class:`LocalNetwork` names them)."""
    return (
        [f"auth{i}" for i in range(1, options.authorities + 1)]
        + [f"mix{i}" for i in range(1, options.layers * options.mixes_per_layer + 1)]
        + [f"provider{i}" for i in range(1, options.providers + 1)]
        + [f"client{i}" for i in range(1, options.clients + 1)]
    )


def _check_hosts(options: Options) -> NetnsHosts | None:
    """The namespaces' :class:`Hosts` for ``--hosts netns`` (not opened yet), None for
    loopback; every option that cannot work fails here, before anything is made."""
    if options.hosts not in ("local", "netns"):
        raise NetworkError(f"--hosts must be local or netns, not {options.hosts!r}")
    if options.hosts == "local":
        if options.faults is not None:
            raise NetworkError("--faults needs --hosts netns (faults act on the links between "
                               "hosts, and on loopback every process shares one address)")
        return None
    if options.resume:
        raise NetworkError("--resume restarts --hosts local networks only (a netns run's "
                           "namespaces and addresses end with it)")
    from mixnet.netns import NetnsHosts, probe  # noqa: PLC0415  # Linux only

    probe()
    spec = options.faults or FaultSpec()
    spec.check_hosts(host_names(options))
    return NetnsHosts(spec, seed=options.seed)


def _prepare(
    options: Options, hosts: Hosts | None = None
) -> tuple[Path, LocalNetwork, NetworkParams]:
    """The network to run: a new one under a fresh or empty folder, or the kept one."""
    if options.resume:
        assert options.directory is not None
        net = LocalNetwork.load(options.directory, trace=options.trace is not None,
                                passphrase=options.passphrase)
        return net.root, net, net.params
    root = options.directory or Path(tempfile.mkdtemp(prefix="mixnet-testnet-"))
    if (root / MANIFEST_NAME).exists():
        raise NetworkError(f"{root} already holds a testnet: restart it with mixnet testnet "
                           f"--resume {root}, or give an empty --dir")
    if root.exists() and any(root.iterdir()) and options.directory is not None:
        raise NetworkError(f"{root} is not empty; give a new or empty --dir")
    params = testnet_params(options)
    net = LocalNetwork(
        root, params=params, authorities=options.authorities,
        mixes_per_layer=options.mixes_per_layer, providers=options.providers,
        trace=options.trace is not None, hosts=hosts,
    )
    return root, net, params


def run_testnet(options: Options) -> dict[str, Any]:
    if not options.resume and (options.clients < 0
                               or (options.clients < 2 and options.duration > 0)):
        raise NetworkError("traffic needs at least 2 clients (or give --duration 0)")
    netns = _check_hosts(options)
    root, net, params = _prepare(options, netns)
    root.mkdir(parents=True, exist_ok=True)
    try:
        lock = FileLock.acquire(root / LOCK_NAME)
    except LockHeld as held:
        raise NetworkError(f"a testnet is already running in {root} (PID {held.pid})") from None
    reporter = Reporter(options.report)
    run = Run(options, net, params, random.Random(options.seed), started=time.time())
    # SIGTERM (a service manager, `timeout`, `kill`) must stop the children as Ctrl-C does: they
    # run in their own sessions, so nothing else would stop them.
    main_thread = threading.current_thread() is threading.main_thread()
    old_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None
    verb = "restarting the testnet kept" if options.resume else "starting a testnet"
    clients = len(net.of_kind("client")) if options.resume else options.clients
    reporter.line(
        f"{verb} in {root}: {net.n_authorities} authorities, {params.layers} x "
        f"{net.mixes_per_layer} mixes, {net.n_providers} providers, {clients} clients; "
        f"each process logs to {root}/<name>/process.log"
    )
    if netns is not None:
        faults = options.faults.text() if options.faults else "none"
        reporter.line(f"hosts: a network namespace each, on a private bridge; link faults: "
                      f"{faults}")
    keep = options.directory is not None or options.keep_running
    failed = False
    try:
        if netns is not None:
            netns.open(reporter.line)
            reporter.line(f"namespaces {netns.prefix}-<host>, bridge {netns.bridge}, subnet "
                          f"{netns.subnet} (removed at the end)")
        summary = trio.run(_main, run, reporter)
        if options.trace is not None:
            rows = net.collect_trace(options.trace)
            summary["trace"] = {"file": str(options.trace), "link_events": rows}
        keep = keep or not summary["verdict"]["ok"]
        summary["kept"] = keep
        if options.keep_running:
            summary["attach"] = _attach(run)
        if options.report:
            print_summary(summary, options.json)
        if options.keep_running:
            again = ("" if netns is not None else
                     f" (then: mixnet testnet --resume {root} restarts it with the same keys)")
            reporter.line(f"network left running; stop it with Ctrl-C{again}")
            _wait_forever()
        return summary
    except Exception:
        failed = True
        if not keep:
            keep = True
            reporter.line(f"the run failed; its files and logs are kept in {root}")
        raise
    except BaseException:  # Ctrl-C, SIGTERM
        failed = True
        raise
    finally:
        net.close()
        if netns is not None:
            _close_hosts(netns, failed)
        lock.release()
        if old_sigterm is not None:
            signal.signal(signal.SIGTERM, old_sigterm)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _close_hosts(netns: NetnsHosts, failed: bool) -> None:
    """Remove the run's namespaces, links and bridge. If that fails while another error is on
    its way out, say it on a line of its own and let the first error be the one reported."""
    from mixnet.netns import NetnsError  # noqa: PLC0415

    try:
        netns.close()
    except NetnsError as exc:
        if not failed:
            raise
        print(f"mixnet: error: {exc}", file=sys.stderr, flush=True)


def _attach(run: Run) -> dict[str, str]:
    root = run.net.root
    out = {
        "bootstrap": run.net.bootstrap().to_text(),
        "join": f"mixnet client init --dir ~/.mixnet --join {root / BOOTSTRAP_NAME}",
    }
    if run.options.hosts == "local":
        out["resume"] = f"mixnet testnet --resume {root} --keep-running"
    if len(run.clients) >= 2:
        first, second = (run.net.processes[n].data_dir for n in run.clients[:2])
        out.update({
            "passphrase": f"export MIXNET_PASSPHRASE={run.options.passphrase}",
            "chat": f"mixnet chat --dir {first}",
            "card": f"mixnet contact card --dir {second}",
            "add": f"mixnet contact add --dir {first} 'mixnet1:...' --name friend",
            "send": f"mixnet send --dir {first} friend 'hello'",
            "status": f"mixnet status --dir {first}",
        })
    return out


def _wait_forever() -> None:
    """Until Ctrl-C (a KeyboardInterrupt: the caller stops every process and exits 130)."""
    while True:
        time.sleep(3600)
