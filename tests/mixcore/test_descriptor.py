"""Node descriptors: encoding, signing, field validation, and fuzzing of the parser."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixcore.descriptor import (
    DESCRIPTOR_SIGNING_DOMAIN,
    MAX_HOST_LEN,
    MAX_NAME_LEN,
    MAX_SIGNED_DESCRIPTOR_BYTES,
    NodeDescriptor,
    SignedDescriptor,
    check_descriptor_epoch,
    make_signed_descriptor,
    parse_signed_descriptor,
    sign_descriptor,
)
from mixcore.encoding import pack
from mixcore.errors import DescriptorError, MixnetError, SignatureError
from mixcore.keys import IdentityKey, LinkKey
from mixcore.topology import NodeRole

EPOCH = 1000


def mix_public_key() -> bytes:
    """A valid 33-byte compressed P-256 point, made without the (changing) Sphinx module."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


IDENTITY = IdentityKey.generate()
OTHER_IDENTITY = IdentityKey.generate()
LINK = LinkKey.generate().public
MIX_KEYS = ((EPOCH, mix_public_key()), (EPOCH + 1, mix_public_key()))


def make_desc(**changes: Any) -> NodeDescriptor:
    fields: dict[str, Any] = {
        "identity_key": IDENTITY.public,
        "link_key": LINK,
        "role": NodeRole.MIX,
        "layer": 2,
        "host": "mix1.example.org",
        "port": 1789,
        "epoch": EPOCH,
        "mix_keys": MIX_KEYS,
        "name": "alpha",
    }
    fields.update(changes)
    return NodeDescriptor(**fields)


def sign_raw(body_items: list[Any], key: IdentityKey = IDENTITY) -> bytes:
    """Sign an arbitrary body array, bypassing the constructor's checks (a malicious node)."""
    body = pack(body_items)
    return pack([body, key.sign(DESCRIPTOR_SIGNING_DOMAIN + body)])


# -- round trip and layout ---------------------------------------------------------------


def test_round_trip() -> None:
    desc = make_desc()
    wire = sign_descriptor(desc, IDENTITY)
    signed = parse_signed_descriptor(wire)
    assert isinstance(signed, SignedDescriptor)
    assert signed.descriptor == desc
    assert signed.wire == wire
    assert signed.body == desc.encode()
    assert signed.identity_key == IDENTITY.public
    assert desc.node_id == IDENTITY.public
    assert NodeDescriptor.decode(desc.encode()) == desc
    assert make_signed_descriptor(desc, IDENTITY) == signed


def test_provider_round_trip() -> None:
    desc = make_desc(role=NodeRole.PROVIDER, layer=0, host="::1", name="")
    assert parse_signed_descriptor(sign_descriptor(desc, IDENTITY)).descriptor == desc


def test_wire_layout_is_the_documented_array() -> None:
    desc = make_desc()
    body, signature = msgpack.unpackb(sign_descriptor(desc, IDENTITY))
    assert len(signature) == 64
    assert msgpack.unpackb(body) == [
        1,
        IDENTITY.public,
        LINK,
        1,
        2,
        "mix1.example.org",
        1789,
        EPOCH,
        [[EPOCH, MIX_KEYS[0][1]], [EPOCH + 1, MIX_KEYS[1][1]]],
        "alpha",
    ]
    assert body[0] == 0x9A  # fixarray of 10
    provider = make_desc(role=NodeRole.PROVIDER, layer=0)
    assert msgpack.unpackb(provider.encode())[3] == 2


def test_mix_key_lookup() -> None:
    desc = make_desc()
    assert desc.mix_key(EPOCH) == MIX_KEYS[0][1]
    assert desc.mix_key(EPOCH + 1) == MIX_KEYS[1][1]
    assert desc.mix_key(EPOCH + 2) is None
    assert desc.covers_epoch(EPOCH) and desc.covers_epoch(EPOCH + 1)
    assert not desc.covers_epoch(EPOCH - 1)


def test_maximal_descriptor_fits_well_within_the_bound() -> None:
    host = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(host) == MAX_HOST_LEN
    max_epoch = (1 << 32) - 2
    desc = make_desc(
        host=host,
        name="n" * MAX_NAME_LEN,
        port=65535,
        layer=8,
        epoch=max_epoch,
        mix_keys=((max_epoch, MIX_KEYS[0][1]), (max_epoch + 1, MIX_KEYS[1][1])),
    )
    wire = sign_descriptor(desc, IDENTITY)
    assert len(wire) <= 522
    assert parse_signed_descriptor(wire).descriptor == desc


# -- signatures ----------------------------------------------------------------------------


def test_flipped_signature_bit_rejected() -> None:
    body, signature = msgpack.unpackb(sign_descriptor(make_desc(), IDENTITY))
    bad = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(SignatureError):
        parse_signed_descriptor(pack([body, bad]))


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", 1790), ("host", "evil.example.org"), ("link_key", bytes(32)), ("name", "beta")],
)
def test_tampered_body_field_rejected(field: str, value: Any) -> None:
    body, signature = msgpack.unpackb(sign_descriptor(make_desc(), IDENTITY))
    tampered = make_desc(**{field: value}).encode()
    assert tampered != body
    with pytest.raises(SignatureError):
        parse_signed_descriptor(pack([tampered, signature]))


def test_impersonation_rejected() -> None:
    """An attacker publishes the victim's identity key with its own address, signing itself."""
    victim_desc = make_desc(host="203.0.113.9")
    forged = pack(
        [
            victim_desc.encode(),
            OTHER_IDENTITY.sign(DESCRIPTOR_SIGNING_DOMAIN + victim_desc.encode()),
        ]
    )
    with pytest.raises(SignatureError):
        parse_signed_descriptor(forged)


def test_signing_with_the_wrong_key_is_refused_locally() -> None:
    with pytest.raises(DescriptorError, match="identity_key"):
        sign_descriptor(make_desc(), OTHER_IDENTITY)


def test_signature_without_domain_rejected() -> None:
    body = make_desc().encode()
    with pytest.raises(SignatureError):
        parse_signed_descriptor(pack([body, IDENTITY.sign(body)]))
    consensus_domain = IDENTITY.sign(b"mixnet-consensus-v1\x00" + body)
    with pytest.raises(SignatureError):
        parse_signed_descriptor(pack([body, consensus_domain]))


# -- field validation (constructor and wire) ------------------------------------------------


def test_missing_next_epoch_key_rejected() -> None:
    with pytest.raises(DescriptorError, match=r"^mix_keys"):
        make_desc(mix_keys=(MIX_KEYS[0],))
    items = make_desc().to_wire()
    items[8] = [[EPOCH, MIX_KEYS[0][1]]]
    with pytest.raises(DescriptorError, match="mix_keys"):
        parse_signed_descriptor(sign_raw(items))


@pytest.mark.parametrize(
    "keys",
    [
        ((EPOCH, MIX_KEYS[0][1]), (EPOCH + 2, MIX_KEYS[1][1])),  # skips the next epoch
        ((EPOCH + 1, MIX_KEYS[1][1]), (EPOCH, MIX_KEYS[0][1])),  # wrong order
        ((EPOCH - 1, MIX_KEYS[0][1]), (EPOCH, MIX_KEYS[1][1])),  # previous and current
        (MIX_KEYS[0], MIX_KEYS[1], (EPOCH + 2, MIX_KEYS[0][1])),  # three keys
        ((float(EPOCH), MIX_KEYS[0][1]), MIX_KEYS[1]),  # float epoch
        [MIX_KEYS[0], MIX_KEYS[1]],  # list, not tuple
    ],
)
def test_wrong_mix_key_epochs_rejected(keys: Any) -> None:
    with pytest.raises(DescriptorError, match=r"^mix_keys"):
        make_desc(mix_keys=keys)


def _not_on_curve() -> bytes:
    for x in range(2, 1000):
        candidate = b"\x02" + x.to_bytes(32, "big")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), candidate)
        except ValueError:
            return candidate
    raise AssertionError("no off-curve x found")


@pytest.mark.parametrize(
    "bad_key",
    [
        _not_on_curve(),
        b"\x04" + bytes(32),
        b"\x02" + b"\xff" * 32,  # x >= p
        MIX_KEYS[0][1][:-2],  # 31 bytes: neither a P-256 (33) nor an X25519 (32) key
        MIX_KEYS[0][1] + b"\x00" * 2,
        bytes(33),
        bytes(32),  # X25519 u = 0: small order
        (2**255 - 19).to_bytes(32, "little"),  # X25519 u not canonical
    ],
    ids=[
        "off-curve", "uncompressed-prefix", "x-over-p", "truncated", "two-bytes-long", "zeros",
        "x25519-small-order", "x25519-not-canonical",
    ],
)
def test_invalid_mix_key_bytes_rejected(bad_key: bytes) -> None:
    with pytest.raises(DescriptorError, match=r"^mix_keys"):
        make_desc(mix_keys=((EPOCH, bad_key), MIX_KEYS[1]))
    items = make_desc().to_wire()
    items[8][1][1] = bad_key
    with pytest.raises(DescriptorError, match="mix_keys"):
        parse_signed_descriptor(sign_raw(items))


@pytest.mark.parametrize(
    "host",
    [
        "",
        "a" * 254,
        "exa mple.org",
        "-mix.example.org",
        "mix-.example.org",
        "Mix1.Example.org",
        "a..b",
        "trailing.dot.",
        "a" * 64 + ".org",
        "under_score.org",
        "bücher.de",
        "0:0:0:0:0:0:0:1",
        "[::1]",
        "fe80::1%eth0",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        "256.1.1.1",
        "1.2.3",
        "010.1.1.1",
        "host:80",
    ],
)
def test_bad_host_rejected(host: str) -> None:
    with pytest.raises(DescriptorError, match=r"^host"):
        make_desc(host=host)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "::1",
        "2001:db8::1",
        "localhost",
        "mix1.example.org",
        "xn--bcher-kva.de",
        "a" * 63 + ".org",
        "10.0.0.7",
        "7.example",
    ],
)
def test_good_host_accepted(host: str) -> None:
    assert parse_signed_descriptor(sign_descriptor(make_desc(host=host), IDENTITY))


def test_non_text_host_rejected_on_the_wire() -> None:
    items = make_desc().to_wire()
    items[5] = b"mix1.example.org"
    with pytest.raises(DescriptorError, match="host"):
        parse_signed_descriptor(sign_raw(items))


@pytest.mark.parametrize("port", [0, 65536, -1, True, "1789", 1789.0])
def test_bad_port_rejected(port: Any) -> None:
    with pytest.raises(DescriptorError, match=r"^port"):
        make_desc(port=port)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"role": NodeRole.PROVIDER, "layer": 1}, "layer"),
        ({"role": NodeRole.MIX, "layer": 9}, "layer"),
        ({"role": NodeRole.MIX, "layer": -1}, "layer"),
        ({"role": NodeRole.MIX, "layer": True}, "layer"),
        ({"role": 1}, "role"),
        ({"role": "mix"}, "role"),
        ({"identity_key": bytes(31)}, "identity_key"),
        ({"link_key": bytes(33)}, "link_key"),
        ({"link_key": "00" * 32}, "link_key"),
        ({"epoch": -1}, "epoch"),
        ({"epoch": 1 << 32}, "epoch"),
        ({"name": "n" * 33}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"name": "café"}, "name"),
        ({"name": None}, "name"),
        ({"version": 2}, "version"),
    ],
)
def test_bad_fields_rejected_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(DescriptorError, match=f"^{field}"):
        make_desc(**changes)


def test_mix_may_leave_layer_to_the_authorities() -> None:
    assert make_desc(layer=0).layer == 0


@pytest.mark.parametrize(
    ("index", "value", "field"),
    [
        (3, 3, "role"),
        (3, 0, "role"),
        (3, True, "role"),
        (3, "mix", "role"),
        (0, 2, "version"),
        (0, True, "version"),
        (4, 12, "layer"),
        (6, 0, "port"),
        (8, "keys", "mix_keys"),
    ],
)
def test_bad_wire_fields_rejected(index: int, value: Any, field: str) -> None:
    items = make_desc().to_wire()
    items[index] = value
    with pytest.raises(DescriptorError, match=field):
        parse_signed_descriptor(sign_raw(items))


def test_wrong_arity_rejected() -> None:
    items = make_desc().to_wire()
    with pytest.raises(DescriptorError, match="malformed"):
        parse_signed_descriptor(sign_raw([*items, 0]))
    with pytest.raises(DescriptorError, match="malformed"):
        parse_signed_descriptor(sign_raw(items[:-1]))


def test_non_canonical_encoding_rejected() -> None:
    wire = sign_descriptor(make_desc(), IDENTITY)
    body, signature = msgpack.unpackb(wire)
    # The same array with the body's length in a bin16 header instead of bin8.
    assert wire[1] == 0xC4
    longer = b"\x92\xc5" + len(body).to_bytes(2, "big") + wire[3:]
    assert msgpack.unpackb(longer) == [body, signature]
    with pytest.raises(DescriptorError, match="canonical"):
        parse_signed_descriptor(longer)


def test_size_bound() -> None:
    wire = sign_descriptor(make_desc(), IDENTITY)
    with pytest.raises(DescriptorError, match="limit"):
        parse_signed_descriptor(wire, max_bytes=len(wire) - 1)
    with pytest.raises(DescriptorError, match="limit"):
        parse_signed_descriptor(b"\x00" * (MAX_SIGNED_DESCRIPTOR_BYTES + 1))


def test_epoch_window() -> None:
    desc = make_desc()
    check_descriptor_epoch(desc, EPOCH)
    check_descriptor_epoch(desc, EPOCH - 1)
    with pytest.raises(DescriptorError, match=r"^epoch"):
        check_descriptor_epoch(desc, EPOCH + 1)
    with pytest.raises(DescriptorError, match=r"^epoch"):
        check_descriptor_epoch(desc, EPOCH - 2)


def test_descriptor_is_frozen_and_hashable() -> None:
    desc = make_desc()
    with pytest.raises(dataclasses.FrozenInstanceError):
        desc.port = 1  # type: ignore[misc]
    assert hash(desc) == hash(make_desc())
    assert "mix1.example.org" in repr(desc)


# -- fuzzing: only project errors escape -------------------------------------------------------

VALID_WIRE = sign_descriptor(make_desc(), IDENTITY)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_project_error(data: bytes) -> None:
    with contextlib.suppress(MixnetError):
        parse_signed_descriptor(data)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_or_project_error(data)


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID_WIRE) - 1), st.integers(0, 255), st.sampled_from("rid")),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_mutated_valid_descriptor(edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(VALID_WIRE)
    for raw_position, byte, op in edits:
        position = raw_position % max(len(data), 1)
        if op == "r" and data:
            data[position] = byte
        elif op == "i":
            data.insert(position, byte)
        elif data:
            del data[position]
    _parse_or_project_error(bytes(data))


_scalars = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=40),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(_scalars, st.lists(_scalars, max_size=3)),
        min_size=10,
        max_size=10,
    ),
    st.booleans(),
)
def test_fuzz_structured_bodies_with_valid_signatures(items: list[Any], keep_keys: bool) -> None:
    """Well-formed msgpack arrays of the right arity, validly signed: the field checks hold."""
    if keep_keys:
        items[1] = IDENTITY.public
        items[0] = 1
    _parse_or_project_error(sign_raw(items))
