"""Sphinx packets: end to end along real paths, SURBs, fixed size, tamper detection, fuzzing."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixcore.errors import (
    BodyMacError,
    HeaderMacError,
    KeyFileError,
    MalformedPacket,
    MixnetError,
    PacketError,
    SurbError,
    WrongSuitePacket,
)
from mixcore.loading import load_mix_key, save_mix_key
from mixcore.params import SPHINX_SUITE_V1, SPHINX_SUITE_V2, NetworkParams
from mixcore.sphinx import (
    Deliver,
    MixPrivateKey,
    PathHop,
    Relay,
    Sphinx,
    SphinxGeometry,
    Surb,
    SurbKeys,
    SurbReply,
    is_valid_mix_public_key,
)

SX = Sphinx(SphinxGeometry.from_params(NetworkParams()))
KEYS = [MixPrivateKey.generate() for _ in range(5)]
IDS = [bytes([i]) * 32 for i in range(5)]
PATH = [PathHop(node_id, key.public) for node_id, key in zip(IDS, KEYS, strict=True)]
BY_ID = dict(zip(IDS, KEYS, strict=True))
MAILBOX = b"M" * 16


def run_path(packet: bytes, first: bytes = IDS[0]) -> tuple[list[Relay], Deliver | SurbReply]:
    """Process ``packet`` hop by hop as the network would, returning relays and the final result."""
    relays: list[Relay] = []
    node = first
    for _ in range(10):
        result = SX.process(BY_ID[node], packet)
        if not isinstance(result, Relay):
            return relays, result
        relays.append(result)
        node, packet = result.next_node, result.packet
    raise AssertionError("packet never reached an exit")


def test_geometry_of_default_params() -> None:
    g = SX.geometry
    assert g.suite == SPHINX_SUITE_V2  # the default network runs suite v2
    assert g.max_hops == 5
    assert g.body_len == 2048
    assert g.packet_len == 1 + 32 + g.beta_len + 16 + 2048 == 2347
    assert g.payload_capacity == 2048 - 16 - 2
    v1 = SphinxGeometry(suite=SPHINX_SUITE_V1)
    assert v1.packet_len == 1 + 65 + v1.beta_len + 16 + 2048 == 2380
    assert v1.beta_len == g.beta_len == 250


def test_five_hop_forward_packet_end_to_end() -> None:
    delays = [0.5, 1.25, 0.000_001, 3.0]
    payload = os.urandom(100)
    relays, final = run_path(SX.create_forward(PATH, delays, MAILBOX, payload))
    assert [r.next_node for r in relays] == IDS[1:]
    assert [r.delay for r in relays] == pytest.approx(delays, abs=1e-6)
    assert isinstance(final, Deliver)
    assert final.mailbox == MAILBOX
    assert final.payload == payload


@pytest.mark.parametrize("hops", [1, 2, 3, 4])
def test_shorter_paths_work_and_have_the_same_size(hops: int) -> None:
    packet = SX.create_forward(PATH[:hops], [0.1] * (hops - 1), MAILBOX, b"short")
    assert len(packet) == SX.geometry.packet_len
    relays, final = run_path(packet)
    assert len(relays) == hops - 1
    assert isinstance(final, Deliver)
    assert final.payload == b"short"


def test_payload_capacity_is_exact() -> None:
    cap = SX.geometry.payload_capacity
    _, final = run_path(SX.create_forward(PATH, [0.0] * 4, MAILBOX, b"x" * cap))
    assert isinstance(final, Deliver)
    assert final.payload == b"x" * cap
    with pytest.raises(PacketError, match="exceeds capacity"):
        SX.create_forward(PATH, [0.0] * 4, MAILBOX, b"x" * (cap + 1))
    _, empty = run_path(SX.create_forward(PATH, [0.0] * 4, MAILBOX, b""))
    assert isinstance(empty, Deliver)
    assert empty.payload == b""


def test_surb_round_trip() -> None:
    surb, keys = SX.create_surb(PATH[1:], [0.2, 0.2, 0.2], MAILBOX)
    surb = Surb.decode(surb.encode(), SX.geometry)  # it travels inside a payload
    keys = SurbKeys.decode(keys.encode())  # the creator stores it
    reply = SX.package_reply(surb, b"ack for fragment 7")
    relays, final = run_path(reply, first=surb.first_hop)
    assert len(relays) == 3
    assert isinstance(final, SurbReply)
    assert final.mailbox == MAILBOX
    assert final.surb_id == keys.surb_id
    assert SX.decode_reply(keys, final.body) == b"ack for fragment 7"


def test_surb_reply_cannot_be_decoded_with_other_keys() -> None:
    surb, _ = SX.create_surb(PATH[1:], [0.0] * 3, MAILBOX)
    _, other_keys = SX.create_surb(PATH[1:], [0.0] * 3, MAILBOX)
    _, final = run_path(SX.package_reply(surb, b"secret"), first=surb.first_hop)
    assert isinstance(final, SurbReply)
    with pytest.raises(SurbError):
        SX.decode_reply(other_keys, final.body)


def test_every_packet_kind_has_the_same_length() -> None:
    n = SX.geometry.packet_len
    forward = SX.create_forward(PATH, [0.0] * 4, MAILBOX, b"a")
    one_hop = SX.create_forward(PATH[:1], [], MAILBOX, b"")
    surb, _ = SX.create_surb(PATH[1:], [0.0] * 3, MAILBOX)
    reply = SX.package_reply(surb, b"ack")
    relays, _ = run_path(forward)
    reply_relays, _ = run_path(reply, first=surb.first_hop)
    sizes = {len(forward), len(one_hop), len(reply)}
    sizes |= {len(r.packet) for r in relays + reply_relays}
    assert sizes == {n}


def test_reprocessing_yields_the_same_replay_tag() -> None:
    packet = SX.create_forward(PATH, [0.0] * 4, MAILBOX, b"once")
    first = SX.process(KEYS[0], packet)
    again = SX.process(KEYS[0], packet)
    other = SX.process(KEYS[0], SX.create_forward(PATH, [0.0] * 4, MAILBOX, b"once"))
    assert first.replay_tag == again.replay_tag
    assert len(first.replay_tag) == 16
    assert other.replay_tag != first.replay_tag


def test_wrong_key_fails_with_header_mac_error() -> None:
    packet = SX.create_forward(PATH, [0.0] * 4, MAILBOX, b"x")
    with pytest.raises(HeaderMacError):
        SX.process(KEYS[1], packet)


def _flip(packet: bytes, index: int) -> bytes:
    return packet[:index] + bytes([packet[index] ^ 0x01]) + packet[index + 1 :]


def test_flipping_any_header_byte_fails_at_the_first_hop() -> None:
    packet = SX.create_forward(PATH, [0.1] * 4, MAILBOX, b"payload")
    for index in range(1 + SX.geometry.header_len):
        with pytest.raises((MalformedPacket, HeaderMacError)):
            SX.process(KEYS[0], _flip(packet, index))


def test_flipping_a_body_byte_fails_at_delivery() -> None:
    packet = SX.create_forward(PATH, [0.1] * 4, MAILBOX, b"payload")
    start = 1 + SX.geometry.header_len
    indexes = [start, start + 1, start + 15, start + 16, start + 17, len(packet) - 1]
    indexes += list(range(start + 20, len(packet), 97))
    for index in indexes:
        with pytest.raises(BodyMacError):
            run_path(_flip(packet, index))


def test_flipping_a_reply_body_byte_fails_when_the_creator_decodes() -> None:
    surb, keys = SX.create_surb(PATH[1:], [0.0] * 3, MAILBOX)
    reply = SX.package_reply(surb, b"ack")
    for index in (1 + SX.geometry.header_len, len(reply) - 1):
        _, final = run_path(_flip(reply, index), first=surb.first_hop)
        assert isinstance(final, SurbReply)
        with pytest.raises(SurbError):
            SX.decode_reply(keys, final.body)


def test_wrong_length_and_version_are_malformed() -> None:
    packet = SX.create_forward(PATH, [0.0] * 4, MAILBOX, b"x")
    for bad in (packet[:-1], packet + b"\x00", b"", b"\x01" * 10):
        with pytest.raises(MalformedPacket):
            SX.process(KEYS[0], bad)
    with pytest.raises(MalformedPacket, match="version"):
        SX.process(KEYS[0], b"\x07" + packet[1:])
    with pytest.raises(WrongSuitePacket, match=SPHINX_SUITE_V1):
        SX.process(KEYS[0], b"\x01" + packet[1:])


def test_bad_paths_are_refused() -> None:
    with pytest.raises(PacketError):
        SX.create_forward(PATH + PATH[:1], [0.0] * 5, MAILBOX, b"")
    with pytest.raises(PacketError):
        SX.create_forward(PATH, [0.0] * 3, MAILBOX, b"")
    with pytest.raises(PacketError):
        SX.create_forward([PathHop(IDS[0], b"\x02" + b"\xff" * 32)], [], MAILBOX, b"")
    with pytest.raises(PacketError):
        SX.create_forward(PATH, [0.0, -1.0, 0.0, 0.0], MAILBOX, b"")


def test_mix_public_key_validation() -> None:
    assert is_valid_mix_public_key(KEYS[0].public)
    assert is_valid_mix_public_key(KEYS[0].public, SPHINX_SUITE_V2)
    assert not is_valid_mix_public_key(KEYS[0].public, SPHINX_SUITE_V1)
    assert not is_valid_mix_public_key(KEYS[0].public[:-1])
    assert not is_valid_mix_public_key(bytes(32))  # small order
    assert not is_valid_mix_public_key((2**255 - 19).to_bytes(32, "little"))  # not canonical
    v1 = MixPrivateKey.generate(SPHINX_SUITE_V1).public
    assert is_valid_mix_public_key(v1)
    assert is_valid_mix_public_key(v1, SPHINX_SUITE_V1)
    assert not is_valid_mix_public_key(v1, SPHINX_SUITE_V2)
    assert not is_valid_mix_public_key(b"\x02" + b"\xff" * 32)
    assert not is_valid_mix_public_key(b"\x04" + v1[1:])
    with pytest.raises(PacketError, match="mix public key"):
        SX.create_forward([PathHop(IDS[0], v1)], [], MAILBOX, b"")


@pytest.mark.parametrize("suite", [SPHINX_SUITE_V1, SPHINX_SUITE_V2])
def test_mix_key_file_round_trip_and_permissions(tmp_path: os.PathLike[str], suite: str) -> None:
    path = os.path.join(tmp_path, "mix-7.key")
    key = MixPrivateKey.generate(suite)
    save_mix_key(path, key, epoch=7)
    assert os.stat(path).st_mode & 0o777 == 0o600
    epoch, loaded = load_mix_key(path)
    assert epoch == 7
    assert loaded.public == key.public
    assert loaded.suite == suite
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_mix_key(path)


def test_secrets_stay_out_of_repr() -> None:
    key = KEYS[0]
    assert key.secret_bytes().hex() not in repr(key)
    _, keys = SX.create_surb(PATH[1:], [0.0] * 3, MAILBOX)
    assert all(k.hex() not in repr(keys) for k in keys.keys)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=SX.geometry.packet_len, max_size=SX.geometry.packet_len))
def test_fuzz_random_packets_raise_only_project_errors(data: bytes) -> None:
    with pytest.raises(MixnetError):
        SX.process(KEYS[0], data)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000))
def test_fuzz_any_length(data: bytes) -> None:
    with pytest.raises(MixnetError):
        SX.process(KEYS[0], data)


VALID = SX.create_forward(PATH, [0.0] * 4, MAILBOX, b"fuzz")


@settings(max_examples=80, deadline=None)
@given(st.integers(0, len(VALID) - 1), st.integers(1, 255))
def test_fuzz_mutations_of_a_valid_packet(index: int, xor: int) -> None:
    mutated = VALID[:index] + bytes([VALID[index] ^ xor]) + VALID[index + 1 :]
    with pytest.raises(MixnetError):
        run_path(mutated)


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_surb_decoder(data: bytes) -> None:
    try:
        surb = Surb.decode(data, SX.geometry)
    except MixnetError:
        return
    assert surb.encode() == data


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_surb_keys_decoder(data: bytes) -> None:
    try:
        keys = SurbKeys.decode(data)
    except MixnetError:
        return
    assert keys.encode() == data
