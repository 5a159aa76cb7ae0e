"""The link protocol over a trio stream: the thin shell around :class:`mixcore.link.LinkConnection`.

This module only moves bytes: the handshake, cell format and every check live in the sans-IO
core. What it adds is time and concurrency: the handshake runs under ``trio.fail_after``
(:class:`~mixcore.errors.LinkTimeout`), sends are serialized by a lock because Noise nonces are
sequential, and transport failures (``trio.BrokenResourceError``, ``ClosedResourceError``,
``OSError``) become :class:`~mixcore.errors.LinkClosed` (or ``LinkHandshakeError`` during the
handshake). Any protocol error closes this link's stream and is raised to the caller, who
handles it per link: a server catches :class:`~mixcore.errors.LinkError` in each connection's
task so one bad peer never takes down the others.

Nothing here logs: per-cell logs would be traffic metadata. :meth:`Link.statistics` has counts.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType

import trio

from mixcore.errors import LinkClosed, LinkError, LinkHandshakeError, LinkTimeout
from mixcore.keys import LinkKey, short_id
from mixcore.link import (
    CellKind,
    CellReceived,
    LinkConnection,
    LinkRole,
    LinkState,
    LinkStatistics,
    SendData,
)

#: Bytes asked of the stream per read: with the core's bound this caps a link's receive buffer.
READ_CHUNK = 65536
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Link:
    """An established link: fixed-size encrypted cells over a trio stream.

    Built by :func:`connect_link`, :func:`open_link_over_stream` or :func:`accept_link`. One task
    may receive while others send. Cancelling a send closes the link, since part of a cell may
    already be on the wire and the peer could never find the next cell boundary.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        connection: LinkConnection,
        pending: list[CellReceived] | None = None,
    ) -> None:
        if connection.state is not LinkState.ESTABLISHED or connection.remote_static is None:
            raise LinkError("a Link needs an established connection")
        self._stream = stream
        self._connection = connection
        self._pending: deque[CellReceived] = deque(pending or ())
        self._send_lock = trio.StrictFIFOLock()
        self._receive_lock = trio.StrictFIFOLock()
        self._closed = False
        self._remote_static: bytes = connection.remote_static

    @property
    def remote_static(self) -> bytes:
        """The peer's static link key, authenticated by the handshake."""
        return self._remote_static

    @property
    def body_size(self) -> int:
        return self._connection.body_size

    @property
    def cell_size(self) -> int:
        return self._connection.cell_size

    @property
    def handshake_hash(self) -> bytes | None:
        return self._connection.handshake_hash

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> LinkStatistics:
        """Counts of cells sent and received by kind (no sizes, times or addresses)."""
        return self._connection.statistics()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Link(peer={short_id(self._remote_static)}…, {state})"

    async def send_cell(self, kind: CellKind | int, body: bytes) -> None:
        """Send one cell; raises :class:`~mixcore.link.InvalidCellError` for a body that does
        not fit (the link stays usable) and :class:`LinkClosed` if the link is gone."""
        async with self._send_lock:
            if self._closed:
                raise LinkClosed("link is closed")
            await self._send_raw(self._connection.send_cell(kind, body))

    async def send_packet(self, packet: bytes) -> None:
        """Send one Sphinx packet (exactly :attr:`body_size` bytes)."""
        async with self._send_lock:
            if self._closed:
                raise LinkClosed("link is closed")
            await self._send_raw(self._connection.send_packet(packet))

    async def send_packets(self, packets: Sequence[bytes]) -> None:
        """Send several packets with one write: a node draining a queue under load spends one
        system call and one scheduling round on a batch instead of one per packet."""
        async with self._send_lock:
            if self._closed:
                raise LinkClosed("link is closed")
            await self._send_raw(self._connection.send_packets(packets))

    async def send_dummy(self) -> None:
        """Send one DUMMY cell (link padding)."""
        await self.send_cell(CellKind.DUMMY, b"")

    async def receive_cell(self, *, include_dummies: bool = False) -> tuple[CellKind | int, bytes]:
        """The next cell's kind and body, skipping DUMMY cells unless ``include_dummies``.

        Raises :class:`LinkClosed` when the peer closes (also mid-cell), :class:`LinkError` on a
        protocol violation; either way the link is closed afterwards.
        """
        async with self._receive_lock:
            while True:
                while self._pending:
                    cell = self._pending.popleft()
                    if cell.kind == CellKind.DUMMY and not include_dummies:
                        continue
                    return cell.kind, cell.body
                await self._read()

    async def receive_cells(
        self, *, include_dummies: bool = False
    ) -> list[tuple[CellKind | int, bytes]]:
        """Every cell already decrypted, at least one (reading as :meth:`receive_cell` does).

        Why: a loaded node gets ~27 cells per read; handling them in one go costs one lock and
        one scheduler round per read instead of per cell, so the pool and the outbound links
        wake once per batch. Errors as for :meth:`receive_cell`.
        """
        async with self._receive_lock:
            while True:
                cells = [
                    (cell.kind, cell.body)
                    for cell in self._pending
                    if include_dummies or cell.kind != CellKind.DUMMY
                ]
                self._pending.clear()
                if cells:
                    return cells
                await self._read()

    async def _read(self) -> None:
        """One read from the stream into the pending cells (under the receive lock)."""
        if self._closed:
            raise LinkClosed("link is closed")
        try:
            data = await self._stream.receive_some(READ_CHUNK)
        except _TRANSPORT_ERRORS:
            await self._abort()
            raise LinkClosed("link broke while receiving") from None
        try:
            if not data:
                self._connection.receive_eof()  # LinkClosed if it ends mid-cell
                raise LinkClosed("peer closed the link")
            events = self._connection.receive_data(data)
        except LinkError:
            await self._abort()
            raise
        self._pending.extend(e for e in events if isinstance(e, CellReceived))

    async def aclose(self) -> None:
        """Close the link and its stream (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._connection.close()
        with contextlib.suppress(*_TRANSPORT_ERRORS):
            await self._stream.aclose()

    async def __aenter__(self) -> Link:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send_raw(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except _TRANSPORT_ERRORS:
            await self._abort()
            raise LinkClosed("link broke while sending") from None
        except BaseException:  # cancelled mid-cell: the framing is lost, so is the link
            await self._abort()
            raise

    async def _abort(self) -> None:
        self._closed = True
        self._connection.close()
        await trio.aclose_forcefully(self._stream)


async def _handshake(
    stream: trio.abc.Stream,
    connection: LinkConnection,
    handshake_timeout: float,
    authorize: Callable[[bytes], bool] | None = None,
) -> Link:
    """Run the handshake on ``stream`` (which this takes ownership of) and return the link."""
    pending: list[CellReceived] = []
    try:
        with trio.fail_after(handshake_timeout):
            if connection.role is LinkRole.INITIATOR:
                await stream.send_all(connection.initiate())
            while connection.state is not LinkState.ESTABLISHED:
                data = await stream.receive_some(READ_CHUNK)
                if not data:
                    connection.receive_eof()  # raises LinkHandshakeError in handshake states
                    raise LinkHandshakeError("peer closed the link during the handshake")
                for event in connection.receive_data(data):
                    if isinstance(event, SendData):
                        await stream.send_all(event.data)
                    elif isinstance(event, CellReceived):
                        pending.append(event)  # cells right behind msg3 in the same read
        remote = connection.remote_static
        assert remote is not None
        if authorize is not None and not authorize(remote):
            raise LinkHandshakeError("peer not authorized")
    except trio.TooSlowError:
        connection.close()
        await trio.aclose_forcefully(stream)
        raise LinkTimeout(f"handshake did not finish within {handshake_timeout} s") from None
    except _TRANSPORT_ERRORS:
        connection.close()
        await trio.aclose_forcefully(stream)
        raise LinkHandshakeError("link broke during the handshake") from None
    except BaseException:  # protocol errors, refusal, cancellation: nothing of this link stays
        connection.close()
        await trio.aclose_forcefully(stream)
        raise
    return Link(stream, connection, pending)


async def open_link_over_stream(
    stream: trio.abc.Stream,
    *,
    local_key: LinkKey,
    remote_static: bytes,
    body_size: int,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
) -> Link:
    """Be the initiator over an existing stream (taking ownership of it).

    XK finishes on the initiator's side when it sends msg3, so a responder that then refuses
    this peer (``authorize``) shows up as :class:`LinkClosed` on the first receive.
    """
    connection = LinkConnection(
        LinkRole.INITIATOR, local_key, body_size=body_size, remote_static=remote_static
    )
    return await _handshake(stream, connection, handshake_timeout)


async def connect_link(
    host: str,
    port: int,
    *,
    local_key: LinkKey,
    remote_static: bytes,
    body_size: int,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
) -> Link:
    """Open a TCP connection and run the handshake as initiator; ``handshake_timeout`` bounds
    the connect and the handshake together."""
    connection = LinkConnection(
        LinkRole.INITIATOR, local_key, body_size=body_size, remote_static=remote_static
    )
    deadline = trio.current_time() + handshake_timeout
    try:
        with trio.fail_at(deadline):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise LinkTimeout(f"connect did not finish within {handshake_timeout} s") from None
    except OSError as exc:
        raise LinkError(f"cannot connect: {type(exc).__name__}") from None
    return await _handshake(stream, connection, max(0.0, deadline - trio.current_time()))


async def accept_link(
    stream: trio.abc.Stream,
    *,
    local_key: LinkKey,
    body_size: int,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    authorize: Callable[[bytes], bool] | None = None,
) -> Link:
    """Be the responder on an accepted stream (taking ownership of it).

    ``authorize`` gets the initiator's static key once the handshake has proved it; returning
    False closes the stream and raises ``LinkHandshakeError("peer not authorized")``.
    """
    connection = LinkConnection(LinkRole.RESPONDER, local_key, body_size=body_size)
    return await _handshake(stream, connection, handshake_timeout, authorize)
