"""A whole mix network of real OS processes: create, start, watch, kill, stop.

Where each process runs is a :class:`Hosts` choice: on loopback with free ports by default
(:class:`LoopbackHosts`), or each in its own network namespace (``mixnet.netns``).

The harness behind ``mixnet testnet`` and every integration test that needs real nodes: each
authority, mix and provider is a separate ``python -m mixnet.cli ...`` process with its own data
directory, configured exactly as an operator's ``init`` commands configure one. Processes are
tracked by PID and always stopped (SIGTERM, then SIGKILL) when the network is closed, so no
test or run leaves one behind. Its authorities run in the default admission mode: each approves
the nodes this harness created, as an operator would. Every file and folder it writes is
owner-only (0600/0700), like those of the processes it starts.

It composes the roles, it does not scrape them: keys and configs are written by the roles'
setup functions (:func:`directory.setup.init_authority`, :func:`mixnode.setup.init_node`,
:func:`client.setup.init_client`, the same ones their ``init`` commands run), which return
typed answers; a process is ready when it has written its ready file (:mod:`mixcore.ready`),
not when its output shows some word; a client's store passphrase reaches its daemon through
``--passphrase-file``, and a node's tracing through ``--trace``, never through the
environment.

A network is described by ``ROOT/testnet.json`` (its parameters and every process's command
line), so :meth:`LocalNetwork.load` can restart a kept one with the same keys and ports, and
``ROOT/bootstrap.txt`` holds the line that clients join it with.

**Why one module of ~530 lines:** one object's lifetime. :class:`LocalNetwork` creates, starts,
restarts, kills and always stops its processes, and every one of those steps reads the same
manifest and the same table of :class:`Process` records; splitting creation from supervision
would put the "every PID is stopped" promise in two places. Where processes run is already
apart (:class:`Hosts`, :mod:`mixnet.netns`), and so is what the roles do at setup (their
``setup`` modules).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from client.setup import init_client
from directory.approvals import make_approval
from directory.setup import AuthorityInfo, add_peers, approve_nodes, init_authority
from mixcore.bootstrap import Bootstrap
from mixcore.consensus import AuthorityRef
from mixcore.errors import MixnetError
from mixcore.files import private_dir, write_atomic
from mixcore.params import NetworkParams
from mixcore.ready import clear_ready, read_ready, ready_path
from mixcore.topology import NodeRole
from mixnode.setup import init_node

MANIFEST_NAME = "testnet.json"
BOOTSTRAP_NAME = "bootstrap.txt"
MANIFEST_VERSION = 1


class NetworkError(MixnetError):
    """A process of the local network failed to start or to become ready."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a process listens, and the address others reach it at when that differs."""

    listen_host: str
    port: int
    public_host: str = ""
    """The host written into descriptors and URLs (default: ``listen_host``)."""


class Hosts(Protocol):
    """Where each process of a network runs: its addresses, and how its command is started.

    :class:`LoopbackHosts` (the default) puts everything on 127.0.0.1; ``mixnet.netns`` gives
    every process its own network namespace and address."""

    mode: str
    one_source: bool
    """Whether every client connects from one address (providers then need a looser
    per-source registration limit)."""

    def endpoint(self, name: str, kind: str) -> Endpoint: ...

    def command(self, name: str, argv: list[str]) -> list[str]: ...


class LoopbackHosts:
    """Every process on 127.0.0.1 with a free port."""

    mode = "local"
    one_source = True

    def endpoint(self, name: str, kind: str) -> Endpoint:
        return Endpoint("127.0.0.1", 0 if kind == "client" else free_port())

    def command(self, name: str, argv: list[str]) -> list[str]:
        return argv


@dataclass
class Process:
    name: str
    kind: str  # "authority", "mix", "provider", "client"
    data_dir: Path
    argv: list[str]
    port: int
    info: dict[str, Any] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    passphrase: str | None = None
    """A client's message-store passphrase (None: no store, or not given to :meth:`load`);
    its daemon reads it from :attr:`passphrase_path`."""

    @property
    def log_path(self) -> Path:
        return self.data_dir / "process.log"

    @property
    def out_path(self) -> Path:
        return self.data_dir / "process.out"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "process.pid"

    @property
    def ready_path(self) -> Path:
        return ready_path(self.data_dir)

    @property
    def passphrase_path(self) -> Path:
        """Beside the data directory, not in it: the store and its passphrase stay apart."""
        return self.data_dir.parent / f"{self.name}.passphrase"

    def ready(self) -> dict[str, Any] | None:
        """What the process wrote in its ready file once it served (None before)."""
        return read_ready(self.ready_path)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stats(self) -> dict[str, Any] | None:
        try:
            document = json.loads((self.data_dir / "stats.json").read_text())
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None


class LocalNetwork:
    """Authorities, ``layers`` x ``mixes_per_layer`` mixes and providers under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        params: NetworkParams,
        authorities: int = 3,
        mixes_per_layer: int = 2,
        providers: int = 2,
        python: str = sys.executable,
        trace: bool = False,
        workers: int | None = None,
        hosts: Hosts | None = None,
    ) -> None:
        self.root = Path(root)
        self.hosts: Hosts = hosts or LoopbackHosts()
        self.workers = workers
        """Hop worker processes per node (None: each node's default, cores minus one)."""
        self.params = params
        self.n_authorities = authorities
        self.mixes_per_layer = mixes_per_layer
        self.n_providers = providers
        self.python = python
        self.trace = trace
        self.processes: dict[str, Process] = {}

    # -- setup ------------------------------------------------------------------------------------

    def _mixnet(self, *args: str) -> list[str]:
        return [self.python, "-m", "mixnet.cli", *args]

    def create(self) -> None:
        """Write every key and config (no process started)."""
        private_dir(self.root)
        write_atomic(self.root / "params.json", json.dumps(self.params.to_dict()).encode())
        params = self.params
        created: list[tuple[Process, AuthorityInfo]] = []
        for i in range(1, self.n_authorities + 1):
            name = f"auth{i}"
            ep = self.hosts.endpoint(name, "authority")
            port, data = ep.port, self.root / name
            authority = init_authority(
                data, name=name, listen_host=ep.listen_host, listen_port=port,
                url=f"http://{ep.public_host}:{port}" if ep.public_host else None, params=params,
            )
            argv = self._mixnet("directory", "run", "--config", str(authority.config), "--json")
            created.append((Process(name, "authority", data, argv, port), authority))
        auths: list[Process] = []
        for proc, authority in created:
            others = [a.peer for _, a in created if a is not authority]
            proc.info = (add_peers(authority.config, others) if others else authority).to_dict()
            auths.append(proc)
        authorities = tuple(a.ref for _, a in created)
        nodes: list[tuple[str, str]] = [
            (f"mix{i}", "mix") for i in range(1, params.layers * self.mixes_per_layer + 1)
        ] + [(f"provider{i}", "provider") for i in range(1, self.n_providers + 1)]
        approvals = []
        for name, role in nodes:
            ep = self.hosts.endpoint(name, role)
            port, data = ep.port, self.root / name
            node = init_node(
                data, role=NodeRole(role), listen_host=ep.listen_host, listen_port=port,
                authorities=authorities, threshold=len(authorities) // 2 + 1, params=params,
                name=name, workers=self.workers,
                public_host=ep.public_host,  # the address in its descriptor
                # Every client of a local network connects from 127.0.0.1: one "source".
                registrations_per_source=(1_000_000 if role == "provider"
                                          and self.hosts.one_source else None),
            )
            approvals.append(make_approval(node.identity_key, node.role, None))
            argv = self._mixnet("mixnode", "run", "--config", str(node.config), "--json")
            self.processes[name] = Process(name, role, data, argv, port, node.to_dict())
        for auth in auths:
            approve_nodes(Path(auth.info["config"]), approvals)  # as its operator would
            self.processes[auth.name] = auth
        self.save_manifest()

    def add_client(self, name: str, provider: str, *, passphrase: str | None = None) -> Process:
        """Create a client of ``provider`` (a provider's name); start it with :meth:`start`.

        With a ``passphrase`` the client also gets its encrypted message store (the messenger);
        without, it is a transport-only client."""
        data = self.root / name
        self.hosts.endpoint(name, "client")
        authorities = self.authority_refs()
        info = init_client(
            data, provider=provider, authorities=authorities,
            threshold=len(authorities) // 2 + 1, params=self.params, passphrase=passphrase,
            name=name,
        ).to_dict()
        argv = self._mixnet("client", "run", "--dir", str(data), "--json")
        proc = Process(name, "client", data, argv, 0, info, passphrase=passphrase)
        self.processes[name] = proc
        self.save_manifest()
        return proc

    # -- what the network is ------------------------------------------------------------------

    def bootstrap(self) -> Bootstrap:
        """The line that clients and nodes join this network with."""
        refs = self.authority_refs()
        return Bootstrap(refs, len(refs) // 2 + 1)

    def save_manifest(self) -> None:
        """Write ``testnet.json`` and ``bootstrap.txt`` (after :meth:`create` and each new
        client), so the network can be restarted as it was (:meth:`load`)."""
        processes = [
            {"name": p.name, "kind": p.kind, "dir": p.data_dir.name, "args": p.argv[3:],
             "port": p.port, "info": p.info,
             "messenger": p.kind == "client" and bool(p.info.get("messenger"))}
            for p in self.processes.values()
        ]
        manifest = {
            "version": MANIFEST_VERSION, "params": self.params.to_dict(),
            "authorities": self.n_authorities, "mixes_per_layer": self.mixes_per_layer,
            "providers": self.n_providers, "processes": processes,
        }
        if self.hosts.mode != "local":
            manifest["hosts"] = self.hosts.mode
        write_atomic(self.root / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())
        write_atomic(self.root / BOOTSTRAP_NAME, (self.bootstrap().to_text() + "\n").encode())

    @classmethod
    def load(
        cls, root: Path, *, python: str = sys.executable, trace: bool = False,
        passphrase: str | None = None,
    ) -> LocalNetwork:
        """A network kept in ``root`` by an earlier run, ready to :meth:`start_all` again with
        its keys, ports and data (``passphrase`` for the clients that have a message store)."""
        path = Path(root) / MANIFEST_NAME
        try:
            manifest = json.loads(path.read_text())
            if manifest.get("version") != MANIFEST_VERSION:
                raise ValueError(f"unknown version {manifest.get('version')!r}")
            if manifest.get("hosts", "local") != "local":
                raise ValueError(
                    f"it ran with --hosts {manifest['hosts']}, whose namespaces and addresses "
                    "ended with that run; --resume restarts --hosts local networks"
                )
            net = cls(
                Path(root), params=NetworkParams.from_dict(manifest["params"]),
                authorities=manifest["authorities"],
                mixes_per_layer=manifest["mixes_per_layer"],
                providers=manifest["providers"], python=python, trace=trace,
            )
            for entry in manifest["processes"]:
                net.processes[entry["name"]] = Process(
                    entry["name"], entry["kind"], net.root / entry["dir"],
                    net._mixnet(*entry["args"]), int(entry["port"]), entry["info"],
                    passphrase=passphrase if entry["messenger"] else None,
                )
        except FileNotFoundError:
            raise NetworkError(f"{root} holds no kept testnet (no {MANIFEST_NAME})") from None
        except (OSError, ValueError, KeyError, TypeError, MixnetError) as exc:
            raise NetworkError(f"cannot resume the testnet in {root}: {exc}") from None
        return net

    def address(self, name: str) -> str:
        """A running client's address, from its ready file."""
        ready = self.processes[name].ready()
        if ready is None or "address" not in ready:
            raise NetworkError(f"{name} has not announced its address")
        return str(ready["address"])

    def authority_refs(self) -> tuple[AuthorityRef, ...]:
        """The network's authorities (their keys and URLs), as nodes and clients are given
        them."""
        return tuple(
            AuthorityRef(p.info["url"], bytes.fromhex(p.info["identity_key"]))
            for p in self.of_kind("authority")
        )

    def of_kind(self, kind: str) -> list[Process]:
        return [p for p in self.processes.values() if p.kind == kind]

    # -- processes ---------------------------------------------------------------------------------

    def start(self, name: str) -> Process:
        proc = self.processes[name]
        if proc.running():
            raise NetworkError(f"{name} is already running")
        # The last run's statistics and ready file must not pass for this one's until it writes
        # its own.
        (proc.data_dir / "stats.json").unlink(missing_ok=True)
        clear_ready(proc.ready_path)
        argv = list(proc.argv)
        if self.trace and proc.kind in ("mix", "provider"):
            argv += ["--trace", str(proc.data_dir / "trace.jsonl")]
        if proc.kind == "client" and proc.passphrase:
            write_atomic(proc.passphrase_path, proc.passphrase.encode(), durable=False)
            argv += ["--passphrase-file", str(proc.passphrase_path)]
        with _private_open(proc.log_path, "ab") as log, _private_open(proc.out_path, "wb") as out:
            proc.popen = subprocess.Popen(  # noqa: S603  # our own interpreter and arguments
                self.hosts.command(proc.name, argv),
                stdout=out,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only the launcher
            )
        proc.starts += 1
        write_atomic(proc.pid_path, f"{proc.popen.pid}\n".encode(), durable=False)
        return proc

    def wait_ready(
        self, names: list[str], timeout: float = 60.0,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Wait until each named process wrote its ready file (and it is this process's, not
        a stale one: :meth:`start` removed that); ``on_progress(ready, total)`` hears each one
        that becomes ready."""
        deadline = time.monotonic() + timeout
        waiting = set(names)
        while waiting:
            for name in sorted(waiting):
                proc = self.processes[name]
                if proc.popen is not None and proc.popen.poll() is not None:
                    tail = proc.log_path.read_text(errors="replace")[-600:]
                    raise NetworkError(f"{name} exited with {proc.popen.returncode}: {tail}")
                if proc.ready() is not None:
                    waiting.discard(name)
                    if on_progress is not None:
                        on_progress(len(names) - len(waiting), len(names))
            if waiting and time.monotonic() > deadline:
                raise NetworkError(f"not ready after {timeout:.0f} s: {', '.join(sorted(waiting))}")
            if waiting:
                time.sleep(0.1)

    def start_all(
        self, timeout: float = 60.0,
        on_stage: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """Authorities first, then mixes and providers; ``on_stage(what, ready, total)``
        hears the count of processes up in each stage."""
        order = [p.name for p in self.of_kind("authority")]
        for name in order:
            self.start(name)
        self.wait_ready(order, timeout, _stage_counter(on_stage, "authorities", len(order)))
        nodes = [p.name for p in self.processes.values() if p.kind in ("mix", "provider")]
        for name in nodes:
            self.start(name)
        self.wait_ready(nodes, timeout, _stage_counter(on_stage, "mixes and providers",
                                                       len(nodes)))

    def signal(self, name: str, sig: int) -> None:
        proc = self.processes[name]
        if proc.running():
            assert proc.popen is not None
            os.kill(proc.popen.pid, sig)

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL: the process is gone when this returns."""
        proc = self.processes[name]
        if proc.popen is None:
            return
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()

    def kill(self, name: str) -> None:
        """SIGKILL (a crash: nothing is flushed)."""
        proc = self.processes[name]
        if proc.popen is not None and proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait()

    def restart(self, name: str, timeout: float = 60.0) -> None:
        self.stop(name)
        self.start(name)
        self.wait_ready([name], timeout)

    def close(self) -> None:
        """Stop every process this network started (nodes first, authorities last)."""
        rank = {"client": 0, "mix": 1, "provider": 1, "authority": 2}
        order = sorted(self.processes.values(), key=lambda p: rank.get(p.kind, 1))
        for proc in order:
            if proc.popen is not None and proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        for proc in order:
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()

    def collect_trace(self, out: Path) -> int:
        """Merge the nodes' link-event files into one trace for ``mixnet simulate trace``."""
        rows: list[dict[str, Any]] = []
        parent: dict[str, str] = {}  # outgoing packet digest -> the incoming one it came from
        for proc in self.processes.values():
            path = proc.data_dir / "trace.jsonl"
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut by a SIGKILL
                    continue
                if row.get("type") == "hop":
                    parent[row["out"]] = row["in"]
                else:
                    rows.append(row)

        def root(digest: str) -> str:
            for _ in range(16):  # a path has at most 10 hops
                if digest not in parent:
                    break
                digest = parent[digest]
            return digest

        for row in rows:
            digest = row.pop("pkt", None)
            if digest is not None:
                row["msg"] = root(digest)  # ground truth: one id for every hop of a packet
        rows.sort(key=lambda r: r["t"])
        roles = {p.name: p.kind for p in self.processes.values() if p.kind in ("mix", "provider")}
        meta = {
            "type": "meta",
            "nodes": roles,
            "mean_hop_delay": self.params.mean_hop_delay,
            "link_latency": 0.0,
        }
        with open(out, "w") as f:
            f.write(json.dumps(meta) + "\n")
            for row in rows:
                f.write(json.dumps(row) + "\n")
        return len(rows)

    def pids(self) -> list[int]:
        return [p.popen.pid for p in self.processes.values() if p.popen is not None]

    def __enter__(self) -> LocalNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stage_counter(
    on_stage: Callable[[str, int, int], None] | None, what: str, total: int
) -> Callable[[int, int], None] | None:
    if on_stage is None:
        return None
    on_stage(what, 0, total)
    return lambda ready, total_: on_stage(what, ready, total_)


def _private_open(path: Path, mode: str) -> io.BufferedWriter:
    """Open a log for writing, created 0600 whatever the launcher's umask."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode)  # type: ignore[return-value]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone once it has been reaped or is a zombie.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
