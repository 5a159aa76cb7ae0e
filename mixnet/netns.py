"""``mixnet testnet --hosts netns``: every process of a testnet on its own Linux network
namespace, with its own address on a private bridge, and every connection between two of them
through the fault injector (:mod:`mixnet.relay`).

Layout of one run, all named with the run's prefix ``mxnXXXX`` (four random hex digits) so that
two runs, or a run and a crashed one's leftovers, never collide:

* a bridge ``mxnXXXXbr`` in the launcher's namespace, address ``SUBNET.0.1/16`` (a /16 under
  10.0.0.0/8 or 172.16.0.0/12 that no interface or route of the machine uses);
* per host (``auth1``, ``mix3``, ``client2``...) a namespace ``mxnXXXX-<host>`` holding ``lo``
  and ``eth0`` (one end of the veth pair ``mxnXXXXv<i>``, whose other end is on the bridge) with
  the host's *private* address ``SUBNET.0.<i+1>``, where its process listens (authorities on
  :data:`AUTHORITY_PORT`, mixes and providers on :data:`NODE_PORT`, as on real machines);
* the host's *public* address ``SUBNET.1.<i+1>``, on the bridge: what its descriptor or URL
  advertises, served by the host's relay process (``python -m mixnet.relay``, in the
  launcher's namespace), which opens the other side from the initiator's own public address.
  Links cross two veth pairs and the bridge, through the relay's shapers.

``/run/mixnet-netns/mxnXXXX.json`` records each run's owner (PID and start time) before
anything is created; ``/run/mixnet-netns/mxnXXXX.d/`` holds the relays' hosts file,
statistics and logs. A run starts by removing what runs whose owner is gone left behind (their
processes, namespaces and links), and says so; it removes its own on every exit (the end,
Ctrl-C, SIGTERM, a failure). Should removing fail, the error names what is left and the
commands that remove it. Needs root and iproute2's ``ip``; without them, one line says which.

**Why one module of ~480 lines:** setting up and tearing down one run's namespaces, bridge,
addresses and relays is one transaction; the teardown must mirror the setup step for step.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixnet.faults import FaultSchedule, FaultSpec
from mixnet.network import Endpoint, NetworkError
from mixnet.relay import HostAddress, merge_statistics, write_hosts_file

ROOT_PREFIX = "mxn"
STATE_DIR = Path("/run/mixnet-netns")
AUTHORITY_PORT = 8000
NODE_PORT = 9000
MAX_HOSTS = 250
#: Seconds a relay process may take to listen, or to answer a command, on a loaded machine.
RELAY_TIMEOUT = 60.0
_RUN_NAME = re.compile(rf"^({ROOT_PREFIX}[0-9a-f]{{4}})(?:-.+|br|v\d+|p\d+)$")
_PREFIX = re.compile(rf"^{ROOT_PREFIX}[0-9a-f]{{4}}$")
_CANDIDATE_NETS = [f"10.{n}.0.0/16" for n in range(100, 255)] + [
    f"172.{n}.0.0/16" for n in range(16, 32)
]


class NetnsError(NetworkError):
    """Network namespaces are unavailable, or creating or removing one failed."""


def check_available(
    *, euid: int | None = None, which: Callable[[str], str | None] = shutil.which,
    platform: str = sys.platform,
) -> None:
    """Fail with one line naming what ``--hosts netns`` lacks here."""
    if not platform.startswith("linux"):
        raise NetnsError("--hosts netns needs Linux network namespaces; use --hosts local")
    if (os.geteuid() if euid is None else euid) != 0:
        raise NetnsError(
            "--hosts netns needs root (it creates network namespaces, veth links and a "
            "bridge); run it as root, or use --hosts local"
        )
    if which("ip") is None:
        raise NetnsError("--hosts netns needs the ip command (iproute2) on PATH")


def probe() -> None:
    """Make and delete a namespace: root in a container without the capability, or a kernel
    without network namespaces, fails here in one line before anything else is made."""
    check_available()
    name = f"mixnet-probe-{os.getpid()}"
    try:
        ip("netns", "add", name)
    except NetnsError as exc:
        raise NetnsError(f"--hosts netns cannot create network namespaces here ({exc})") from None
    ip("netns", "delete", name)


def ip(*args: str, stdin: str | None = None) -> str:
    """Run ``ip ARGS``; its complaint becomes one line of :class:`NetnsError`."""
    result = subprocess.run(  # noqa: S603  # fixed program, our own arguments
        ["ip", *args], input=stdin, capture_output=True, text=True, check=False,  # noqa: S607
    )
    if result.returncode != 0:
        reason = " ".join(result.stderr.split()) or f"status {result.returncode}"
        raise NetnsError(f"ip {' '.join(args)}: {reason}")
    return result.stdout


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None: no such process), which
    tells a live owner from a new process that reused its PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class RunResidue:
    """What one run (a prefix) has on this machine now."""

    prefix: str
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    state: dict[str, Any] | None = None

    @property
    def owner_alive(self) -> bool:
        if self.state is None:
            return False
        try:
            pid, start = int(self.state["pid"]), int(self.state["start"])
        except (KeyError, TypeError, ValueError):
            return False
        return _process_start(pid) == start

    @property
    def empty(self) -> bool:
        return not self.namespaces and not self.links

    def describe(self) -> str:
        return f"{self.prefix}: {len(self.namespaces)} namespaces, {len(self.links)} links"


def _state_path(prefix: str, state_dir: Path) -> Path:
    return state_dir / f"{prefix}.json"


def _run_dir(prefix: str, state_dir: Path) -> Path:
    """The run's relay files: the hosts file, each relay's statistics and log."""
    return state_dir / f"{prefix}.d"


def survey(state_dir: Path = STATE_DIR) -> dict[str, RunResidue]:
    """Every run prefix with a namespace, a link or a state file on this machine."""
    runs: dict[str, RunResidue] = {}

    def of(name: str) -> RunResidue | None:
        match = _RUN_NAME.match(name)
        if match is None:
            return None
        return runs.setdefault(match.group(1), RunResidue(match.group(1)))

    for line in ip("netns", "list").splitlines():
        name = line.split(" ", 1)[0].strip()
        if (run := of(name)) is not None:
            run.namespaces.append(name)
    for line in ip("-o", "link", "show").splitlines():
        parts = line.split(":", 2)
        if len(parts) < 3:
            continue
        name = parts[1].strip().split("@", 1)[0]
        if (run := of(name)) is not None:
            run.links.append(name)
    if state_dir.is_dir():
        for path in state_dir.glob(f"{ROOT_PREFIX}*.json"):
            prefix = path.stem
            if _PREFIX.match(prefix) is None:
                continue
            run = runs.setdefault(prefix, RunResidue(prefix))
            try:
                run.state = json.loads(path.read_text())
            except (OSError, ValueError):
                run.state = {}
    return runs


def remove_residue(run: RunResidue, state_dir: Path = STATE_DIR) -> None:
    """Kill what still runs in the run's namespaces, delete them and its links, forget its
    state; then check, and name whatever is left (with the commands that remove it)."""
    for ns in run.namespaces:
        with contextlib.suppress(NetnsError):
            for pid in ip("netns", "pids", ns).split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
    problems: list[str] = []
    for ns in run.namespaces:
        try:
            ip("netns", "delete", ns)
        except NetnsError as exc:
            problems.append(str(exc))
    # Deleting a namespace destroys the veth ends inside it, and with them their peers; the
    # bridge and any veth that never moved into its namespace go explicitly. A veth peer that is
    # already gone answers "Cannot find device": that is success.
    for link in sorted(run.links, key=lambda name: name.endswith("br")):
        try:
            ip("link", "delete", link)
        except NetnsError as exc:
            if "Cannot find device" not in str(exc):
                problems.append(str(exc))
    left = survey(state_dir).get(run.prefix)
    if left is not None and not left.empty:
        commands = [f"ip netns delete {n}" for n in left.namespaces] + [
            f"ip link delete {n}" for n in left.links
        ]
        raise NetnsError(
            f"could not remove the testnet namespaces and links of run {left.describe()} "
            f"({'; '.join(problems) or 'still there'}); remove them with: {'; '.join(commands)}"
        )
    shutil.rmtree(_run_dir(run.prefix, state_dir), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        _state_path(run.prefix, state_dir).unlink()


def clean_leftovers(say: Callable[[str], None], state_dir: Path = STATE_DIR) -> list[str]:
    """Remove every run whose owner is gone (a crashed or SIGKILLed launcher); returns their
    prefixes. Runs whose launcher is alive are left alone."""
    removed = []
    for run in survey(state_dir).values():
        if run.owner_alive:
            continue
        if not run.empty:
            say(f"removing the leftovers of a netns testnet whose launcher is gone "
                f"({run.describe()})")
        remove_residue(run, state_dir)
        removed.append(run.prefix)
    return removed


def _networks_in_use(runs: dict[str, RunResidue]) -> list[ipaddress.IPv4Network]:
    used: list[ipaddress.IPv4Network] = []
    for line in ip("-o", "-4", "address", "show").splitlines():
        words = line.split()
        if "inet" in words:
            used.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    for line in ip("-4", "route", "show", "table", "all").splitlines():
        first = line.split(" ", 1)[0]
        if first in ("default", "broadcast", "local", "unreachable", "blackhole", "prohibit"):
            continue
        with contextlib.suppress(ValueError):
            used.append(ipaddress.IPv4Network(first, strict=False))
    for run in runs.values():
        with contextlib.suppress(TypeError, ValueError):
            used.append(ipaddress.IPv4Network((run.state or {})["subnet"]))
    return used


def choose_subnet(
    used: list[ipaddress.IPv4Network], rng: random.Random
) -> ipaddress.IPv4Network:
    """A /16 that overlaps nothing the machine routes or another run holds."""
    candidates = [ipaddress.IPv4Network(n) for n in _CANDIDATE_NETS]
    rng.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsError("no free private /16 for the testnet's bridge (every 10.100-254.0.0/16 and "
                     "172.16-31.0.0/16 is in use here)")


@dataclass(frozen=True, slots=True)
class NetnsHost:
    name: str
    index: int
    namespace: str
    veth: str
    private_ip: str
    public_ip: str
    port: int


class NetnsHosts:
    """The :class:`mixnet.network.Hosts` of ``--hosts netns``: namespaces, addresses, the
    relay. :meth:`open` before the network is created, :meth:`close` always."""

    mode = "netns"
    one_source = False

    def __init__(
        self, spec: FaultSpec, *, seed: int | None = None, state_dir: Path = STATE_DIR,
    ) -> None:
        self.spec = spec
        self.state_dir = state_dir
        self.seed = seed
        self.relays: dict[str, subprocess.Popen[str]] = {}
        self._starting: list[str] = []
        self.prefix = ""
        self.subnet: ipaddress.IPv4Network | None = None
        self.hosts: dict[str, NetnsHost] = {}
        self._rng = random.SystemRandom()

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def run_dir(self) -> Path:
        return _run_dir(self.prefix, self.state_dir)

    def open(self, say: Callable[[str], None] = lambda _line: None) -> None:
        """Remove dead runs' leftovers, claim a prefix and a subnet, make the bridge, start the
        relay."""
        probe()
        clean_leftovers(say, self.state_dir)
        runs = survey(self.state_dir)
        while True:
            prefix = f"{ROOT_PREFIX}{self._rng.getrandbits(16):04x}"
            if prefix not in runs:
                break
        self.subnet = choose_subnet(_networks_in_use(runs), self._rng)
        self.prefix = prefix
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        state = {"pid": os.getpid(), "start": _process_start(os.getpid()),
                 "subnet": str(self.subnet), "created": time.time()}
        path = _state_path(prefix, self.state_dir)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        gateway = self.subnet.network_address + 1
        # A bridge takes the lowest MAC of its ports unless it has its own: every host added
        # later could change it under the neighbour caches of the hosts already running, whose
        # replies to public addresses then went nowhere (SYN-ACKs lost, set-ups timing out).
        suffix = prefix[len(ROOT_PREFIX):]
        mac = f"02:6d:78:{suffix[:2]}:{suffix[2:]}:01"
        ip("link", "add", self.bridge, "address", mac, "type", "bridge")
        ip("address", "add", f"{gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        self.run_dir.mkdir(mode=0o700)

    def endpoint(self, name: str, kind: str) -> Endpoint:
        """Make ``name``'s namespace, link and addresses; the relay listens on its public
        address from now on."""
        if self.subnet is None:
            raise NetnsError("NetnsHosts.open first")
        if name in self.hosts:
            host = self.hosts[name]
            return Endpoint(host.private_ip, host.port, host.public_ip)
        index = len(self.hosts) + 1
        if index > MAX_HOSTS:
            raise NetnsError(f"--hosts netns runs at most {MAX_HOSTS} hosts")
        base = self.subnet.network_address
        port = {"authority": AUTHORITY_PORT, "client": 0}.get(kind, NODE_PORT)
        host = NetnsHost(
            name=name, index=index, namespace=f"{self.prefix}-{name}",
            veth=f"{self.prefix}v{index}", private_ip=str(base + 1 + index),
            public_ip=str(base + 256 + 1 + index), port=port,
        )
        self.hosts[name] = host
        peer = f"{self.prefix}p{index}"
        ip("-batch", "-", stdin="\n".join([
            f"netns add {host.namespace}",
            f"link add {host.veth} type veth peer name {peer}",
            f"link set {peer} netns {host.namespace}",
            f"link set {host.veth} master {self.bridge}",
            f"link set {host.veth} up",
            f"address add {host.public_ip}/32 dev {self.bridge}",
        ]) + "\n")
        ip("-n", host.namespace, "-batch", "-", stdin="\n".join([
            "link set lo up",
            f"link set {peer} name eth0",
            f"address add {host.private_ip}/{self.subnet.prefixlen} dev eth0",
            "link set eth0 up",
        ]) + "\n")
        write_hosts_file(self.run_dir / "hosts.json", (
            HostAddress(h.name, h.private_ip, h.public_ip, h.port) for h in self.hosts.values()
        ))
        if port:
            self._start_relay(host)
        return Endpoint(host.private_ip, port, host.public_ip)

    def _start_relay(self, host: NetnsHost) -> None:
        """Start the relay process of ``host`` (:meth:`_await_relays` waits until it listens:
        the relays of a whole network start side by side)."""
        log = self.run_dir / f"relay-{host.name}.log"
        with open(log, "w") as err:
            proc = subprocess.Popen(  # noqa: S603  # our own interpreter and module
                [sys.executable, "-m", "mixnet.relay", "--host", host.name,
                 "--private", host.private_ip, "--public", host.public_ip,
                 "--port", str(host.port), "--faults", self.spec.text() if self.spec.active
                 else "", *(["--seed", str(self.seed)] if self.seed is not None else []),
                 "--hosts-file", str(self.run_dir / "hosts.json"),
                 "--stats", str(self.run_dir / f"relay-{host.name}.json")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                start_new_session=True,  # a Ctrl-C reaches the launcher, which stops it
            )
        self.relays[host.name] = proc
        self._starting.append(host.name)

    def _await_relays(self) -> None:
        """Until every relay started so far listens; one that does not is one line."""
        while self._starting:
            name = self._starting.pop(0)
            proc = self.relays[name]
            if '"serving"' not in self._line(proc):
                proc.kill()
                log = self.run_dir / f"relay-{name}.log"
                tail = " ".join(log.read_text(errors="replace").split()[-30:])
                raise NetnsError(f"the relay of {name} did not start: {tail or 'no output'}")

    def _line(self, proc: subprocess.Popen[str]) -> str:
        """The relay's next line on stdout ("" if it ended or said nothing in time)."""
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(RELAY_TIMEOUT):
                return ""
        return proc.stdout.readline()

    def _tell(self, proc: subprocess.Popen[str], line: str) -> bool:
        assert proc.stdin is not None
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # it ended
            return False
        return True

    def command(self, name: str, argv: list[str]) -> list[str]:
        if name not in self.hosts:
            raise NetnsError(f"{name} has no namespace (no endpoint was made for it)")
        self._await_relays()  # no process starts before every public address is served
        return ["ip", "netns", "exec", self.hosts[name].namespace, *argv]

    def begin(self, traffic_duration: float) -> list[dict[str, Any]]:
        """The traffic starts now: every relay places the partitions; returns them in seconds
        from now."""
        self._await_relays()
        now = time.time()
        for proc in self.relays.values():
            self._tell(proc, f"begin {now!r} {traffic_duration!r}")
        return [{"host": w.host, "start_s": w.start, "end_s": w.end}
                for w in FaultSchedule(self.spec).begin(0.0, traffic_duration)]

    def statistics(self) -> dict[str, Any]:
        self._await_relays()
        parts = []
        for name, proc in self.relays.items():
            if self._tell(proc, "flush"):
                self._line(proc)  # "flushed": its file is current
            with contextlib.suppress(OSError, ValueError):
                parts.append(json.loads((self.run_dir / f"relay-{name}.json").read_text()))
        faults = merge_statistics(parts)
        return {
            "mode": self.mode,
            "prefix": self.prefix,
            "subnet": str(self.subnet),
            "bridge": self.bridge,
            "hosts": {
                h.name: {"namespace": h.namespace, "private": h.private_ip,
                         "public": h.public_ip, "port": h.port}
                for h in self.hosts.values()
            },
            "faults": faults,
        }

    def close(self) -> None:
        """Stop the relays; kill, delete and forget everything of this run. Idempotent."""
        for proc in self.relays.values():
            if proc.stdin is not None:
                with contextlib.suppress(OSError, ValueError):
                    proc.stdin.close()  # its end of input: it stops
        for proc in self.relays.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.relays = {}
        if not self.prefix:
            return
        run = survey(self.state_dir).get(self.prefix)
        if run is not None:
            remove_residue(run, self.state_dir)
