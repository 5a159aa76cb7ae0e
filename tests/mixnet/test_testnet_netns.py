"""``mixnet testnet --hosts netns --faults ...`` end to end: every process in its own network
namespace, links through the fault injector with latency, jitter, loss and a partition of a
mix; every message delivered exactly once; the faults' cost in the summary; and after Ctrl-C
no process, namespace, link or bridge left behind."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixnet.faults import parse_faults
from mixnet.netns import STATE_DIR, NetnsError, ip, probe
from mixnet.network import pid_alive


def _unavailable() -> str | None:
    try:
        probe()
    except NetnsError as exc:
        return str(exc)
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(_unavailable()),
                       reason=f"network namespaces unavailable: {_unavailable()}"),
]

FAULTS = "latency=20ms,jitter=5ms,loss=2%,partition=mix1:3s@1s"


def names_with(prefix: str) -> list[str]:
    """Every namespace and link on the machine that carries ``prefix``."""
    listed = ip("netns", "list") + ip("-o", "link", "show")
    words = (word.split("@", 1)[0] for word in listed.replace(":", " ").split())
    return [word for word in words if word.startswith(prefix)]


def _read_line(proc: subprocess.Popen[str], limit: float) -> str:
    """The next line of stdout, or fail (not a timing check: a guard against a hung run)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(limit):
            proc.kill()
            pytest.fail("the testnet printed no summary")
    return proc.stdout.readline()


def test_a_faulty_netns_testnet_delivers_each_message_once_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    root, err = tmp_path / "net", tmp_path / "stderr.txt"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mixnet.cli", "testnet", "--hosts", "netns",
             "--faults", FAULTS, "--duration", "8", "--clients", "2", "--authorities", "1",
             "--layers", "1", "--mixes-per-layer", "2", "--providers", "1",
             "--message-interval", "0.7", "--epoch-length", "10", "--seed", "11", "--json",
             "--keep-running", "--dir", str(root)],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
            # Ctrl-C reaches it as in a terminal, even if this runner ignores SIGINT.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
        )
        try:
            line = _read_line(proc, 300)
            assert line, err.read_text()[-2000:]
            summary = json.loads(line)
            hosts = summary["hosts"]
            prefix = hosts["prefix"]

            # Every process runs in its own namespace, with its own addresses.
            names = ["auth1", "mix1", "mix2", "provider1", "client1", "client2"]
            assert sorted(hosts["hosts"]) == sorted(names)
            assert len({h["private"] for h in hosts["hosts"].values()}) == len(names)
            assert len({h["public"] for h in hosts["hosts"].values()}) == len(names)
            for name in names:
                pid = (root / name / "process.pid").read_text().strip()
                assert ip("netns", "identify", pid).strip() == f"{prefix}-{name}"
            assert summary["bootstrap"].endswith(f"@http://{hosts['hosts']['auth1']['public']}:8000")

            # Exactly once, whatever the links did.
            m = summary["messages"]
            assert m["sent"] >= 5, (m, summary.get("events"), err.read_text()[-2000:])
            assert m["lost"] == 0 and m["duplicates"] == 0 and m["failed"] == 0, m
            assert m["delivered"] == m["sent"]
            assert summary["verdict"]["ok"], summary["verdict"]
            for node, n in summary["nodes"].items():
                assert n["in_equals_processed_plus_dropped"], node

            # What the faults cost, per link and in all.
            faults = hosts["faults"]
            assert faults["spec"] == "latency=20ms,jitter=5ms,loss=2%,partition=mix1:3s@1s"
            assert faults["partitions"] == [{"host": "mix1", "start_s": 1.0, "end_s": 4.0}]
            assert faults["totals"]["retransmits"] > 0
            links = faults["links"]
            assert "client1>provider1" in links and links["client1>provider1"]["connections"] >= 1
            held = sum(v["partition_stalls"] + v["connections_held"]
                       for k, v in links.items() if "mix1" in k.split(">"))
            assert held > 0
            assert all(v["partition_stalls"] == 0 for k, v in links.items()
                       if "mix1" not in k.split(">"))
            for name, v in links.items():
                if v["segments"] and "-" not in name.split(">"):
                    assert v["delay_max"] >= 0.015, name  # latency - jitter at the least
            # The model adds the links' mean delay: 4 crossings with one mix layer.
            assert summary["latency_s"]["predicted"]["link_delay"] == pytest.approx(
                4 * parse_faults(FAULTS).expected_delay())
            assert any("mix1 cut off" in e for e in summary["events"])
            assert names_with(prefix)  # up while it runs
            assert len(_relays_of(prefix)) == 4  # one per host that accepts connections

            proc.send_signal(signal.SIGINT)
            assert proc.wait(120) == 130
        finally:
            if proc.poll() is None:  # a failed check: stop it as a user would, to clean up
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    assert err.read_text().rstrip().endswith("mixnet: interrupted")
    assert names_with(prefix) == [], "a namespace or link survived"
    assert not (STATE_DIR / f"{prefix}.json").exists()
    deadline = time.monotonic() + 10  # SIGKILLed children are reaped by init
    while [p for p in summary["pids"] if pid_alive(p)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in summary["pids"] if pid_alive(p)], "a process survived"
    assert not _relays_of(prefix), "a relay survived"


def _relays_of(prefix: str) -> list[int]:
    """Processes whose command line names the run's relay folder (its relays)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"{prefix}.d".encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found
