"""The layering of `panosamic/`: no import cycle (function-local imports included) and no
import of the command line, the app or development tools by the library (`devtools.imports`)."""

from __future__ import annotations

from pathlib import Path

from devtools import imports


def test_the_package_has_no_cycle_and_never_imports_its_command_line():
    assert imports.problems() == []


def test_the_library_layers_are_where_the_docs_say():
    """The edges that issue 20 removed stay removed: the Ray engine is a generic runner that
    knows neither the CLI nor the evaluation, evaluation is handed its runner, the CLI takes its
    per-file work from `panosamic.batch`, and weights never build a Predictor."""
    edges = imports.graph()
    inside = lambda module: {t for t in edges[module] if t.startswith("panosamic")}  # noqa: E731
    assert not {t for t in inside("panosamic.ray_engine") if t.startswith(("panosamic.cli", "panosamic.evaluation",
                                                                          "panosamic.batch"))}
    assert "panosamic.predictor" not in edges["panosamic.weights"]
    assert not {t for t in inside("panosamic.evaluation.evaluate") if "ray" in t or t == "panosamic.cli"}
    assert "panosamic.batch" in edges["panosamic.cli"]
    assert "panosamic.cli" not in {t for m in edges if m != "panosamic.__main__" for t in edges[m]}


def _package(tmp_path: Path, files: dict) -> Path:
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def test_a_function_local_cycle_and_a_lazy_cli_import_are_found(tmp_path):
    """The checker reads imports inside functions and relative `from . import x` forms."""
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import thing\n",
        "b.py": "def thing():\n    from . import a\n    return a\n",
        "sub/__init__.py": "",
        "sub/c.py": "def run():\n    from ..cli import main\n    from devtools import scenes\n",
        "cli.py": "import argparse\n",
    })
    edges = imports.graph("pkg", root)
    assert edges["pkg.b"] == {"pkg.a": 2}
    assert imports.cycles(edges) == [["pkg.a", "pkg.b"]]
    found = imports.problems("pkg", root, forbidden=imports.FORBIDDEN + ("pkg.cli",))
    assert any(p.startswith("import cycle among pkg.a, pkg.b") for p in found)
    assert any("pkg.sub.c imports pkg.cli (line 2)" in p for p in found)
    assert any("pkg.sub.c imports devtools (line 3)" in p for p in found)


def test_library_modules_stay_under_600_lines():
    """One concept per module: a module that grows past 600 lines is split by concept (the
    studio's included: backend.py's light events live in editing.py, the pre-encoder in
    preencode.py, the argument checks in validation.py)."""
    long = {name: n for name, path in imports.modules().items()
            for n in [len(path.read_text(encoding="utf-8").splitlines())] if n >= 600}
    assert long == {}
