"""No protocol core does I/O: a core module never imports asyncio, socket, time,
os, threading or the global random (DESIGN.md, the one rule)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "synod"

FORBIDDEN = {"asyncio", "socket", "time", "os", "threading", "selectors", "subprocess"}

#: Packages whose modules are drivers, glue or faces, which may do I/O. Everything
#: else under src/synod is a core (or kernel) module and must not.
IO_ALLOWED_PREFIXES = (
    "runtime/",
    "sim/",
    "cli/",
    "node/",
    "web/",
    "demo/",
    "storage/files.py",
    "storage/realfs.py",
    "check/__main__.py",
)
#: Modules named like these inside a block are its I/O glue (servers, clients,
#: runners), allowed to use the runtime. Protocol cores are everything else.
IO_ALLOWED_NAMES = ("server.py", "client.py", "runner.py", "agent.py", "transport.py", "worker.py",
                    "process.py", "cluster.py", "node.py")
#: ... and so are modules whose names start with these (``cluster_worker.py``).
IO_ALLOWED_NAME_PREFIXES = ("cluster_",)


def core_modules() -> list[Path]:
    modules = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if (relative.startswith(IO_ALLOWED_PREFIXES) or path.name in IO_ALLOWED_NAMES
                or path.name.startswith(IO_ALLOWED_NAME_PREFIXES)):
            continue
        modules.append(path)
    return modules


def imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "random":
                # `from random import random/choice/...` uses the global generator;
                # only the class Random is allowed.
                names.update(f"random.{alias.name}" for alias in node.names if alias.name != "Random")
    return names


def test_there_are_core_modules_to_check() -> None:
    assert len(core_modules()) >= 5


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_core_module_does_no_io(path: Path) -> None:
    names = imported_names(path)
    bad = {n for n in names if n.split(".")[0] in FORBIDDEN}
    bad |= {n for n in names if n.startswith("random.")}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


def test_core_module_uses_no_global_random_functions() -> None:
    offenders = []
    for path in core_modules():
        text = path.read_text()
        for call in ("random.random(", "random.choice(", "random.randint(", "random.shuffle(",
                     "random.uniform(", "random.seed(", "random.sample(", "random.randrange("):
            if call in text:
                offenders.append(f"{path.relative_to(SRC)}: {call}")
    assert not offenders, offenders


def test_scanner_catches_a_planted_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom random import choice\n")
    names = imported_names(bad)
    assert "time" in names and "random.choice" in names
