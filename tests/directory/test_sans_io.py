"""The directory's cores do no network I/O: only ``service.py`` (and the CLI that starts it)
may import trio, httpx or hypercorn; only ``app.py`` speaks ASGI; only ``store.py`` SQL."""

from __future__ import annotations

import ast
from pathlib import Path

DIRECTORY = Path(__file__).resolve().parents[2] / "directory"
IO = {"trio", "socket", "asyncio", "httpx", "hypercorn", "anyio", "selectors", "starlette"}
ALLOWED = {
    "service.py": {"trio", "httpx", "hypercorn"},
    "cli.py": {"trio"},
    "app.py": {"starlette", "trio"},  # the ASGI shell: a deadline on each request body
}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_cores_import_no_io() -> None:
    modules = sorted(DIRECTORY.glob("*.py"))
    assert {p.name for p in modules} >= {"registry.py", "voting.py", "votes.py", "service.py"}
    offenders = {
        p.name: sorted((imports(p) & IO) - ALLOWED.get(p.name, set()))
        for p in modules
        if (imports(p) & IO) - ALLOWED.get(p.name, set())
    }
    assert offenders == {}


def test_only_the_store_speaks_sql() -> None:
    users = sorted(p.name for p in DIRECTORY.glob("*.py") if "sqlite3" in imports(p))
    assert users == ["store.py"]
