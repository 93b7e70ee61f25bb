"""One writer per piece of the studio's state: which module may assign which fields.

    python -m devtools.owners     # prints every write outside its owner; exit 1 if any

Every module of `panosamic/` and `app.py` is read with `ast`. For each owned class (`OWNERS`)
its fields are those listed, or else the attributes its own methods assign on `self` and its
class-level annotated fields (a dataclass's). Outside the owning module, a write to one of those
fields on anything but `self` is a problem: `x.field = ...`, `x.field += ...`, `x.field[...] = ...`, `del x.field`
and in-place calls such as `x.field.append(...)`; so is any use of the class's private members
(`x._name`). Attributes on `self` belong to the class that writes them, and those of a
parameter annotated as another type are that type's, so both are left alone.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Set, Tuple

from devtools.imports import ROOT, modules, report


@dataclass(frozen=True)
class Owner:
    """The fields of `cls` (defined in `module`) are written by `writer` alone; `fields` lists
    them where the class's own attribute names are too common to tell (the session's `depth`,
    `name`, `checkpoint` are also the page's components); `former` names fields that moved into
    it from another object: a write of one of those, anywhere, is the old way back."""

    module: str
    cls: str
    writer: str
    former: Tuple[str, ...] = ()
    fields: Tuple[str, ...] = ()


OWNERS = (
    # its state: labels, edits, undo, prompts, candidates (read-only properties included: an
    # assignment to one is a mistake even where Python would refuse it only at run time)
    Owner("panosamic.studio.session", "Session", "panosamic.studio.session",
          fields=("labels", "edited", "initial_labels", "refined", "labels_version", "timings", "render_cache",
                  "lifecycle", "prompts", "points", "point_labels", "box", "pending_corner", "candidate_set",
                  "candidates", "scores", "selected")),
    Owner("panosamic.studio.render", "RenderCache", "panosamic.studio.render",
          former=("view_base", "cloud", "rendered_3d")),
    Owner("panosamic.studio.lifecycle", "Lifecycle", "panosamic.studio.store"),
)
#: Calls that change a list, dict, set or array in place.
MUTATORS = {"append", "extend", "insert", "update", "pop", "popitem", "clear", "setdefault", "remove", "discard",
            "add", "fill", "sort", "reverse"}


def sources(root: Path = ROOT, package: str = "panosamic") -> Dict[str, Path]:
    """{module name: file} of the library and the app."""
    found = modules(package, root)
    if (root / "app.py").exists():
        found["app"] = root / "app.py"
    return found


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise LookupError(f"no class {name}")


def _targets(node: ast.AST) -> Iterator[ast.AST]:
    if isinstance(node, (ast.Tuple, ast.List)):
        for elt in node.elts:
            yield from _targets(elt)
    elif isinstance(node, ast.Starred):
        yield from _targets(node.value)
    else:
        yield node


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def fields(cls: ast.ClassDef) -> Tuple[Set[str], Set[str]]:
    """(fields, private members) of a class: what its methods assign on `self`, its annotated
    class-level names, and its methods whose names start with one underscore."""
    names: Set[str] = set()
    private: Set[str] = set()
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("_") \
                and not node.name.startswith("__"):
            private.add(node.name)
    for node in ast.walk(cls):
        targets: Iterable[ast.AST] = ()
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for t in _targets(target):
                if isinstance(t, ast.Attribute) and _is_self(t.value):
                    names.add(t.attr)
    private |= {n for n in names if n.startswith("_") and not n.startswith("__")}
    return names, private


def _annotations(tree: ast.AST) -> Dict[int, Dict[str, str]]:
    """{id(node): {parameter: its annotation as written}} for every node inside a function, the
    parameters of enclosing functions included (a closure sees them), the innermost first."""
    scopes: Dict[int, Dict[str, str]] = {}

    def visit(node: ast.AST, known: Dict[str, str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            params = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            own = {a.arg: ast.unparse(a.annotation) for a in params if getattr(a, "annotation", None)}
            known = {**{k: v for k, v in known.items() if k not in {a.arg for a in params}}, **own}
        scopes[id(node)] = known
        for child in ast.iter_child_nodes(node):
            visit(child, known)

    visit(tree, {})
    return scopes


def _writes(tree: ast.AST) -> Iterator[Tuple[ast.Attribute, int, str]]:
    """(attribute node written, line, how) for every write through an attribute not on `self`."""
    for node in ast.walk(tree):
        targets: List[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            targets = [node.target]
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            targets = [item.optional_vars for item in node.items if item.optional_vars is not None]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS \
                and isinstance(node.func.value, ast.Attribute) and not _is_self(node.func.value.value):
            yield node.func.value, node.lineno, f".{node.func.attr}()"
        for target in targets:
            for t in _targets(target):
                how = "assigned"
                while isinstance(t, ast.Subscript):  # x.field[...] = ... changes x.field
                    t, how = t.value, "item assigned"
                if isinstance(t, ast.Attribute) and not _is_self(t.value):
                    yield t, getattr(node, "lineno", t.lineno), how


def _other_type(attr: ast.Attribute, cls: str, scopes: Dict[int, Dict[str, str]]) -> bool:
    """Whether `attr`'s object is a parameter annotated as something other than `cls` (the
    page's components in a `SimpleNamespace` share names with the session's fields)."""
    if not isinstance(attr.value, ast.Name):
        return False
    annotation = scopes.get(id(attr), {}).get(attr.value.id)
    return annotation is not None and cls not in annotation


def problems(root: Path = ROOT, owners: Iterable[Owner] = OWNERS, package: str = "panosamic") -> List[str]:
    """One line per write of an owned field outside its writer and per use of an owned class's
    private member outside its module; empty when every piece of state has one writer."""
    files = sources(root, package)
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in files.items()}
    scopes = {name: _annotations(tree) for name, tree in trees.items()}
    out = []
    for owner in owners:
        names, private = fields(_class(trees[owner.module], owner.cls))
        names = set(owner.fields) or names
        for module, tree in sorted(trees.items()):
            for attr, line, how in _writes(tree):
                if _other_type(attr, owner.cls, scopes[module]):
                    continue
                if attr.attr in owner.former:
                    out.append(f"{module}:{line}: .{attr.attr} {how}: it moved into {owner.cls}, "
                               f"which {owner.writer} alone writes")
                elif module != owner.writer and attr.attr in names and not attr.attr.startswith("_"):
                    out.append(f"{module}:{line}: {owner.cls}.{attr.attr} {how} outside {owner.writer}, "
                               "its one writer")
            if module != owner.module:
                for node in ast.walk(tree):
                    if isinstance(node, ast.Attribute) and node.attr in private and not _is_self(node.value):
                        out.append(f"{module}:{node.lineno}: private member {owner.cls}.{node.attr} used "
                                   f"outside {owner.module}")
    # by module, then line number (as numbers: line 12 after line 5)
    return sorted(set(out), key=lambda s: (s.split(":")[0], int(s.split(":")[1]), s))


def main(argv=None) -> int:
    argparse.ArgumentParser(prog="python -m devtools.owners", description=__doc__.split("\n\n")[0]).parse_args(argv)
    return report(problems(), "every owned field has one writer")


if __name__ == "__main__":
    sys.exit(main())
