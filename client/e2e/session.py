"""One contact's end-to-end session: ``encrypt(plaintext) -> bytes`` and
``decrypt(bytes) -> plaintext``, with the X3DH start folded into the first messages.

Wire forms (the transport fragments these bytes; nothing here limits their length):

* **Ratchet message** (:mod:`client.e2e.ratchet`): ``enc_header(68) | body``, 84 bytes of
  overhead; the plaintext is padded to a multiple of :data:`PAD_BUCKET` bytes first.
* **Initial message**: ``E(32) | sealed_init(336) | ratchet message``. The initiator prefixes
  every message with a freshly sealed init until the first reply arrives (so a lost or
  reordered first message does not strand the conversation). ``E`` is a fresh X25519 key *per
  message*; ``sealed_init = ChaCha20-Poly1305(k, nonce 0, pad_to_320(pack([1, prekey_id, EK,
  card])), ad="mixnet-init-v1")`` with ``k = HKDF(X25519(E, SPK_B) || X25519(E, IK_B),
  salt = E || SPK_B, info = "mixnet-init-seal-v1")``. The sender's identity, card and X3DH
  ephemeral ``EK`` are inside; a provider sees one random-looking public key that is never
  reused.

There is no type byte: a receiver first tries its sessions' header keys (cheap AEAD trials),
then tries to open an initial message with its prekeys (two X25519 per live prekey).

A session may hold a few *branches* (ratchets from different X3DH runs: when both sides start
at once, or a contact restarts). The newest accepted one sends; all decrypt. When both sides
initiate simultaneously, the branch started by the side with the smaller identity key wins, on
both sides, without another round trip.

The session mutates in place on ``encrypt``/``decrypt``; persist :meth:`Session.to_bytes` after
each call (sealed, in :mod:`client.storage`). A failed ``decrypt`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from client.e2e import x3dh
from client.e2e.cards import ContactCard
from client.e2e.errors import (
    CardError,
    FirstMessageReplayError,
    MessageError,
    NotForThisSession,
    ReplayError,
    SessionStateError,
)
from client.e2e.identity import MAX_PREKEY_ID, UserIdentity
from client.e2e.primitives import (
    NONCE_LEN,
    TAG_LEN,
    aead_open,
    aead_seal,
    hkdf,
    pad,
    unpad,
    x25519,
    x25519_generate,
)
from client.e2e.ratchet import OVERHEAD, Ratchet
from client.e2e.safety import ContactVerification
from mixcore.encoding import expect_bytes, expect_int, expect_list, pack, unpack_canonical
from mixcore.errors import DecodeError

PAD_BUCKET = 256
INIT_PLAIN_LEN = 320
INIT_PREFIX_LEN = 32 + INIT_PLAIN_LEN + TAG_LEN  # 368
MAX_BRANCHES = 4
MAX_SEEN_EPHEMERALS = 32
SESSION_VERSION = 1
_INIT_AD = b"mixnet-init-v1"
_INIT_INFO = b"mixnet-init-seal-v1"
_ZERO_NONCE = bytes(NONCE_LEN)

K = TypeVar("K")


def _seal_key(e_dh_prekey: bytes, e_dh_identity: bytes, e_public: bytes, prekey: bytes) -> bytes:
    return hkdf(e_dh_prekey + e_dh_identity, salt=e_public + prekey, info=_INIT_INFO, length=32)


@dataclass(slots=True)
class _Pending:
    """What the initiator repeats (freshly sealed) on each message until the first reply."""

    prekey_id: int
    peer_prekey: bytes
    peer_dh_identity: bytes
    my_card: bytes

    def seal(self, ephemeral: bytes) -> bytes:
        e_secret, e_public = x25519_generate()
        key = _seal_key(
            x25519(e_secret, self.peer_prekey),
            x25519(e_secret, self.peer_dh_identity),
            e_public,
            self.peer_prekey,
        )
        packed = pack([1, self.prekey_id, ephemeral, self.my_card])
        plain = packed + b"\x80" + bytes(INIT_PLAIN_LEN - len(packed) - 1)
        return e_public + aead_seal(key, _ZERO_NONCE, plain, _INIT_AD)


@dataclass(slots=True)
class _Branch:
    ratchet: Ratchet
    ephemeral: bytes  # the X3DH ephemeral EK: names this branch
    initiator: bool
    ad: bytes
    pending: _Pending | None


@dataclass(frozen=True, slots=True)
class _Init:
    prekey_id: int
    ephemeral: bytes
    card: ContactCard
    inner: bytes


def _unseal_init(me: UserIdentity, data: bytes) -> _Init:
    if len(data) < INIT_PREFIX_LEN + OVERHEAD:
        raise NotForThisSession("not an initial message")
    e_public, sealed = data[:32], data[32:INIT_PREFIX_LEN]
    for prekey in reversed(me.prekeys):
        try:
            key = _seal_key(
                x25519(prekey.secret, e_public),
                x25519(me.dh_secret, e_public),
                e_public,
                prekey.public,
            )
            plain = aead_open(key, _ZERO_NONCE, sealed, _INIT_AD)
        except MessageError:  # AeadError, or an invalid point
            continue
        try:
            body = unpad(plain)
            version, pid, ek, card_bytes = expect_list(unpack_canonical(body), 4, "init")
            expect_int(version, "init version", lo=1, hi=1)
            pid = expect_int(pid, "prekey id", lo=1, hi=MAX_PREKEY_ID)
            ek = expect_bytes(ek, "ephemeral", length=32)
            card = ContactCard.from_bytes(expect_bytes(card_bytes, "card", max_len=1024))
        except (DecodeError, CardError) as exc:
            raise MessageError(f"malformed initial message: {exc}") from None
        if pid != prekey.prekey_id:
            raise MessageError("initial message names another prekey than it was sealed to")
        return _Init(pid, ek, card, data[INIT_PREFIX_LEN:])
    raise NotForThisSession("not an initial message for this identity")


def _responder_branch(me: UserIdentity, init: _Init) -> tuple[_Branch, bytes]:
    keys = x3dh.respond(me, init.card, init.prekey_id, init.ephemeral)
    prekey = me.prekey(init.prekey_id)
    assert prekey is not None  # respond() checked
    ratchet = Ratchet.init_responder(
        keys.shared_key,
        prekey.secret,
        prekey.public,
        keys.header_key_initiator,
        keys.next_header_key_responder,
    )
    branch = _Branch(ratchet, init.ephemeral, False, keys.associated_data, None)
    try:
        padded = ratchet.decrypt(init.inner, branch.ad)
    except NotForThisSession:
        raise MessageError("initial message's first ratchet message does not decrypt") from None
    return branch, unpad(padded)


class Session:
    """The end-to-end session with one contact."""

    __slots__ = ("_branches", "_seen", "peer")

    def __init__(
        self, peer: ContactCard, branches: list[_Branch], seen: list[bytes] | None = None
    ) -> None:
        if not branches:
            raise ValueError("a session has at least one branch")
        self.peer = peer
        self._branches = branches
        self._seen = seen if seen is not None else [b.ephemeral for b in branches]

    @classmethod
    def initiate(cls, me: UserIdentity, my_card: ContactCard, peer: ContactCard) -> Session:
        """Start a session from ``peer``'s card (verified here: :class:`PrekeySignatureError`).
        ``my_card`` travels, encrypted, in the first messages so the peer can answer."""
        keys, _ek_secret, ek_public = x3dh.initiate(me, peer)
        ratchet = Ratchet.init_initiator(
            keys.shared_key,
            peer.prekey,
            keys.header_key_initiator,
            keys.next_header_key_responder,
        )
        pending = _Pending(peer.prekey_id, peer.prekey, peer.dh_identity_key, my_card.to_bytes())
        return cls(peer, [_Branch(ratchet, ek_public, True, keys.associated_data, pending)])

    @property
    def confirmed(self) -> bool:
        """True once the peer has answered on the sending branch (no init prefix any more)."""
        return self._branches[0].pending is None

    def encrypt(
        self, plaintext: bytes, *, verification: ContactVerification | None = None
    ) -> bytes:
        """Encrypt one message for the peer. With ``verification``, refuse
        (:class:`KeyChangedError`) while the contact's key change is unacknowledged."""
        if verification is not None:
            verification.check_send()
        branch = self._branches[0]
        message = branch.ratchet.encrypt(pad(bytes(plaintext), PAD_BUCKET), branch.ad)
        if branch.pending is not None:
            return branch.pending.seal(branch.ephemeral) + message
        return message

    def decrypt(self, data: bytes, me: UserIdentity | None = None) -> bytes:
        """Decrypt a message from this contact. With ``me``, also accepts an initial message
        from this contact's identity (a restart, or both sides starting at once).
        :class:`NotForThisSession` when the bytes are not for this session (try another)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MessageError("expected bytes")
        data = bytes(data)
        try:
            return self._decrypt_ratchet(data)
        except NotForThisSession:
            if me is None:
                raise
        init = _unseal_init(me, data)
        if init.card.identity_key != self.peer.identity_key:
            raise NotForThisSession("initial message from another identity")
        return self._accept_init(me, init)[0]

    def _decrypt_ratchet(self, data: bytes) -> bytes:
        # a plain ratchet message, or one behind an init prefix of a session we already have
        # (the prefix needs no opening then: the ratchet message authenticates itself)
        candidates = [data]
        if len(data) >= INIT_PREFIX_LEN + OVERHEAD:
            candidates.append(data[INIT_PREFIX_LEN:])
        for message in candidates:
            for branch in self._branches:
                try:
                    padded = branch.ratchet.decrypt(message, branch.ad)
                except NotForThisSession:
                    continue
                branch.pending = None  # the peer has this branch: no more init prefixes
                return unpad(padded)
        raise NotForThisSession("no branch of this session opens the header")

    def _accept_init(
        self, me: UserIdentity, init: _Init, seen: Callable[[bytes], bool] | None = None
    ) -> tuple[bytes, bool]:
        """The plaintext, and whether this message started a new branch (a new X3DH run)."""
        for branch in self._branches:
            if branch.ephemeral == init.ephemeral:
                try:
                    padded = branch.ratchet.decrypt(init.inner, branch.ad)
                except NotForThisSession:
                    raise ReplayError("initial message already processed") from None
                branch.pending = None
                return unpad(padded), False
        if init.ephemeral in self._seen:
            raise FirstMessageReplayError("initial message of a session already replaced (replay)")
        _refuse_seen(init, seen)
        branch, plaintext = _responder_branch(me, init)
        active = self._branches[0]
        keep_mine = (
            active.initiator
            and active.pending is not None
            and me.identity_key < init.card.identity_key
        )
        self._branches.insert(1 if keep_mine else 0, branch)
        del self._branches[MAX_BRANCHES:]
        self._seen.append(init.ephemeral)
        del self._seen[:-MAX_SEEN_EPHEMERALS]
        self.peer = init.card
        return plaintext, True

    # -- persistence

    def to_bytes(self) -> bytes:
        branches = [
            [
                b.ratchet.to_bytes(),
                b.ephemeral,
                b.initiator,
                b.ad,
                []
                if b.pending is None
                else [
                    b.pending.prekey_id,
                    b.pending.peer_prekey,
                    b.pending.peer_dh_identity,
                    b.pending.my_card,
                ],
            ]
            for b in self._branches
        ]
        return pack([SESSION_VERSION, self.peer.to_bytes(), branches, list(self._seen)])

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        try:
            version, card, branches, seen = expect_list(unpack_canonical(data), 4, "session")
            expect_int(version, "session version", lo=1, hi=SESSION_VERSION)
            peer = ContactCard.from_bytes(expect_bytes(card, "card", max_len=1024))
            if not isinstance(branches, list) or not 1 <= len(branches) <= MAX_BRANCHES:
                raise DecodeError("session: bad branch list")
            if not isinstance(seen, list) or len(seen) > MAX_SEEN_EPHEMERALS + MAX_BRANCHES:
                raise DecodeError("session: bad seen list")
            out = []
            for item in branches:
                rb, ek, initiator, ad, pending = expect_list(item, 5, "branch")
                if not isinstance(initiator, bool):
                    raise DecodeError("branch: initiator flag")
                p = None
                if pending != []:
                    pid, ppk, pdh, mycard = expect_list(pending, 4, "pending")
                    p = _Pending(
                        expect_int(pid, "prekey id", lo=1, hi=MAX_PREKEY_ID),
                        expect_bytes(ppk, "peer prekey", length=32),
                        expect_bytes(pdh, "peer dh", length=32),
                        expect_bytes(mycard, "my card", max_len=1024),
                    )
                out.append(
                    _Branch(
                        Ratchet.from_bytes(expect_bytes(rb, "ratchet", max_len=1 << 20)),
                        expect_bytes(ek, "ephemeral", length=32),
                        initiator,
                        expect_bytes(ad, "ad", max_len=256),
                        p,
                    )
                )
            seen_list = [expect_bytes(s, "seen", length=32) for s in seen]
        except (DecodeError, CardError) as exc:
            raise SessionStateError(f"session state: {exc}") from None
        return cls(peer, out, seen_list)

    def __repr__(self) -> str:
        return f"Session(peer={self.peer.identity_key[:6].hex()}…, branches={len(self._branches)})"


@dataclass(frozen=True, slots=True)
class Received(Generic[K]):
    """What :func:`open_message` found: the contact key (``None`` for a first message from
    someone not in ``sessions``), the session that decrypted it (new when ``contact`` is None;
    otherwise the same object, updated), the peer's card and the plaintext. ``new_branch`` is
    ``(X3DH ephemeral, prekey id)`` when the message started a new X3DH run: the caller
    records the ephemeral so the same first message is never accepted again."""

    contact: K | None
    session: Session
    peer: ContactCard
    plaintext: bytes
    new_branch: tuple[bytes, int] | None = None


def _refuse_seen(init: _Init, seen: Callable[[bytes], bool] | None) -> None:
    if seen is not None and seen(init.ephemeral):
        raise FirstMessageReplayError(
            "a first message is accepted once only: this one was already (a replay)"
        )


def open_message(
    me: UserIdentity,
    sessions: Mapping[K, Session],
    data: bytes,
    *,
    seen: Callable[[bytes], bool] | None = None,
) -> Received[K]:
    """Decrypt one incoming message against all sessions, then as an initial message.
    :class:`NotForThisSession` if nothing opens it; other :class:`MessageError` subclasses
    (replay, tampering, skipped-key bound) as they arise. A new contact's session comes back
    with ``contact=None``; the caller decides whether to keep it (and must check the peer
    identity against its verification records: :mod:`client.e2e.safety`). ``seen`` tells
    whether an X3DH ephemeral was accepted before (the caller's persistent record, which
    outlives sessions and restarts): such a first message raises
    :class:`FirstMessageReplayError` instead of starting a session again."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageError("expected bytes")
    data = bytes(data)
    for key, session in sessions.items():
        try:
            plaintext = session._decrypt_ratchet(data)
        except NotForThisSession:
            continue
        return Received(key, session, session.peer, plaintext)
    init = _unseal_init(me, data)
    started = (init.ephemeral, init.prekey_id)
    for key, session in sessions.items():
        if session.peer.identity_key == init.card.identity_key:
            plaintext, new = session._accept_init(me, init, seen)
            return Received(key, session, session.peer, plaintext, started if new else None)
    _refuse_seen(init, seen)
    branch, plaintext = _responder_branch(me, init)
    session = Session(init.card, [branch])
    return Received(None, session, init.card, plaintext, started)
