"""The mailbox payload a provider parses: SURB then data, with a bounded data size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixcore.errors import MixnetError, PacketError
from mixcore.payload import MailboxPayload, data_capacity
from mixcore.sphinx import MixPrivateKey, PathHop, Sphinx

SX = Sphinx()
HOP = PathHop(b"n" * 32, MixPrivateKey.generate().public)


def test_round_trip_at_full_capacity() -> None:
    surb, _ = SX.create_surb([HOP], [], b"m" * 16)
    data = b"d" * data_capacity(SX.geometry)
    payload = MailboxPayload(surb, data).encode(SX.geometry)
    assert len(payload) == SX.geometry.payload_capacity
    decoded = MailboxPayload.decode(payload, SX.geometry)
    assert decoded.data == data
    assert decoded.surb == surb


def test_too_much_data_and_malformed() -> None:
    surb, _ = SX.create_surb([HOP], [], b"m" * 16)
    with pytest.raises(PacketError):
        MailboxPayload(surb, b"d" * (data_capacity(SX.geometry) + 1)).encode(SX.geometry)
    with pytest.raises(PacketError):
        MailboxPayload.decode(b"\x02" + surb.encode(), SX.geometry)
    with pytest.raises(PacketError):
        MailboxPayload.decode(b"\x01" + surb.encode()[:-1], SX.geometry)


@given(st.binary(max_size=500))
def test_fuzz_decode(data: bytes) -> None:
    try:
        MailboxPayload.decode(data, SX.geometry)
    except MixnetError:
        return
    assert data[0] == 1
