"""Building the client's four kinds of packets from routes (fragment, loop, decoy, drop).

The core depends on a :class:`PacketBuilder` (``mixcore.sphinx.Sphinx`` in production) rather
than on the Sphinx class itself, so the timing tests can drive 10^4 virtual seconds with a
stand-in that skips the public-key work; every other test uses the real packets. The random
bytes of decoys and drop cover come in as ``randbytes`` (the OS generator by default: an exit
provider sees them, so they must never come from a seeded generator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from secrets import token_bytes
from typing import Protocol

from client.paths import Route
from mixcore.payload import DROP_MAILBOX, NO_SURB_MARK, MailboxPayload, data_capacity
from mixcore.sphinx import PathHop, SphinxGeometry, Surb, SurbKeys


class PacketBuilder(Protocol):
    geometry: SphinxGeometry

    def create_forward(
        self, path: Sequence[PathHop], delays: Sequence[float], mailbox: bytes, payload: bytes
    ) -> bytes: ...

    def create_surb(
        self, path: Sequence[PathHop], delays: Sequence[float], mailbox: bytes
    ) -> tuple[Surb, SurbKeys]: ...

    def decode_reply(self, keys: SurbKeys, body: bytes) -> bytes: ...


def mailbox_packet(
    builder: PacketBuilder,
    forward: Route,
    surb_route: Route,
    *,
    mailbox: bytes,
    own_mailbox: bytes,
    data: bytes,
) -> tuple[bytes, SurbKeys]:
    """A packet storing ``data`` in ``mailbox`` at the end of ``forward``, carrying a SURB-ACK
    that travels ``surb_route`` back to ``own_mailbox``. Returns the packet and the SURB's keys.
    Real fragments and loops are both built here, so they cannot differ in form."""
    surb, keys = builder.create_surb(surb_route.hops, surb_route.delays, own_mailbox)
    payload = MailboxPayload(surb, data).encode(builder.geometry)
    packet = builder.create_forward(forward.hops, forward.delays, mailbox, payload)
    return packet, keys


def decoy_packet(
    builder: PacketBuilder,
    forward: Route,
    surb_route: Route,
    *,
    own_mailbox: bytes,
    randbytes: Callable[[int], bytes] = token_bytes,
) -> tuple[bytes, SurbKeys]:
    """A payload-stream decoy: the form of :func:`mailbox_packet` (a SURB-ACK back to
    ``own_mailbox`` and sealed-length random data) to the drop mailbox of the route's exit,
    which acknowledges it as it would a stored fragment and then discards it."""
    return mailbox_packet(
        builder,
        forward,
        surb_route,
        mailbox=DROP_MAILBOX,
        own_mailbox=own_mailbox,
        data=randbytes(data_capacity(builder.geometry)),
    )


def drop_packet(
    builder: PacketBuilder, route: Route, *, randbytes: Callable[[int], bytes] = token_bytes
) -> bytes:
    """Drop cover (the drop stream): random bytes to the drop mailbox of the route's exit
    provider, without a SURB. The first byte is never the mailbox payload's version, so the
    exit never mistakes it for a decoy and acknowledges garbage."""
    payload = bytearray(randbytes(builder.geometry.payload_capacity))
    payload[0] = NO_SURB_MARK
    return builder.create_forward(route.hops, route.delays, DROP_MAILBOX, bytes(payload))
