"""Epoch numbering from a fixed genesis time."""

from __future__ import annotations

import pytest

from mixcore.epochs import EpochClock
from mixcore.errors import ParamsError
from mixcore.params import NetworkParams


def test_epoch_boundaries() -> None:
    clock = EpochClock(genesis_time=1000.0, epoch_length=10.0)
    assert clock.epoch_at(1000.0) == 0
    assert clock.epoch_at(1009.999) == 0
    assert clock.epoch_at(1010.0) == 1
    assert clock.start(3) == 1030.0
    assert clock.end(3) == 1040.0
    assert clock.until_next(1032.5) == pytest.approx(7.5)


def test_before_genesis_is_an_error() -> None:
    with pytest.raises(ParamsError):
        EpochClock(1000.0, 10.0).epoch_at(999.0)


def test_from_params() -> None:
    params = NetworkParams(epoch_length=60, genesis_time=0)
    assert EpochClock.from_params(params).epoch_at(125.0) == 2


def test_invalid_length() -> None:
    with pytest.raises(ParamsError):
        EpochClock(0.0, 0.0)
