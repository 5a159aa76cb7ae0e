"""The consensus document: deterministic building, threshold verification, invariants, fuzzing."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixcore import consensus
from mixcore.consensus import (
    CONSENSUS_SIGNING_DOMAIN,
    MAX_CONSENSUS_BODY_BYTES,
    MAX_NODES,
    MAX_SIGNATURES,
    AuthoritySet,
    ConsensusDocument,
    ConsensusEntry,
    ConsensusEpochError,
    ConsensusThresholdError,
    MalformedConsensus,
    VerifiedConsensus,
    assemble_signed_document,
    build_consensus,
    layer_sort_key,
    merge_signatures,
    sign_document,
    split_signed_document,
    verify_consensus,
)
from mixcore.descriptor import (
    DESCRIPTOR_SIGNING_DOMAIN,
    MAX_HOST_LEN,
    MAX_NAME_LEN,
    NodeDescriptor,
    SignedDescriptor,
    make_signed_descriptor,
    parse_signed_descriptor,
)
from mixcore.encoding import MAX_DOCUMENT_BYTES, pack
from mixcore.errors import (
    ConsensusError,
    DescriptorError,
    MixnetError,
    ParamsError,
    SignatureError,
)
from mixcore.keys import IdentityKey, LinkKey
from mixcore.params import SPHINX_SUITE_V1, NetworkParams
from mixcore.sphinx import MixPrivateKey
from mixcore.topology import NodeRole

EPOCH = 500
PARAMS = NetworkParams(layers=3, epoch_length=10.0, mean_hop_delay=0.1)


def mix_public_key() -> bytes:
    """A mix key of the network's suite (v2: X25519)."""
    return MixPrivateKey.generate(PARAMS.sphinx_suite).public


def p256_mix_public_key() -> bytes:
    """A suite-v1 mix key (compressed P-256), made by another library than ours."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


@dataclasses.dataclass(frozen=True)
class Node:
    identity: IdentityKey
    role: NodeRole
    index: int

    def signed(self, epoch: int = EPOCH, **changes: Any) -> SignedDescriptor:
        fields: dict[str, Any] = {
            "identity_key": self.identity.public,
            "link_key": LINK_KEYS[self.index],
            "role": self.role,
            "layer": 0 if self.role is NodeRole.PROVIDER else 1,
            "host": f"10.0.0.{self.index + 1}",
            "port": 2000 + self.index,
            "epoch": epoch,
            "mix_keys": ((epoch, MIX_KEY_POOL[0]), (epoch + 1, MIX_KEY_POOL[1])),
            "name": f"node{self.index}",
        }
        fields.update(changes)
        return make_signed_descriptor(NodeDescriptor(**fields), self.identity)


MIX_KEY_POOL = [mix_public_key() for _ in range(2)]
LINK_KEYS = [LinkKey.generate().public for _ in range(20)]
MIXES = [Node(IdentityKey.generate(), NodeRole.MIX, i) for i in range(10)]
PROVIDERS = [Node(IdentityKey.generate(), NodeRole.PROVIDER, 10 + i) for i in range(3)]
MIX_DESCS = [n.signed() for n in MIXES]
PROVIDER_DESCS = [n.signed() for n in PROVIDERS]
ALL_DESCS = MIX_DESCS + PROVIDER_DESCS
AUTHORITIES = [IdentityKey.generate() for _ in range(5)]
OUTSIDER = IdentityKey.generate()


def small_doc(epoch: int = EPOCH) -> ConsensusDocument:
    return build_consensus(epoch, PARAMS, ALL_DESCS)


def signed_by(body: bytes, signers: list[IdentityKey]) -> bytes:
    return assemble_signed_document(body, [sign_document(body, k) for k in signers])


def authority_set(n: int, k: int) -> AuthoritySet:
    return AuthoritySet(keys=tuple(a.public for a in AUTHORITIES[:n]), threshold=k)


# -- round trip and layout ---------------------------------------------------------------------


def test_document_round_trip() -> None:
    doc = small_doc()
    body = doc.encode()
    assert ConsensusDocument.decode(body) == doc
    data = signed_by(body, AUTHORITIES[:3])
    verified = verify_consensus(data, authority_set(3, 2), expected_epoch=EPOCH)
    assert isinstance(verified, VerifiedConsensus)
    assert verified.document == doc
    assert verified.body == body
    assert verified.epoch == EPOCH
    assert verified.signers == tuple(sorted(a.public for a in AUTHORITIES[:3]))
    assert [key for key, _ in verified.signatures] == list(verified.signers)
    assert assemble_signed_document(body, verified.signatures) == data


def test_body_layout_is_the_documented_array() -> None:
    doc = small_doc()
    version, epoch, params, nodes = msgpack.unpackb(doc.encode())
    assert (version, epoch) == (1, EPOCH)
    assert NetworkParams.from_wire(params) == PARAMS
    assert len(nodes) == len(ALL_DESCS)
    wires = {d.wire for d in ALL_DESCS}
    for layer, wire in nodes:
        assert wire in wires
        assert parse_signed_descriptor(wire).descriptor.role is (
            NodeRole.PROVIDER if layer == 0 else NodeRole.MIX
        )
    keys = [(layer, parse_signed_descriptor(w).identity_key) for layer, w in nodes]
    assert keys == sorted(keys)


def test_signed_layout_and_sorted_signatures() -> None:
    body = small_doc().encode()
    data = signed_by(body, list(reversed(AUTHORITIES)))
    outer_body, sigs = msgpack.unpackb(data)
    assert outer_body == body
    assert [k for k, _ in sigs] == sorted(a.public for a in AUTHORITIES)
    assert split_signed_document(data) == (body, tuple((k, s) for k, s in sigs))


def test_sign_document_accepts_doc_or_body() -> None:
    doc = small_doc()
    assert sign_document(doc, AUTHORITIES[0]) == sign_document(doc.encode(), AUTHORITIES[0])
    key, sig = sign_document(doc, AUTHORITIES[0])
    assert key == AUTHORITIES[0].public
    assert AUTHORITIES[0].sign(CONSENSUS_SIGNING_DOMAIN + doc.encode()) == sig


def test_accessors() -> None:
    doc = small_doc()
    assert {d.identity_key for d in doc.providers()} == {n.identity.public for n in PROVIDERS}
    all_mixes = [d for layer in (1, 2, 3) for d in doc.mixes_in_layer(layer)]
    assert sorted(d.identity_key for d in all_mixes) == sorted(n.identity.public for n in MIXES)
    for layer in (1, 2, 3):
        for d in doc.mixes_in_layer(layer):
            assert doc.layer_of(d.identity_key) == layer
            assert doc.node_by_id(d.identity_key) == d
    assert doc.layer_of(PROVIDERS[0].identity.public) == 0
    assert doc.node_by_id(OUTSIDER.public) is None
    assert doc.layer_of(OUTSIDER.public) is None
    assert doc.empty_layers() == ()
    with pytest.raises(ValueError, match="layer"):
        doc.mixes_in_layer(0)
    with pytest.raises(ValueError, match="layer"):
        doc.mixes_in_layer(4)
    assert "epoch=500" in repr(doc)
    assert len(doc.digest()) == 32


# -- building: determinism, filtering, layers ----------------------------------------------------


def test_build_is_deterministic_under_permutation() -> None:
    expected = small_doc().encode()
    rng = random.Random(7)
    for _ in range(10):
        items: list[SignedDescriptor | bytes] = list(ALL_DESCS)
        items += [d.wire for d in rng.sample(ALL_DESCS, 4)]  # duplicates, some as raw bytes
        rng.shuffle(items)
        assert build_consensus(EPOCH, PARAMS, items).encode() == expected


def test_independent_authorities_produce_mergeable_signatures() -> None:
    """Two authorities build independently, sign, exchange, merge: one valid document."""
    rng = random.Random(3)
    views = []
    for authority in AUTHORITIES[:3]:
        items = list(ALL_DESCS)
        rng.shuffle(items)
        doc = build_consensus(EPOCH, PARAMS, items)
        views.append((doc.encode(), sign_document(doc, authority)))
    bodies = {body for body, _ in views}
    assert len(bodies) == 1
    body = bodies.pop()
    merged = merge_signatures(body, *[[sig] for _, sig in views])
    data = assemble_signed_document(body, merged)
    assert len(verify_consensus(data, authority_set(3, 3)).signers) == 3


def test_layers_are_balanced_and_non_empty() -> None:
    for layers in (1, 2, 3, 5):
        params = PARAMS.replace(layers=layers)
        for count in range(layers, len(MIXES) + 1):
            doc = build_consensus(EPOCH, params, MIX_DESCS[:count] + PROVIDER_DESCS)
            sizes = [len(doc.mixes_in_layer(i)) for i in range(1, layers + 1)]
            assert min(sizes) >= 1, (layers, count, sizes)
            assert max(sizes) - min(sizes) <= 1
            assert sum(sizes) == count
            assert doc.empty_layers() == ()


def test_too_few_mixes_leaves_layers_empty_but_builds() -> None:
    doc = build_consensus(EPOCH, PARAMS, MIX_DESCS[:2] + PROVIDER_DESCS)
    assert doc.empty_layers() == (3,)


def test_requested_layers_are_ignored_and_assignment_follows_the_hash() -> None:
    greedy = [n.signed(layer=1) for n in MIXES[:6]]
    doc = build_consensus(EPOCH, PARAMS, greedy)
    assert [len(doc.mixes_in_layer(i)) for i in (1, 2, 3)] == [2, 2, 2]
    order = sorted(MIXES[:6], key=lambda n: layer_sort_key(EPOCH, n.identity.public))
    for position, node in enumerate(order):
        assert doc.layer_of(node.identity.public) == position % 3 + 1


def test_layers_reshuffle_between_epochs() -> None:
    a = small_doc(EPOCH)
    b = build_consensus(EPOCH + 1, PARAMS, ALL_DESCS)
    assert [e.identity_key for e in a.nodes] != [e.identity_key for e in b.nodes]


def test_only_descriptors_covering_the_epoch_are_included() -> None:
    previous = MIXES[0].signed(epoch=EPOCH - 1)  # keys EPOCH-1, EPOCH: included
    too_new = MIXES[1].signed(epoch=EPOCH + 1)  # keys EPOCH+1, EPOCH+2: not yet
    too_old = MIXES[2].signed(epoch=EPOCH - 2)  # keys EPOCH-2, EPOCH-1: expired
    doc = build_consensus(EPOCH, PARAMS, [previous, too_new, too_old, *PROVIDER_DESCS])
    assert doc.node_by_id(MIXES[0].identity.public) == previous.descriptor
    assert doc.node_by_id(MIXES[1].identity.public) is None
    assert doc.node_by_id(MIXES[2].identity.public) is None


def test_duplicate_identity_keeps_the_newest_then_smallest() -> None:
    node = MIXES[0]
    older = node.signed(epoch=EPOCH - 1)
    newer = node.signed(epoch=EPOCH)
    for items in ([older, newer], [newer, older]):
        doc = build_consensus(EPOCH, PARAMS, items)
        assert doc.node_by_id(node.identity.public) == newer.descriptor
        assert len(doc.nodes) == 1
    a, b = node.signed(port=3000), node.signed(port=3001)
    winner = min((a, b), key=lambda s: s.wire)
    assert build_consensus(EPOCH, PARAMS, [a, b]) == build_consensus(EPOCH, PARAMS, [b, a])
    assert build_consensus(EPOCH, PARAMS, [b, a]).node_by_id(node.identity.public) == (
        winner.descriptor
    )


def test_build_reverifies_descriptor_signatures() -> None:
    good = MIX_DESCS[0]
    forged = dataclasses.replace(good, wire=pack([good.body, bytes(64)]))
    with pytest.raises(SignatureError):
        build_consensus(EPOCH, PARAMS, [forged])
    with pytest.raises(DescriptorError):
        build_consensus(EPOCH, PARAMS, [b"junk"])


def test_build_refuses_too_many_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consensus, "MAX_NODES", 4)
    with pytest.raises(ConsensusError, match="limit 4"):
        build_consensus(EPOCH, PARAMS, ALL_DESCS)


def test_size_bounds_are_coherent() -> None:
    """MAX_NODES maximal descriptors fit the body bound; a maximal body with MAX_SIGNATURES
    signatures fits the document bound."""
    host = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(host) == MAX_HOST_LEN
    epoch = (1 << 32) - 2
    big = MIXES[0].signed(epoch=epoch, host=host, name="x" * MAX_NAME_LEN, port=65535, layer=8)
    entry_bytes = len(pack([8, big.wire]))
    assert 16 + MAX_NODES * entry_bytes + 300 <= MAX_CONSENSUS_BODY_BYTES
    body = bytes(MAX_CONSENSUS_BODY_BYTES)
    sigs = [(bytes([i]) * 32, bytes(64)) for i in range(MAX_SIGNATURES)]
    assert len(assemble_signed_document(body, sigs)) <= MAX_DOCUMENT_BYTES


# -- document invariants ----------------------------------------------------------------------


def _entries(doc: ConsensusDocument) -> list[ConsensusEntry]:
    return list(doc.nodes)


def _raw_body(entries: list[tuple[int, bytes]], epoch: int = EPOCH) -> bytes:
    return pack([1, epoch, PARAMS.to_wire(), [[layer, wire] for layer, wire in entries]])


def _wire_entries(doc: ConsensusDocument) -> list[tuple[int, bytes]]:
    return [(e.layer, e.signed.wire) for e in doc.nodes]


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(
            lambda es: [(1 if i == 0 else layer, w) for i, (layer, w) in enumerate(es)],
            id="provider-in-mix-layer",
        ),
        pytest.param(
            lambda es: [(0 if i == len(es) - 1 else layer, w) for i, (layer, w) in enumerate(es)],
            id="mix-in-layer-0",
        ),
        pytest.param(lambda es: [*es[:-1], (4, es[-1][1])], id="mix-beyond-last-layer"),
        pytest.param(lambda es: list(reversed(es)), id="unsorted"),
        pytest.param(lambda es: [*es, es[-1]], id="duplicate-entry"),
        pytest.param(
            lambda es: [*es[:-1], (es[-1][0], pack([b"x", bytes(64)]))], id="garbage-descriptor"
        ),
    ],
)
def test_invariant_violations_rejected_even_when_signed(mutate: Any) -> None:
    entries = mutate(_wire_entries(small_doc()))
    body = _raw_body(entries)
    with pytest.raises(MalformedConsensus):
        ConsensusDocument.decode(body)
    with pytest.raises(MalformedConsensus):
        verify_consensus(signed_by(body, AUTHORITIES[:3]), authority_set(3, 2))


def test_same_identity_in_two_layers_rejected() -> None:
    entries = _wire_entries(small_doc())
    mix_layer, mix_wire = entries[-1]
    other_layer = 1 if mix_layer != 1 else 2
    body = _raw_body(sorted([*entries, (other_layer, mix_wire)], key=lambda e: e[0]))
    with pytest.raises(MalformedConsensus):
        ConsensusDocument.decode(body)


def test_embedded_descriptor_with_bad_signature_rejected() -> None:
    entries = _wire_entries(small_doc())
    layer, wire = entries[-1]
    desc_body, desc_sig = msgpack.unpackb(wire)
    entries[-1] = (layer, pack([desc_body, bytes([desc_sig[0] ^ 1]) + desc_sig[1:]]))
    body = _raw_body(entries)
    with pytest.raises(MalformedConsensus, match="node entry"):
        verify_consensus(signed_by(body, AUTHORITIES[:3]), authority_set(3, 2))


def test_embedded_descriptor_not_covering_the_epoch_rejected() -> None:
    stale = MIXES[0].signed(epoch=EPOCH - 2)
    body = _raw_body([(1, stale.wire)])
    with pytest.raises(MalformedConsensus, match="no mix key for epoch"):
        verify_consensus(signed_by(body, AUTHORITIES[:3]), authority_set(3, 2))


def test_constructor_checks_invariants() -> None:
    doc = small_doc()
    entries = _entries(doc)
    with pytest.raises(MalformedConsensus):
        ConsensusDocument(epoch=EPOCH, params=PARAMS, nodes=tuple(reversed(entries)))
    with pytest.raises(MalformedConsensus):
        ConsensusDocument(epoch=EPOCH, params=PARAMS, nodes=(ConsensusEntry(2, entries[0].signed),))
    with pytest.raises(MalformedConsensus, match="version"):
        ConsensusDocument(epoch=EPOCH, params=PARAMS, nodes=(), version=2)
    with pytest.raises(MalformedConsensus, match="epoch"):
        ConsensusDocument(epoch=-1, params=PARAMS, nodes=())


def test_non_canonical_body_rejected() -> None:
    body = small_doc().encode()
    # Re-encode the epoch (500, a uint16) as a uint32: same value, different bytes.
    idx = body.index(b"\xcd\x01\xf4")
    longer = body[:idx] + b"\xce\x00\x00\x01\xf4" + body[idx + 3 :]
    assert msgpack.unpackb(longer) == msgpack.unpackb(body)
    with pytest.raises(MalformedConsensus, match="canonical"):
        ConsensusDocument.decode(longer)


# -- threshold verification --------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(3, 2), (5, 3), (1, 1), (4, 3)])
def test_threshold_accepts_at_k_rejects_at_k_minus_one(n: int, k: int) -> None:
    body = small_doc().encode()
    authorities = authority_set(n, k)
    verified = verify_consensus(signed_by(body, AUTHORITIES[:k]), authorities)
    assert len(verified.signers) == k
    with pytest.raises(ConsensusThresholdError) as info:
        verify_consensus(signed_by(body, AUTHORITIES[: k - 1]), authorities)
    assert info.value.valid == k - 1
    assert info.value.threshold == k


def test_threshold_message() -> None:
    body = small_doc().encode()
    with pytest.raises(
        ConsensusError, match=r"^2 valid signatures from configured authorities, need 3$"
    ):
        verify_consensus(signed_by(body, AUTHORITIES[:2]), authority_set(5, 3))


def test_forged_signature_not_counted() -> None:
    body = small_doc().encode()
    authorities = authority_set(3, 2)
    real = sign_document(body, AUTHORITIES[0])
    forged_random = (AUTHORITIES[1].public, bytes(range(64)))
    other_body = build_consensus(EPOCH + 1, PARAMS, ALL_DESCS).encode()
    forged_other = sign_document(other_body, AUTHORITIES[2])  # valid, but for another body
    wrong_domain = (AUTHORITIES[1].public, AUTHORITIES[1].sign(DESCRIPTOR_SIGNING_DOMAIN + body))
    for forged in (forged_random, forged_other, wrong_domain):
        with pytest.raises(ConsensusThresholdError):
            verify_consensus(assemble_signed_document(body, [real, forged]), authorities)
    ok = verify_consensus(
        assemble_signed_document(body, [real, sign_document(body, AUTHORITIES[2]), forged_random]),
        authorities,
    )
    assert ok.signers == tuple(sorted([AUTHORITIES[0].public, AUTHORITIES[2].public]))


def test_duplicate_signatures_count_once() -> None:
    body = small_doc().encode()
    sig = sign_document(body, AUTHORITIES[0])
    data = pack([body, [list(sig), list(sig), list(sig)]])
    with pytest.raises(ConsensusThresholdError, match=r"^1 valid signature from"):
        verify_consensus(data, authority_set(3, 2))
    # An invalid entry first, then the valid one from the same authority: counted once.
    bad = [AUTHORITIES[1].public, bytes(64)]
    data = pack([body, [bad, list(sig), list(sign_document(body, AUTHORITIES[1]))]])
    assert len(verify_consensus(data, authority_set(3, 2)).signers) == 2


def test_unknown_authority_not_counted() -> None:
    body = small_doc().encode()
    authorities = authority_set(3, 2)
    with pytest.raises(ConsensusThresholdError):
        verify_consensus(signed_by(body, [AUTHORITIES[0], OUTSIDER]), authorities)
    # Two configured authorities, an outsider and a pool key outside the 3-key set sign.
    verified = verify_consensus(
        signed_by(body, [*AUTHORITIES[:2], OUTSIDER, AUTHORITIES[4]]), authorities
    )
    assert OUTSIDER.public not in verified.signers
    assert len(verified.signers) == 2


def test_wrong_epoch_rejected_when_expected_epoch_given() -> None:
    data = signed_by(small_doc(EPOCH + 1).encode(), AUTHORITIES[:3])
    authorities = authority_set(3, 2)
    assert verify_consensus(data, authorities).epoch == EPOCH + 1
    assert verify_consensus(data, authorities, expected_epoch=EPOCH + 1).epoch == EPOCH + 1
    with pytest.raises(ConsensusEpochError, match=f"epoch {EPOCH + 1}, expected epoch {EPOCH}"):
        verify_consensus(data, authorities, expected_epoch=EPOCH)


def test_oversized_document_rejected() -> None:
    with pytest.raises(MalformedConsensus, match="limit"):
        verify_consensus(bytes(MAX_DOCUMENT_BYTES + 1), authority_set(3, 2))


# -- authority sets, merging, assembling --------------------------------------------------------


@pytest.mark.parametrize(("n", "t"), [(3, 0), (3, 4), (2, 1), (4, 2), (5, 2), (3, True), (3, 2.0)])
def test_authority_set_rejects_non_majority_thresholds(n: int, t: Any) -> None:
    with pytest.raises(ParamsError, match="threshold"):
        AuthoritySet(keys=tuple(a.public for a in AUTHORITIES[:n]), threshold=t)


def test_authority_set_validation_and_default() -> None:
    keys = [a.public for a in AUTHORITIES]
    assert [AuthoritySet.majority(keys[:n]).threshold for n in range(1, 6)] == [1, 2, 2, 3, 3]
    assert AuthoritySet.majority(keys).keys == tuple(sorted(keys))
    assert AuthoritySet.majority(reversed(keys)) == AuthoritySet.majority(keys)
    with pytest.raises(ParamsError, match="twice"):
        AuthoritySet(keys=(keys[0], keys[0], keys[1]), threshold=2)
    with pytest.raises(ParamsError, match="32 bytes"):
        AuthoritySet(keys=(keys[0][:31],), threshold=1)
    with pytest.raises(ParamsError, match="at least one"):
        AuthoritySet.majority([])
    assert keys[0] in AuthoritySet.majority(keys)
    assert len(AuthoritySet.majority(keys)) == 5


def test_merge_signatures_keeps_valid_distinct_sorted() -> None:
    body = small_doc().encode()
    sigs = [sign_document(body, a) for a in AUTHORITIES[:3]]
    junk = [(AUTHORITIES[3].public, bytes(64)), (b"short", b"sig"), "garbage"]
    merged = merge_signatures(body, sigs[:2], [sigs[1], sigs[2], *junk], sigs)  # type: ignore[list-item]
    assert merged == tuple(sorted(sigs))


def test_assemble_refuses_conflicting_or_malformed_entries() -> None:
    body = small_doc().encode()
    key = AUTHORITIES[0].public
    with pytest.raises(ConsensusError, match="two different signatures"):
        assemble_signed_document(body, [(key, bytes(64)), (key, b"\x01" * 64)])
    with pytest.raises(ConsensusError, match="signature entry"):
        assemble_signed_document(body, [(key, bytes(63))])
    too_many = [(i.to_bytes(32, "big"), bytes(64)) for i in range(MAX_SIGNATURES + 1)]
    with pytest.raises(ConsensusError, match="limit"):
        assemble_signed_document(body, too_many)
    dup = sign_document(body, AUTHORITIES[0])
    assert assemble_signed_document(body, [dup, dup]) == assemble_signed_document(body, [dup])


# -- fuzzing: only project errors escape ----------------------------------------------------------

FUZZ_DESCS = [MIXES[0].signed(), MIXES[1].signed(), MIXES[2].signed(), PROVIDERS[0].signed()]
FUZZ_BODY = build_consensus(EPOCH, PARAMS, FUZZ_DESCS).encode()
FUZZ_SIGNERS = AUTHORITIES[:3]
FUZZ_AUTHORITIES = authority_set(3, 2)
FUZZ_DOC = signed_by(FUZZ_BODY, FUZZ_SIGNERS)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_edits = st.lists(
    st.tuples(st.integers(0, 1 << 20), st.integers(0, 255), st.sampled_from("rid")),
    min_size=1,
    max_size=4,
)


def _mutate(data: bytes, edits: list[tuple[int, int, str]]) -> bytes:
    out = bytearray(data)
    for raw_position, byte, op in edits:
        position = raw_position % max(len(out), 1)
        if op == "r" and out:
            out[position] = byte
        elif op == "i":
            out.insert(position, byte)
        elif out:
            del out[position]
    return bytes(out)


def _verify_or_project_error(data: bytes) -> VerifiedConsensus | None:
    with contextlib.suppress(MixnetError):
        return verify_consensus(data, FUZZ_AUTHORITIES, expected_epoch=EPOCH)
    return None


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_verify_random_bytes(data: bytes) -> None:
    assert _verify_or_project_error(data) is None


@FUZZ
@given(_edits)
def test_fuzz_verify_mutated_signed_document(edits: list[tuple[int, int, str]]) -> None:
    _verify_or_project_error(_mutate(FUZZ_DOC, edits))


@FUZZ
@given(_edits)
def test_fuzz_mutated_body_validly_signed(edits: list[tuple[int, int, str]]) -> None:
    """Authorities that sign garbage: the body decoder itself must hold."""
    body = _mutate(FUZZ_BODY, edits)
    data = pack([body, [list(sign_document(body, k)) for k in FUZZ_SIGNERS]])
    result = _verify_or_project_error(data)
    if result is not None:
        assert result.document.encode() == body


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.integers(-(2**63), 2**64 - 1),
            st.binary(max_size=40),
            st.text(max_size=10),
            st.booleans(),
            st.lists(st.one_of(st.integers(0, 10), st.binary(max_size=80)), max_size=3),
        ),
        min_size=4,
        max_size=4,
    )
)
def test_fuzz_structured_bodies(items: list[Any]) -> None:
    with contextlib.suppress(MixnetError):
        ConsensusDocument.decode(pack(items))


def test_authority_spec_parsing() -> None:
    from mixcore.consensus import parse_authority_spec

    key = bytes(range(32))
    assert parse_authority_spec(f"{key.hex()}@http://127.0.0.1:8001") == (
        "http://127.0.0.1:8001", key
    )
    for bad in ("", key.hex(), f"{key.hex()[:-2]}@http://h:1", f"{key.hex()}@ftp://h:1", "zz@http://h:1"):
        with pytest.raises(ValueError, match="KEYHEX@"):
            parse_authority_spec(bad)


def test_a_node_with_mix_keys_of_another_suite_is_left_out_and_refused() -> None:
    """A node configured for suite v1 cannot serve a v2 network: authorities leave it out, and
    a document that lists it anyway does not verify."""
    v1_keys = ((EPOCH, p256_mix_public_key()), (EPOCH + 1, p256_mix_public_key()))
    stranger = Node(IdentityKey.generate(), NodeRole.MIX, 19).signed(mix_keys=v1_keys)
    doc = build_consensus(EPOCH, PARAMS, [*ALL_DESCS, stranger])
    assert stranger.identity_key not in {e.descriptor.identity_key for e in doc.nodes}
    assert len(doc.nodes) == len(ALL_DESCS)
    with pytest.raises(MalformedConsensus, match="is not sphinx-v2"):
        ConsensusDocument(EPOCH, PARAMS, (*doc.nodes, ConsensusEntry(layer=3, signed=stranger)))
    v1_params = PARAMS.replace(sphinx_suite=SPHINX_SUITE_V1)
    v1_doc = build_consensus(EPOCH, v1_params, [*ALL_DESCS, stranger])
    assert [e.descriptor.identity_key for e in v1_doc.nodes] == [stranger.identity_key]
