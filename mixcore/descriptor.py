"""Node descriptors: what a mix or provider tells the directory authorities about itself.

A descriptor binds a node's long-term Ed25519 identity key (which *is* its node id in Sphinx
routing commands) to its Noise link key, its role, its address and its Sphinx mix keys for the
epoch it was made for and the next one. The node signs the canonical encoding with its identity
key; the authorities check that signature, so nobody can publish an address or a mix key in
another node's name.

Everything here is pure: bytes in, validated frozen objects out. Field checks happen in
``__post_init__`` ("construct, then trust"), so a :class:`NodeDescriptor` that exists is valid,
whether it was built by a node or decoded from the wire. Every field error is a
:class:`~mixcore.errors.DescriptorError` whose message starts with the field's name.

Wire formats (see ``docs/protocol.md`` section 5 for the byte-level description):

* body: canonical msgpack array
  ``[version, identity_key, link_key, role, layer, host, port, epoch,
  [[epoch, mix_key], [epoch + 1, mix_key]], name]``, optionally followed by the node's traffic
  figures of its last full epoch ``[measured_epoch, packets_in_milli_per_s, mean_pool_milli,
  loop_return_permille]`` (integers; -1: no loops settled). Counts only, no per-packet data:
  they feed the clients' anonymity meter (``mixcore.anonymity``);
* signature: Ed25519 by ``identity_key`` over ``DESCRIPTOR_SIGNING_DOMAIN + body``;
* signed descriptor: canonical msgpack array ``[body, signature]`` (both byte strings).

**Why one module of ~420 lines:** the descriptor's codec, its signature and its validation rules
(one per field) are one contract that the authorities and nodes must share byte for byte.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from mixcore.encoding import expect_bytes, expect_list, pack, unpack_canonical
from mixcore.errors import DecodeError, DescriptorError, SignatureError
from mixcore.keys import PUBLIC_KEY_LEN, SIGNATURE_LEN, IdentityKey, short_id, verify_signature
from mixcore.params import MAX_LAYERS
from mixcore.sphinx import MIX_PUBLIC_KEY_LEN, is_valid_mix_public_key
from mixcore.topology import NodeRole

DESCRIPTOR_VERSION = 1

#: Prefix of every descriptor signature, so a descriptor signature can never be replayed as a
#: signature over some other kind of message made with the same identity key (and vice versa).
DESCRIPTOR_SIGNING_DOMAIN = b"mixnet-descriptor-v1\x00"

#: Upper bound on a signed descriptor's wire form. The field limits below keep a real one well
#: under 1 KiB; this bound is what the decoder enforces before it parses anything.
MAX_SIGNED_DESCRIPTOR_BYTES = 4096

#: Largest epoch number a descriptor may be made for (its "next" mix key is for ``epoch + 1``,
#: which must still fit in 32 bits). At one-hour epochs this is half a million years away.
MAX_EPOCH = (1 << 32) - 2

MAX_NAME_LEN = 32
MAX_HOST_LEN = 253
LINK_KEY_LEN = 32

#: Bounds of the traffic figures (1e9 packets/s, a billion pooled packets: far past any node).
MAX_FIGURE_MILLI = 10**12


@dataclass(frozen=True, slots=True)
class TrafficFigures:
    """A node's figures for one finished epoch, as it signs them (integers on the wire)."""

    measured_epoch: int
    packets_in_milli_per_s: int
    mean_pool_milli: int
    loop_return_permille: int = -1
    """Share of the node's own loops that came back, per mille; -1 when none settled."""

    def __post_init__(self) -> None:
        _check_int("traffic.measured_epoch", self.measured_epoch, 0, MAX_EPOCH)
        _check_int("traffic.packets_in", self.packets_in_milli_per_s, 0, MAX_FIGURE_MILLI)
        _check_int("traffic.mean_pool", self.mean_pool_milli, 0, MAX_FIGURE_MILLI)
        _check_int("traffic.loop_return", self.loop_return_permille, -1, 1000)

    @classmethod
    def of(cls, epoch: int, packets_in_per_s: float, mean_pool: float,
           loop_return_share: float | None) -> TrafficFigures:
        """From measured values (rounded to the wire's precision)."""
        share = -1 if loop_return_share is None else round(1000 * loop_return_share)
        return cls(epoch, round(1000 * packets_in_per_s), round(1000 * mean_pool), share)

    @property
    def packets_in_per_s(self) -> float:
        return self.packets_in_milli_per_s / 1000

    @property
    def mean_pool(self) -> float:
        return self.mean_pool_milli / 1000

    @property
    def loop_return_share(self) -> float | None:
        return None if self.loop_return_permille < 0 else self.loop_return_permille / 1000

    def to_wire(self) -> list[int]:
        return [self.measured_epoch, self.packets_in_milli_per_s, self.mean_pool_milli,
                self.loop_return_permille]

    @classmethod
    def from_wire(cls, obj: Any) -> TrafficFigures:
        items = expect_list(obj, 4, "traffic figures")
        if any(not isinstance(x, int) or isinstance(x, bool) for x in items):
            raise _fail("traffic", "expected four integers")
        return cls(*items)


_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


#: A role's code on the wire (the descriptor is the only place roles are numbers).
ROLE_CODES = {NodeRole.MIX: 1, NodeRole.PROVIDER: 2}
_ROLE_BY_CODE = {code: role for role, code in ROLE_CODES.items()}


def _fail(field: str, reason: str) -> DescriptorError:
    return DescriptorError(f"{field}: {reason}")


def check_host(host: str) -> None:
    """Accept an IP literal in canonical text form or a lower-case DNS hostname.

    Canonical forms only (``::1``, not ``0:0:0:0:0:0:0:1``; ``mix1.example``, not ``MIX1.Example``)
    so that one address has one encoding, and duplicate addresses are recognisable by equality.
    Unspecified and multicast addresses are refused: nobody can connect to them.
    """
    if not isinstance(host, str):
        raise _fail("host", "expected text")
    if not host or len(host) > MAX_HOST_LEN:
        raise _fail("host", f"must be 1 to {MAX_HOST_LEN} characters")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if str(ip) != host:
            raise _fail("host", f"IP address must be written in canonical form {str(ip)!r}")
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
            raise _fail("host", "scoped (link-local '%zone') addresses are not reachable by others")
        if ip.is_unspecified or ip.is_multicast:
            raise _fail("host", "unspecified and multicast addresses cannot be connected to")
        return
    if not host.isascii():
        raise _fail("host", "hostnames must be ASCII (use the IDNA 'xn--' form)")
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise _fail(
            "host",
            "not an IP address or a lower-case hostname (labels of 1-63 of a-z, 0-9, '-', "
            "not starting or ending with '-')",
        )
    if labels[-1].isdigit():
        # "256.1.1.1" or "10.1" are malformed addresses, not hostnames (RFC 3696 section 2).
        raise _fail("host", "not a valid IP address, and a hostname's last label cannot be numeric")


def check_name(name: str) -> None:
    """Operator nickname: up to 32 printable ASCII characters (no control or look-alike chars)."""
    if not isinstance(name, str):
        raise _fail("name", "expected text")
    if len(name) > MAX_NAME_LEN:
        raise _fail("name", f"at most {MAX_NAME_LEN} characters")
    if not all(" " <= ch <= "~" for ch in name):
        raise _fail("name", "only printable ASCII characters are allowed")


def _check_int(field: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, f"expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise _fail(field, f"must be between {lo} and {hi}, got {value}")


def _check_key(field: str, value: Any, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise _fail(field, f"expected {length} bytes")


@dataclass(frozen=True, slots=True)
class NodeDescriptor:
    """One node's self-description for one epoch. Construct, then trust."""

    identity_key: bytes
    """32-byte Ed25519 public key: signs this descriptor, and is the node id in routing."""
    link_key: bytes
    """32-byte X25519 public key: the Noise static key peers must find at ``host:port``."""
    role: NodeRole
    layer: int
    """0 for providers; for mixes the requested layer 1..8, or 0 for "authorities choose".
    Advisory: the current consensus rule ignores it (see :mod:`mixcore.consensus`)."""
    host: str
    port: int
    epoch: int
    """The epoch this descriptor was made for; ``mix_keys`` covers it and the next."""
    mix_keys: tuple[tuple[int, bytes], ...]
    """``((epoch, key), (epoch + 1, key))``: compressed Sphinx group points, in this order."""
    name: str = ""
    version: int = DESCRIPTOR_VERSION
    traffic: TrafficFigures | None = None
    """The node's figures of its last full epoch (signed with the rest), if it has them."""

    def __post_init__(self) -> None:
        _check_int("version", self.version, DESCRIPTOR_VERSION, DESCRIPTOR_VERSION)
        _check_key("identity_key", self.identity_key, PUBLIC_KEY_LEN)
        _check_key("link_key", self.link_key, LINK_KEY_LEN)
        if not isinstance(self.role, NodeRole):
            raise _fail("role", "expected a NodeRole")
        if self.role is NodeRole.PROVIDER:
            _check_int("layer", self.layer, 0, 0)
        else:
            _check_int("layer", self.layer, 0, MAX_LAYERS)
        check_host(self.host)
        _check_int("port", self.port, 1, 65535)
        _check_int("epoch", self.epoch, 0, MAX_EPOCH)
        self._check_mix_keys()
        check_name(self.name)
        if self.traffic is not None:
            if not isinstance(self.traffic, TrafficFigures):
                raise _fail("traffic", "expected TrafficFigures")
            if self.traffic.measured_epoch >= self.epoch:
                raise _fail("traffic", "figures must be of an epoch before the descriptor's")

    def _check_mix_keys(self) -> None:
        keys = self.mix_keys
        if not isinstance(keys, tuple) or len(keys) != 2:
            raise _fail("mix_keys", "expected a tuple of two (epoch, key) pairs")
        for offset, pair in enumerate(keys):
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise _fail("mix_keys", "each entry must be an (epoch, key) pair")
            epoch, key = pair
            want = self.epoch + offset
            if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch != want:
                which = "current" if offset == 0 else "next"
                raise _fail("mix_keys", f"entry {offset} must be the {which} epoch's key ({want})")
            if not isinstance(key, bytes) or not is_valid_mix_public_key(key):
                raise _fail(
                    "mix_keys",
                    f"key for epoch {want} is not a valid Sphinx public key (a 32-byte X25519 "
                    f"or {MIX_PUBLIC_KEY_LEN}-byte compressed P-256 point)",
                )

    @property
    def node_id(self) -> bytes:
        """The id in Sphinx routing commands: the identity key itself."""
        return self.identity_key

    def mix_key(self, epoch: int) -> bytes | None:
        """The Sphinx public key for ``epoch``, or None if this descriptor has none for it."""
        for key_epoch, key in self.mix_keys:
            if key_epoch == epoch:
                return key
        return None

    def covers_epoch(self, epoch: int) -> bool:
        """True when this descriptor carries a mix key for ``epoch`` (usable in its consensus)."""
        return self.mix_key(epoch) is not None

    def to_wire(self) -> list[Any]:
        return [
            self.version,
            self.identity_key,
            self.link_key,
            ROLE_CODES[self.role],
            self.layer,
            self.host,
            self.port,
            self.epoch,
            [[epoch, key] for epoch, key in self.mix_keys],
            self.name,
            *([self.traffic.to_wire()] if self.traffic is not None else []),
        ]

    def encode(self) -> bytes:
        """The canonical body: exactly the bytes that get signed (after the domain prefix)."""
        return pack(self.to_wire())

    @classmethod
    def from_wire(cls, obj: Any) -> NodeDescriptor:
        """Rebuild from the decoded array; every problem is a :class:`DescriptorError`."""
        try:
            if isinstance(obj, list) and len(obj) == 11:
                traffic = TrafficFigures.from_wire(obj[10])
                obj = obj[:10]
            else:
                traffic = None
            items = expect_list(obj, 10, "descriptor")
            version, identity_key, link_key, role, layer, host, port, epoch, keys, name = items
            if version != DESCRIPTOR_VERSION or isinstance(version, bool):
                raise _fail("version", f"unsupported descriptor version {version!r}")
            if not isinstance(role, int) or isinstance(role, bool):
                raise _fail("role", "expected an integer")
            node_role = _ROLE_BY_CODE.get(role)
            if node_role is None:
                raise _fail("role", f"unknown role {role}")
            if not isinstance(keys, list):
                raise _fail("mix_keys", "expected an array")
            mix_keys = tuple(tuple(expect_list(pair, 2, "mix_keys entry")) for pair in keys)
        except DecodeError as exc:
            raise DescriptorError(f"malformed descriptor: {exc}") from None
        return cls(
            identity_key=identity_key,
            link_key=link_key,
            role=node_role,
            layer=layer,
            host=host,
            port=port,
            epoch=epoch,
            mix_keys=mix_keys,  # checked in __post_init__
            name=name,
            version=version,
            traffic=traffic,
        )

    @classmethod
    def decode(cls, body: bytes) -> NodeDescriptor:
        """Parse a canonical body (unsigned). Use :func:`parse_signed_descriptor` for uploads."""
        try:
            obj = unpack_canonical(body, max_bytes=MAX_SIGNED_DESCRIPTOR_BYTES)
        except DecodeError as exc:
            raise DescriptorError(f"malformed descriptor: {exc}") from None
        return cls.from_wire(obj)

    def __repr__(self) -> str:
        return (
            f"NodeDescriptor({self.role.name.lower()} {short_id(self.identity_key)}… "
            f"layer={self.layer} {self.host}:{self.port} epoch={self.epoch} name={self.name!r})"
        )


@dataclass(frozen=True, slots=True)
class SignedDescriptor:
    """A descriptor together with the exact bytes its node signed.

    Obtain one from :func:`parse_signed_descriptor` (which verifies) or
    :func:`make_signed_descriptor` (which signs). ``wire`` is what is uploaded, stored and
    embedded in the consensus: keeping the signed bytes, never re-encoding, means the signature
    stays checkable by anyone downstream.
    """

    descriptor: NodeDescriptor
    body: bytes
    signature: bytes
    wire: bytes

    @property
    def identity_key(self) -> bytes:
        return self.descriptor.identity_key

    def __repr__(self) -> str:
        return f"SignedDescriptor({self.descriptor!r})"


def descriptor_signing_message(body: bytes) -> bytes:
    """What the identity key signs: the domain string, then the canonical body."""
    return DESCRIPTOR_SIGNING_DOMAIN + body


def sign_descriptor(desc: NodeDescriptor, identity_key: IdentityKey) -> bytes:
    """Sign ``desc`` and return its wire form ``[body, signature]``.

    Refuses to sign a descriptor that names another identity key: it would never verify, and
    catching that here gives the operator a clear message instead of a rejected upload.
    """
    if identity_key.public != desc.identity_key:
        raise DescriptorError("identity_key: the signing key is not the descriptor's identity key")
    body = desc.encode()
    signature = identity_key.sign(descriptor_signing_message(body))
    return pack([body, signature])


def make_signed_descriptor(desc: NodeDescriptor, identity_key: IdentityKey) -> SignedDescriptor:
    """:func:`sign_descriptor`, returned in parsed form (handy for nodes and tests)."""
    return parse_signed_descriptor(sign_descriptor(desc, identity_key))


def parse_signed_descriptor(
    data: bytes, *, max_bytes: int = MAX_SIGNED_DESCRIPTOR_BYTES
) -> SignedDescriptor:
    """Decode and verify a signed descriptor.

    Raises :class:`DescriptorError` for anything malformed or invalid (naming the field), and
    :class:`SignatureError` when the signature does not verify under the identity key inside:
    that covers both tampering and a node signing for an identity it does not hold.
    The epoch is *not* checked here; see :func:`check_descriptor_epoch`.
    """
    max_bytes = min(max_bytes, MAX_SIGNED_DESCRIPTOR_BYTES)
    try:
        outer = expect_list(unpack_canonical(data, max_bytes=max_bytes), 2, "signed descriptor")
        body = expect_bytes(outer[0], "descriptor body", max_len=max_bytes)
        signature = expect_bytes(outer[1], "descriptor signature", length=SIGNATURE_LEN)
    except DecodeError as exc:
        raise DescriptorError(f"malformed signed descriptor: {exc}") from None
    desc = NodeDescriptor.decode(body)
    # unpack_canonical already refused non-canonical bytes; this catches any field whose
    # decoded value re-encodes differently (it should be impossible, and must stay so).
    if desc.encode() != body:
        raise DescriptorError("malformed descriptor: body is not in canonical form")
    try:
        verify_signature(desc.identity_key, signature, descriptor_signing_message(body))
    except SignatureError:
        raise SignatureError(
            f"descriptor signature does not verify under identity key {short_id(desc.identity_key)}"
        ) from None
    return SignedDescriptor(descriptor=desc, body=body, signature=signature, wire=bytes(data))


def check_descriptor_epoch(desc: NodeDescriptor, current_epoch: int) -> None:
    """Accept a descriptor made for the current or the next epoch only.

    An authority in epoch ``e`` builds the consensus for ``e + 1``: a descriptor for ``e``
    (keys ``e``, ``e+1``) or for ``e + 1`` (keys ``e+1``, ``e+2``) serves it. Older ones carry
    keys that are about to be, or already are, erased; later ones are premature and could pin
    keys far into the future.
    """
    if not current_epoch <= desc.epoch <= current_epoch + 1:
        raise DescriptorError(
            f"epoch: descriptor is for epoch {desc.epoch}, accepting only the current "
            f"({current_epoch}) or next ({current_epoch + 1})"
        )
