"""The layout holds: packages import each other without cycles, the library never imports the CLI, and
`atlas ask` and the gateway make the same routing decision for the same question and router.

The import graph is read from the source with ``ast``: every import counts, inside functions and under
TYPE_CHECKING too (moving an import into a function does not remove the dependency)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import atlas_router

SRC = Path(atlas_router.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the atlas_router modules (or packages) it imports anywhere in its body."""
    out: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        out[_module_name(path)] = {n for n in found if n.startswith("atlas_router.")}
    return out


def _module_imports() -> dict[str, set[str]]:
    """Module -> the atlas_router modules it imports: ``from pkg import mod`` names the module ``pkg.mod``,
    ``from mod import name`` the module ``mod``; relative imports are resolved."""
    paths = {_module_name(p): p for p in SRC.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        out[module] = {t for t in found if t in paths and t != module}
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_packages_import_each_other_without_cycles():
    deps: dict[str, set[str]] = {}
    for module, targets in _imports().items():
        for target in targets:
            a, b = _package(module), _package(target)
            if a != b and a != "__main__":  # `python -m atlas_router` is the CLI's entry point
                deps.setdefault(a, set()).add(b)
    try:
        order = list(graphlib.TopologicalSorter(deps).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"package import cycle: {e.args[1]}") from None
    # the layering the README describes: shared leaves at the bottom, the CLI on top
    assert deps.get("core", set()) <= {"errors"}
    assert not any("cli" in targets for name, targets in deps.items() if name != "cli")
    assert order.index("core") < order.index("tools") < order.index("execution") < order.index("serve")


def test_modules_import_each_other_without_cycles():
    """Within a package too: a module never imports, directly or not, a module that imports it (a package's
    ``__init__`` counts as a module of its own)."""
    try:
        graphlib.TopologicalSorter(_module_imports()).prepare()
    except graphlib.CycleError as e:
        raise AssertionError(f"module import cycle: {' -> '.join(e.args[1])}") from None


def test_the_library_never_imports_the_cli():
    offenders = {m: sorted(t for t in targets if _package(t) == "cli") for m, targets in _imports().items()
                 if _package(m) not in ("cli", "__main__") and any(_package(t) == "cli" for t in targets)}
    assert offenders == {}


def test_ask_and_the_gateway_make_the_same_decision():
    """The same shipped router, the same default operating point, the same pair (no model runs)."""
    from atlas_router.cli.ask import _route
    from atlas_router.pool.pool import Pool
    from atlas_router.routers.persist import load_router
    from atlas_router.routers.embedded import default_router_path
    from atlas_router.serve.registry import call_route

    pool = Pool.load(None)
    router = load_router(default_router_path())
    questions = ["What is 7321 * 58?", "What is the capital of Kenya?", "How many legs does an insect have?",
                 "Reverse the string 'pencil'.", "How many minutes are in 3 hours and 20 minutes?"]
    gateway = call_route(router, questions, None)
    for q, g in zip(questions, gateway):
        model, tool, _ = _route(q, None, pool, None, None)
        assert g.ranking[0] == (model, tool), q
    # and with a cost weight given by the request
    assert call_route(router, questions, 0.3)[0].ranking[0] == _route(questions[0], None, pool, None, 0.3)[:2]
    assert {g.ranking[0][1] for g in gateway} >= {"calculator", "web-search"}  # routing, not one pair
