"""The import graph of `panosamic/`, function-local imports included, and the layering rules.

    python -m devtools.imports            # prints cycles and forbidden edges; exit 1 if any
    python -m devtools.imports --graph    # also prints every edge

Every `import` / `from ... import` statement of every module is read with `ast` (wherever it
stands: module level, inside a function, under `if TYPE_CHECKING`), so a lazy import that
dodges Python's circular-import error still counts. `from .pkg import name` is an edge to
`pkg.name` when that is a module, else to `pkg`. A submodule's implicit import of its parent
package is not an edge (every package would otherwise be a cycle with its own modules).

Rules checked:

* no cycle among panosamic's modules;
* the library never imports its command lines (`panosamic.cli`, `panosamic.__main__`), the
  app (`app`), `devtools`, `scripts` or `tests`; only `panosamic.__main__` may import the CLI.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]

#: Modules the library must not import (prefix match on the dotted name).
FORBIDDEN = ("panosamic.cli", "panosamic.__main__", "app", "devtools", "scripts", "tests")
#: Modules allowed to import a forbidden one: the command line's own entry point.
ENTRY_POINTS = {"panosamic.__main__": ("panosamic.cli",)}


def module_name(path: Path, root: Path = ROOT) -> str:
    """`panosamic/io/readers.py` -> `panosamic.io.readers`; `__init__.py` names its package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(package: str = "panosamic", root: Path = ROOT) -> Dict[str, Path]:
    """{dotted name: file} of every module of `package`."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _base(module: str, is_package: bool, level: int, target: str) -> str:
    """The absolute name `from <level dots><target> import ...` refers to inside `module`."""
    if level == 0:
        return target
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[:len(parts) - (level - 1)]
    return ".".join(parts + ([target] if target else []))


def imports_of(module: str, path: Path, known: Iterable[str]) -> List[Tuple[str, int]]:
    """(imported module, line) for every import statement in `path`, resolved to a known
    module where possible (else the dotted name as written)."""
    known = set(known)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: List[Tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node.level, node.module or "")
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.append((sub if sub in known else base, node.lineno))
    return found


def graph(package: str = "panosamic", root: Path = ROOT) -> Dict[str, Dict[str, int]]:
    """{module: {imported module: first line}} over `package`'s modules (all imports kept,
    third-party ones too, so that forbidden targets outside the package show)."""
    mods = modules(package, root)
    edges: Dict[str, Dict[str, int]] = {}
    for name, path in mods.items():
        out: Dict[str, int] = {}
        for target, line in imports_of(name, path, mods):
            if target != name:
                out.setdefault(target, line)
        edges[name] = out
    return edges


def cycles(edges: Dict[str, Dict[str, int]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    nodes = set(edges)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in nodes:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(nodes) + 100))
    try:
        for v in sorted(nodes):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def forbidden_edges(edges: Dict[str, Dict[str, int]],
                    forbidden: Sequence[str] = FORBIDDEN) -> List[Tuple[str, str, int]]:
    """(module, imported module, line) for every import of a command line, the app or a
    development folder by the library."""
    bad = []
    for module, targets in sorted(edges.items()):
        allowed = ENTRY_POINTS.get(module, ())
        for target, line in sorted(targets.items()):
            hit = any(target == f or target.startswith(f + ".") for f in forbidden)
            if hit and not any(target == a or target.startswith(a + ".") for a in allowed):
                bad.append((module, target, line))
    return bad


def problems(package: str = "panosamic", root: Path = ROOT, forbidden: Sequence[str] = FORBIDDEN) -> List[str]:
    """One line per cycle and per forbidden edge; empty when the layering holds."""
    edges = graph(package, root)
    out = []
    for comp in cycles(edges):
        inner = [f"{a} -> {b} (line {edges[a][b]})" for a in comp for b in sorted(edges[a]) if b in comp]
        out.append(f"import cycle among {', '.join(comp)}: " + "; ".join(inner))
    for module, target, line in forbidden_edges(edges, forbidden):
        out.append(f"{module} imports {target} (line {line}): the library must not import its command line, "
                   "the app or development tools")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.imports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph", action="store_true", help="print every edge inside the package too")
    args = parser.parse_args(argv)
    if args.graph:
        edges = graph()
        for module, targets in sorted(edges.items()):
            inner = sorted(t for t in targets if t in edges)
            print(f"{module}: {', '.join(inner)}")
    return report(problems(), "no import cycle, no forbidden import")


def report(found, clean: str) -> int:
    """Prints each problem of a check (or `clean` when there is none); the exit status."""
    for line in found:
        print(line)
    if not found:
        print(clean)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
