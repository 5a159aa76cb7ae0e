"""Outbound links to next hops: one reused Noise link per peer, reconnecting with backoff.

Sending never blocks the pool scheduler: each peer has a bounded queue drained by its own task;
a full queue refuses the packet (counted by the caller), so a dead or slow peer costs bounded
memory. Only nodes of a current consensus can be dialled: the peer's address and link key come
from the consensus, and the Noise XK handshake fails unless the peer holds that key.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from mixcore.errors import LinkError
from mixcore.keys import LinkKey
from mixcore.net.link import Link, connect_link
from mixcore.statistics import Statistics, Tally
from mixnode.view import Peer

INITIAL_BACKOFF = 0.1
MAX_BACKOFF = 5.0
MAX_BATCH = 64


@dataclass(frozen=True, slots=True)
class LinkQueueStatistics(Statistics):
    """The outbound links in counts (``stats.json``'s ``links`` object)."""

    peers: int = 0
    queued: int = 0
    connected: int = 0
    connect_failed: int = 0
    unknown_peer: int = 0
    backlog_full: int = 0
    """Packets refused because the peer's queue was full."""
    packets_sent: int = 0
    dropped_on_exit: int = 0
    idle_closed: int = 0
    link_broken: int = 0


LINK_COUNTERS = frozenset({"connected", "connect_failed", "unknown_peer", "backlog_full",
                           "packets_sent", "dropped_on_exit", "idle_closed", "link_broken"})


class OutboundLinks:
    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        local_key: LinkKey,
        body_size: int,
        resolve: Callable[[bytes], Peer | None],
        backlog: int,
        handshake_timeout: float,
        rng: random.Random,
        idle_timeout: float = math.inf,
    ) -> None:
        self._nursery = nursery
        self._local_key = local_key
        self._body_size = body_size
        self._resolve = resolve
        self._backlog = backlog
        self._timeout = handshake_timeout
        self._rng = rng
        self._idle = idle_timeout
        self._queues: dict[bytes, _PeerQueue] = {}
        self.counts = Tally(LinkQueueStatistics, only=LINK_COUNTERS)

    def send(self, node_id: bytes, packet: bytes) -> bool:
        """Queue ``packet`` for ``node_id``; False if the peer is unknown or its queue is full."""
        queue = self._queues.get(node_id)
        if queue is None:
            if self._resolve(node_id) is None:
                self.counts["unknown_peer"] += 1
                return False
            self._queues[node_id] = queue = _PeerQueue()
            self._nursery.start_soon(self._run_peer, node_id, queue)
        if len(queue.packets) >= self._backlog:
            self.counts["backlog_full"] += 1
            return False
        queue.packets.append(packet)
        if not queue.ready.is_set():
            queue.ready.set()
        return True

    async def _connect(self, node_id: bytes) -> Link | None:
        peer = self._resolve(node_id)
        if peer is None:
            return None
        try:
            link = await connect_link(
                peer.host,
                peer.port,
                local_key=self._local_key,
                remote_static=peer.link_key,
                body_size=self._body_size,
                handshake_timeout=self._timeout,
            )
        except LinkError:
            self.counts["connect_failed"] += 1
            return None
        self.counts["connected"] += 1
        return link

    async def _run_peer(self, node_id: bytes, queue: _PeerQueue) -> None:
        backoff = INITIAL_BACKOFF
        pending: list[bytes] = []
        while True:
            if not pending:  # no link is held while there is nothing to send
                pending = await queue.take(MAX_BATCH)
            link = await self._connect(node_id)
            if link is None:
                if self._resolve(node_id) is None:  # left the consensus: stop and forget it
                    self._queues.pop(node_id, None)
                    self.counts["dropped_on_exit"] += len(pending) + len(queue.packets)
                    return
                await trio.sleep(backoff * (0.5 + self._rng.random()))
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            backoff = INITIAL_BACKOFF
            try:
                async with link:
                    while True:
                        if not pending:
                            # Whatever is waiting, up to a batch: one write per batch, not per
                            # packet, so a busy node's output keeps pace with its input.
                            with trio.move_on_after(self._idle) as idle:
                                pending = await queue.take(MAX_BATCH)
                            if idle.cancelled_caught:
                                # Quiet for idle_timeout: close it before the peer does.
                                self.counts["idle_closed"] += 1
                                break
                        await link.send_packets(pending)
                        self.counts["packets_sent"] += len(pending)
                        pending = []
            except LinkError:
                self.counts["link_broken"] += 1
                # ``pending`` is resent on the next link: a batch is never half-lost.

    def statistics(self) -> LinkQueueStatistics:
        queued = sum(len(q.packets) for q in self._queues.values())
        return LinkQueueStatistics(peers=len(self._queues), queued=queued, **self.counts.counts())


class _PeerQueue:
    """One peer's bounded queue (the bound is checked by :meth:`OutboundLinks.send`): a deque
    and an event, cheaper per packet than a memory channel's send and receive."""

    __slots__ = ("packets", "ready")

    def __init__(self) -> None:
        self.packets: deque[bytes] = deque()
        self.ready = trio.Event()

    async def take(self, most: int) -> list[bytes]:
        while not self.packets:
            if self.ready.is_set():
                self.ready = trio.Event()
            await self.ready.wait()
        packets = self.packets
        return [packets.popleft() for _ in range(min(most, len(packets)))]
