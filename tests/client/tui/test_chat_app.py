"""The chat screen, headless (textual's pilot), over the real messenger operations of two
in-memory users whose ciphertexts are handed over directly: open a conversation, send, watch
the state reach "delivered"; a key change shows the warning banner; a timer shows its icon.
textual runs on asyncio while the suite runs async tests on trio, so each test drives its
scenario with ``asyncio.run``."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_async

from client.e2e.identity import UserIdentity
from client.messenger import ops
from client.messenger.messenger import Envelope, Messenger
from client.storage import KdfParams, Store
from client.tui.app import TIMER_ICON, ChatApp, render_message

#: Argon2id far below the floor the store enforces; only tests may ask for it.
FAST_KDF = KdfParams(memory_kib=32, iterations=1, insecure_for_tests=True)


class Pair:
    """Alice (behind the fake API) and Bob; ``hold`` keeps envelopes in flight."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.alice = self.user("alice")
        self.bob = self.user("bob")
        self.alice.add_contact(self.bob.card.to_text(), "bob")
        self.bob.add_contact(self.alice.card.to_text(), "alice")
        self.hold = False
        self.in_flight: list[Envelope] = []

    def user(self, name: str, **kw: Any) -> Messenger:
        store = Store.create(self.root / f"{name}.db", "pw", kdf=FAST_KDF)
        store.save_identity(UserIdentity.generate())
        return Messenger(store, provider=kw.get("provider", os.urandom(32)),
                         mailbox=kw.get("mailbox", os.urandom(16)), mailbox_key=os.urandom(32),
                         clock=time.time)

    def to_bob(self, envelopes: list[Envelope]) -> None:
        self.in_flight.extend(envelopes)
        if not self.hold:
            self.flush()

    def flush(self) -> None:
        while self.in_flight:
            replies = self.bob.receive(self.in_flight.pop(0).data)
            for r in replies or []:
                self.alice.receive(r.data)


class FakeApi:
    """Alice's daemon: the real messenger operations, and a status the test can change."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.status: dict[str, Any] = {"name": "alice", "connected": True, "epoch": 7,
                                       "provider_name": "provider1"}

    async def call(self, op: str, **args: Any) -> Any:
        if op == "status":
            return self.status
        return ops.handle(self.pair.alice, {"op": op, **args}, self.pair.to_bob)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.alice.store.close()
    p.bob.store.close()


async def until(pilot: Any, condition: Callable[[], bool], what: str) -> None:
    """Let the app run until ``condition()`` holds: what the app's poller (every 0.05 s here)
    picks up appears within some ticks, however slow the machine; the deadline only bounds a
    hang (a fixed pause raced the poller on a loaded machine). ``helpers.wait_for_async``,
    pausing through the pilot (textual runs on asyncio, not trio)."""
    await wait_for_async(condition, what=what, interval=0.05, sleep=pilot.pause)


def test_open_send_and_see_delivered(pair: Pair) -> None:
    asyncio.run(_open_send_and_see_delivered(pair))


async def _open_send_and_see_delivered(pair: Pair) -> None:
    pair.hold = True
    app = ChatApp(FakeApi(pair), poll_interval=0.05)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.entries == ["bob"]
        await pilot.click("#contacts ListItem")
        await pilot.pause()
        assert app.current == "bob"
        await pilot.press(*"hello", "enter")
        await pilot.pause()
        assert "hello" in app.conversation_text and "(queued)" in app.conversation_text
        pair.flush()  # bob's daemon stores it and answers with a receipt
        await until(pilot, lambda: "(delivered)" in app.conversation_text, "the receipt shown")
        assert app.query_one("#input").value == ""


def test_key_change_banner_appears(pair: Pair) -> None:
    asyncio.run(_key_change_banner_appears(pair))


async def _key_change_banner_appears(pair: Pair) -> None:
    app = ChatApp(FakeApi(pair), poll_interval=0.05)
    async with app.run_test() as pilot:
        await app.open("bob")
        await pilot.pause()
        assert app.banner_text == ""
        bob = pair.bob.card
        bob2 = pair.user("bob2", provider=bob.provider, mailbox=bob.mailbox)
        # (changed: a key change is the user adding bob's new card under his name; a stranger
        # writing from bob's address is a separate message request and shows no banner here)
        pair.alice.add_contact(bob2.card.to_text(), "bob")
        await until(pilot, lambda: "safety number changed" in app.banner_text, "the banner")
        assert app.query_one("#banner").has_class("shown")
        await pilot.press(*"hi", "enter")
        await pilot.pause()
        assert "blocked" in str(app.query_one("#error").render())
        bob2.store.close()


def test_timer_icon_on_disappearing_conversation(pair: Pair) -> None:
    asyncio.run(_timer_icon_on_disappearing_conversation(pair))


async def _timer_icon_on_disappearing_conversation(pair: Pair) -> None:
    pair.to_bob(pair.alice.propose_timer("bob", 30))
    for env in pair.bob.accept_timer("alice"):
        pair.alice.receive(env.data)
    app = ChatApp(FakeApi(pair), poll_interval=0.05)
    async with app.run_test() as pilot:
        await app.open("bob")
        await pilot.press(*"vanishing", "enter")
        await pilot.pause()
        assert TIMER_ICON in app.title_text
        assert TIMER_ICON in app.conversation_text


def test_render_failed_state_with_reason() -> None:
    line = render_message({
        "at": 0.0, "direction": "out", "kind": "text", "from": "you", "text": "x[y]",
        "state": "failed", "reason": "retry_budget_exhausted",
    })
    assert "failed: retry_budget_exhausted" in line and r"x\[y]" in line


class MeterApi(FakeApi):
    """The fake API plus the daemon's ``status`` with an anonymity meter."""

    def __init__(self, pair: Pair, meter: dict[str, Any] | None) -> None:
        super().__init__(pair)
        self.meter = meter

    async def call(self, op: str, **args: Any) -> Any:
        if op == "status":
            return {**self.status, "anonymity": self.meter}
        return await super().call(op, **args)


def test_header_shows_the_anonymity_meter_and_its_warning(pair: Pair) -> None:
    asyncio.run(_header_meter(pair))


async def _header_meter(pair: Pair) -> None:
    meter = {"sender_entropy_bits": 4.1, "message_entropy_bits": 6.3, "warnings": []}
    api = MeterApi(pair, meter)
    app = ChatApp(api, poll_interval=0.05)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert "4.1 bits sender" in app.anonymity_text and "6.3 bits message" in app.anonymity_text
        assert not app.query_one("#anonymity").has_class("warn")
        api.meter = {**meter, "sender_entropy_bits": 1.2,
                     "warnings": ["possible active attack: mix loops missing in layer 2"]}
        await app.action_refresh()
        assert "layer 2" in app.anonymity_text
        assert app.query_one("#anonymity").has_class("warn")
        api.meter = None
        await app.action_refresh()
        assert "waiting" in app.anonymity_text


def test_opens_on_the_composer_with_the_first_conversation(pair: Pair) -> None:
    """Enter did nothing on start-up until Down was pressed: now the first conversation is
    open and the composer has the focus, so typing and Enter send at once."""
    asyncio.run(_opens_on_the_composer(pair))


async def _opens_on_the_composer(pair: Pair) -> None:
    app = ChatApp(FakeApi(pair), poll_interval=0.05)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.current == "bob"
        assert app.focused is app.query_one("#input")
        assert app.query_one("#contacts").index == 0
        await pilot.press(*"straight away", "enter")
        await pilot.pause()
        assert "straight away" in app.conversation_text
        assert texts_of(pair.bob, "alice") == ["straight away"]


def texts_of(m: Messenger, name: str) -> list[str]:
    return [x["text"] for x in m.conversation(name)["messages"] if x["direction"] != "event"]


def test_one_key_moves_between_conversations_and_the_composer_keeps_focus(
    pair: Pair,
) -> None:
    asyncio.run(_one_key_moves(pair))


async def _one_key_moves(pair: Pair) -> None:
    carol = pair.user("carol")
    pair.alice.add_contact(carol.card.to_text(), "carol")
    pair.alice.create_group("team", ["bob", "carol"])
    app = ChatApp(FakeApi(pair), poll_interval=0.05)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.entries == ["bob", "carol", "#team"] and app.current == "bob"
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.current == "carol" and app.query_one("#contacts").index == 1
        assert app.focused is app.query_one("#input")
        await pilot.press("ctrl+n", "ctrl+n")  # wraps round
        await pilot.pause()
        assert app.current == "bob"
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert app.current == "#team"
    carol.store.close()


def test_header_shows_who_you_are_and_whether_you_are_connected(pair: Pair) -> None:
    asyncio.run(_header(pair))


async def _header(pair: Pair) -> None:
    api = FakeApi(pair)
    app = ChatApp(api, poll_interval=0.05)
    async with app.run_test() as pilot:
        await pilot.pause()
        assert "alice" in app.header_text and "connected" in app.header_text
        assert "epoch 7" in app.header_text and "provider1" in app.header_text
        api.status = {**api.status, "connected": False}
        await until(pilot, lambda: "not connected" in app.header_text, "the header's change")
