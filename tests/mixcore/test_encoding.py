"""Canonical msgpack: one encoding per value; and the msgpack >= 1 guard."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixcore.encoding import pack, unpack_canonical
from mixcore.errors import DecodeError


def test_msgpack_is_at_least_1() -> None:
    # sphinxmix drags in msgpack-python 0.5.6, which shares the msgpack/ folder.
    assert tuple(msgpack.version) >= (1, 0)


def test_round_trip() -> None:
    value = [1, b"bytes", "text", [True, None, 2.5, [-7]]]
    assert unpack_canonical(pack(value)) == value


@pytest.mark.parametrize(
    "encoded",
    [
        b"\xcc\x05",  # 5 as uint8 instead of positive fixint
        b"\xd0\x01",  # 1 as int8
        b"\xda\x00\x01a",  # 'a' as str16
        b"\x91\x01\x00",  # trailing byte
        b"\x81\x01\x02",  # a map
        b"\xca\x00\x00\x00\x00",  # float32
        b"\xc1",  # never used
        b"",
    ],
)
def test_non_canonical_or_invalid_is_rejected(encoded: bytes) -> None:
    with pytest.raises(DecodeError):
        unpack_canonical(encoded)


def test_size_limit() -> None:
    with pytest.raises(DecodeError, match="limit"):
        unpack_canonical(pack(b"x" * 100), max_bytes=50)


@given(st.binary(max_size=200))
def test_fuzz_only_decode_errors(data: bytes) -> None:
    try:
        value = unpack_canonical(data)
    except DecodeError:
        return
    assert pack(value) == data
