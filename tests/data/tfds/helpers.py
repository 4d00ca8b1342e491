"""Shared by the TFDS build tests: the real data pack, reading a built dataset back as a
SceneRecord, and a small Blender-layout scene."""

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from movenerf.data.formats import record

_REPO = Path(__file__).resolve().parents[3]
_SHARED = Path(os.environ.get("MOVENERF_SHARED", _REPO.parent / "shared"))
REAL = _SHARED / "data" / "real"
SUBDIR = {"nerf_synthetic": "nerf_synthetic", "llff": "nerf_llff_data", "dtu": "dtu"}


def stack_splits(source, scene_id):
  """All views of a scene from a built dataset, ordered by view id, as a SceneRecord."""
  parts = []
  for split in source.splits():
    try:
      cams = source.scene(split, scene_id)
    except KeyError:
      continue
    v = source.load(split, scene_id, np.arange(cams.num_views))
    parts.append((cams, v, split))
  ids = np.concatenate([c.view_ids for c, _, _ in parts])
  order = np.argsort(ids)
  cat = lambda f: np.concatenate([f(c, v) for c, v, _ in parts])[order]  # noqa: E731
  masks = None if parts[0][1].masks is None else cat(lambda c, v: v.masks)
  depths = None if parts[0][1].depths is None else cat(lambda c, v: v.depths)
  return ids[order], record.SceneRecord(
      scene_id, cat(lambda c, v: v.images), cat(lambda c, v: c.intrinsics),
      cat(lambda c, v: c.c2w), cat(lambda c, v: c.near), cat(lambda c, v: c.far),
      np.concatenate([np.full(c.num_views, s, dtype="<U5") for c, _, s in parts])[order],
      masks, depths)


def assert_same_record(got, want):
  np.testing.assert_array_equal(got.images, want.images)
  np.testing.assert_array_equal(got.intrinsics, want.intrinsics)
  np.testing.assert_array_equal(got.c2w, want.c2w)
  np.testing.assert_array_equal(got.near, want.near)
  np.testing.assert_array_equal(got.far, want.far)
  np.testing.assert_array_equal(got.split, want.split)
  for a, b in ((got.masks, want.masks), (got.depths, want.depths)):
    assert (a is None) == (b is None)
    if a is not None:
      np.testing.assert_array_equal(a, b)


def png(path, shape=(8, 8, 4), value=128):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def blender(root, n=3, sizes=None):
  scene = root / "blend"
  frames = []
  for i in range(n):
    png(scene / "train" / f"r_{i}.png", (sizes[i] if sizes else (8, 8)) + (4,))
    c2w = np.eye(4)
    c2w[2, 3] = 4.0
    frames.append({"file_path": f"./train/r_{i}", "transform_matrix": c2w.tolist()})
  (scene / "transforms_train.json").write_text(
      json.dumps({"camera_angle_x": 0.7, "frames": frames}))
  return root
