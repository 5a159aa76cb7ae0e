"""The consensus document: the signed list of nodes and parameters for one epoch.

Every directory authority builds the document for an epoch from the signed descriptors it holds
and the network parameters with :func:`build_consensus`, which is a pure, deterministic
function: honest authorities holding the same descriptors produce the same bytes, so their
signatures are over one body and can be merged. A client or node accepts a document when at
least ``threshold`` of the authority keys it was configured with signed it
(:func:`verify_consensus`); fewer than ``threshold`` corrupt authorities cannot forge one.

Wire formats (byte-level description in ``docs/protocol.md`` section 5):

* body: canonical msgpack ``[version, epoch, params.to_wire(), [[layer, signed_descriptor], ...]]``
  with the node entries sorted by ``(layer, identity_key)``;
* an authority's signature: Ed25519 over ``CONSENSUS_SIGNING_DOMAIN + body``;
* signed document: canonical msgpack ``[body, [[authority_key, signature], ...]]``, signatures
  sorted by authority key.

Layer assignment (the one rule every authority must apply identically): providers get layer 0;
mixes are sorted by ``SHA-256(LAYER_ASSIGNMENT_DOMAIN || epoch as 8 bytes big-endian ||
identity_key)`` and dealt round-robin into layers ``1..params.layers``, so layer sizes differ by
at most one and every layer is non-empty once there are at least ``layers`` mixes. The layer a
mix *requested* in its descriptor is ignored: letting operators choose would let one operator
with many nodes pack a whole layer. Including the epoch reshuffles the layers every epoch.

**Why one module of ~620 lines:** building and verifying the document are one contract
(build_consensus must produce exactly the bytes verify_consensus checks); they are kept side by
side with the codec so a change to one is seen against the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mixcore.descriptor import (
    MAX_SIGNED_DESCRIPTOR_BYTES,
    NodeDescriptor,
    SignedDescriptor,
    parse_signed_descriptor,
)
from mixcore.encoding import (
    MAX_DOCUMENT_BYTES,
    expect_bytes,
    expect_int,
    expect_list,
    pack,
    unpack_canonical,
)
from mixcore.errors import (
    ConsensusError,
    DecodeError,
    DescriptorError,
    ParamsError,
    SignatureError,
)
from mixcore.keys import PUBLIC_KEY_LEN, SIGNATURE_LEN, IdentityKey, short_id, signature_valid
from mixcore.params import MAX_LAYERS, NetworkParams
from mixcore.sphinx import is_valid_mix_public_key
from mixcore.topology import NodeRole

CONSENSUS_VERSION = 1

#: Prefix of every authority signature, separating it from descriptor signatures and anything
#: else an Ed25519 key might sign.
CONSENSUS_SIGNING_DOMAIN = b"mixnet-consensus-v1\x00"

#: Prefix of the hash that orders mixes for layer assignment.
LAYER_ASSIGNMENT_DOMAIN = b"mixnet-layer-v1\x00"

#: Largest epoch number a consensus may be for (a descriptor's "next" epoch reaches it).
MAX_CONSENSUS_EPOCH = (1 << 32) - 1

#: Nodes per document. A signed descriptor is at most 522 bytes given its field limits, so this
#: many nodes always fit in :data:`MAX_CONSENSUS_BODY_BYTES` (a test checks the arithmetic).
MAX_NODES = 1024

#: Authority keys a client may be configured with.
MAX_AUTHORITIES = 32

#: Signature entries a signed document may carry (room for unknown or retired authorities).
MAX_SIGNATURES = 64

# One [key, signature] entry: fixarray header + bin8 header + 32 bytes + bin8 header + 64 bytes.
_SIGNATURE_ENTRY_BYTES = 1 + (2 + PUBLIC_KEY_LEN) + (2 + SIGNATURE_LEN)
# Outer array header, bin32 header of the body, array16 header of the signature list.
_SIGNED_OVERHEAD_BYTES = 1 + 5 + 3

#: Bound on the body, chosen so the signed document with MAX_SIGNATURES entries stays within
#: :data:`mixcore.encoding.MAX_DOCUMENT_BYTES`.
MAX_CONSENSUS_BODY_BYTES = (
    MAX_DOCUMENT_BYTES - _SIGNED_OVERHEAD_BYTES - MAX_SIGNATURES * _SIGNATURE_ENTRY_BYTES
)


class MalformedConsensus(ConsensusError):
    """The document does not decode, or breaks an invariant (order, layers, descriptors)."""


class ConsensusThresholdError(ConsensusError):
    """Too few valid signatures from the configured authorities."""

    def __init__(self, valid: int, threshold: int) -> None:
        super().__init__(
            f"{valid} valid signature{'s' if valid != 1 else ''} from configured authorities, "
            f"need {threshold}"
        )
        self.valid = valid
        self.threshold = threshold


class ConsensusEpochError(ConsensusError):
    """A well-signed document for an epoch other than the one the caller asked for."""

    def __init__(self, epoch: int, expected: int) -> None:
        super().__init__(f"consensus is for epoch {epoch}, expected epoch {expected}")
        self.epoch = epoch
        self.expected = expected


@dataclass(frozen=True, slots=True)
class ConsensusEntry:
    """One node in the document: the layer the authorities assigned, and its signed descriptor."""

    layer: int
    signed: SignedDescriptor

    @property
    def descriptor(self) -> NodeDescriptor:
        return self.signed.descriptor

    @property
    def identity_key(self) -> bytes:
        return self.signed.descriptor.identity_key

    def sort_key(self) -> tuple[int, bytes]:
        return (self.layer, self.identity_key)


@dataclass(frozen=True, slots=True)
class ConsensusDocument:
    """The unsigned document for one epoch. Construct, then trust: invariants are checked.

    The embedded :class:`SignedDescriptor` objects are trusted to be verified; they are when they
    come from :func:`build_consensus`, :meth:`decode` or :func:`verify_consensus`.
    """

    epoch: int
    params: NetworkParams
    nodes: tuple[ConsensusEntry, ...]
    version: int = CONSENSUS_VERSION
    _by_id: dict[bytes, ConsensusEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.version != CONSENSUS_VERSION or isinstance(self.version, bool):
            raise MalformedConsensus(f"version: unsupported consensus version {self.version!r}")
        if (
            isinstance(self.epoch, bool)
            or not isinstance(self.epoch, int)
            or not 0 <= self.epoch <= MAX_CONSENSUS_EPOCH
        ):
            raise MalformedConsensus(f"epoch: expected an integer in [0, {MAX_CONSENSUS_EPOCH}]")
        if not isinstance(self.params, NetworkParams):
            raise MalformedConsensus("params: expected NetworkParams")
        nodes = tuple(self.nodes)
        object.__setattr__(self, "nodes", nodes)
        if len(nodes) > MAX_NODES:
            raise MalformedConsensus(f"nodes: {len(nodes)} nodes, limit {MAX_NODES}")
        by_id: dict[bytes, ConsensusEntry] = {}
        previous: tuple[int, bytes] | None = None
        for entry in nodes:
            if not isinstance(entry, ConsensusEntry):
                raise MalformedConsensus("nodes: expected ConsensusEntry items")
            desc = entry.descriptor
            who = f"node {short_id(desc.identity_key)}"
            if isinstance(entry.layer, bool) or not isinstance(entry.layer, int):
                raise MalformedConsensus(f"{who}: layer must be an integer")
            if desc.role is NodeRole.PROVIDER:
                if entry.layer != 0:
                    raise MalformedConsensus(f"{who}: a provider must be in layer 0")
            elif not 1 <= entry.layer <= self.params.layers:
                raise MalformedConsensus(
                    f"{who}: a mix must be in a layer 1..{self.params.layers}, not {entry.layer}"
                )
            if not desc.covers_epoch(self.epoch):
                raise MalformedConsensus(f"{who}: descriptor has no mix key for epoch {self.epoch}")
            suite = self.params.sphinx_suite
            if not is_valid_mix_public_key(desc.mix_key(self.epoch) or b"", suite):
                raise MalformedConsensus(f"{who}: mix key for epoch {self.epoch} is not {suite}")
            key = entry.sort_key()
            if previous is not None and key <= previous:
                raise MalformedConsensus("nodes: not sorted by (layer, identity key)")
            previous = key
            if desc.identity_key in by_id:
                raise MalformedConsensus(f"{who}: listed twice")
            by_id[desc.identity_key] = entry
        object.__setattr__(self, "_by_id", by_id)

    # -- accessors ------------------------------------------------------------------------

    def providers(self) -> tuple[NodeDescriptor, ...]:
        """Provider descriptors, ordered by identity key."""
        return tuple(e.descriptor for e in self.nodes if e.layer == 0)

    def mixes_in_layer(self, layer: int) -> tuple[NodeDescriptor, ...]:
        """Mix descriptors assigned to ``layer`` (1..params.layers), ordered by identity key."""
        if not 1 <= layer <= self.params.layers:
            raise ValueError(f"layer must be between 1 and {self.params.layers}, got {layer}")
        return tuple(e.descriptor for e in self.nodes if e.layer == layer)

    def node_by_id(self, identity_key: bytes) -> NodeDescriptor | None:
        """The descriptor of the node with this identity key (its routing id), if listed."""
        entry = self._by_id.get(identity_key)
        return entry.descriptor if entry is not None else None

    def layer_of(self, identity_key: bytes) -> int | None:
        """The assigned layer of a listed node (0 for providers), or None."""
        entry = self._by_id.get(identity_key)
        return entry.layer if entry is not None else None

    def empty_layers(self) -> tuple[int, ...]:
        """Mix layers without any node: a document with any cannot route packets."""
        used = {e.layer for e in self.nodes}
        return tuple(i for i in range(1, self.params.layers + 1) if i not in used)

    # -- encoding -------------------------------------------------------------------------

    def to_wire(self) -> list[Any]:
        return [
            self.version,
            self.epoch,
            self.params.to_wire(),
            [[e.layer, e.signed.wire] for e in self.nodes],
        ]

    def encode(self) -> bytes:
        """The canonical body that authorities sign."""
        body = pack(self.to_wire())
        if len(body) > MAX_CONSENSUS_BODY_BYTES:
            raise ConsensusError(
                f"consensus body is {len(body)} bytes, limit {MAX_CONSENSUS_BODY_BYTES}"
            )
        return body

    def digest(self) -> bytes:
        """SHA-256 of the body: a short name for comparing documents between authorities."""
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, body: bytes) -> ConsensusDocument:
        """Parse a body, verifying every embedded descriptor's own signature and the invariants.

        Raises only :class:`MalformedConsensus` (a :class:`ConsensusError`).
        """
        try:
            obj = unpack_canonical(body, max_bytes=MAX_CONSENSUS_BODY_BYTES)
        except DecodeError as exc:
            raise MalformedConsensus(f"malformed consensus body: {exc}") from None
        doc = cls._from_wire(obj)
        if doc.encode() != body:
            raise MalformedConsensus("consensus body is not in canonical form")
        return doc

    @classmethod
    def _from_wire(cls, obj: Any) -> ConsensusDocument:
        try:
            version, epoch, params_wire, nodes_wire = expect_list(obj, 4, "consensus")
            expect_int(version, "consensus version", lo=CONSENSUS_VERSION, hi=CONSENSUS_VERSION)
            expect_int(epoch, "consensus epoch", lo=0, hi=MAX_CONSENSUS_EPOCH)
            params = NetworkParams.from_wire(params_wire)
            if not isinstance(nodes_wire, list) or len(nodes_wire) > MAX_NODES:
                raise DecodeError(f"nodes: expected an array of at most {MAX_NODES} entries")
            entries = []
            for index, item in enumerate(nodes_wire):
                layer_raw, wire = expect_list(item, 2, f"node entry {index}")
                layer = expect_int(layer_raw, f"node entry {index} layer", lo=0, hi=MAX_LAYERS)
                wire = expect_bytes(
                    wire, f"node entry {index} descriptor", max_len=MAX_SIGNED_DESCRIPTOR_BYTES
                )
                try:
                    signed = parse_signed_descriptor(wire)
                except (DescriptorError, SignatureError) as exc:
                    raise DecodeError(f"node entry {index}: {exc}") from None
                entries.append(ConsensusEntry(layer=layer, signed=signed))
        except DecodeError as exc:
            raise MalformedConsensus(f"malformed consensus body: {exc}") from None
        return cls(epoch=epoch, params=params, nodes=tuple(entries), version=version)

    def __repr__(self) -> str:
        layers = [len(self.mixes_in_layer(i)) for i in range(1, self.params.layers + 1)]
        return (
            f"ConsensusDocument(epoch={self.epoch}, providers={len(self.providers())}, "
            f"mixes per layer={layers})"
        )


# -- building -------------------------------------------------------------------------------


def layer_sort_key(epoch: int, identity_key: bytes) -> bytes:
    """The hash that orders mixes before they are dealt into layers (see the module docs)."""
    return hashlib.sha256(
        LAYER_ASSIGNMENT_DOMAIN + epoch.to_bytes(8, "big") + identity_key
    ).digest()


def build_consensus(
    epoch: int,
    params: NetworkParams,
    signed_descriptors: Iterable[SignedDescriptor | bytes],
) -> ConsensusDocument:
    """Build the document for ``epoch`` deterministically from signed descriptors.

    Each input is (re-)parsed from its wire bytes, so its signature is verified here whatever
    the caller did; a malformed or forged one raises :class:`DescriptorError` /
    :class:`SignatureError` (the registry should only hold verified descriptors). Descriptors
    without a mix key for ``epoch`` are skipped. When several descriptors share an identity
    key, the one made for the latest epoch wins, ties going to the smallest wire bytes, so the
    choice depends only on the set, not on its order. Layers: see the module docstring.
    Raises :class:`ConsensusError` if more than :data:`MAX_NODES` nodes qualify.
    """
    if (
        isinstance(epoch, bool)
        or not isinstance(epoch, int)
        or not 0 <= epoch <= MAX_CONSENSUS_EPOCH
    ):
        raise ConsensusError(f"epoch: expected an integer in [0, {MAX_CONSENSUS_EPOCH}]")
    chosen: dict[bytes, SignedDescriptor] = {}
    for item in signed_descriptors:
        wire = item.wire if isinstance(item, SignedDescriptor) else item
        signed = parse_signed_descriptor(wire)
        desc = signed.descriptor
        if not desc.covers_epoch(epoch):
            continue
        if not is_valid_mix_public_key(desc.mix_key(epoch) or b"", params.sphinx_suite):
            continue  # a node running another Sphinx suite cannot serve this network
        current = chosen.get(desc.identity_key)
        if current is None or (-desc.epoch, signed.wire) < (
            -current.descriptor.epoch,
            current.wire,
        ):
            chosen[desc.identity_key] = signed
    if len(chosen) > MAX_NODES:
        raise ConsensusError(f"{len(chosen)} nodes qualify for epoch {epoch}, limit {MAX_NODES}")
    entries: list[ConsensusEntry] = []
    mixes: list[SignedDescriptor] = []
    for signed in chosen.values():
        if signed.descriptor.role is NodeRole.PROVIDER:
            entries.append(ConsensusEntry(layer=0, signed=signed))
        else:
            mixes.append(signed)
    mixes.sort(key=lambda s: (layer_sort_key(epoch, s.identity_key), s.identity_key))
    for position, signed in enumerate(mixes):
        entries.append(ConsensusEntry(layer=position % params.layers + 1, signed=signed))
    entries.sort(key=ConsensusEntry.sort_key)
    doc = ConsensusDocument(epoch=epoch, params=params, nodes=tuple(entries))
    doc.encode()  # fail here, not at signing time, if the size bound is exceeded
    return doc


# -- signatures -----------------------------------------------------------------------------

Signature = tuple[bytes, bytes]
"""An ``(authority_public_key, signature)`` pair."""


def consensus_signing_message(body: bytes) -> bytes:
    """What an authority signs: the domain string, then the canonical body."""
    return CONSENSUS_SIGNING_DOMAIN + body


def _body_of(body_or_doc: ConsensusDocument | bytes) -> bytes:
    if isinstance(body_or_doc, ConsensusDocument):
        return body_or_doc.encode()
    if not isinstance(body_or_doc, bytes):
        raise ConsensusError("expected a ConsensusDocument or its body bytes")
    return body_or_doc


def sign_document(body_or_doc: ConsensusDocument | bytes, identity_key: IdentityKey) -> Signature:
    """One authority's signature over a document: ``(its public key, signature)``."""
    body = _body_of(body_or_doc)
    return identity_key.public, identity_key.sign(consensus_signing_message(body))


def _check_signature_shape(pair: Any) -> Signature:
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or not isinstance(pair[0], bytes)
        or not isinstance(pair[1], bytes)
        or len(pair[0]) != PUBLIC_KEY_LEN
        or len(pair[1]) != SIGNATURE_LEN
    ):
        raise ConsensusError(
            f"a signature entry must be ({PUBLIC_KEY_LEN}-byte key, {SIGNATURE_LEN}-byte signature)"
        )
    return pair[0], pair[1]


def merge_signatures(
    body_or_doc: ConsensusDocument | bytes, *signature_sets: Iterable[Signature]
) -> tuple[Signature, ...]:
    """Union of several authorities' signature sets for one body, keeping only valid ones.

    What the directory does after exchanging votes: feed it its own signature and every
    peer's, get back at most one valid signature per key, sorted by key, ready for
    :func:`assemble_signed_document`. Signatures over another body, malformed entries and
    duplicates are dropped silently (a peer's junk must not spoil the merge). Which keys to
    trust is the verifier's business, so keys are not filtered here.
    """
    body = _body_of(body_or_doc)
    message = consensus_signing_message(body)
    merged: dict[bytes, bytes] = {}
    for signature_set in signature_sets:
        for pair in signature_set:
            try:
                key, sig = _check_signature_shape(pair)
            except ConsensusError:
                continue
            if key in merged and merged[key] <= sig:
                continue
            if signature_valid(key, sig, message):
                merged[key] = sig
    return tuple(sorted(merged.items()))


def assemble_signed_document(
    body_or_doc: ConsensusDocument | bytes, signatures: Iterable[Signature]
) -> bytes:
    """The signed wire form ``[body, [[key, signature], ...]]``, signatures sorted by key.

    Checks shapes, not validity (use :func:`merge_signatures` for that): exact duplicates are
    dropped, two different signatures from one key are refused, as are more than
    :data:`MAX_SIGNATURES` entries.
    """
    body = _body_of(body_or_doc)
    if len(body) > MAX_CONSENSUS_BODY_BYTES:
        raise ConsensusError(
            f"consensus body is {len(body)} bytes, limit {MAX_CONSENSUS_BODY_BYTES}"
        )
    by_key: dict[bytes, bytes] = {}
    for pair in signatures:
        key, sig = _check_signature_shape(pair)
        if by_key.get(key, sig) != sig:
            raise ConsensusError(f"two different signatures from authority {short_id(key)}")
        by_key[key] = sig
    if len(by_key) > MAX_SIGNATURES:
        raise ConsensusError(f"{len(by_key)} signatures, limit {MAX_SIGNATURES}")
    return pack([body, [[key, sig] for key, sig in sorted(by_key.items())]])


def split_signed_document(data: bytes) -> tuple[bytes, tuple[Signature, ...]]:
    """Decode the signed wire form into its body and signature entries, verifying nothing.

    Entries come back in wire order, duplicates included; the directory uses this to pick up
    a peer's signatures, :func:`verify_consensus` to count them.
    """
    try:
        body_raw, sigs_raw = expect_list(
            unpack_canonical(data, max_bytes=MAX_DOCUMENT_BYTES), 2, "signed consensus"
        )
        body = expect_bytes(body_raw, "consensus body", max_len=MAX_CONSENSUS_BODY_BYTES)
        if not isinstance(sigs_raw, list) or len(sigs_raw) > MAX_SIGNATURES:
            raise DecodeError(f"signatures: expected an array of at most {MAX_SIGNATURES}")
        signatures = []
        for index, item in enumerate(sigs_raw):
            key, sig = expect_list(item, 2, f"signature {index}")
            key = expect_bytes(key, f"signature {index} key", length=PUBLIC_KEY_LEN)
            sig = expect_bytes(sig, f"signature {index} value", length=SIGNATURE_LEN)
            signatures.append((key, sig))
    except DecodeError as exc:
        raise MalformedConsensus(f"malformed signed consensus: {exc}") from None
    return body, tuple(signatures)


# -- verification ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthoritySet:
    """The directory authorities a client or node trusts, and how many must sign.

    The threshold must be a strict majority of the keys: with less, two disjoint groups of
    authorities could each sign a different document for the same epoch, and clients would
    split between them. Keys are kept sorted so equal sets compare equal.
    """

    keys: tuple[bytes, ...]
    threshold: int

    def __post_init__(self) -> None:
        keys = tuple(self.keys)
        if not keys:
            raise ParamsError("authorities", "at least one authority key is needed")
        if len(keys) > MAX_AUTHORITIES:
            raise ParamsError("authorities", f"at most {MAX_AUTHORITIES} authority keys")
        for key in keys:
            if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_LEN:
                raise ParamsError("authorities", f"each key must be {PUBLIC_KEY_LEN} bytes")
        if len(set(keys)) != len(keys):
            raise ParamsError("authorities", "the same authority key is listed twice")
        object.__setattr__(self, "keys", tuple(sorted(keys)))
        n, t = len(keys), self.threshold
        if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= n:
            raise ParamsError("threshold", f"must be an integer between 1 and {n}, got {t!r}")
        if 2 * t <= n:
            raise ParamsError(
                "threshold",
                f"{t} of {n} is not a majority; two disjoint groups could sign conflicting "
                f"documents (use at least {n // 2 + 1})",
            )

    @classmethod
    def majority(cls, keys: Iterable[bytes]) -> AuthoritySet:
        """The default: threshold ``n // 2 + 1``."""
        keys = tuple(keys)
        return cls(keys=keys, threshold=len(keys) // 2 + 1)

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True)
class AuthorityRef:
    """How a node or client names one authority it trusts: its URL and identity key."""

    url: str
    identity_key: bytes

    @classmethod
    def parse(cls, text: str) -> AuthorityRef:
        """From ``KEYHEX@http://HOST:PORT``; ``ValueError`` otherwise."""
        url, key = parse_authority_spec(text)
        return cls(url, key)

    def to_json(self) -> dict[str, str]:
        return {"url": self.url, "identity_key": self.identity_key.hex()}

    @classmethod
    def from_json(cls, data: Any) -> AuthorityRef:
        """From a config file's ``{"url", "identity_key"}``; KeyError/TypeError/ValueError."""
        return cls(str(data["url"]), bytes.fromhex(data["identity_key"]))


def parse_authority_spec(text: str) -> tuple[str, bytes]:
    """``KEYHEX@http(s)://HOST:PORT`` (how operators and users name an authority) ->
    ``(url, identity key)``; ``ValueError`` with the expected form otherwise."""
    key_hex, sep, url = text.partition("@")
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        key = b""
    if not sep or len(key) != PUBLIC_KEY_LEN or not url.startswith(("http://", "https://")):
        raise ValueError("expected KEYHEX@http://HOST:PORT (a 64-hex-digit authority key)")
    return url, key


@dataclass(frozen=True, slots=True)
class VerifiedConsensus:
    """A document that passed :func:`verify_consensus`, with who vouched for it."""

    document: ConsensusDocument
    body: bytes
    signers: tuple[bytes, ...]
    """Configured authority keys with a valid signature, sorted."""
    signatures: tuple[Signature, ...]
    """Their signatures, sorted by key (for re-serving or merging)."""

    @property
    def epoch(self) -> int:
        return self.document.epoch

    def __repr__(self) -> str:
        return f"VerifiedConsensus({self.document!r}, signers={len(self.signers)})"


def count_valid_signatures(
    body: bytes, signatures: Iterable[Signature], authorities: AuthoritySet
) -> tuple[Signature, ...]:
    """The valid signatures of distinct configured authorities, sorted by key.

    Unknown keys and invalid signatures are skipped; an authority appearing several times is
    counted once (its first valid entry).
    """
    message = consensus_signing_message(body)
    valid: dict[bytes, bytes] = {}
    for key, sig in signatures:
        if key in valid or key not in authorities:
            continue
        if signature_valid(key, sig, message):
            valid[key] = sig
    return tuple(sorted(valid.items()))


def verify_consensus(
    data: bytes, authorities: AuthoritySet, *, expected_epoch: int | None = None
) -> VerifiedConsensus:
    """Accept a signed document only with ``authorities.threshold`` valid signatures.

    Order of checks, cheapest first: shape and size; signatures (at most
    :data:`MAX_SIGNATURES` Ed25519 verifications) against the threshold, raising
    :class:`ConsensusThresholdError`; then the body with every embedded descriptor's signature
    and the layer invariants (:class:`MalformedConsensus`); then the epoch
    (:class:`ConsensusEpochError`). Every failure is a :class:`ConsensusError`.
    """
    body, signatures = split_signed_document(data)
    valid = count_valid_signatures(body, signatures, authorities)
    if len(valid) < authorities.threshold:
        raise ConsensusThresholdError(len(valid), authorities.threshold)
    document = ConsensusDocument.decode(body)
    if expected_epoch is not None and document.epoch != expected_epoch:
        raise ConsensusEpochError(document.epoch, expected_epoch)
    return VerifiedConsensus(
        document=document,
        body=body,
        signers=tuple(key for key, _ in valid),
        signatures=valid,
    )
