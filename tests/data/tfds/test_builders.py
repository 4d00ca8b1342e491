"""TFDS builders and the build CLI: the real data pack, the generated dataset, bad input."""

import importlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from movenerf.data import procedural, views
from movenerf.data.formats import record, registry
from movenerf.data.tfds import build, builders
from movenerf.geometry import cameras, projection

_REPO = Path(__file__).resolve().parents[3]
_SHARED = Path(os.environ.get("MOVENERF_SHARED", _REPO.parent / "shared"))
REAL = _SHARED / "data" / "real"
SUBDIR = {"nerf_synthetic": "nerf_synthetic", "llff": "nerf_llff_data", "dtu": "dtu"}
# views per scene: (train, test)
COUNTS = {"lego": (40, 10), "mic": (40, 10), "fern": (17, 3), "flower": (29, 5),
          "dtu_scan24": (42, 7), "dtu_scan37": (42, 7)}
SIZES = {"nerf_synthetic": (100, 100), "llff": (378, 504), "dtu": (150, 200)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """The real pack built once per module: format -> dataset folder."""
  if not REAL.is_dir():
    pytest.skip(f"real data pack not found at {REAL}")
  out = tmp_path_factory.mktemp("tfds")
  return {fmt: build.build(fmt, out, REAL / sub) for fmt, sub in SUBDIR.items()}


def _stack_splits(source, scene_id):
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


def _assert_same_record(got, want):
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


@pytest.mark.parametrize("fmt", list(SUBDIR))
def test_real_pack_builds_and_matches_the_readers(built, fmt):
  source = views.TfdsSource(built[fmt])
  scene_ids = sorted(n for n in COUNTS if (REAL / SUBDIR[fmt] / n).is_dir())
  assert source.splits() == ("train", "test")  # no scene has val views: skipped
  for split, col in (("train", 0), ("test", 1)):
    scenes = source.scenes(split)
    assert [s.scene_id for s in scenes] == scene_ids
    assert [s.num_views for s in scenes] == [COUNTS[n][col] for n in scene_ids]
    for cams in scenes:
      assert (cams.height, cams.width) == SIZES[fmt]
      assert _centre_inside_fraction(cams) >= 0.9
  for sid in scene_ids:
    ids, got = _stack_splits(source, sid)
    want = registry.read_scene(fmt, REAL / SUBDIR[fmt] / sid)
    np.testing.assert_array_equal(ids, np.arange(want.num_views))
    _assert_same_record(got, want)
  info = json.loads((built[fmt] / "dataset_info.json").read_text())
  assert info["fileFormat"] == "array_record"


def test_summary_and_cli_output(built, capsys):
  text = build.summarize(built["llff"])
  assert "scenes: 2 (fern, flower)" in text
  assert "train      46      2" in text and "test        8      2" in text
  assert "image size (WxH): 504x378 in 2 scene(s)" in text


def test_cli_builds_generated_and_round_trips(tmp_path, capsys):
  opts = ["--option", "num_scenes=3", "--option", "num_views=9", "--option", "height=24",
          "--option", "width=32", "--option", "kind=mixed", "--option", "first_seed=5"]
  assert build.main(["--format", "generated", "--out", str(tmp_path)] + opts) == 0
  out = capsys.readouterr().out
  assert "scenes: 3" in out and "image size (WxH): 32x24 in 3 scene(s)" in out
  path = Path(out.split("path: ")[1].splitlines()[0])
  source = views.TfdsSource(path)
  kinds = {5: "forward", 6: "object", 7: "forward"}  # "mixed": even seeds object-centric
  for seed, kind in kinds.items():
    want = procedural.make_record(seed, kind, 9, 24, 32, holdout_every=8)
    ids, got = _stack_splits(source, want.scene_id)
    np.testing.assert_array_equal(ids, np.arange(9))
    _assert_same_record(got, want)
  # Nothing but the finished dataset is left in the output folder.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]
  # A second build refuses to overwrite; --overwrite replaces it.
  assert build.main(["--format", "generated", "--out", str(tmp_path)] + opts) == 1
  assert "already exists" in capsys.readouterr().err
  assert build.main(["--format", "generated", "--out", str(tmp_path), "--overwrite"]
                    + opts) == 0
  assert views.TfdsSource(path).scenes("test")[0].num_views == 2


def test_builder_class_with_manual_dir_and_scene_subset(tmp_path):
  if not REAL.is_dir():
    pytest.skip("no real data pack")
  import tensorflow_datasets as tfds
  b = builders.MultiViewBuilder(
      "nerf_synthetic", scenes=["mic"], options={"downsample": 2}, data_dir=str(tmp_path))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(REAL / "nerf_synthetic")))
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


# ----------------------------------------------------------------------------- bad input


def _png(path, shape=(8, 8, 4), value=128):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def _blender(root, n=3, sizes=None):
  scene = root / "blend"
  frames = []
  for i in range(n):
    _png(scene / "train" / f"r_{i}.png", (sizes[i] if sizes else (8, 8)) + (4,))
    c2w = np.eye(4)
    c2w[2, 3] = 4.0
    frames.append({"file_path": f"./train/r_{i}", "transform_matrix": c2w.tolist()})
  (scene / "transforms_train.json").write_text(
      json.dumps({"camera_angle_x": 0.7, "frames": frames}))
  return root


def _llff(root, real, edit):
  scene = root / "fern"
  shutil.copytree(real / "nerf_llff_data" / "fern", scene)
  pb = np.load(scene / "poses_bounds.npy")
  np.save(scene / "poses_bounds.npy", edit(pb))
  return root


def _edit_json(root, fn):
  path = root / "blend" / "transforms_train.json"
  meta = json.loads(path.read_text())
  fn(meta)
  path.write_text(json.dumps(meta))
  return root


def _set(pb, idx, value):
  pb = pb.copy()
  pb[idx] = value
  return pb


BAD_BLENDER = {
    "missing image": (lambda r: (r / "blend/train/r_1.png").unlink(), r"missing image .*r_1\.png"),
    "truncated png": (lambda r: (r / "blend/train/r_0.png").write_bytes(
        (r / "blend/train/r_0.png").read_bytes()[:40]), r"r_0\.png.*corrupt or truncated"),
    "nan pose": (lambda r: _edit_json(r, lambda m: m["frames"][1]["transform_matrix"][0]
                                      .__setitem__(3, float("nan"))),
                 r"transforms_train\.json.*frame 1.*NaN"),
    "bad pose shape": (lambda r: _edit_json(r, lambda m: m["frames"][0].update(
        transform_matrix=[[1, 0], [0, 1]])), r"transforms_train\.json.*shape"),
    "inf intrinsics": (lambda r: _edit_json(r, lambda m: m.update(camera_angle_x=float("inf"))),
                       r"transforms_train\.json.*camera_angle_x"),
}


@pytest.mark.parametrize("case", sorted(BAD_BLENDER))
def test_bad_blender_input_fails_cleanly(tmp_path, capsys, case):
  src = _blender(tmp_path / "src")
  breaker, pattern = BAD_BLENDER[case]
  breaker(src)
  out = tmp_path / "out"
  rc = build.main(["--format", "nerf_synthetic", "--src", str(src), "--out", str(out)])
  err = capsys.readouterr().err
  assert rc == 1
  assert err.startswith("error: ")
  assert re.search(pattern, err), err
  assert not out.exists()  # nothing half-written


def test_mixed_sizes_fail_cleanly_and_keep_existing_output(tmp_path, capsys):
  src = _blender(tmp_path / "src", sizes=[(8, 8), (8, 6), (8, 8)])
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  rc = build.main(["--format", "nerf_synthetic", "--src", str(src), "--out", str(out)])
  assert rc == 1 and "mixed image sizes" in capsys.readouterr().err
  assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


BAD_LLFF = {
    "wrong pose shape": (lambda pb: pb[:, :15], r"poses_bounds\.npy.*shape \[N, 17\]"),
    "nan pose": (lambda pb: _set(pb, (2, 3), np.nan), r"poses_bounds\.npy.*NaN"),
    "nan intrinsics": (lambda pb: _set(pb, (0, 14), np.inf), r"poses_bounds\.npy.*NaN or inf"),
    "near >= far": (lambda pb: _set(pb, (4, 15), pb[4, 16] + 1.0),
                    r"poses_bounds\.npy.*near >= far"),
}


@pytest.mark.parametrize("case", sorted(BAD_LLFF))
def test_bad_llff_input_fails_cleanly(tmp_path, capsys, case):
  if not REAL.is_dir():
    pytest.skip("no real data pack")
  edit, pattern = BAD_LLFF[case]
  src = _llff(tmp_path / "src", REAL, edit)
  out = tmp_path / "out"
  rc = build.main(["--format", "llff", "--src", str(src), "--out", str(out)])
  err = capsys.readouterr().err
  assert rc == 1 and re.search(pattern, err), err
  assert not out.exists()


def test_empty_scene_list_and_usage_errors(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  out = tmp_path / "out"
  assert build.main(["--format", "llff", "--src", str(tmp_path / "empty"), "--out",
                     str(out)]) == 1
  assert "empty scene list: no llff scenes under" in capsys.readouterr().err
  assert build.main(["--format", "generated", "--out", str(out), "--option",
                     "num_scenes=0"]) == 1
  assert "empty scene list" in capsys.readouterr().err
  assert build.main(["--format", "llff", "--src", str(tmp_path / "nope"), "--out",
                     str(out)]) == 1
  assert "source folder not found" in capsys.readouterr().err
  assert build.main(["--format", "colmap", "--src", "x", "--out", str(out)]) == 2
  assert "unknown dataset format 'colmap'" in capsys.readouterr().err
  assert build.main(["--format", "llff", "--src", "x", "--out", str(out), "--option",
                     "facter=4"]) == 2
  assert "unknown option(s) ['facter']" in capsys.readouterr().err
  assert build.main(["--format", "llff", "--src", "x", "--out", str(out), "--option",
                     "factor=four"]) == 2
  assert "expected a int" in capsys.readouterr().err
  assert not out.exists()


def test_missing_split_is_skipped_with_a_warning(tmp_path, caplog):
  src = _blender(tmp_path / "src")
  with caplog.at_level(logging.WARNING):
    path = build.build("nerf_synthetic", tmp_path / "out", src)
  assert views.TfdsSource(path).splits() == ("train",)
  assert "transforms_val.json" in caplog.text and "skipping the val split" in caplog.text
