"""The fault injector's trio shell. On trio's MockClock over memory streams: bytes arrive
when the shapers say, in order, both ways, half-closes passed on; cuts hold segments and
set-ups, an initiator that gives up during a cut is never connected. Then over real sockets
on loopback: the relay knows each connection's source host and opens the other side from
that host's public address."""

from __future__ import annotations

import json
import random
import selectors
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from mixnet.faults import FaultSchedule, FaultSpec, LinkShaper, parse_faults
from mixnet.relay import (
    HostAddress,
    Relay,
    merge_statistics,
    read_hosts_file,
    relay_connection,
    write_hosts_file,
)
from mixnet.relay import main as relay_main


def pair(text: str, schedule: FaultSchedule | None = None) -> tuple[LinkShaper, LinkShaper]:
    spec = parse_faults(text) if text else FaultSpec()
    return (LinkShaper(spec, "a", "b", random.Random(1), schedule),
            LinkShaper(spec, "b", "a", random.Random(2), schedule))


async def read_until_eof(stream: trio.abc.ReceiveStream) -> tuple[bytes, list[float]]:
    """Everything ``stream`` receives, and when each piece came."""
    data, times = b"", []
    while chunk := await stream.receive_some():
        data += chunk
        times.append(trio.current_time())
    return data, times


class Far:
    """The destination: a memory stream pair whose far end the test holds."""

    def __init__(self) -> None:
        self.near, self.end = trio.testing.memory_stream_pair()
        self.connects = 0

    async def connect(self) -> trio.abc.HalfCloseableStream:
        self.connects += 1
        return self.near


async def test_bytes_arrive_one_latency_later_in_order_both_ways(
    autojump_clock: trio.testing.MockClock,
) -> None:
    forward, backward = pair("latency=40ms")
    client, inbound = trio.testing.memory_stream_pair()
    far = Far()
    message = bytes(range(256)) * 40  # several segments
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_connection, inbound, far.connect, forward, backward)
        t0 = trio.current_time()
        await client.send_all(message)
        await client.send_eof()
        got, times = await read_until_eof(far.end)
        assert got == message
        assert times[0] == pytest.approx(t0 + 0.04 + 0.04)  # set-up, then the first segment
        await far.end.send_all(b"reply")
        await far.end.send_eof()
        back, _ = await read_until_eof(client)
        assert back == b"reply"
    assert far.connects == 1
    assert forward.counters.segments == 8 and forward.counters.bytes == len(message)
    assert backward.counters.segments == 1 and forward.counters.resets == 0


async def test_a_jittery_lossy_link_delivers_every_byte_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    forward, backward = pair("latency=20ms,jitter=10ms,loss=10%")
    client, inbound = trio.testing.memory_stream_pair()
    far = Far()
    rng = random.Random(4)
    sent = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_connection, inbound, far.connect, forward, backward)

        async def send() -> None:
            nonlocal sent
            for i in range(300):
                chunk = bytes([i % 256]) * rng.randrange(1, 4000)
                sent += chunk
                await client.send_all(chunk)
                await trio.sleep(rng.uniform(0, 0.01))
            await client.send_eof()

        nursery.start_soon(send)
        got, _ = await read_until_eof(far.end)
        await far.end.aclose()
    assert got == sent
    assert forward.counters.retransmits > 0


async def test_a_cut_holds_segments_until_it_heals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schedule = FaultSchedule(parse_faults("latency=10ms,partition=b:5s@1s"))
    forward, backward = pair("latency=10ms", schedule)
    client, inbound = trio.testing.memory_stream_pair()
    far = Far()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_connection, inbound, far.connect, forward, backward)
        t0 = trio.current_time()
        schedule.begin(t0, traffic_duration=10.0)
        await client.send_all(b"before")
        assert await far.end.receive_some() == b"before"
        await trio.sleep_until(t0 + 2.0)
        await client.send_all(b"during")
        assert await far.end.receive_some() == b"during"
        assert trio.current_time() == pytest.approx(t0 + 6.0 + 0.01)
        await far.end.send_all(b"back")
        assert await client.receive_some() == b"back"
        nursery.cancel_scope.cancel()
    assert forward.counters.partition_stalls == 1 and backward.counters.partition_stalls == 0


async def test_a_set_up_during_a_cut_waits_and_is_dropped_if_its_initiator_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    schedule = FaultSchedule(parse_faults("partition=b:5s@0s"))
    schedule.begin(trio.current_time(), traffic_duration=10.0)
    forward, backward = pair("", schedule)
    client, inbound = trio.testing.memory_stream_pair()
    far = Far()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_connection, inbound, far.connect, forward, backward)
        await client.send_all(b"handshake")
        await trio.sleep(2.0)  # the initiator's handshake timeout, inside the cut
        await client.aclose()
    assert far.connects == 0
    assert forward.counters.connections_held == 1
    assert forward.counters.connections_abandoned == 1

    # One that waits it out gets through once the cut heals.
    client, inbound = trio.testing.memory_stream_pair()
    forward, backward = pair("", schedule)
    far = Far()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_connection, inbound, far.connect, forward, backward)
        await client.send_all(b"patient")
        assert await far.end.receive_some() == b"patient"
        assert trio.current_time() >= start + 3.0 - 1e-9
        nursery.cancel_scope.cancel()
    assert far.connects == 1 and forward.counters.connections_abandoned == 0


async def test_a_destination_that_refuses_closes_the_inbound_side(
    autojump_clock: trio.testing.MockClock,
) -> None:
    forward, backward = pair("latency=5ms")
    client, inbound = trio.testing.memory_stream_pair()

    async def refuse() -> trio.abc.HalfCloseableStream:
        raise ConnectionRefusedError

    await client.send_all(b"hello")
    await relay_connection(inbound, refuse, forward, backward)
    assert forward.counters.connect_failed == 1
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(3):
            await client.send_all(b"x")


async def test_a_reset_on_one_side_closes_the_other(
    autojump_clock: trio.testing.MockClock,
) -> None:
    forward, backward = pair("latency=5ms")
    client, inbound = trio.testing.memory_stream_pair()
    far = Far()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_connection, inbound, far.connect, forward, backward)
        await client.send_all(b"x")
        assert await far.end.receive_some() == b"x"
        await far.end.aclose()  # the destination goes away
        assert await client.receive_some() == b""  # its end is passed on
        await client.send_all(b"more")  # and what is still sent to it breaks the connection
    assert forward.counters.resets == 1
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x")


async def test_the_relay_on_loopback_knows_each_source_and_connects_from_its_address() -> None:
    relay = Relay(parse_faults("latency=1ms"), seed=1)
    peers: list[str] = []

    async def destination(stream: trio.SocketStream) -> None:
        peers.append(stream.socket.getpeername()[0])
        data = await stream.receive_some()
        await stream.send_all(data.upper())
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, destination, 0,
                                                host="127.0.0.3"))
        port = listeners[0].socket.getsockname()[1]
        await nursery.start(relay.run)
        await relay.add_host(HostAddress("a", "127.0.0.2", "127.0.1.2"))
        await relay.add_host(HostAddress("b", "127.0.0.3", "127.0.1.3", port))
        for source in ("127.0.0.2", "127.0.0.1"):  # host a, then someone outside
            sock = trio.socket.socket()
            await sock.bind((source, 0))
            await sock.connect(("127.0.1.3", port))
            stream = trio.SocketStream(sock)
            await stream.send_all(b"ping")
            assert await stream.receive_some() == b"PING"
            await stream.aclose()
        nursery.cancel_scope.cancel()
    assert peers[0] == "127.0.1.2"  # b sees a's public address, as the consensus lists it
    stats = relay.statistics()
    assert set(stats["links"]) == {"a>b", "b>a", "->b", "b>-"}
    assert stats["totals"]["connections"] == 1  # the outside link is not the network's
    assert stats["links"]["a>b"]["bytes"] == 4 and stats["links"]["b>a"]["bytes"] == 4
    assert stats["relay_errors"] == 0


def test_reports_of_several_relays_merge_into_one() -> None:
    a, b = Relay(parse_faults("latency=1ms,partition=b:2s@1s")), Relay(FaultSpec())
    a.shaper("a", "b").segment(0.0, 100)
    a.shaper("-", "b").segment(0.0, 7)  # the launcher's: listed, not in the totals
    b.shaper("b", "a").segment(0.0, 50)
    b.shaper("b", "a").counters.note("reset: BrokenResourceError")
    a.schedule.begin(10.0, 6.0)
    merged = merge_statistics([a.statistics(), b.statistics()])
    assert set(merged["links"]) == {"a>b", "->b", "b>a"}
    assert merged["totals"]["bytes"] == 150 and merged["totals"]["segments"] == 2
    assert merged["totals"]["errors"] == {"reset: BrokenResourceError": 1}
    assert merged["partitions"] == [{"host": "b", "start_s": 1.0, "end_s": 3.0}]
    assert merged["spec"].startswith("latency=1ms")
    assert merge_statistics([])["totals"]["segments"] == 0


def test_the_hosts_file_round_trips_and_teaches_a_relay_its_sources(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    hosts = [HostAddress("a", "10.9.0.2", "10.9.1.2"),
             HostAddress("b", "10.9.0.3", "10.9.1.3", 9000)]
    write_hosts_file(path, hosts)
    assert read_hosts_file(path) == hosts
    assert read_hosts_file(tmp_path / "missing.json") == []
    relay = Relay(FaultSpec(), hosts_file=path)
    assert relay.source("10.9.0.3") == "b" and relay.source("10.9.0.9") == "-"
    write_hosts_file(path, [*hosts, HostAddress("c", "10.9.0.9", "10.9.1.9")])
    assert relay.source("10.9.0.9") == "c"  # learnt when first seen


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(60), "the relay said nothing"
    return proc.stdout.readline()


async def test_the_relay_process_serves_counts_flushes_and_ends_with_its_input(
    tmp_path: Path,
) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.5"))
        port = listeners[0].socket.getsockname()[1]
        write_hosts_file(tmp_path / "hosts.json", [HostAddress("a", "127.0.0.4", "127.0.1.4")])
        proc = subprocess.Popen(
            [sys.executable, "-m", "mixnet.relay", "--host", "b", "--private", "127.0.0.5",
             "--public", "127.0.1.5", "--port", str(port), "--faults",
             "latency=2ms,partition=b:60s@0s", "--seed", "3",
             "--hosts-file", str(tmp_path / "hosts.json"), "--stats", str(tmp_path / "b.json")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert proc.stdin is not None
        try:
            assert json.loads(await trio.to_thread.run_sync(_line, proc))["status"] == "serving"
            sock = trio.socket.socket()
            await sock.bind(("127.0.0.4", 0))
            await sock.connect(("127.0.1.5", port))
            stream = trio.SocketStream(sock)
            await stream.send_all(b"hello")
            assert await stream.receive_some() == b"hello"
            await stream.aclose()
            proc.stdin.write(f"begin {time.time()!r} 60.0\nflush\n")
            proc.stdin.flush()
            assert await trio.to_thread.run_sync(_line, proc) == "flushed\n"
            stats = json.loads((tmp_path / "b.json").read_text())
            assert stats["links"]["a>b"]["bytes"] == 5 and stats["links"]["b>a"]["bytes"] == 5
            assert stats["partitions"] == [{"host": "b", "start_s": 0.0, "end_s": 60.0}]
            proc.stdin.close()  # the launcher is done (or gone): the relay ends
            assert await trio.to_thread.run_sync(partial(proc.wait, 60)) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            nursery.cancel_scope.cancel()


def test_the_relay_process_refuses_a_bad_spec_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert relay_main(["--host", "b", "--private", "127.0.0.5", "--public", "127.0.1.5",
                       "--port", "1", "--faults", "loss=2", "--hosts-file", "x",
                       "--stats", "y"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "mixnet.relay: error: --faults loss: expected a percentage like 1%, got '2'"]
