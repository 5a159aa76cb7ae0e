"""The operator's list of approved node keys: ``approved.json`` beside ``authority.json``.

``mixnet directory approve`` and ``revoke`` edit it (atomically, mode 0600); a running authority
re-reads it when its modification time changes, so approving a node needs no restart.
Format::

    {"version": 1, "nodes": [{"identity_key": "<64 hex>", "role": "mix", "layer": null}, ...]}

``approve --file LIST`` reads a plain list instead: one ``KEYHEX ROLE [LAYER]`` per line, blank
lines and ``#`` comments ignored (what an operator pastes from the nodes' ``init`` output).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from directory.admission import Approval
from directory.errors import DirectoryConfigError
from mixcore.consensus import MAX_NODES
from mixcore.files import write_atomic
from mixcore.keys import PUBLIC_KEY_LEN
from mixcore.params import MAX_LAYERS
from mixcore.topology import NodeRole

APPROVALS_VERSION = 1
APPROVALS_FILE_NAME = "approved.json"


def parse_role(text: str) -> NodeRole:
    try:
        return NodeRole[text.strip().upper()]
    except KeyError:
        raise DirectoryConfigError(f"role: expected mix or provider, got {text!r}") from None


def parse_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise DirectoryConfigError(f"identity key: not hex: {text[:20]!r}") from None
    if len(key) != PUBLIC_KEY_LEN:
        raise DirectoryConfigError(f"identity key: expected {PUBLIC_KEY_LEN} bytes of hex")
    return key


def make_approval(key: bytes, role: NodeRole, layer: int | None) -> Approval:
    if layer is not None:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise DirectoryConfigError("layer: expected a whole number")
        if role is NodeRole.PROVIDER and layer != 0:
            raise DirectoryConfigError("layer: a provider is always in layer 0")
        if not 0 <= layer <= MAX_LAYERS:
            raise DirectoryConfigError(f"layer: must be between 0 and {MAX_LAYERS}")
        if layer == 0:
            layer = None
    return Approval(identity_key=key, role=role, layer=layer)


def load_approvals(path: str | os.PathLike[str]) -> list[Approval]:
    """The approved nodes; a missing file is an empty list."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise DirectoryConfigError(f"approvals file {path}: cannot read: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != APPROVALS_VERSION:
        raise DirectoryConfigError(f"approvals file {path}: expected version {APPROVALS_VERSION}")
    nodes = data.get("nodes")
    if not isinstance(nodes, list):
        raise DirectoryConfigError(f"approvals file {path}: nodes must be a list")
    approvals = []
    for entry in nodes:
        if not isinstance(entry, dict) or not {"identity_key", "role"} <= set(entry):
            raise DirectoryConfigError(f"approvals file {path}: each node needs identity_key, role")
        key = parse_key(str(entry["identity_key"]))
        approvals.append(make_approval(key, parse_role(str(entry["role"])), entry.get("layer")))
    return approvals


def save_approvals(path: str | os.PathLike[str], approvals: Iterable[Approval]) -> None:
    by_key = {a.identity_key: a for a in approvals}
    if len(by_key) > MAX_NODES:
        raise DirectoryConfigError(f"at most {MAX_NODES} approved nodes (the consensus limit)")
    nodes = [
        {"identity_key": a.identity_key.hex(), "role": a.role.name.lower(), "layer": a.layer}
        for a in sorted(by_key.values(), key=lambda a: a.identity_key)
    ]
    body = json.dumps({"version": APPROVALS_VERSION, "nodes": nodes}, indent=1) + "\n"
    write_atomic(path, body.encode(), mode=0o600)


def parse_list(text: str) -> list[Approval]:
    """``KEYHEX ROLE [LAYER]`` per line (``#`` starts a comment)."""
    approvals = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            raise DirectoryConfigError(f"line {number}: expected KEYHEX ROLE [LAYER]")
        layer = None
        if len(parts) == 3:
            if not parts[2].isdigit():
                raise DirectoryConfigError(f"line {number}: layer must be a number")
            layer = int(parts[2])
        approvals.append(make_approval(parse_key(parts[0]), parse_role(parts[1]), layer))
    return approvals


_UNREAD = (-1, -1, -1)


class ApprovalsFile:
    """The approvals file of a running authority, re-read when it changes on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = _UNREAD
        self.approvals: list[Approval] = []
        self.reload_if_changed()

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        # A replaced file (write_atomic) has a new inode even within one mtime tick.
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed since the last read; True when it did."""
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        self.approvals = load_approvals(self.path)
        self._stamp = stamp
        return True
