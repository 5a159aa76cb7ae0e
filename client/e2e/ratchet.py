"""The Double Ratchet with header encryption (after the Signal Double Ratchet specification,
section 4 "Double Ratchet with header encryption"), on X25519, HKDF-SHA256, HMAC-SHA256 and
ChaCha20-Poly1305.

Message layout (everything after the nonce looks random; nothing repeats across messages)::

    salt(12) | AEAD(HK, salt, header(40), ad="mixnet-hdr-v1") (56)
             | AEAD(body_key, body_nonce, pad(plaintext), ad=AD || first 68 bytes)

    header = ratchet_public(32) | previous_chain_length(u32 BE) | message_number(u32 BE)

The first 12 bytes are a fresh per-message *salt*: the header's AEAD nonce and an input of the
body key derivation, so the body key and nonce depend on the message key **and** the salt.
A rolled-back state (a restored backup, a VM snapshot) that uses a message key a second time
therefore never encrypts two plaintexts under one key and nonce. The salt is a PRF of fresh
randomness and the plaintext under the message key, so even a repeated RNG (a snapshot
restores it too) gives two different plaintexts two different salts (the SIV idea). A header
key encrypts at most one chain's headers, far below the 2^32 bound for random nonces. Fixed
overhead: 84 bytes per message, plus the padding the session layer applies.

KDFs: ``RK', CK, NHK = HKDF(salt=RK, ikm=DH, info="mixnet-ratchet-rk-v1", 96)``;
``MK = HMAC(CK, 0x01)``, ``CK' = HMAC(CK, 0x02)``;
``salt = HMAC(MK, "mixnet-ratchet-salt-v1" || random(16) || padded plaintext)[:12]``;
``body_key || body_nonce = HKDF(salt=salt, ikm=MK, info="mixnet-ratchet-msg-v2", 44)``.

Skipped message keys are stored under (header key, number), at most :data:`MAX_SKIP` per chain
step and :data:`MAX_SKIPPED_KEYS` in all (oldest evicted first). A key is deleted when used, so a
replayed ciphertext fails with :class:`ReplayError`. Decryption is atomic: on any error the
state is unchanged.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from client.e2e.errors import (
    MessageError,
    NotForThisSession,
    ReplayError,
    SessionStateError,
    TooManySkippedError,
)
from client.e2e.primitives import (
    KEY_LEN,
    NONCE_LEN,
    TAG_LEN,
    AeadError,
    aead_open,
    aead_seal,
    hkdf,
    hmac_sha256,
    random_bytes,
    x25519,
    x25519_generate,
    x25519_public,
)
from mixcore.encoding import expect_bytes, expect_int, expect_list, pack, unpack_canonical
from mixcore.errors import DecodeError

MAX_SKIP = 1000
MAX_SKIPPED_KEYS = 2000
MAX_COUNTER = (1 << 32) - 1
_HEADER = struct.Struct(">32sII")
HEADER_LEN = _HEADER.size  # 40
ENC_HEADER_LEN = NONCE_LEN + HEADER_LEN + TAG_LEN  # 68
OVERHEAD = ENC_HEADER_LEN + TAG_LEN  # 84
_HEADER_AD = b"mixnet-hdr-v1"
_RK_INFO = b"mixnet-ratchet-rk-v1"
_MSG_INFO = b"mixnet-ratchet-msg-v2"
_SALT_CONTEXT = b"mixnet-ratchet-salt-v1"
SALT_RANDOM_LEN = 16
STATE_VERSION = 1


def kdf_rk(root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes, bytes]:
    out = hkdf(dh_out, salt=root_key, info=_RK_INFO, length=96)
    return out[:32], out[32:64], out[64:]


def kdf_ck(chain_key: bytes) -> tuple[bytes, bytes]:
    """Returns ``(next_chain_key, message_key)``."""
    return hmac_sha256(chain_key, b"\x02"), hmac_sha256(chain_key, b"\x01")


def message_salt(message_key: bytes, plaintext: bytes) -> bytes:
    """A fresh salt for one message: random, and bound to the plaintext (see the module
    docstring: two plaintexts never share a body key and nonce, even under a repeated RNG)."""
    mac = hmac_sha256(message_key, _SALT_CONTEXT + random_bytes(SALT_RANDOM_LEN) + plaintext)
    return mac[:NONCE_LEN]


def body_key_nonce(message_key: bytes, salt: bytes) -> tuple[bytes, bytes]:
    km = hkdf(message_key, salt=salt, info=_MSG_INFO, length=KEY_LEN + NONCE_LEN)
    return km[:KEY_LEN], km[KEY_LEN:]


def seal_body(message_key: bytes, salt: bytes, plaintext: bytes, ad: bytes) -> bytes:
    key, nonce = body_key_nonce(message_key, salt)
    return aead_seal(key, nonce, plaintext, ad)


def open_body(message_key: bytes, salt: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    key, nonce = body_key_nonce(message_key, salt)
    return aead_open(key, nonce, ciphertext, ad)


@dataclass(frozen=True, slots=True)
class Header:
    ratchet_public: bytes
    previous_chain_length: int
    number: int


def _encrypt_header(hk: bytes, header: Header, salt: bytes) -> bytes:
    plain = _HEADER.pack(header.ratchet_public, header.previous_chain_length, header.number)
    return salt + aead_seal(hk, salt, plain, _HEADER_AD)


def _decrypt_header(hk: bytes | None, enc_header: bytes) -> Header | None:
    if hk is None:
        return None
    try:
        plain = aead_open(hk, enc_header[:NONCE_LEN], enc_header[NONCE_LEN:], _HEADER_AD)
    except AeadError:
        return None
    return Header(*_HEADER.unpack(plain))


@dataclass(slots=True)
class RatchetState:
    """The variables of the specification (DHs, DHr, RK, CKs, CKr, Ns, Nr, PN, HKs, HKr, NHKs,
    NHKr, MKSKIPPED). ``None`` where the specification has ``None``."""

    dhs_secret: bytes
    dhs_public: bytes
    dhr: bytes | None
    rk: bytes
    cks: bytes | None
    ckr: bytes | None
    ns: int
    nr: int
    pn: int
    hks: bytes | None
    hkr: bytes | None
    nhks: bytes
    nhkr: bytes
    skipped: OrderedDict[tuple[bytes, int], bytes] = field(default_factory=OrderedDict)

    def copy(self) -> RatchetState:
        return replace(self, skipped=OrderedDict(self.skipped))

    def __repr__(self) -> str:
        return f"RatchetState(ns={self.ns}, nr={self.nr}, skipped={len(self.skipped)})"


class Ratchet:
    """One Double Ratchet conversation with header encryption."""

    __slots__ = ("state",)

    def __init__(self, state: RatchetState) -> None:
        self.state = state

    @classmethod
    def init_initiator(
        cls, shared_key: bytes, responder_public: bytes, shared_hka: bytes, shared_nhkb: bytes
    ) -> Ratchet:
        dhs_secret, dhs_public = x25519_generate()
        rk, cks, nhks = kdf_rk(shared_key, x25519(dhs_secret, responder_public))
        return cls(
            RatchetState(
                dhs_secret,
                dhs_public,
                responder_public,
                rk,
                cks,
                None,
                0,
                0,
                0,
                shared_hka,
                None,
                nhks,
                shared_nhkb,
            )
        )

    @classmethod
    def init_responder(
        cls,
        shared_key: bytes,
        responder_secret: bytes,
        responder_public: bytes,
        shared_hka: bytes,
        shared_nhkb: bytes,
    ) -> Ratchet:
        return cls(
            RatchetState(
                responder_secret,
                responder_public,
                None,
                shared_key,
                None,
                None,
                0,
                0,
                0,
                None,
                None,
                shared_nhkb,
                shared_hka,
            )
        )

    @property
    def can_send(self) -> bool:
        return self.state.cks is not None and self.state.hks is not None

    def encrypt(self, plaintext: bytes, ad: bytes) -> bytes:
        s = self.state
        if s.cks is None or s.hks is None:
            raise MessageError("this side cannot send before it has received a message")
        if s.ns >= MAX_COUNTER:
            raise MessageError("sending chain exhausted")
        s.cks, mk = kdf_ck(s.cks)
        salt = message_salt(mk, plaintext)
        enc_header = _encrypt_header(s.hks, Header(s.dhs_public, s.pn, s.ns), salt)
        s.ns += 1
        return enc_header + seal_body(mk, salt, plaintext, ad + enc_header)

    def decrypt(self, message: bytes, ad: bytes) -> bytes:
        """Decrypt one message. Errors: :class:`NotForThisSession` (no header key fits),
        :class:`ReplayError`, :class:`TooManySkippedError`, :class:`MessageError` (tampered
        body). The state changes only on success."""
        if not isinstance(message, bytes | bytearray) or len(message) < OVERHEAD:
            raise NotForThisSession("message too short")
        message = bytes(message)
        enc_header, body = message[:ENC_HEADER_LEN], message[ENC_HEADER_LEN:]
        salt = enc_header[:NONCE_LEN]
        s = self.state.copy()
        body_ad = ad + enc_header

        # 1. a skipped key (out-of-order or late message)
        for hk in dict.fromkeys(k[0] for k in s.skipped):
            header = _decrypt_header(hk, enc_header)
            if header is None:
                continue
            mk = s.skipped.pop((hk, header.number), None)
            if mk is None:
                break  # known chain, key not kept: fall through to the current keys
            plaintext = open_body(mk, salt, body, body_ad)
            self.state = s
            return plaintext

        # 2. the current or the next receiving chain
        header = _decrypt_header(s.hkr, enc_header)
        if header is not None:
            if header.number < s.nr:
                raise ReplayError("message key already used (replayed or duplicate message)")
        else:
            header = _decrypt_header(s.nhkr, enc_header)
            if header is None:
                if any(_decrypt_header(hk, enc_header) for hk in {k[0] for k in s.skipped}):
                    raise ReplayError("message key already used (replayed or duplicate message)")
                raise NotForThisSession("no header key of this session opens the header")
            if header.ratchet_public == s.dhr:
                raise ReplayError("message from a finished chain (replayed or duplicate)")
            _skip(s, header.previous_chain_length)
            _dh_ratchet(s, header)
        _skip(s, header.number)
        assert s.ckr is not None
        s.ckr, mk = kdf_ck(s.ckr)
        s.nr += 1
        plaintext = open_body(mk, salt, body, body_ad)
        self.state = s
        return plaintext

    # -- persistence

    def to_bytes(self) -> bytes:
        s = self.state
        return pack(
            [
                STATE_VERSION,
                s.dhs_secret,
                s.dhr or b"",
                s.rk,
                s.cks or b"",
                s.ckr or b"",
                s.ns,
                s.nr,
                s.pn,
                s.hks or b"",
                s.hkr or b"",
                s.nhks,
                s.nhkr,
                [[hk, n, mk] for (hk, n), mk in s.skipped.items()],
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Ratchet:
        try:
            f = expect_list(unpack_canonical(data), 14, "ratchet state")
            expect_int(f[0], "ratchet version", lo=STATE_VERSION, hi=STATE_VERSION)

            def key(i: int, what: str) -> bytes:
                return expect_bytes(f[i], what, length=KEY_LEN)

            def opt(i: int, what: str) -> bytes | None:
                v = expect_bytes(f[i], what, max_len=KEY_LEN)
                if v == b"":
                    return None
                if len(v) != KEY_LEN:
                    raise DecodeError(f"{what}: expected {KEY_LEN} bytes")
                return v

            dhs_secret = key(1, "DHs")
            skipped: OrderedDict[tuple[bytes, int], bytes] = OrderedDict()
            if not isinstance(f[13], list) or len(f[13]) > MAX_SKIPPED_KEYS:
                raise DecodeError("skipped keys: bad list")
            for item in f[13]:
                hk, n, mk = expect_list(item, 3, "skipped key")
                skipped[
                    (
                        expect_bytes(hk, "skipped hk", length=KEY_LEN),
                        expect_int(n, "skipped n", lo=0, hi=MAX_COUNTER),
                    )
                ] = expect_bytes(mk, "skipped mk", length=KEY_LEN)
            state = RatchetState(
                dhs_secret,
                x25519_public(dhs_secret),
                opt(2, "DHr"),
                key(3, "RK"),
                opt(4, "CKs"),
                opt(5, "CKr"),
                expect_int(f[6], "Ns", lo=0, hi=MAX_COUNTER),
                expect_int(f[7], "Nr", lo=0, hi=MAX_COUNTER),
                expect_int(f[8], "PN", lo=0, hi=MAX_COUNTER),
                opt(9, "HKs"),
                opt(10, "HKr"),
                key(11, "NHKs"),
                key(12, "NHKr"),
                skipped,
            )
        except DecodeError as exc:
            raise SessionStateError(f"ratchet state: {exc}") from None
        return cls(state)


def _skip(s: RatchetState, until: int) -> None:
    """Store the receiving chain's keys up to (not including) ``until``."""
    if until <= s.nr:
        return
    if s.ckr is None or s.hkr is None:
        # no receiving chain yet: nothing can have been skipped in it
        return
    if until - s.nr > MAX_SKIP:
        raise TooManySkippedError(
            f"message claims {until - s.nr} skipped messages, more than the bound {MAX_SKIP}"
        )
    while s.nr < until:
        s.ckr, mk = kdf_ck(s.ckr)
        s.skipped[(s.hkr, s.nr)] = mk
        s.nr += 1
    while len(s.skipped) > MAX_SKIPPED_KEYS:
        s.skipped.popitem(last=False)


def _dh_ratchet(s: RatchetState, header: Header) -> None:
    s.pn = s.ns
    s.ns = 0
    s.nr = 0
    s.hks = s.nhks
    s.hkr = s.nhkr
    s.dhr = header.ratchet_public
    s.rk, s.ckr, s.nhkr = kdf_rk(s.rk, x25519(s.dhs_secret, s.dhr))
    s.dhs_secret, s.dhs_public = x25519_generate()
    s.rk, s.cks, s.nhks = kdf_rk(s.rk, x25519(s.dhs_secret, s.dhr))
