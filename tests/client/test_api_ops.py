"""The local API's one registry: operations are found by name and nothing else, a name is
registered once, a mounted registry answers with the context its adapter makes, and the
documented operation tables name exactly what the daemon answers."""

from __future__ import annotations

import re
from typing import Any

import pytest

import client.api
from client import daemon_ops
from client.api_ops import Registry, UnknownOperation
from client.messenger import ops as messenger_ops


def test_found_by_name_only_and_registered_once() -> None:
    registry: Registry[list[str]] = Registry()

    @registry.op("echo")
    def echo(seen: list[str], request: dict[str, Any]) -> Any:
        seen.append(request["op"])
        return request.get("x")

    seen: list[str] = []
    assert registry.handle(seen, {"op": "echo", "x": 5}) == 5 and seen == ["echo"]
    for bad in ({"op": "nope"}, {}, {"op": 7}, {"op": ["echo"]}):
        with pytest.raises(UnknownOperation, match="unknown operation"):
            registry.handle(seen, bad)
    with pytest.raises(ValueError, match="twice"):
        registry.op("echo")(echo)
    assert "echo" in registry and list(registry) == ["echo"]


def test_a_mounted_registry_gets_the_context_its_adapter_makes() -> None:
    inner: Registry[str] = Registry()
    inner.op("who")(lambda name, request: f"{name}:{request['op']}")
    outer: Registry[dict[str, str]] = Registry()
    outer.op("own")(lambda ctx, request: "own")

    def via(ctx: dict[str, str]) -> str:
        if "name" not in ctx:
            raise UnknownOperation("who")  # any typed error of the adapter reaches the caller
        return ctx["name"]

    outer.mount(inner, via)
    assert outer.handle({"name": "alice"}, {"op": "who"}) == "alice:who"
    assert outer.handle({}, {"op": "own"}) == "own"
    with pytest.raises(UnknownOperation):
        outer.handle({}, {"op": "who"})
    with pytest.raises(ValueError, match="twice"):
        outer.mount(inner, via)


def _documented(doc: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, doc, flags=re.MULTILINE))


def test_the_documented_tables_name_exactly_the_registered_operations() -> None:
    daemon_own = _documented(client.api.__doc__ or "", r"^\* ``(\w+)``")
    messenger = _documented(messenger_ops.__doc__ or "", r"^``(\w+)``\s")
    assert messenger == messenger_ops.REGISTRY.names()
    assert daemon_own | messenger == daemon_ops.REGISTRY.names()
    assert not daemon_own & messenger
