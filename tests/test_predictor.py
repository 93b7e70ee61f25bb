"""Predictor behaviour beyond the reference numbers: other architectures, seams, bad input."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import panosamic
from panosamic.errors import InputError
from panosamic.instances import _fuse, refine_semantics


def _tiny_config(**overrides):
    """A small random architecture unlike the reference's (other sizes exercise the general code)."""
    cfg = {
        "image_size": 128, "patch_size": 8, "encoder_embed_dim": 48, "encoder_depth": 3,
        "encoder_num_heads": 3, "encoder_global_attn_indexes": [0, 2], "encoder_window_size": 4,
        "prompt_embed_dim": 32,
        "mask_decoder": {"transformer_depth": 1, "mlp_dim": 64, "num_heads": 2, "iou_head_hidden_dim": 32},
        "modalities": ["image"], "num_classes": 20, "dual_view_fusion": False,
    }
    cfg.update(overrides)
    return cfg


def _random_panorama(h, w, seed=0):
    rng = np.random.default_rng(seed)
    # Smooth content (not white noise), so resizing is meaningful.
    small = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
    return np.kron(small, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]


def test_single_view_rgb_model_at_another_size():
    torch.manual_seed(0)
    model = panosamic.build_model(_tiny_config())
    predictor = panosamic.Predictor(model, device="cpu")
    assert predictor.required_modalities == ("image",)
    assert predictor.dataset.name == "matterport3d"
    image = _random_panorama(100, 200)
    predictor.set_panorama(image)
    assert predictor.embeddings.shape == (1, 32, 16, 16)
    assert predictor.logits.shape == (20, 100, 200)
    assert predictor.labels.shape == (100, 200)
    assert set(predictor.timings) == {"preprocess", "encode", "fuse", "decode"}
    masks, iou, low = predictor.predict(point_coords=[[50, 50]], point_labels=[1])
    assert masks.shape == (3, 100, 200) and masks.dtype == bool
    assert iou.shape == (3,) and low.shape == (3, 64, 64)
    # A single-view model still decodes prompts across the seam on its (only) embedding.
    masks, _, _ = predictor.predict(point_coords=[[1, 50]], point_labels=[1])
    assert masks.shape == (3, 100, 200) and predictor.last_view == 0
    with pytest.raises(InputError, match="single-view"):
        predictor.predict(point_coords=[[1, 50]], point_labels=[1], view=1)
    with pytest.raises(InputError, match="two boxes"):
        predictor.predict(box=[190, 10, 10, 90])


def test_resized_input_matches_model_size_run(reference_predictor):
    """A 2x panorama is resized to the model's ERP, and logits come back at the input size."""
    predictor, inputs = reference_predictor
    big = np.kron(inputs["image"], np.ones((2, 2, 1), dtype=np.float32))
    depth = np.kron(inputs["depth_m"], np.ones((2, 2), dtype=np.float32))
    normals = np.kron(inputs["normals"], np.ones((2, 2, 1), dtype=np.float32))
    other = panosamic.Predictor(predictor.model, device="cpu", max_depth=predictor.max_depth)
    other.set_panorama(big, depth=depth, normals=normals)
    assert other.logits.shape == (13, 256, 512)
    # Area averaging undoes the 2x block replication exactly: the network saw the same input.
    torch.testing.assert_close(other.state.semantic_logits, predictor.state.semantic_logits)
    # The output differs only by resampling onto the finer grid.
    small = other.logits.reshape(13, 128, 2, 256, 2).mean(axis=(2, 4))
    agree = (small.argmax(0) == predictor.labels).mean()
    assert agree > 0.95, agree


def test_view1_equals_the_rolled_panorama(reference_predictor):
    """Decoding on view 1 is decoding the panorama yawed by 180 degrees, then rolling back."""
    predictor, inputs = reference_predictor
    H, W = predictor.input_size
    rolled = panosamic.Predictor(predictor.model, device="cpu", max_depth=predictor.max_depth)
    rolled.set_panorama(np.roll(inputs["image"], W // 2, axis=1), depth=np.roll(inputs["depth_m"], W // 2, axis=1),
                        normals=np.roll(inputs["normals"], W // 2, axis=1))
    x, y = 5.0, 60.0
    m1, iou1, low1 = predictor.predict(point_coords=[[x, y]], point_labels=[1], view=1, return_logits=True)
    m2, iou2, _ = rolled.predict(point_coords=[[x + W / 2, y]], point_labels=[1], view=0, return_logits=True)
    np.testing.assert_allclose(iou1, iou2, atol=1e-4)
    np.testing.assert_allclose(m1, np.roll(m2, -W // 2, axis=-1), atol=1e-3)


def test_auto_view_avoids_the_seam(reference_predictor):
    predictor, _ = reference_predictor
    H, W = predictor.input_size
    predictor.predict(point_coords=[[2, H / 2]], point_labels=[1])
    assert predictor.last_view == 1
    predictor.predict(point_coords=[[W / 2, H / 2]], point_labels=[1])
    assert predictor.last_view == 0
    # A box whose second corner is left of the first wraps across the seam: view 1 only.
    box = [W - 30, 20, 30, H - 20]
    auto = predictor.predict(box=box, return_logits=True)[0]
    assert predictor.last_view == 1
    np.testing.assert_array_equal(auto, predictor.predict(box=box, view=1, return_logits=True)[0])
    with pytest.raises(InputError, match="wraps"):
        predictor.predict(box=box, view=0)


def test_seam_prompt_gives_a_seamless_mask(reference_predictor):
    """A click on the seam decoded on view 1 is continuous across columns W-1 and 0."""
    predictor, _ = reference_predictor
    H, W = predictor.input_size
    logits = predictor.predict(point_coords=[[0.5, H / 2]], point_labels=[1], return_logits=True)[0]
    seam_jump = np.abs(logits[:, :, 0] - logits[:, :, -1]).mean()
    inner_jump = np.abs(np.diff(logits, axis=-1)).mean()
    assert seam_jump < 3 * inner_jump
    # On view 0 the same click sits on the image border: the seam is a discontinuity there.
    logits0 = predictor.predict(point_coords=[[0.5, H / 2]], point_labels=[1], return_logits=True, view=0)[0]
    assert np.abs(logits0[:, :, 0] - logits0[:, :, -1]).mean() > seam_jump


def test_lonlat_prompts_give_exactly_the_pixel_prompts_result(reference_predictor):
    """Directions in degrees (geometry's conventions) decode exactly as the pixel prompt."""
    predictor, _ = reference_predictor
    H, W = predictor.input_size
    lonlat = np.array([[-37.5, 12.25], [178.9, -20.0], [-179.5, 3.0]])   # two near the seam
    pixels = np.stack([(lonlat[:, 0] + 180) / 360 * W, (90 - lonlat[:, 1]) / 180 * H], -1)
    labels = [1, 1, 0]
    by_pixels = predictor.predict(point_coords=pixels, point_labels=labels, return_logits=True)
    by_lonlat = predictor.predict_lonlat(points_lonlat=lonlat, point_labels=labels, return_logits=True)
    for a, b in zip(by_pixels, by_lonlat):
        np.testing.assert_array_equal(a, b)
    # a box across the seam (lon1 > lon2) is the wrapping pixel box x1 > x2
    box_ll = [150.0, 40.0, -160.0, -30.0]
    box = [(box_ll[0] + 180) / 360 * W, (90 - box_ll[1]) / 180 * H, (box_ll[2] + 180) / 360 * W,
           (90 - box_ll[3]) / 180 * H]
    assert box[0] > box[2]
    masks, scores, _ = predictor.predict(box=box)
    masks_ll, scores_ll, _ = predictor.predict_lonlat(box_lonlat=box_ll)
    np.testing.assert_array_equal(masks, masks_ll)
    np.testing.assert_array_equal(scores, scores_ll)
    assert masks[0].any() and predictor.last_view == 1
    # lon 180 is the right border itself (x = W), not wrapped to x = 0
    end = predictor.predict_lonlat(box_lonlat=[170.0, 10.0, 180.0, -10.0], multimask_output=False)[0]
    np.testing.assert_array_equal(end, predictor.predict(box=[(350 / 360) * W, (80 / 180) * H, W, (100 / 180) * H],
                                                          multimask_output=False)[0])
    with pytest.raises(InputError, match="longitude in -180..180"):
        predictor.predict_lonlat(points_lonlat=[[190.0, 0.0]], point_labels=[1])
    with pytest.raises(InputError, match="4 numbers"):
        predictor.predict_lonlat(box_lonlat=[1.0, 2.0, 3.0])


def test_mask_input_round_trip_across_views(reference_predictor):
    predictor, _ = reference_predictor
    H, W = predictor.input_size
    _, iou, low = predictor.predict(point_coords=[[3, 40]], point_labels=[1], view=1)
    best = low[np.argmax(iou)][None]
    masks, _, _ = predictor.predict(point_coords=[[3, 40], [W / 2, 40]], point_labels=[1, 0],
                                    mask_input=best, multimask_output=False, view=0)
    assert masks.shape == (1, H, W)
    with pytest.raises(InputError, match="mask_input"):
        predictor.predict(point_coords=[[3, 40]], point_labels=[1], mask_input=np.zeros((10, 10)))


@pytest.mark.parametrize("kwargs, pattern", [
    ({"image": np.zeros((100, 150, 3), np.uint8)}, "twice as wide"),
    ({"image": np.zeros((128, 256, 3), np.uint8)}, "needs depth and normals"),
    ({"image": np.zeros((128, 256, 3), np.uint8), "depth": np.ones((64, 128)),
      "normals": np.zeros((128, 256, 3))}, "same size"),
    ({"image": np.zeros((128, 256, 3), np.uint8), "normals": np.zeros((128, 256, 3))}, "needs depth"),
    ({"image": "panorama.png"}, "numeric array"),
    ({"image": np.full((128, 256, 3), np.nan)}, "NaN"),
])
def test_bad_panoramas_get_clear_errors(reference_predictor, kwargs, pattern):
    predictor, _ = reference_predictor
    fresh = panosamic.Predictor(predictor.model, device="cpu")
    with pytest.raises(InputError, match=pattern):
        fresh.set_panorama(**kwargs)


def test_depth_alone_gets_normals_derived_from_it(reference_predictor):
    """An RGB-D-N model given depth but no normals reads the normals `geometry.normals_for_model`
    derives from that depth: the same embeddings as passing those normals explicitly."""
    from panosamic.geometry import normals_for_model

    predictor, inputs = reference_predictor
    model = predictor.model
    h, w = model.erp_size
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    depth = inputs["depth_m"] if inputs["depth_m"].shape == (h, w) else np.full((h, w), 2.5, np.float32)
    derived = panosamic.Predictor(model, device="cpu").encode(image, depth=depth)
    explicit = panosamic.Predictor(model, device="cpu").encode(image, depth=depth,
                                                              normals=normals_for_model(depth, h, w))
    torch.testing.assert_close(derived.embeddings, explicit.embeddings, rtol=0, atol=0)
    without = panosamic.Predictor(model, device="cpu").encode(image, depth=depth, normals=np.zeros((h, w, 3)))
    assert not torch.equal(derived.embeddings, without.embeddings)   # the normals did reach the model


@pytest.mark.parametrize("kwargs, pattern", [
    ({"point_coords": [[300, 10]], "point_labels": [1]}, "outside"),
    ({"point_coords": [[10, 10]]}, "point_labels"),
    ({"point_coords": [[10, 10]], "point_labels": [2]}, "1 .foreground. or 0"),
    ({"box": [10, 50, 20, 10]}, "y1 <= y2"),
    ({"box": [10, 10, 20]}, "4 numbers"),
    ({}, "at least one prompt"),
    ({"point_coords": [[10, 10]], "point_labels": [1], "view": 2}, "view must be"),
])
def test_bad_prompts_get_clear_errors(reference_predictor, kwargs, pattern):
    predictor, _ = reference_predictor
    with pytest.raises(InputError, match=pattern):
        predictor.predict(**kwargs)


def test_unavailable_devices_are_clear_errors(reference_predictor):
    predictor, _ = reference_predictor
    with pytest.raises(InputError, match="not a device name"):
        panosamic.Predictor(predictor.model, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            panosamic.Predictor(predictor.model, device="cuda")
    assert panosamic.Predictor(predictor.model, device="auto").device == predictor.device


def test_prompt_before_panorama_is_a_clear_error(reference_predictor):
    predictor, _ = reference_predictor
    with pytest.raises(InputError, match="set_panorama"):
        panosamic.Predictor(predictor.model, device="cpu").predict(point_coords=[[1, 1]], point_labels=[1])


def test_state_round_trip_reuses_embeddings(reference_predictor):
    predictor, _ = reference_predictor
    other = panosamic.Predictor(predictor.model, device="cpu")
    other.set_state(predictor.state)
    assert other.encoder_calls == 0
    np.testing.assert_array_equal(other.logits, predictor.logits)
    a = predictor.predict(point_coords=[[100, 40]], point_labels=[1])[1]
    b = other.predict(point_coords=[[100, 40]], point_labels=[1])[1]
    np.testing.assert_array_equal(a, b)
    assert predictor.state.nbytes == predictor.embeddings.nbytes + 13 * 64 * 64 * 4


def test_normals_as_unit_vectors_are_encoded(reference_predictor):
    predictor, inputs = reference_predictor
    unit = inputs["normals"] / 127.5 - 1.0
    other = panosamic.Predictor(predictor.model, device="cpu", max_depth=predictor.max_depth)
    other.set_panorama(inputs["image"], depth=inputs["depth_m"], normals=unit)
    np.testing.assert_allclose(other.logits, predictor.logits, atol=1e-4)


def test_bfloat16_autocast_on_cpu(reference_predictor):
    predictor, inputs = reference_predictor
    other = panosamic.Predictor(predictor.model, device="cpu", dtype="bfloat16", max_depth=predictor.max_depth)
    other.set_panorama(inputs["image"], depth=inputs["depth_m"], normals=inputs["normals"])
    assert other.logits.dtype == np.float32
    assert np.corrcoef(other.logits.ravel(), predictor.logits.ravel())[0, 1] > 0.9
    with pytest.raises(InputError, match="CUDA"):
        panosamic.Predictor(predictor.model, device="cpu", dtype="float16")


def test_generate_instances_and_refine(reference_predictor):
    predictor, _ = reference_predictor
    H, W = predictor.input_size
    calls = predictor.encoder_calls
    # The reference weights are random: SAM's default thresholds keep nothing, so loosen them.
    instances = predictor.generate_instances(points_per_side=4, pred_iou_thresh=0.0,
                                             stability_score_thresh=0.5, stability_score_offset=0.1)
    assert predictor.encoder_calls == calls
    assert instances, "loose thresholds keep some instances"
    for inst in instances:
        assert inst["segmentation"].shape == (H, W) and inst["segmentation"].dtype == bool
        assert inst["area"] == inst["segmentation"].sum() > 0
        assert inst["view"] in (0, 1) and inst["modality"] in predictor.required_modalities
        ys, xs = np.nonzero(inst["segmentation"])
        assert inst["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    labels = predictor.labels
    refined = predictor.refine_semantics(instances)
    # The smallest instance is painted last: it takes the most frequent original class under it.
    smallest = min(instances, key=lambda d: d["area"])
    classes, counts = np.unique(labels[smallest["segmentation"]], return_counts=True)
    assert (refined[smallest["segmentation"]] == classes[np.argmax(counts)]).all()
    covered = np.any([d["segmentation"] for d in instances], axis=0)
    np.testing.assert_array_equal(refined[~covered], labels[~covered])
    # Refinement changes the map: some covered pixels take their instance's class.
    assert (refined[covered] != labels[covered]).any()


def test_refine_semantics_majority_and_nesting():
    labels = np.zeros((8, 16), np.int64)
    labels[:, 8:] = 1
    labels[2:4, 2:4] = 2
    big = np.zeros((8, 16), bool)
    big[:, :10] = True  # mostly class 0
    small = np.zeros((8, 16), bool)
    small[2:5, 2:5] = True  # 4 of 9 pixels are class 2, 5 are class 0 -> class 0 ...
    small2 = np.zeros((8, 16), bool)
    small2[2:4, 2:4] = True  # ... but this one is all class 2 and smaller, painted last
    out = refine_semantics(labels, [{"segmentation": small}, {"segmentation": big}, {"segmentation": small2}])
    assert (out[:, :10][~small2[:, :10]] == 0).all()
    assert (out[small2] == 2).all()
    assert (out[:, 10:] == 1).all()


def test_views_fuse_across_the_seam():
    """A seam-cut piece inside a whole mask from the other view is dropped; separate masks stay."""
    w = 32
    whole = torch.zeros(8, w)
    whole[2:6, :4] = 1
    whole[2:6, -4:] = 1  # one object across the seam, as view 1 sees it
    piece = torch.zeros(8, w)
    piece[2:6, :4] = 1  # view 0 sees only its left part, cut at the border
    other = torch.zeros(8, w)
    other[2:6, 12:18] = 1
    masks = torch.stack([piece, whole, other]).flatten(1)
    order = np.array([1, 2, 0])  # whole-in-view masks rank first
    kept = _fuse(masks, order, [True, False, False], nms_thresh=0.7, containment_thresh=0.8)
    assert kept == [1, 2]
