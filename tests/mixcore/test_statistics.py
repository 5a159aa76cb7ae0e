"""Statistics snapshots: the JSON form reads back, and a renamed counter is refused by name."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field, fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.core import ClientStatistics
from directory.voting import VotingStatistics
from mixcore.link import LinkStatistics
from mixcore.net.directory_client import FetcherStatistics
from mixcore.statistics import Statistics, StatisticsError, Tally


@dataclass(frozen=True, slots=True)
class Inner(Statistics):
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Outer(Statistics):
    OPTIONAL = frozenset({"workers"})

    packets_in: int = 0
    mean_pool: float = 0.0
    by_reason: dict[str, int] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    workers: Inner | None = None


def test_the_json_form_reads_back_equal() -> None:
    snap = Outer(packets_in=3, mean_pool=1.5, by_reason={"replay": 2}, inner=Inner(4),
                 workers=Inner(1))
    document = json.loads(json.dumps(snap.as_dict()))
    assert document["inner"] == {"dropped": 4}
    assert Outer.from_dict(document) == snap


def test_a_renamed_counter_is_refused_by_name_not_read_as_zero() -> None:
    document = Outer(packets_in=3).as_dict()
    document["packets_received"] = document.pop("packets_in")
    with pytest.raises(StatisticsError, match=r"unknown counters \['packets_received'\]"):
        Outer.from_dict(document)
    del document["packets_received"]
    with pytest.raises(StatisticsError, match=r"missing counters \['packets_in'\]"):
        Outer.from_dict(document)


def test_optional_fields_may_be_absent_and_others_may_not() -> None:
    document = Outer(packets_in=1).as_dict()
    del document["workers"]
    assert Outer.from_dict(document).workers is None


@pytest.mark.parametrize("bad", [
    {"packets_in": "3"}, {"packets_in": True}, {"packets_in": 1.5}, {"mean_pool": "x"},
    {"by_reason": [1]}, {"by_reason": {"replay": "2"}}, {"inner": 3},
    {"inner": {"dropped": 1, "extra": 2}}, {"workers": 5},
])
def test_wrong_types_are_refused(bad: dict[str, object]) -> None:
    document = {**Outer().as_dict(), **bad}
    with pytest.raises(StatisticsError):
        Outer.from_dict(document)


def test_a_document_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(StatisticsError, match="expected an object"):
        Outer.from_dict([1, 2])  # type: ignore[arg-type]


def test_a_tally_counts_only_the_snapshots_integer_fields() -> None:
    tally = Tally(Outer)
    tally["packets_in"] += 2
    assert tally.counts() == {"packets_in": 2}
    with pytest.raises(KeyError, match="packets_inn"):
        tally["packets_inn"] += 1
    with pytest.raises(KeyError, match="mean_pool"):
        tally["mean_pool"] = 1  # a float field is a figure, not a counter
    with pytest.raises(KeyError):
        Tally(Outer, only=frozenset({"nope"}))


@given(st.lists(st.integers(0, 2**40), min_size=9, max_size=9))
def test_link_statistics_round_trip(values: list[int]) -> None:
    names = [f.name for f in fields(LinkStatistics)]
    snap = LinkStatistics(**dict(zip(names, values, strict=True)))
    assert LinkStatistics.from_dict(json.loads(json.dumps(snap.as_dict()))) == snap


def test_the_roles_snapshots_are_statistics() -> None:
    # The client's and the fetcher's counts go through the same reader as everything else.
    assert FetcherStatistics.from_dict(FetcherStatistics(fetched=2).as_dict()).fetched == 2
    assert issubclass(ClientStatistics, Statistics)
    assert VotingStatistics.from_dict(VotingStatistics(votes_cast=1).as_dict()).votes_cast == 1


@given(st.dictionaries(st.text(max_size=12), st.integers() | st.text(max_size=4), max_size=8))
def test_random_documents_never_crash_the_reader(document: dict[str, object]) -> None:
    with contextlib.suppress(StatisticsError):
        Outer.from_dict(document)
