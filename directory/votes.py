"""What authorities exchange before a consensus: signed votes and signature announcements.

Both are canonical msgpack (see :mod:`mixcore.encoding`) and carry the epoch and the authority
key inside what is signed, so neither can be replayed for another epoch or another authority.

* vote: ``[body, signature]`` with body
  ``[VOTE_VERSION, epoch, authority_key, [signed_descriptor, ...]]`` (descriptors sorted
  bytewise, no duplicates) and an Ed25519 signature over ``VOTE_SIGNING_DOMAIN + body``;
* signature announcement: ``[SIGNATURE_VERSION, epoch, authority_key, body_digest, signature]``
  where ``signature`` is the authority's consensus signature (``mixcore.consensus``) over the
  body whose SHA-256 is ``body_digest``. It is self-authenticating (it verifies against the
  receiver's own body or is useless), and the digest tells a peer whether the two disagree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import pairwise

from mixcore.consensus import MAX_NODES, consensus_signing_message
from mixcore.descriptor import MAX_SIGNED_DESCRIPTOR_BYTES
from mixcore.encoding import (
    MAX_DOCUMENT_BYTES,
    expect_bytes,
    expect_int,
    expect_list,
    pack,
    unpack_canonical,
)
from mixcore.errors import DecodeError, MixnetError, SignatureError
from mixcore.keys import (
    PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
    IdentityKey,
    short_id,
    signature_valid,
    verify_signature,
)

VOTE_VERSION = 1
SIGNATURE_VERSION = 1
VOTE_SIGNING_DOMAIN = b"mixnet-vote-v1\x00"
#: A vote holds at most MAX_NODES descriptors of at most 522 bytes each: well within 1 MiB.
MAX_VOTE_BYTES = MAX_DOCUMENT_BYTES
MAX_SIGNATURE_MESSAGE_BYTES = 256
DIGEST_LEN = 32
MAX_EPOCH = (1 << 32) - 1


class VoteError(MixnetError):
    """A peer's vote or signature announcement is malformed or not what was asked for."""


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


@dataclass(frozen=True, slots=True)
class Vote:
    """One authority's signed statement of the descriptors it holds for ``epoch``."""

    epoch: int
    authority_key: bytes
    descriptors: tuple[bytes, ...]
    wire: bytes

    def __repr__(self) -> str:
        return (
            f"Vote(epoch={self.epoch}, authority={short_id(self.authority_key)}…, "
            f"descriptors={len(self.descriptors)})"
        )


def make_vote(epoch: int, identity: IdentityKey, descriptors: list[bytes]) -> Vote:
    """Sign a vote over the (deduplicated, sorted) descriptors."""
    items = sorted(set(descriptors))
    body = pack([VOTE_VERSION, epoch, identity.public, items])
    wire = pack([body, identity.sign(VOTE_SIGNING_DOMAIN + body)])
    return Vote(epoch=epoch, authority_key=identity.public, descriptors=tuple(items), wire=wire)


def parse_vote(data: bytes, *, epoch: int, authority_key: bytes) -> Vote:
    """Decode and verify a vote that must be ``authority_key``'s for ``epoch``.

    Embedded descriptors are only shape-checked here; the consensus step verifies the ones that
    reach a majority (a forged one cannot: honest authorities never vote for it).
    """
    try:
        body_raw, sig_raw = expect_list(unpack_canonical(data, max_bytes=MAX_VOTE_BYTES), 2, "vote")
        body = expect_bytes(body_raw, "vote body", max_len=MAX_VOTE_BYTES)
        sig = expect_bytes(sig_raw, "vote signature", length=SIGNATURE_LEN)
        version, vote_epoch, key, items = expect_list(
            unpack_canonical(body, max_bytes=MAX_VOTE_BYTES), 4, "vote body"
        )
        expect_int(version, "vote version", lo=VOTE_VERSION, hi=VOTE_VERSION)
        expect_int(vote_epoch, "vote epoch", lo=0, hi=MAX_EPOCH)
        key = expect_bytes(key, "vote authority", length=PUBLIC_KEY_LEN)
        if not isinstance(items, list) or len(items) > MAX_NODES:
            raise DecodeError(f"vote descriptors: expected an array of at most {MAX_NODES}")
        descriptors = tuple(
            expect_bytes(item, "vote descriptor", max_len=MAX_SIGNED_DESCRIPTOR_BYTES)
            for item in items
        )
    except DecodeError as exc:
        raise VoteError(f"malformed vote: {exc}") from None
    if any(a >= b for a, b in pairwise(descriptors)):
        raise VoteError("malformed vote: descriptors not sorted or duplicated")
    if key != authority_key:
        raise VoteError(
            f"vote is from authority {short_id(key)}, expected {short_id(authority_key)}"
        )
    if vote_epoch != epoch:
        raise VoteError(f"vote is for epoch {vote_epoch}, expected {epoch}")
    try:
        verify_signature(key, sig, VOTE_SIGNING_DOMAIN + body)
    except SignatureError:
        raise VoteError(f"vote signature of authority {short_id(key)} does not verify") from None
    return Vote(epoch=epoch, authority_key=key, descriptors=descriptors, wire=bytes(data))


@dataclass(frozen=True, slots=True)
class SignatureAnnouncement:
    """An authority's consensus signature for one epoch, with the digest of the body it signed."""

    epoch: int
    authority_key: bytes
    digest: bytes
    signature: bytes

    def encode(self) -> bytes:
        return pack(
            [SIGNATURE_VERSION, self.epoch, self.authority_key, self.digest, self.signature]
        )

    def valid_for(self, body: bytes) -> bool:
        """True when this is a good signature over exactly ``body``."""
        return self.digest == body_digest(body) and signature_valid(
            self.authority_key, self.signature, consensus_signing_message(body)
        )

    def __repr__(self) -> str:
        return (
            f"SignatureAnnouncement(epoch={self.epoch}, authority={short_id(self.authority_key)}…, "
            f"digest={self.digest[:6].hex()}…)"
        )


def parse_signature_announcement(
    data: bytes, *, epoch: int, authority_key: bytes
) -> SignatureAnnouncement:
    try:
        items = expect_list(
            unpack_canonical(data, max_bytes=MAX_SIGNATURE_MESSAGE_BYTES), 5, "signature"
        )
        expect_int(items[0], "signature version", lo=SIGNATURE_VERSION, hi=SIGNATURE_VERSION)
        ann_epoch = expect_int(items[1], "signature epoch", lo=0, hi=MAX_EPOCH)
        key = expect_bytes(items[2], "signature authority", length=PUBLIC_KEY_LEN)
        digest = expect_bytes(items[3], "signature digest", length=DIGEST_LEN)
        sig = expect_bytes(items[4], "signature value", length=SIGNATURE_LEN)
    except DecodeError as exc:
        raise VoteError(f"malformed signature announcement: {exc}") from None
    if key != authority_key or ann_epoch != epoch:
        raise VoteError("signature announcement is for another authority or epoch")
    return SignatureAnnouncement(epoch=ann_epoch, authority_key=key, digest=digest, signature=sig)
