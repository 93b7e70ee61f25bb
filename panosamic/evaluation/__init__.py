"""Evaluation on the released datasets' processed layouts (`python -m panosamic evaluate`).

* :mod:`.layouts`: one reader per dataset (Stanford2D3DS, Matterport3D, Structured3D, ToF-360):
  samples, file encodings, folds, void pixels.
* :mod:`.max_depth`: T, the training split's 99.5 % inlier depth, with a cache.
* :mod:`.scoring`: one sample predicted and counted into its per_sample.csv row.
* :mod:`.evaluate`: the accumulation over a split, resumable, metrics.json + per_sample.csv.

Import each name from the module that defines it, e.g.
``from panosamic.evaluation.evaluate import evaluate_dataset``.
"""
