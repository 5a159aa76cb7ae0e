"""The fault injector's trio shell: a TCP relay that every connection between two hosts of a
``--hosts netns`` testnet goes through.

Each host's process listens on its *private* address inside its own network namespace; the
address it advertises (the descriptor's host, the authority's URL) is its *public* address,
which belongs to the relay in the launcher's namespace. A connection to a public address is
accepted by the relay, which knows the initiating host by the connection's source (its private
address) and opens the other side *from the initiator's public address*, so the receiving
process sees the same peer address that the consensus lists (the per-source limits and the
consensus-node exemptions of :mod:`mixnode` work as on separate machines). Each direction of
the connection then flows through a :class:`~mixnet.faults.LinkShaper`, which decides when
each read may go on; this module only reads, waits and writes.

Every host that accepts connections gets a relay process of its own (``python -m
mixnet.relay``, started by :mod:`mixnet.netns`): like a host's own network card, its capacity
grows with the network, and on a loaded machine the scheduler gives each its share (one relay
thread carrying a whole testnet fell behind by seconds when the machine ran 20 processes per
core, and its lag became the run's latency). A relay process listens on its host's public
address, learns the other hosts from a JSON file (private address -> name and public address)
that the launcher rewrites as hosts are added, and reads commands on stdin, one per line:
``begin WALL_TIME DURATION`` (the traffic began then: place the partitions), ``flush`` (write
the statistics file now, then say ``flushed`` on stdout). End of stdin (the launcher closed it,
or died) ends the relay.

**Why one module of ~430 lines:** one relay process: its accept loop, the per-connection pumps
and the shaper's glue; the shaping decisions themselves are the sans-IO mixnet/faults.py.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from mixcore.files import write_atomic
from mixnet.faults import (
    OUTSIDE,
    FaultSchedule,
    FaultSpec,
    FaultSpecError,
    LinkCounters,
    LinkShaper,
    link_seed,
    parse_faults,
)

CONNECT_TIMEOUT = 10.0
#: Reads one direction may hold (what a stalled link buffers before the relay stops reading and
#: TCP's own flow control pushes back on the sender).
QUEUE_CHUNKS = 256
MAX_READ = 65536
#: A read and the time it may leave the relay (the fault schedule's release time).
Chunk = tuple[float, bytes | bytearray]
STATS_INTERVAL = 1.0

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def _read(
    src: trio.abc.ReceiveStream,
    shaper: LinkShaper,
    channel: trio.MemorySendChannel[Chunk],
    eof: trio.Event,
    not_before: float = -math.inf,
) -> None:
    """Queue each read of ``src`` with its release time. Nothing is sent before
    ``not_before``, when the connection's far side is set up."""
    async with channel:
        while data := await src.receive_some(MAX_READ):
            now = max(trio.current_time(), not_before)
            await channel.send((shaper.chunk(now, len(data)).release_at, data))
    eof.set()


async def _write(
    channel: trio.MemoryReceiveChannel[Chunk],
    dst: trio.abc.HalfCloseableStream,
    shaper: LinkShaper,
) -> None:
    """Write each queued read at its release time; reads already due by then go in the same
    write. Counts how late the relay itself was (``lag``)."""
    pending: Chunk | None = None
    counters = shaper.counters
    async with channel:
        while True:
            if pending is None:
                try:
                    pending = await channel.receive()
                except trio.EndOfChannel:
                    break
            release_at, data = pending
            pending = None
            await trio.sleep_until(release_at)
            now = trio.current_time()
            parts = [data]
            late = [now - release_at]
            while True:
                try:
                    item = channel.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if item[0] > now:
                    pending = item
                    break
                parts.append(item[1])
                late.append(now - item[0])
            counters.lag_total += sum(late)
            counters.lag_max = max(counters.lag_max, *late)
            await dst.send_all(parts[0] if len(parts) == 1 else b"".join(parts))
    await dst.send_eof()


def _reason(exc: BaseException) -> str:
    """An error's kind, for the counters (``ConnectionRefusedError``, ``errno 113``)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if isinstance(exc, OSError) and type(exc) is OSError and exc.errno is not None:
        return f"errno {exc.errno}"
    return type(exc).__name__


async def relay_connection(
    inbound: trio.abc.HalfCloseableStream,
    connect: Callable[[], Awaitable[trio.abc.HalfCloseableStream]],
    forward: LinkShaper,
    backward: LinkShaper,
) -> None:
    """Carry one connection: ``inbound`` from its initiator, the other side from
    ``connect()``, each direction delayed as its shaper decides. The other side is opened one
    delay after the initiator connected (at once to the initiator: the relay accepted it), and
    what the initiator sends meanwhile leaves when it is open, so its first bytes arrive two
    delays after it connected, about a real round trip's set-up. Returns when both directions
    have ended (half-closes are passed on) or either side broke; closes both."""
    outbound: trio.abc.HalfCloseableStream | None = None
    try:
        async with trio.open_nursery() as nursery:
            setup = forward.connect(trio.current_time())
            fwd_send, fwd_recv = trio.open_memory_channel[Chunk](QUEUE_CHUNKS)
            inbound_eof = trio.Event()
            nursery.start_soon(_read, inbound, forward, fwd_send, inbound_eof, setup.release_at)
            if setup.cut:
                with trio.move_on_at(setup.release_at):
                    await inbound_eof.wait()
                if trio.current_time() < setup.release_at:  # the initiator gave up first
                    forward.counters.connections_abandoned += 1
                    nursery.cancel_scope.cancel()
                    return
            else:
                await trio.sleep_until(setup.release_at)
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    outbound = await connect()
            except (OSError, trio.TooSlowError) as exc:
                forward.counters.connect_failed += 1
                forward.counters.note(f"connect: {_reason(exc)}")
                nursery.cancel_scope.cancel()
                return
            back_send, back_recv = trio.open_memory_channel[Chunk](QUEUE_CHUNKS)
            nursery.start_soon(_write, fwd_recv, outbound, forward)
            nursery.start_soon(_read, outbound, backward, back_send, trio.Event())
            nursery.start_soon(_write, back_recv, inbound, backward)
    except* _STREAM_ERRORS as group:
        forward.counters.resets += 1
        forward.counters.note(f"reset: {_reason(group.exceptions[0])}")
    finally:
        await trio.aclose_forcefully(inbound)
        if outbound is not None:
            await trio.aclose_forcefully(outbound)


@dataclass(frozen=True, slots=True)
class HostAddress:
    name: str
    private_ip: str
    public_ip: str
    port: int = 0
    """Where its process listens (0: a host that accepts no connections, like a client)."""


def write_hosts_file(path: Path, hosts: Iterable[HostAddress]) -> None:
    """The hosts a relay knows connections' sources by (the launcher rewrites it whole)."""
    body = {h.private_ip: {"name": h.name, "public": h.public_ip, "port": h.port}
            for h in hosts}
    write_atomic(path, json.dumps(body).encode(), durable=False)


def read_hosts_file(path: Path) -> list[HostAddress]:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [HostAddress(v["name"], ip, v["public"], int(v.get("port", 0)))
            for ip, v in body.items()]


class Relay:
    """Listens on hosts' public addresses and carries each connection to the host's private
    one, through the shapers of its two directions (made on first use, one per directed link,
    from the run's seed). A source it does not know sends it to ``hosts_file`` first; one
    still unknown is "outside" (the launcher), whose links are never faulted."""

    def __init__(
        self, spec: FaultSpec, *, seed: int | None = None, hosts_file: Path | None = None,
    ) -> None:
        self.spec = spec
        self.seed = seed
        self.hosts_file = hosts_file
        self.schedule = FaultSchedule(spec)
        self.hosts: dict[str, HostAddress] = {}
        self._by_private: dict[str, str] = {}
        self.links: dict[tuple[str, str], LinkShaper] = {}
        self._nursery: trio.Nursery | None = None
        self.errors = 0
        """Connections that ended on an error the relay did not expect (a bug: counted, and
        only that connection is lost, never the relay)."""

    def know(self, host: HostAddress) -> None:
        self.hosts[host.name] = host
        self._by_private[host.private_ip] = host.name

    def source(self, ip: str) -> str:
        """The host a connection from ``ip`` comes from, or :data:`OUTSIDE`."""
        if ip not in self._by_private and self.hosts_file is not None:
            for host in read_hosts_file(self.hosts_file):
                self.know(host)
        return self._by_private.get(ip, OUTSIDE)

    def shaper(self, src: str, dst: str) -> LinkShaper:
        key = (src, dst)
        if key not in self.links:
            outside = OUTSIDE in key
            self.links[key] = LinkShaper(
                FaultSpec() if outside else self.spec, src, dst, link_seed(self.seed, src, dst),
                None if outside else self.schedule,
            )
        return self.links[key]

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery that listeners and connections run in, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def add_host(self, host: HostAddress) -> None:
        """Know ``host`` by its private address; listen on its public one if it serves."""
        assert self._nursery is not None, "Relay.run first"
        self.know(host)
        if host.port:
            listeners = await trio.open_tcp_listeners(host.port, host=host.public_ip)
            for listener in listeners:
                self._nursery.start_soon(self._accept, listener, host)

    def begin(self, traffic_duration: float, *, ago: float = 0.0) -> list[dict[str, Any]]:
        """The traffic started ``ago`` seconds before now: place the partitions; returns them
        in seconds from the traffic's start."""
        self.schedule.begin(trio.current_time() - ago, traffic_duration)
        return self._windows()

    def _windows(self) -> list[dict[str, Any]]:
        began = self.schedule.began or 0.0
        return [{"host": w.host, "start_s": round(w.start - began, 3),
                 "end_s": round(w.end - began, 3)} for w in self.schedule.windows]

    async def _accept(self, listener: trio.SocketListener, dst: HostAddress) -> None:
        assert self._nursery is not None
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError:  # out of descriptors: wait, as trio.serve_listeners does
                    await trio.sleep(0.1)
                    continue
                self._nursery.start_soon(self._guarded, stream, dst)

    async def _guarded(self, stream: trio.SocketStream, dst: HostAddress) -> None:
        try:
            await self._carry(stream, dst)
        except Exception:
            self.errors += 1
            await trio.aclose_forcefully(stream)

    async def _carry(self, stream: trio.SocketStream, dst: HostAddress) -> None:
        try:
            peer = stream.socket.getpeername()[0]
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        src = self.source(peer)
        source_ip = self.hosts[src].public_ip if src != OUTSIDE else None

        async def connect() -> trio.SocketStream:
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
            try:
                if source_ip is not None:
                    await sock.bind((source_ip, 0))
                await sock.connect((dst.private_ip, dst.port))
            except BaseException:
                sock.close()
                raise
            return trio.SocketStream(sock)

        await relay_connection(stream, connect, self.shaper(src, dst.name),
                               self.shaper(dst.name, src))

    def statistics(self) -> dict[str, Any]:
        """Counters per directed link ("src>dst") and their totals over the testnet's own
        links (those from outside, the launcher's, are listed but not in the totals)."""
        return merge_statistics([{
            "spec": self.spec.text(),
            "partitions": self._windows(),
            "links": {f"{s}>{d}": shaper.counters.to_dict()
                      for (s, d), shaper in sorted(self.links.items())},
            "relay_errors": self.errors,
        }])


def merge_statistics(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several relays' (each carries the links into its own host): links side
    by side, totals over the testnet's own links, partitions and errors from all."""
    links: dict[str, dict[str, Any]] = {}
    partitions: dict[str, dict[str, Any]] = {}
    errors = 0
    for part in parts:
        for name, counters in part.get("links", {}).items():
            if name in links:  # two relays never share a link; merge all the same
                merged = LinkCounters.from_dict(links[name])
                merged.add(LinkCounters.from_dict(counters))
                links[name] = merged.to_dict()
            else:
                links[name] = counters
        for window in part.get("partitions", []):
            partitions[window["host"]] = window
        errors += part.get("relay_errors", 0)
    total = LinkCounters()
    for name, counters in links.items():
        if OUTSIDE not in name.split(">"):
            total.add(LinkCounters.from_dict(counters))
    return {
        "spec": parts[0]["spec"] if parts else FaultSpec().text(),
        "partitions": sorted(partitions.values(), key=lambda w: (w["start_s"], w["host"])),
        "totals": total.to_dict(),
        "relay_errors": errors,
        "links": dict(sorted(links.items())),
    }


# -- the relay process -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mixnet.relay",
                                description="One host's relay of a --hosts netns testnet.")
    p.add_argument("--host", required=True, help="the host's name")
    p.add_argument("--private", required=True, help="where its process listens")
    p.add_argument("--public", required=True, help="the address it is reached at")
    p.add_argument("--port", type=int, required=True, help="its port")
    p.add_argument("--faults", default="", help="the --faults spec ('' for none)")
    p.add_argument("--seed", type=int, default=None, help="the run's seed")
    p.add_argument("--hosts-file", type=Path, required=True, help="the other hosts (JSON)")
    p.add_argument("--stats", type=Path, required=True, help="where to write its counters")
    return p


async def _serve(args: argparse.Namespace, spec: FaultSpec) -> None:
    relay = Relay(spec, seed=args.seed, hosts_file=args.hosts_file)

    def write_stats() -> None:
        write_atomic(args.stats, json.dumps(relay.statistics()).encode(), durable=False)

    async def control(cancel: trio.CancelScope) -> None:
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        buffered = b""
        while chunk := await stdin.receive_some():
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                words = line.decode().split()
                if words[:1] == ["begin"]:
                    wall, duration = float(words[1]), float(words[2])
                    relay.begin(duration, ago=max(0.0, time.time() - wall))
                elif words[:1] == ["flush"]:
                    write_stats()
                    print("flushed", flush=True)
        cancel.cancel()  # the launcher closed our stdin, or is gone

    async def stats_loop() -> None:
        while True:
            await trio.sleep(STATS_INTERVAL)
            write_stats()

    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(relay.run)
                await relay.add_host(HostAddress(args.host, args.private, args.public,
                                                 args.port))
                print(json.dumps({"status": "serving", "host": args.host}), flush=True)
                nursery.start_soon(control, nursery.cancel_scope)
                nursery.start_soon(stats_loop)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
    finally:
        write_stats()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        spec = parse_faults(args.faults) if args.faults else FaultSpec()
    except FaultSpecError as exc:
        print(f"mixnet.relay: error: {exc}", file=sys.stderr)
        return 2
    status = 0
    try:
        trio.run(_serve, args, spec)
    except* OSError as group:  # the public address cannot be listened on
        print(f"mixnet.relay: error: {args.host}: {group.exceptions[0]}", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
