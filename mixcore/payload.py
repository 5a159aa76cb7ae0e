"""What the exit provider sees of a forward payload, and the SURB-ACK it sends back.

Two kinds of forward packets reach an exit provider:

* **drop cover** of the drop stream is addressed to :data:`DROP_MAILBOX` (all zeros) with a
  payload of :data:`NO_SURB_MARK` then random bytes: the provider discards it and counts it.
* **everything for a mailbox** (a message fragment, or a client's loop addressed to its own
  mailbox) has the payload ``0x01 | SURB (surb_len) | data``. The provider stores ``data``
  durably, then sends an acknowledgement through the SURB, so the sender stops retransmitting
  even while the recipient is offline. ``data`` is sealed by the client to the mailbox's key
  (``client/mailbox_seal.py``), so the provider cannot tell a loop from a real message: both
  are equal-length random-looking strings, acknowledged alike.
* **a payload-stream decoy** has that same form but is addressed to :data:`DROP_MAILBOX`: the
  provider acknowledges it exactly as it would a stored item, then discards it. Every payload
  slot therefore brings one ACK back to its sender, real or not.

The ACK is a SURB reply whose payload is :data:`ACK_PAYLOAD`; it leaves the provider after an
exponential delay drawn like a hop's (never at once, which would mark the arrivals that were
mailbox packets). The sender recognises which fragment it acknowledges by the SURB id its own
provider stores with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixcore.errors import PacketError
from mixcore.routing import MAILBOX_LEN
from mixcore.sphinx import SphinxGeometry, Surb

PAYLOAD_VERSION = 1
NO_SURB_MARK = 0
"""First byte of a drop-stream cover payload: no SURB follows, nothing to acknowledge."""
DROP_MAILBOX = bytes(MAILBOX_LEN)
ACK_PAYLOAD = b"mixnet-ack-v1"


def data_capacity(geometry: SphinxGeometry) -> int:
    """Bytes of client data that fit beside the version byte and the SURB."""
    return geometry.payload_capacity - 1 - geometry.surb_len


@dataclass(frozen=True, slots=True)
class MailboxPayload:
    surb: Surb
    data: bytes

    def encode(self, geometry: SphinxGeometry) -> bytes:
        if len(self.data) > data_capacity(geometry):
            raise PacketError(f"data of {len(self.data)} bytes exceeds {data_capacity(geometry)}")
        return bytes([PAYLOAD_VERSION]) + self.surb.encode() + self.data

    @classmethod
    def decode(cls, payload: bytes, geometry: SphinxGeometry) -> MailboxPayload:
        """Parse what a provider found in a DELIVER; :class:`PacketError` if malformed."""
        if len(payload) < 1 + geometry.surb_len or payload[0] != PAYLOAD_VERSION:
            raise PacketError("not a mailbox payload")
        end = 1 + geometry.surb_len
        try:
            surb = Surb.decode(payload[1:end], geometry)
        except Exception as exc:  # SurbError; keep one error type for the provider
            raise PacketError(f"bad SURB in payload: {exc}") from None
        return cls(surb, payload[end:])
