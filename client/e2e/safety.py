"""Safety numbers and the contact verification state machine.

**Safety number.** Each side's fingerprint is 30 digits derived from its identity keys
(Ed25519 || X25519), as in Signal's numeric fingerprints but without phone numbers::

    h = SHA-512(b"\\x00\\x01" || b"mixnet-safety-v1" || keys)
    repeat 5200 times: h = SHA-512(h || keys)
    fingerprint = for each of the first six 5-byte chunks of h: int(chunk) mod 100000, 5 digits

The safety number is the two fingerprints concatenated, the lexicographically smaller first,
so both sides see the same 60 digits (12 groups of 5). It changes when either key changes.
The QR payload is ``b"mixnet-safety-v1" || fp_low(30 digits, ASCII) || fp_high``, identical
on both sides: scanning the other's screen compares the full number.

**Verification.** A contact is ``UNVERIFIED``, ``VERIFIED`` (the user compared the number) or
``KEY_CHANGED`` (other identity keys were offered for it: shown loudly; sending is blocked).
During a key change the *old* keys stay pinned and in use; the new ones wait in
``pending_keys``. Verifying in person (comparing the number made with the new keys) pins them.
A contact that was unverified may also *acknowledge* the change (pin the new keys unverified);
one that was verified may not: a verified key is only ever replaced by another verified one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

import segno

from client.e2e.cards import ContactCard, render_qr
from client.e2e.errors import KeyChangedError, SessionStateError, VerificationError
from mixcore.encoding import expect_bytes, expect_int, expect_list, pack, unpack_canonical
from mixcore.errors import DecodeError

SAFETY_CONTEXT = b"mixnet-safety-v1"
ITERATIONS = 5200
FINGERPRINT_DIGITS = 30


def identity_keys(card_or_keys: ContactCard | bytes) -> bytes:
    """``Ed25519 || X25519`` identity keys (64 bytes) of a card, or the bytes as given."""
    if isinstance(card_or_keys, ContactCard):
        return card_or_keys.identity_key + card_or_keys.dh_identity_key
    if len(card_or_keys) != 64:
        raise ValueError("identity keys are Ed25519 || X25519, 64 bytes")
    return bytes(card_or_keys)


def fingerprint(keys: bytes) -> str:
    """One party's 30-digit fingerprint of its 64 bytes of identity keys."""
    h = hashlib.sha512(b"\x00\x01" + SAFETY_CONTEXT + keys).digest()
    for _ in range(ITERATIONS):
        h = hashlib.sha512(h + keys).digest()
    return "".join(f"{int.from_bytes(h[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5))


@dataclass(frozen=True, slots=True)
class SafetyNumber:
    digits: str  # 60 digits

    @classmethod
    def of(cls, mine: ContactCard | bytes, theirs: ContactCard | bytes) -> SafetyNumber:
        a, b = sorted([fingerprint(identity_keys(mine)), fingerprint(identity_keys(theirs))])
        return cls(a + b)

    @property
    def groups(self) -> list[str]:
        return [self.digits[i : i + 5] for i in range(0, len(self.digits), 5)]

    def formatted(self) -> str:
        """Three lines of four 5-digit groups."""
        g = self.groups
        return "\n".join(" ".join(g[i : i + 4]) for i in range(0, len(g), 4))

    def qr_payload(self) -> bytes:
        return SAFETY_CONTEXT + self.digits.encode("ascii")

    def qr(self) -> segno.QRCode:
        return segno.make(self.qr_payload(), error="m")

    def qr_text(self) -> str:
        return render_qr(self.qr())

    def matches_scan(self, payload: bytes) -> bool:
        return payload == self.qr_payload()


class VerificationState(Enum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    KEY_CHANGED = "key_changed"


class VerificationEvent(Enum):
    VERIFY = "verify"  # the user compared the safety number and it matched
    UNVERIFY = "unverify"
    KEY_CHANGE = "key_change"  # a different identity key was seen for this contact
    ACKNOWLEDGE = "acknowledge"  # the user acknowledged the key change


_S, _E = VerificationState, VerificationEvent
TRANSITIONS: dict[tuple[VerificationState, VerificationEvent], VerificationState] = {
    (_S.UNVERIFIED, _E.VERIFY): _S.VERIFIED,
    (_S.UNVERIFIED, _E.KEY_CHANGE): _S.KEY_CHANGED,
    (_S.VERIFIED, _E.UNVERIFY): _S.UNVERIFIED,
    (_S.VERIFIED, _E.KEY_CHANGE): _S.KEY_CHANGED,
    (_S.KEY_CHANGED, _E.KEY_CHANGE): _S.KEY_CHANGED,
    (_S.KEY_CHANGED, _E.ACKNOWLEDGE): _S.UNVERIFIED,
    (_S.KEY_CHANGED, _E.VERIFY): _S.VERIFIED,
}


@dataclass(slots=True)
class ContactVerification:
    """The pinned identity keys (64 bytes) of one contact and its verification state.
    ``pending_keys`` holds other keys offered for the contact (a key change) until they are
    verified or acknowledged; ``was_verified`` says the contact was verified when that
    happened (then only :meth:`verify` can accept them)."""

    pinned_keys: bytes
    state: VerificationState = VerificationState.UNVERIFIED
    pending_keys: bytes | None = None
    was_verified: bool = False

    @classmethod
    def first_seen(cls, card: ContactCard) -> ContactVerification:
        return cls(identity_keys(card))

    def _apply(self, event: VerificationEvent) -> VerificationState:
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise VerificationError(f"cannot {event.value} a contact in state {self.state.value}")
        self.state = nxt
        return nxt

    @property
    def shown_keys(self) -> bytes:
        """The keys the safety number on screen is made of: the offered ones during a key
        change (that is what the user compares), else the pinned ones."""
        if self.state is VerificationState.KEY_CHANGED and self.pending_keys:
            return self.pending_keys
        return self.pinned_keys

    def observe(self, card: ContactCard | bytes) -> bool:
        """Record identity keys offered for this contact (a new card under its name). Returns
        True, and moves to ``KEY_CHANGED`` with the old keys still pinned, if they differ
        from the pinned ones (and from keys already waiting)."""
        keys = identity_keys(card)
        if keys in (self.pinned_keys, self.pending_keys):
            return False
        verified = self.state is VerificationState.VERIFIED
        self._apply(VerificationEvent.KEY_CHANGE)
        self.was_verified = self.was_verified or verified
        self.pending_keys = keys
        return True

    def verify(self, mine: ContactCard | bytes, compared: SafetyNumber | str) -> None:
        """Mark verified after the user compared ``compared`` with the number computed from
        ``mine`` and :attr:`shown_keys` (which are then pinned); :class:`VerificationError`
        if it does not match."""
        expected = SafetyNumber.of(mine, self.shown_keys)
        digits = (
            compared.digits
            if isinstance(compared, SafetyNumber)
            else "".join(ch for ch in compared if ch.isdigit())
        )
        if digits != expected.digits:
            raise VerificationError("the safety number does not match: do not mark verified")
        keys = self.shown_keys
        self._apply(VerificationEvent.VERIFY)
        self.pinned_keys, self.pending_keys, self.was_verified = keys, None, False

    def unverify(self) -> None:
        self._apply(VerificationEvent.UNVERIFY)

    def acknowledge_key_change(self) -> None:
        """Pin the offered keys, unverified. Refused for a contact that was verified: its new
        keys must be verified in person (:meth:`verify`)."""
        if self.state is VerificationState.KEY_CHANGED and self.was_verified:
            raise VerificationError(
                "this contact was verified: its new keys can only be accepted by comparing the "
                "new safety number in person"
            )
        self._apply(VerificationEvent.ACKNOWLEDGE)
        if self.pending_keys:
            self.pinned_keys = self.pending_keys
        self.pending_keys, self.was_verified = None, False

    @property
    def can_send(self) -> bool:
        return self.state is not VerificationState.KEY_CHANGED

    def check_send(self) -> None:
        """Call before encrypting for this contact: :class:`KeyChangedError` while blocked."""
        if not self.can_send:
            raise KeyChangedError(
                "this contact's identity key changed: sending is blocked until you acknowledge "
                "the change (compare the new safety number in person first)"
            )

    def to_bytes(self) -> bytes:
        return pack([2, self.pinned_keys, self.state.value, self.pending_keys or b"",
                     self.was_verified])

    @classmethod
    def from_bytes(cls, data: bytes) -> ContactVerification:
        try:
            fields = unpack_canonical(data)
            if not isinstance(fields, list) or not fields:
                raise DecodeError("verification: not a list")
            version = expect_int(fields[0], "verification version", lo=1, hi=2)
            if version == 1:  # [1, keys (the new ones after a change), state, previous keys]
                _, keys, state, other = expect_list(fields, 4, "verification")
                was_verified = False
            else:
                _, keys, state, other, was_verified = expect_list(fields, 5, "verification")
                if not isinstance(was_verified, bool):
                    raise DecodeError("verification: flag")
            keys = expect_bytes(keys, "pinned keys", length=64)
            other = expect_bytes(other, "pending keys", max_len=64)
            if other and len(other) != 64:
                raise DecodeError("pending keys: expected 64 bytes")
            if version == 1 and other:
                keys, other = other, keys
            try:
                st = VerificationState(state)
            except ValueError:
                raise DecodeError("unknown verification state") from None
        except DecodeError as exc:
            raise SessionStateError(f"verification state: {exc}") from None
        return cls(keys, st, other or None, was_verified)
