"""Talking to the directory authorities over HTTP: upload a descriptor, fetch the consensus.

Nodes and clients use this module; they never import the directory role. It only moves bytes:
whether a document is acceptable is decided by :func:`mixcore.consensus.verify_consensus`
(I/O-free), against the :class:`~mixcore.consensus.AuthoritySet` the caller was configured with.
An authority is trusted for nothing: a document that does not verify is skipped like an
unreachable server, and the next authority is tried.

HTTP goes through ``httpx.AsyncClient``, which runs under trio (via anyio). Every response body
is read with a hard size bound, so a hostile server cannot make us buffer more than
:data:`~mixcore.encoding.MAX_DOCUMENT_BYTES`, and every request runs under one deadline for the
whole exchange (connect, headers and body together): httpx's own timeouts bound each read, so a
server answering one byte every few seconds would otherwise hold a request for as long as it
likes. Nothing here logs per request: which authority a client asked when is metadata;
:meth:`ConsensusFetcher.statistics` has counts instead.

**Why one module of ~450 lines:** uploads and fetches share the deadline, racing and refusal-
counting logic that keeps one slow or lying authority from stalling a node or a client.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import trio

from mixcore.consensus import AuthoritySet, VerifiedConsensus, verify_consensus
from mixcore.encoding import MAX_DOCUMENT_BYTES
from mixcore.epochs import EpochClock
from mixcore.errors import ConsensusError
from mixcore.statistics import Statistics, Tally

API_PREFIX = "/v1"
DEFAULT_TIMEOUT = 10.0
#: Epochs of verified documents kept in memory.
CACHE_EPOCHS = 4
#: Bytes of an upload answer we read (a one-line reason).
MAX_REASON_BYTES = 4096


class ResponseTooLarge(Exception):
    """The server sent more than we agreed to read."""


class DeadlineExceeded(httpx.TimeoutException):
    """The whole request (not one read of it) took longer than its deadline."""


class ConsensusUnavailable(ConsensusError):
    """No configured authority served a verifying document for the epoch (reasons attached)."""

    def __init__(self, epoch: int | None, reasons: Sequence[tuple[str, str]]) -> None:
        detail = "; ".join(f"{url}: {reason}" for url, reason in reasons) or "no authorities"
        which = "the current consensus" if epoch is None else f"consensus for epoch {epoch}"
        super().__init__(f"no valid {which} ({detail})")
        self.epoch = epoch
        self.reasons = tuple(reasons)


async def get_limited(
    client: httpx.AsyncClient, url: str, *, max_bytes: int, timeout: float
) -> tuple[int, bytes]:
    """GET ``url`` and return ``(status, body)``; raise ResponseTooLarge past ``max_bytes``."""
    return await request_limited(client, "GET", url, max_bytes=max_bytes, timeout=timeout)


async def request_limited(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request; ``(status, body)``, reading at most ``max_bytes`` of the answer.

    ``timeout`` is a deadline on the whole request: past it the request is abandoned and
    :class:`DeadlineExceeded` (an ``httpx.TimeoutException``) is raised, however the server
    paces its bytes.
    """
    with trio.move_on_after(timeout) as scope:
        return await _request(
            client, method, url, max_bytes=max_bytes, timeout=timeout, content=content,
            headers=headers,
        )
    assert scope.cancelled_caught
    raise DeadlineExceeded(f"no complete answer within {timeout:g} s")


async def _request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    content: bytes | None,
    headers: dict[str, str] | None,
) -> tuple[int, bytes]:
    async with client.stream(
        method, url, timeout=timeout, content=content, headers=headers
    ) as response:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise ResponseTooLarge(f"response of {declared} bytes, limit {max_bytes}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise ResponseTooLarge(f"response over {max_bytes} bytes")
            chunks.append(chunk)
        return response.status_code, b"".join(chunks)



@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process: building one loads the CA store (~10-40 ms of CPU), and a
    node or client that polls for the next consensus would otherwise pay it every poll (it
    was most of an idle node's CPU)."""
    return ssl.create_default_context()


def new_http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=_tls_context())

def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line[:limit]


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    """What one authority answered to a descriptor upload."""

    url: str
    status: int | None
    """HTTP status, or None when the authority could not be reached."""
    reason: str

    @property
    def accepted(self) -> bool:
        return self.status == 200


async def upload_descriptor(
    urls: Sequence[str],
    signed_descriptor: bytes,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    client: httpx.AsyncClient | None = None,
) -> tuple[UploadOutcome, ...]:
    """Upload a signed descriptor to every authority concurrently; one outcome per URL, in order.

    Never raises for a server's answer or absence: the caller decides what "enough authorities
    accepted" means (a node is listed when a majority of all authorities hold its descriptor).
    """
    outcomes: list[UploadOutcome | None] = [None] * len(urls)

    async def one(index: int, base: str, http: httpx.AsyncClient) -> None:
        url = base.rstrip("/")
        try:
            status, body = await request_limited(
                http,
                "POST",
                f"{url}{API_PREFIX}/descriptor",
                max_bytes=MAX_REASON_BYTES,
                timeout=timeout,
                content=signed_descriptor,
                headers={"content-type": "application/octet-stream"},
            )
        except (httpx.HTTPError, ResponseTooLarge) as exc:
            outcomes[index] = UploadOutcome(url, None, f"unreachable: {type(exc).__name__}")
            return
        text = body.decode("utf-8", errors="replace")
        outcomes[index] = UploadOutcome(url, status, _one_line(text))

    async def run(http: httpx.AsyncClient) -> None:
        async with trio.open_nursery() as nursery:
            for index, base in enumerate(urls):
                nursery.start_soon(one, index, base, http)

    if client is not None:
        await run(client)
    else:
        async with new_http_client() as http:
            await run(http)
    return tuple(o for o in outcomes if o is not None)


@dataclass(frozen=True, slots=True)
class FetcherStatistics(Statistics):
    """What the consensus fetcher did, in counts."""

    fetched: int = 0
    rejected: int = 0
    """Documents that failed verification (signatures, threshold, epoch, parameters)."""
    unreachable: int = 0
    not_published: int = 0
    """Authorities that answered but had no document for the epoch yet."""
    cached: int = 0
    """Verified documents held now (a size, not a count of events)."""


class ConsensusFetcher:
    """Fetches, verifies and caches the consensus per epoch from any reachable authority.

    Authorities are raced in a random order (from the injected ``rng``), staggered so that
    normally only one is asked (load spreads and no single authority learns every client's
    schedule); ones that fail, stall or serve a document that does not verify (too few
    signatures, wrong epoch, malformed) are overtaken by the next. ``timeout`` bounds the whole
    fetch. :meth:`run` keeps
    the current epoch's document and fetches the next one ``refresh_lead`` of an epoch before
    the current one ends (authorities publish it about 0.3 epoch ahead).
    """

    def __init__(
        self,
        urls: Sequence[str],
        authorities: AuthoritySet,
        clock: EpochClock,
        *,
        rng: random.Random | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        refresh_lead: float = 0.2,
        retry_interval: float | None = None,
        stagger: float | None = None,
        client: httpx.AsyncClient | None = None,
        now: Callable[[], float] = time.time,
        on_consensus: Callable[[VerifiedConsensus], None] | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one authority URL is needed")
        if not 0 < refresh_lead < 1:
            raise ValueError("refresh_lead must be a fraction of an epoch in (0, 1)")
        self.urls = tuple(u.rstrip("/") for u in urls)
        self.authorities = authorities
        self.clock = clock
        self.rng = rng if rng is not None else random.SystemRandom()
        self.timeout = timeout
        self.refresh_lead = refresh_lead
        self.retry_interval = (
            retry_interval if retry_interval is not None else min(5.0, clock.epoch_length / 20)
        )
        self.stagger = stagger if stagger is not None else timeout / (2 * len(self.urls))
        """Seconds before the next authority is asked while the previous has not answered."""
        self._client = client
        self._now = now
        self._on_consensus = on_consensus
        self._cache: OrderedDict[int, VerifiedConsensus] = OrderedDict()
        self._stats = Tally(FetcherStatistics)

    def cached(self, epoch: int) -> VerifiedConsensus | None:
        return self._cache.get(epoch)

    def statistics(self) -> FetcherStatistics:
        return FetcherStatistics(**{**self._stats.counts(), "cached": len(self._cache)})

    def _remember(self, verified: VerifiedConsensus) -> None:
        self._cache[verified.epoch] = verified
        self._cache.move_to_end(verified.epoch)
        while len(self._cache) > CACHE_EPOCHS:
            self._cache.popitem(last=False)
        if self._on_consensus is not None:
            self._on_consensus(verified)

    async def fetch(self, epoch: int) -> VerifiedConsensus:
        """The verified document for ``epoch`` (cached), or raise ConsensusUnavailable."""
        hit = self._cache.get(epoch)
        if hit is not None:
            return hit
        if self._client is not None:
            return await self._fetch_with(self._client, epoch)
        async with new_http_client() as client:
            return await self._fetch_with(client, epoch)

    def _epoch_at(self, now: float) -> int:
        """The current epoch, or -1 before the network's genesis."""
        return -1 if now < self.clock.genesis_time else self.clock.epoch_at(now)

    async def current(self) -> VerifiedConsensus:
        """The document for the epoch now running (before genesis: the first epoch's)."""
        return await self.fetch(max(0, self._epoch_at(self._now())))

    async def _fetch_with(self, client: httpx.AsyncClient, epoch: int) -> VerifiedConsensus:
        """Race the authorities: the first verifying document wins, the rest are cancelled.

        Authorities are asked in a random order, the next one as soon as the previous failed or
        after ``stagger`` seconds without an answer, so a healthy network costs one request and
        a slow or hostile authority costs at most ``stagger``. The whole fetch ends by
        ``timeout`` whatever the servers do.
        """
        order = list(self.urls)
        self.rng.shuffle(order)
        reasons: dict[str, str] = {}
        won: list[VerifiedConsensus] = []
        deadline = trio.current_time() + self.timeout

        async def attempt(url: str, done: trio.Event) -> None:
            try:
                verified = await self._try_one(client, url, epoch, deadline, reasons)
            finally:
                done.set()
            if verified is not None and not won:
                won.append(verified)
                race.cancel_scope.cancel()

        with trio.move_on_at(deadline):
            async with trio.open_nursery() as race:
                for url in order:
                    if won:
                        break
                    done = trio.Event()
                    race.start_soon(attempt, url, done)
                    with trio.move_on_after(self.stagger):
                        await done.wait()
        if won:
            self._stats["fetched"] += 1
            self._remember(won[0])
            return won[0]
        for url in order:
            if url not in reasons:
                self._stats["unreachable"] += 1
                reasons[url] = f"no answer within the {self.timeout:g} s deadline"
        raise ConsensusUnavailable(epoch, [(url, reasons[url]) for url in order])

    async def _try_one(
        self,
        client: httpx.AsyncClient,
        url: str,
        epoch: int,
        deadline: float,
        reasons: dict[str, str],
    ) -> VerifiedConsensus | None:
        """One authority's document for ``epoch`` if it verifies; else its reason is noted."""
        try:
            status, data = await get_limited(
                client,
                f"{url}{API_PREFIX}/consensus/{epoch}",
                max_bytes=MAX_DOCUMENT_BYTES,
                timeout=max(0.0, deadline - trio.current_time()),
            )
        except (httpx.HTTPError, ResponseTooLarge) as exc:
            self._stats["unreachable"] += 1
            reasons[url] = f"unreachable: {type(exc).__name__}"
            return None
        if status != 200:
            self._stats["not_published"] += 1
            reasons[url] = f"HTTP {status}"
            return None
        try:
            verified = verify_consensus(data, self.authorities, expected_epoch=epoch)
        except ConsensusError as exc:
            self._stats["rejected"] += 1
            reasons[url] = str(exc)
            return None
        return verified

    async def _fetch_until(self, epoch: int, give_up_at: float) -> VerifiedConsensus | None:
        while True:
            try:
                return await self.fetch(epoch)
            except ConsensusUnavailable:
                if self._now() + self.retry_interval >= give_up_at:
                    return None
                await trio.sleep(self.retry_interval)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the current and the next epoch's documents fresh, forever.

        ``task_status.started()`` fires after the first attempt to get the current epoch's
        document, successful or not (``cached`` tells which); retries continue in the loop.
        """
        length = self.clock.epoch_length
        if self._epoch_at(self._now()) >= 0:
            with contextlib.suppress(ConsensusUnavailable):
                await self.current()
        task_status.started()
        while True:
            now = self._now()
            epoch = self._epoch_at(now)
            if epoch >= 0 and self.cached(epoch) is None:
                await self._fetch_until(epoch, self.clock.end(epoch))
            refresh_at = self.clock.end(epoch) - self.refresh_lead * length
            delay = refresh_at - self._now()
            if delay > 0:
                await trio.sleep(delay)
            if self.cached(epoch + 1) is None:
                await self._fetch_until(epoch + 1, self.clock.end(epoch + 1))
            delay = self.clock.end(epoch) - self._now()
            if delay > 0 and not math.isinf(delay):
                await trio.sleep(delay)


class StaleConsensus(ConsensusError):
    """A correctly signed document that is not for the epoch its own parameters give now: a
    replayed old document, or a clock far off."""


async def fetch_network(
    urls: Sequence[str],
    authorities: AuthoritySet,
    *,
    now: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    client: httpx.AsyncClient | None = None,
) -> VerifiedConsensus:
    """The network's current consensus, for joining it: its parameters are what a newcomer
    uses, so they must be authenticated, and the consensus is what the threshold signs.

    Asks each authority (random order) for ``/v1/consensus/current`` and returns the first
    document that carries ``authorities.threshold`` valid signatures and is *fresh*: its epoch
    is the one its own parameters give for ``now`` (one epoch of slack either way for clock
    skew and early publication; epoch 0 before genesis), so an old signed document replayed by
    whoever sits on the path cannot pin an old view. :class:`ConsensusUnavailable` lists each
    authority's reason otherwise (``HTTP 404`` while a new network has not published yet).
    """
    order = [u.rstrip("/") for u in urls]
    (rng or random.SystemRandom()).shuffle(order)
    reasons: list[tuple[str, str]] = []

    async def ask(http: httpx.AsyncClient) -> VerifiedConsensus:
        for url in order:
            try:
                status, data = await get_limited(
                    http, f"{url}{API_PREFIX}/consensus/current",
                    max_bytes=MAX_DOCUMENT_BYTES, timeout=timeout,
                )
            except (httpx.HTTPError, ResponseTooLarge) as exc:
                reasons.append((url, f"unreachable: {type(exc).__name__}"))
                continue
            if status != 200:
                reasons.append((url, f"HTTP {status}"))
                continue
            try:
                verified = verify_consensus(data, authorities)
                _check_fresh(verified, now())
            except ConsensusError as exc:
                reasons.append((url, str(exc)))
                continue
            return verified
        raise ConsensusUnavailable(None, reasons)

    if client is not None:
        return await ask(client)
    async with new_http_client() as http:
        return await ask(http)


def _check_fresh(verified: VerifiedConsensus, now: float) -> None:
    params = verified.document.params
    clock = EpochClock.from_params(params)
    expected = 0 if now < clock.genesis_time else clock.epoch_at(now)
    if abs(verified.epoch - expected) > 1:
        raise StaleConsensus(
            f"the document is for epoch {verified.epoch} but its parameters give epoch "
            f"{expected} now (a replayed old document, or this machine's clock is off)"
        )
