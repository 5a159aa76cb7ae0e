"""What ``mixnet testnet`` says: start-up stages, the summary's tables and its verdict line.

Kept apart from the run (:mod:`mixnet.testnet`) so that the words can be read, changed and
tested without a network: every function here takes plain data (the summary dict the run
builds from the processes' statistics) and prints or returns text. Start-up stages and
progress go to stderr (:class:`Reporter`); the summary and the verdict to stdout
(:func:`print_summary`).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

#: The verdict calls latency fine while the measured median is within this factor of the
#: model's (which leaves out processing and link overhead; benchmarks/e2e_latency.py measures
#: that overhead).
LATENCY_FACTOR = 3.0


TERMS = (
    ("sent", "accepted by the sender's daemon"),
    ("delivered", "found in the recipient's inbox"),
    ("failed", "the sender's transport gave up and said why"),
    ("lost", "sent, never delivered, never failed: must be 0"),
)


class Reporter:
    """Start-up stages and progress on stderr: rewritten in place on a terminal, plain lines
    when piped (a log file or CI gets each stage once, when it is done)."""

    STAGES = 4

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.stage_no = 0
        self._open = False
        self._since = time.monotonic()

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self._open and self.tty:
            print(file=sys.stderr, flush=True)
        self._open = False
        print(text, file=sys.stderr, flush=True)

    def progress(self, text: str, *, done: bool) -> None:
        """The current stage's state; the first call after a finished stage opens the next."""
        if not self.enabled:
            return
        if not self._open:
            self.stage_no += 1
            self._since = time.monotonic()
            self._open = True
        shown = f"[{self.stage_no}/{self.STAGES}] {text}"
        if done:
            shown += f" ({time.monotonic() - self._since:.1f} s)"
        if self.tty:
            print(f"\r{shown}\033[K", end="\n" if done else "", file=sys.stderr, flush=True)
        elif done:
            print(shown, file=sys.stderr, flush=True)
        self._open = not done

    def count(self, what: str, ready: int, total: int) -> None:
        """``on_stage`` of :meth:`LocalNetwork.start_all`: processes up in a stage."""
        self.progress(f"{what}: {ready}/{total} up", done=ready == total)


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """One line a person reads first: were messages lost, and is latency what the parameters
    predict (within :data:`LATENCY_FACTOR`)? ``ok`` is the exit status's rule: something was
    delivered and nothing lost (or no traffic was asked for)."""
    m, lat = summary["messages"], summary["latency_s"]
    if m["sent"] == 0:
        asked = summary["parameters"]["traffic"]
        text = "FAILED: nothing was sent" if asked else "no traffic was run (no clients or " \
            "--duration 0): the network is up"
        return {"ok": not asked, "text": text, "latency_ratio": None}
    ratio = None
    if lat["p50"] is not None and lat["predicted"]["p50"] > 0:
        ratio = lat["p50"] / lat["predicted"]["p50"]
    ok = m["lost"] == 0 and m["delivered"] > 0
    if m["lost"]:
        head = f"FAILED: {m['lost']} of {m['sent']} messages lost"
    elif m["failed"]:
        head = (f"OK: {m['delivered']} of {m['sent']} delivered, {m['failed']} failed with a "
                "reason, none lost")
    else:
        head = f"OK: all {m['sent']} messages delivered" if ok else "FAILED: none delivered"
    if ratio is not None:
        within = "within" if ratio <= LATENCY_FACTOR else "NOT within"
        head += (f"; latency p50 {lat['p50']:.2f} s is {ratio:.1f}x the model's "
                 f"{lat['predicted']['p50']:.2f} s ({within} {LATENCY_FACTOR:.0f}x)")
    return {"ok": ok, "text": head, "latency_ratio": ratio}


def verdict_ok(summary: dict[str, Any]) -> bool:
    return bool(summary["verdict"]["ok"])


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    """The summary on stdout: one JSON object, or the tables, the events and the verdict."""
    if as_json:
        print(json.dumps(summary, default=str), flush=True)
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    if not summary["parameters"]["traffic"]:
        _print_tail(console, summary)
        return
    m, lat = summary["messages"], summary["latency_s"]
    pred = lat["predicted"]
    console.print()
    console.print("[bold]mixnet testnet summary[/bold]")
    table = Table()
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("parameters predict", justify="right")
    table.add_row("messages sent / delivered / failed / lost",
                  f"{m['sent']} / {m['delivered']} / {m['failed']} / {m['lost']}", "")

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    table.add_row("latency p50", fmt(lat["p50"]), fmt(pred["p50"]))
    table.add_row("latency p95", fmt(lat["p95"]), fmt(pred["p95"]))
    table.add_row("latency max / mean", f"{fmt(lat['max'])} / {fmt(lat['mean'])}",
                  f"mean {fmt(pred['mean'])}")
    if pred.get("link_delay"):
        table.add_row("  of which injected link delay", "", fmt(pred["link_delay"]))
    if "hosts" in summary:  # what the faults cost; --hosts local keeps its table as it was
        table.add_row("client retransmissions (ARQ)", str(m.get("retransmissions", 0)), "")
    kinds = summary["packets_by_kind"]
    table.add_row("client packets real / decoy / drop / loop",
                  f"{kinds.get('real', 0)} / {kinds.get('decoy', 0)} / {kinds.get('drop', 0)} / "
                  f"{kinds.get('loop', 0)}", "")
    table.add_row("SURB-ACKs sent by providers", str(kinds.get("ack", 0)), "")
    table.add_row("epochs rotated", str(summary["epochs_rotated"]), "")
    workers = sorted({n["hop_workers"] for n in summary["nodes"].values()})
    table.add_row(
        "Sphinx suite / hop workers per node",
        f"{summary['parameters']['sphinx_suite']} / {', '.join(map(str, workers)) or '-'}", "",
    )
    table.add_row("drops by reason", ", ".join(f"{k} {v}" for k, v in
                                              summary["drops_by_reason"].items()) or "none", "")
    console.print(table)
    for term, meaning in TERMS:
        console.print(f"  {term:10} {meaning}")
    console.print()
    console.print("[bold]nodes[/bold]")
    nodes = Table()
    for col in ("node", "in", "dropped", "sent", "loops returned", "in = processed + dropped"):
        nodes.add_column(col, justify="right")
    for name, n in summary["nodes"].items():
        nodes.add_row(name, str(n["packets_in"]), str(n["dropped"]), str(n["sent"]),
                      f"{n['loops_returned']}/{n['loops_sent']}",
                      "yes" if n["in_equals_processed_plus_dropped"] else "NO")
    console.print(nodes)
    if "hosts" in summary:
        _print_links(console, summary)
    _print_tail(console, summary)


#: Links shown in the text summary (all of them are in ``--json``).
LINK_ROWS = 12


def _print_links(console: Any, summary: dict[str, Any]) -> None:
    """``--hosts netns``: what the injected faults cost, in all and on the busiest links."""
    from rich.table import Table  # noqa: PLC0415

    hosts, faults = summary["hosts"], summary["hosts"]["faults"]
    total = faults["totals"]
    console.print()
    console.print(f"[bold]links between hosts[/bold] ({len(hosts['hosts'])} network namespaces "
                  f"on bridge {hosts['bridge']}, {hosts['subnet']}; faults {faults['spec']})",
                  soft_wrap=True)
    console.print(
        f"  {total['segments']} segments on {total['connections']} connections; "
        f"{total['retransmits']} modeled TCP retransmissions; {total['partition_stalls']} "
        f"segments and {total['connections_held']} set-ups held by a partition "
        f"({total['connections_abandoned']} abandoned); added delay mean "
        f"{total['delay_mean'] * 1000:.1f} ms, max {total['delay_max'] * 1000:.0f} ms; the "
        f"relays' own lag mean {total.get('lag_mean', 0.0) * 1000:.1f} ms, max "
        f"{total.get('lag_max', 0.0) * 1000:.0f} ms",
        markup=False, soft_wrap=True,
    )
    links = Table()
    links.add_column("link", no_wrap=True)
    for col in ("conns", "segments", "retransmits", "held by cut", "delay ms mean/max"):
        links.add_column(col, justify="right")
    busy = sorted(((k, v) for k, v in faults["links"].items() if v["segments"]),
                  key=lambda kv: -kv[1]["segments"])
    for name, v in busy[:LINK_ROWS]:
        links.add_row(name, str(v["connections"]), str(v["segments"]), str(v["retransmits"]),
                      str(v["partition_stalls"]),
                      f"{v['delay_mean'] * 1000:.1f} / {v['delay_max'] * 1000:.0f}")
    console.print(links)
    if len(busy) > LINK_ROWS:
        console.print(f"  ... {len(busy) - LINK_ROWS} more links in --json (hosts.faults.links)")


def _print_tail(console: Any, summary: dict[str, Any]) -> None:
    for event in summary["events"]:
        console.print(event, markup=False)
    for what, command in summary.get("attach", {}).items():
        console.print(f"{what:10} {command}", markup=False, soft_wrap=True)
    where = "kept" if summary.get("kept") else "removed at the end; keep them with --dir"
    console.print(f"logs       {summary['logs']} ({where})", markup=False, soft_wrap=True)
    console.print(f"verdict: {summary['verdict']['text']}", markup=False, soft_wrap=True)
