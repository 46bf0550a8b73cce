"""The package's layering, checked from the source: no import cycles anywhere, and the
servers (controller, proxy, replica) never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Repository folder -> the package it installs as (pyproject's package-dir).
PACKAGES = {"sdk": "weir", "controller": "weir.controller", "proxy": "weir.proxy",
            "replica": "weir.replica", "protos": "weir.protos"}
SERVERS = ("weir.controller", "weir.proxy", "weir.replica")


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            if "_pb2" in path.name or path.name == "generate.py":
                continue
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((package, *parts))] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports, wherever in the file (a function-level
    import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            # Importing a package runs only its __init__: that is the dependency.
            if target and target != name and target.startswith("weir"):
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    edges = graph()
    assert len(edges) > 50, "the walk found too few modules"
    assert cycles(edges) == []


def test_servers_do_not_import_each_other() -> None:
    def server_of(module: str) -> str | None:
        return next((s for s in SERVERS if module == s or module.startswith(s + ".")), None)

    crossings = [(name, target) for name, targets in graph().items() for target in targets
                 if server_of(name) and server_of(target)
                 and server_of(name) != server_of(target)]
    assert crossings == []


def test_the_sdk_does_not_import_the_servers() -> None:
    """The SDK is what every process (and the user's script) imports: a server's code must
    not ride along."""
    leaks = [(name, target) for name, targets in graph().items()
             if not name.startswith(SERVERS) for target in targets
             if target.startswith(SERVERS)]
    assert leaks == []


def test_proxy_and_node_agent_start_without_pydantic() -> None:
    # pydantic and the config schema cost a process about 17 MB resident: the controller,
    # which checks configs, needs them; the proxy and the node agent only read checked ones.
    code = ("import sys, weir.plain_structlog, weir.proxy.main, weir.replica.node_agent; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
