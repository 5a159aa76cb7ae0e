"""The client side of the directory: uploads to every authority, and the consensus fetcher
(skip what fails or does not verify, cache per epoch, refresh before the epoch ends)."""

from __future__ import annotations

import random
from collections.abc import Callable

import httpx
import pytest
import trio

from mixcore.consensus import (
    AuthoritySet,
    VerifiedConsensus,
    assemble_signed_document,
    build_consensus,
    sign_document,
)
from mixcore.encoding import MAX_DOCUMENT_BYTES
from mixcore.epochs import EpochClock
from mixcore.keys import IdentityKey
from mixcore.net.directory_client import (
    ConsensusFetcher,
    ConsensusUnavailable,
    fetch_network,
    upload_descriptor,
)
from mixcore.params import NetworkParams

LENGTH = 10.0
PARAMS = NetworkParams(epoch_length=LENGTH, genesis_time=0.0, mean_hop_delay=0.1)
CLOCK = EpochClock.from_params(PARAMS)
KEYS = [IdentityKey.generate() for _ in range(3)]
AUTHORITIES = AuthoritySet.majority(k.public for k in KEYS)
URLS = ["http://a1", "http://a2", "http://a3"]


def document(epoch: int, signers: list[IdentityKey], params: NetworkParams = PARAMS) -> bytes:
    body = build_consensus(epoch, params, []).encode()
    return assemble_signed_document(body, [sign_document(body, k) for k in signers])


Handler = Callable[[str, int], httpx.Response]


def transport(routes: dict[str, Handler], log: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        host = f"http://{request.url.host}"
        log.append(host)
        epoch = int(request.url.path.rsplit("/", 1)[1])
        return routes[host](request.url.path, epoch)

    return httpx.MockTransport(handle)


def serving(docs: Callable[[int], bytes | None]) -> Handler:
    def handler(path: str, epoch: int) -> httpx.Response:
        data = docs(epoch)
        return httpx.Response(200, content=data) if data is not None else httpx.Response(404)

    return handler


def down(path: str, epoch: int) -> httpx.Response:
    raise httpx.ConnectError("refused")


def make_fetcher(routes: dict[str, Handler], log: list[str], **kwargs) -> ConsensusFetcher:
    client = httpx.AsyncClient(transport=transport(routes, log))
    return ConsensusFetcher(URLS, AUTHORITIES, CLOCK, client=client, **kwargs)


async def test_skips_down_and_non_verifying_authorities_and_caches() -> None:
    log: list[str] = []
    routes = {
        "http://a1": down,
        "http://a2": serving(lambda e: document(e, KEYS[:1])),  # too few signatures
        "http://a3": serving(lambda e: document(e, KEYS[:2])),
    }
    for seed in range(5):
        fetcher = make_fetcher(routes, log, rng=random.Random(seed))
        verified = await fetcher.fetch(4)
        assert verified.epoch == 4 and len(verified.signers) == 2
        assert log[-1] == "http://a3"
        before = len(log)
        assert await fetcher.fetch(4) is verified
        assert len(log) == before  # cached
        assert fetcher.statistics().fetched == 1


async def test_authorities_are_tried_in_random_order() -> None:
    log: list[str] = []
    good = serving(lambda e: document(e, KEYS))
    firsts = set()
    for seed in range(12):
        fetcher = make_fetcher(dict.fromkeys(URLS, good), log, rng=random.Random(seed))
        await fetcher.fetch(4)
        firsts.add(log[-1])
    assert firsts == set(URLS)


async def test_a_document_with_too_few_signatures_is_rejected() -> None:
    log: list[str] = []
    lone = serving(lambda e: document(e, KEYS[2:]))
    fetcher = make_fetcher(dict.fromkeys(URLS, lone), log)
    with pytest.raises(ConsensusUnavailable, match="1 valid signature from configured"):
        await fetcher.fetch(4)
    assert fetcher.cached(4) is None
    assert fetcher.statistics().rejected == 3


async def test_only_the_majority_document_is_accepted() -> None:
    """One authority signs a different document; another serves a body it tampered with
    under the honest signatures. Both are skipped; the majority's document is taken."""
    honest = document(4, KEYS[:2])
    odd_params = PARAMS.replace(payload_rate=99.0)
    minority = document(4, KEYS[2:], odd_params)
    odd_body = build_consensus(4, odd_params, []).encode()
    tampered = assemble_signed_document(
        odd_body, [sign_document(build_consensus(4, PARAMS, []), k) for k in KEYS[:2]]
    )
    routes = {
        "http://a1": serving(lambda e: minority),
        "http://a2": serving(lambda e: tampered),
        "http://a3": serving(lambda e: honest),
    }
    log: list[str] = []
    for seed in range(6):
        fetcher = make_fetcher(routes, log, rng=random.Random(seed))
        verified = await fetcher.fetch(4)
        assert verified.document.params == PARAMS


async def test_wrong_epoch_missing_and_oversized_are_skipped() -> None:
    log: list[str] = []
    routes = {
        "http://a1": serving(lambda e: document(e + 1, KEYS)),
        "http://a2": lambda p, e: httpx.Response(200, content=b"\x00" * (MAX_DOCUMENT_BYTES + 1)),
        "http://a3": serving(lambda e: None),
    }
    fetcher = make_fetcher(routes, log)
    with pytest.raises(ConsensusUnavailable) as info, trio.fail_after(60):
        await fetcher.fetch(4)
    reasons = dict(info.value.reasons)
    assert "expected epoch 4" in reasons["http://a1"]
    assert "unreachable" in reasons["http://a2"]
    assert reasons["http://a3"] == "HTTP 404"
    assert str(info.value).count("\n") == 0


async def test_run_keeps_the_current_and_next_documents(autojump_clock) -> None:
    published: dict[int, float] = {0: 0.0, 1: 0.7 * LENGTH, 2: 1.7 * LENGTH, 3: 2.7 * LENGTH}

    def docs(epoch: int) -> bytes | None:
        if trio.current_time() >= published.get(epoch, float("inf")):
            return document(epoch, KEYS)
        return None

    log: list[str] = []
    seen: list[tuple[int, float]] = []
    fetcher = make_fetcher(
        dict.fromkeys(URLS, serving(docs)),
        log,
        now=trio.current_time,
        refresh_lead=0.2,
        retry_interval=0.25,
        on_consensus=lambda v: seen.append((v.epoch, trio.current_time())),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(fetcher.run)
        assert fetcher.cached(0) is not None
        await trio.sleep(3 * LENGTH - 0.01)
        nursery.cancel_scope.cancel()
    assert [epoch for epoch, _ in seen] == [0, 1, 2, 3]
    for epoch, when in seen[1:]:
        # Fetched once published, before the epoch began.
        assert published[epoch] <= when < CLOCK.start(epoch)
    assert fetcher.statistics().cached == 4


async def test_upload_reports_each_authority() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        assert request.url.path == "/v1/descriptor"
        assert request.content == b"descriptor"
        if host == "a1":
            return httpx.Response(200, text="accepted: descriptor for epoch 3\n")
        if host == "a2":
            return httpx.Response(403, text="descriptor signature does not verify\n")
        raise httpx.ConnectError("refused")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        outcomes = await upload_descriptor(URLS, b"descriptor", client=client, timeout=1.0)
    assert [o.url for o in outcomes] == URLS
    assert [o.accepted for o in outcomes] == [True, False, False]
    assert outcomes[1].status == 403 and outcomes[1].reason.startswith("descriptor signature")
    assert outcomes[2].status is None and "unreachable" in outcomes[2].reason


def test_fetcher_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        ConsensusFetcher([], AUTHORITIES, CLOCK)
    with pytest.raises(ValueError):
        ConsensusFetcher(URLS, AUTHORITIES, CLOCK, refresh_lead=1.5)


async def test_run_starts_without_a_document_and_keeps_trying(autojump_clock) -> None:
    def docs(epoch: int) -> bytes | None:
        return document(epoch, KEYS) if trio.current_time() >= 3.0 else None

    log: list[str] = []
    fetcher = make_fetcher(
        dict.fromkeys(URLS, serving(docs)), log, now=trio.current_time, retry_interval=0.5
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(fetcher.run)
        assert fetcher.cached(0) is None
        assert fetcher.statistics().not_published >= 3
        await trio.sleep(4.0)
        assert fetcher.cached(0) is not None
        nursery.cancel_scope.cancel()


async def test_an_oversized_upload_answer_is_not_read() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=b"x" * 10_000_000)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        (outcome,) = await upload_descriptor(URLS[:1], b"d", client=client)
    assert outcome.status is None and not outcome.accepted


class Dripping(httpx.AsyncByteStream):
    """A hostile authority's body: one byte, then a pause, forever (on the test's clock)."""

    def __init__(self, pause: float) -> None:
        self.pause = pause

    async def __aiter__(self):  # type: ignore[override]
        while True:
            yield b"\x00"
            await trio.sleep(self.pause)


def dripping_transport(slow: set[str], good: Handler, log: list[str]) -> httpx.MockTransport:
    async def handle(request: httpx.Request) -> httpx.Response:
        host = f"http://{request.url.host}"
        log.append(host)
        if host in slow:
            # Headers at once, then a byte every 2 s: no single read ever times out.
            return httpx.Response(200, stream=Dripping(2.0))
        if request.url.path.endswith("/descriptor"):
            return httpx.Response(200, text="accepted\n")
        epoch = int(request.url.path.rsplit("/", 1)[1])
        return good(request.url.path, epoch)

    return httpx.MockTransport(handle)


async def test_a_slow_authority_never_delays_a_fetch_past_its_deadline(autojump_clock) -> None:
    """Issue 15 item 5: one authority answering a byte every 2 s made a fetch with a 3 s
    timeout take 30 s. Now the fetch is raced and the whole of it ends by its deadline."""
    good = serving(lambda e: document(e, KEYS))
    for seed in range(6):
        log: list[str] = []
        client = httpx.AsyncClient(transport=dripping_transport({"http://a1"}, good, log))
        fetcher = ConsensusFetcher(URLS, AUTHORITIES, CLOCK, client=client, timeout=3.0,
                                   rng=random.Random(seed))
        start = trio.current_time()
        with trio.fail_after(60):  # virtual seconds: a stalled fetch fails, never hangs
            verified = await fetcher.fetch(4)
        assert verified.epoch == 4
        # Asked first, the slow one costs one stagger (timeout / 2n); never the whole timeout.
        assert trio.current_time() - start <= fetcher.stagger + 1e-6
        assert log.count("http://a1") <= 1
    # Every authority slow: the fetch gives up at its deadline, with each one's reason.
    client = httpx.AsyncClient(transport=dripping_transport(set(URLS), good, []))
    fetcher = ConsensusFetcher(URLS, AUTHORITIES, CLOCK, client=client, timeout=3.0)
    start = trio.current_time()
    with pytest.raises(ConsensusUnavailable) as info, trio.fail_after(60):
        await fetcher.fetch(4)
    assert trio.current_time() - start == pytest.approx(3.0, abs=1e-6)
    assert set(dict(info.value.reasons)) == set(URLS)


async def test_an_upload_to_a_slow_authority_ends_at_its_deadline(autojump_clock) -> None:
    client = httpx.AsyncClient(
        transport=dripping_transport({"http://a2"}, serving(lambda e: None), [])
    )
    start = trio.current_time()
    with trio.fail_after(60):
        outcomes = await upload_descriptor(URLS, b"descriptor", client=client, timeout=2.0)
    assert trio.current_time() - start == pytest.approx(2.0, abs=1e-6)
    assert [o.accepted for o in outcomes] == [True, False, True]
    assert outcomes[1].status is None and "unreachable" in outcomes[1].reason


# -- joining: the current consensus, verified and fresh ------------------------------------------

NOW = 1000.0  # epoch 100 under PARAMS


def current_routes(docs: dict[str, bytes | Exception | None]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/consensus/current"
        served = docs[f"http://{request.url.host}"]
        if isinstance(served, Exception):
            raise served
        return httpx.Response(200, content=served) if served else httpx.Response(404)

    return httpx.MockTransport(handle)


async def _join(docs: dict[str, bytes | Exception | None]) -> VerifiedConsensus:
    async with httpx.AsyncClient(transport=current_routes(docs)) as client:
        return await fetch_network(URLS, AUTHORITIES, now=lambda: NOW, client=client,
                                   rng=random.Random(1))


async def test_join_takes_the_parameters_a_threshold_signed() -> None:
    other = PARAMS.replace(payload_rate=9.0)
    verified = await _join({
        "http://a1": httpx.ConnectError("refused"),
        "http://a2": document(100, KEYS[:1], other),  # one signature: not enough
        "http://a3": document(100, KEYS[1:]),
    })
    assert verified.document.params == PARAMS and verified.epoch == 100


async def test_join_refuses_too_few_signatures_and_stale_documents() -> None:
    with pytest.raises(ConsensusUnavailable) as caught:
        await _join({
            "http://a1": document(100, KEYS[:1]),
            "http://a2": document(40, KEYS),  # a replayed old document, fully signed
            "http://a3": None,
        })
    reasons = dict(caught.value.reasons)
    assert "signature" in reasons["http://a1"]
    assert "epoch 40" in reasons["http://a2"] and "epoch 100" in reasons["http://a2"]
    assert reasons["http://a3"] == "HTTP 404"
    assert "current consensus" in str(caught.value)
    ok = await _join({u: document(101, KEYS) for u in URLS})  # published ahead: fine
    assert ok.epoch == 101
