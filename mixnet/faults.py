"""Link faults between the hosts of a testnet, sans-IO: the ``--faults`` spec and the decision
of when each piece of a TCP stream may arrive.

Every link of the network is a TCP stream carrying a Noise session whose AEAD nonces count the
frames, so a fault injector cannot drop bytes or cells: the next frame would fail to decrypt
and the link would close, which is a crash, not a lossy network. TCP itself never loses bytes
either; what a lossy path costs a TCP user is time. So this module models loss the way TCP
turns it into delay: the stream is cut into segments of :data:`MSS` bytes, each segment is
lost with probability ``loss`` per attempt, and each lost attempt is retransmitted after a
retransmission timeout that doubles each time (:func:`retransmit_timeout`, Linux's 200 ms
floor). Later segments wait behind a late one (TCP delivers in order), so one loss stalls the
whole link for the timeout, exactly the head-of-line blocking a real lossy path causes.
Whole-packet loss above the link layer is what mixes already do on their own (full queues,
replays), and the clients' ARQ is what the testnet then measures.

Latency and jitter: each segment's one-way delay is ``latency`` plus a uniform draw in
``[-jitter, +jitter]`` (so ``jitter <= latency``), never less than the previous segment's
arrival (no reordering within a stream). A connection's set-up waits one such delay too.

Partitions: ``partition=HOST:DURATION[@START]`` cuts every link to and from HOST for DURATION,
START seconds after the traffic begins (default: a third into ``--duration``). A segment sent
during a cut arrives one delay after the cut heals (TCP's retransmission reaching the other
side); a connection attempted during a cut is held until the cut heals, and is abandoned if its
initiator gives up first (the Noise handshake timeout). Connections are never reset by a cut:
a partition shorter than TCP's own timeout (minutes) stalls a link, it does not close it.

Everything here takes the time and an ``rng`` as arguments (a seeded ``random.Random`` in tests)
and keeps counters; :mod:`mixnet.relay` is the trio shell that moves the bytes.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from mixcore.errors import MixnetError

#: Bytes of stream per modeled segment (an Ethernet MTU's TCP payload).
MSS = 1448
#: Linux's floor on the retransmission timeout.
MIN_RTO = 0.2
#: Linux's initial retransmission timeout of a SYN.
SYN_RTO = 1.0
#: Retransmissions of one segment before the model stops drawing (a real stack would reset the
#: connection after ~15; at the spec's highest loss this is a 2^-8 tail).
MAX_RETRANSMITS = 8
MAX_LOSS = 0.5
MAX_LATENCY = 10.0
MAX_PARTITION = 3600.0
#: Direction of a link that starts outside the testnet (the launcher fetching the consensus):
#: never faulted, the launcher is the observer, not part of the network.
OUTSIDE = "-"

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")
_HOST = re.compile(r"[a-z][a-z0-9_-]{0,31}")
KEYS = ("latency", "jitter", "loss", "partition")


class FaultSpecError(MixnetError):
    """A ``--faults`` spec that does not parse or names a host the testnet does not have."""


@dataclass(frozen=True, slots=True)
class Partition:
    host: str
    duration: float
    start: float | None = None
    """Seconds after the traffic begins; None: a third into the traffic's duration."""

    def text(self) -> str:
        at = "" if self.start is None else f"@{_fmt(self.start)}"
        return f"partition={self.host}:{_fmt(self.duration)}{at}"


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """What ``--faults`` asked for. The zero spec injects nothing (links are still counted)."""

    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    partitions: tuple[Partition, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.latency or self.jitter or self.loss or self.partitions)

    def text(self) -> str:
        parts = [f"latency={_fmt(self.latency)}", f"jitter={_fmt(self.jitter)}",
                 f"loss={self.loss * 100:g}%"]
        return ",".join(parts + [p.text() for p in self.partitions])

    def check_hosts(self, hosts: Iterable[str]) -> None:
        """Every partitioned host is one the testnet has."""
        known = sorted(set(hosts))
        for p in self.partitions:
            if p.host not in known:
                raise FaultSpecError(
                    f"--faults partition names {p.host!r}, which this testnet does not have "
                    f"(its hosts: {', '.join(known)})"
                )

    def expected_delay(self) -> float:
        """Mean one-way delay of a segment: the latency plus what losses add on average
        (jitter is symmetric; the in-order wait behind a late segment is left out)."""
        rto = retransmit_timeout(self.latency, self.jitter)
        extra = 0.0
        for k in range(1, MAX_RETRANSMITS + 1):
            # exactly k lost attempts, then one that arrives (or the model's cap)
            p_k = self.loss**k * ((1 - self.loss) if k < MAX_RETRANSMITS else 1.0)
            extra += p_k * rto * (2**k - 1)
        return self.latency + extra


def _fmt(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def parse_duration(text: str, what: str) -> float:
    """``40ms``, ``1.5s``, ``250us``, ``2m``: a number and a unit, nothing else."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise FaultSpecError(
            f"--faults {what}: expected a duration like 40ms, 1.5s or 2m, got {text!r}"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_faults(text: str) -> FaultSpec:
    """``latency=40ms,jitter=10ms,loss=1%,partition=mix2:30s[@10s]`` (``partition`` may be
    repeated, every other key given at most once). Every mistake is one line naming it."""
    if not text.strip():
        raise FaultSpecError("--faults is empty; e.g. --faults latency=40ms,jitter=10ms,loss=1%")
    values: dict[str, float] = {}
    partitions: list[Partition] = []
    for raw in text.split(","):
        item = raw.strip()
        key, eq, value = item.partition("=")
        if not item:
            raise FaultSpecError(f"--faults {text!r}: an empty item (two commas?)")
        if not eq or not value:
            raise FaultSpecError(f"--faults item {item!r}: expected KEY=VALUE")
        if key not in KEYS:
            raise FaultSpecError(
                f"--faults: unknown key {key!r} (known: {', '.join(KEYS)})"
            )
        if key == "partition":
            partitions.append(_parse_partition(value))
            continue
        if key in values:
            raise FaultSpecError(f"--faults: {key} given twice")
        if key == "loss":
            match = _PERCENT.fullmatch(value)
            if match is None:
                raise FaultSpecError(f"--faults loss: expected a percentage like 1%, got {value!r}")
            values[key] = float(match.group(1)) / 100
        else:
            values[key] = parse_duration(value, key)
    latency, jitter, loss = (values.get(k, 0.0) for k in ("latency", "jitter", "loss"))
    if latency > MAX_LATENCY:
        raise FaultSpecError(f"--faults latency: at most {MAX_LATENCY:g}s")
    if jitter > latency:
        raise FaultSpecError(
            f"--faults jitter {_fmt(jitter)} exceeds latency {_fmt(latency)}: each delay is "
            "latency +- jitter and cannot be negative"
        )
    if loss > MAX_LOSS:
        raise FaultSpecError(f"--faults loss: at most {MAX_LOSS:.0%} (above, no link works)")
    hosts = [p.host for p in partitions]
    if len(set(hosts)) != len(hosts):
        raise FaultSpecError("--faults: one partition per host")
    return FaultSpec(latency, jitter, loss, tuple(partitions))


def _parse_partition(value: str) -> Partition:
    host, colon, rest = value.partition(":")
    if not colon or _HOST.fullmatch(host) is None:
        raise FaultSpecError(
            f"--faults partition: expected HOST:DURATION[@START] like mix2:30s, got {value!r}"
        )
    duration_text, at, start_text = rest.partition("@")
    duration = parse_duration(duration_text, "partition duration")
    if not 0 < duration <= MAX_PARTITION:
        raise FaultSpecError(
            f"--faults partition {host}: the duration must be > 0 and at most {MAX_PARTITION:g}s"
        )
    start = parse_duration(start_text, "partition start") if at else None
    return Partition(host, duration, start)


def retransmit_timeout(latency: float, jitter: float) -> float:
    """TCP's first retransmission timeout on a path with this one-way delay: about the round
    trip plus four times its variation, never under Linux's 200 ms."""
    return max(MIN_RTO, 2 * latency + 4 * 2 * jitter)


@dataclass(frozen=True, slots=True)
class Window:
    host: str
    start: float
    end: float


class FaultSchedule:
    """When partitions cut which hosts, on one clock; empty until :meth:`begin`."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.windows: tuple[Window, ...] = ()
        self.began: float | None = None

    def begin(self, now: float, traffic_duration: float) -> tuple[Window, ...]:
        """The traffic starts at ``now``: place every partition."""
        self.began = now
        self.windows = tuple(
            Window(p.host, now + start, now + start + p.duration)
            for p in self.spec.partitions
            for start in [traffic_duration / 3 if p.start is None else p.start]
        )
        return self.windows

    def cut_until(self, src: str, dst: str, t: float) -> float | None:
        """If the link src->dst is cut at time ``t``, when the cut (all cuts that overlap it)
        ends; else None."""
        end: float | None = None
        moved = True
        while moved:
            moved = False
            at = t if end is None else end
            for w in self.windows:
                if w.host in (src, dst) and w.start <= at < w.end and (end is None or w.end > end):
                    end, moved = w.end, True
        return end


@dataclass(slots=True)
class LinkCounters:
    """What one direction of one link carried and what the faults cost it (counts and
    seconds only)."""

    connections: int = 0
    connections_held: int = 0
    """Set-ups held by a partition."""
    connections_abandoned: int = 0
    """Held set-ups whose initiator gave up before the cut healed."""
    connect_failed: int = 0
    resets: int = 0
    segments: int = 0
    bytes: int = 0
    retransmits: int = 0
    """Modeled TCP retransmissions (lost segment attempts)."""
    partition_stalls: int = 0
    """Segments sent into a cut and held until it healed."""
    delay_total: float = 0.0
    delay_max: float = 0.0
    chunks: int = 0
    """Reads the relay passed on whole (each one or more segments)."""
    lag_total: float = 0.0
    lag_max: float = 0.0
    """Seconds the relay wrote a chunk after its decided time: its own queueing, which must
    stay small beside the faults, or the relay is the bottleneck (a loaded machine)."""
    errors: dict[str, int] = field(default_factory=dict)
    """Failed set-ups and resets by kind (``connect: ConnectionRefusedError``)."""

    def note(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["errors"] = dict(self.errors)
        out["delay_mean"] = self.delay_total / self.segments if self.segments else 0.0
        out["lag_mean"] = self.lag_total / self.chunks if self.chunks else 0.0
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinkCounters:
        """The counters :meth:`to_dict` wrote (derived means are dropped)."""
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: (dict(v) if k == "errors" else v)
                                  for k, v in data.items() if k in names}
        return cls(**values)

    def add(self, other: LinkCounters) -> None:
        for name in (f.name for f in fields(self)):
            if name in ("delay_max", "lag_max"):
                setattr(self, name, max(getattr(self, name), getattr(other, name)))
            elif name == "errors":
                for kind, n in other.errors.items():
                    self.errors[kind] = self.errors.get(kind, 0) + n
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True, slots=True)
class Decision:
    release_at: float
    retransmits: int = 0
    cut: bool = False


@dataclass
class LinkShaper:
    """One direction of one link (src -> dst): when each segment and set-up may arrive.

    ``schedule`` None: the link is never cut (a link from outside the testnet)."""

    spec: FaultSpec
    src: str
    dst: str
    rng: random.Random
    schedule: FaultSchedule | None = None
    counters: LinkCounters = field(default_factory=LinkCounters)
    _last: float = -math.inf

    def _draw(self, rto: float) -> tuple[float, int]:
        delay = self.spec.latency
        if self.spec.jitter:
            delay += self.rng.uniform(-self.spec.jitter, self.spec.jitter)
        losses = 0
        while losses < MAX_RETRANSMITS and self.spec.loss and self.rng.random() < self.spec.loss:
            delay += rto * 2**losses
            losses += 1
        return max(0.0, delay), losses

    def _heal(self, now: float, t: float) -> tuple[float, bool]:
        """A send at ``now`` into a cut goes through one delay after the cut ends."""
        if self.schedule is None:
            return t, False
        end = self.schedule.cut_until(self.src, self.dst, now)
        if end is None:
            return t, False
        delay, _ = self._draw(retransmit_timeout(self.spec.latency, self.spec.jitter))
        return max(t, end + delay), True

    def segment(self, now: float, nbytes: int) -> Decision:
        """A segment of ``nbytes`` read at ``now``: when it may be written on."""
        delay, losses = self._draw(retransmit_timeout(self.spec.latency, self.spec.jitter))
        t, cut = self._heal(now, now + delay)
        t = max(t, self._last)  # in order, as TCP delivers
        self._last = t
        c = self.counters
        c.segments += 1
        c.bytes += nbytes
        c.retransmits += losses
        c.partition_stalls += cut
        c.delay_total += t - now
        c.delay_max = max(c.delay_max, t - now)
        return Decision(t, losses, cut)

    def chunk(self, now: float, nbytes: int) -> Decision:
        """A read of ``nbytes`` at ``now``, cut into segments each decided as
        :meth:`segment` does; the read goes on whole when its last segment may (a cell is of
        use only once all of it arrived, so holding its first segments for the last costs the
        receiver nothing, and the relay one write per read instead of one per segment)."""
        decision = Decision(now)
        losses, cut = 0, False
        for offset in range(0, nbytes, MSS):
            decision = self.segment(now, min(MSS, nbytes - offset))
            losses += decision.retransmits
            cut = cut or decision.cut
        self.counters.chunks += 1
        return Decision(decision.release_at, losses, cut)

    def connect(self, now: float) -> Decision:
        """A connection set up at ``now``: when the relay may open its other side."""
        delay, losses = self._draw(SYN_RTO)
        t, cut = self._heal(now, now + delay)
        self.counters.connections += 1
        self.counters.retransmits += losses
        self.counters.connections_held += cut
        return Decision(t, losses, cut)


def segments(data: bytes, mss: int = MSS) -> list[bytes]:
    """``data`` cut into modeled segments."""
    return [data[i : i + mss] for i in range(0, len(data), mss)]


def link_seed(seed: int | None, src: str, dst: str) -> random.Random:
    """Each directed link's own generator, reproducible from the run's seed."""
    if seed is None:
        return random.Random()
    return random.Random(f"{seed}:{src}>{dst}")
