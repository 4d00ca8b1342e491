"""Tests of movenerf.data.tfds.builders: the real data pack builds and matches the readers,
the builder class and the TFDS-convention catalog folders, a missing split is skipped."""

import importlib
import json
import logging
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from movenerf.data import views
from movenerf.data.formats import registry
from movenerf.data.tfds import build, builders
from movenerf.geometry import cameras, projection
from tests.data.tfds import helpers

# views per scene: (train, test)
COUNTS = {"lego": (40, 10), "mic": (40, 10), "fern": (17, 3), "flower": (29, 5),
          "dtu_scan24": (42, 7), "dtu_scan37": (42, 7)}
SIZES = {"nerf_synthetic": (100, 100), "llff": (378, 504), "dtu": (150, 200)}


def _centre_inside_fraction(cams):
  """Fraction of views in which the scene centre projects inside the image (in front).

  The centre is the point nearest all optical axes for converging rigs; for the
  forward-facing LLFF rigs (near-parallel axes) it is the mean camera pushed forward by
  the mean of near and far.
  """
  c2w = cams.c2w.astype(np.float64)
  dirs = c2w[:, :3, 2]
  if np.linalg.norm(dirs.mean(0)) > 0.95:  # forward-facing: axes nearly parallel
    d = dirs.mean(0) / np.linalg.norm(dirs.mean(0))
    centre = c2w[:, :3, 3].mean(0) + 0.5 * (cams.near.mean() + cams.far.mean()) * d
  else:
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]
    centre = np.linalg.solve(proj.sum(0), np.einsum("nij,nj->i", proj, c2w[:, :3, 3]))
  cam = cameras.Cameras(jnp.asarray(cams.intrinsics), jnp.asarray(cams.c2w), cams.height,
                        cams.width)
  xy, front = projection.project_points(jnp.asarray(centre, jnp.float32)[None], cam)
  inside = np.asarray(projection.in_image(xy, cams.height, cams.width) & front)[:, 0]
  return inside.mean()


@pytest.mark.parametrize("fmt", list(helpers.SUBDIR))
def test_real_pack_builds_and_matches_the_readers(built, fmt):
  source = views.TfdsSource(built[fmt])
  scene_ids = sorted(n for n in COUNTS if (helpers.REAL / helpers.SUBDIR[fmt] / n).is_dir())
  assert source.splits() == ("train", "test")  # no scene has val views: skipped
  for split, col in (("train", 0), ("test", 1)):
    scenes = source.scenes(split)
    assert [s.scene_id for s in scenes] == scene_ids
    assert [s.num_views for s in scenes] == [COUNTS[n][col] for n in scene_ids]
    for cams in scenes:
      assert (cams.height, cams.width) == SIZES[fmt]
      assert _centre_inside_fraction(cams) >= 0.9
  for sid in scene_ids:
    ids, got = helpers.stack_splits(source, sid)
    want = registry.read_scene(fmt, helpers.REAL / helpers.SUBDIR[fmt] / sid)
    np.testing.assert_array_equal(ids, np.arange(want.num_views))
    helpers.assert_same_record(got, want)
  info = json.loads((built[fmt] / "dataset_info.json").read_text())
  assert info["fileFormat"] == "array_record"


def test_builder_class_with_manual_dir_and_scene_subset(tmp_path):
  if not helpers.REAL.is_dir():
    pytest.skip("no real data pack")
  import tensorflow_datasets as tfds
  b = builders.MultiViewBuilder(
      "nerf_synthetic", scenes=["mic"], options={"downsample": 2}, data_dir=str(tmp_path))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(helpers.REAL / "nerf_synthetic")))
  source = views.TfdsSource(b.data_dir)
  assert [s.scene_id for s in source.scenes("train")] == ["mic"]
  assert source.load("test", "mic", [0]).images.shape == (1, 50, 50, 3)


def test_tfds_folder_builders_import(tmp_path):
  """catalog/<name>/<name>_dataset_builder.py: the TFDS-convention entry points."""
  catalog = Path(builders.__file__).parent / "catalog"
  folders = sorted(p for p in catalog.iterdir() if p.is_dir() and not p.name.startswith("_"))
  assert {p.name for p in folders} == set(registry.format_names())
  for folder in folders:
    assert (folder / f"{folder.name}_dataset_builder.py").is_file()
    module = importlib.import_module(
        f"movenerf.data.tfds.catalog.{folder.name}.{folder.name}_dataset_builder")
    b = module.Builder(data_dir=str(tmp_path))
    assert b.name == folder.name and b.fmt == folder.name


def test_missing_split_is_skipped_with_a_warning(tmp_path, caplog):
  src = helpers.blender(tmp_path / "src")
  with caplog.at_level(logging.WARNING):
    path = build.build("nerf_synthetic", tmp_path / "out", src)
  assert views.TfdsSource(path).splits() == ("train",)
  assert "transforms_val.json" in caplog.text and "skipping the val split" in caplog.text
