"""Sphinx packets: the only module that imports sphinxmix or petlib.

Two suites, chosen per network by ``NetworkParams.sphinx_suite`` (``Sphinx(geometry)`` returns
the suite's implementation; a packet's first byte names its suite):

* ``sphinx-v2-x25519`` (the default, :class:`SphinxV2`): our own construction over X25519, in
  :mod:`mixcore.sphinx_v2`, which gets its AES from here;
* ``sphinx-v1-p256`` (:class:`SphinxV1`): sphinxmix's construction, byte for byte, as follows.

Suite v1 senders build headers with sphinxmix's ``create_header``; everything else is our own
code over the same primitives, with our routing encoding (:mod:`mixcore.routing`), body layout
and byte serialization. We never call ``petlib.pack``: it is broken under msgpack >= 1.

Nodes do not call sphinxmix's ``sphinx_process``: :meth:`Sphinx.process_parsed` computes the same
bytes (tests compare the two on random paths) in about two thirds of the time, because the hop's
cost outside its two point multiplications is mostly cipher set-up. sphinxmix derives each of its
five per-hop keys with its own AES context and runs LIONESS with four more; here the five keys
come from one AES-ECB call over the five labels, every AES operation reuses one OpenSSL context
per thread (:class:`_Aes`), the MAC is a one-shot ``hmac.digest``, and an exit hop skips the
blinding multiplication it has no use for. The same LIONESS serves packet creation and replies.

Group: NIST P-256 (``Group_ECC(415)``) instead of sphinxmix's default P-224. Measured here with
OpenSSL 3: decoding a P-224 point takes ~1 ms (its field prime forces a slow square root), four
times the rest of a hop, while P-256 decodes in ~30 us and multiplies faster too. sphinxmix's
Curve25519 group is broken (MAC mismatch at the second hop) and is not used.

Wire format of every packet, whatever it carries (forward, reply, loop, drop, ACK)::

    version (1) | alpha (65, uncompressed point) | beta (beta_len) | gamma (16) | body (body_len)

alpha travels uncompressed: decompressing a P-256 point costs ~30 us (a modular square root),
checking an uncompressed one ~4 us, and every hop decodes one. 32 more bytes per packet buy ~15%
of a hop's time. Mix keys in descriptors stay compressed (33 bytes): they are decoded once and
cached.

The forward body, as the exit hop sees it after the last layer is removed, is
``mac (16) | length (u16) | payload | zero padding`` where the MAC is keyed by the exit hop's
Sphinx secret, so tampering with any body byte anywhere on the path fails at delivery. A SURB
reply body has the same layout under the SURB creator's keys and is checked when the creator
decodes it.

**Why one module of ~930 lines:** one place holds every use of sphinxmix and petlib (the
architecture test forbids them elsewhere), so both suites' packet code, the reference-identical
v1 hop and the shared AES/HMAC helpers stay together rather than spreading those imports over
modules.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from secrets import token_bytes
from typing import Any

from petlib.bindings import _C, _FFI
from petlib.bn import Bn
from petlib.cipher import Cipher
from petlib.ec import POINT_CONVERSION_COMPRESSED, POINT_CONVERSION_UNCOMPRESSED, EcPt
from sphinxmix import SphinxException
from sphinxmix.SphinxClient import create_header
from sphinxmix.SphinxParams import Group_ECC, SphinxParams

from mixcore import sphinx_v2 as v2
from mixcore.errors import (
    BodyMacError,
    HeaderMacError,
    KeyFileError,
    MalformedPacket,
    PacketError,
    SurbError,
    WrongSuitePacket,
)
from mixcore.keys import StoredKey, short_id
from mixcore.params import DEFAULT_SPHINX_SUITE, SPHINX_SUITE_V1, SPHINX_SUITE_V2, NetworkParams
from mixcore.routing import (
    MAILBOX_LEN,
    MAX_FINAL_LEN,
    NODE_ID_LEN,
    RELAY_LEN,
    SURB_ID_LEN,
    DeliverCommand,
    FinalCommand,
    RelayCommand,
    SurbReplyCommand,
    decode_command,
    encode_command,
)

PACKET_VERSION = 1
#: NIST P-256 in OpenSSL's numbering.
GROUP_NID = 415
MIX_PUBLIC_KEY_LEN = 33
#: alpha, the packet's group element, uncompressed (``0x04 | x | y``).
ALPHA_LEN = 65
MIX_SECRET_KEY_LEN = 32
MIX_KEY_KIND = "p256-sphinx-mix"
#: Sphinx security parameter k: MAC, key, replay tag and SURB id sizes.
K = 16
_LEN = struct.Struct(">H")

_GROUP = Group_ECC(GROUP_NID)
_ORDER = _GROUP.G.order()


# ---------------------------------------------------------------------------------------------
# Symmetric primitives (byte for byte those of sphinxmix's SphinxParams)

#: sphinxmix's label for each per-hop key (rho: routing stream, mu: header MAC, tau: replay
#: tag, b: blinding factor, pi: LIONESS body key); a key is AES(aes_key, label).
_HPI_LABEL = b"hpi:hpi:hpi:hpi:"
_KEY_LABELS = b"hrhohrhohrhohrho" b"hmu:hmu:hmu:hmu:" b"htauhtauhtauhtau" b"hbhbhbhbhbhbhbhb" + (
    _HPI_LABEL
)
_ZERO_IV = bytes(K)


class _Aes:
    """AES-128 in CTR and ECB mode on reused OpenSSL contexts (one set per thread).

    Why not petlib's or cryptography's cipher objects: each call there allocates and initializes
    a fresh context, 5-10 us, while the AES work on a Sphinx hop's short inputs is ~1 us.
    Re-keying an existing context costs almost nothing, and a hop runs six AES operations under
    different keys. Outputs are those of petlib's ``Cipher("AES-128-CTR")`` (tests compare them).
    """

    _CTR_ALG = Cipher("AES-128-CTR").alg
    _ECB_ALG = Cipher("AES-128-ECB").alg

    def __init__(self) -> None:
        self._ctr = self._context(self._CTR_ALG)
        self._ecb = self._context(self._ECB_ALG)
        self._out_len = _FFI.new("int *")
        self._buffer = _FFI.new("unsigned char[]", 0)
        self._capacity = 0

    @staticmethod
    def _context(alg: object) -> object:
        ctx = _FFI.gc(_C.EVP_CIPHER_CTX_new(), _C.EVP_CIPHER_CTX_free)
        if ctx == _FFI.NULL or not _C.EVP_CipherInit_ex(
            ctx, alg, _FFI.NULL, _FFI.NULL, _FFI.NULL, 1
        ):
            raise MemoryError("OpenSSL could not set up an AES context")
        return ctx

    def _run(self, ctx: object, key: bytes, iv: object, data: bytes) -> bytes:
        if len(key) != K:
            raise ValueError("AES-128 takes a 16-byte key")
        n = len(data)
        if n + K > self._capacity:
            self._capacity = max(n + K, 4096)
            self._buffer = _FFI.new("unsigned char[]", self._capacity)
        if not (
            _C.EVP_CipherInit_ex(ctx, _FFI.NULL, _FFI.NULL, key, iv, 1)
            and _C.EVP_CipherUpdate(ctx, self._buffer, self._out_len, data, n)
        ) or self._out_len[0] != n:
            raise RuntimeError("OpenSSL AES operation failed")
        result: bytes = _FFI.buffer(self._buffer, n)[:]
        return result

    def ctr(self, key: bytes, iv: bytes, data: bytes) -> bytes:
        """AES-128-CTR keystream from ``iv`` (a 128-bit big-endian counter) XOR ``data``."""
        if len(iv) != K:
            raise ValueError("AES-CTR takes a 16-byte counter block")
        return self._run(self._ctr, key, iv, data)

    def ecb(self, key: bytes, blocks: bytes) -> bytes:
        """AES-128 of each 16-byte block of ``blocks``."""
        if len(blocks) % K:
            raise ValueError("AES-ECB takes whole blocks")
        return self._run(self._ecb, key, _FFI.NULL, blocks)


_local = threading.local()


def _aes() -> _Aes:
    aes: _Aes | None = getattr(_local, "aes", None)
    if aes is None:
        aes = _local.aes = _Aes()
    return aes


def _mu(key: bytes, data: bytes) -> bytes:
    """sphinxmix's ``mu``: HMAC-SHA256 truncated to k bytes."""
    return hmac.digest(key, data, "sha256")[:K]


def _hop_keys(shared: EcPt) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """(rho, mu, tau, b, pi) keys of a hop from its shared point, as sphinxmix derives them:
    ``aes_key = SHA256("aes_key:" | point)[:k]``, then each key is AES(aes_key, label)."""
    aes_key = hashlib.sha256(b"aes_key:" + shared.export(POINT_CONVERSION_UNCOMPRESSED)).digest()
    m = _aes().ecb(aes_key[:K], _KEY_LABELS)
    return m[:16], m[16:32], m[32:48], m[48:64], m[64:80]


def _hpi(aes_key: bytes) -> bytes:
    """The LIONESS key of a hop from its ``aes_key`` (what ``create_header`` returns)."""
    return _aes().ecb(aes_key, _HPI_LABEL)


def _lioness_enc(key: bytes, message: bytes) -> bytes:
    """sphinxmix's LIONESS (its ``pi``): a wide-block PRP, so one flipped bit garbles all."""
    aes = _aes()
    short, long = message[:K], message[K:]
    short = aes.ctr(key, hashlib.sha256(long + key + b"1").digest()[:K], short)
    long = aes.ctr(key, short, long)
    short = aes.ctr(key, hashlib.sha256(long + key + b"3").digest()[:K], short)
    long = aes.ctr(key, short, long)
    return short + long


def _lioness_dec(key: bytes, message: bytes) -> bytes:
    """The inverse of :func:`_lioness_enc` (sphinxmix's ``pii``)."""
    aes = _aes()
    short, long = message[:K], message[K:]
    long = aes.ctr(key, short, long)
    short = aes.ctr(key, hashlib.sha256(long + key + b"3").digest()[:K], short)
    long = aes.ctr(key, short, long)
    short = aes.ctr(key, hashlib.sha256(long + key + b"1").digest()[:K], short)
    return short + long


# ---------------------------------------------------------------------------------------------
# Suites


@dataclass(frozen=True, slots=True)
class _SuiteInfo:
    name: str
    version: int
    alpha_len: int
    public_key_len: int
    key_kind: str


SUITES = {
    SPHINX_SUITE_V1: _SuiteInfo(SPHINX_SUITE_V1, PACKET_VERSION, ALPHA_LEN, 33, MIX_KEY_KIND),
    SPHINX_SUITE_V2: _SuiteInfo(
        SPHINX_SUITE_V2, v2.VERSION, v2.ALPHA_LEN, v2.PUBLIC_KEY_LEN, "x25519-sphinx-mix"
    ),
}
_SUITE_BY_VERSION = {info.version: info.name for info in SUITES.values()}
_SUITE_BY_KIND = {info.key_kind: info.name for info in SUITES.values()}


# ---------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True, slots=True)
class SphinxGeometry:
    """Sizes of every packet on the network; fixed by ``max_hops``, ``body_len`` and the suite."""

    max_hops: int = 5
    body_len: int = 2048
    suite: str = DEFAULT_SPHINX_SUITE

    def __post_init__(self) -> None:
        if not 1 <= self.max_hops <= 10:
            raise PacketError("max_hops must be between 1 and 10")
        if not 64 <= self.body_len <= 60_000:
            raise PacketError("body_len must be between 64 and 60000 bytes")
        if self.suite not in SUITES:
            raise PacketError(f"unknown Sphinx suite {self.suite!r}")

    @classmethod
    def from_params(cls, params: NetworkParams) -> SphinxGeometry:
        return cls(max_hops=params.max_hops, body_len=params.body_len, suite=params.sphinx_suite)

    @property
    def version(self) -> int:
        """The first byte of every packet of this suite."""
        return SUITES[self.suite].version

    @property
    def alpha_len(self) -> int:
        return SUITES[self.suite].alpha_len

    @property
    def layer_len(self) -> int:
        """Bytes a relaying hop's layer takes in beta: length byte, RELAY command, next MAC."""
        return 1 + RELAY_LEN + K

    @property
    def beta_len(self) -> int:
        """Routing-information bytes: one relay command per non-final hop, then the final one."""
        return (self.max_hops - 1) * self.layer_len + 1 + MAX_FINAL_LEN

    @property
    def header_len(self) -> int:
        return self.alpha_len + self.beta_len + K

    @property
    def packet_len(self) -> int:
        return 1 + self.header_len + self.body_len

    @property
    def payload_capacity(self) -> int:
        """Most payload bytes a forward packet or a SURB reply can carry."""
        return self.body_len - K - _LEN.size

    @property
    def surb_len(self) -> int:
        """Bytes of an encoded :class:`Surb` (to be carried inside a payload)."""
        return NODE_ID_LEN + self.header_len + K


# ---------------------------------------------------------------------------------------------
# Keys


def _decode_point(data: bytes) -> EcPt:
    if len(data) != MIX_PUBLIC_KEY_LEN or data[0] not in (2, 3):
        raise MalformedPacket("not a compressed group element")
    try:
        point = EcPt.from_binary(data, _GROUP.G)
    except Exception:  # petlib raises bare Exception on invalid encodings
        raise MalformedPacket("not a valid group element") from None
    return point


def _decode_alpha(data: bytes) -> EcPt:
    """A packet's alpha: uncompressed and on the curve (petlib checks), never the identity."""
    if len(data) != ALPHA_LEN or data[0] != 4:
        raise MalformedPacket("not an uncompressed group element")
    try:
        return EcPt.from_binary(data, _GROUP.G)
    except Exception:  # petlib raises bare Exception on invalid encodings
        raise MalformedPacket("not a valid group element") from None


@lru_cache(maxsize=4096)
def _public_point(data: bytes) -> EcPt:
    """Decoded public keys; cached because a client reuses the same few dozen node keys."""
    try:
        return _decode_point(data)
    except MalformedPacket:
        raise PacketError(f"invalid mix public key {short_id(data)}") from None


@lru_cache(maxsize=4096)
def mix_key_suite(data: bytes) -> str | None:
    """The suite whose valid public mix key ``data`` is, or None."""
    if not isinstance(data, bytes):
        return None
    if len(data) == MIX_PUBLIC_KEY_LEN:
        try:
            _public_point(data)
        except PacketError:
            return None
        return SPHINX_SUITE_V1
    if len(data) == v2.PUBLIC_KEY_LEN and v2.is_valid_public_key(data):
        return SPHINX_SUITE_V2
    return None


def is_valid_mix_public_key(data: bytes, suite: str | None = None) -> bool:
    """True when ``data`` is a public mix key of ``suite`` (of any known suite when None):
    a compressed P-256 point (v1) or a canonical X25519 point on the curve, not of small
    order (v2)."""
    found = mix_key_suite(data) if isinstance(data, bytes) else None
    return found is not None and (suite is None or found == suite)


class MixPrivateKey:
    """A node's Sphinx key for one epoch and suite. The secret never appears in repr or errors.

    Suite v1: a P-256 scalar (``Bn``); suite v2: a 32-byte X25519 secret.
    """

    __slots__ = ("_secret", "_v2", "public", "suite")

    def __init__(self, secret: Bn | bytes, suite: str = SPHINX_SUITE_V1) -> None:
        self.suite = suite
        self._v2: v2.SecretKey | None = None
        if suite == SPHINX_SUITE_V1:
            if not isinstance(secret, Bn) or not (0 < secret < _ORDER):
                raise PacketError("mix secret out of range")
            self._secret = secret
            self.public: bytes = (secret * _GROUP.g).export(POINT_CONVERSION_COMPRESSED)
        elif suite == SPHINX_SUITE_V2:
            if not isinstance(secret, bytes) or len(secret) != v2.SECRET_KEY_LEN:
                raise PacketError(f"a {suite} mix secret is {v2.SECRET_KEY_LEN} bytes")
            self._v2 = v2.SecretKey(secret)
            self._secret = secret
            self.public = self._v2.public
        else:
            raise PacketError(f"unknown Sphinx suite {suite!r}")

    @classmethod
    def generate(
        cls, suite: str = DEFAULT_SPHINX_SUITE, *, randbytes: Callable[[int], bytes] = token_bytes
    ) -> MixPrivateKey:
        """A fresh key; a suite v2 secret is ``randbytes(32)`` (the OS generator by default)."""
        if suite == SPHINX_SUITE_V2:
            return cls(randbytes(v2.SECRET_KEY_LEN), suite)
        secret = _ORDER.random()
        while secret == 0:
            secret = _ORDER.random()
        return cls(secret, suite)

    @classmethod
    def from_secret(cls, data: bytes, suite: str = DEFAULT_SPHINX_SUITE) -> MixPrivateKey:
        if len(data) != MIX_SECRET_KEY_LEN:
            raise PacketError(f"a mix secret key is {MIX_SECRET_KEY_LEN} bytes")
        if suite == SPHINX_SUITE_V1:
            return cls(Bn.from_binary(data), suite)
        return cls(data, suite)

    def secret_bytes(self) -> bytes:
        if self._v2 is not None:
            return self._v2.secret_bytes()
        assert isinstance(self._secret, Bn)
        secret: bytes = self._secret.binary()
        return secret.rjust(MIX_SECRET_KEY_LEN, b"\x00")

    def __repr__(self) -> str:
        return f"MixPrivateKey({self.suite}, {short_id(self.public)}…)"


def mix_key_record(key: MixPrivateKey, epoch: int) -> StoredKey:
    """What a mix key file holds (written by :func:`mixcore.loading.save_mix_key`)."""
    return StoredKey(SUITES[key.suite].key_kind, key.secret_bytes(), epoch)


#: The key-file kinds a mix key may have, one per suite.
MIX_KEY_KINDS = tuple(_SUITE_BY_KIND)


def mix_key_from_record(stored: StoredKey, name: str) -> tuple[int, MixPrivateKey]:
    """``(epoch, key)`` from a mix key file's record (of either suite: its kind says)."""
    if stored.epoch is None:
        raise KeyFileError(f"mix key file {name} does not say which epoch it is for")
    try:
        return stored.epoch, MixPrivateKey.from_secret(stored.secret, _SUITE_BY_KIND[stored.kind])
    except PacketError:
        raise KeyFileError(f"mix key file {name} holds an invalid key") from None


# ---------------------------------------------------------------------------------------------
# Results of processing a packet at a node


@dataclass(frozen=True, slots=True)
class Relay:
    """Hold ``packet`` for ``delay`` seconds, then send it to ``next_node``."""

    replay_tag: bytes
    next_node: bytes
    delay: float
    packet: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    """This node is the exit: store ``payload`` in ``mailbox``."""

    replay_tag: bytes
    mailbox: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class SurbReply:
    """This node is the exit of a reply: store the opaque ``body`` for ``mailbox``."""

    replay_tag: bytes
    mailbox: bytes
    surb_id: bytes
    body: bytes


ProcessResult = Relay | Deliver | SurbReply
#: A packet split by :meth:`Sphinx.parse`: ((alpha, beta, gamma), body); alpha is an ``EcPt``
#: in suite v1 and the 32 checked bytes in suite v2.
ParsedPacket = tuple[tuple[Any, bytes, bytes], bytes]


@dataclass(frozen=True, slots=True)
class PathHop:
    """One node of a path: its id (Ed25519 identity key) and its mix key for the epoch."""

    node_id: bytes
    mix_key: bytes


# ---------------------------------------------------------------------------------------------
# SURBs


@dataclass(frozen=True, slots=True)
class Surb:
    """A single-use reply block, handed to someone who may answer through it.

    ``header`` is a complete serialized header (alpha, beta, gamma) whose last hop stores the
    reply for its creator; ``first_hop`` is where the replier sends the packaged packet.
    """

    first_hop: bytes
    header: bytes
    key: bytes

    def encode(self) -> bytes:
        return self.first_hop + self.header + self.key

    @classmethod
    def decode(cls, data: bytes, geometry: SphinxGeometry) -> Surb:
        if not isinstance(data, bytes) or len(data) != geometry.surb_len:
            raise SurbError(f"a SURB is {geometry.surb_len} bytes")
        first, rest = data[:NODE_ID_LEN], data[NODE_ID_LEN:]
        return cls(first, rest[: geometry.header_len], rest[geometry.header_len :])

    def __repr__(self) -> str:
        return f"Surb(first_hop={short_id(self.first_hop)}…)"


@dataclass(frozen=True, slots=True)
class SurbKeys:
    """What the SURB's creator keeps to decode the reply (never leaves the creator)."""

    surb_id: bytes
    keys: tuple[bytes, ...]

    def encode(self) -> bytes:
        return self.surb_id + bytes([len(self.keys)]) + b"".join(self.keys)

    @classmethod
    def decode(cls, data: bytes) -> SurbKeys:
        if not isinstance(data, bytes) or len(data) < SURB_ID_LEN + 1:
            raise SurbError("truncated SURB keys")
        count = data[SURB_ID_LEN]
        keys_bytes = data[SURB_ID_LEN + 1 :]
        if not 2 <= count <= 11 or len(keys_bytes) != count * K:
            raise SurbError("malformed SURB keys")
        keys = tuple(keys_bytes[i * K : (i + 1) * K] for i in range(count))
        return cls(data[:SURB_ID_LEN], keys)

    def __repr__(self) -> str:
        return f"SurbKeys(surb_id={self.surb_id.hex()}, keys=<redacted>)"


# ---------------------------------------------------------------------------------------------
# The packet format


#: What a suite's header construction hands the shared packet code: the serialized header
#: (alpha | beta | gamma), each hop's LIONESS body key, and the exit's body MAC key.
_Header = tuple[bytes, list[bytes], bytes]


class Sphinx:
    """Create, process and serialize packets of one geometry (and so of one suite).

    ``Sphinx(geometry)`` returns the implementation of ``geometry.suite``. Crypto randomness
    comes from the OS; path and delay choices, which tests want to reproduce, are the caller's.
    """

    geometry: SphinxGeometry

    def __new__(cls, geometry: SphinxGeometry | None = None) -> Sphinx:
        impl = cls
        if cls is Sphinx:
            suite = (geometry or SphinxGeometry()).suite
            impl = SphinxV1 if suite == SPHINX_SUITE_V1 else SphinxV2
        return object.__new__(impl)

    def __init__(self, geometry: SphinxGeometry | None = None) -> None:
        self.geometry = geometry or SphinxGeometry()
        self.urandom: Callable[[int], bytes] = token_bytes
        """Where SURB ids and SURB keys come from (test vectors replace it)."""

    # -- suite-specific parts ----------------------------------------------------------------

    def _header(self, keys: list[bytes], relays: list[bytes], final: bytes) -> _Header:
        raise NotImplementedError

    def _lioness_enc(self, key: bytes, message: bytes) -> bytes:
        raise NotImplementedError

    def _lioness_dec(self, key: bytes, message: bytes) -> bytes:
        raise NotImplementedError

    def _mac(self, key: bytes, data: bytes) -> bytes:
        raise NotImplementedError

    def _reply_keys(self, key: bytes) -> tuple[bytes, bytes]:
        """(LIONESS key, MAC key) of a SURB reply's innermost layer, from the SURB's key."""
        raise NotImplementedError

    def _parse_header(self, header: bytes) -> tuple[Any, bytes, bytes]:
        raise NotImplementedError

    def process_parsed(self, key: MixPrivateKey, parsed: ParsedPacket) -> ProcessResult:
        """:meth:`process` for a packet already split by :meth:`parse` (a node trying several
        keys near an epoch boundary parses once)."""
        raise NotImplementedError

    # -- parsing ------------------------------------------------------------------------------

    def parse(self, packet: bytes) -> ParsedPacket:
        """Split a packet into its (alpha, beta, gamma) header and body, checking sizes.

        A packet whose version byte names another suite raises :class:`WrongSuitePacket`
        (nodes count those apart from plain garbage)."""
        g = self.geometry
        if not isinstance(packet, bytes) or not packet:
            raise MalformedPacket(f"a packet is {g.packet_len} bytes")
        version = packet[0]
        if version != g.version:
            other = _SUITE_BY_VERSION.get(version)
            if other is not None:
                raise WrongSuitePacket(f"a {other} packet in a {g.suite} network")
            raise MalformedPacket(f"unknown packet version {version}")
        if len(packet) != g.packet_len:
            raise MalformedPacket(f"a packet is {g.packet_len} bytes")
        header = self._parse_header(packet[1 : 1 + g.header_len])
        return header, packet[1 + g.header_len :]

    def process(self, key: MixPrivateKey, packet: bytes) -> ProcessResult:
        """Remove one layer. Raises a :class:`PacketError` subclass on any bad input."""
        return self.process_parsed(key, self.parse(packet))

    def _check_key(self, key: MixPrivateKey) -> None:
        if key.suite != self.geometry.suite:
            raise PacketError(f"a {key.suite} key cannot open {self.geometry.suite} packets")

    # -- body layout ------------------------------------------------------------------------

    def _pad(self, payload: bytes) -> bytes:
        cap = self.geometry.payload_capacity
        if len(payload) > cap:
            raise PacketError(f"payload of {len(payload)} bytes exceeds capacity {cap}")
        return _LEN.pack(len(payload)) + payload + bytes(cap - len(payload))

    def _unpad(self, block: bytes) -> bytes:
        (length,) = _LEN.unpack_from(block)
        end = _LEN.size + length
        if length > self.geometry.payload_capacity or any(block[end:]):
            raise BodyMacError("malformed payload padding")
        return block[_LEN.size : end]

    # -- creating packets -------------------------------------------------------------------

    def _path_header(
        self, path: Sequence[PathHop], delays: Sequence[float], final: FinalCommand
    ) -> _Header:
        g = self.geometry
        if not 1 <= len(path) <= g.max_hops:
            raise PacketError(f"a path has 1 to {g.max_hops} hops, got {len(path)}")
        if len(delays) != len(path) - 1:
            raise PacketError("give one delay per hop except the last")
        for hop in path:
            if len(hop.node_id) != NODE_ID_LEN:
                raise PacketError(f"a node id is {NODE_ID_LEN} bytes")
            if not is_valid_mix_public_key(hop.mix_key, g.suite):
                raise PacketError(f"invalid {g.suite} mix public key {short_id(hop.mix_key)}")
        relays = [
            encode_command(RelayCommand.with_delay(path[i + 1].node_id, delays[i]))
            for i in range(len(path) - 1)
        ]
        return self._header([hop.mix_key for hop in path], relays, encode_command(final))

    def create_forward(
        self,
        path: Sequence[PathHop],
        delays: Sequence[float],
        mailbox: bytes,
        payload: bytes,
    ) -> bytes:
        """A packet for ``path[0]`` that the last hop delivers to ``mailbox``.

        ``delays[i]`` (seconds) is how long ``path[i]`` holds the packet.
        """
        header, body_keys, exit_mac_key = self._path_header(path, delays, DeliverCommand(mailbox))
        block = self._pad(payload)
        body = self._mac(exit_mac_key, block) + block
        for key in reversed(body_keys):
            body = self._lioness_enc(key, body)
        return bytes([self.geometry.version]) + header + body

    def create_surb(
        self, path: Sequence[PathHop], delays: Sequence[float], mailbox: bytes
    ) -> tuple[Surb, SurbKeys]:
        """A SURB whose reply the last hop of ``path`` stores in ``mailbox``."""
        surb_id = self.urandom(SURB_ID_LEN)
        header, body_keys, _ = self._path_header(path, delays, SurbReplyCommand(mailbox, surb_id))
        key = self.urandom(K)
        surb = Surb(first_hop=path[0].node_id, header=header, key=key)
        return surb, SurbKeys(surb_id, (key, *body_keys))

    def package_reply(self, surb: Surb, payload: bytes) -> bytes:
        """The packet to send to ``surb.first_hop`` carrying ``payload`` back to the creator."""
        g = self.geometry
        if len(surb.header) != g.header_len or len(surb.key) != K:
            raise SurbError("SURB does not match this geometry")
        block = self._pad(payload)
        cipher_key, mac_key = self._reply_keys(surb.key)
        body = self._lioness_enc(cipher_key, self._mac(mac_key, block) + block)
        return bytes([g.version]) + surb.header + body

    def decode_reply(self, keys: SurbKeys, body: bytes) -> bytes:
        """Recover the payload of a reply from the body the exit stored (creator side)."""
        if len(body) != self.geometry.body_len:
            raise SurbError(f"a reply body is {self.geometry.body_len} bytes")
        key, hop_keys = keys.keys[0], keys.keys[1:]
        for hop_key in reversed(hop_keys):
            body = self._lioness_enc(hop_key, body)
        cipher_key, mac_key = self._reply_keys(key)
        body = self._lioness_dec(cipher_key, body)
        mac, block = body[:K], body[K:]
        if not hmac.compare_digest(mac, self._mac(mac_key, block)):
            raise SurbError("reply body does not authenticate (tampered, or not for this SURB)")
        try:
            return self._unpad(block)
        except BodyMacError:
            raise SurbError("malformed reply padding") from None


class SphinxV1(Sphinx):
    """Suite v1: sphinxmix's construction over P-256, byte for byte (tests compare)."""

    def __init__(self, geometry: SphinxGeometry | None = None) -> None:
        super().__init__(geometry or SphinxGeometry(suite=SPHINX_SUITE_V1))
        g = self.geometry
        if g.suite != SPHINX_SUITE_V1:
            raise PacketError(f"SphinxV1 cannot serve a {g.suite} geometry")
        # sphinxmix's max_len is beta's length plus 32, whatever the group's element size.
        self._params = SphinxParams(
            group=_GROUP, header_len=g.beta_len + 32, body_len=g.body_len, assoc_len=0, k=K
        )
        # sphinxmix pads beta with 2 * max_len zero bytes before decrypting it; so do we.
        self._beta_pad = bytes(2 * (g.beta_len + 32))

    def _serialize(self, alpha: EcPt, beta: bytes, gamma: bytes, body: bytes) -> bytes:
        return (
            bytes([PACKET_VERSION])
            + bytes(alpha.export(POINT_CONVERSION_UNCOMPRESSED))
            + beta
            + gamma
            + body
        )

    def _parse_header(self, header: bytes) -> tuple[EcPt, bytes, bytes]:
        g = self.geometry
        if len(header) != g.header_len:
            raise MalformedPacket(f"a header is {g.header_len} bytes")
        alpha = _decode_alpha(header[:ALPHA_LEN])
        beta = header[ALPHA_LEN : ALPHA_LEN + g.beta_len]
        gamma = header[ALPHA_LEN + g.beta_len :]
        return alpha, beta, gamma

    def _header(self, keys: list[bytes], relays: list[bytes], final: bytes) -> _Header:
        # sphinxmix reveals nodelist[i + 1] to hop i (with its own length byte); nodelist[0] is
        # never revealed.
        nodelist = [b"\x00", *relays]
        points = [_public_point(key) for key in keys]
        try:
            (alpha, beta, gamma), secrets = create_header(
                self._params, nodelist, points, final
            )
        except SphinxException as exc:  # cannot happen with our fixed geometry; be explicit
            raise PacketError(f"cannot build header: {exc}") from None
        body_keys = [_hpi(s) for s in secrets]
        return self._serialize(alpha, beta, gamma, b"")[1:], body_keys, body_keys[-1]

    def _lioness_enc(self, key: bytes, message: bytes) -> bytes:
        return _lioness_enc(key, message)

    def _lioness_dec(self, key: bytes, message: bytes) -> bytes:
        return _lioness_dec(key, message)

    def _mac(self, key: bytes, data: bytes) -> bytes:
        return _mu(key, data)

    def _reply_keys(self, key: bytes) -> tuple[bytes, bytes]:
        return key, key  # sphinxmix's reply layer: one key for both

    def process_parsed(self, key: MixPrivateKey, parsed: ParsedPacket) -> ProcessResult:
        self._check_key(key)
        (alpha, beta, gamma), body = parsed
        # sphinxmix's sphinx_process, step by step (alpha is on the curve: _decode_alpha checked).
        # pt_mul, not ``scalar * alpha``: Bn.__mul__ would first fail on the point (an exception
        # and a throw-away Bn per call) before Python falls back to EcPt.__rmul__.
        rho, mu, tag, blind, pi = _hop_keys(alpha.pt_mul(key._secret))
        if not hmac.compare_digest(gamma, _mu(mu, beta)):
            raise HeaderMacError("header MAC mismatch")
        stream = _aes().ctr(rho, _ZERO_IV, beta + self._beta_pad)
        length = stream[0]
        command = decode_command(stream[1 : 1 + length])
        delta = _lioness_dec(pi, body)
        if isinstance(command, RelayCommand):
            rest = stream[1 + length :]
            next_alpha = alpha.pt_mul(Bn.from_binary(blind) % _ORDER)
            next_packet = self._serialize(next_alpha, rest[K : K + len(beta)], rest[:K], delta)
            return Relay(tag, command.next_node, command.delay, next_packet)
        if isinstance(command, DeliverCommand):
            mac, block = delta[:K], delta[K:]
            if not hmac.compare_digest(mac, _mu(pi, block)):
                raise BodyMacError("payload MAC mismatch at delivery (body tampered)")
            return Deliver(tag, command.mailbox, self._unpad(block))
        return SurbReply(tag, command.mailbox, command.surb_id, delta)


class SphinxV2(Sphinx):
    """Suite v2 (:mod:`mixcore.sphinx_v2`): X25519, full-width blinding, separate body keys,
    domain-separated key derivation, and a header construction of its own.

    The hop below is written flat, with its lengths precomputed: outside its two
    multiplications a hop is a few dozen microseconds of Python, and every attribute lookup
    and call shows in a node's throughput (``benchmarks/sphinx_hop.py`` prints the bound)."""

    def __init__(self, geometry: SphinxGeometry | None = None) -> None:
        super().__init__(geometry or SphinxGeometry(suite=SPHINX_SUITE_V2))
        g = self.geometry
        if g.suite != SPHINX_SUITE_V2:
            raise PacketError(f"SphinxV2 cannot serve a {g.suite} geometry")
        self.core = v2.Core(g.beta_len, g.layer_len, _aes)
        self._version = bytes([g.version])
        self._packet_len = g.packet_len
        self._beta_end = v2.ALPHA_LEN + g.beta_len
        self._header_end = 1 + g.header_len
        self._beta_len = g.beta_len
        self._layer_pad = bytes(g.layer_len)

    def parse(self, packet: bytes) -> ParsedPacket:
        if (
            type(packet) is bytes
            and len(packet) == self._packet_len
            and packet[0] == v2.VERSION
        ):
            alpha = packet[1:33]
            if int.from_bytes(alpha, "little") >= v2.P:
                raise MalformedPacket("alpha is not a canonical X25519 point")
            beta_end = 1 + self._beta_end
            return (
                (alpha, packet[33:beta_end], packet[beta_end : self._header_end]),
                packet[self._header_end :],
            )
        return super().parse(packet)  # the slow path names what is wrong

    def _parse_header(self, header: bytes) -> tuple[bytes, bytes, bytes]:
        g = self.geometry
        if len(header) != g.header_len:
            raise MalformedPacket(f"a header is {g.header_len} bytes")
        alpha = header[: v2.ALPHA_LEN]
        if not v2.is_canonical_u(alpha):
            raise MalformedPacket("alpha is not a canonical X25519 point")
        return alpha, header[v2.ALPHA_LEN : self._beta_end], header[self._beta_end :]

    def _header(self, keys: list[bytes], relays: list[bytes], final: bytes) -> _Header:
        try:  # each command with its length byte, as in v1's layers
            header, hops = self.core.create_header(
                keys, [bytes([len(r)]) + r for r in relays], bytes([len(final)]) + final
            )
        except ValueError as exc:
            raise PacketError(f"cannot build header: {exc}") from None
        return header, [hop.body for hop in hops], hops[-1].body_mac

    def _lioness_enc(self, key: bytes, message: bytes) -> bytes:
        return self.core.lioness_enc(key, message)

    def _lioness_dec(self, key: bytes, message: bytes) -> bytes:
        return self.core.lioness_dec(key, message)

    def _mac(self, key: bytes, data: bytes) -> bytes:
        return v2.mac(key, data)

    def _reply_keys(self, key: bytes) -> tuple[bytes, bytes]:
        m = v2.kdf(b"surb", key, 2 * K)
        return m[:K], m[K:]

    def process_parsed(self, key: MixPrivateKey, parsed: ParsedPacket) -> ProcessResult:
        if key._v2 is None:
            self._check_key(key)
        (alpha, beta, gamma), body = parsed
        shared = v2.x25519(key._secret, alpha)
        if shared is None:
            raise MalformedPacket("alpha of small order")
        keys = v2.hop_keys(shared)
        if not hmac.compare_digest(gamma, v2.mac(keys.header_mac, beta)):
            raise HeaderMacError("header MAC mismatch")
        stream = _aes().ctr(keys.header, _ZERO_IV, beta + self._layer_pad)
        delta = self.core.lioness_dec(keys.body, body)
        if stream[0] == RELAY_LEN and stream[1] == _RELAY_TYPE:  # the common case, inline
            next_alpha = v2.x25519(keys.blinding, alpha)
            assert next_alpha is not None  # alpha is not of small order: shared was not zero
            shift = 1 + RELAY_LEN
            next_packet = b"".join(
                (
                    self._version,
                    next_alpha,
                    stream[shift + K : shift + K + self._beta_len],
                    stream[shift : shift + K],
                    delta,
                )
            )
            delay = int.from_bytes(stream[2 + NODE_ID_LEN : shift], "big") / 1_000_000
            return Relay(keys.replay_tag, stream[2 : 2 + NODE_ID_LEN], delay, next_packet)
        command = decode_command(stream[1 : 1 + stream[0]])
        if isinstance(command, DeliverCommand):
            mac, block = delta[:K], delta[K:]
            if not hmac.compare_digest(mac, v2.mac(keys.body_mac, block)):
                raise BodyMacError("payload MAC mismatch at delivery (body tampered)")
            return Deliver(keys.replay_tag, command.mailbox, self._unpad(block))
        if isinstance(command, SurbReplyCommand):
            return SurbReply(keys.replay_tag, command.mailbox, command.surb_id, delta)
        raise MalformedPacket("a relay command in an unexpected layout")


_RELAY_TYPE = 1


__all__ = [
    "ALPHA_LEN",
    "GROUP_NID",
    "MAILBOX_LEN",
    "MIX_KEY_KINDS",
    "MIX_PUBLIC_KEY_LEN",
    "SUITES",
    "Deliver",
    "MixPrivateKey",
    "PathHop",
    "ProcessResult",
    "Relay",
    "Sphinx",
    "SphinxGeometry",
    "SphinxV1",
    "SphinxV2",
    "Surb",
    "SurbKeys",
    "SurbReply",
    "is_valid_mix_public_key",
    "mix_key_from_record",
    "mix_key_record",
    "mix_key_suite",
]
