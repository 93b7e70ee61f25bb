"""Tools for developing PanoSAMic Studio (not installed with the library): the app's
benchmark, a helper that runs the app in a subprocess, and the procedural scene renderer
that makes the bundled examples and the demo checkpoint's training data."""
