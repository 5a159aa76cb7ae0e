"""The fault injector's decisions, sans-IO: the ``--faults`` grammar (every mistake one line),
when each segment and set-up may arrive, partitions on a schedule, and the counters."""

from __future__ import annotations

import itertools
import random
import statistics
from pathlib import Path

import pytest
from helpers import scan_imports

import mixnet.faults as faults_module
from mixnet.faults import (
    MIN_RTO,
    MSS,
    SYN_RTO,
    FaultSchedule,
    FaultSpec,
    FaultSpecError,
    LinkCounters,
    LinkShaper,
    Partition,
    link_seed,
    parse_duration,
    parse_faults,
    retransmit_timeout,
    segments,
)


def test_the_decision_module_does_no_io() -> None:
    imported = scan_imports(Path(faults_module.__file__)).roots
    assert "random" in imported  # the scan sees imports
    assert not imported & {"trio", "socket", "asyncio", "subprocess", "time"}


def test_the_spec_of_the_issue_parses() -> None:
    spec = parse_faults("latency=40ms,jitter=10ms,loss=1%,partition=mix2:30s")
    assert spec == FaultSpec(0.04, 0.01, 0.01, (Partition("mix2", 30.0, None),))
    assert spec.active
    assert parse_faults(spec.text()) == spec


def test_units_partitions_with_a_start_and_spaces_around_items() -> None:
    spec = parse_faults(
        " latency=1.5s , jitter=250us,partition=auth1:2m@10s,partition=client2:500ms")
    assert spec.latency == 1.5 and spec.jitter == pytest.approx(250e-6)
    assert spec.partitions == (Partition("auth1", 120.0, 10.0), Partition("client2", 0.5, None))
    assert parse_faults(spec.text()) == spec
    assert not parse_faults("loss=0%").active


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty"),
    ("latency=40ms,,loss=1%", "empty item"),
    ("latency", "KEY=VALUE"),
    ("latency=", "KEY=VALUE"),
    ("delay=40ms", "unknown key 'delay'"),
    ("latency=40", "duration like 40ms"),
    ("latency=-4ms", "duration like 40ms"),
    ("latency=40 ms", "duration like 40ms"),
    ("latency=40ms,latency=50ms", "latency given twice"),
    ("latency=11s", "at most 10s"),
    ("latency=10ms,jitter=20ms", "jitter 20ms exceeds latency 10ms"),
    ("jitter=1ms", "exceeds latency"),
    ("loss=1", "percentage like 1%"),
    ("loss=0.01", "percentage like 1%"),
    ("loss=51%", "at most 50%"),
    ("partition=mix2", "HOST:DURATION"),
    ("partition=:30s", "HOST:DURATION"),
    ("partition=Mix2:30s", "HOST:DURATION"),
    ("partition=mix2:0s", "must be > 0"),
    ("partition=mix2:2h", "duration like"),
    ("partition=mix2:30s@", "partition start"),
    ("partition=mix2:30s@-1s", "partition start"),
    ("partition=mix2:30s,partition=mix2:5s", "one partition per host"),
])
def test_bad_specs_fail_in_one_line_naming_the_mistake(text: str, says: str) -> None:
    with pytest.raises(FaultSpecError) as err:
        parse_faults(text)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_partitions_must_name_hosts_of_the_testnet() -> None:
    spec = parse_faults("partition=mix9:3s")
    spec.check_hosts(["mix9", "auth1"])
    with pytest.raises(FaultSpecError, match=r"'mix9', which this testnet does not have "
                                             r"\(its hosts: auth1, mix1\)"):
        spec.check_hosts(["mix1", "auth1"])


def test_parse_duration_names_what_it_parses() -> None:
    assert parse_duration("2m", "x") == 120.0
    with pytest.raises(FaultSpecError, match="--faults partition start:"):
        parse_duration("soon", "partition start")


def shaper(text: str, seed: int = 1, schedule: FaultSchedule | None = None,
           src: str = "mix1", dst: str = "mix2") -> LinkShaper:
    return LinkShaper(parse_faults(text), src, dst, random.Random(seed), schedule)


def test_latency_alone_delays_every_segment_by_exactly_the_latency() -> None:
    link = shaper("latency=40ms")
    for now in (0.0, 0.001, 5.0):
        assert link.segment(now, MSS).release_at == pytest.approx(now + 0.04)
    assert link.counters.segments == 3 and link.counters.bytes == 3 * MSS
    assert link.counters.retransmits == 0
    assert link.counters.to_dict()["delay_mean"] == pytest.approx(0.04)


def test_jitter_stays_within_bounds_and_never_reorders_a_stream() -> None:
    link = shaper("latency=40ms,jitter=10ms")
    now, last, delays = 0.0, 0.0, []
    for _ in range(2000):
        now += 0.002  # segments closer together than the jitter
        release = link.segment(now, 100).release_at
        assert release >= last  # in order
        assert release - now <= 0.05 + 1e-9
        last = release
        delays.append(release - now)
    assert min(delays) >= 0.03 - 1e-9
    # Spread apart, the draws cover the whole range.
    apart = shaper("latency=40ms,jitter=10ms", seed=2)
    spread = [apart.segment(t * 1.0, 1).release_at - t for t in range(2000)]
    assert min(spread) < 0.031 and max(spread) > 0.049


def test_loss_becomes_retransmission_delay_with_backoff() -> None:
    link = shaper("latency=10ms,loss=20%")
    rto = retransmit_timeout(0.01, 0.0)
    assert rto == MIN_RTO  # the floor
    n = 20_000
    for t in range(n):
        decision = link.segment(t * 10.0, MSS)  # far apart: no in-order waits
        expected = 0.01 + sum(rto * 2**k for k in range(decision.retransmits))
        assert decision.release_at - t * 10.0 == pytest.approx(expected)
    # Lost attempts per segment: geometric with mean p / (1 - p) = 0.25.
    assert link.counters.retransmits / n == pytest.approx(0.25, rel=0.08)
    assert link.spec.expected_delay() == pytest.approx(
        link.counters.delay_total / n, rel=0.08)


def test_the_expected_delay_without_loss_is_the_latency() -> None:
    assert parse_faults("latency=40ms,jitter=10ms").expected_delay() == pytest.approx(0.04)
    assert FaultSpec().expected_delay() == 0.0


def test_a_late_segment_holds_back_the_ones_behind_it() -> None:
    link = shaper("latency=10ms,loss=50%", seed=3)
    releases = [link.segment(i * 0.001, MSS).release_at for i in range(200)]
    assert releases == sorted(releases)
    # Some segment waited only for the one before it (head-of-line blocking).
    assert any(b == a for a, b in itertools.pairwise(releases))


def test_a_partition_cuts_every_link_of_its_host_for_its_window() -> None:
    schedule = FaultSchedule(parse_faults("partition=mix2:5s"))
    assert schedule.cut_until("mix1", "mix2", 1.0) is None  # nothing before begin()
    windows = schedule.begin(100.0, traffic_duration=30.0)
    assert [(w.host, w.start, w.end) for w in windows] == [("mix2", 110.0, 115.0)]
    assert schedule.cut_until("mix1", "mix2", 112.0) == 115.0
    assert schedule.cut_until("mix2", "client1", 110.0) == 115.0
    assert schedule.cut_until("mix1", "mix3", 112.0) is None
    assert schedule.cut_until("mix1", "mix2", 109.9) is None
    assert schedule.cut_until("mix1", "mix2", 115.0) is None


def test_overlapping_cuts_of_a_links_two_ends_chain() -> None:
    schedule = FaultSchedule(parse_faults("partition=mix1:5s@0s,partition=mix2:5s@4s"))
    schedule.begin(0.0, traffic_duration=60.0)
    assert schedule.cut_until("mix1", "mix2", 1.0) == 9.0
    assert schedule.cut_until("mix1", "mix3", 1.0) == 5.0


def test_a_segment_sent_into_a_cut_arrives_one_delay_after_it_heals() -> None:
    schedule = FaultSchedule(parse_faults("latency=20ms,partition=mix2:5s@1s"))
    schedule.begin(0.0, traffic_duration=10.0)
    link = shaper("latency=20ms", schedule=schedule)
    assert link.segment(0.5, 10).release_at == pytest.approx(0.52)
    held = link.segment(2.0, 10)
    assert held.cut and held.release_at == pytest.approx(6.02)
    after = link.segment(2.1, 10)  # behind the held one
    assert after.release_at == pytest.approx(6.02)
    assert link.segment(7.0, 10).release_at == pytest.approx(7.02)
    assert link.counters.partition_stalls == 2


def test_a_set_up_waits_one_delay_or_until_a_cut_heals() -> None:
    schedule = FaultSchedule(parse_faults("latency=20ms,partition=mix2:5s@1s"))
    schedule.begin(0.0, traffic_duration=10.0)
    link = shaper("latency=20ms", schedule=schedule)
    quick = link.connect(0.0)
    assert not quick.cut and quick.release_at == pytest.approx(0.02)
    held = link.connect(3.0)
    assert held.cut and held.release_at == pytest.approx(6.02)
    assert link.counters.connections == 2 and link.counters.connections_held == 1
    # A lost SYN waits Linux's initial SYN timeout.
    lossy = shaper("latency=20ms,loss=50%", seed=5)
    retried = next(d for d in (lossy.connect(0.0) for _ in range(100)) if d.retransmits == 1)
    assert retried.release_at == pytest.approx(0.02 + SYN_RTO)


def test_an_outside_link_has_no_schedule_and_is_never_cut() -> None:
    link = LinkShaper(FaultSpec(), "-", "auth1", random.Random(0), None)
    assert link.segment(3.0, 5).release_at == 3.0
    assert not link.connect(3.0).cut


def test_segments_and_seeds() -> None:
    assert segments(b"x" * (2 * MSS + 1)) == [b"x" * MSS, b"x" * MSS, b"x"]
    assert segments(b"") == []
    assert link_seed(7, "a", "b").random() == link_seed(7, "a", "b").random()
    assert link_seed(7, "a", "b").random() != link_seed(7, "b", "a").random()


def test_counters_add_up_and_keep_the_largest_delay() -> None:
    a, b = shaper("latency=10ms"), shaper("latency=30ms")
    a.segment(0.0, 10)
    b.segment(0.0, 20)
    a.counters.add(b.counters)
    assert a.counters.segments == 2 and a.counters.bytes == 30
    assert a.counters.delay_max == pytest.approx(0.03)
    assert statistics.fmean([0.01, 0.03]) == pytest.approx(a.counters.to_dict()["delay_mean"])


def test_a_read_goes_on_whole_when_its_last_segment_may() -> None:
    link = shaper("latency=10ms,jitter=5ms,loss=30%", seed=9)
    twin = shaper("latency=10ms,jitter=5ms,loss=30%", seed=9)
    decision = link.chunk(1.0, 2 * MSS + 100)  # three segments
    alone = [twin.segment(1.0, n) for n in (MSS, MSS, 100)]
    assert decision.release_at == alone[-1].release_at == max(d.release_at for d in alone)
    assert decision.retransmits == sum(d.retransmits for d in alone)
    assert link.counters.segments == 3 and link.counters.chunks == 1
    assert link.counters.bytes == 2 * MSS + 100


def test_counters_survive_their_json_form() -> None:
    link = shaper("latency=10ms,loss=20%", seed=2)
    for t in range(50):
        link.chunk(float(t), 3000)
    link.counters.note("connect: TooSlowError")
    link.counters.lag_total, link.counters.lag_max = 0.5, 0.1
    data = link.counters.to_dict()
    assert LinkCounters.from_dict(data) == link.counters
    assert data["lag_mean"] == pytest.approx(0.5 / 50)
