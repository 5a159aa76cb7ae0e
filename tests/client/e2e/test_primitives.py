"""Published test vectors, checked against the wrappers the end-to-end layer actually calls."""

from __future__ import annotations

import pytest

from client.e2e.errors import MessageError
from client.e2e.primitives import (
    AeadError,
    aead_open,
    aead_seal,
    hkdf,
    pad,
    unpad,
    x25519,
    x25519_public,
)

h = bytes.fromhex


@pytest.mark.parametrize(
    ("scalar", "u", "out"),
    [  # RFC 7748 section 5.2
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ],
)
def test_x25519_rfc7748_section_5_2(scalar: str, u: str, out: str) -> None:
    assert x25519(h(scalar), h(u)) == h(out)


def test_x25519_rfc7748_section_6_1() -> None:
    a = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    b = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    a_pub = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    b_pub = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    k = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    assert x25519_public(a) == a_pub
    assert x25519_public(b) == b_pub
    assert x25519(a, b_pub) == k
    assert x25519(b, a_pub) == k


def test_x25519_rejects_low_order_point() -> None:
    with pytest.raises(MessageError):
        x25519(bytes(range(32)), bytes(32))


def test_hkdf_rfc5869_test_case_1() -> None:
    okm = hkdf(b"\x0b" * 22, salt=bytes(range(13)), info=bytes(range(0xF0, 0xFA)), length=42)
    assert okm == h(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


RFC8439_KEY = bytes(range(0x80, 0xA0))
RFC8439_NONCE = h("070000004041424344454647")
RFC8439_AAD = h("50515253c0c1c2c3c4c5c6c7")
RFC8439_PT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
    b"future, sunscreen would be it."
)
RFC8439_CT = h(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92"
    "728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b"
    "4831d7bc3ff4def08e4b7a9de576d26586cec64b6116"
)
RFC8439_TAG = h("1ae10b594f09e26a7e902ecbd0600691")


def test_chacha20_poly1305_rfc8439_section_2_8_2() -> None:
    sealed = aead_seal(RFC8439_KEY, RFC8439_NONCE, RFC8439_PT, RFC8439_AAD)
    assert sealed == RFC8439_CT + RFC8439_TAG
    assert aead_open(RFC8439_KEY, RFC8439_NONCE, sealed, RFC8439_AAD) == RFC8439_PT


def test_aead_open_rejects_tampering() -> None:
    sealed = RFC8439_CT + RFC8439_TAG
    with pytest.raises(AeadError):
        aead_open(RFC8439_KEY, RFC8439_NONCE, sealed, RFC8439_AAD + b"x")
    bad = bytearray(sealed)
    bad[5] ^= 1
    with pytest.raises(AeadError):
        aead_open(RFC8439_KEY, RFC8439_NONCE, bytes(bad), RFC8439_AAD)
    with pytest.raises(AeadError):
        aead_open(RFC8439_KEY, RFC8439_NONCE, b"short", RFC8439_AAD)


@pytest.mark.parametrize("n", [0, 1, 254, 255, 256, 1000])
def test_padding_buckets(n: int) -> None:
    data = b"\x00\x80" * (n // 2) + b"\x80" * (n % 2)
    padded = pad(data, 256)
    assert len(padded) % 256 == 0 and len(padded) > len(data)
    assert len(padded) - len(data) <= 256
    assert unpad(padded) == data


def test_unpad_rejects_garbage() -> None:
    with pytest.raises(MessageError):
        unpad(bytes(256))
    with pytest.raises(MessageError):
        unpad(b"abc")
