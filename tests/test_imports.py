"""The layering of `panosamic/`: no import cycle (function-local imports included) and no
import of the command line, the app or development tools by the library (`devtools.imports`);
one writer per piece of the studio's state (`devtools.owners`)."""

from __future__ import annotations

from pathlib import Path

from devtools import imports, owners


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


def test_each_piece_of_session_state_has_one_writer():
    """The session writes its labels, edits, prompts, candidates and undo; render.py its render
    cache; store.py its lifecycle (`devtools.owners`)."""
    assert owners.problems() == []


def test_a_write_outside_the_owner_is_found(tmp_path):
    """The checker finds what the studio used to do: the renderer and the app writing cache
    fields on the session, the backend calling its private method and writing its timings, a
    module other than the store writing the lifecycle; writes on `self`, on a parameter annotated
    as another type (the page's components) and reads are left alone."""
    _package(tmp_path, {"__init__.py": "", "studio/__init__.py": ""})
    studio = tmp_path / "pkg" / "studio"
    (studio / "session.py").write_text(
        "class Session:\n    def __init__(self):\n        self.labels = None\n        self.timings = {}\n"
        "        self.refined = []\n"
        "    def _drop_candidates(self):\n        self._candidates = None\n")
    (studio / "render.py").write_text(
        "class RenderCache:\n    def __init__(self):\n        self._base = None\n"
        "def view(s):\n    s.view_base = 1\n    return s.render_cache._base\n")
    (studio / "lifecycle.py").write_text("class Lifecycle:\n    closed: str = None\n")
    (studio / "store.py").write_text("def close(s):\n    s.lifecycle.closed = 'closed'\n")
    (studio / "editing.py").write_text(
        "class Events:\n    def __init__(self):\n        self.labels = 'mine'\n"
        "    def predict(self, s):\n        s._drop_candidates()\n        s.timings['last'] = 1\n"
        "        s.refined.append(2)\n        print(s.labels, s.lifecycle.closed)\n        s.lifecycle.closed = 'x'\n"
        "def layout(page: 'SimpleNamespace', s: 'Session'):\n    page.labels = 1\n    s.labels = 2\n")
    (tmp_path / "app.py").write_text("def cloud(s):\n    s.rendered_3d = (s.labels_version,)\n")
    spec = (owners.Owner("pkg.studio.session", "Session", "pkg.studio.session"),
            owners.Owner("pkg.studio.render", "RenderCache", "pkg.studio.render", former=("view_base", "rendered_3d")),
            owners.Owner("pkg.studio.lifecycle", "Lifecycle", "pkg.studio.store"))
    found = owners.problems(tmp_path, spec, package="pkg")
    assert found == [
        "app:2: .rendered_3d assigned: it moved into RenderCache, which pkg.studio.render alone writes",
        "pkg.studio.editing:5: private member Session._drop_candidates used outside pkg.studio.session",
        "pkg.studio.editing:6: Session.timings item assigned outside pkg.studio.session, its one writer",
        "pkg.studio.editing:7: Session.refined .append() outside pkg.studio.session, its one writer",
        "pkg.studio.editing:9: Lifecycle.closed assigned outside pkg.studio.store, its one writer",
        "pkg.studio.editing:12: Session.labels assigned outside pkg.studio.session, its one writer",
        "pkg.studio.render:5: .view_base assigned: it moved into RenderCache, which pkg.studio.render alone writes",
    ], found
