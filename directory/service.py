"""The trio shell of an authority: hypercorn serving the app, and the voting loop, in one nursery.

The loop only moves bytes and sleeps: it ticks the :class:`~directory.authority.Authority`,
performs the fetches the voting core asks for (concurrently, each under a timeout and a size
bound), feeds the answers back, and sleeps until the core's next deadline or the next poll.
A peer that is down, slow or sends garbage costs one timed-out request per poll, nothing more.

Shutdown: set the ``shutdown`` event (the CLI does on SIGINT/SIGTERM) and hypercorn stops
accepting, finishes requests in flight, and the loop is cancelled; or cancel the caller's scope.
Either way the store is closed; it is consistent at every point, since each event is committed
before its effect is served.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import ASGIFramework

from directory.app import create_app
from directory.authority import Authority
from directory.config import AuthorityConfig, format_listen
from directory.store import DirectoryStore
from directory.votes import MAX_SIGNATURE_MESSAGE_BYTES, MAX_VOTE_BYTES
from directory.voting import Fetch, FetchKind, VotingCore
from mixcore.encoding import MAX_DOCUMENT_BYTES
from mixcore.errors import MixnetError
from mixcore.keys import load_identity_key
from mixcore.net.directory_client import API_PREFIX, ResponseTooLarge, get_limited

log = logging.getLogger("directory")

_LIMITS = {
    FetchKind.VOTE: MAX_VOTE_BYTES,
    FetchKind.SIGNATURE: MAX_SIGNATURE_MESSAGE_BYTES,
    FetchKind.DOCUMENT: MAX_DOCUMENT_BYTES,
}


def open_authority(
    config: AuthorityConfig,
    *,
    now: Callable[[], float] = time.time,
    core_factory: Callable[..., VotingCore] = VotingCore,
) -> Authority:
    """Load the identity key, open the store and restore the state it holds."""
    identity = load_identity_key(config.identity_key_file)
    store = DirectoryStore(config.database_path)
    try:
        return Authority(config, identity, store, now=now, core_factory=core_factory)
    except BaseException:
        store.close()
        raise


async def _fetch_one(
    authority: Authority, client: httpx.AsyncClient, fetch: Fetch, timeout: float
) -> None:
    base = authority.peer_urls.get(fetch.authority_key)
    if base is None:
        return
    url = f"{base}{API_PREFIX}/{fetch.kind.value}/{fetch.epoch}"
    try:
        status, data = await get_limited(
            client, url, max_bytes=_LIMITS[fetch.kind], timeout=timeout
        )
    except (httpx.HTTPError, ResponseTooLarge):
        return
    if status != 200:
        return
    now = authority.now()
    core = authority.core
    handler = {
        FetchKind.VOTE: core.on_vote,
        FetchKind.SIGNATURE: core.on_signature,
        FetchKind.DOCUMENT: core.on_document,
    }[fetch.kind]
    try:
        events = handler(fetch.authority_key, fetch.epoch, data, now)
    except MixnetError as exc:
        log.debug("bad %s from a peer: %s", fetch.kind.value, exc)
        return
    authority.apply(events)


def _tick(authority: Authority) -> None:
    try:
        authority.tick()
    except MixnetError as exc:  # a bug or a corrupt store; keep serving what we have
        log.error("%s: voting step failed: %s", authority.config.name, exc)


async def voting_loop(authority: Authority, client: httpx.AsyncClient) -> None:
    """Tick, fetch what the core wants, repeat; sleep when nothing is pending."""
    core = authority.core
    poll = core.poll_interval
    timeout = max(0.5, min(5.0, authority.config.params.epoch_length / 4))
    while True:
        _tick(authority)
        now = authority.now()
        wanted = core.wanted(now)
        if wanted:
            # A round of fetches never delays the next step of the schedule: what is still
            # pending at the next deadline is cancelled and asked again in the next round.
            with trio.move_on_after(max(poll, core.next_deadline(now) - now)):
                async with trio.open_nursery() as nursery:
                    for fetch in wanted:
                        nursery.start_soon(_fetch_one, authority, client, fetch, timeout)
            _tick(authority)
        now = authority.now()
        deadline = core.next_deadline(now)
        sleep_for = deadline - now
        if core.wanted(now):
            sleep_for = min(sleep_for, poll)
        await trio.sleep(max(0.01, min(sleep_for, poll * 4)))


async def _peer_addresses(config: AuthorityConfig) -> set[str]:
    """The addresses of the peer authorities (their URLs' hosts, resolved once at start)."""
    addresses: set[str] = set()
    for peer in config.peers:
        host = urlsplit(peer.url).hostname
        if not host:
            continue
        try:
            infos = await trio.socket.getaddrinfo(host, None)
        except OSError:
            addresses.add(host)
            continue
        addresses.update(str(info[4][0]) for info in infos)
    return addresses


async def serve(
    config: AuthorityConfig,
    *,
    shutdown: trio.Event | None = None,
    now: Callable[[], float] = time.time,
    core_factory: Callable[..., VotingCore] = VotingCore,
    task_status: trio.TaskStatus[Authority] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one authority until ``shutdown`` is set or the caller cancels.

    ``task_status.started`` receives the :class:`Authority` once the HTTP socket is listening.
    """
    authority = open_authority(config, now=now, core_factory=core_factory)
    shutdown = shutdown if shutdown is not None else trio.Event()
    hc = HypercornConfig()
    hc.bind = [format_listen(config.listen_host, config.listen_port)]
    hc.accesslog = None
    hc.loglevel = "WARNING"
    hc.graceful_timeout = 2.0
    limits = config.limits
    # An idle connection, or one that never completes its request head, is closed after
    # keep_alive_timeout; a single read that stalls longer than this ends the connection.
    hc.keep_alive_timeout = limits.keep_alive_timeout
    hc.read_timeout = math.ceil(limits.keep_alive_timeout + limits.body_timeout)
    app = create_app(authority, limits=limits, peer_sources=await _peer_addresses(config))
    try:
        async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:

            async def run_http(*, task_status: trio.TaskStatus[list[str]]) -> None:
                # GuardedApp is an ASGI 3 app typed with starlette's (looser) scope types.
                await hypercorn_serve(
                    cast(ASGIFramework, app), hc, shutdown_trigger=shutdown.wait,
                    task_status=task_status,
                )
                # hypercorn returns after its graceful shutdown: stop voting too.
                nursery.cancel_scope.cancel()

            await nursery.start(run_http)
            nursery.start_soon(voting_loop, authority, client)
            log.info("%s: serving %s", config.name, config.url)
            task_status.started(authority)
    finally:
        authority.store.close()
        log.info("%s: stopped", config.name)
