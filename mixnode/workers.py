"""Worker processes for the Sphinx hop, and the trio side that feeds them.

The node process keeps everything with state — links, the delay pool, the replay filter, the
mailbox — and hands whole batches of packets to ``count`` worker processes, each a plain Python
process running :class:`mixnode.unwrap.WorkerCore` on its stdin/stdout pipes. Threads would not
help: the multiplications hold the GIL. Frames are the ones :mod:`mixnode.unwrap` defines; why
pipes and not shared memory or multiprocessing's connections is measured in
``benchmarks/worker_ipc.py`` and recorded in ``docs/decisions.md``.

Guarantees (tested against real processes in ``tests/mixnode/test_workers.py``):

* **Exact replay protection.** A worker only peels; the node process checks every replay tag
  in its one filter per key, so a packet is forwarded at most once whichever worker peeled it.
* **Bounded queues.** At most ``queue_capacity`` packets wait for a worker, and each worker holds
  at most ``in_flight`` batches of at most ``batch_size``: a flood costs bounded memory, and the
  excess is dropped and counted (``hop_queue_full``) instead of queued.
* **A dead worker is replaced.** Its in-flight packets are lost and counted (``worker_lost``);
  nothing is resent, so nothing is forwarded twice, and a packet that kills workers cannot loop.

A worker exits when its stdin closes (the node process died, even by SIGKILL) and ignores
SIGINT (a Ctrl-C in a terminal reaches the whole process group; the node stops its workers).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from mixcore.hop import Unwrapped
from mixcore.sphinx import MixPrivateKey, Sphinx, SphinxGeometry
from mixcore.statistics import Statistics, Tally
from mixnode.keyring import KeyRing
from mixnode.unwrap import (
    BATCH,
    KEYS,
    READY,
    RESULTS,
    FrameError,
    WorkerCore,
    decode_results,
    encode_batch,
    encode_keys,
    frame,
    split_frames,
)

log = logging.getLogger("mixnet.mixnode.workers")

#: Linux's F_SETPIPE_SZ: a batch of 64 packets is ~150 kB, more than the default 64 kB pipe.
_F_SETPIPE_SZ = 1031
_PIPE_BYTES = 1 << 20
_READ_BYTES = 1 << 20


OnResults = Callable[[Sequence[bytes], Sequence[Any], Sequence[Unwrapped]], None]
"""Called with a batch's packets, the context each was submitted with, and their results."""


@dataclass(slots=True)
class _Batch:
    batch_id: int
    packets: list[bytes]
    contexts: list[Any]


@dataclass(slots=True)
class _Slot:
    """One worker process's place: what it holds and which keys it has."""

    index: int
    in_flight: deque[_Batch] = field(default_factory=deque)
    keys_sent: tuple[int, ...] | None = None
    dead: bool = False


class _WorkerGone(Exception):
    pass


@dataclass(frozen=True, slots=True)
class WorkerStatistics(Statistics):
    """The hop workers in counts (``stats.json``'s ``workers`` object)."""

    workers: int = 0
    queued: int = 0
    queue_capacity: int = 0
    batches: int = 0
    packets: int = 0
    """Packets peeled by the workers."""
    queue_full: int = 0
    """Packets refused because the queue to the workers was full (a flood)."""
    restarts: int = 0
    lost: int = 0
    """Packets a dying worker held (counted as dropped ``worker_lost`` too)."""


WORKER_COUNTERS = frozenset({"batches", "packets", "queue_full", "restarts", "lost"})


class HopWorkers:
    def __init__(
        self,
        *,
        count: int,
        geometry: SphinxGeometry,
        keyring: KeyRing,
        now: Callable[[], float],
        on_results: OnResults,
        on_lost: Callable[[int], None],
        queue_capacity: int = 4096,
        batch_size: int = 64,
        in_flight: int = 2,
        python: str = sys.executable,
    ) -> None:
        if count < 1 or queue_capacity < 1 or not 1 <= batch_size <= 1024 or in_flight < 1:
            raise ValueError("workers need count, queue_capacity, batch_size, in_flight >= 1")
        self.count = count
        self.geometry = geometry
        self.keyring = keyring
        self._now = now
        self._on_results = on_results
        self._on_lost = on_lost
        self.queue_capacity = queue_capacity
        self.batch_size = batch_size
        self.in_flight = in_flight
        self._argv = [
            python, "-m", "mixnode.workers",
            geometry.suite, str(geometry.max_hops), str(geometry.body_len),
        ]
        self._pending: deque[tuple[bytes, Any]] = deque()
        self._has_work = trio.Event()
        self._next_id = 0
        self.pids: list[int | None] = [None] * count
        self.ready = trio.Event()
        """Set once every worker has started (said READY) for the first time."""
        self._started = 0
        self.counts = Tally(WorkerStatistics, only=WORKER_COUNTERS)

    # -- the node's side ----------------------------------------------------------------------

    def submit(self, packet: bytes, context: Any) -> bool:
        """Queue ``packet`` for a worker; False when the queue is full. ``context`` (when and
        where it arrived, opaque here) comes back with its result."""
        if len(self._pending) >= self.queue_capacity:
            self.counts["queue_full"] += 1
            return False
        self._pending.append((packet, context))
        if not self._has_work.is_set():
            self._has_work.set()
        return True

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(workers=self.count, queued=len(self._pending),
                                queue_capacity=self.queue_capacity, **self.counts.counts())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep ``count`` workers running until cancelled; ``started()`` once all said READY."""
        async with trio.open_nursery() as nursery:
            for index in range(self.count):
                nursery.start_soon(self._keep_running, _Slot(index))
            await self.ready.wait()
            task_status.started()

    # -- one worker ---------------------------------------------------------------------------

    async def _keep_running(self, slot: _Slot) -> None:
        first = True
        while True:
            slot = _Slot(slot.index)
            ready = await self._run_one(slot, first)
            first = False
            self.counts["restarts"] += 1
            log.warning("hop worker %d died; restarting it", slot.index)
            if not ready:  # it could not even start: do not spin
                await trio.sleep(1.0)

    async def _run_one(self, slot: _Slot, first: bool) -> bool:
        """Run one worker process until it dies; True if it got as far as READY."""
        proc = await trio.lowlevel.open_process(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert proc.stdin is not None and proc.stdout is not None
        for stream in (proc.stdin, proc.stdout):
            fileno = getattr(stream, "fileno", None)  # trio's pipe streams are FdStreams here
            if fileno is None:
                continue
            with contextlib.suppress(OSError):
                fcntl.fcntl(fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
        self.pids[slot.index] = proc.pid
        reader = _FrameReader(proc.stdout)
        try:
            try:
                kind, _ = await reader.next()
            except _WorkerGone:
                return False
            if kind != READY:
                return False
            if first:
                self._started += 1
                if self._started == self.count:
                    self.ready.set()
            credit = trio.Semaphore(self.in_flight)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive, slot, reader, credit, nursery.cancel_scope)
                await self._send(slot, proc.stdin, credit, nursery.cancel_scope)
            return True
        finally:
            with trio.CancelScope(shield=True):
                with contextlib.suppress(OSError):
                    proc.kill()
                await proc.wait()
                for stream in (proc.stdin, proc.stdout):
                    with contextlib.suppress(OSError, trio.ClosedResourceError):
                        await stream.aclose()
            self.pids[slot.index] = None
            lost = sum(len(batch.packets) for batch in slot.in_flight)
            slot.in_flight.clear()
            if lost:
                self.counts["lost"] += lost
                self._on_lost(lost)

    async def _next_batch(self) -> _Batch:
        pending = self._pending
        while not pending:
            if self._has_work.is_set():
                self._has_work = trio.Event()
            await self._has_work.wait()
        n = min(len(pending), self.batch_size)
        items = [pending.popleft() for _ in range(n)]
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        return _Batch(self._next_id, [p for p, _ in items], [c for _, c in items])

    async def _send(
        self,
        slot: _Slot,
        stdin: trio.abc.SendStream,
        credit: trio.Semaphore,
        scope: trio.CancelScope,
    ) -> None:
        try:
            while True:
                await credit.acquire()
                batch = await self._next_batch()
                slot.in_flight.append(batch)  # from here on it is lost if the worker dies
                now = self._now()
                epochs = tuple(self.keyring.epochs())
                data = b""
                if epochs != slot.keys_sent:
                    keys: dict[int, MixPrivateKey] = {}
                    for epoch in epochs:
                        key = self.keyring.get(epoch)
                        if key is not None:
                            keys[epoch] = key
                    data = frame(KEYS, encode_keys(keys))
                    slot.keys_sent = epochs
                live = [e for e, _ in self.keyring.live(now)]
                retired = [e for e, _ in self.keyring.retired(now)]
                body = encode_batch(batch.batch_id, live, retired, batch.packets)
                await stdin.send_all(data + frame(BATCH, body))
                self.counts["batches"] += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            scope.cancel()

    async def _receive(
        self,
        slot: _Slot,
        reader: _FrameReader,
        credit: trio.Semaphore,
        scope: trio.CancelScope,
    ) -> None:
        g = self.geometry
        try:
            while True:
                kind, body = await reader.next()
                if kind != RESULTS:
                    raise FrameError(f"unexpected frame kind {kind} from a worker")
                batch_id, results = decode_results(body, g.packet_len, g.body_len)
                if not slot.in_flight or slot.in_flight[0].batch_id != batch_id:
                    raise FrameError("a worker answered a batch it was not given")
                batch = slot.in_flight.popleft()
                if len(results) != len(batch.packets):
                    raise FrameError("a worker answered for the wrong number of packets")
                credit.release()
                self.counts["packets"] += len(results)
                self._on_results(batch.packets, batch.contexts, results)
        except (_WorkerGone, FrameError) as exc:
            if isinstance(exc, FrameError):
                log.error("hop worker %d broke the protocol: %s", slot.index, exc)
            scope.cancel()


class _FrameReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._frames: deque[tuple[int, bytes]] = deque()

    async def next(self) -> tuple[int, bytes]:
        while not self._frames:
            try:
                data = await self._stream.receive_some(_READ_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                raise _WorkerGone
            self._buffer += data
            self._frames.extend(split_frames(self._buffer))
        return self._frames.popleft()


# ---------------------------------------------------------------------------------------------
# The worker process


def worker_main(argv: list[str]) -> int:
    """``python -m mixnode.workers SUITE MAX_HOPS BODY_LEN``: peel batches until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    suite, max_hops, body_len = argv[0], int(argv[1]), int(argv[2])
    # Frames go to the real stdout; anything a library prints goes to stderr instead.
    out = os.dup(1)
    os.dup2(2, 1)
    core = WorkerCore(Sphinx(SphinxGeometry(max_hops=max_hops, body_len=body_len, suite=suite)))

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(out, view) :]

    write(frame(READY, b""))
    buffer = bytearray()
    while True:
        data = os.read(0, _READ_BYTES)
        if not data:
            return 0
        buffer += data
        for kind, body in split_frames(buffer):
            reply = core.handle(kind, body)
            if reply is not None:
                write(reply)


if __name__ == "__main__":
    try:
        sys.exit(worker_main(sys.argv[1:]))
    except BrokenPipeError:  # the node went away while we wrote
        sys.exit(0)
