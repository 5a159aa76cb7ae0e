"""``docs/quickstart.md`` as written: Alice, Bob and Carol on a kept testnet, each in a home of
their own, run its commands in a shell (``~`` is their home; ``export`` lines carry over to
their later commands), in the order a newcomer does: join from the bootstrap file, run the
daemon, exchange cards, verify, messages both ways, stdin, an attachment saved and said where,
a group of three with a removal, a disappearing message; then the network is stopped with
Ctrl-C (one line, exit 130, every process gone) and resumed from its folder, and the clients
made against it reconnect by themselves: a message written while it was down goes out when it
is back.

One real network for the whole walk (the most expensive kind of test there is), kept small:
the testnet line of the quickstart runs with flags for one authority, two one-mix layers, no
clients of its own and no traffic of its own. Bob and Carol run Alice's lines with the
friend's name in place of ``bob`` (and the real card in place of ``'mixnet1:...'``); the timer
is a few seconds instead of an hour. The network's epoch and that timer are sized from a step
measured when the module is loaded (``helpers.measured_step``), so a loaded machine gets longer
ones; every wait is a readiness wait (``helpers.wait_for``) whose timeout only bounds a hang.
Every command line of the quickstart must be run here (checked at the end), so the page and the
test cannot drift apart. The checks that earlier lived in
``tests/client/messenger/test_cli_end_to_end.py`` are folded in (wrong passphrase, errors in
words, raw payloads, a too-large attachment, no re-key while the daemon runs)."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import HANG, measured_step
from helpers import wait_for as wait_until

from client.messenger.commands import call
from mixcore.errors import MixnetError
from mixcore.params import NetworkParams
from mixnet.network import pid_alive

pytestmark = pytest.mark.slow

#: Every wait and subprocess timeout here only bounds a hung run (``HANG``: a loaded machine's
#: steps are slow; none of these decides a result).

STEP = measured_step()
#: The testnet's epoch: 10 measured steps (about 0.2 s each on an idle machine), 8 s at least.
EPOCH = max(8, round(10 * STEP))
#: Seconds, for the page's "3600": long enough that a loaded machine's poll sees the message
#: before it vanishes (5 steps, 4 s at least).
TIMER = max(4, round(5 * STEP))
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "quickstart.md"
#: Lines of the page this test does not run: an interactive screen (tests/client/tui drives it).
NOT_RUN = {"mixnet chat"}
#: Appended to the page's testnet line: the smallest network that still has every role.
SMALL_NETWORK = ("--authorities 1 --layers 2 --mixes-per-layer 1 --clients 0 --duration 0 "
                 f"--epoch-length {EPOCH}")
PASSPHRASE = "correct horse battery staple"
#: Runs the rest of the command line with SIGINT at its default, as in a person's shell. A
#: suite started in the background (``nohup ... &``, some CI runners) hands its children SIGINT
#: ignored, which ``exec`` keeps and bash cannot undo: the testnet then never saw the walk's
#: Ctrl-C, and the test waited for an exit that could not come.
AT_A_TERMINAL = (sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, "
                 "signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])")


def doc_commands() -> list[str]:
    """Every line inside the page's fenced code blocks."""
    lines, inside = [], False
    for line in DOC.read_text().splitlines():
        if line.strip().startswith("```"):
            inside = not inside
            continue
        if inside and line.strip():
            lines.append(line.strip())
    return lines


class Output:
    """A child's output lines, read by threads, waited on by content (never by time)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._done = 0
        for stream in (proc.stdout, proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float = HANG) -> str:
        for line in self.lines:
            if needle in line:
                return line
        deadline = time.monotonic() + timeout
        while self._done < 2 and (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self._done += 1
                continue
            self.lines.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r}:\n{''.join(self.lines)[-3000:]}")

    def all(self) -> str:
        """Everything, once the process has exited."""
        while self._done < 2:
            line = self._queue.get(timeout=HANG)
            if line is None:
                self._done += 1
            else:
                self.lines.append(line)
        return "".join(self.lines)


class User:
    def __init__(self, name: str, home: Path) -> None:
        self.name = name
        self.home = home
        home.mkdir()
        self.prelude: list[str] = []
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "HOME": str(home), "MIXNET_PASSPHRASE": PASSPHRASE,
                    "PATH": path}  # `mixnet` is the one installed beside this interpreter
        self.env.pop("MIXNET_CLIENT_DIR", None)
        self.daemon: Output | None = None
        self.card = ""

    @property
    def data(self) -> Path:
        return self.home / ".mixnet"

    def script(self, command: str) -> str:
        return "; ".join([*self.prelude, command])

    def api(self, op: str, **args: Any) -> Any:
        """In-process API call: for polling, cheaper than a command each time."""
        return trio.run(lambda: call(self.data, op, **args))


class Walk:
    """The page's commands, run by the users; remembers which lines were run."""

    def __init__(self, tmp: Path) -> None:
        self.commands = doc_commands()
        self.used: set[str] = set()
        self.net_dir = tmp / "net"
        self.users = {n: User(n, tmp / n) for n in ("alice", "bob", "carol")}
        self.children: list[subprocess.Popen[str]] = []

    def line(self, text: str) -> str:
        assert text in self.commands, f"not a line of docs/quickstart.md: {text}"
        self.used.add(text)
        return text.replace("/tmp/net", str(self.net_dir))

    def run(self, who: str, text: str, *, friend: str | None = None, card: str = "",
            ok: bool = True, env: dict[str, str] | None = None,
            replace: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """One line of the page in ``who``'s shell; ``friend`` replaces ``bob``, ``card`` the
        placeholder card, ``replace`` any other literal."""
        user = self.users[who]
        command = self.line(text)
        if friend is not None:
            command = re.sub(r"\bbob\b", friend, command)
        if card:
            command = command.replace("'mixnet1:...'", shlex.quote(card))
        for old, new in (replace or {}).items():
            command = command.replace(old, new)
        if command.startswith("export "):
            user.prelude.append(command)
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", user.script(command)], cwd=user.home, env={**user.env, **(env or {})},
            capture_output=True, text=True, timeout=HANG, check=False,
        )
        # shown by pytest only when the test fails: where the time went
        print(f"{time.monotonic() - started:6.2f} s  {who}$ {command[:70]}", flush=True)
        if ok:
            assert done.returncode == 0, (command, done.stdout[-1500:], done.stderr[-1500:])
        return done

    def run_all(self, calls: list[tuple[str, str, dict[str, Any]]],
                ) -> list[subprocess.CompletedProcess[str]]:
        """Independent lines of different users at once (each user's own order is kept by
        the caller); what a few people at their own keyboards do."""
        results: list[Any] = [None] * len(calls)
        errors: list[BaseException] = []

        def one(i: int, who: str, text: str, kw: dict[str, Any]) -> None:
            try:
                results[i] = self.run(who, text, **kw)
            except BaseException as exc:  # re-raised in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i, *c)) for i, c in enumerate(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results

    def start(self, who: str | None, text: str, extra: str = "") -> Output:
        """A long-running line (the daemon, the testnet) as a child whose PID is the command's
        own (``exec``), so signals reach it."""
        user = self.users[who] if who else None
        command = f"{self.line(text)} {extra}".strip()
        script = user.script(f"exec {command}") if user else f"exec {command}"
        proc = subprocess.Popen(
            [*AT_A_TERMINAL, "bash", "-c", script], cwd=user.home if user else None,
            env=user.env if user else next(iter(self.users.values())).env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        self.children.append(proc)
        return Output(proc)

    def unused(self) -> set[str]:
        return set(self.commands) - self.used

    def stop_all(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.children:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = HANG) -> None:
    """Poll ``predicate`` until true (``helpers.wait_for``; a MixnetError is a daemon between
    two states: no consensus yet, restarting); the timeout only bounds a failure."""
    started = time.monotonic()
    wait_until(predicate, what=what, timeout=timeout, interval=0.2, ignore=(MixnetError,))
    print(f"{time.monotonic() - started:6.2f} s  (waited for {what})", flush=True)


def texts(user: User, conversation: str) -> list[str]:
    messages = user.api("conversation", name=conversation, mark_read=False)["messages"]
    return [m["text"] for m in messages if m["direction"] != "event"]


def events(user: User, conversation: str) -> list[str]:
    messages = user.api("conversation", name=conversation, mark_read=False)["messages"]
    return [m["text"] for m in messages if m["direction"] == "event"]


def network_pids(net_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in net_dir.glob("*/process.pid")]


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    w = Walk(tmp_path)
    try:
        yield w
    finally:
        w.stop_all()
        assert not [p for p in network_pids(w.net_dir) if pid_alive(p)], "a process survived"


def test_the_quickstart_as_written(walk: Walk) -> None:
    alice, bob, carol = (walk.users[n] for n in ("alice", "bob", "carol"))

    # -- a network to join ------------------------------------------------------------------
    testnet = walk.start(None, "mixnet testnet --keep-running --dir /tmp/net", SMALL_NETWORK)
    for stage in ("[2/4] authorities: 1/1 up", "[3/4] mixes and providers: 4/4 up"):
        testnet.wait_for(stage)
    testnet.wait_for("network up")
    bootstrap = (walk.net_dir / "bootstrap.txt").read_text().strip()
    assert bootstrap.startswith("mixnet-bootstrap1:1:")
    assert bootstrap in testnet.wait_for("bootstrap: ")

    # -- 1. create the clients, from the bootstrap file ---------------------------------------
    inits = walk.run_all([
        (u.name, "mixnet client init --dir ~/.mixnet --join /tmp/net/bootstrap.txt", {})
        for u in (alice, bob, carol)
    ])
    for user, out in zip((alice, bob, carol), inits, strict=True):
        user.card = next(w for w in out.stdout.split() if w.startswith("mixnet1:"))
        assert "export MIXNET_CLIENT_DIR" in out.stdout  # it says what to do next
        walk.run(user.name, "export MIXNET_CLIENT_DIR=~/.mixnet")
        config = json.loads((user.data / "client.json").read_text())
        network = json.loads((walk.net_dir / "params.json").read_text())
        assert config["params"] == network  # the network's, not built-in defaults
        assert os.stat(user.data / "messenger.db").st_mode & 0o777 == 0o600

    # A wrong passphrase, and a daemon that is not running, are errors in words.
    wrong = walk.run("carol", "mixnet client run", ok=False, env={"MIXNET_PASSPHRASE": "guess"})
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    down = walk.run("carol", "mixnet read bob", ok=False)
    assert down.returncode == 1 and "mixnet client run" in down.stderr
    assert "Traceback" not in wrong.stderr + down.stderr

    # A client made with parameters the network does not use (the built-in defaults: another
    # epoch length and genesis) used to wait for a consensus for ever, silently; now its daemon
    # finds the network's signed parameters, sees they differ, and says what to do.
    defaults = alice.home / "defaults.json"
    defaults.write_text(json.dumps(NetworkParams().to_dict()))
    key, _, url = bootstrap.split(":", 2)[2].partition("@")
    odd = alice.home / "odd"
    env = {k: v for k, v in alice.env.items() if k != "MIXNET_PASSPHRASE"}  # transport only
    made = subprocess.run(
        ["mixnet", "client", "init", "--dir", str(odd), "--provider", "provider1",
         "--authority", f"{key}@{url}", "--params", str(defaults)],
        env=env, capture_output=True, text=True, check=False, timeout=HANG)
    assert made.returncode == 0, made.stderr
    stuck = subprocess.run(["mixnet", "client", "run", "--dir", str(odd)], env=env,
                           capture_output=True, text=True, check=False, timeout=HANG)
    assert stuck.returncode == 1 and "differ from the network's" in stuck.stderr
    assert "epoch_length 3600.0 (network: " in stuck.stderr and "--join" in stuck.stderr

    # -- 2. the daemons; one per directory ------------------------------------------------------
    for user in (alice, bob, carol):
        user.daemon = walk.start(user.name, "mixnet client run")
    for user in (alice, bob, carol):
        assert user.daemon is not None
        user.daemon.wait_for("serving")
        user.daemon.wait_for("connected to provider")
        user.daemon.wait_for("epoch ")
    rekey = subprocess.run(["bash", "-c", alice.script("mixnet client passphrase")],
                           env={**alice.env, "MIXNET_NEW_PASSPHRASE": "another one"},
                           capture_output=True, text=True, check=False)
    assert rekey.returncode == 1 and "daemon is running" in rekey.stderr  # the store is in use
    second = walk.run("alice", "mixnet client run", ok=False)
    assert second.returncode == 1 and second.stderr.count("\n") == 1
    assert str(alice.daemon.proc.pid) in second.stderr  # type: ignore[union-attr]

    # -- 3. cards ---------------------------------------------------------------------------------
    shown = walk.run("alice", "mixnet contact card").stdout
    assert alice.card in shown and "█" in shown  # the text and the QR code
    add = "mixnet contact add 'mixnet1:...' --name bob"
    walk.run_all([
        ("alice", add, {"card": bob.card}),
        ("bob", add, {"friend": "alice", "card": alice.card}),
        ("carol", add, {"friend": "alice", "card": alice.card}),
    ])
    walk.run("alice", add, friend="carol", card=carol.card)

    # -- 4. safety numbers ------------------------------------------------------------------------
    digits = re.findall(r"\d{5}", walk.run("alice", "mixnet contact verify bob").stdout)
    theirs = re.findall(r"\d{5}", walk.run("bob", "mixnet contact verify bob",
                                           friend="alice").stdout)
    assert len(digits) == 12 and digits == theirs
    assert "verified" in walk.run("alice", "mixnet contact verify bob --confirm").stdout

    # -- 5. talk, both ways -----------------------------------------------------------------------
    walk.run("alice", 'mixnet send bob "hello"')
    walk.run("alice", "echo hi | mixnet send bob -")
    wait_for(lambda: sorted(texts(bob, "alice")) == ["hello", "hi"], "bob receives both")
    walk.run("bob", 'mixnet send bob "hello"', friend="alice")
    wait_for(lambda: texts(alice, "bob")[-1:] == ["hello"], "alice receives bob's answer")
    assert "bob" in walk.run("alice", "mixnet inbox").stdout
    blob = os.urandom(5000)  # several fragments
    (alice.home / "photo.jpg").write_bytes(blob)
    sent = walk.run("alice", "mixnet send bob --file photo.jpg --wait 60")
    assert "fragments" in sent.stderr and ("at their provider" in sent.stdout
                                           or "delivered" in sent.stdout)
    read = walk.run("alice", "mixnet read bob").stdout
    assert "hello" in read and "hi" in read and "photo.jpg" in read
    wait_for(lambda: any(m["kind"] == "file" for m in bob.api(
        "conversation", name="alice", mark_read=False)["messages"]), "bob gets the photo")
    saved = walk.run("bob", "mixnet read bob --save ~/Downloads", friend="alice").stdout
    target = bob.home / "Downloads" / "photo.jpg"
    assert target.read_bytes() == blob and str(target) in saved
    assert hashlib.sha256(blob).hexdigest()[:16] in saved
    wait_for(lambda: "delivered" in walk.run("alice", "mixnet read bob").stdout,
             "the receipts reach alice")

    # Errors a person understands, and the raw transport beside the messenger.
    unknown = subprocess.run(["bash", "-c", alice.script("mixnet send nobody hi")],
                             env=alice.env, capture_output=True, text=True, check=False)
    assert unknown.returncode == 1 and "unknown contact" in unknown.stderr
    big = alice.home / "big.bin"
    big.write_bytes(os.urandom(300_000))
    refused = subprocess.run(["bash", "-c", alice.script(f"mixnet send bob --file {big}")],
                             env=alice.env, capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "too" in refused.stderr
    assert "Traceback" not in unknown.stderr + refused.stderr
    raw = subprocess.run(
        ["bash", "-c", alice.script(
            f"mixnet client raw-send {bob.api('address')['text']} 'raw bytes'")],
        env=alice.env, capture_output=True, text=True, check=False)
    assert raw.returncode == 0, raw.stderr
    wait_for(lambda: any(r["data"] == b"raw bytes" for r in bob.api("inbox")), "raw payload")
    status = bob.api("status")
    assert status["messenger"].get("undecryptable", 0) >= 1
    assert status["connected"] and status["epoch"] is not None and status["name"] == "bob"
    assert {"payload", "loop", "drop"} <= set(status["rates_per_s"])
    assert [c["name"] for c in alice.api("contacts")] == ["bob", "carol"]

    # -- 6. a group of three, a removal, a disappearing message --------------------------------
    walk.run("alice", "mixnet group create team bob carol")
    wait_for(lambda: bob.api("groups") != [] and carol.api("groups") != [], "the group")
    walk.run("alice", 'mixnet group send team "hi both"')
    wait_for(lambda: "hi both" in texts(bob, "#team") and "hi both" in texts(carol, "#team"),
             "both read the group message")
    walk.run("alice", "mixnet group remove team carol")
    wait_for(lambda: carol.api("groups")[0]["left"], "carol sees the removal")
    assert "alice removed you from the group" in events(carol, "#team")
    assert not [e for e in events(carol, "#team") if "removed bob" in e]
    alice.api("msg_send", to="#team", text="only bob now")
    wait_for(lambda: "only bob now" in texts(bob, "#team"), "bob after the removal")
    assert "only bob now" not in texts(carol, "#team")
    walk.run("alice", "mixnet timer set bob 3600", replace={"3600": str(TIMER)})
    wait_for(lambda: bob.api("contacts")[0]["timer_proposed_by_them"] == TIMER, "the proposal")
    walk.run("bob", "mixnet timer accept alice")
    wait_for(lambda: alice.api("contacts")[0]["timer"] == TIMER, "the acceptance")
    before = texts(bob, "alice").count("hello")
    walk.run("alice", 'mixnet send bob "hello"')
    wait_for(lambda: texts(bob, "alice").count("hello") == before + 1, "the vanishing message")
    wait_for(lambda: texts(bob, "alice").count("hello") == before, "it vanishes",
             timeout=TIMER + HANG)
    assert texts(alice, "bob").count("hello") == 1 + 1  # gone on the sender's side too (the
    # other one is bob's answer)

    # -- 7. the network goes away and comes back ---------------------------------------------
    pids = network_pids(walk.net_dir)
    assert len(pids) == 5
    testnet.proc.send_signal(signal.SIGINT)
    assert testnet.proc.wait(HANG) == 130
    out = testnet.all()
    assert out.strip().splitlines()[-1] == "mixnet: interrupted" and "Traceback" not in out
    assert not [p for p in pids if pid_alive(p)], "the testnet left a process behind"
    alice.daemon.wait_for("down")  # type: ignore[union-attr]
    # Offline is normal: a message written now waits (carol: no disappearing timer with her).
    done = subprocess.run(["bash", "-c", alice.script('mixnet send carol "while you were away"')],
                          env=alice.env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert alice.api("conversation", name="carol")["messages"][-1]["state"] == "queued"

    testnet = walk.start(None, "mixnet testnet --resume /tmp/net --keep-running")
    testnet.wait_for("network up")
    alice.daemon.wait_for("again after")  # type: ignore[union-attr]
    wait_for(lambda: "while you were away" in texts(carol, "alice"),
             "the queued message, once the network is back")
    carol.api("msg_send", to="alice", text="back")
    wait_for(lambda: "back" in texts(alice, "carol"), "an answer after the restart")
    wait_for(lambda: alice.api("conversation", name="carol")["messages"][-2]["state"]
             == "delivered", "the receipt after the restart")
    assert "no failed messages" in walk.run("alice", "mixnet retry bob").stdout

    assert walk.unused() == NOT_RUN
