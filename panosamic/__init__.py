"""PanoSAMic: panoramic semantic segmentation on SAM features, with click-to-refine prompts.

    import panosamic
    predictor = panosamic.from_pretrained("dfki-av/PanoSAMic", subfolder="stanford2d3ds-vith-rgb-fold1")
    predictor.set_panorama(image)             # (H, W, 3) uint8 equirectangular, W = 2H
    predictor.labels                          # (H, W) class indices
    masks, scores, _ = predictor.predict(point_coords=[[x, y]], point_labels=[1])

Names are imported lazily, so `import panosamic` is cheap (the app starts at once). Each is
the object of the module that defines it (`panosamic.from_pretrained` is
`Predictor.from_pretrained`); inside the package, import names from those modules.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": "build",
    "model_registry": "build",
    "Predictor": "predictor",
    "PanoramaState": "predictor",
    "load_weights": "weights",
    "from_pretrained": "predictor:Predictor.from_pretrained",  # the one front door (a classmethod)
    "load_model": "weights",
    "ModelSpec": "spec",
    "resolve_config": "config",
    "infer_config": "config",
    "PanoSAMicError": "errors",
    "InputError": "errors",
    "WeightsError": "errors",
    "ConfigError": "errors",
    "get_dataset": "datasets",
    "dataset_for_num_classes": "datasets",
    "Progress": "eta",
    "estimate_seconds": "eta",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
