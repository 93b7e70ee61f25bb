"""The encoder's precision (panosamic.precision): the CPU default chosen from the CPU, int8
against float32 on the demos' held-out examples, fusion and decoders kept in float32, the
time estimate keyed by the precision that runs, and plain messages for what cannot run here.
Timings are the benchmark's job (`python -m devtools.encoder_variants`), not these tests'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import panosamic
from panosamic import eta, io, precision
from panosamic.config import preset
from panosamic.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ("demo", "demo-rgbd", "demo-rgb")
# the bar for a faster CPU default: >= 99.5 % of the pixels labelled as float32 labels them
MIN_LABEL_AGREEMENT = 0.995

needs_int8 = pytest.mark.skipif(precision.int8_engine() is None, reason="this torch build has no x86 int8 kernels")


@pytest.fixture(scope="module")
def held_out():
    """The six rendered examples (the demos' held-out set): name -> {"image", "depth", "normals"}."""
    out = {}
    for name in io.list_examples():
        paths = io.example_paths(name)
        out[name] = {"image": io.load_image(paths["image"]), "depth": io.load_depth(paths["depth"]),
                     "normals": io.load_normals(paths["normals"])}
    assert len(out) == 6
    return out


@needs_int8
@pytest.mark.parametrize("demo", DEMOS)
def test_int8_labels_the_held_out_examples_as_float32_does(demo, held_out):
    """Measured (torch 2.13, AVX2 AMD EPYC): 99.88-99.95 % (demo), 99.85-99.94 % (demo-rgbd),
    99.87-99.94 % (demo-rgb) identical labels per example."""
    fp32 = panosamic.from_pretrained(str(ROOT / "assets" / demo), device="cpu", precision="float32")
    int8 = panosamic.from_pretrained(str(ROOT / "assets" / demo), device="cpu", precision="int8")
    assert (fp32.precision, int8.precision) == ("float32", "int8")
    linears = [type(m) for m in int8.model.image_encoder.blocks.modules() if "Linear" in type(m).__name__]
    assert linears and all(t.__module__.startswith("torch.ao.nn.quantized") for t in linears)
    assert type(fp32.model.image_encoder.blocks[0].attn.qkv) is torch.nn.Linear  # its own copy stays float32
    agreement = {}
    for name, maps in held_out.items():
        given = {m: maps[m] for m in fp32.required_modalities if m != "image"}
        fp32.set_panorama(maps["image"], **given)
        int8.set_panorama(maps["image"], **given)
        assert int8.labels.shape == fp32.labels.shape
        agreement[name] = float(np.mean(int8.labels == fp32.labels))
    assert min(agreement.values()) >= MIN_LABEL_AGREEMENT, agreement
    assert min(agreement.values()) < 1.0, agreement  # int8 really ran


def test_auto_is_chosen_from_the_cpu_and_the_model(monkeypatch):
    vit_b = preset("vit_b", ("image",))
    demo = panosamic.resolve_config(str(ROOT / "assets" / "demo"))
    monkeypatch.setattr(precision, "int8_engine", lambda: "x86")
    assert precision.resolve_precision(None, "cpu", vit_b) == "int8"
    assert precision.resolve_precision("auto", "cpu") == "int8"  # no config: a real-size model
    assert precision.resolve_precision(None, "cpu", demo) == "float32"  # too narrow to gain from int8
    assert precision.resolve_precision(None, "cuda", vit_b) == "float32"
    monkeypatch.setattr(precision, "int8_engine", lambda: None)  # e.g. an ARM build
    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    assert precision.resolve_precision(None, "cpu", vit_b) == "bfloat16"
    monkeypatch.setattr(precision, "native_bf16", lambda: False)
    assert precision.resolve_precision(None, "cpu", vit_b) == "float32"
    # float32 is one word away, under either keyword, whatever the CPU
    assert precision.resolve_precision("float32", "cpu", vit_b) == "float32"
    assert precision.resolve_precision(None, "cpu", vit_b, dtype="fp32") == "float32"
    features = precision.cpu_features()
    assert features["capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("args, message", [
    (("int4", "cpu"), "unknown precision 'int4'; use auto, float32, bfloat16, float16, int8"),
    (("float16", "cpu"), "float16 runs on CUDA only"),
    (("int8", "cuda"), "int8 runs on the CPU only"),
])
def test_a_precision_that_cannot_run_here_says_what_to_use(args, message):
    with pytest.raises(InputError, match="^" + message):
        precision.resolve_precision(*args)


def test_precision_and_its_older_name_dtype_must_agree():
    with pytest.raises(InputError, match="precision 'int8' and dtype 'bfloat16' disagree: give one of them"):
        precision.resolve_precision("int8", "cpu", dtype="bfloat16")
    assert precision.resolve_precision("bf16", "cpu", dtype=torch.bfloat16) == "bfloat16"


def test_the_reference_sized_models_keep_float32_by_default(reference_predictor):
    """The library's default ("auto") leaves the tiny reference and demo models in float32: the
    reference tests run on it unchanged."""
    predictor, _ = reference_predictor
    assert predictor.precision == "float32" and predictor.dtype == torch.float32
    assert precision.encoder_precision(predictor.model.image_encoder) == "float32"
    demo = panosamic.from_pretrained(str(ROOT / "assets" / "demo"), device="cpu")
    assert demo.precision == "float32"


@needs_int8
def test_a_quantised_model_is_not_run_as_float32_again():
    model = panosamic.build_model(str(ROOT / "assets" / "demo-rgb" / "config.json"))
    panosamic.Predictor(model, device="cpu", precision="int8")
    with pytest.raises(InputError, match="quantised to int8; load the checkpoint again for float32"):
        panosamic.Predictor(model, device="cpu", precision="float32")
    again = panosamic.Predictor(model, device="cpu", precision="int8")  # the same precision is fine
    assert again.precision == "int8"


def test_fusion_and_the_decoders_run_in_float32_under_bfloat16(held_out):
    """Only the ViT runs under autocast: its linear layers compute in bfloat16; the fused maps,
    the semantic logits and SAM's prompt masks in float32."""
    predictor = panosamic.from_pretrained(str(ROOT / "assets" / "demo"), device="cpu", precision="bfloat16")
    seen = {}

    def hook(name):
        def record(module, args, out):
            first = out[0] if isinstance(out, (tuple, list)) else out
            seen.setdefault(name, first.dtype)
        return record

    model = predictor.model
    handles = [model.image_encoder.blocks[0].attn.qkv.register_forward_hook(hook("vit_linear")),
               model.feature_fuser.register_forward_hook(hook("feature_fuser")),
               model.semantic_decoder.register_forward_hook(hook("semantic_decoder")),
               model.mask_decoder.register_forward_hook(hook("mask_decoder"))]
    try:
        maps = held_out["office"]
        predictor.set_panorama(maps["image"], depth=maps["depth"], normals=maps["normals"])
        predictor.predict(point_coords=[[500, 250]], point_labels=[1])
    finally:
        for h in handles:
            h.remove()
    assert seen == {"vit_linear": torch.bfloat16, "feature_fuser": torch.float32, "semantic_decoder": torch.float32,
                    "mask_decoder": torch.float32}


@needs_int8
def test_the_estimate_follows_the_precision_that_runs(monkeypatch):
    """A run records its block times under its own precision (int8 here), and the probe of an
    int8 encoder times quantised blocks: a float32 estimate is not priced from an int8 run."""
    monkeypatch.setattr(eta, "_times", {})
    monkeypatch.setattr(eta, "_rates", {})
    monkeypatch.setattr(eta, "_tails", {})
    quantised = []
    real = precision.quantize_encoder

    def spy(encoder):
        quantised.append(type(encoder).__name__)
        return real(encoder)

    monkeypatch.setattr(eta, "quantize_encoder", spy)
    demo = panosamic.resolve_config(str(ROOT / "assets" / "demo"))
    times = eta.calibrate("cpu", "int8", config=demo)
    assert quantised == ["TappedImageEncoderViT"] and times.source == "calibrated"
    assert eta.known(demo, "cpu", "int8") and not eta.known(demo, "cpu", "float32")
    eta.reset_rates()
    predictor = panosamic.from_pretrained(str(ROOT / "assets" / "demo-rgb"), device="cpu", precision="int8")
    rng = np.random.default_rng(0)
    predictor.set_panorama(rng.integers(0, 256, (128, 256, 3), dtype=np.uint8))
    cfg = predictor.model.config
    assert eta.known(cfg, "cpu", "int8") and not eta.known(cfg, "cpu", "float32")
    assert eta.estimate_seconds(cfg, "cpu", "int8", probe=False).source == "measured"
