"""The live preview's server side: the exported decoder (panosamic.onnx_decoder) against
`Predictor.predict` with onnxruntime, its content-addressed cache, the pins of onnxruntime-web,
and the hover routes' plain refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app_utils import ROOT
from test_app_browser import _need


def test_onnxruntime_web_pin_and_integrity_match_the_install():
    from panosamic.studio.hover import ORT_INTEGRITY, ORT_SCRIPT, ORT_VERSION, integrity

    assert json.loads((ROOT / "package.json").read_text())["dependencies"]["onnxruntime-web"] == ORT_VERSION
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == ORT_VERSION
    script = ROOT / "node_modules" / "onnxruntime-web" / "dist" / ORT_SCRIPT
    _need(script.is_file(), "onnxruntime-web is not installed in node_modules: run `npm ci`")
    assert integrity(script) == ORT_INTEGRITY, "the CDN's integrity hash is not that of the pinned file"


def test_exported_decoder_equals_predict_and_is_cached_by_content(reference_predictor, tmp_path):
    pytest.importorskip("onnxruntime")
    from panosamic import onnx_decoder as od

    predictor, inputs = reference_predictor
    first = od.cached_decoder(predictor.model, tmp_path)
    mtime = first.stat().st_mtime_ns
    again = od.cached_decoder(predictor.model, tmp_path)
    assert again == first and again.stat().st_mtime_ns == mtime, "a cached decoder was exported again"
    assert [p.name for p in tmp_path.iterdir()] == [first.name], "a partial file was left behind"
    sess = od.onnx_session(first)
    emb = od.view_embeddings(predictor.state.embeddings, 2, 3).astype(np.float32)
    h, w = predictor.model.erp_size
    # one point, multimask: view 0 in the middle, view 1 next to the seam
    for x, y in ((100.0, 40.0), (3.0, 64.0)):
        masks, scores, _ = predictor.predict(np.array([[x, y]], np.float32), np.array([1]), output_size=(h, w))
        v = predictor.last_view
        xv = (x + w // 2) % w if v == 1 else x
        out, iou, index = sess.run(None, {"image_embeddings": emb[v][None],
                                          "point_coords": np.array([[[xv, y], [0, 0]]], np.float32),
                                          "point_labels": np.array([[1, -1]], np.float32),
                                          "multimask": np.array([1], np.int64)})
        mask = np.roll(out[0, 0], -(w // 2), axis=-1) if v == 1 else out[0, 0]
        best = masks[int(np.argmax(scores))]
        assert int(index[0]) == 1 + int(np.argmax(scores))
        assert (mask > 0).sum() > 0 and ((mask > 0) == best).mean() > 0.999
    # other decoder weights: another file
    import torch

    weight = predictor.model.mask_decoder.iou_token.weight
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
    try:
        assert od.decoder_digest(predictor.model) != first.stem
    finally:
        with torch.no_grad():
            weight.copy_(kept)
    assert od.decoder_digest(predictor.model) == first.stem


def test_routes_refuse_in_one_plain_line(reference_predictor, tmp_path):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from panosamic.studio.hover import NO_RUN, HoverRoutes, HoverService

    predictor, _ = reference_predictor
    service = HoverService(lambda key: predictor, cache_dir=str(tmp_path), ort_dir=tmp_path / "none", cdn="")
    client = TestClient(HoverRoutes(Starlette(), service))
    for method, path in (("GET", "/panosamic/hover/nope/embeddings"), ("POST", "/panosamic/hover/nope/decode?x=1&y=1"),
                         ("GET", "/panosamic/hover/decoder/abc.onnx"), ("GET", "/panosamic/hover/ort/1.31.1/ort.wasm.min.js"),
                         ("GET", "/panosamic/hover/ort/1.31.1/package.json")):
        r = client.request(method, path)
        assert r.status_code in (400, 404), (path, r.status_code)
        text = r.json()["error"]
        assert "/" not in text.replace("onnxruntime-web", "") or "npm ci" in text, text
        assert str(tmp_path) not in r.text and "Traceback" not in r.text
    assert client.get("/panosamic/hover/nope/embeddings").json()["error"] == NO_RUN
