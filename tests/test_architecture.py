"""The layout's rules (docs/architecture.md), read from the code itself.

Imports are read with `ast`, those inside functions included: a lazy import that hides a
cycle is still a cycle.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader

ROOT = Path(__file__).resolve().parent.parent

# Who may import whom; orchestra_site (the project's wiring) may import anything.
ALLOWED = {
    "infrastructure": set(),
    "access": {"infrastructure"},
    "agents": {"access", "infrastructure"},
    "commerce": {"agents", "access", "infrastructure"},
    "billing": {"agents", "access", "infrastructure"},
    "conversations": {"agents", "commerce", "billing", "access", "infrastructure"},
}
# Migrations may depend where code may import, and a usage record's foreign key names its
# turn as a string: billing's migrations depend on the turns' table.
MIGRATION_EXTRA = {"billing": {"conversations"}}
LABELS = {"orchestra": "access"}  # the access app kept the label of its first home
# Business logic that must know nothing of HTTP or of the API's representation.
NO_HTTP_MODULES = ("services", "selectors", "models", "tasks", "execution")
HTTP_PACKAGES = ("rest_framework", "drf_spectacular")


def _modules(package: str) -> dict[str, Path]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (ROOT / package).rglob("*.py")
    }


def _imports(module: str, path: Path) -> set[str]:
    """Every module `module` imports, at any depth of its code."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


ALL_MODULES = {
    name: path
    for package in [*ALLOWED, "orchestra_site"]
    for name, path in _modules(package).items()
}
IMPORTS = {name: _imports(name, path) for name, path in ALL_MODULES.items()}


def _top(module: str) -> str:
    return module.split(".")[0]


def test_each_package_imports_only_what_its_layer_allows():
    broken = sorted(
        f"{module} imports {imported}"
        for module, imported_set in IMPORTS.items()
        if _top(module) in ALLOWED
        for imported in imported_set
        if _top(imported) in {*ALLOWED, "orchestra_site"}
        and _top(imported) != _top(module)
        and _top(imported) not in ALLOWED[_top(module)]
    )
    assert broken == []


def test_no_module_imports_itself_back_through_others_of_its_app():
    graph = defaultdict(set)
    for module, imported_set in IMPORTS.items():
        for imported in imported_set:
            # "from agents import snapshot" is agents.snapshot; a package is its __init__.
            while imported and imported not in ALL_MODULES:
                imported = imported.rpartition(".")[0]
            if imported and imported != module and _top(imported) == _top(module):
                graph[module].add(imported)
    cycles = [sorted(component) for component in _strongly_connected(graph) if len(component) > 1]
    assert cycles == []


def test_business_logic_knows_nothing_of_http():
    broken = sorted(
        f"{module} imports {imported}"
        for module, imported_set in IMPORTS.items()
        if module.split(".")[-1] in NO_HTTP_MODULES and "migrations" not in module
        for imported in imported_set
        if _top(imported) in HTTP_PACKAGES or imported.split(".")[-1] == "serializers"
    )
    assert broken == []


@pytest.mark.django_db
def test_migrations_depend_only_where_imports_may_go():
    loader = MigrationLoader(connection, ignore_no_migrations=True)
    broken = []
    for (label, name), migration in loader.disk_migrations.items():
        app = LABELS.get(label, label)
        if app not in ALLOWED:
            continue
        for dependency_label, _ in migration.dependencies:
            dependency = LABELS.get(dependency_label, dependency_label)
            allowed = ALLOWED[app] | MIGRATION_EXTRA.get(app, set()) | {app}
            if dependency in {*ALLOWED, "orchestra_site"} and dependency not in allowed:
                broken.append(f"{label}.{name} depends on {dependency_label}")
    assert broken == []


def test_code_cites_the_repositorys_own_docs():
    citing = sorted(
        str(path.relative_to(ROOT))
        for path in [*ALL_MODULES.values(), *(ROOT / "tests").rglob("*.py")]
        if "DESIGN.md" in path.read_text() and path != Path(__file__)
    )
    assert citing == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively (the module graph is deep enough to matter)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in list(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components
