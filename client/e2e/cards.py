"""Contact cards: everything needed to write to someone, exchanged out of band.

A card holds the Ed25519 identity key, the X25519 identity key, the provider's node id (32
bytes), the mailbox address (16 bytes), the mailbox's sealing key (32 bytes, X25519: every item
stored in the mailbox is sealed to it, ``client/mailbox_seal.py``) and the current signed
prekey with its id; the identity key signs all the rest, so neither the prekey nor the delivery
address nor the sealing key can be swapped.

Binary form (canonical msgpack array)::

    [2, identity_key(32), dh_identity_key(32), provider(32), mailbox(16), mailbox_key(32),
     prekey_id(u32), prekey(32), signature(64)]

``signature`` is Ed25519 over ``b"mixnet-card-v2" || pack([dh_identity_key, provider, mailbox,
mailbox_key, prekey_id, prekey])``. Version 1 cards (no sealing key) are refused with a clear
error: their holder must send a new card.

Text form: ``mixnet1:`` + lowercase unpadded RFC 4648 base32 of ``binary || SHA-256(binary)[:4]``.
Base32 survives being read aloud or retyped (one case, no look-alike symbols) and the checksum
catches typos before any cryptography runs. The QR code encodes the same string in upper case
(QR alphanumeric mode); the decoder accepts either case and ignores whitespace.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import segno

from client.e2e.errors import CardError, PrekeySignatureError
from client.e2e.identity import MAX_PREKEY_ID, UserIdentity
from mixcore.encoding import expect_bytes, expect_int, expect_list, pack, unpack_canonical
from mixcore.errors import DecodeError, SignatureError
from mixcore.keys import verify_signature
from mixcore.routing import MAILBOX_LEN, NODE_ID_LEN

MAILBOX_KEY_LEN = 32

CARD_VERSION = 2
CARD_PREFIX = "mixnet1:"
CHECKSUM_LEN = 4
MAX_CARD_TEXT = 1024
_SIGN_CONTEXT = b"mixnet-card-v2"
_B32_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


@dataclass(frozen=True, slots=True)
class ContactCard:
    identity_key: bytes
    dh_identity_key: bytes
    provider: bytes
    mailbox: bytes
    mailbox_key: bytes
    prekey_id: int
    prekey: bytes
    signature: bytes

    @classmethod
    def create(
        cls, identity: UserIdentity, provider: bytes, mailbox: bytes, mailbox_key: bytes
    ) -> ContactCard:
        """Sign a card for ``identity`` with its current prekey."""
        if len(provider) != NODE_ID_LEN or len(mailbox) != MAILBOX_LEN:
            raise CardError(f"provider is {NODE_ID_LEN} bytes and mailbox {MAILBOX_LEN} bytes")
        if len(mailbox_key) != MAILBOX_KEY_LEN:
            raise CardError(f"a mailbox key is {MAILBOX_KEY_LEN} bytes")
        pk = identity.current_prekey
        body = _signed_body(
            identity.dh_public, provider, mailbox, mailbox_key, pk.prekey_id, pk.public
        )
        return cls(
            identity.identity_key,
            identity.dh_public,
            provider,
            mailbox,
            mailbox_key,
            pk.prekey_id,
            pk.public,
            identity.sign(body),
        )

    def verify(self) -> None:
        """Raise :class:`PrekeySignatureError` unless the identity key signed this card."""
        body = _signed_body(
            self.dh_identity_key, self.provider, self.mailbox, self.mailbox_key, self.prekey_id,
            self.prekey,
        )
        try:
            verify_signature(self.identity_key, self.signature, body)
        except SignatureError:
            raise PrekeySignatureError(
                "the card's signed prekey signature does not verify under its identity key"
            ) from None

    def to_bytes(self) -> bytes:
        return pack(
            [
                CARD_VERSION,
                self.identity_key,
                self.dh_identity_key,
                self.provider,
                self.mailbox,
                self.mailbox_key,
                self.prekey_id,
                self.prekey,
                self.signature,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ContactCard:
        """Parse and verify a binary card (:class:`CardError` on any problem)."""
        try:
            raw = unpack_canonical(data, max_bytes=MAX_CARD_TEXT)
            if isinstance(raw, list) and raw[:1] == [1]:
                raise CardError(
                    "this contact card is from an older version (no mailbox sealing key): "
                    "ask its owner for a new card (mixnet contact card)"
                )
            fields = expect_list(raw, 9, "card")
            version, ik, dhk, provider, mailbox, mkey, pid, prekey, sig = fields
            if expect_int(version, "card version", lo=0, hi=255) != CARD_VERSION:
                raise CardError(f"unsupported card version {version}")
            card = cls(
                expect_bytes(ik, "identity key", length=32),
                expect_bytes(dhk, "dh identity key", length=32),
                expect_bytes(provider, "provider", length=NODE_ID_LEN),
                expect_bytes(mailbox, "mailbox", length=MAILBOX_LEN),
                expect_bytes(mkey, "mailbox key", length=MAILBOX_KEY_LEN),
                expect_int(pid, "prekey id", lo=1, hi=MAX_PREKEY_ID),
                expect_bytes(prekey, "prekey", length=32),
                expect_bytes(sig, "signature", length=64),
            )
        except CardError:
            raise
        except DecodeError as exc:
            raise CardError(f"malformed contact card: {exc}") from None
        card.verify()
        return card

    def to_text(self) -> str:
        body = self.to_bytes()
        raw = body + hashlib.sha256(body).digest()[:CHECKSUM_LEN]
        return CARD_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()

    @classmethod
    def from_text(cls, text: str) -> ContactCard:
        """Parse a card string; a typo gives "checksum mismatch", not a cryptographic error."""
        if not isinstance(text, str):
            raise CardError("a card is text")
        compact = "".join(text.split())
        if len(compact) > MAX_CARD_TEXT:
            raise CardError("card text is too long")
        if not compact.lower().startswith(CARD_PREFIX):
            raise CardError(f"not a contact card: it must start with {CARD_PREFIX!r}")
        b32 = compact[len(CARD_PREFIX) :].upper()
        if not b32 or any(ch not in _B32_ALPHABET for ch in b32):
            raise CardError("contact card contains characters outside base32")
        try:
            raw = base64.b32decode(b32 + "=" * (-len(b32) % 8))
        except (ValueError, UnicodeError):
            raise CardError("contact card is truncated or has extra characters") from None
        if len(raw) <= CHECKSUM_LEN:
            raise CardError("contact card is truncated")
        body, check = raw[:-CHECKSUM_LEN], raw[-CHECKSUM_LEN:]
        if hashlib.sha256(body).digest()[:CHECKSUM_LEN] != check:
            raise CardError("contact card checksum mismatch (typo or truncated card)")
        return cls.from_bytes(body)

    def qr(self) -> segno.QRCode:
        return segno.make(self.to_text().upper(), error="m")

    def qr_text(self) -> str:
        """The card as a QR code drawn with block characters, for a terminal."""
        return render_qr(self.qr())


def _signed_body(*fields: bytes | int) -> bytes:
    """What the identity key signs: dh identity key, provider, mailbox, mailbox key, prekey id,
    prekey."""
    return _SIGN_CONTEXT + pack(list(fields))


def render_qr(qr: segno.QRCode, *, border: int = 2) -> str:
    """Two modules per character (upper/lower half blocks), dark on light."""
    rows = [[bool(m) for m in row] for row in qr.matrix_iter(scale=1, border=border)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    chars = {(False, False): "█", (True, False): "▄", (False, True): "▀", (True, True): " "}
    lines = []
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        lines.append("".join(chars[(t, b)] for t, b in zip(top, bottom, strict=True)))
    return "\n".join(lines)
