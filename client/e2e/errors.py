"""Errors of the end-to-end layer. All derive from :class:`mixcore.errors.MixnetError`, so a
caller (and the fuzz tests) can tell "bad input" from a bug. Messages never contain secrets."""

from __future__ import annotations

from mixcore.errors import DecodeError, MixnetError


class E2EError(MixnetError):
    """Base class of the end-to-end layer's errors."""


class CardError(E2EError, DecodeError):
    """A contact card string or encoding is malformed, has a bad checksum or a bad signature."""


class PrekeySignatureError(CardError):
    """The signed prekey's signature does not verify under the card's identity key."""


class MessageError(E2EError):
    """A message cannot be decrypted (malformed, tampered, or not for us)."""


class NotForThisSession(MessageError):
    """No header key of this session opens the message header: it belongs to another session
    (or is garbage). The caller may try another contact's session."""


class ReplayError(MessageError):
    """The message's key was already used (a replayed or duplicated ciphertext)."""


class FirstMessageReplayError(ReplayError):
    """An initial message (X3DH) whose ephemeral key was already accepted once: a replay."""


class TooManySkippedError(MessageError):
    """The header claims more skipped messages than the bound allows."""


class UnknownPrekeyError(MessageError):
    """An initial message refers to a signed prekey we no longer (or never) had."""


class SessionStateError(E2EError, DecodeError):
    """A serialized session, ratchet or identity state does not parse."""


class VerificationError(E2EError):
    """A verification-state transition that is not in the table."""


class KeyChangedError(E2EError):
    """Sending is blocked: the contact's identity key changed and the user has not acknowledged
    the change yet."""
