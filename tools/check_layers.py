"""Import layering check: every import points down the pipeline, and no module imports itself
back through others.

The stages, bottom to top (docs/architecture.md draws them)::

    errors, events < spec < artifact < build < serve < slo < perf < release < manifests < deploy < cli

``tritonkit/__init__.py`` and ``__main__.py`` sit above everything. A module may import its own
stage and any stage below it; an import of a stage above is an *upward import*. A *cycle* is a
set of modules that import each other, directly or through others (imports inside functions
count: they are dependencies too; imports under ``if TYPE_CHECKING:`` do not, they never run).
``python_backends/`` runs inside Triton's stub and may not import ``tritonkit`` at all. A module
over :data:`MAX_LINES` lines says why in its docstring (a paragraph starting ``Length:``), or
it is a problem too.

Usage: ``python tools/check_layers.py [PACKAGE_DIR [BACKENDS_DIR]]``; exits 1 listing every
violation, 0 when there is none.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

STAGES = [
    "errors",
    "events",
    "spec",
    "artifact",
    "build",
    "serve",
    "slo",
    "perf",
    "release",
    "manifests",
    "deploy",
    "cli",
]
RANK = {"errors": 0, "events": 0} | {stage: i for i, stage in enumerate(STAGES) if i >= 2}
TOP = len(STAGES)  # tritonkit/__init__.py, __main__.py
MAX_LINES = 450
"""Beyond this a module states its reason (``Length: …`` in its docstring)."""


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return TOP
    return RANK.get(parts[1], TOP)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            stack.append(child)


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``module`` imports (resolved; submodules named in a from-import count)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        found.update(t for t in targets if t in modules and t != module)
    return found


def check(root: Path, backends: Path | None = None) -> list[str]:
    """Every upward import and every cycle under package ``root``, as readable lines."""
    paths = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    modules = set(paths)
    graph = {m: imports_of(m, p, modules) for m, p in paths.items()}
    problems = [
        f"upward import: {m} ({STAGES[min(rank(m), TOP - 1)] if rank(m) < TOP else 'top'}) imports {t}"
        for m, targets in sorted(graph.items())
        for t in sorted(targets)
        if rank(t) > rank(m)
    ]
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph)]
    problems += _long_modules([*paths.values(), *(sorted(backends.rglob("*.py")) if backends else [])])
    if backends is not None:
        for path in sorted(backends.rglob("*.py")):
            for node in _imports(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n == root.name or n.startswith(root.name + ".") for n in names):
                    problems.append(f"python backend imports {root.name}: {path}")
    return problems


def _long_modules(paths: list[Path]) -> list[str]:
    """Modules over MAX_LINES lines whose docstring does not say why (``Length: …``)."""
    found = []
    for path in paths:
        text = path.read_text()
        lines = text.count("\n") + 1
        if lines > MAX_LINES and "\nLength: " not in (ast.get_docstring(ast.parse(text), clean=False) or ""):
            found.append(
                f"long module without a stated reason: {path} ({lines} lines; say why in a 'Length:' paragraph)"
            )
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [[*c, c[0]] for c in components]


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent.parent
    root = Path(argv[1]) if len(argv) > 1 else here / "toolkit" / "tritonkit"
    backends = Path(argv[2]) if len(argv) > 2 else here / "python_backends"
    problems = check(root, backends if backends.is_dir() else None)
    for line in problems:
        print(line)
    count = sum(1 for _ in root.rglob("*.py"))
    print(f"layers: {count} modules, {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
