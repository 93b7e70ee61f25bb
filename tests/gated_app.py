"""`python tests/gated_app.py ARGS`: app.py whose encoder waits at a gate the test opens.

For tests that need a Run to be busy for as long as they say: each encoder call appends the
panorama's width to `$PANOSAMIC_TEST_GATE/encoded` (the order the Runs reached the encoder),
creates `$PANOSAMIC_TEST_GATE/waiting`, then waits until `$PANOSAMIC_TEST_GATE/go` exists (the
test removes `waiting` and `go` to close the gate again). Everything else is the real app.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import app  # noqa: E402
from panosamic.studio.backend import StudioBackend  # noqa: E402

GATE = Path(os.environ["PANOSAMIC_TEST_GATE"])
_encode_job = StudioBackend._encode_job


def _gated_encode_job(self, key, image, *args, **kwargs):
    with open(GATE / "encoded", "a") as f:
        f.write(f"{image.shape[1]}\n")
    (GATE / "waiting").touch()
    while not (GATE / "go").exists():
        time.sleep(0.02)
    return _encode_job(self, key, image, *args, **kwargs)


StudioBackend._encode_job = _gated_encode_job

if __name__ == "__main__":
    app.main()
