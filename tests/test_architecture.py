"""The floors of the building: cores do no I/O, roles never import each other.

Scans the source with ``ast`` (no imports executed), so a violation fails here even in a module
no other test imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("directory", "mixnode", "client", "simulations")
IO_MODULES = {"trio", "socket", "asyncio", "httpx", "hypercorn", "anyio", "selectors"}
SPHINX_LIBS = {"sphinxmix", "petlib"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_packages_exist() -> None:
    for package in ("mixcore", "mixnet", *ROLES):
        assert (ROOT / package / "__init__.py").is_file(), package


def test_mixcore_core_does_no_io() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & IO_MODULES)
        for path in _modules("mixcore")
        if "net" not in path.relative_to(ROOT / "mixcore").parts[:-1]
        and _imports(path) & IO_MODULES
    }
    assert offenders == {}, f"I/O imports outside mixcore/net: {offenders}"


def test_mixcore_imports_no_role_and_not_the_face() -> None:
    for path in _modules("mixcore"):
        bad = _imports(path) & {*ROLES, "mixnet"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_roles_never_import_each_other_or_the_face() -> None:
    for role in ROLES:
        forbidden = ({*ROLES} - {role}) | {"mixnet"}
        for path in _modules(role):
            bad = _imports(path) & forbidden
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_only_the_sphinx_module_touches_sphinxmix_and_petlib() -> None:
    users = [
        str(path.relative_to(ROOT))
        for package in ("mixcore", "mixnet", *ROLES)
        for path in _modules(package)
        if _imports(path) & SPHINX_LIBS
    ]
    assert users == ["mixcore/sphinx.py"]


def test_the_scan_sees_imports() -> None:
    # Guard against a scan that silently finds nothing.
    assert "sphinxmix" in _imports(ROOT / "mixcore" / "sphinx.py")
    assert "msgpack" in _imports(ROOT / "mixcore" / "encoding.py")
