"""Reading and writing the panoramas, depth maps, normal maps and label maps users hand to the CLI and app.

Every failure a user can cause (missing file, not an image, wrong bit depth,
too large) raises :class:`panosamic.errors.InputError` with a message that
says what is wrong and what to do.

File conventions (also used by ``assets/examples``)
    * image: any format PIL reads (JPEG, PNG, ...); alpha is dropped, grey is
      replicated to RGB, 16-bit images are scaled to 8 bit.
    * depth: a 16-bit PNG in *millimetres* (``scale = 0.001`` metres per unit,
      ``0`` = no measurement; ``65535`` is treated as missing too, as in
      Stanford2D3DS, whose own PNGs use ``scale = 1/512``), a ``.npy`` array
      in metres, or a ``.exr`` in metres. Depth is the Euclidean distance
      along each pixel's ray (see :mod:`panosamic.geometry`).
    * normals: an 8-bit RGB PNG, ``RGB = 127.5 * (n + 1)`` in the world frame
      (:func:`panosamic.geometry.encode_normals`).
    * labels: a single-channel 8- or 16-bit PNG of class indices (or ``.npy``).
    * companions: for ``X_rgb.ext`` or ``X.ext`` the depth is
      ``X_depth.{png,npy,exr}`` and the normals ``X_normals.png`` in the same
      folder (see :func:`find_companions`).

Modules (import from them inside the package; this package's names are the public face):

* :mod:`.headers`: `read_header` (format, size, channels, bits, before any decoding), the limits.
* :mod:`.decode`: decoding checked files (OpenCV, PIL, numpy) and RGB <-> BGR.
* :mod:`.readers`: `load_image`, `load_depth`, `load_normals`, `load_labels`, depth validity.
* :mod:`.writers`: `save_labels_png`, `save_depth_png`, `save_normals_png`, `save_image`, `write_csv`.
* :mod:`.files`: `panorama_stem`, `find_companions`, the bundled examples.
"""

import os

# Must be set before OpenCV is first imported for .exr support (every submodule comes after this).
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

from .decode import swap_red_blue  # noqa: E402
from .files import (DEPTH_EXTS, EXAMPLES_DIR, IMAGE_EXTS, example_paths, find_companions,  # noqa: E402
                    list_examples, panorama_stem)
from .headers import (MAX_HEIGHT, MAX_PIXELS, MAX_WIDTH, PIL_FORMATS, FileHeader, PathLike,  # noqa: E402
                      check_panorama_size, read_header)
from .readers import depth_note, depth_validity, load_depth, load_image, load_labels, load_normals  # noqa: E402
from .writers import save_depth_png, save_image, save_labels_png, save_normals_png, write_csv  # noqa: E402

__all__ = [
    "MAX_WIDTH", "MAX_HEIGHT", "MAX_PIXELS", "PIL_FORMATS", "PathLike", "check_panorama_size", "FileHeader",
    "read_header", "load_image", "load_depth", "depth_validity", "depth_note", "load_normals", "load_labels",
    "save_labels_png", "save_depth_png", "save_normals_png", "save_image", "swap_red_blue", "write_csv",
    "IMAGE_EXTS", "DEPTH_EXTS", "panorama_stem", "find_companions", "EXAMPLES_DIR", "list_examples",
    "example_paths",
]
