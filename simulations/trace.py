"""Link-event traces: the format a real testnet records, read back into ``Observations``.

One JSON object per line. An optional first line ``{"type": "meta", ...}`` names the nodes'
roles and the timing the adversary may assume; every other line is one packet crossing one link:

    {"t": 12.5031, "src": "client-3", "dst": "provider-0", "size": 2276,
     "msg": "9f2c...", "kind": "real"}

``t`` (seconds) is when the packet leaves ``src``; it reaches ``dst`` at ``t + link_latency``.
``size`` is the bytes on the wire (constant in a correct network; the reader reports whether it
was). A ``kind`` of ``mix-loop`` marks a node's own loop: the adversary is told its first row
(no departure of the origin's pool) and last row (no arrival), and that a provider on its way
relays it at once; the optional meta key ``layers`` (node -> layer) lets it reject paths that
no real packet takes. Otherwise ``msg`` and ``kind`` are ground truth that the adversary never
reads: ``msg`` is the same on every hop of one packet (the testnet knows it; the wire does
not show it) and lets us score the adversary and model corrupt mixes; ``kind`` is ``real``,
``loop``, ``drop`` or ``mix-loop``. Injection is a row
from a client, delivery a row from a mix to a provider (or to a client when there are no
providers); both follow from the roles, so no extra marker is needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mixcore.errors import MixnetError
from simulations.network import NetworkRun
from simulations.observations import Kind, Observations, Role

IntArray = npt.NDArray[np.int64]

ROLE_NAMES = {"client": Role.CLIENT, "provider": Role.PROVIDER, "mix": Role.MIX}
KIND_NAMES = {"real": Kind.REAL, "loop": Kind.LOOP, "drop": Kind.DROP,
              "mix-loop": Kind.MIX_LOOP}
META = "meta"


class TraceError(MixnetError):
    """A trace file that cannot be read: the CLI prints it as one line."""


@dataclass(frozen=True, slots=True)
class Trace:
    """A trace as the adversary sees it plus its ground truth."""

    obs: Observations
    kind: IntArray
    """Per row: Kind of the packet, -1 when the trace did not say."""
    sizes_constant: bool
    mean_hop_delay: float | None
    link_latency: float


def write_trace(run: NetworkRun, path: Path | str, size: int = 2276) -> int:
    """Write a model run in the trace format (to test trace mode); returns the rows written."""
    obs = run.obs
    names = _model_names(run)
    n_links = run.hops
    order = np.argsort(obs.t_dep, kind="stable")
    n_pk = run.first_row.size
    client_rows = run.n_client_rows
    packet = np.arange(obs.n_rows) // max(n_links, 1)
    kind_of = run.kind
    if obs.n_rows > client_rows:
        packet[client_rows:] = n_pk + (np.arange(obs.n_rows - client_rows) // run.loop_links)
        kind_of = np.concatenate([run.kind, np.full(int(packet[-1]) + 1 - n_pk, Kind.MIX_LOOP)])
    kinds = {int(k): name for name, k in KIND_NAMES.items()}
    with open(path, "w", encoding="utf-8") as fh:
        meta = {
            "type": META,
            "nodes": {names[i]: Role(int(obs.node_role[i])).name.lower()
                      for i in range(obs.n_nodes)},
            "corrupt": [names[i] for i in np.flatnonzero(obs.corrupt)],
            "layers": {names[i]: int(obs.node_layer[i]) for i in range(obs.n_nodes)}
            if obs.node_layer is not None else {},
            "mean_hop_delay": run.config.mean_hop_delay,
            "link_latency": run.config.link_latency,
        }
        fh.write(json.dumps(meta) + "\n")
        for r in order:
            p = int(packet[r])
            fh.write(json.dumps({
                "t": float(obs.t_dep[r]), "src": names[int(obs.src[r])],
                "dst": names[int(obs.dst[r])], "size": size, "msg": f"p{p}",
                "kind": kinds[int(kind_of[p])],
            }) + "\n")
    return int(order.size)


def _model_names(run: NetworkRun) -> list[str]:
    role = run.obs.node_role
    names: list[str] = []
    counters = {int(Role.CLIENT): 0, int(Role.PROVIDER): 0, int(Role.MIX): 0}
    for r in role:
        names.append(f"{Role(int(r)).name.lower()}-{counters[int(r)]}")
        counters[int(r)] += 1
    return names


def read_trace(path: Path | str) -> Trace:
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_trace(fh)
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror}") from None


def parse_trace(lines: Iterable[str]) -> Trace:
    """Parse trace lines; roles come from the meta line or from the ``client``/``provider``/``mix``
    prefix of the node names."""
    meta: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise TraceError(f"trace line {number}: not JSON") from None
        if not isinstance(obj, dict):
            raise TraceError(f"trace line {number}: expected an object")
        if obj.get("type") == META:
            meta = obj
            continue
        for key, typ in (("t", (int, float)), ("src", str), ("dst", str)):
            if not isinstance(obj.get(key), typ) or isinstance(obj.get(key), bool):
                raise TraceError(f"trace line {number}: missing or bad {key!r}")
        records.append(obj)
    if not records:
        raise TraceError("trace has no link events")
    roles_given: dict[str, str] = meta.get("nodes", {})
    names = sorted({r["src"] for r in records} | {r["dst"] for r in records} | set(roles_given))
    index = {name: i for i, name in enumerate(names)}
    role = np.array([_role_of(n, roles_given) for n in names], dtype=np.int64)
    corrupt = np.zeros(len(names), dtype=bool)
    for name in meta.get("corrupt", []):
        if name in index:
            corrupt[index[name]] = True
    latency = float(meta.get("link_latency", 0.0))
    delay = meta.get("mean_hop_delay")
    records.sort(key=lambda r: float(r["t"]))
    t_dep = np.array([float(r["t"]) for r in records])
    src = np.array([index[r["src"]] for r in records], dtype=np.int64)
    dst = np.array([index[r["dst"]] for r in records], dtype=np.int64)
    kind = np.array([int(KIND_NAMES.get(str(r.get("kind")), -1)) for r in records],
                    dtype=np.int64)
    sizes = {r.get("size") for r in records}
    next_row = np.full(len(records), -1, dtype=np.int64)
    prev_row = np.full(len(records), -1, dtype=np.int64)
    last_seen: dict[str, int] = {}
    for i, r in enumerate(records):
        msg = r.get("msg")
        if msg is None:
            continue
        key = str(msg)
        if key in last_seen:
            next_row[last_seen[key]] = i
            prev_row[i] = last_seen[key]
        last_seen[key] = i
    layers_given: dict[str, int] = meta.get("layers", {})
    layer = None
    if layers_given and all(n in layers_given for n in names):
        layer = np.array([int(layers_given[n]) for n in names], dtype=np.int64)
    loop_rows = kind == Kind.MIX_LOOP
    fresh = absorbed = relay = None
    if loop_rows.any():
        fresh = loop_rows & (prev_row < 0)
        absorbed = loop_rows & (next_row < 0)
        relay = loop_rows & ~absorbed & (role[dst] == Role.PROVIDER)
    obs = Observations(
        t_dep=t_dep, t_arr=t_dep + latency, src=src, dst=dst, node_role=role,
        corrupt=corrupt, next_row=next_row, prev_row=prev_row, node_names=names,
        node_layer=layer, relay=relay, fresh=fresh, absorbed=absorbed,
    )
    return Trace(obs, kind, len(sizes) == 1, None if delay is None else float(delay), latency)


def _role_of(name: str, given: dict[str, str]) -> int:
    label = given.get(name)
    if label is None:
        label = next((r for r in ROLE_NAMES if name.startswith(r)), None)
    if label not in ROLE_NAMES:
        raise TraceError(f"trace: unknown role for node {name!r} (give it in the meta line)")
    return int(ROLE_NAMES[label])


def estimate_mean_delay(obs: Observations) -> float:
    """Mean pool dwell from the ground truth, when the trace's meta line does not state it."""
    has_next = obs.next_row >= 0
    rows = np.flatnonzero(has_next & obs.mixing_in())
    if rows.size == 0:
        return 1.0
    dwell = obs.t_dep[obs.next_row[rows]] - obs.t_arr[rows]
    return max(float(np.mean(dwell)), 0.0)
