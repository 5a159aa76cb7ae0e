"""The trio link adapter: real TCP on 127.0.0.1, in-memory streams, and virtual-time timeouts."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial

import pytest
import trio
import trio.testing
from helpers import HANG

from mixcore.errors import LinkClosed, LinkError, LinkHandshakeError, LinkTimeout
from mixcore.keys import LinkKey
from mixcore.link import (
    CONTROL_FIRST,
    MSG1_LEN,
    CellKind,
    InvalidCellError,
    LinkConnection,
    LinkRole,
    SendData,
    cell_size,
)
from mixcore.net.link import Link, accept_link, connect_link, open_link_over_stream

BODY = 2380
SERVER_KEY = LinkKey.generate()
CLIENT_KEY = LinkKey.generate()
OTHER_KEY = LinkKey.generate()


class EchoServer:
    """Accepts links and echoes every non-dummy cell; reports outcomes on a channel."""

    def __init__(self, authorize: Callable[[bytes], bool] | None = None) -> None:
        self.authorize = authorize
        self.send_outcome, self.outcomes = trio.open_memory_channel[tuple[str, object]](100)

    async def handle(self, stream: trio.abc.Stream) -> None:
        try:
            link = await accept_link(
                stream,
                local_key=SERVER_KEY,
                body_size=BODY,
                handshake_timeout=HANG,  # a hang guard: no test here waits for it
                authorize=self.authorize,
            )
        except LinkError as exc:  # one bad peer never reaches serve_tcp's nursery
            await self.send_outcome.send(("handshake-error", exc))
            return
        await self.send_outcome.send(("peer", link.remote_static))
        async with link:
            try:
                while True:
                    kind, body = await link.receive_cell()
                    await link.send_cell(kind, body)
            except LinkError as exc:
                await self.send_outcome.send(("link-error", exc))

    async def next_outcome(self) -> tuple[str, object]:
        with trio.fail_after(HANG):
            return await self.outcomes.receive()


async def start_server(nursery: trio.Nursery, server: EchoServer) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def connect(port: int, key: LinkKey = CLIENT_KEY, expected: bytes | None = None) -> Link:
    return await connect_link(
        "127.0.0.1",
        port,
        local_key=key,
        remote_static=SERVER_KEY.public if expected is None else expected,
        body_size=BODY,
        handshake_timeout=HANG,  # a hang guard: no test here waits for it
    )


async def assert_echoes(link: Link) -> None:
    packet = bytes((i * 31) % 256 for i in range(BODY))
    await link.send_packet(packet)
    assert await link.receive_cell() == (CellKind.PACKET, packet)


async def raw_handshake(port: int) -> tuple[trio.SocketStream, LinkConnection]:
    """A client that speaks the protocol by hand, so it can then misbehave."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = LinkConnection(
        LinkRole.INITIATOR, CLIENT_KEY, body_size=BODY, remote_static=SERVER_KEY.public
    )
    await stream.send_all(conn.initiate())
    while conn.remote_static is None:
        data = await stream.receive_some(4096)
        assert data
        for event in conn.receive_data(data):
            if isinstance(event, SendData):
                await stream.send_all(event.data)
    return stream, conn


async def assert_disconnected(stream: trio.SocketStream) -> None:
    with trio.fail_after(HANG):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass  # a reset is a disconnect too


# ----------------------------------------------------------------------------------- real TCP


async def test_tcp_handshake_and_cells_both_ways() -> None:
    server = EchoServer()
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, server)
            async with await connect(port) as link:
                assert link.remote_static == SERVER_KEY.public
                assert await server.next_outcome() == ("peer", CLIENT_KEY.public)
                for _ in range(5):
                    await assert_echoes(link)
                await link.send_dummy()  # dropped by the server's receive_cell
                await link.send_cell(CONTROL_FIRST, b"pull")
                assert await link.receive_cell() == (CONTROL_FIRST, b"pull")
                stats = link.statistics()
                assert (stats.cells_sent, stats.dummies_sent, stats.packets_received) == (7, 1, 5)
            assert link.closed
            kind, error = await server.next_outcome()
            assert kind == "link-error" and isinstance(error, LinkClosed)
            nursery.cancel_scope.cancel()


async def test_tcp_wrong_expected_key_fails_and_server_keeps_serving() -> None:
    server = EchoServer()
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, server)
            with pytest.raises(LinkHandshakeError):
                await connect(port, expected=OTHER_KEY.public)
            kind, error = await server.next_outcome()
            assert kind == "handshake-error" and isinstance(error, LinkHandshakeError)
            async with await connect(port) as link:
                await assert_echoes(link)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("misbehaviour", ["garbage-cell", "short-cell", "garbage-handshake"])
async def test_tcp_misbehaving_client_is_cut_off_others_keep_working(misbehaviour: str) -> None:
    server = EchoServer()
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, server)
            good = await connect(port)
            assert (await server.next_outcome())[0] == "peer"
            await assert_echoes(good)

            if misbehaviour == "garbage-handshake":
                bad = await trio.open_tcp_stream("127.0.0.1", port)
                await bad.send_all(bytes(range(MSG1_LEN)))
                expected = "handshake-error"
            else:
                bad, conn = await raw_handshake(port)
                assert (await server.next_outcome())[0] == "peer"
                if misbehaviour == "garbage-cell":
                    await bad.send_all(b"\x55" * cell_size(BODY))
                else:  # a cell cut short, then a whole one: the framing no longer lines up
                    await bad.send_all(conn.send_dummy()[:-100] + conn.send_dummy())
                expected = "link-error"
            kind, error = await server.next_outcome()
            assert kind == expected and isinstance(error, LinkError)
            assert not isinstance(error, LinkClosed)  # a protocol error, not an ordinary close
            await assert_disconnected(bad)
            await bad.aclose()

            await assert_echoes(good)  # the other link never noticed
            await good.aclose()
            nursery.cancel_scope.cancel()


async def test_tcp_authorize_false_rejects() -> None:
    allowed = {OTHER_KEY.public}
    server = EchoServer(authorize=allowed.__contains__)
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, server)
            # XK completes at the initiator when it sends msg3; the refusal arrives as a close.
            refused = await connect(port)
            kind, error = await server.next_outcome()
            assert kind == "handshake-error" and isinstance(error, LinkHandshakeError)
            assert "not authorized" in str(error)
            with pytest.raises(LinkClosed):
                await refused.receive_cell()
            assert refused.closed
            async with await connect(port, key=OTHER_KEY) as link:
                assert await server.next_outcome() == ("peer", OTHER_KEY.public)
                await assert_echoes(link)
            nursery.cancel_scope.cancel()


async def test_tcp_connect_refused_is_a_link_error() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # bound then closed: nothing listens there
    with trio.fail_after(HANG), pytest.raises(LinkError, match="cannot connect"):
        await connect(port)


# ----------------------------------------------------------------------------- memory streams


StreamPair = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]


async def linked_pair(
    make_streams: StreamPair = trio.testing.memory_stream_pair,
) -> tuple[Link, Link]:
    client_stream, server_stream = make_streams()
    result: dict[str, Link] = {}

    async def server() -> None:
        result["server"] = await accept_link(server_stream, local_key=SERVER_KEY, body_size=BODY)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        result["client"] = await open_link_over_stream(
            client_stream, local_key=CLIENT_KEY, remote_static=SERVER_KEY.public, body_size=BODY
        )
    return result["client"], result["server"]


async def test_dummies_are_skipped_unless_asked() -> None:
    client, server = await linked_pair()
    assert server.remote_static == CLIENT_KEY.public
    await client.send_dummy()
    await client.send_cell(CONTROL_FIRST, b"a")
    await client.send_dummy()
    await client.send_cell(CONTROL_FIRST, b"b")
    assert await server.receive_cell() == (CONTROL_FIRST, b"a")
    assert await server.receive_cell(include_dummies=True) == (CellKind.DUMMY, b"")
    assert await server.receive_cell() == (CONTROL_FIRST, b"b")
    assert server.statistics().dummies_received == 2
    await client.aclose()
    with pytest.raises(LinkClosed, match="peer closed"):
        await server.receive_cell()


async def test_receive_cells_returns_every_decrypted_cell_in_order() -> None:
    """A batch of packets written at once comes out in one or more batches, in order, without
    dummies unless asked; a peer closing mid-stream is LinkClosed, as for receive_cell."""
    client, server = await linked_pair()
    packets = [bytes([i]) * BODY for i in range(40)]
    await client.send_packets(packets)
    await client.send_dummy()
    await client.send_cell(CONTROL_FIRST, b"end")
    got: list[tuple[object, bytes]] = []
    batches = 0
    while len(got) < 41:
        got.extend(await server.receive_cells())
        batches += 1
    assert got == [(CellKind.PACKET, p) for p in packets] + [(CONTROL_FIRST, b"end")]
    assert batches < 41  # cells come in batches, not one per call
    await client.send_dummy()
    await client.send_cell(CONTROL_FIRST, b"x")
    assert await server.receive_cells(include_dummies=True) == [
        (CellKind.DUMMY, b""),
        (CONTROL_FIRST, b"x"),
    ]
    await client.aclose()
    with pytest.raises(LinkClosed, match="peer closed"):
        await server.receive_cells()


async def test_concurrent_senders_are_serialized() -> None:
    """Without the send lock two tasks would interleave send_all (BusyResourceError)."""
    client, server = await linked_pair()

    async def sender(tag: int) -> None:
        for i in range(10):
            await client.send_cell(CONTROL_FIRST, bytes([tag, i]))

    async with trio.open_nursery() as nursery:
        for tag in range(8):
            nursery.start_soon(sender, tag)
    got = [await server.receive_cell() for _ in range(80)]
    expected = sorted(bytes([tag, i]) for tag in range(8) for i in range(10))
    assert sorted(body for _, body in got) == expected
    for tag in range(8):  # each task's cells keep their order
        assert [b[1] for _, b in got if b[0] == tag] == list(range(10))


async def test_invalid_cell_leaves_link_usable_and_closed_link_refuses() -> None:
    client, server = await linked_pair()
    with pytest.raises(InvalidCellError):
        await client.send_packet(b"short")
    await client.send_packet(bytes(BODY))
    assert await server.receive_cell() == (CellKind.PACKET, bytes(BODY))
    await client.aclose()
    await client.aclose()
    with pytest.raises(LinkClosed):
        await client.send_packet(bytes(BODY))
    with pytest.raises(LinkClosed):
        await client.receive_cell()


async def test_truncated_cell_then_eof_is_link_closed() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    conn = LinkConnection(
        LinkRole.INITIATOR, CLIENT_KEY, body_size=BODY, remote_static=SERVER_KEY.public
    )

    async def peer() -> None:  # hand-driven initiator that hangs up mid-cell
        await client_stream.send_all(conn.initiate())
        while conn.remote_static is None:
            for event in conn.receive_data(await client_stream.receive_some(4096)):
                if isinstance(event, SendData):
                    await client_stream.send_all(event.data)
        await client_stream.send_all(conn.send_packet(bytes(BODY))[:500])
        await client_stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer)
        link = await accept_link(server_stream, local_key=SERVER_KEY, body_size=BODY)
    with pytest.raises(LinkClosed, match="truncated cell"):
        await link.receive_cell()
    assert link.closed


async def test_cancelled_send_closes_the_link() -> None:
    client, server = await linked_pair(trio.testing.lockstep_stream_pair)
    with trio.move_on_after(0.05):  # nobody reads the lockstep stream: send_all blocks
        await client.send_packet(bytes(BODY))
    assert client.closed
    with pytest.raises(LinkClosed):
        await client.send_packet(bytes(BODY))
    await server.aclose()


# ------------------------------------------------------------------------- virtual-time timeouts


async def test_responder_handshake_timeout(autojump_clock: trio.testing.MockClock) -> None:
    _peer, server_stream = trio.testing.memory_stream_pair()  # the peer never says anything
    start = trio.current_time()
    with pytest.raises(LinkTimeout):
        await accept_link(server_stream, local_key=SERVER_KEY, body_size=BODY, handshake_timeout=7)
    assert trio.current_time() - start == pytest.approx(7)


async def test_initiator_handshake_timeout(autojump_clock: trio.testing.MockClock) -> None:
    client_stream, _peer = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with pytest.raises(LinkTimeout):
        await open_link_over_stream(
            client_stream,
            local_key=CLIENT_KEY,
            remote_static=SERVER_KEY.public,
            body_size=BODY,
        )
    assert trio.current_time() - start == pytest.approx(10.0)  # the default


async def test_slow_handshake_trickle_still_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that sends msg1 a byte at a time cannot hold a handshake slot for long."""
    peer, server_stream = trio.testing.memory_stream_pair()
    conn = LinkConnection(
        LinkRole.INITIATOR, CLIENT_KEY, body_size=BODY, remote_static=SERVER_KEY.public
    )
    msg1 = conn.initiate()

    async def trickle() -> None:
        with contextlib.suppress(trio.BrokenResourceError):  # the server hangs up on us
            for byte in msg1:
                await peer.send_all(bytes([byte]))
                await trio.sleep(1.5)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        with pytest.raises(LinkTimeout):
            await accept_link(server_stream, local_key=SERVER_KEY, body_size=BODY)
        nursery.cancel_scope.cancel()
    assert trio.current_time() - start == pytest.approx(10.0)
