"""What ``mixnet testnet`` says, without running a network: the verdict line in every case, the
summary when piped (its title on a line of its own, the terms explained, the logs' location,
the verdict last), and start-up stages as plain lines when stderr is not a terminal."""

from __future__ import annotations

from typing import Any

import pytest

from mixnet.report import LATENCY_FACTOR, Reporter, print_summary, verdict
from mixnet.testnet import Options, drain_seconds, fault_link_delay, predicted_latency


def summary(sent: int = 10, delivered: int = 10, failed: int = 0, p50: float | None = 0.8,
            traffic: bool = True) -> dict[str, Any]:
    return {
        "messages": {"sent": sent, "delivered": delivered, "failed": failed,
                     "lost": sent - delivered - failed, "duplicates": 0, "send_errors": {}},
        "latency_s": {"p50": p50, "p95": p50, "max": p50, "mean": p50,
                      "predicted": {"p50": 0.7, "p95": 1.3, "mean": 0.75}, "samples": []},
        "packets_by_kind": {"real": sent, "drop": 3, "loop": 2, "ack": sent},
        "drops_by_reason": {}, "epochs_rotated": 1, "nodes": {}, "events": ["  1.0s up"],
        "parameters": {"traffic": traffic, "duration": 30.0 if traffic else 0.0,
                       "sphinx_suite": "p256-v1"},
        "logs": "/tmp/x/*/process.log", "kept": True,
    }


@pytest.mark.parametrize(("kw", "ok", "says"), [
    ({}, True, "OK: all 10 messages delivered; latency p50 0.80 s is 1.1x"),
    ({"delivered": 8, "failed": 2}, True, "8 of 10 delivered, 2 failed with a reason, none lost"),
    ({"delivered": 7}, False, "FAILED: 3 of 10 messages lost"),
    ({"delivered": 0, "p50": None}, False, "FAILED"),
    ({"p50": 0.7 * (LATENCY_FACTOR + 1)}, True, "NOT within"),
    ({"sent": 0, "delivered": 0, "p50": None, "traffic": False}, True, "no traffic"),
    ({"sent": 0, "delivered": 0, "p50": None}, False, "nothing was sent"),
])
def test_verdict(kw: dict[str, Any], ok: bool, says: str) -> None:
    v = verdict(summary(**kw))
    assert v["ok"] is ok and says in v["text"] and "\n" not in v["text"]


def test_piped_summary_has_its_title_on_its_own_line_and_the_verdict_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = summary()
    s["verdict"] = verdict(s)
    print_summary(s, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    title = lines.index("mixnet testnet summary")
    assert lines[title - 1] == "" and lines[title + 1].startswith("┏")  # not glued to a table
    for term in ("delivered", "failed", "lost"):
        assert any(line.strip().startswith(term) for line in lines), term
    assert any(line.startswith("logs") and "/tmp/x/*/process.log" in line for line in lines)
    assert lines[-1].startswith("verdict: OK: all 10 messages delivered")
    assert not [line for line in lines if "\x1b" in line or "\r" in line]


def test_piped_stages_are_plain_lines_one_per_finished_stage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = Reporter(enabled=True)
    assert not reporter.tty  # pytest's captured stderr is not a terminal
    reporter.progress("writing keys and configs", done=False)
    reporter.progress("keys and configs written", done=True)
    for ready in range(4):
        reporter.count("authorities", ready, 3)
    reporter.line("network up")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("[1/4] keys and configs written (")
    assert err[1].startswith("[2/4] authorities: 3/3 up (")
    assert err[2] == "network up" and len(err) == 3


def test_the_model_adds_the_faults_link_delay_and_the_drain_outlasts_a_cut() -> None:
    from mixnet.faults import parse_faults
    from mixnet.testnet import testnet_params

    params = testnet_params(Options())
    spec = parse_faults("latency=40ms,loss=1%,partition=mix2:30s")
    delay = fault_link_delay(params, spec)
    assert delay == pytest.approx(6 * spec.expected_delay())  # 3 layers: 6 link crossings
    assert fault_link_delay(params, None) == 0.0
    plain, faulty = predicted_latency(params), predicted_latency(params, link_delay=delay)
    assert "link_delay" not in plain and faulty["link_delay"] == delay
    assert faulty["p50"] == pytest.approx(plain["p50"] + delay)
    assert drain_seconds(Options()) == 60.0
    assert drain_seconds(Options(faults=spec)) == 60.0 + 3 * 30.0


def test_a_netns_summary_shows_what_the_faults_cost_per_link(
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = summary()
    link = {"connections": 1, "segments": 100, "retransmits": 3, "partition_stalls": 2,
            "connections_held": 0, "delay_mean": 0.05, "delay_max": 0.6}
    s["hosts"] = {
        "mode": "netns", "prefix": "mxn1234", "subnet": "10.200.0.0/16", "bridge": "mxn1234br",
        "hosts": {"mix1": {}, "mix2": {}},
        "faults": {
            "spec": "latency=40ms,jitter=0s,loss=1%",
            "totals": {**link, "connections_abandoned": 0, "segments": 100 * 14},
            "links": {f"mix{i}>mix{i + 1}": {**link, "segments": 100 + i} for i in range(14)},
        },
    }
    s["messages"]["retransmissions"] = 7
    s["verdict"] = verdict(s)
    print_summary(s, as_json=False)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.startswith("links between hosts (2 network namespaces") for line in lines)
    assert "1400 segments on 1 connections; 3 modeled TCP retransmissions" in out
    assert "mix13>mix14" in out and "mix0>mix1" not in out  # the busiest 12 of 14
    assert "... 2 more links in --json" in out
    assert any("client retransmissions" in line and "7" in line for line in lines)
    assert lines[-1].startswith("verdict: OK")
def _link(segments: int, delay_max: float = 0.25) -> dict[str, Any]:
    return {"connections": 1, "connections_held": 0, "connections_abandoned": 0, "segments":
            segments, "bytes": segments * 1448, "retransmits": 2, "partition_stalls": 1,
            "delay_total": segments * 0.05, "delay_max": delay_max, "delay_mean": 0.05,
            "connect_failed": 0, "resets": 0, "errors": {}}


def test_a_netns_summary_shows_what_the_faults_cost_and_a_local_one_does_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    local = summary()
    local["verdict"] = verdict(local)
    print_summary(local, as_json=False)
    plain = capsys.readouterr().out
    assert "links between hosts" not in plain and "retransmissions" not in plain

    s = summary()
    s["messages"]["retransmissions"] = 7
    s["latency_s"]["predicted"]["link_delay"] = 0.25
    s["hosts"] = {"bridge": "mxn1234br", "subnet": "10.150.0.0/16",
                  "hosts": {"mix1": {}, "client1": {}},
                  "faults": {"spec": "latency=40ms,jitter=0s,loss=1%", "partitions": [],
                             "totals": _link(300, 10.0),
                             "links": {"client1>mix1": _link(200), "mix1>client1": _link(100),
                                       "mix1>-": _link(0)}}}
    s["verdict"] = verdict(s)
    print_summary(s, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert any("client retransmissions (ARQ)" in line and " 7 " in line for line in lines)
    assert any("of which injected link delay" in line and "0.25 s" in line for line in lines)
    assert any(line.startswith("links between hosts (2 network namespaces on bridge mxn1234br")
               for line in lines)
    assert any("300 segments on 1 connections; 2 modeled TCP retransmissions" in line
               and "max 10000 ms" in line for line in lines)
    rows = [line for line in lines if ">" in line and "│" in line]
    assert [r.split("│")[1].strip() for r in rows] == ["client1>mix1", "mix1>client1"]  # busiest
    assert lines[-1].startswith("verdict: OK")
