"""Joining a network from its bootstrap line: the one synchronous step every ``init`` that
joins (a client, a mix node, ``mixnet params --join``) shares.

It fetches the current consensus from the bootstrap's authorities and verifies it against the
bootstrap's threshold (:func:`mixcore.net.directory_client.fetch_network`), so the network
parameters a newcomer adopts are the ones a threshold of authorities signed, never built-in
defaults. A network that is up but has not published yet (``HTTP 404``) is waited for, up to
``wait`` seconds; unreachable or non-verifying authorities fail at once, with every reason.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from mixcore.bootstrap import Bootstrap
from mixcore.consensus import VerifiedConsensus
from mixcore.errors import MixnetError
from mixcore.loading import load_bootstrap
from mixcore.net.directory_client import ConsensusUnavailable, fetch_network

RETRY_INTERVAL = 1.0


class JoinError(MixnetError):
    """No authority of the bootstrap served a fresh document with enough valid signatures."""


def join_network(
    value: str,
    *,
    wait: float = 30.0,
    notify: Callable[[str], None] | None = None,
) -> tuple[Bootstrap, VerifiedConsensus]:
    """``(bootstrap, verified current consensus)`` from a bootstrap line or file."""
    bootstrap = load_bootstrap(value)

    async def main() -> VerifiedConsensus:
        deadline = trio.current_time() + wait
        told = False
        while True:
            try:
                return await fetch_network(bootstrap.urls, bootstrap.authority_set)
            except ConsensusUnavailable as exc:
                not_yet = any(reason == "HTTP 404" for _, reason in exc.reasons)
                if not not_yet or trio.current_time() + RETRY_INTERVAL > deadline:
                    raise JoinError(f"cannot join the network: {exc}") from None
                if notify is not None and not told:
                    notify("the network has not published a consensus yet; waiting")
                    told = True
            await trio.sleep(RETRY_INTERVAL)

    return bootstrap, trio.run(main)
