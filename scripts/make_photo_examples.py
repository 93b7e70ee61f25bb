"""Real photographs for assets/examples: CC0 equirectangular HDRIs tone-mapped to 8-bit JPEG.

    apt-get download blender-data && dpkg-deb -x blender-data_*.deb /tmp/blender-data
    pip install OpenEXR          # this OpenCV wheel reads no EXR
    python scripts/make_photo_examples.py /tmp/blender-data       # writes assets/examples/
    python scripts/make_photo_examples.py                         # blender-data installed in /usr

The source is Debian's ``blender-data`` package, which ships eight Poly Haven HDRI worlds
(CC0, by Greg Zaal) as 1024x512 float EXRs in ``usr/share/blender/datafiles/studiolights/world/``.
The argument is the folder the package was extracted into (or that world folder itself).

Each chosen HDRI (:data:`PHOTOS`, indoor scenes first) is checked to be 2:1 equirectangular
and developed the way a camera would: the exposure puts the log-average luminance of the
sphere (every pixel weighted by its solid angle) at mid-grey, an extended-Reinhard shoulder
rolls the highlights off, then the sRGB transfer curve and 8 bits. It is written at its
native size as ``<name>_rgb.jpg`` (JPEG quality 92) with no depth, normals or labels: these
examples are RGB only. ``photos.json`` beside them lists them in gallery order with their
source, original and licence: the one place that says which examples are photographs.

Deterministic: the same package gives the same files (the sha256 of each is printed).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from panosamic.io import save_image  # noqa: E402  (sets OPENCV_IO_ENABLE_OPENEXR before cv2 loads)

PACKAGE = "blender-data"
WORLD = Path("usr/share/blender/datafiles/studiolights/world")
DEFAULT_SOURCE = Path("/") / WORLD
MANIFEST = "photos.json"
QUALITY = 92

#: Gallery order, indoor first: (name, file in the package, title, scene, Poly Haven original, note).
#: The originals are the ones Blender's own world/license.txt names in later releases
#: (the one in this package only says "CC0, created by Greg Zaal (HDRI Haven)").
PHOTOS = [
    ("hotel_room", "interior.exr", "hotel room", "indoor", "hotel_room", None),
    ("photo_studio", "studio.exr", "photo studio", "indoor", "studio_small_01",
     "later Blender releases' world/license.txt say 'Probably' studio_small_01"),
    ("courtyard", "courtyard.exr", "courtyard", "outdoor, partly roofed", "courtyard", None),
    ("venice_sunset", "sunset.exr", "Venice sunset", "outdoor", "venice_sunset", None),
]

MID_GREY = 0.18      # where the log-average luminance lands after the curve (linear)
WHITE = 8.0          # exposed linear value the shoulder maps to 1.0 (about 5 stops over mid-grey)
SHADOW_STOPS = 8     # luminances more than 8 stops under the median count as that floor
REC709_Y = np.array([0.2126, 0.7152, 0.0722])
REC709_D65 = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)


def world_folder(source: Path) -> Path:
    """The studiolights/world folder inside an extracted package (or ``source`` itself)."""
    return source / WORLD if (source / WORLD).is_dir() else source


def package_version(world: Path) -> str:
    """The Debian version, from the package's changelog.Debian.gz beside the world folder."""
    doc = world.parents[3] / "doc" / PACKAGE / "changelog.Debian.gz"
    if not doc.is_file():
        raise SystemExit(f"cannot tell the package version: {doc} is missing (pass --package-version)")
    first = gzip.decompress(doc.read_bytes()).decode("utf-8").splitlines()[0]
    return first.split("(", 1)[1].split(")", 1)[0]


def read_exr(path: Path) -> np.ndarray:
    """Linear RGB float64 (H, W, 3) from an EXR: the OpenEXR bindings, else OpenCV."""
    try:
        import OpenEXR
    except ImportError:
        OpenEXR = None
    if OpenEXR is not None:
        with OpenEXR.File(str(path)) as f:
            chroma = f.header().get("chromaticities")
            if chroma is not None and not np.allclose(chroma, REC709_D65, atol=1e-3):
                raise SystemExit(f"{path.name}: primaries {tuple(chroma)} are not Rec.709/D65; not converted")
            ch = f.channels()
            rgb = ch["RGB"].pixels if "RGB" in ch else np.dstack([ch[c].pixels for c in "RGB"])
        return np.asarray(rgb, dtype=np.float64)
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise SystemExit(f"cannot read {path}: this OpenCV build has no OpenEXR; pip install OpenEXR")
    return bgr[..., 2::-1].astype(np.float64)


def sphere_weights(h: int, w: int) -> np.ndarray:
    """Each ERP pixel's share of the sphere, proportional to cos(latitude) at its centre."""
    lat = (0.5 - (np.arange(h) + 0.5) / h) * np.pi
    return np.broadcast_to(np.cos(lat)[:, None], (h, w))


def shoulder(x: np.ndarray) -> np.ndarray:
    """Extended Reinhard: linear near black, rolls off to exactly 1.0 at ``WHITE``."""
    return x * (1.0 + x / WHITE ** 2) / (1.0 + x)


def shoulder_inverse(y: float) -> float:
    """The exposed value that :func:`shoulder` maps to ``y`` (the positive root of a quadratic)."""
    a, b = 1.0 / WHITE ** 2, 1.0 - y
    return (-b + np.sqrt(b * b + 4.0 * a * y)) / (2.0 * a)


def srgb_encode(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve (IEC 61966-2-1) of linear values in [0, 1]."""
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1.0 / 2.4) - 0.055)


def develop(hdr: np.ndarray):
    """Linear HDR radiance -> (uint8 sRGB, exposure applied, log-average luminance)."""
    hdr = np.maximum(hdr, 0.0)              # the lossy DWAB codec rings slightly below zero
    lum = hdr @ REC709_Y
    weights = sphere_weights(*lum.shape)
    order = np.argsort(lum, axis=None)
    cum = np.cumsum(weights.ravel()[order])
    median = lum.ravel()[order][np.searchsorted(cum, cum[-1] / 2)]
    floor = median / 2.0 ** SHADOW_STOPS
    key = float(np.exp(np.sum(weights * np.log(np.maximum(lum, floor))) / np.sum(weights)))
    exposure = shoulder_inverse(MID_GREY) / key
    display = srgb_encode(np.clip(shoulder(hdr * exposure), 0.0, 1.0))
    return np.round(display * 255.0).astype(np.uint8), exposure, key


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE,
                    help=f"the extracted {PACKAGE} package, or its studiolights/world folder (default {DEFAULT_SOURCE})")
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "examples")
    ap.add_argument("--package-version", help="the package's Debian version, when its changelog is not beside it")
    args = ap.parse_args(argv)

    world = world_folder(args.source)
    if not world.is_dir():
        raise SystemExit(f"no {world}: extract {PACKAGE} (apt-get download {PACKAGE}; dpkg-deb -x ...) and pass its folder")
    version = args.package_version or package_version(world)
    licence = world / "license.txt"
    args.out.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, file, title, scene, original, note in PHOTOS:
        src = world / file
        hdr = read_exr(src)
        h, w = hdr.shape[:2]
        if hdr.ndim != 3 or hdr.shape[2] != 3 or w != 2 * h:
            raise SystemExit(f"{src.name} is {w}x{h}: not a 2:1 equirectangular RGB panorama")
        rgb, exposure, key = develop(hdr)
        out = save_image(args.out / f"{name}_rgb.jpg", rgb, quality=QUALITY)
        digest = sha256(out)
        print(f"{out.name:<24} {w}x{h}  {out.stat().st_size:>7d} B  {digest[:16]}  "
              f"(log-average luminance {key:.4g}, exposure x{exposure:.4g})")
        entry = {
            "name": name, "title": title, "scene": scene, "file": out.name, "width": w, "height": h,
            "sha256": digest,
            "source": {"package": PACKAGE, "version": version, "path": (WORLD / file).as_posix(),
                       "sha256": sha256(src)},
            "original": {"name": original, "page": f"https://polyhaven.com/a/{original}", "author": "Greg Zaal"},
            "licence": "CC0-1.0",
            "tone_mapping": {"log_average_luminance": round(key, 6), "exposure": round(exposure, 6)},
        }
        if note:
            entry["original"]["note"] = note
        entries.append(entry)
    manifest = {
        "about": "Real photographs (RGB only), in gallery order; rendered examples have <name>.json instead",
        "licence_file": {"path": (WORLD / "license.txt").as_posix(),
                         "text": licence.read_text(encoding="utf-8").strip() if licence.is_file() else None},
        "tone_mapping": {"metering": "log-average luminance of the sphere (cos-latitude weights)",
                         "mid_grey": MID_GREY, "curve": f"extended Reinhard per channel, white {WHITE}",
                         "shadow_floor_stops_under_median": SHADOW_STOPS, "transfer": "sRGB",
                         "jpeg_quality": QUALITY},
        "photos": entries,
    }
    path = args.out / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{path.name:<24} {path.stat().st_size:>17d} B  {sha256(path)[:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
