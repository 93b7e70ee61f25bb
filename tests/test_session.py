"""panosamic.studio.session (per-user edits, prompts, undo), its downloads, and the embedding cache (LRU by bytes)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from app_utils import make_session

from panosamic.datasets import STANFORD2D3DS as DS
from panosamic.errors import InputError
from panosamic.exports import decode_rle, read_glb
from panosamic.studio.cache import EmbeddingCache, content_key
from panosamic.studio.downloads import write_downloads


def test_assign_changes_labels_only_under_the_mask_and_undo_restores():
    s = make_session()
    before = s.labels.copy()
    mask = np.zeros(s.shape, bool)
    mask[5:15, 10:30] = True
    s.add_point(20, 10)
    s.set_candidates(np.stack([mask, ~mask, mask & False]), [0.85, 0.2, 0.9])
    assert s.selected == 0  # a single click: the tightest plausible mask (the empty one never) ...
    s.select(1)             # ... the user picks another one
    s.select(0)
    assert s.majority_class() == 11
    changed = s.assign("door")
    assert changed == mask.sum()
    assert (s.labels[mask] == DS.index("door")).all()
    np.testing.assert_array_equal(s.labels[~mask], before[~mask])
    assert not s.has_prompts and s.candidates is None and len(s.refined) == 1
    # a second edit, by index, overlapping the first
    mask2 = np.zeros(s.shape, bool)
    mask2[10:30, 0:20] = True
    s.assign(3, mask=mask2)
    after_two = s.labels.copy()
    assert (after_two[mask2] == 3).all()
    # undo across assignments, back to the start; prompts of the first edit come back
    assert s.undo() == "labels"
    np.testing.assert_array_equal(s.labels[mask], DS.index("door"))
    assert s.undo() == "labels"
    np.testing.assert_array_equal(s.labels, before)
    assert s.points == [(20.0, 10.0)] and s.refined == []
    assert s.undo() == "prompts" and not s.has_prompts
    assert s.undo() is None


def test_prompts_points_boxes_and_seam_wrapping_box():
    s = make_session()
    s.add_point(3, 4, positive=True)
    s.add_point(5, 6, positive=False)
    kw = s.prompt_kwargs()
    np.testing.assert_array_equal(kw["point_labels"], [1, 0])
    assert kw["point_coords"].shape == (2, 2) and kw["box"] is None
    assert s.add_box_corner(60, 20) is False and s.pending_corner == (60, 20)
    assert s.add_box_corner(4, 5) is True   # second corner left of the first: wraps the seam
    assert s.box == [60, 5, 4, 20]
    assert s.prompt_kwargs()["box"].tolist() == [60, 5, 4, 20]
    assert s.undo() == "prompts" and s.box is None and s.pending_corner == (60, 20)
    s.set_prompts([[1, 2]], [0], box=[10, 1, 20, 9])
    assert s.points == [(1.0, 2.0)] and s.point_labels == [0] and s.box == [10, 1, 20, 9]
    assert s.clear_prompts() and not s.has_prompts
    assert s.undo() == "prompts" and s.box == [10, 1, 20, 9]


def test_a_new_selection_replaces_the_prompts_and_undo_brings_them_back():
    s = make_session()
    s.add_point(3, 4)
    s.add_point(5, 6, positive=False)
    s.add_point(40, 20, new=True)                  # a plain click elsewhere: a new selection
    assert s.points == [(40.0, 20.0)] and s.point_labels == [1]
    assert s.undo() == "prompts" and s.points == [(3.0, 4.0), (5.0, 6.0)] and s.point_labels == [1, 0]
    s.add_point(40, 20, new=True)
    assert s.add_box_corner(60, 20, new=True) is False     # a box's first corner: a new selection at once
    assert not s.points and s.box is None and s.pending_corner == (60, 20) and s.candidates is None
    assert s.add_box_corner(4, 5, new=True) is True        # the second corner only completes it
    assert s.box == [60, 5, 4, 20] and not s.points
    s.add_point(30, 10)                                     # Shift: the box keeps its point
    assert s.add_box_corner(1, 1) is False and s.box == [60, 5, 4, 20] and s.points == [(30.0, 10.0)]
    assert s.add_box_corner(9, 9) is True and s.box == [1, 1, 9, 9] and s.points == [(30.0, 10.0)]
    for _ in range(4):
        s.undo()
    assert s.box is None and s.pending_corner == (60, 20) and not s.points
    # after Assign the prompts are gone: the next click starts afresh whatever it is
    s.add_point(30, 10, new=True)
    s.set_candidates(np.ones((1, *s.shape), bool), [0.9])
    s.assign("wall")
    assert not s.has_prompts and s.pending_corner is None and s.candidates is None


@pytest.mark.parametrize("bad", [
    dict(points=[[100, 2]]), dict(points=[[1, 2]], labels=[2]), dict(points=[[1, 2]], labels=[1, 0]),
    dict(points=[]), dict(box=[1, 2, 3]), dict(box=[5, 5, 9, 5]), dict(points=[["a", 1]]),
])
def test_bad_prompts_are_input_errors(bad):
    with pytest.raises(InputError):
        make_session().set_prompts(**bad)


def test_assign_errors():
    s = make_session()
    with pytest.raises(InputError, match="click"):
        s.assign("wall")
    with pytest.raises(InputError, match="at most 40 characters"):   # a new name becomes a class: not this one
        s.assign("spaceship " * 5, mask=np.ones(s.shape, bool))
    with pytest.raises(InputError, match="unknown class"):
        s.class_index("spaceship")
    with pytest.raises(InputError, match="out of range"):
        s.assign(13, mask=np.ones(s.shape, bool))
    with pytest.raises(InputError, match="empty"):
        s.assign(0, mask=np.zeros(s.shape, bool))


def test_apply_labels_is_undoable():
    s = make_session()
    before = s.labels.copy()
    new = before.copy()
    new[:4] = 3
    m = np.zeros(s.shape, bool)
    m[:4] = True
    assert s.apply_labels(new, masks=[(m, 3, 0.8)]) == 4 * 64
    assert s.refined[0].source == "instances"
    np.testing.assert_array_equal(s.refined[0].mask, m)
    s.undo()
    np.testing.assert_array_equal(s.labels, before)
    assert not s.refined


def test_stats_after_every_kind_of_edit_equal_stats_from_scratch():
    """The session recomputes the median distance only of the classes an edit touched: after
    assigns, an instance-style relabel and undos, its statistics equal a fresh computation."""
    from panosamic.exports import class_stats

    s = make_session()
    rng = np.random.default_rng(5)
    s.depth[:] = rng.uniform(0.5, 6.0, s.shape).astype(np.float32)
    s.depth[0, :5] = np.nan
    fresh = lambda: class_stats(s.labels, s.classes, s.palette, s.depth)  # noqa: E731
    assert s.stats() == fresh()
    for step in range(12):
        if step % 4 == 3:
            assert s.undo() == "labels"
        elif step % 4 == 2:
            new = s.labels.copy()
            new[rng.integers(0, 32, 40), rng.integers(0, 64, 40)] = rng.integers(0, 13, 40)
            s.apply_labels(new)
        else:
            m = np.zeros(s.shape, bool)
            r, c = rng.integers(0, 28), rng.integers(0, 60)
            m[r:r + rng.integers(2, 10), c:c + rng.integers(2, 20)] = True
            s.assign(int(rng.integers(0, 13)), m)
        assert s.stats() == fresh(), f"after edit {step}"
    while s.can_undo:
        s.undo()
        assert s.stats() == fresh()
    np.testing.assert_array_equal(s.labels, s.initial_labels)


def test_export_writes_every_download(tmp_path):
    s = make_session()
    mask = np.zeros(s.shape, bool)
    mask[2:6, 50:64] = True
    mask[2:6, 0:3] = True
    s.assign("window", mask=mask)
    files = write_downloads(s, tmp_path, s.initial_labels.copy())
    assert set(files) == {"labels", "class_table", "colors", "stats_json", "stats_csv", "coco_rle", "masks_png",
                          "pointcloud_glb"}
    assert all(os.path.basename(p).startswith("office_") for p in files.values())
    lab = cv2.imread(files["labels"], cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(lab, s.labels)
    col = cv2.imread(files["colors"])[..., ::-1]
    np.testing.assert_array_equal(col, DS.palette[s.labels])
    ids = cv2.imread(files["masks_png"], cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint16 and ((ids == 1) == mask).all()
    coco = json.load(open(files["coco_rle"]))
    assert coco["images"][0]["width"] == 64
    rebuilt = np.full(s.shape, -1)
    for ann in coco["annotations"]:
        rebuilt[decode_rle(ann["segmentation"])] = ann["category_id"]
    np.testing.assert_array_equal(rebuilt, s.labels)
    np.testing.assert_array_equal(decode_rle(coco["refined_masks"][0]["segmentation"]), mask)
    stats = json.load(open(files["stats_json"]))
    assert stats["edits"] == 1 and stats["changed_pixels"] == mask.sum()
    assert abs(sum(r["sphere_share"] for r in stats["stats"]) - 1) < 1e-4
    read_glb(files["pointcloud_glb"])
    plain = make_session(depth=False)
    assert "pointcloud_glb" not in write_downloads(plain, tmp_path / "nodepth", plain.initial_labels.copy())


# ----------------------------------------------------------------------------- cache

class Blob:
    def __init__(self, n):
        self.nbytes = n


def test_cache_evicts_least_recently_used_by_bytes():
    c = EmbeddingCache(100)
    for k in "abc":
        assert c.put(k, Blob(30))
    assert c.nbytes == 90
    assert c.get("a") is not None           # a is now the most recently used
    c.put("d", Blob(30))                    # 120 > 100: evicts b (LRU), not a
    assert c.keys() == ["c", "a", "d"] and c.nbytes == 90
    c.put("e", Blob(70))                    # evicts c and a
    assert c.keys() == ["d", "e"] and c.nbytes == 100 and c.evictions == 3
    assert not c.put("huge", Blob(101)) and "huge" not in c
    c.put("d", Blob(10))                    # replacing updates the size
    assert c.nbytes == 80
    assert c.get("zzz") is None and c.misses == 1 and c.hits == 1


def test_cache_hits_on_same_content():
    img = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
    depth = np.ones((2, 4), np.float32)
    k1 = content_key(img, depth, None, max_depth=10.0, checkpoint="x")
    k2 = content_key(img.copy(), depth.copy(), None, max_depth=10.0, checkpoint="x")
    assert k1 == k2
    assert k1 != content_key(img, depth, None, max_depth=8.0, checkpoint="x")
    assert k1 != content_key(img, None, depth, max_depth=10.0, checkpoint="x")
    assert k1 != content_key(img.reshape(4, 2, 3), depth, None, max_depth=10.0, checkpoint="x")
    c = EmbeddingCache.from_megabytes(1)
    c.put(k1, Blob(10))
    assert c.get(k2) is not None and c.stats()["hits"] == 1
    assert EmbeddingCache(0).put("k", Blob(1)) is False
