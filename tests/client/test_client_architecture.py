"""The client's transport core is sans-IO and role-free: no trio, sockets or asyncio, and no
import of another role. (The daemon, CLI and TUI shells will live beside it and may use trio.)"""

from __future__ import annotations

import ast
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"
CORE_MODULES = (
    "actions", "arq", "codec", "config", "core", "errors", "fragments", "packets", "paths",
    "reassembly", "streams",
)
IO = {"trio", "socket", "asyncio", "anyio", "selectors", "httpx", "hypercorn", "threading",
      "subprocess", "sqlite3", "time"}
OTHER_ROLES = {"mixnode", "directory", "simulations", "mixnet"}


def imported_roots(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_do_no_io_and_import_no_other_role() -> None:
    for name in CORE_MODULES:
        path = CLIENT / f"{name}.py"
        assert path.is_file(), path
        roots = imported_roots(path)
        assert not roots & IO, f"{name}.py imports {sorted(roots & IO)}"
        assert not roots & OTHER_ROLES, f"{name}.py imports {sorted(roots & OTHER_ROLES)}"
        assert roots <= {"__future__", "client", "mixcore", "collections", "dataclasses",
                         "enum", "typing", "heapq", "math", "os", "random", "struct"}, (
            name, sorted(roots))


def test_the_scan_sees_imports() -> None:
    assert "mixcore" in imported_roots(CLIENT / "core.py")
    assert "heapq" in imported_roots(CLIENT / "core.py")
