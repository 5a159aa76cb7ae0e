"""An authority under slow and abandoned uploads (issue 15, item 2): bodies slower than the
deadline are cut with 408, requests beyond the per-source cap get 503 at once, health keeps
answering, and the log gets one line per kind of refusal, never a traceback.

First on a virtual clock through the ASGI app, then over real sockets against hypercorn, with
the attacker on another loopback address (127.0.0.2) than the honest client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import httpx
import trio
from helpers import HANG

from directory.app import create_app
from directory.authority import Authority
from directory.limits import HttpLimits
from directory.service import serve
from directory.store import DirectoryStore
from mixcore.params import NetworkParams

PARAMS = NetworkParams(epoch_length=10.0, genesis_time=0.0, mean_hop_delay=0.1, layers=1)
LIMITS = HttpLimits(body_timeout=2.0, max_requests_per_source=4, max_requests=64, peer_reserve=8)


async def test_a_slow_body_is_cut_at_its_deadline_while_health_answers(
    authority_files, autojump_clock
) -> None:
    [(_, config, identity)] = authority_files(1, PARAMS, limits=LIMITS)
    authority = Authority(config, identity, DirectoryStore(config.database_path),
                          now=lambda: 71.0)
    app = create_app(authority)

    def client(source: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(source, 5000))
        return httpx.AsyncClient(transport=transport, base_url="http://authority")

    async def dripping() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"\x00"
            await trio.sleep(1.5)

    results: list[tuple[int, float]] = []

    async def slow_upload(http: httpx.AsyncClient) -> None:
        start = trio.current_time()
        response = await http.post("/v1/descriptor", content=dripping())
        results.append((response.status_code, trio.current_time() - start))

    async with (
        client("203.0.113.9") as attacker,
        client("198.51.100.1") as honest,
        trio.open_nursery() as nursery,
    ):
        for _ in range(LIMITS.max_requests_per_source):
            nursery.start_soon(slow_upload, attacker)
        await trio.sleep(0.5)
        health = await honest.get("/v1/health")
        assert health.status_code == 200
        http_stats = health.json()["statistics"]["http"]
        # The slow uploads are all still in progress (and this health request).
        assert http_stats["requests_in_progress"] == LIMITS.max_requests_per_source + 1
        one_more = await attacker.post("/v1/descriptor", content=b"x")
        assert one_more.status_code == 503 and "retry-after" in one_more.headers
    assert len(results) == LIMITS.max_requests_per_source
    for status, elapsed in results:
        assert status == 408
        assert abs(elapsed - LIMITS.body_timeout) < 1e-6  # cut at the deadline, not later


async def _status_line(sock: trio.socket.SocketType) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = await sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


async def test_slow_and_aborted_uploads_over_real_sockets(
    authority_files, caplog
) -> None:
    caplog.set_level(logging.INFO)
    params = PARAMS.replace(genesis_time=time.time())
    limits = HttpLimits(body_timeout=1.0, max_requests_per_source=4, max_requests=64,
                        peer_reserve=8)
    [(_, config, _)] = authority_files(1, params, limits=limits)
    head = (b"POST /v1/descriptor HTTP/1.1\r\nHost: authority\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 500\r\n\r\n")
    shutdown = trio.Event()
    with trio.fail_after(HANG):  # a hang, not a slow machine
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve(config, shutdown=shutdown, task_status=task_status)
            )
            slow = []
            for _ in range(10):
                sock = trio.socket.socket()
                await sock.bind(("127.0.0.2", 0))
                await sock.connect((config.listen_host, config.listen_port))
                await sock.send(head + b"\x00")
                slow.append(sock)
            for _ in range(3):  # uploads abandoned halfway: the client hangs up
                sock = trio.socket.socket()
                await sock.bind(("127.0.0.3", 0))
                await sock.connect((config.listen_host, config.listen_port))
                await sock.send(head + b"\x00" * 100)
                sock.close()
            async with httpx.AsyncClient() as http:
                health = await http.get(f"{config.url}/v1/health", timeout=HANG)
            assert health.status_code == 200
            statuses = sorted([(await _status_line(s)).split(b" ")[1] for s in slow])
            for sock in slow:
                sock.close()
            assert statuses == [b"408"] * 4 + [b"503"] * 6
            shutdown.set()
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in records if r.exc_info or "Traceback" in r.getMessage()], records
    cut = [r for r in records if "slower than" in r.getMessage()]
    busy = [r for r in records if "too many in progress" in r.getMessage()]
    assert len(cut) == 1 and len(busy) == 1  # one line per kind, not one per request
