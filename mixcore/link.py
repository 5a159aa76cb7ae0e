"""The link protocol, sans-IO: a Noise_XK handshake, then fixed-size encrypted cells.

Every hop of the mixnet (client to provider, provider to mix, mix to mix) is a TCP connection
carrying this protocol. The point of the format is that an observer of the link sees only
timing: after the handshake every frame on the wire is one cell of exactly :attr:`cell_size`
bytes, whether it carries a Sphinx packet, a control message or link padding.

Handshake: ``Noise_XK_25519_ChaChaPoly_BLAKE2b``. The initiator knows the responder's static key
in advance (the link key from the consensus), so a node that is not in the consensus cannot be
talked to; the responder learns the initiator's static key in message 3 (for a client, its
mailbox credential at the provider). XK rather than IK because the initiator's static key is
then sent under a key that already has forward secrecy (``ee``), and the responder can only be
probed by someone who knows its public key. The prologue binds the protocol version and the
cell size, so peers with different geometry fail the handshake instead of misframing later.
All three handshake messages carry empty payloads and so have fixed sizes (48, 48 and 64 bytes)
and no length prefix.

Cells: plaintext ``kind (1) || body length (2, big-endian) || body || zero padding`` of
``3 + body_size`` bytes, encrypted with the Noise transport cipher (16-byte tag). Anything that
does not decrypt, has a length beyond ``body_size``, non-zero padding, a PACKET body that is not
exactly ``body_size`` bytes, or a kind outside :class:`CellKind` and the control range closes
the link. Replayed, reordered or dropped cells fail authentication because Noise nonces are
sequential.

This module does no I/O (a test scans its imports): :class:`LinkConnection` takes bytes in and
returns events and bytes out; :mod:`mixcore.net.link` moves them over a trio stream.

**Why one module of ~600 lines:** one state machine (the handshake's and the cells' transition
table, the receive buffer and the frame layout) that only makes sense read whole; it is the
model the other sans-IO cores follow.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from enum import Enum, IntEnum
from typing import Final, TypeVar

from noise.connection import Keypair, NoiseConnection

from mixcore.errors import (
    InvalidCellError,
    LinkClosed,
    LinkError,
    LinkHandshakeError,
    ParamsError,
)
from mixcore.keys import PUBLIC_KEY_LEN, LinkKey, short_id
from mixcore.statistics import Statistics

NOISE_PROTOCOL_NAME: Final = b"Noise_XK_25519_ChaChaPoly_BLAKE2b"
PROLOGUE_PREFIX: Final = b"mixnet-link-v1"

#: Handshake message sizes with empty payloads (checked against the library by the tests).
#: msg1 ``-> e, es``: e (32) + tag of the empty payload (16).
MSG1_LEN: Final = 48
#: msg2 ``<- e, ee``: e (32) + tag of the empty payload (16).
MSG2_LEN: Final = 48
#: msg3 ``-> s, se``: encrypted s (32 + 16) + tag of the empty payload (16).
MSG3_LEN: Final = 64

#: Cell plaintext header: kind (1 byte) and body length (2 bytes, big-endian).
CELL_HEADER_LEN: Final = 3
#: ChaCha20-Poly1305 tag appended by the Noise transport cipher.
AEAD_TAG_LEN: Final = 16
#: Noise limits a transport message to 65535 bytes, tag included.
MAX_BODY_SIZE: Final = 65535 - CELL_HEADER_LEN - AEAD_TAG_LEN

#: Control kinds (mailbox pull and the like) are defined by other modules in this range.
CONTROL_FIRST: Final = 16
CONTROL_LAST: Final = 127

#: Each direction's transport key is replaced (Noise ``REKEY``) after this many cells. Nonces
#: are 64-bit counters, so they cannot run out (2^64 cells at a million cells a second take
#: 580,000 years); rekeying bounds how much traffic one key protects and gives some forward
#: secrecy inside a long-lived link. Both ends must use the same value.
REKEY_INTERVAL: Final = 1 << 20


def cell_size(body_size: int) -> int:
    """Bytes on the wire for one cell of a link with this ``body_size``."""
    return CELL_HEADER_LEN + body_size + AEAD_TAG_LEN


def prologue(body_size: int) -> bytes:
    """The Noise prologue: version string and the 4-byte big-endian wire cell size."""
    return PROLOGUE_PREFIX + struct.pack(">I", cell_size(body_size))


class CellKind(IntEnum):
    """What a cell carries. Values in ``CONTROL_FIRST..CONTROL_LAST`` are control messages
    defined elsewhere and are reported as plain ints; every other value is a protocol error."""

    PACKET = 1  # one Sphinx packet, exactly body_size bytes
    DUMMY = 2  # link padding: the receiving adapter drops it unless asked


class LinkRole(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class LinkState(Enum):
    IDLE = "idle"  # initiator, before initiate()
    AWAIT_MSG1 = "await-msg1"  # responder, waiting for the initiator's first message
    AWAIT_MSG2 = "await-msg2"  # initiator, msg1 sent
    AWAIT_MSG3 = "await-msg3"  # responder, msg2 sent
    ESTABLISHED = "established"  # transport keys in place: cells both ways
    CLOSED = "closed"  # terminal: after close(), EOF or any error


class LinkInput(Enum):
    INITIATE = "initiate"
    RECV_MSG1 = "recv-msg1"
    RECV_MSG2 = "recv-msg2"
    RECV_MSG3 = "recv-msg3"
    RECV_CELL = "recv-cell"
    SEND_CELL = "send-cell"
    EOF = "eof"
    CLOSE = "close"


_T = TypeVar("_T")
_S = LinkState
_I = LinkInput

#: The whole protocol. A (state, input) pair that is not here is a protocol error.
TRANSITIONS: Final[dict[tuple[LinkState, LinkInput], LinkState]] = {
    (_S.IDLE, _I.INITIATE): _S.AWAIT_MSG2,
    (_S.AWAIT_MSG1, _I.RECV_MSG1): _S.AWAIT_MSG3,
    (_S.AWAIT_MSG2, _I.RECV_MSG2): _S.ESTABLISHED,
    (_S.AWAIT_MSG3, _I.RECV_MSG3): _S.ESTABLISHED,
    (_S.ESTABLISHED, _I.RECV_CELL): _S.ESTABLISHED,
    (_S.ESTABLISHED, _I.SEND_CELL): _S.ESTABLISHED,
    (_S.ESTABLISHED, _I.EOF): _S.CLOSED,
    **{(state, _I.CLOSE): _S.CLOSED for state in LinkState},
}

#: Which input the bytes received in a state are, i.e. what the state is waiting for.
_READ_INPUT: Final[dict[LinkState, LinkInput]] = {
    _S.AWAIT_MSG1: _I.RECV_MSG1,
    _S.AWAIT_MSG2: _I.RECV_MSG2,
    _S.AWAIT_MSG3: _I.RECV_MSG3,
    _S.ESTABLISHED: _I.RECV_CELL,
}

_HANDSHAKE_STATES: Final = frozenset({_S.IDLE, _S.AWAIT_MSG1, _S.AWAIT_MSG2, _S.AWAIT_MSG3})


@dataclass(frozen=True, slots=True)
class SendData:
    """Bytes the connection needs sent to the peer now (handshake messages 2 and 3)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The handshake finished; ``remote_static`` is the peer's authenticated link key."""

    remote_static: bytes

    def __repr__(self) -> str:
        return f"HandshakeComplete(remote_static={short_id(self.remote_static)}…)"


@dataclass(frozen=True, slots=True)
class CellReceived:
    """One authenticated cell: ``kind`` is a :class:`CellKind` or a control kind (int)."""

    kind: CellKind | int
    body: bytes

    def __repr__(self) -> str:  # bodies are ciphertext of the next hop: no use in reprs
        return f"CellReceived(kind={self.kind!r}, body=<{len(self.body)} bytes>)"


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer closed the link cleanly, at a cell boundary."""


LinkEvent = SendData | HandshakeComplete | CellReceived | PeerClosed


@dataclass(frozen=True, slots=True)
class LinkStatistics(Statistics):
    """Counts only (no sizes, times or addresses): cells include packets, dummies and control."""

    cells_sent: int = 0
    cells_received: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    dummies_sent: int = 0
    dummies_received: int = 0
    control_sent: int = 0
    control_received: int = 0
    rekeys: int = 0


def _kind_value(kind: CellKind | int) -> int:
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise InvalidCellError("cell kind must be an integer")
    if kind in (CellKind.PACKET, CellKind.DUMMY) or CONTROL_FIRST <= kind <= CONTROL_LAST:
        return int(kind)
    raise InvalidCellError(
        f"cell kind {int(kind)} is neither PACKET, DUMMY nor a control kind "
        f"({CONTROL_FIRST}..{CONTROL_LAST})"
    )


class LinkConnection:
    """One end of a link, as a state machine over bytes.

    Feed it what the transport delivers with :meth:`receive_data` (any chunking) and
    :meth:`receive_eof`; send what :meth:`initiate`, :meth:`send_cell` and the
    :class:`SendData` events return, in order. Any bad input raises
    :class:`~mixcore.errors.LinkHandshakeError` (before the handshake completed) or
    :class:`~mixcore.errors.LinkError` (after) and leaves the connection CLOSED; events decoded
    from the same chunk before the bad bytes are dropped with it. Only
    :class:`InvalidCellError` (a bad argument to a send method) leaves the link as it was.

    The receive buffer never holds more than one incomplete unit (handshake message or cell)
    between calls, so memory per link is bounded by the cell size plus the caller's read size.
    """

    __slots__ = (
        "_buffer",
        "_counts",
        "_expected_remote",
        "_handshake_hash",
        "_noise",
        "_rekey_interval",
        "_remote_static",
        "_state",
        "body_size",
        "cell_size",
        "role",
    )

    def __init__(
        self,
        role: LinkRole,
        local_key: LinkKey,
        *,
        body_size: int,
        remote_static: bytes | None = None,
        rekey_interval: int = REKEY_INTERVAL,
    ) -> None:
        if not isinstance(role, LinkRole):
            raise ParamsError("role", "must be a LinkRole")
        if not isinstance(local_key, LinkKey):
            raise ParamsError("local_key", "must be a LinkKey")
        if isinstance(body_size, bool) or not isinstance(body_size, int):
            raise ParamsError("body_size", "must be an integer")
        if not 1 <= body_size <= MAX_BODY_SIZE:
            raise ParamsError("body_size", f"must be in [1, {MAX_BODY_SIZE}]")
        if isinstance(rekey_interval, bool) or not isinstance(rekey_interval, int):
            raise ParamsError("rekey_interval", "must be an integer")
        if rekey_interval < 1:
            raise ParamsError("rekey_interval", "must be positive")
        if role is LinkRole.INITIATOR:
            if not isinstance(remote_static, bytes) or len(remote_static) != PUBLIC_KEY_LEN:
                raise ParamsError("remote_static", f"the initiator needs {PUBLIC_KEY_LEN} bytes")
        elif remote_static is not None:
            raise ParamsError("remote_static", "the responder learns it during the handshake")

        self.role = role
        self.body_size = body_size
        self.cell_size = cell_size(body_size)
        self._rekey_interval = rekey_interval
        self._expected_remote = remote_static
        self._remote_static: bytes | None = None
        self._handshake_hash: bytes | None = None
        self._buffer = bytearray()
        self._counts: dict[str, int] = {f.name: 0 for f in fields(LinkStatistics)}

        noise = NoiseConnection.from_name(NOISE_PROTOCOL_NAME)
        noise.set_prologue(prologue(body_size))
        noise.set_keypair_from_private_bytes(Keypair.STATIC, local_key.secret_bytes())
        if role is LinkRole.INITIATOR:
            noise.set_as_initiator()
            noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote_static)
        else:
            noise.set_as_responder()
        noise.start_handshake()
        self._noise: NoiseConnection | None = noise
        self._state = LinkState.IDLE if role is LinkRole.INITIATOR else LinkState.AWAIT_MSG1

    # ----------------------------------------------------------------------------- inspection

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def remote_static(self) -> bytes | None:
        """The peer's authenticated static key, once the handshake is complete."""
        return self._remote_static

    @property
    def handshake_hash(self) -> bytes | None:
        """Noise's handshake hash (identical at both ends): usable for channel binding."""
        return self._handshake_hash

    @property
    def buffered_bytes(self) -> int:
        """Received bytes waiting for the rest of their handshake message or cell."""
        return len(self._buffer)

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(**self._counts)

    def __repr__(self) -> str:
        peer = short_id(self._remote_static) + "…" if self._remote_static else "?"
        return f"LinkConnection({self.role.value}, {self._state.value}, peer={peer})"

    # ------------------------------------------------------------------------------- handshake

    def initiate(self) -> bytes:
        """The initiator's first message (msg1, :data:`MSG1_LEN` bytes): send it first."""
        self._check(_I.INITIATE)
        msg1 = self._noise_step(lambda n: bytes(n.write_message()), "cannot write msg1")
        self._expect_len(msg1, MSG1_LEN, "msg1")
        self._apply(_I.INITIATE)
        return msg1

    # --------------------------------------------------------------------------------- receive

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[LinkEvent]:
        """Take bytes from the peer; return what happened, in order.

        Handshake replies come back as :class:`SendData` events (send them before anything
        else), completion as :class:`HandshakeComplete`, cells as :class:`CellReceived`.
        """
        if self._state is LinkState.CLOSED:
            raise LinkError("link is closed")
        if not data:
            return []
        if self._state not in _READ_INPUT:
            raise self._failure(f"unexpected data from the peer in state {self._state.value}")
        self._buffer += data
        events: list[LinkEvent] = []
        if self._state is LinkState.ESTABLISHED:
            return self._receive_cells(events)
        offset = 0
        while (read_input := _READ_INPUT.get(self._state)) is not None:
            need = self._unit_len(read_input)
            if len(self._buffer) - offset < need:
                break
            unit = bytes(self._buffer[offset : offset + need])
            offset += need
            self._handle(read_input, unit, events)
        del self._buffer[:offset]
        return events

    def _receive_cells(self, events: list[LinkEvent]) -> list[LinkEvent]:
        """Every complete cell in the buffer (the established state's whole job): a full
        PACKET cell, the common case, takes one decryption and two slices; anything else goes
        through :meth:`_decrypt_cell`'s checks. Same results, same errors."""
        buffer, cell = self._buffer, self.cell_size
        complete = len(buffer) // cell
        if not complete:
            return events
        assert self._noise is not None
        state = self._noise.noise_protocol.cipher_state_decrypt
        full = struct.pack(">BH", CellKind.PACKET, self.body_size)
        counts, interval = self._counts, self._rekey_interval
        for i in range(complete):
            unit = bytes(buffer[i * cell : (i + 1) * cell])
            try:
                plaintext = state.decrypt_with_ad(None, unit)
            except Exception:  # InvalidTag and friends
                raise self._failure(
                    "cell failed authentication (tampered, replayed, reordered or misframed)"
                ) from None
            if plaintext[:CELL_HEADER_LEN] == full:
                received = counts["cells_received"] + 1
                counts["cells_received"] = received
                counts["packets_received"] += 1
                if received % interval == 0:
                    self._noise_step(lambda n: n.rekey_inbound_cipher(), "cannot rekey")
                    counts["rekeys"] += 1
                events.append(CellReceived(CellKind.PACKET, plaintext[CELL_HEADER_LEN:]))
            else:
                events.append(self._check_cell(plaintext))
        del buffer[: complete * cell]
        return events

    def receive_eof(self) -> list[LinkEvent]:
        """The peer closed its side. Clean at a cell boundary: ``[PeerClosed()]``; mid-cell:
        :class:`~mixcore.errors.LinkClosed`; during the handshake: ``LinkHandshakeError``."""
        if self._state is LinkState.CLOSED:
            raise LinkError("link is closed")
        if self._state in _HANDSHAKE_STATES:
            raise self._failure("peer closed the link during the handshake")
        if self._buffer:
            self._close()
            raise LinkClosed("truncated cell")
        self._apply(_I.EOF)
        self._close()
        return [PeerClosed()]

    # ------------------------------------------------------------------------------------ send

    def send_cell(self, kind: CellKind | int, body: bytes | bytearray | memoryview) -> bytes:
        """Encrypt one cell; returns exactly :attr:`cell_size` bytes to send."""
        self._check(_I.SEND_CELL)
        kind_value = _kind_value(kind)
        body = bytes(body)
        if kind_value == CellKind.PACKET and len(body) != self.body_size:
            raise InvalidCellError(
                f"a packet is {len(body)} bytes, this link carries exactly {self.body_size}"
            )
        if len(body) > self.body_size:
            raise InvalidCellError(
                f"cell body is {len(body)} bytes, this link carries at most {self.body_size}"
            )
        plaintext = b"".join(
            (
                struct.pack(">BH", kind_value, len(body)),
                body,
                bytes(self.body_size - len(body)),
            )
        )
        cell: bytes = self._noise_step(lambda n: n.encrypt(plaintext), "cannot encrypt a cell")
        self._expect_len(cell, self.cell_size, "cell")
        self._apply(_I.SEND_CELL)
        self._count("sent", kind_value)
        if self._counts["cells_sent"] % self._rekey_interval == 0:
            self._noise_step(lambda n: n.rekey_outbound_cipher(), "cannot rekey")
            self._counts["rekeys"] += 1
        return cell

    def send_packet(self, packet: bytes | bytearray | memoryview) -> bytes:
        """Encrypt one Sphinx packet (exactly :attr:`body_size` bytes) as a PACKET cell."""
        if len(packet) != self.body_size:
            self._check(_I.SEND_CELL)
            raise InvalidCellError(
                f"a packet is {len(packet)} bytes, this link carries exactly {self.body_size}"
            )
        return self.send_cell(CellKind.PACKET, packet)

    def send_packets(self, packets: Sequence[bytes]) -> bytes:
        """Encrypt several Sphinx packets as PACKET cells, concatenated: exactly what
        :meth:`send_packet` gives for each in turn, with the state checked once per batch
        instead of once per cell (a loaded node sends batches; per-cell Python overhead was a
        third of its link cost)."""
        self._check(_I.SEND_CELL)
        size = self.body_size
        for packet in packets:
            if len(packet) != size:
                raise InvalidCellError(
                    f"a packet is {len(packet)} bytes, this link carries exactly {size}"
                )
        assert self._noise is not None
        state = self._noise.noise_protocol.cipher_state_encrypt
        header = struct.pack(">BH", CellKind.PACKET, size)
        counts, interval = self._counts, self._rekey_interval
        cells = []
        for packet in packets:
            try:
                cells.append(state.encrypt_with_ad(None, header + packet))
            except Exception:  # the library raises many unrelated types
                raise self._failure("cannot encrypt a cell") from None
            sent = counts["cells_sent"] + 1
            counts["cells_sent"] = sent
            counts["packets_sent"] += 1
            if sent % interval == 0:
                self._noise_step(lambda n: n.rekey_outbound_cipher(), "cannot rekey")
                counts["rekeys"] += 1
        if cells:
            self._expect_len(cells[0], self.cell_size, "cell")
        return b"".join(cells)

    def send_dummy(self) -> bytes:
        """A DUMMY cell (link padding): on the wire it looks like every other cell."""
        return self.send_cell(CellKind.DUMMY, b"")

    def close(self) -> None:
        """Close this end (idempotent); the transport should then be closed too."""
        self._apply(_I.CLOSE)
        self._close()

    # -------------------------------------------------------------------------------- internals

    def _unit_len(self, read_input: LinkInput) -> int:
        if read_input is _I.RECV_MSG3:
            return MSG3_LEN
        if read_input is _I.RECV_CELL:
            return self.cell_size
        return MSG1_LEN if read_input is _I.RECV_MSG1 else MSG2_LEN

    def _handle(self, read_input: LinkInput, unit: bytes, events: list[LinkEvent]) -> None:
        if read_input is _I.RECV_CELL:
            events.append(self._decrypt_cell(unit))
        elif read_input is _I.RECV_MSG1:
            self._read_handshake(unit, "msg1")
            msg2 = self._noise_step(lambda n: bytes(n.write_message()), "cannot write msg2")
            self._expect_len(msg2, MSG2_LEN, "msg2")
            self._apply(read_input)
            events.append(SendData(msg2))
        elif read_input is _I.RECV_MSG2:
            self._read_handshake(unit, "msg2")
            msg3 = self._noise_step(lambda n: bytes(n.write_message()), "cannot write msg3")
            self._expect_len(msg3, MSG3_LEN, "msg3")
            remote = self._finish_handshake(self._expected_remote)
            self._apply(read_input)
            events.append(SendData(msg3))
            events.append(HandshakeComplete(remote))
        else:  # RECV_MSG3: the responder learns who the initiator is
            assert self._noise is not None
            handshake_state = self._noise.noise_protocol.handshake_state  # gone after the split
            self._read_handshake(unit, "msg3")
            remote = self._finish_handshake(bytes(handshake_state.rs.public_bytes))
            self._apply(read_input)
            events.append(HandshakeComplete(remote))

    def _read_handshake(self, unit: bytes, name: str) -> None:
        payload = self._noise_step(
            lambda n: n.read_message(unit),
            f"{name} did not authenticate (wrong static key, different cell size or garbage)",
        )
        if payload:  # cannot happen at these fixed sizes; a guard against a library change
            raise self._failure(f"{name} carries an unexpected payload")

    def _finish_handshake(self, remote: bytes | None) -> bytes:
        assert self._noise is not None
        if not self._noise.handshake_finished or remote is None:
            raise self._failure("handshake did not complete after its last message")
        self._remote_static = remote
        self._handshake_hash = bytes(self._noise.get_handshake_hash())
        return remote

    def _decrypt_cell(self, unit: bytes) -> CellReceived:
        plaintext = self._noise_step(
            lambda n: n.decrypt(unit),
            "cell failed authentication (tampered, replayed, reordered or misframed)",
        )
        return self._check_cell(plaintext)

    def _check_cell(self, plaintext: bytes) -> CellReceived:
        kind, length = struct.unpack_from(">BH", plaintext)
        if length > self.body_size:
            raise self._failure(f"cell body length {length} exceeds {self.body_size}")
        end = CELL_HEADER_LEN + length
        padding = plaintext[end:]
        if padding.count(0) != len(padding):
            raise self._failure("cell padding is not zero")
        if kind == CellKind.PACKET and length != self.body_size:
            raise self._failure(f"packet cell body is {length} bytes, not {self.body_size}")
        if kind in (CellKind.PACKET, CellKind.DUMMY):
            reported: CellKind | int = CellKind(kind)
        elif CONTROL_FIRST <= kind <= CONTROL_LAST:
            reported = kind
        else:
            raise self._failure(f"unknown cell kind {kind}")
        self._apply(_I.RECV_CELL)
        self._count("received", kind)
        if self._counts["cells_received"] % self._rekey_interval == 0:
            self._noise_step(lambda n: n.rekey_inbound_cipher(), "cannot rekey")
            self._counts["rekeys"] += 1
        return CellReceived(reported, plaintext[CELL_HEADER_LEN:end])

    def _count(self, direction: str, kind: int) -> None:
        self._counts[f"cells_{direction}"] += 1
        if kind == CellKind.PACKET:
            self._counts[f"packets_{direction}"] += 1
        elif kind == CellKind.DUMMY:
            self._counts[f"dummies_{direction}"] += 1
        else:
            self._counts[f"control_{direction}"] += 1

    def _noise_step(self, step: Callable[[NoiseConnection], _T], what: str) -> _T:
        """Run one call into the Noise library; any exception it raises (InvalidTag, ValueError
        for a low-order point, NoiseMaxNonceError, ...) becomes ours, without its message."""
        assert self._noise is not None
        try:
            return step(self._noise)
        except Exception:  # the library raises many unrelated types on bad input
            raise self._failure(what) from None

    def _expect_len(self, data: bytes, length: int, what: str) -> None:
        if len(data) != length:  # a library change would silently break framing: refuse it
            raise self._failure(f"{what} is {len(data)} bytes, the protocol says {length}")

    def _check(self, link_input: LinkInput) -> None:
        if (self._state, link_input) not in TRANSITIONS:
            if self._state is LinkState.CLOSED:
                raise LinkError("link is closed")
            raise self._failure(f"{link_input.value} is not allowed in state {self._state.value}")

    def _apply(self, link_input: LinkInput) -> None:
        self._check(link_input)
        self._state = TRANSITIONS[(self._state, link_input)]

    def _failure(self, message: str) -> LinkError:
        """Close the connection and return the error to raise (handshake or link error)."""
        error_type = LinkHandshakeError if self._state in _HANDSHAKE_STATES else LinkError
        self._close()
        return error_type(message)

    def _close(self) -> None:
        self._state = LinkState.CLOSED
        self._buffer.clear()
        self._noise = None  # drop the transport keys

