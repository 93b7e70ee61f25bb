"""Tools for developing PanoSAMic Studio that are not part of the installed library
(pyproject installs only panosamic*).

- `devtools.scenes`: the procedural indoor-room ERP renderer (RGB, metric depth, normals,
  Stanford2D3DS labels) behind the bundled examples, the demo model's training data and tests.
- `devtools.examples`: writes a rendered panorama in the assets/examples layout.
- `devtools.app_process`: `python app.py` in a subprocess (the app's tests and benchmark).
- `devtools.bench_app`: the app's benchmark (`python -m devtools.bench_app`).

Import them from the repository root (scripts add it to sys.path; pytest has pythonpath=["."]).
"""
