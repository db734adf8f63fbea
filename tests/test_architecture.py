"""The layout holds: packages import each other without cycles, the library never imports the CLI, only
the config reads the environment (every ATLAS_* variable declared there and documented), and `atlas ask`
and the gateway make the same routing decision for the same question and router.

The import graph is read from the source with ``ast``: every import counts, inside functions and under
TYPE_CHECKING too (moving an import into a function does not remove the dependency)."""

from __future__ import annotations

import ast
import graphlib
import re
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
    assert deps.get("core", set()) <= {"errors", "config"} and deps.get("config", set()) <= {"errors"}
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
    """The same shipped router, the same default operating point, the same pair: ``atlas ask --json``
    (which answers through the gateway's Controller in-process) ranks as the gateway's ``call_route``."""
    import json

    from typer.testing import CliRunner

    from atlas_router.cli import app
    from atlas_router.routers.persist import load_router
    from atlas_router.routers.embedded import default_router_path
    from atlas_router.serve.registry import call_route, format_pair

    router = load_router(default_router_path())
    questions = ["What is 7321 * 58?", "What is the capital of Kenya?", "How many legs does an insect have?",
                 "Reverse the string 'pencil'.", "How many minutes are in 3 hours and 20 minutes?"]
    gateway = call_route(router, questions, None)
    runner = CliRunner()

    def asked(*args: str) -> dict:
        result = runner.invoke(app, ["ask", "--json", *args])
        assert result.exit_code in (0, 1), result.output
        return json.loads(result.stdout)

    for q, g in zip(questions, gateway):
        out = asked(q)
        assert out["routing"]["ranking"][0] == format_pair(g.ranking[0]), q
        assert out["routing"]["ranking"] == [format_pair(p) for p in g.ranking], q
        assert out["attempts"][0]["model"] == g.ranking[0][0] and out["attempts"][0]["tool"] == g.ranking[0][1]
    # and with a cost weight given by the request
    assert asked("--alpha", "0.3", questions[0])["routing"]["ranking"][0] == \
        format_pair(call_route(router, questions, 0.3)[0].ranking[0])
    assert {g.ranking[0][1] for g in gateway} >= {"calculator", "web-search"}  # routing, not one pair


# Modules that may touch os.environ / os.getenv besides the config, and why (the config's docstring says so).
ENVIRON_EXCEPTIONS = {
    "atlas_router.tools.sandbox_bootstrap": "the sandboxed child, standard library only: sets the user "
                                            "program's HOME and TMPDIR, reads nothing",
}
_ENVIRON_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def _environ_uses(tree: ast.AST) -> list[int]:
    """Lines that reach the process environment through ``os`` (``os.environ``, ``os.getenv``, an ``os``
    alias, ``from os import environ``)."""
    aliases = {"os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update(a.asname or a.name for a in node.names if a.name == "os")
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _ENVIRON_NAMES and isinstance(node.value, ast.Name) \
                and node.value.id in aliases:
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and \
                any(a.name in _ENVIRON_NAMES for a in node.names):
            lines.append(node.lineno)
    return lines


def test_only_the_config_reads_the_environment():
    uses = {_module_name(p): _environ_uses(ast.parse(p.read_text(), str(p))) for p in SRC.rglob("*.py")}
    offenders = {m: lines for m, lines in uses.items()
                 if lines and m != "atlas_router.config" and m not in ENVIRON_EXCEPTIONS}
    assert offenders == {}, "read environment variables through atlas_router.config (env, env_path, secret, ...)"
    assert uses["atlas_router.config"] and all(uses[m] for m in ENVIRON_EXCEPTIONS)  # the check sees them


def test_the_environment_check_catches_each_way_in():
    for source in ("import os\nos.environ.get('X')", "import os\nos.getenv('X')", "import os as o\no.environ['X']",
                   "from os import environ", "from os import getenv as g", "import os\nos.environ['X'] = '1'"):
        assert _environ_uses(ast.parse(source)), source
    assert not _environ_uses(ast.parse("import os\nos.path.join('a')\nenviron = {}\nenviron.get('X')"))


def test_every_atlas_variable_is_declared_and_documented():
    """An ATLAS_* name anywhere in the library is one the config declares, and docs/environment.md has one
    row per declared variable, no more."""
    from atlas_router.config import ENV_VARS

    named = set()
    for path in SRC.rglob("*.py"):
        named.update(re.findall(r"\bATLAS_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    assert named - set(ENV_VARS) == set()
    doc = (SRC.parents[1] / "docs" / "environment.md").read_text()
    rows = re.findall(r"^\| `(ATLAS_[A-Z0-9_]+)` \|", doc, re.MULTILINE)
    assert sorted(rows) == sorted(ENV_VARS) and len(rows) == len(set(rows))


def test_every_tool_kind_of_the_config_has_its_tool_class():
    """Tool kinds are declared once (config.TOOL_CLASSES); each names a Tool class that exists."""
    import importlib
    import typing

    from atlas_router.config import TOOL_CLASSES, ToolKind
    from atlas_router.tools.base import Tool

    assert typing.get_args(ToolKind) == tuple(TOOL_CLASSES)
    for kind, target in TOOL_CLASSES.items():
        module, _, name = target.partition(":")
        assert issubclass(getattr(importlib.import_module(module), name), Tool), kind
