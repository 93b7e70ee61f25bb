"""The package as `pip install` makes it: outside the repository folder, `import panosamic`
works only once the package is installed, so the README says how, and what pip installs from
pyproject.toml holds every subpackage and the app's static files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_says_how_to_install_the_library():
    """The README's set-up commands install the requirements only, and run from the repository
    folder, where Python finds panosamic beside app.py; the library section says what makes
    `import panosamic` work from any folder."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## The library\n", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"pip install -e \.", section), "the library section does not say `pip install -e .`"


def test_pip_installs_an_importable_package_with_its_static_files(tmp_path):
    """`pip install` of the repository's pyproject.toml (into a folder, without dependencies:
    those come from requirements.txt) gives a package that imports from another folder, with
    every subpackage and panosamic/studio/static/viewer.js. A copy of the sources is installed,
    so that pip's build leaves no build/ or .egg-info in the repository."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "panosamic", src / "panosamic", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--quiet", "--disable-pip-version-check", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = sorted(str(p.parent.relative_to(ROOT)).replace(os.sep, ".")
                      for p in (ROOT / "panosamic").rglob("__init__.py"))
    code = ("import importlib, pathlib, pkgutil, panosamic, panosamic.studio\n"
            "root = pathlib.Path(panosamic.__file__).parent\n"
            "print(root)\n"
            "print(sorted(['panosamic'] + [m.name for m in pkgutil.walk_packages(panosamic.__path__, 'panosamic.') "
            "if m.ispkg]))\n"
            "print((root / 'studio' / 'static' / 'viewer.js').is_file())\n")
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=away, env={**env, "PYTHONPATH": str(target)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    where, packages, viewer = out.stdout.splitlines()
    assert Path(where) == target / "panosamic"
    assert packages == str(expected) and viewer == "True", out.stdout


def test_both_packages_import_their_names_lazily_through_one_helper():
    """`import panosamic` and `import panosamic.estimation` load no model code (torch,
    transformers) until a name is used; every exported name then resolves, is kept, and an
    unknown one names its package."""
    code = ("import sys, panosamic, panosamic.estimation as e\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported eagerly'\n"
            "assert dir(panosamic) == sorted(panosamic.__all__) and dir(e) == sorted(e.__all__)\n"
            "for pkg in (panosamic, e):\n"
            "    for name in pkg.__all__:\n"
            "        value = getattr(pkg, name)\n"
            "        assert vars(pkg)[name] is value, name\n"
            "for pkg, missing in ((panosamic, 'nope'), (e, 'nope')):\n"
            "    try:\n"
            "        getattr(pkg, missing)\n"
            "    except AttributeError as err:\n"
            "        assert repr(pkg.__name__) in str(err), err\n"
            "    else:\n"
            "        raise SystemExit('no AttributeError')\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
