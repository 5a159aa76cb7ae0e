"""The local API's operations: one registry of typed handlers.

Every operation is a function ``handler(context, request) -> result`` registered under its
name with :meth:`Registry.op`; the set of names *is* the registry (no list kept by hand). The
daemon's own operations (``client/daemon_ops.py``, context: the daemon) and the messenger's
(``client/messenger/ops.py``, context: the messenger and the daemon's send function) are two
registries; the daemon mounts the messenger's into its own (:meth:`Registry.mount`), with the
function that makes a messenger context from the daemon (and raises, with what to do, on a
client without a message store). One lookup answers every request.

Errors are types: a handler raises a :class:`~mixcore.errors.MixnetError` subclass and the
daemon's reply carries its text; nothing is matched by its message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from client.errors import ClientError

C = TypeVar("C")
D = TypeVar("D")
Request = dict[str, Any]
Handler = Callable[[C, Request], Any]


class UnknownOperation(ClientError):
    def __init__(self, op: object) -> None:
        super().__init__(f"unknown operation {op!r}")
        self.op = op


class Registry(Generic[C]):
    """Operations by name, each taking a context of type ``C`` and the request map."""

    def __init__(self) -> None:
        self._handlers: dict[str, Callable[[C, Request], Any]] = {}

    def op(self, name: str) -> Callable[[Handler[C]], Handler[C]]:
        """Register the decorated function as operation ``name``."""

        def register(handler: Handler[C]) -> Handler[C]:
            self._add(name, handler)
            return handler

        return register

    def mount(self, other: Registry[D], via: Callable[[C], D]) -> None:
        """Answer ``other``'s operations too, each with the context ``via`` makes from ours."""
        for name, handler in other._handlers.items():
            self._add(name, _adapted(handler, via))

    def handle(self, context: C, request: Request) -> Any:
        op = request.get("op")
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            raise UnknownOperation(op)
        return handler(context, request)

    def names(self) -> frozenset[str]:
        return frozenset(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._handlers))

    def _add(self, name: str, handler: Callable[[C, Request], Any]) -> None:
        if name in self._handlers:
            raise ValueError(f"operation {name!r} is registered twice")
        self._handlers[name] = handler


def _adapted(handler: Callable[[D, Request], Any], via: Callable[[C], D]
             ) -> Callable[[C, Request], Any]:
    def adapted(context: C, request: Request) -> Any:
        return handler(via(context), request)

    return adapted
