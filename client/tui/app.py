"""The chat screen: a header saying who you are and whether your daemon is connected, contacts
and groups on the left (verification badges, unread counts), the open conversation on the right
with each message's delivery state, a warning banner while a contact's key change is
unacknowledged, a timer icon on disappearing conversations, and the composer. It opens on the
first conversation with the composer focused (type, Enter sends); Ctrl+N / Ctrl+P move to the
next / previous conversation and leave the focus in the composer. Everything goes through the
daemon's API (:class:`client.tui.api.ChatApi`), so the screen holds no keys and can be driven by
a fake API in tests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.widgets import Footer, Input, Label, ListItem, ListView, Static

from client.tui.api import ChatApi, DaemonApi
from mixcore.errors import MixnetError

BADGES = {"verified": "✓", "unverified": "·", "key_changed": "⚠"}
STATES = {
    "queued": "queued", "sent": "sent", "at_provider": "at their provider",
    "delivered": "delivered", "failed": "failed",
}
TIMER_ICON = "⏱"


def render_message(m: dict[str, Any]) -> str:
    at = datetime.fromtimestamp(m["at"]).strftime("%H:%M")
    if m["direction"] == "event":
        return f"[dim]{at} — {_escape(m['text'])}[/dim]"
    body = _escape(m["text"])
    if m["kind"] == "file":
        body = f"📎 {_escape(m['file']['name'])} ({m['file']['size']} bytes)"
    line = f"{at} [b]{_escape(m['from'])}[/b]: {body}"
    if m["direction"] == "out":
        state = STATES.get(m.get("state", ""), m.get("state", ""))
        if m.get("recipients", 1) > 1:
            state += f" {m['delivered']}/{m['recipients']}"
        if "fragments_total" in m and m.get("state") in ("queued", "sent"):
            state += f" {m['fragments_acked']}/{m['fragments_total']}"
        if m.get("state") == "failed" and m.get("reason"):
            state += f": {_escape(m['reason'])}"
        line += f"  [i]({state})[/i]"
    if m.get("expires_at"):
        line += f" {TIMER_ICON}"
    return line


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def header_line(status: dict[str, Any] | None) -> str:
    """Who you are and the daemon's state, from its ``status`` (None: it is not running)."""
    if status is None:
        return "daemon not running (start it: mixnet client run)"
    you = f"you: {status.get('name') or '?'}"
    if status.get("identity"):
        you += f" (key {status['identity'][:8]}…)"
    parts = [you]
    if status.get("provider_name"):
        parts.append(f"provider {status['provider_name']}")
    parts.append("connected" if status.get("connected") else "not connected (retrying)")
    if status.get("epoch") is not None:
        parts.append(f"epoch {status['epoch']}")
    return " · ".join(parts)


class ChatApp(App[None]):
    ENABLE_COMMAND_PALETTE = False  # its Ctrl+P is ours: the previous conversation
    CSS = """
    #header { background: $primary; color: $text; padding: 0 1; }
    #header.down { background: $error; }
    #contacts { width: 28; border-right: solid $primary; }
    #contacts:focus { border-right: thick $accent; }
    #input:focus { border: tall $accent; }
    #banner { background: $error; color: $text; padding: 0 1; display: none; }
    #anonymity { color: $text-muted; padding: 0 1; }
    #anonymity.warn { background: $warning; color: $text; }
    #banner.shown { display: block; }
    #title { background: $boost; padding: 0 1; }
    #conversation { height: 1fr; padding: 0 1; }
    #error { color: $error; height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit"),
        Binding("ctrl+n", "move(1)", "Next chat", priority=True),
        Binding("ctrl+p", "move(-1)", "Previous chat", priority=True),
        Binding("ctrl+r", "refresh", "Refresh"),
    ]

    def __init__(self, api: ChatApi, *, poll_interval: float = 1.0) -> None:
        super().__init__()
        self.api = api
        self.poll_interval = poll_interval
        self.current: str | None = None
        self.entries: list[str] = []
        self.conversation_text = ""
        self.banner_text = ""
        self.title_text = ""
        self.anonymity_text = ""
        self.header_text = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="header")
        with Horizontal():
            yield ListView(id="contacts")
            with Vertical():
                yield Static("", id="anonymity")
                yield Static("", id="banner")
                yield Static("select a conversation", id="title")
                with VerticalScroll(id="conversation-scroll"):
                    yield Static("", id="conversation")
                yield Static("", id="error")
                yield Input(placeholder="type a message, Enter to send", id="input")
        yield Footer()

    async def on_mount(self) -> None:
        await self.action_refresh()
        if self.current is None and self.entries:
            await self.open(self.entries[0])
        else:
            self.query_one("#input", Input).focus()
        self.set_interval(self.poll_interval, self.action_refresh)

    async def action_move(self, step: int) -> None:
        """The next (or previous) conversation, wrapping round; the composer keeps focus."""
        if not self.entries:
            return
        here = self.entries.index(self.current) if self.current in self.entries else -1
        await self.open(self.entries[(here + step) % len(self.entries)])

    def _error(self, text: str) -> None:
        self.query_one("#error", Static).update(_escape(text))

    async def action_refresh(self) -> None:
        """Poll the daemon; a tick that lands while the screen is being torn down is skipped."""
        try:
            await self._refresh()
        except NoMatches:
            return

    async def _refresh_anonymity(self) -> None:
        """The meter's line (mixcore.anonymity): expected entropy now, and its warnings."""
        try:
            status = await self.api.call("status")
        except MixnetError:
            return
        meter = status.get("anonymity") if isinstance(status, dict) else None
        if not meter:
            text, warn = "anonymity: waiting for the nodes' traffic figures", False
        else:
            text = (f"anonymity ~{meter['sender_entropy_bits']:.1f} bits sender, "
                    f"~{meter['message_entropy_bits']:.1f} bits message")
            warn = bool(meter["warnings"])
            if warn:
                text += "  ⚠ " + "; ".join(meter["warnings"])
        self.anonymity_text = text
        line = self.query_one("#anonymity", Static)
        line.update(_escape(text))
        line.set_class(warn, "warn")

    async def _refresh(self) -> None:
        await self._refresh_anonymity()
        await self._refresh_header()
        try:
            contacts = await self.api.call("contacts")
            groups = await self.api.call("groups")
        except MixnetError as exc:
            self._error(str(exc))
            return
        entries = [c["name"] for c in contacts if not c["group_member_only"]]
        labels = []
        for c in contacts:
            if c["group_member_only"]:
                continue
            label = f"{BADGES.get(c['verification'], '·')} {c['name']}"
            if c["timer"]:
                label += f" {TIMER_ICON}"
            if c["unread"]:
                label += f" ({c['unread']})"
            labels.append(label)
        for g in groups:
            entries.append(f"#{g['name']}")
            labels.append(f"# {g['name']}" + (f" ({g['unread']})" if g["unread"] else ""))
        view = self.query_one("#contacts", ListView)
        if entries != self.entries:
            index = view.index
            await view.clear()
            await view.extend([ListItem(Label(label)) for label in labels])
            self.entries = entries
            if index is not None and index < len(entries):
                view.index = index
        else:
            for item, label in zip(view.children, labels, strict=False):
                item.query_one(Label).update(label)
        if self.current is not None:
            await self.show_conversation(self.current)

    async def _refresh_header(self) -> None:
        try:
            status = await self.api.call("status")
        except MixnetError:
            status = None
        self.header_text = header_line(status)
        header = self.query_one("#header", Static)
        header.update(_escape(self.header_text))
        header.set_class(not (status or {}).get("connected"), "down")

    async def on_list_view_selected(self, event: ListView.Selected) -> None:
        index = event.list_view.index
        if index is not None and index < len(self.entries):
            await self.open(self.entries[index])

    async def open(self, name: str) -> None:
        self.current = name
        if name in self.entries:
            view = self.query_one("#contacts", ListView)
            if view.index != self.entries.index(name):
                view.index = self.entries.index(name)
        await self.show_conversation(name)
        self.query_one("#input", Input).focus()

    async def show_conversation(self, name: str) -> None:
        try:
            conv = await self.api.call("conversation", name=name)
        except MixnetError as exc:
            self._error(str(exc))
            return
        lines = [render_message(m) for m in conv["messages"]]
        self.conversation_text = "\n".join(lines) or "[dim]no messages yet[/dim]"
        self.query_one("#conversation", Static).update(self.conversation_text)
        contact = conv.get("contact")
        title = name
        banner = ""
        if contact is not None:
            title = f"{BADGES.get(contact['verification'], '')} {name} ({contact['verification']})"
            if contact["timer"]:
                title += f"  {TIMER_ICON} {contact['timer']} s"
            if contact["verification"] == "key_changed":
                banner = (
                    f"⚠ {name}'s safety number changed. Sending is blocked until you compare "
                    f"it: mixnet contact verify {name}"
                )
        self.title_text = title
        self.banner_text = banner
        self.query_one("#title", Static).update(_escape(title))
        bar = self.query_one("#banner", Static)
        bar.update(_escape(banner))
        bar.set_class(bool(banner), "shown")
        self.query_one("#conversation-scroll", VerticalScroll).scroll_end(animate=False)

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or self.current is None:
            return
        try:
            await self.api.call("msg_send", to=self.current, text=text)
        except MixnetError as exc:
            self._error(str(exc))
            return
        event.input.value = ""
        self._error("")
        await self.show_conversation(self.current)


def run_chat(data_dir: Path) -> None:
    ChatApp(DaemonApi(data_dir)).run()
