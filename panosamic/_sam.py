"""Access to `segment_anything`'s modules without its torchvision-only extras.

`segment_anything/__init__.py` eagerly imports its predictor and automatic mask
generator, which need torchvision. PanoSAMic only uses the modeling modules and
`utils.amg` (pure torch), so where torchvision is missing or broken (there is no
CPU build on PyPI that matches every torch) we import those submodules without
running the package's `__init__`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def _load_segment_anything() -> None:
    try:
        import segment_anything  # noqa: F401  (full package, torchvision works)
        return
    except ImportError:
        pass
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "segment_anything is not installed: run `pip install segment-anything==1.0` "
            "(or `pip install -r requirements.txt`)."
        )
    # A bare package object: submodules import normally, __init__ is skipped.
    package = types.ModuleType("segment_anything")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["segment_anything"] = package


_load_segment_anything()

modeling = importlib.import_module("segment_anything.modeling")
amg = importlib.import_module("segment_anything.utils.amg")

ImageEncoderViT = modeling.ImageEncoderViT
PromptEncoder = modeling.PromptEncoder
MaskDecoder = modeling.MaskDecoder
TwoWayTransformer = modeling.TwoWayTransformer
LayerNorm2d = importlib.import_module("segment_anything.modeling.common").LayerNorm2d

