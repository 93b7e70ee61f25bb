"""Speed machinery: attention kernels, the allocator, progress events with an ETA, bf16, the
stock-vs-ours benchmark. Timings themselves are the benchmark's job, not these tests'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import panosamic
from panosamic import allocator, eta, io
from panosamic.errors import InputError
from panosamic.model.attention import Attention, SamAttention, use_attention

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"

# bf16 (CPU autocast) against float32 on the demo checkpoint and the six bundled examples:
# measured 99.90-99.96 % identical labels per example (torch 2.13 CPU); asserted with slack.
MIN_BF16_LABEL_AGREEMENT = 0.995


def _attention_layer(dim=96, heads=4, grid=12, seed=0):
    torch.manual_seed(seed)
    layer = SamAttention(dim, heads, True, True, True, (grid, grid))
    with torch.no_grad():  # SAM zero-initialises the relative positions: make them count
        layer.rel_pos_h.normal_(0, 0.5)
        layer.rel_pos_w.normal_(0, 0.5)
    return layer, torch.randn(2, grid, grid, dim)


def test_lean_attention_is_bit_identical_and_sdpa_close():
    layer, x = _attention_layer()
    keys = set(layer.state_dict())
    with torch.inference_mode():
        reference = layer(x)
        use_attention(layer, "lean")
        assert isinstance(layer, Attention) and set(layer.state_dict()) == keys
        lean = layer(x)
        layer.mode = "sdpa"
        sdpa = layer(x)
        layer.mode = "sam"
        again = layer(x)
    assert torch.equal(lean, reference)
    assert torch.equal(again, reference)
    assert (sdpa - reference).abs().max().item() < 1e-5  # another reduction order: float32 rounding only


def test_auto_attention_picks_sdpa_for_low_precision_only():
    from panosamic.model.attention import resolve_attention_mode

    x = torch.zeros(1, 2, 2, 4)
    assert resolve_attention_mode("auto", x) == "lean"
    assert resolve_attention_mode("auto", x.bfloat16()) == "sdpa"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert resolve_attention_mode("auto", x) == "sdpa"
    assert resolve_attention_mode("sam", x.bfloat16()) == "sam"


def _reference_predictor(reference_dir, **kwargs):
    model = panosamic.build_model(reference_dir / "config.json")
    panosamic.load_weights(model, sam=reference_dir / "sam.pth", panosamic=reference_dir / "model.safetensors")
    inputs = dict(np.load(reference_dir / "inputs.npz"))
    predictor = panosamic.Predictor(model, device="cpu", max_depth=float(inputs["max_depth"]), **kwargs)
    return predictor, inputs, dict(np.load(reference_dir / "expected.npz"))


def test_every_attention_kernel_meets_the_reference(reference_dir):
    predictor, inputs, expected = _reference_predictor(reference_dir)
    results = {}
    for mode in ("sam", "lean", "sdpa"):
        predictor.attention = mode
        predictor.set_panorama(inputs["image"], depth=inputs["depth_m"], normals=inputs["normals"])
        results[mode] = predictor.embeddings, predictor.logits
        assert np.abs(predictor.embeddings - expected["embeddings"]).max() <= 1e-4, mode
        assert np.abs(predictor.logits - expected["logits"]).max() <= 1e-4, mode
    assert np.array_equal(results["lean"][0], results["sam"][0])  # bit-identical
    assert np.array_equal(results["lean"][1], results["sam"][1])


def test_unknown_attention_is_an_input_error(reference_dir):
    model = panosamic.build_model(reference_dir / "config.json")
    with pytest.raises(InputError, match="attention must be one of"):
        panosamic.Predictor(model, device="cpu", attention="flash")


def test_progress_events_per_block_and_old_callback_unchanged(reference_dir):
    predictor, inputs, _ = _reference_predictor(reference_dir)
    stages, events = [], []
    predictor.set_panorama(inputs["image"], depth=inputs["depth_m"], normals=inputs["normals"],
                           progress=stages.append, on_progress=events.append)
    assert stages == ["preprocess", "encode", "fuse", "decode"]  # what old callers get, as before
    cfg = predictor.model.config
    total = 2 * 3 * cfg["encoder_depth"]  # views x modalities x blocks
    blocks = [e for e in events if e.stage == "encode" and e.done > 0]
    assert [e.done for e in blocks] == list(range(1, total + 1))
    assert all(e.total == total for e in events)
    assert [e.stage for e in events if e.done == 0] == ["preprocess", "encode"]
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in blocks)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and 0 <= fractions[0] < fractions[-1] == 1.0
    assert events[-1].stage == "done" and events[-1].eta_s == 0.0
    assert "blocks" in str(blocks[0])


def test_flop_model_and_estimate():
    vit_h = panosamic.resolve_config("vit_h", modalities=("image", "depth", "normals"))
    per_image = eta.encoder_flops(vit_h)
    assert len(per_image["blocks"]) == 32
    # global-attention blocks cost more than windowed ones
    assert per_image["blocks"][7] > per_image["blocks"][0]
    assert 5.0e12 < per_image["total"] < 6.0e12  # ~5.5 TFLOP per image
    assert eta.encoder_passes(vit_h) == 6
    full = eta.estimate_seconds(vit_h, "cpu")
    rgb = eta.estimate_seconds(vit_h, "cpu", modalities=("image",))
    assert 30 < full.tflop < 36 and full.passes == 6 and rgb.passes == 2
    assert full.seconds > 0 and abs(rgb.seconds * 3 - full.seconds) < 1e-6 * full.seconds
    assert full.source in ("calibrated", "measured") and full.rate_tflops > 0


def test_a_real_run_replaces_the_calibrated_rate(reference_dir):
    predictor, inputs, _ = _reference_predictor(reference_dir)
    predictor.set_panorama(inputs["image"], depth=inputs["depth_m"], normals=inputs["normals"])
    estimate = eta.estimate_seconds(predictor.model.config, "cpu")
    assert estimate.source == "measured"
    encode_s = predictor.timings["encode"]
    # a later run of the same model is expected to take about what the last encode took (+5 %)
    assert 0.5 * encode_s < estimate.seconds < 2.5 * encode_s + 0.05


def test_find_tcmalloc_honours_the_explicit_path(monkeypatch, tmp_path):
    monkeypatch.setenv(allocator.ENV_LIBRARY, str(tmp_path / "missing.so"))
    assert allocator.find_tcmalloc() is None
    fake = tmp_path / "libtcmalloc_minimal.so.4"
    fake.write_bytes(b"")
    monkeypatch.setenv(allocator.ENV_LIBRARY, str(fake))
    assert allocator.find_tcmalloc() == str(fake)


def _bench(*args, env=None):
    full_env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.pop(allocator.ENV_GUARD, None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "panosamic.bench", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=full_env, timeout=300)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD re-exec is Linux only")
def test_bench_runs_with_tcmalloc_when_installed_and_system_on_request(reference_dir):
    if allocator.find_tcmalloc() is None:
        pytest.skip("libtcmalloc-minimal4 is not installed here")
    common = ("--config", reference_dir / "config.json", "--repeats", "1", "--warmup", "0", "--clicks", "1",
              "--quiet", "--device", "cpu")
    fast = _bench(*common)
    assert fast.returncode == 0, fast.stderr
    info = json.loads(fast.stdout)["allocator"]
    assert info["name"] == "tcmalloc" and "tcmalloc" in info["library"]
    plain = _bench(*common, env={"PANOSAMIC_ALLOCATOR": "system"})
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["allocator"] == {"name": "glibc", "library": None, "glibc_tuning": {}}


def test_bench_compare_stock_json(reference_dir):
    proc = _bench("--config", reference_dir / "config.json", "--compare-stock", "--dtype", "bfloat16",
                  "--repeats", "1", "--warmup", "0", "--encoder-repeats", "1", "--clicks", "2", "--quiet",
                  "--device", "cpu", env={"PANOSAMIC_ALLOCATOR": "glibc"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["mode"] == "compare-stock" and result["device"] == "cpu"
    assert result["allocator"]["name"] == "glibc" and result["allocator"]["glibc_tuning"]
    assert result["stock"]["attention"] == "sam" and result["stock"]["dtype"] == "float32"
    assert result["ours"]["dtype"] == "bfloat16"
    for side in ("stock", "ours"):
        assert result[side]["set_panorama_s"]["median"] > 0
        assert result[side]["encoder_per_image_s"]["median"] > 0
        assert result[side]["peak_rss_mb"] > 0
    for key in ("set_panorama", "encoder_per_image"):
        assert result["ratio"][key]["wall"] > 0 and result["ratio"][key]["cpu"] > 0
    # random weights in bf16: most labels still agree with float32
    assert 0.9 < result["label_agreement"] <= 1.0
    assert 0 < result["embeddings_max_abs_diff"] < 1


@pytest.fixture(scope="module")
def demo_examples():
    out = {}
    for name in io.list_examples():
        paths = io.example_paths(name)
        out[name] = (io.load_image(paths["image"]), io.load_depth(paths["depth"]), io.load_normals(paths["normals"]))
    return out


def test_bf16_agrees_with_float32_on_the_demo_examples(demo_examples):
    fp32 = panosamic.from_pretrained(str(DEMO), device="cpu")
    bf16 = panosamic.from_pretrained(str(DEMO), device="cpu", dtype="bfloat16")
    assert bf16.attention == "auto"  # i.e. sdpa under autocast
    agreement = {}
    for name, inputs in demo_examples.items():
        fp32.set_panorama(*inputs)
        bf16.set_panorama(*inputs)
        assert bf16.labels.shape == fp32.labels.shape
        agreement[name] = float(np.mean(bf16.labels == fp32.labels))
    assert len(agreement) == 6
    assert min(agreement.values()) >= MIN_BF16_LABEL_AGREEMENT, agreement
    assert min(agreement.values()) < 1.0  # bf16 really ran: not every pixel is bit-for-bit the same


def test_bf16_on_the_reference_model(reference_dir):
    predictor, inputs, expected = _reference_predictor(reference_dir, dtype="bfloat16")
    predictor.set_panorama(inputs["image"], depth=inputs["depth_m"], normals=inputs["normals"])
    top2 = np.sort(expected["logits"], axis=0)[-2:]
    confident = (top2[1] - top2[0]) > 0.05  # pixels whose class bf16 rounding cannot flip
    assert confident.mean() > 0.8
    assert np.mean(predictor.labels[confident] == expected["labels"][confident]) >= 0.995
    assert np.abs(predictor.logits - expected["logits"]).max() < 0.5


def test_the_app_says_before_run_how_long_a_slow_checkpoint_takes(monkeypatch):
    """ViT-H RGB-D-N on a slow device: the expected time and the lighter choices, from the
    device's rate (here a recorded 10 GFLOP/s, as from a real run); nothing for quick ones."""
    from panosamic.studio import StudioBackend

    monkeypatch.setattr(eta, "_rates", {})
    backend = StudioBackend("dfki-av/PanoSAMic", "stanford2d3ds-vith-rgbdn-fold1", None, device="cpu")
    try:
        assert backend.run_time_note("stanford2d3ds-vith-rgbdn-fold1") == ""  # not warmed up: never waits
        eta.record_rate("cpu", "float32", 1e10, 1.0)
        backend.warm_up()
        vit_h = panosamic.config.preset("vit_h", ("image", "depth", "normals"))
        expected_min = eta.estimate_seconds(vit_h, "cpu").seconds / 60
        note = backend.run_time_note("stanford2d3ds-vith-rgbdn-fold1")
        assert f"about **{expected_min:.0f} min**" in note and "6 ViT passes" in note
        assert "RGB checkpoint needs 2 ViT passes instead of 6" in note and "**Demo**" in note
        rgb = backend.run_time_note("stanford2d3ds-vith-rgb-fold1")
        assert "2 ViT passes" in rgb and "RGB checkpoint" not in rgb
        assert backend.run_time_note("demo") == ""             # seconds: nothing to say
        assert backend.run_time_note("/etc/passwd") == ""      # refused values say nothing here
    finally:
        backend.close()
