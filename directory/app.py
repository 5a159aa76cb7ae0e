"""The authority's HTTP API: a small Starlette app over an :class:`~directory.authority.Authority`.

Bodies are bytes in the canonical encodings of :mod:`mixcore` (``application/octet-stream``);
the informational endpoints answer JSON. Errors are one line of ``text/plain``. Request bodies
are read with a hard bound (413 beyond it). The app never logs per request: who uploaded or
fetched what, when, is metadata (hypercorn's access log is off too). See ``docs/directory.md``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from directory.authority import Authority
from directory.errors import DescriptorRejected
from directory.registry import MAX_UPLOAD_BYTES

OCTETS = "application/octet-stream"
MAX_EPOCH = (1 << 32) - 1


class _TooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _text(status: int, message: str) -> PlainTextResponse:
    return PlainTextResponse(message + "\n", status_code=status)


def _epoch(request: Request) -> int | None:
    raw = request.path_params["epoch"]
    if not raw.isdigit() or len(raw) > 10 or int(raw) > MAX_EPOCH:
        return None
    return int(raw)


def create_app(authority: Authority) -> Starlette:
    """The ASGI app serving ``authority``."""

    async def post_descriptor(request: Request) -> Response:
        try:
            data = await read_limited(request, MAX_UPLOAD_BYTES)
        except _TooLarge:
            return _text(413, f"descriptor too large (limit {MAX_UPLOAD_BYTES} bytes)")
        if not data:
            return _text(400, "empty body: expected a signed descriptor")
        try:
            accepted = authority.submit_descriptor(data)
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
                "statistics": authority.statistics(),
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
    return Starlette(routes=routes)
