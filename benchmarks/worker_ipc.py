"""How the node process should talk to its hop workers: three IPCs measured side by side.

Each candidate carries the same traffic as a worker link: a frame of ``--batch`` packets to a
child process, which answers with a frame of the same size (a batch of results is as large as
the batch). The child only echoes, so what is measured is the transport: the node process's CPU
per packet (what limits a many-core node, see ``benchmarks/mixnode_throughput.py``) and the
round-trip time per batch.

* ``trio_pipes``: ``trio.lowlevel.open_process`` with stdin/stdout pipes (1 MiB pipe buffers)
  and length-prefixed frames: what ``mixnode/workers.py`` uses;
* ``mp_pipe``: ``multiprocessing.Pipe`` (``send_bytes``/``recv_bytes``), the node waiting in
  trio with ``wait_readable`` on the connection's descriptor;
* ``socketpair``: a Unix socketpair inherited by the child, as a ``trio.SocketStream``.

Shared memory was not built: a batch is ~150 kB, which the kernel copies in tens of
microseconds, under one microsecond per packet, and a ring buffer would still need a wake-up
per batch (a pipe or eventfd) plus its own locking.

    python benchmarks/worker_ipc.py --json [--batches 400] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import struct
import subprocess
import sys
import time

import trio

PACKET = 2347
_LEN = struct.Struct(">I")


def _child_fd_echo(rfd: int, wfd: int) -> None:
    buffer = bytearray()
    while True:
        data = os.read(rfd, 1 << 20)
        if not data:
            return
        buffer += data
        while len(buffer) >= 4:
            (n,) = _LEN.unpack_from(buffer)
            if len(buffer) < 4 + n:
                break
            frame = bytes(buffer[: 4 + n])
            del buffer[: 4 + n]
            view = memoryview(frame)
            while view:
                view = view[os.write(wfd, view) :]


def _child_mp_echo(conn: multiprocessing.connection.Connection) -> None:
    while True:
        try:
            conn.send_bytes(conn.recv_bytes())
        except EOFError:
            return


async def _read_frame(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bytes:
    while True:
        if len(buffer) >= 4:
            (n,) = _LEN.unpack_from(buffer)
            if len(buffer) >= 4 + n:
                frame = bytes(buffer[4 : 4 + n])
                del buffer[: 4 + n]
                return frame
        data = await stream.receive_some(1 << 20)
        if not data:
            raise EOFError
        buffer += data


async def _trio_pipes(batches: int, payload: bytes) -> tuple[float, float]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--child-fd"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    import fcntl

    for stream in (proc.stdin, proc.stdout):
        fcntl.fcntl(stream.fileno(), 1031, 1 << 20)
    buffer = bytearray()
    frame = _LEN.pack(len(payload)) + payload
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(batches):
        await proc.stdin.send_all(frame)
        await _read_frame(proc.stdout, buffer)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await proc.stdin.aclose()
    await proc.wait()
    return cpu, wall


async def _socketpair(batches: int, payload: bytes) -> tuple[float, float]:
    ours, theirs = socket.socketpair()
    proc = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--child-sock", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
    )
    theirs.close()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    buffer = bytearray()
    frame = _LEN.pack(len(payload)) + payload
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(batches):
        await stream.send_all(frame)
        await _read_frame(stream, buffer)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await stream.aclose()
    await proc.wait()
    return cpu, wall


async def _mp_pipe(batches: int, payload: bytes) -> tuple[float, float]:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_child_mp_echo, args=(theirs,))
    child.start()
    theirs.close()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(batches):
        ours.send_bytes(payload)  # blocks the trio thread only while the pipe is full
        await trio.lowlevel.wait_readable(ours.fileno())
        ours.recv_bytes()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    ours.close()
    child.join()
    return cpu, wall


async def _run(args: argparse.Namespace) -> dict[str, object]:
    payload = os.urandom(PACKET * args.batch)
    out: dict[str, object] = {"benchmark": "worker_ipc", "batch": args.batch}
    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for name, fn in (("trio_pipes", _trio_pipes), ("mp_pipe", _mp_pipe),
                         ("socketpair", _socketpair)):
            results.setdefault(name, []).append(await fn(args.batches, payload))
    for name, rounds in results.items():
        cpu = sorted(c for c, _ in rounds)[len(rounds) // 2]
        wall = sorted(w for _, w in rounds)[len(rounds) // 2]
        n = args.batches * args.batch
        out[name] = {
            "node_cpu_us_per_packet": round(cpu / n * 1e6, 2),
            "round_trip_us_per_batch": round(wall / args.batches * 1e6, 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-fd"]:
        _child_fd_echo(0, 1)
        return 0
    if argv[:1] == ["--child-sock"]:
        fd = int(argv[1])
        _child_fd_echo(fd, fd)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    result = trio.run(_run, args)
    print(json.dumps(result) if args.json else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
