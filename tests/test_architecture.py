"""The floors of the building: cores do no I/O, roles never import each other.

One scanner (``helpers.scan_imports``: ``ast``, no imports executed) reads every module of
every package, so a violation fails here even in a module no other test imports. The sans-IO
cores of every package are declared below (``CORES``, see docs/architecture.md): bytes, time
and randomness come in as arguments, so a core may not import ``os``, ``pathlib``, ``time``,
``sqlite3``, ``socket``, ``trio`` or any other I/O library, nor call the builtin ``open``. The
same list is what ``mypy --strict`` checks (``[tool.mypy] files`` in pyproject.toml).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from helpers import scan_imports as scan

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("directory", "mixnode", "client", "simulations")
PACKAGES = ("mixcore", "mixnet", *ROLES)
NET_FRAMEWORKS = {"trio", "socket", "asyncio", "httpx", "hypercorn", "anyio", "selectors",
                  "starlette"}
#: What no core may import: the OS, clocks, storage, sockets, event loops, processes.
CORE_FORBIDDEN = NET_FRAMEWORKS | {"os", "pathlib", "time", "sqlite3", "subprocess", "ssl",
                                   "shutil", "tempfile"}
SPHINX_LIBS = {"sphinxmix", "petlib"}

#: mixcore is the core floor: every module of it is a core except these shells, which read and
#: write files, hold locks, start processes or read the clock for the roles.
MIXCORE_SHELLS = {
    "mixcore/net",  # the trio adapters every role shares (links, the consensus fetcher)
    "mixcore/files.py",  # atomic file replacement, owner-only checks
    "mixcore/keys.py",  # key files (the keys themselves are pure)
    "mixcore/loading.py",  # the params, bootstrap and mix key files
    "mixcore/lockfile.py",
    "mixcore/process.py",
    "mixcore/ratelog.py",  # rate-limited logging on the wall clock
    "mixcore/ready.py",  # the ready file a running role writes for its launcher
}
#: Every role's sans-IO cores, by path. A role's trio shell drives them.
ROLE_CORES = {
    "client": [
        "client/actions.py", "client/codec.py", "client/config.py", "client/core.py",
        "client/errors.py", "client/fragments.py", "client/mailbox_seal.py", "client/packets.py",
        "client/paths.py",
        *(f"client/transport/{name}.py" for name in (
            "__init__", "acks", "arq", "drops", "loops", "outbox", "pulls", "reassembly",
            "streams",
        )),
    ],
    "mixnode": [
        "mixnode/core.py", "mixnode/keyring.py", "mixnode/limits.py", "mixnode/loops.py",
        "mixnode/pool.py", "mixnode/unwrap.py", "mixnode/view.py",
    ],
    "directory": [
        "directory/admission.py", "directory/errors.py", "directory/limits.py",
        "directory/registry.py", "directory/votes.py", "directory/voting.py",
    ],
}


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def is_mixcore_shell(path: Path) -> bool:
    name = rel(path)
    return any(name == shell or name.startswith(shell + "/") for shell in MIXCORE_SHELLS)


def cores() -> list[Path]:
    found = [p for p in modules("mixcore") if not is_mixcore_shell(p)]
    for paths in ROLE_CORES.values():
        found += [ROOT / p for p in paths]
    return found


# -- the floors --------------------------------------------------------------------------------


def test_packages_exist() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package


def test_mixcore_imports_no_role_and_not_the_face() -> None:
    for path in modules("mixcore"):
        bad = scan(path).roots & {*ROLES, "mixnet"}
        assert not bad, f"{rel(path)} imports {bad}"


def test_roles_never_import_each_other_or_the_face() -> None:
    for role in ROLES:
        forbidden = ({*ROLES} - {role}) | {"mixnet"}
        for path in modules(role):
            bad = scan(path).roots & forbidden
            assert not bad, f"{rel(path)} imports {bad}"


# -- the cores ---------------------------------------------------------------------------------


def test_declared_cores_exist_and_cover_every_package_with_a_core() -> None:
    declared = cores()
    assert all(p.is_file() for p in declared), [rel(p) for p in declared if not p.is_file()]
    names = {rel(p) for p in declared}
    for expected in ("mixcore/hop.py", "mixcore/topology.py", "mixcore/poisson.py",
                     "mixcore/link.py", "mixcore/sphinx.py", "client/core.py",
                     "directory/voting.py", "mixnode/pool.py", "mixnode/core.py"):
        assert expected in names, expected


def test_cores_do_no_io() -> None:
    offenders = {}
    for path in cores():
        uses = scan(path)
        bad = sorted(uses.roots & CORE_FORBIDDEN) + (["open()"] if uses.calls_open else [])
        if bad:
            offenders[rel(path)] = bad
    assert offenders == {}, f"sans-IO cores that do I/O: {offenders}"


def test_mixcore_shells_use_no_network_framework_outside_mixcore_net() -> None:
    offenders = {
        rel(path): sorted(scan(path).roots & NET_FRAMEWORKS)
        for path in modules("mixcore")
        if not rel(path).startswith("mixcore/net/") and scan(path).roots & NET_FRAMEWORKS
    }
    assert offenders == {}, f"I/O imports outside mixcore/net: {offenders}"


def test_client_cores_import_only_the_standard_pieces_they_need() -> None:
    allowed = {"__future__", "client", "mixcore", "collections", "dataclasses", "enum",
               "typing", "heapq", "math", "random", "struct", "secrets", "cryptography"}
    for name in ROLE_CORES["client"]:
        roots = scan(ROOT / name).roots
        assert roots <= allowed, (name, sorted(roots - allowed))
        assert "threading" not in roots, name


def test_every_core_is_type_checked_strictly() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    checked = set(config["files"])
    missing = [
        rel(p) for p in cores()
        if rel(p) not in checked and not any(rel(p).startswith(f + "/") for f in checked)
    ]
    assert missing == [], f"cores mypy does not check: {missing}"


# -- one owner per concern ------------------------------------------------------------------------


def test_only_the_sphinx_module_touches_sphinxmix_and_petlib() -> None:
    users = [rel(path) for package in PACKAGES for path in modules(package)
             if scan(path).roots & SPHINX_LIBS]
    assert users == ["mixcore/sphinx.py"]


def test_sql_is_spoken_only_by_the_stores() -> None:
    users = sorted(rel(path) for package in PACKAGES for path in modules(package)
                   if "sqlite3" in scan(path).roots)
    assert users == [
        "client/storage/sqlite_header.py",
        "client/storage/store.py",
        "client/transport_db.py",
        "directory/store.py",
        "mixnode/mailbox.py",
        "mixnode/server.py",  # only to catch sqlite3.Error from the mailbox at shutdown
    ]


def test_directory_network_io_only_in_its_shells() -> None:
    allowed = {
        "directory/service.py": {"trio", "httpx", "hypercorn"},
        "directory/cli.py": {"trio"},
        "directory/app.py": {"starlette", "trio"},  # the ASGI shell: a deadline per body
    }
    found = {rel(p) for p in modules("directory")}
    assert found >= {"directory/registry.py", "directory/voting.py", "directory/service.py"}
    offenders = {
        rel(p): sorted((scan(p).roots & NET_FRAMEWORKS) - allowed.get(rel(p), set()))
        for p in modules("directory")
        if (scan(p).roots & NET_FRAMEWORKS) - allowed.get(rel(p), set())
    }
    assert offenders == {}


def test_e2e_and_storage_are_confined() -> None:
    """client/e2e and client/storage import only mixcore, each other, the standard library,
    cryptography and segno (never another role or an I/O framework)."""
    allowed = {"mixcore", "client", "cryptography", "segno", "__future__"}
    files = modules("client/e2e") + modules("client/storage")
    assert len(files) >= 9
    for path in files:
        for name in scan(path).modules:
            top = name.split(".")[0]
            if top == "client":
                assert name.startswith(("client.e2e", "client.storage")), (rel(path), name)
            else:
                assert top in allowed or top in sys.stdlib_module_names, (rel(path), name)
            assert top not in {"trio", "socket", "asyncio", "httpx"}, (rel(path), name)


def test_simulations_import_only_their_libraries() -> None:
    """mixcore, numpy, matplotlib, rich, distributed (Dask, for sweeps on a cluster) and the
    standard library only."""
    allowed = {"mixcore", "numpy", "matplotlib", "rich", "simulations", "distributed"}
    files = modules("simulations")
    assert len(files) >= 10
    bad = [f"{rel(p)}: {name}" for p in files for name in scan(p).modules
           if name.split(".")[0] not in allowed | sys.stdlib_module_names]
    assert not bad, bad


# -- the face composes the roles ------------------------------------------------------------------


def module_path(name: str) -> Path | None:
    """The file of project module ``name`` (dotted), or None for a module from elsewhere."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file() and name.split(".", maxsplit=1)[0] in PACKAGES:
            return path
    return None


def project_imports(name: str) -> frozenset[str]:
    """The project modules module ``name`` imports, at its top or inside a function (``from
    package import module`` counts as importing that module)."""
    path = module_path(name)
    if path is None:
        return frozenset()
    uses = scan(path)
    return frozenset(c for c in uses.modules | uses.members if module_path(c) is not None)


def reachable(start: str, within: str = "") -> set[str]:
    """Every project module ``start`` imports, directly or through others (only through
    modules whose name starts with ``within``, when given)."""
    seen, todo = set(), [start]
    while todo:
        for dep in project_imports(todo.pop()):
            if dep.startswith(within) and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_harness_composes_the_roles_and_never_runs_their_commands() -> None:
    """``mixnet.network`` calls the roles' setup functions; it reaches no command module (no
    ``mixnet.cli``, no role's ``cli``: it used to run their ``init`` in-process and parse what
    they printed, and mixnet.cli -> testnet -> network -> mixnet.cli was a cycle)."""
    deps = reachable("mixnet.network")
    assert {"client.setup", "directory.setup", "mixnode.setup", "mixcore.ready"} <= deps
    commands = {"mixnet.cli", "mixnet.testnet", "client.cli", "directory.cli", "mixnode.cli",
                "simulations.cli"}
    assert deps & commands == set()


def test_the_face_has_no_import_cycle() -> None:
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in modules("mixnet")]
    names = [n.removesuffix(".__init__") for n in names]
    cycles = [n for n in names if n in reachable(n, within="mixnet")]
    assert cycles == [], f"mixnet modules that import themselves through others: {cycles}"
    assert "mixnet.testnet" not in reachable("mixnet.report")  # the words need no network


# -- the scanner itself ---------------------------------------------------------------------------


def test_the_scan_sees_imports_and_open(tmp_path: Path) -> None:
    # Guard against a scan that silently finds nothing.
    assert "sphinxmix" in scan(ROOT / "mixcore" / "sphinx.py").roots
    assert "msgpack" in scan(ROOT / "mixcore" / "encoding.py").roots
    assert "noise" in scan(ROOT / "mixcore" / "link.py").roots
    assert {"mixcore", "heapq"} <= scan(ROOT / "client" / "transport" / "acks.py").roots
    probe = tmp_path / "probe.py"
    probe.write_text("import os.path\nfrom time import monotonic\nwith open('x') as f:\n    pass\n")
    uses = scan(probe)
    assert uses.roots == {"os", "time"} and uses.calls_open
    probe2 = tmp_path / "probe2.py"
    probe2.write_text("class K:\n    def open(self):\n        return self.open()\n")
    assert not scan(probe2).calls_open  # a method named open is not the builtin
