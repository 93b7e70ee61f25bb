"""The demo trainers' shared schedule and loss curve (devtools/training.py)."""

from __future__ import annotations

import json
import math

import pytest

from devtools.training import LossCurve, set_lr, warmup_cosine


def test_warm_up_then_cosine_down_to_the_floor():
    lr_at = warmup_cosine(1e-3, warmup=10, steps=110)
    assert [lr_at(s) for s in (0, 4, 9)] == pytest.approx([1e-4, 5e-4, 1e-3])   # linear warm-up
    assert lr_at(10) == pytest.approx(1e-3)                                      # the peak
    assert lr_at(60) == pytest.approx(1e-3 * (0.02 + 0.98 * 0.5))               # half-way down the cosine
    assert lr_at(110) == pytest.approx(2e-5)                                     # the floor, 2 %
    after = [lr_at(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(after, after[1:]))                         # never rises again
    assert all(math.isfinite(lr_at(s)) for s in range(0, 3)) and warmup_cosine(1.0, 0, 1)(0) == pytest.approx(1.0)


def test_set_lr_sets_every_group():
    class Opt:
        param_groups = [{"lr": 1.0}, {"lr": 2.0, "weight_decay": 0.0}]

    opt = Opt()
    set_lr(opt, 0.25)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]


def test_the_curve_keeps_a_row_of_means_every_n_steps_and_at_the_last(capsys):
    lr_at = warmup_cosine(1.0, warmup=2, steps=7)
    curve = LossCurve(lr_at, steps=7, every=3)
    rows = [curve.add(s, loss=float(s), iou=float("nan") if s == 0 else 1.0) for s in range(7)]
    assert [r is not None for r in rows] == [False, False, True, False, False, True, True]
    assert [r["step"] for r in curve.rows] == [3, 6, 7]
    assert [r["loss"] for r in curve.rows] == [1.0, 4.0, 6.0]        # the means over each window
    assert curve.rows[0]["iou"] == 1.0                                # NaN left out of the mean
    assert [r["lr"] for r in curve.rows] == [round(lr_at(s), 6) for s in (2, 5, 6)]
    printed = [json.loads(line.split(" (")[0]) for line in capsys.readouterr().out.splitlines()]
    assert printed == curve.rows
