"""`ModelSpec`: which model to load and how, as one frozen value.

The command line builds it once from its flags; `evaluate_dataset`, the local runner and
the Ray actors take it as it is (it pickles), so the checkpoint, SAM file, config, device,
precision and depth range are named in one place instead of a dict per caller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from .hub import HUB_REPO_ID

if TYPE_CHECKING:  # pragma: no cover  (names for annotations only)
    from .predictor import Predictor


@dataclass(frozen=True)
class ModelSpec:
    """The arguments of `Predictor.from_pretrained`, resolved once at the boundary.

    checkpoint: Hub repo id, `model.safetensors` file or a folder holding one.
    subfolder: subfolder of the repo or folder (e.g. "stanford2d3ds-vith-rgb-fold1").
    sam: SAM weights (path, URL or "vit_b"/"vit_l"/"vit_h"); None = beside the checkpoint,
        else downloaded.
    config: architecture (config.json path or preset); None = beside the checkpoint, else
        read from the tensor shapes.
    device: "cpu", "cuda", "cuda:1", "mps"; None (or "auto") = the best available.
    precision: the ViT encoder's precision (`panosamic.precision`): None/"auto" (int8 for
        vit_b/l/h on an x86 CPU with int8 kernels, else float32), "float32", "bfloat16",
        "float16" (CUDA only) or "int8" (CPU only); resolved by the Predictor for its device
        (a Ray actor's may differ from this process's).
    max_depth: T in metres, the depth that encodes as black (`255 * (1 - d / T)`).
    """

    checkpoint: str = HUB_REPO_ID
    subfolder: Optional[str] = None
    sam: Optional[str] = None
    config: Optional[str] = None
    device: Optional[str] = None
    precision: Optional[str] = None
    max_depth: float = 10.0

    def __post_init__(self) -> None:
        # one spelling of "the best available device", so that equal specs compare equal
        if self.device == "auto":
            object.__setattr__(self, "device", None)
        if self.precision == "auto":
            object.__setattr__(self, "precision", None)
        for name in ("checkpoint", "sam", "config"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))

    @classmethod
    def of(cls, model: "ModelSpec | Mapping[str, Any]") -> "ModelSpec":
        """`model` itself, or a spec from a mapping of the same keyword names."""
        return model if isinstance(model, ModelSpec) else cls(**dict(model))

    def with_max_depth(self, max_depth: float) -> "ModelSpec":
        return replace(self, max_depth=float(max_depth))

    def for_workers(self, gpus: float) -> "ModelSpec":
        """The spec for actors that may run in another working directory: local paths made
        absolute, and the device named ("cuda" when an actor holds a GPU, else "cpu"; Ray sets
        CUDA_VISIBLE_DEVICES per actor)."""
        paths: Dict[str, Optional[str]] = {}
        for key in ("checkpoint", "sam", "config"):
            value = getattr(self, key)
            if isinstance(value, str) and Path(value).expanduser().exists():
                paths[key] = str(Path(value).expanduser().resolve())
        device = self.device if self.device is not None else ("cuda" if gpus > 0 else "cpu")
        return replace(self, device=device, **paths)

    def load(self, **predictor_kwargs: Any) -> "Predictor":
        """`Predictor.from_pretrained` with this spec (extra keywords go to the Predictor)."""
        from .predictor import Predictor

        return Predictor.from_pretrained(self.checkpoint, subfolder=self.subfolder, sam=self.sam,
                                         config=self.config, device=self.device, precision=self.precision,
                                         max_depth=self.max_depth, **predictor_kwargs)

    def info(self) -> Dict[str, Any]:
        """`panosamic.weights.checkpoint_info` of this spec: what it loads, without building it."""
        from .weights import checkpoint_info

        return checkpoint_info(self.checkpoint, self.subfolder, self.sam, self.config)
