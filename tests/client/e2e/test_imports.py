"""client/e2e and client/storage import only mixcore, each other, the standard library,
cryptography and segno (and never another role or an I/O framework)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ALLOWED = {"mixcore", "client", "cryptography", "segno", "__future__"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_imports_are_confined() -> None:
    files = sorted((ROOT / "client" / "e2e").glob("*.py")) + sorted(
        (ROOT / "client" / "storage").glob("*.py")
    )
    assert len(files) >= 9
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "client":
                assert name.startswith(("client.e2e", "client.storage")), (path, name)
            else:
                assert top in ALLOWED or top in sys.stdlib_module_names, (path, name)
            assert top not in {"trio", "socket", "asyncio", "httpx"}, (path, name)
