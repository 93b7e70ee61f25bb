"""Regenerate the example panoramas in assets/examples (byte-for-byte deterministic).

    python scripts/make_examples.py                 # all six, 1024x512, into assets/examples
    python scripts/make_examples.py --only seam --out /tmp/ex
    python scripts/make_examples.py --readme-table  # print the class-share table for the README

Each example is rendered by :mod:`devtools.scenes` from a fixed (kind, seed)
(:data:`devtools.scenes.EXAMPLES`) and written by
:func:`devtools.examples.write_example`: ``<name>_rgb.jpg``, ``<name>_depth.png``
(16-bit mm), ``<name>_normals.png``, ``<name>_labels.png``, ``<name>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools import scenes  # noqa: E402
from devtools.examples import write_example  # noqa: E402
from panosamic.datasets import STANFORD2D3DS  # noqa: E402


def share_table(metas) -> str:
    """Markdown table: classes as rows, examples as columns, cos-latitude weighted shares in %."""
    names = list(metas)
    lines = ["| class | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for cls in STANFORD2D3DS.classes:
        cells = []
        for n in names:
            v = metas[n]["class_shares"][cls] * 100
            cells.append(f"{v:.1f}" if v > 0 else "–")
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "examples")
    ap.add_argument("--only", nargs="*", choices=list(scenes.EXAMPLES), help="examples to write (default all)")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--readme-table", action="store_true", help="also print the class-share table")
    args = ap.parse_args(argv)

    metas = {}
    for name in args.only or list(scenes.EXAMPLES):
        pano = scenes.render_example(name, args.width)
        paths = write_example(args.out, name, pano)
        metas[name] = pano.meta
        for p in paths.values():
            digest = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            print(f"{p.relative_to(args.out) if p.is_relative_to(args.out) else p}  {p.stat().st_size:>8d} B  {digest}")
    if args.readme_table:
        print()
        print(share_table(metas))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
