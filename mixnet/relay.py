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
each segment may go on; this module only reads, waits and writes.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from mixnet.faults import (
    OUTSIDE,
    FaultSchedule,
    FaultSpec,
    LinkCounters,
    LinkShaper,
    link_seed,
    segments,
)

CONNECT_TIMEOUT = 10.0
#: Writes one direction may hold (what a stalled link buffers before the relay stops reading
#: and TCP's own flow control pushes back on the sender); each is at most one read.
QUEUE_WRITES = 256
MAX_READ = 65536
#: Consecutive segments whose release times lie within this many seconds of the first one's go
#: out in one write at the last one's time: the decisions stay per segment, but a run of them
#: costs one sleep and one write, not one each (the relay is Python in the launcher's process,
#: sharing a loaded machine's CPU with every node it carries).
COALESCE = 0.001

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def _read(
    src: trio.abc.ReceiveStream,
    shaper: LinkShaper,
    channel: trio.MemorySendChannel[tuple[float, bytes]],
    eof: trio.Event,
    not_before: float = -math.inf,
) -> None:
    """Cut what ``src`` sends into segments and queue each with its release time. Nothing is
    sent before ``not_before``, when the connection's far side is set up."""
    async with channel:
        while data := await src.receive_some(MAX_READ):
            now = max(trio.current_time(), not_before)
            group: list[bytes] = []
            first = release = -math.inf
            for piece in segments(data):
                decision = shaper.segment(now, len(piece))
                if group and decision.release_at - first > COALESCE:
                    await channel.send((release, b"".join(group)))
                    group = []
                    now = max(trio.current_time(), not_before)
                if not group:
                    first = decision.release_at
                group.append(piece)
                release = decision.release_at  # never earlier than the one before: in order
            await channel.send((release, b"".join(group)))
    eof.set()


async def _write(
    channel: trio.MemoryReceiveChannel[tuple[float, bytes]], dst: trio.abc.HalfCloseableStream
) -> None:
    async with channel:
        async for release_at, piece in channel:
            await trio.sleep_until(release_at)
            await dst.send_all(piece)
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
            fwd_send, fwd_recv = trio.open_memory_channel[tuple[float, bytes]](QUEUE_WRITES)
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
            back_send, back_recv = trio.open_memory_channel[tuple[float, bytes]](QUEUE_WRITES)
            nursery.start_soon(_write, fwd_recv, outbound)
            nursery.start_soon(_read, outbound, backward, back_send, trio.Event())
            nursery.start_soon(_write, back_recv, inbound)
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
    """Where its process listens (0: a client, which accepts no connections)."""


class Relay:
    """Listens on every host's public address and carries each connection to the host's
    private one, through the shapers of its two directions (made on first use, one per directed
    link, with the run's seed)."""

    def __init__(self, spec: FaultSpec, *, seed: int | None = None) -> None:
        self.spec = spec
        self.seed = seed
        self.schedule = FaultSchedule(spec)
        self.hosts: dict[str, HostAddress] = {}
        self._by_private: dict[str, str] = {}
        self.links: dict[tuple[str, str], LinkShaper] = {}
        self._nursery: trio.Nursery | None = None
        self.errors = 0
        """Connections that ended on an error the relay did not expect (a bug: counted, and
        only that connection is lost, never the relay)."""

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
        self.hosts[host.name] = host
        self._by_private[host.private_ip] = host.name
        if host.port:
            listeners = await trio.open_tcp_listeners(host.port, host=host.public_ip)
            for listener in listeners:
                self._nursery.start_soon(self._accept, listener, host)

    def begin(self, traffic_duration: float) -> list[dict[str, Any]]:
        """The traffic starts now: place the partitions; returns them in seconds from now."""
        self.schedule.begin(trio.current_time(), traffic_duration)
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
        src = self._by_private.get(peer, OUTSIDE)
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
        links = {f"{s}>{d}": shaper.counters.to_dict()
                 for (s, d), shaper in sorted(self.links.items())}
        total = LinkCounters()
        for (s, d), shaper in self.links.items():
            if OUTSIDE not in (s, d):
                total.add(shaper.counters)
        return {
            "spec": self.spec.text(),
            "partitions": self._windows(),
            "totals": total.to_dict(),
            "relay_errors": self.errors,
            "links": links,
        }


class RelayThread:
    """A :class:`Relay` on its own trio loop in a thread of the launcher, so it keeps carrying
    traffic while the launcher blocks (start-up in worker threads, ``--keep-running``) and
    dies with the launcher whatever kills it. Every call crosses into the relay's loop."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="mixnet-relay", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._cancel = scope
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.relay.run)
                    self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:  # handed to the launcher's thread
            self._error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout) or self._token is None:
            raise RuntimeError(f"the relay did not start: {self._error!r}")

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        assert self._token is not None
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def call_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._token is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self, timeout: float = 10.0) -> None:
        """Close every listener and connection; idempotent."""
        if self._token is not None and self._thread.is_alive() and self._cancel is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        if self._thread.is_alive():
            self._thread.join(timeout)
