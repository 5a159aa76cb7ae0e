"""X3DH-style session start (after the Signal X3DH specification, without one-time prekeys:
there is no server to hand them out; a card is static).

Alice (initiator) has Bob's verified card; she draws an ephemeral key EK and computes::

    DH1 = X25519(IK_A, SPK_B)   DH2 = X25519(EK, IK_B)   DH3 = X25519(EK, SPK_B)
    SK || HK_A || NHK_B = HKDF-SHA256(ikm = 0xFF*32 || DH1 || DH2 || DH3,
                                      salt = 0*32, info = "mixnet-x3dh-v1", 96 bytes)

where IK is each side's X25519 identity key (bound to the Ed25519 identity by the card
signature). ``SK`` is the Double Ratchet's first root key; ``HK_A`` and ``NHK_B`` are the two
shared header keys the header-encryption variant needs (Alice's first sending header key, and
Bob's first next-header key). The associated data of every ratchet message is
``"mixnet-x3dh-ad-v1" || Ed_A || IK_A || Ed_B || IK_B``.
"""

from __future__ import annotations

from dataclasses import dataclass

from client.e2e.cards import ContactCard
from client.e2e.errors import UnknownPrekeyError
from client.e2e.identity import UserIdentity
from client.e2e.primitives import hkdf, x25519, x25519_generate

_INFO = b"mixnet-x3dh-v1"
_AD_CONTEXT = b"mixnet-x3dh-ad-v1"


@dataclass(frozen=True, slots=True)
class X3dhKeys:
    shared_key: bytes
    header_key_initiator: bytes  # HK_A: the initiator's first sending header key
    next_header_key_responder: bytes  # NHK_B: the responder's first next-header key
    associated_data: bytes

    def __repr__(self) -> str:
        return "X3dhKeys(<redacted>)"


def _derive(dh1: bytes, dh2: bytes, dh3: bytes, ad: bytes) -> X3dhKeys:
    out = hkdf(b"\xff" * 32 + dh1 + dh2 + dh3, salt=bytes(32), info=_INFO, length=96)
    return X3dhKeys(out[:32], out[32:64], out[64:], ad)


def associated_data(initiator_keys: bytes, responder_keys: bytes) -> bytes:
    """``initiator_keys`` and ``responder_keys`` are each ``Ed25519 || X25519`` identity keys."""
    return _AD_CONTEXT + initiator_keys + responder_keys


def initiate(me: UserIdentity, peer: ContactCard) -> tuple[X3dhKeys, bytes, bytes]:
    """Alice's side. Verifies ``peer``'s signature first (:class:`PrekeySignatureError`).
    Returns ``(keys, ephemeral_secret, ephemeral_public)``."""
    peer.verify()
    ek_secret, ek_public = x25519_generate()
    keys = _derive(
        x25519(me.dh_secret, peer.prekey),
        x25519(ek_secret, peer.dh_identity_key),
        x25519(ek_secret, peer.prekey),
        associated_data(me.identity_key + me.dh_public, peer.identity_key + peer.dh_identity_key),
    )
    return keys, ek_secret, ek_public


def respond(me: UserIdentity, peer: ContactCard, prekey_id: int, ephemeral: bytes) -> X3dhKeys:
    """Bob's side, from the initiator's card, the prekey id it used and its ephemeral public
    key. :class:`UnknownPrekeyError` if that prekey was rotated away."""
    peer.verify()
    prekey = me.prekey(prekey_id)
    if prekey is None:
        raise UnknownPrekeyError(f"initial message uses unknown prekey id {prekey_id}")
    return _derive(
        x25519(prekey.secret, peer.dh_identity_key),
        x25519(me.dh_secret, ephemeral),
        x25519(prekey.secret, ephemeral),
        associated_data(peer.identity_key + peer.dh_identity_key, me.identity_key + me.dh_public),
    )
