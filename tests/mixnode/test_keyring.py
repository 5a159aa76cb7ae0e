"""Which mix keys are live, retired and erased around epoch boundaries."""

from __future__ import annotations

import pytest

from mixcore.epochs import EpochClock
from mixcore.sphinx import MixPrivateKey
from mixnode.keyring import KeyRing

CLOCK = EpochClock(genesis_time=0.0, epoch_length=100.0)


def ring() -> KeyRing:
    r = KeyRing(CLOCK, grace=10.0)
    for epoch in (0, 1, 2):
        r.add(epoch, MixPrivateKey.generate())
    return r


def test_mid_epoch_only_the_current_key() -> None:
    assert [e for e, _ in ring().live(150.0)] == [1]


def test_previous_key_within_grace_and_next_key_before_boundary() -> None:
    r = ring()
    assert [e for e, _ in r.live(105.0)] == [1, 0]
    assert [e for e, _ in r.live(195.0)] == [1, 2]
    assert [e for e, _ in r.live(110.0)] == [1]


def test_retired_then_erased() -> None:
    r = ring()
    assert [e for e, _ in r.retired(115.0)] == [0]
    assert r.erase_expired(115.0) == []
    assert r.erase_expired(120.0) == [0]
    assert r.epochs() == [1, 2]
    assert r.retired(125.0) == []


def test_grace_must_fit_in_an_epoch() -> None:
    with pytest.raises(ValueError):
        KeyRing(CLOCK, grace=100.0)
