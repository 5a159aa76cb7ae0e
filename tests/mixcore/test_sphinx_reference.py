"""Suite v1's hop against sphinxmix's own: the same bytes out, the same rejections.

Nodes peel layers with :meth:`Sphinx.process_parsed`, not sphinxmix's ``sphinx_process`` (see
the module docstring of :mod:`mixcore.sphinx` for why). A packet built by any sender must come
out of our hop exactly as it would out of sphinxmix's, so these tests run both on the same
packets along random paths, and compare the symmetric primitives one by one.
"""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from petlib.cipher import Cipher
from sphinxmix import SphinxException
from sphinxmix.SphinxNode import sphinx_process

from mixcore import sphinx as sphinx_module
from mixcore.errors import BodyMacError, HeaderMacError
from mixcore.params import SPHINX_SUITE_V1, NetworkParams
from mixcore.routing import RelayCommand, decode_command
from mixcore.sphinx import (
    Deliver,
    MixPrivateKey,
    PathHop,
    Relay,
    Sphinx,
    SphinxGeometry,
    SurbReply,
)

SX = Sphinx(SphinxGeometry.from_params(NetworkParams(sphinx_suite=SPHINX_SUITE_V1)))
P = SX._params  # sphinxmix's parameter object of the same geometry: the reference
KEYS = [MixPrivateKey.generate(SPHINX_SUITE_V1) for _ in range(5)]
IDS = [bytes([i]) * 32 for i in range(5)]
PATH = [PathHop(node_id, key.public) for node_id, key in zip(IDS, KEYS, strict=True)]
CTR = Cipher("AES-128-CTR")


def reference_hop(key: MixPrivateKey, packet: bytes) -> tuple[bytes, bytes, bytes | None, bytes]:
    """sphinxmix's hop: (replay tag, routing bytes, next packet or None, body after the hop)."""
    header, body = SX.parse(packet)
    tag, routing, ((alpha, beta, gamma), delta), _mac_key = sphinx_process(
        P, key._secret, header, body
    )
    if isinstance(decode_command(bytes(routing)), RelayCommand):
        return tag, bytes(routing), SX._serialize(alpha, beta, gamma, delta), delta
    return tag, bytes(routing), None, delta


@settings(max_examples=25, deadline=None)
@given(
    hops=st.integers(min_value=1, max_value=5),
    delays=st.lists(st.floats(min_value=0, max_value=60), min_size=4, max_size=4),
    payload=st.binary(max_size=300),
    surb=st.booleans(),
)
def test_every_hop_matches_sphinxmix(
    hops: int, delays: list[float], payload: bytes, surb: bool
) -> None:
    path = PATH[:hops]
    if surb:
        made, _keys = SX.create_surb(path, delays[: hops - 1], b"M" * 16)
        packet = SX.package_reply(made, payload)
    else:
        packet = SX.create_forward(path, delays[: hops - 1], b"M" * 16, payload)
    for i in range(hops):
        tag, _routing, next_packet, delta = reference_hop(KEYS[i], packet)
        ours = SX.process(KEYS[i], packet)
        assert ours.replay_tag == tag
        if isinstance(ours, Relay):
            assert next_packet is not None
            assert ours.packet == next_packet  # alpha, beta, gamma and body, byte for byte
            packet = ours.packet
        else:
            assert i == hops - 1 and next_packet is None
            if surb:
                assert isinstance(ours, SurbReply) and ours.body == delta
            else:
                assert isinstance(ours, Deliver) and ours.payload == payload


@settings(max_examples=30, deadline=None)
@given(
    position=st.integers(min_value=1, max_value=SX.geometry.packet_len - 1),
    flip=st.integers(1, 255),
)
def test_tampering_is_rejected_where_sphinxmix_rejects_it(position: int, flip: int) -> None:
    packet = bytearray(SX.create_forward(PATH[:2], [0.0], b"M" * 16, b"x"))
    packet[position] ^= flip
    tampered = bytes(packet)
    try:
        SX.parse(tampered)
    except Exception:  # a broken alpha: neither implementation ever sees it
        return
    try:
        reference_hop(KEYS[0], tampered)
        reference_ok = True
    except SphinxException:
        reference_ok = False
    header_len = 1 + SX.geometry.header_len
    if reference_ok:  # only the body was touched: the header processes, the exit will fail
        assert position >= header_len
        relay = SX.process(KEYS[0], tampered)
        assert isinstance(relay, Relay)
        with pytest.raises(BodyMacError):
            SX.process(KEYS[1], relay.packet)
    else:
        with pytest.raises(HeaderMacError):
            SX.process(KEYS[0], tampered)


@settings(max_examples=40, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=16),
    iv=st.binary(min_size=16, max_size=16) | st.just(b"\xff" * 16),
    data=st.binary(max_size=5000),
)
def test_aes_ctr_matches_petlib_including_counter_wrap(key: bytes, iv: bytes, data: bytes) -> None:
    assert sphinx_module._aes().ctr(key, iv, data) == CTR.enc(key, iv).update(data)


@settings(max_examples=25, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), body=st.binary(min_size=2048, max_size=2048))
def test_lioness_mu_and_key_derivation_match_sphinxmix(key: bytes, body: bytes) -> None:
    assert sphinx_module._lioness_enc(key, body) == P.pi(key, body)
    assert sphinx_module._lioness_dec(key, body) == P.pii(key, body)
    assert sphinx_module._lioness_dec(key, sphinx_module._lioness_enc(key, body)) == body
    assert sphinx_module._mu(key, body) == P.mu(key, body)
    assert sphinx_module._hpi(key) == P.hpi(key)
    secret = MixPrivateKey.generate(SPHINX_SUITE_V1)._secret
    point = secret * sphinx_module._GROUP.g
    aes_key = P.get_aes_key(point)
    rho, mu, tau, blind, pi = sphinx_module._hop_keys(point)
    assert (rho, mu, tau, pi) == (P.hrho(aes_key), P.hmu(aes_key), P.htau(aes_key), P.hpi(aes_key))
    assert sphinx_module.Bn.from_binary(blind) % sphinx_module._ORDER == P.hb(aes_key)


def test_aes_rejects_wrong_sizes() -> None:
    aes = sphinx_module._aes()
    with pytest.raises(ValueError):
        aes.ctr(b"short", bytes(16), b"data")
    with pytest.raises(ValueError):
        aes.ctr(bytes(16), b"short", b"data")
    with pytest.raises(ValueError):
        aes.ecb(bytes(16), b"17 bytes of data.")


def test_threads_each_get_their_own_cipher_context() -> None:
    """The reused OpenSSL contexts are per thread: concurrent hops never mix their keys."""
    packets = [
        SX.create_forward(PATH[:3], [0.0, 0.0], b"M" * 16, os.urandom(40)) for _ in range(20)
    ]
    expected = [SX.process(KEYS[0], p) for p in packets]
    failures: list[int] = []

    def worker() -> None:
        for _ in range(5):
            for packet, want in zip(packets, expected, strict=True):
                if SX.process(KEYS[0], packet) != want:
                    failures.append(1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
