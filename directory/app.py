"""The authority's HTTP API: a small Starlette app over an :class:`~directory.authority.Authority`.

Bodies are bytes in the canonical encodings of :mod:`mixcore` (``application/octet-stream``);
the informational endpoints answer JSON. Errors are one line of ``text/plain``. Request bodies
are read with a hard size bound (413 beyond it) and a deadline on the whole body (408 beyond
it). :class:`GuardedApp` wraps the routes: it caps requests in progress in all and per source
address (503, with a reserve for the peer authorities) and turns any failure of one request
(a client that hung up mid-body, a bug) into one answer and at most one log line per kind and
minute — never a traceback per request. The app never logs per request: who uploaded or
fetched what, when, is metadata (hypercorn's access log is off too). See ``docs/directory.md``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from directory.authority import Authority
from directory.errors import DescriptorRejected
from directory.limits import HttpLimits, RequestLimiter
from directory.registry import MAX_UPLOAD_BYTES
from mixcore.ratelog import RateLimitedLog

log = logging.getLogger("directory")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

OCTETS = "application/octet-stream"
MAX_EPOCH = (1 << 32) - 1


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


async def read_limited(request: Request, limit: int, timeout: float = float("inf")) -> bytes:
    """The whole body, at most ``limit`` bytes (else _TooLarge) within ``timeout`` seconds
    (else _TooSlow); a client that hangs up raises starlette's ClientDisconnect."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(timeout):
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)
    raise _TooSlow


def _text(status: int, message: str) -> PlainTextResponse:
    return PlainTextResponse(message + "\n", status_code=status)


def _epoch(request: Request) -> int | None:
    raw = request.path_params["epoch"]
    if not raw.isdigit() or len(raw) > 10 or int(raw) > MAX_EPOCH:
        return None
    return int(raw)


def create_app(
    authority: Authority,
    *,
    limits: HttpLimits | None = None,
    peer_sources: Iterable[str] = (),
    refusals: RateLimitedLog | None = None,
) -> GuardedApp:
    """The ASGI app serving ``authority`` (limits default to the authority's config)."""
    limits = limits or authority.config.limits
    refusals = refusals or RateLimitedLog(log)

    async def post_descriptor(request: Request) -> Response:
        try:
            data = await read_limited(request, MAX_UPLOAD_BYTES, limits.body_timeout)
        except _TooLarge:
            refusals("too_large", "refused a descriptor upload over the size limit")
            return _text(413, f"descriptor too large (limit {MAX_UPLOAD_BYTES} bytes)")
        except _TooSlow:
            refusals("too_slow", "cut a descriptor upload whose body was slower than "
                     f"{limits.body_timeout:g} s")
            return _text(408, f"request body not complete within {limits.body_timeout:g} s")
        except ClientDisconnect:
            refusals("aborted", "a descriptor upload was aborted by its client")
            return _text(400, "client disconnected")
        if not data:
            return _text(400, "empty body: expected a signed descriptor")
        try:
            source = request.client.host if request.client is not None else None
            accepted = authority.submit_descriptor(data, source)
        except DescriptorRejected as exc:
            headers = {"retry-after": "60"} if exc.status == 503 else None
            response = _text(exc.status, exc.reason)
            if headers:
                response.headers.update(headers)
            return response
        what = "already held" if accepted.duplicate else "accepted"
        return _text(200, f"{what}: descriptor for epoch {accepted.epoch}")

    def _bytes_or_404(data: bytes | None, what: str) -> Response:
        if data is None:
            return _text(404, f"{what} not available")
        return Response(data, media_type=OCTETS)

    async def get_current(request: Request) -> Response:
        epoch = authority.current_epoch()
        return _bytes_or_404(authority.document(epoch), f"consensus for epoch {epoch}")

    def by_epoch(
        lookup: Callable[[int], bytes | None], what: str
    ) -> Callable[[Request], Awaitable[Response]]:
        """A GET handler for ``/{epoch}`` serving ``lookup(epoch)``: 400 for a malformed
        epoch, 404 while there is nothing for it."""

        async def get(request: Request) -> Response:
            epoch = _epoch(request)
            if epoch is None:
                return _text(400, "epoch must be a decimal integer")
            return _bytes_or_404(lookup(epoch), f"{what} for epoch {epoch}")

        return get

    async def get_authority(request: Request) -> Response:
        return JSONResponse(authority.public_info())

    async def get_health(request: Request) -> Response:
        current = authority.current_epoch()
        return JSONResponse(
            {
                "status": "ok",
                "name": authority.config.name,
                "current_epoch": current,
                "has_current_consensus": authority.document(current) is not None,
                "latest_published_epoch": authority.latest_published(),
                "statistics": {**authority.statistics(), "http": guarded.statistics()},
            }
        )

    routes = [
        Route("/v1/descriptor", post_descriptor, methods=["POST"]),
        Route("/v1/consensus/current", get_current, methods=["GET"]),
        Route("/v1/consensus/{epoch}", by_epoch(authority.document, "consensus"), methods=["GET"]),
        Route("/v1/vote/{epoch}", by_epoch(authority.vote, "vote"), methods=["GET"]),
        Route("/v1/signature/{epoch}", by_epoch(authority.signature, "signature"), methods=["GET"]),
        Route("/v1/authority", get_authority, methods=["GET"]),
        Route("/v1/health", get_health, methods=["GET"]),
    ]
    guarded = GuardedApp(
        Starlette(routes=routes), RequestLimiter(limits, peer_sources), refusals
    )
    return guarded


class GuardedApp:
    """ASGI wrapper: request caps per source and in all, and failures contained per request."""

    def __init__(self, app: Any, limiter: RequestLimiter, refusals: RateLimitedLog) -> None:
        self.app = app
        self.limiter = limiter
        self.refusals = refusals
        self.failed = 0

    def statistics(self) -> dict[str, int]:
        return {**self.limiter.statistics(), "requests_failed": self.failed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = self.limiter.admit(client[0] if client else None)
        if key is None:
            self.refusals("busy", "refused requests: too many in progress (from one source "
                          "or in all)")
            await _plain(send, 503, "too many requests in progress; try again shortly",
                         retry_after=True)
            return
        started = False

        async def tracking_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # one request failed; the authority serves on
            self.failed += 1
            self.refusals(f"failed:{type(exc).__name__}",
                          f"a request failed ({type(exc).__name__}); answered 500")
            if not started:
                with contextlib.suppress(Exception):  # the client may be gone already
                    await _plain(send, 500, "internal error")
        finally:
            self.limiter.release(key)


async def _plain(send: Send, status: int, message: str, *, retry_after: bool = False) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": (message + "\n").encode()})
