"""The ZeroGPU arrangement (a GPU lent per call, `spaces.GPU`), tested with a stand-in.

`StandInGPU` behaves as `spaces.GPU` does on a ZeroGPU Space, as far as this app can tell:
the decorated call runs in a forked process, its arguments and result cross the process
boundary pickled (so whatever the call changes in its own process is lost), and "cuda" works
only inside it. This machine has no GPU, so CUDA is simulated: torch reports one device,
and a TorchFunctionMode maps every "cuda" device argument to the CPU inside lent calls and
fails the test on any CUDA device argument outside them (as do torch.cuda's calls).
"""

from __future__ import annotations

import multiprocessing
import pickle
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from panosamic.studio import StudioBackend

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
EXAMPLE = [str(ROOT / "assets" / "examples" / f"office_{k}") for k in ("rgb.jpg", "depth.png", "normals.png")]


class CudaOutsideLentCall(AssertionError):
    pass


def _mentions_cuda(value) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    if isinstance(value, str):
        return value.startswith("cuda")
    if isinstance(value, torch.Tensor):
        return value.is_cuda
    if isinstance(value, (list, tuple)):
        return any(_mentions_cuda(v) for v in value)
    if isinstance(value, dict):
        return any(_mentions_cuda(v) for v in value.values())
    return False


def _to_cpu(value):
    if isinstance(value, torch.device) and value.type == "cuda" or isinstance(value, str) and value.startswith("cuda"):
        return torch.device("cpu")
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value


class SimulatedCuda(TorchFunctionMode):
    """Inside a lent call "cuda" runs on the CPU; outside, any CUDA device argument fails."""

    def __init__(self, inside: bool):
        super().__init__()
        self.inside = inside
        self.cuda_calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _mentions_cuda(args) or _mentions_cuda(kwargs):
            if not self.inside:
                raise CudaOutsideLentCall(f"CUDA work outside a lent GPU call: {func}")
            self.cuda_calls += 1
            args, kwargs = _to_cpu(args), _to_cpu(kwargs)
        return func(*args, **kwargs)


def _fake_torch_cuda(monkeypatch, inside: bool) -> None:
    """torch.cuda as ZeroGPU shows it: one device; its calls fail outside lent calls."""
    def refuse(*_a, **_k):
        raise CudaOutsideLentCall("torch.cuda call outside a lent GPU call")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name in ("synchronize", "empty_cache", "max_memory_allocated", "reset_peak_memory_stats", "init"):
        monkeypatch.setattr(torch.cuda, name, (lambda *_a, **_k: None) if inside else refuse)


class StandInGPU:
    """`spaces.GPU(fn, duration=...)`'s semantics (see the module docstring); records calls."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.calls: list = []  # (function name, duration asked, simulated CUDA calls inside)

    def __call__(self, fn=None, duration=60):
        if fn is None:
            return lambda f: self(f, duration=duration)

        def lent(*args, **kwargs):
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            result = self._run_forked(fn, pickle.dumps((args, kwargs)))
            self.calls.append((fn.__name__, seconds, result[2]))
            if result[0] == "error":
                raise AssertionError(f"the lent call failed:\n{result[1]}")
            return result[1]

        return lent

    def _run_forked(self, fn, payload: bytes):
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)

        def child():
            torch.set_num_threads(1)  # libgomp's thread pool does not survive fork
            mode = SimulatedCuda(inside=True)
            try:
                _fake_torch_cuda(pytest.MonkeyPatch(), inside=True)
                args, kwargs = pickle.loads(payload)
                with mode:
                    value = fn(*args, **kwargs)
                send.send_bytes(pickle.dumps(("ok", value, mode.cuda_calls)))
            except BaseException:  # noqa: BLE001  (reported to the parent)
                send.send_bytes(pickle.dumps(("error", traceback.format_exc(), mode.cuda_calls)))

        process = ctx.Process(target=child, daemon=True)
        process.start()
        send.close()
        try:
            if not receive.poll(300):
                raise AssertionError("the lent call did not answer within 300 s")
            return pickle.loads(receive.recv_bytes())
        finally:
            process.join(10)


@pytest.fixture()
def lent(monkeypatch):
    gpu = StandInGPU(monkeypatch)
    _fake_torch_cuda(monkeypatch, inside=False)
    backend = StudioBackend(str(DEMO), None, None, device=None, cache_mb=64, work_width=512, lend_gpu=gpu)
    with SimulatedCuda(inside=False):
        yield backend, gpu
    backend.close()


def test_run_and_clicks_with_a_gpu_lent_per_call(lent):
    backend, gpu = lent
    s, cached = backend.segment(*EXAMPLE, "local", 0, 10)
    # the model was loaded here, on the CPU, before the lent call; only the encoder ran in it
    predictor = backend.registry.get(s.model_key)
    assert predictor.device.type == "cpu" and not cached
    assert [c[0] for c in gpu.calls] == ["_encode_job"]
    name, seconds, cuda_calls = gpu.calls[0]
    assert cuda_calls > 0, "the lent call did not put the model on the (simulated) GPU"
    assert 20 <= seconds <= 60, seconds  # the tiny demo model asks for about the fixed start-up allowance
    # the session's state is on the CPU, and it is the encoder's real output
    assert s.state.embeddings.device.type == "cpu" and s.state.semantic_logits.device.type == "cpu"
    expected = predictor.encode(*(_inputs()), max_depth=10)
    np.testing.assert_allclose(s.state.semantic_logits.numpy(), expected.semantic_logits.numpy(), atol=1e-5)
    assert predictor.encoder_calls == 1  # the check above: the lent call's encoding ran elsewhere
    # clicks decode here on the CPU, without a lent call
    backend.click(s, 120, 130)
    assert s.candidates is not None and s.candidates.shape == (3, 256, 512) and s.candidates[s.selected].any()
    backend.prompt(s, '{"points": [[1000, 300]], "labels": [1], "append": true}')
    assert len(s.points) == 2
    # an edit and its undo need no lent call either (what they do to the map: tests/test_studio.py,
    # the backend's one end-to-end flow)
    backend.assign(s, "clutter")
    assert backend.undo(s) == "labels"
    assert len(gpu.calls) == 1
    # Run again on the same inputs: the embeddings come from the cache, no GPU asked for
    s2, cached = backend.segment(*EXAMPLE, "local", 0, 10, previous=s)
    assert cached and len(gpu.calls) == 1


def test_sam_instances_in_a_lent_call_equal_the_cpu_ones(lent):
    backend, gpu = lent
    s, _ = backend.segment(*EXAMPLE, "local", 0, 10)
    before = s.labels.copy()
    n, changed = backend.refine_instances(s, 8)
    assert [c[0] for c in gpu.calls] == ["_encode_job", "_instances_job"]
    # the masks came back packed from the other process: the same as SAM's grid run here
    predictor = backend.registry.get(s.model_key)
    local = predictor.generate_instances(points_per_side=8, state=s.state, output_size=s.shape)
    assert n == len(local) > 0 and changed > 0
    expected = predictor.refine_semantics(local, labels=before)
    assert (s.labels == expected).mean() > 0.999
    assert backend.undo(s) == "labels"
    np.testing.assert_array_equal(s.labels, before)


def test_cuda_outside_a_lent_call_is_caught(lent):
    """The stand-in is not blind: CUDA work in this process fails the test."""
    backend, _ = lent
    with pytest.raises(CudaOutsideLentCall):
        torch.zeros(1, device="cuda")
    with pytest.raises(CudaOutsideLentCall):
        torch.cuda.synchronize()


def test_the_app_lends_the_gpu_only_on_a_zerogpu_space(monkeypatch):
    import sys
    import types

    from panosamic.studio.settings import zero_gpu_lender

    marker = object()
    spaces = types.ModuleType("spaces")
    spaces.GPU = marker
    config = types.ModuleType("spaces.config")
    config.Config = types.SimpleNamespace(zero_gpu=False)
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    monkeypatch.setitem(sys.modules, "spaces.config", config)
    assert zero_gpu_lender() is None
    config.Config.zero_gpu = True
    assert zero_gpu_lender() is marker


def _inputs():
    from panosamic import io

    image = io.load_image(EXAMPLE[0])
    depth = io.load_depth(EXAMPLE[1])
    normals = io.load_normals(EXAMPLE[2])
    return image, depth, normals
