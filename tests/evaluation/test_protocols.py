"""The published evaluation protocols: selection rules, the committed indices, examples
and a protocol evaluation (movenerf.evaluation.protocols)."""

import json

import jax
import numpy as np
import pytest

from movenerf import eval as eval_main
from movenerf import train as train_main
from movenerf.evaluation import protocols
from movenerf.tools import make_protocol_index
from movenerf.validation import UsageError
from tests.conftest import SHARED
from tests.helpers import small_config

REAL = SHARED / "data" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"shared real data not at {REAL}")


def test_llff_holdout_of_a_20_view_scene():
  # arange(20)[::8]: the targets of fern; the 17 others are the source pool.
  assert protocols.holdout_targets(20, 8) == [0, 8, 16]
  assert protocols.holdout_targets(34, 8) == [0, 8, 16, 24, 32]
  with pytest.raises(ValueError, match="target_every"):
    protocols.holdout_targets(20, 0)


def test_nearest_by_distance_on_cameras_on_a_line():
  centers = np.array([[x, 0.0, 0.0] for x in range(8)])
  # Target at x = 4.2: distances 4.2 3.2 2.2 1.2 0.2 0.8 1.8 2.8 -> 4, 5, 3, 6, 2.
  assert protocols.nearest_views([4.2, 0, 0], centers, 5, "dist") == [4, 5, 3, 6, 2]
  # The target itself in the pool (tar_id) is never chosen.
  assert protocols.nearest_views([4.2, 0, 0], centers, 3, "dist", target_index=4) == [5, 3, 6]
  # At most len(pool) - 1 views, as get_nearest_pose_ids does even without tar_id.
  assert protocols.nearest_views([0, 0, 0], centers, 10, "dist") == [0, 1, 2, 3, 4, 5, 6]


def test_nearest_by_angle_seen_from_the_origin():
  # Cameras on a circle at 0, 40, ..., 320 degrees at different radii: the "vector" rule
  # looks only at the direction. Target at 95 degrees: 80 (15 off), 120 (25), 40 (55),
  # 160 (65).
  angles = np.deg2rad(np.arange(0, 360, 40))
  radii = np.linspace(1.0, 5.0, angles.size)
  centers = np.stack([radii * np.cos(angles), radii * np.sin(angles), np.zeros_like(angles)], 1)
  t = np.deg2rad(95.0)
  got = protocols.nearest_views([np.cos(t), np.sin(t), 0.0], centers, 4, "vector")
  assert got == [2, 3, 1, 4]
  assert protocols.nearest_views([0, 0, 3.0], centers, 2, "vector") == [0, 1]


def test_protocols_are_frozen_and_named():
  assert protocols.NAMES == ("dtu", "llff", "nerf_synthetic", "shiny")
  p = protocols.get("llff")
  assert (p.image_folder, p.target_every, p.num_source_views, p.source_rule,
          p.lpips_net) == ("images_4", 8, 10, "dist", "vgg")
  with pytest.raises(Exception):
    p.num_source_views = 3
  with pytest.raises(UsageError, match=r"^--protocol: unknown protocol 'x'; known: dtu, llff"):
    protocols.get("x")
  assert protocols.get("nerf_synthetic").background == "white"
  for name in protocols.NAMES:
    assert protocols.get(name).official  # every protocol cites its source
    assert type(protocols.get(name)).__doc__.count("``") > 4  # the docstring cites code


def test_dtu_index_is_the_fixed_split():
  index = protocols.load_index("dtu")
  assert sorted(index["scenes"]) == sorted(protocols.DTU.scenes) and index["missing"] == []
  for entry in index["scenes"].values():
    views = [t["view"] for t in entry["targets"]]
    assert views == [v for v in range(49) if v not in (22, 25, 28)]
    assert all(t["sources"] == [22, 25, 28] for t in entry["targets"])
    assert entry["image_size"] == [300, 400]


@needs_real
@pytest.mark.parametrize("name", protocols.NAMES)
def test_committed_index_is_what_the_generator_writes(name, tmp_path):
  out = tmp_path / f"{name}.json"
  assert make_protocol_index.main(["--protocol", name, "--data_root", str(REAL),
                                   "--out", str(out)]) == 0
  assert out.read_text() == protocols.index_path(name).read_text()


@needs_real
def test_llff_index_of_the_full_fern_camera_set():
  index = protocols.load_index("llff")
  fern = index["scenes"]["fern"]
  assert fern["complete"] and [t["view"] for t in fern["targets"]] == [0, 8, 16]
  assert index["missing"] == ["fortress", "horns", "leaves", "orchids", "room", "trex"]
  # The sources are the 10 nearest camera centres among the 17 non-target views.
  centers = np.load(REAL / "nerf_llff_data/fern/poses_bounds.npy")[:, :15].reshape(
      -1, 3, 5)[:, :, 3]
  for t in fern["targets"]:
    others = [v for v in range(20) if v not in (0, 8, 16)]
    d = {v: np.linalg.norm(centers[v] - centers[t["view"]]) for v in others}
    assert t["sources"] == sorted(others, key=d.get)[:10]
  lego = protocols.load_index("nerf_synthetic")["scenes"]["lego"]
  assert not lego["complete"] and "NOT the original camera set" in lego["generated_from"]
  assert [t["view"] for t in lego["targets"]] == [0, 40, 80, 120, 160]


@needs_real
def test_examples_use_exactly_the_index_views():
  index = protocols.load_index("nerf_synthetic")
  local = {s: protocols.load_local_scene(protocols.NERF_SYNTHETIC, REAL, s)
           for s in ("lego", "mic")}
  examples = list(protocols.protocol_examples(protocols.NERF_SYNTHETIC, index, local))
  expected = [(s, t["view"]) for s in ("lego", "mic") for t in index["scenes"][s]["targets"]]
  assert [(e["scene_id"], e["view_id"]) for e in examples] == expected
  frames = {split: {int(f["file_path"].split("r_")[1]): np.asarray(f["transform_matrix"])
                    for f in json.loads((REAL / f"nerf_synthetic/lego/transforms_{split}.json")
                                        .read_text())["frames"]}
            for split in ("train", "test")}
  for ex, target in zip(examples, index["scenes"]["lego"]["targets"]):
    # The camera centres are those of test/r_<view> and train/r_<source> in the JSON.
    np.testing.assert_allclose(ex["tgt_c2w"][:3, 3], frames["test"][target["view"]][:3, 3],
                               rtol=1e-6)
    want = np.stack([frames["train"][k][:3, 3] for k in target["sources"]])
    np.testing.assert_allclose(ex["src_c2w"][:, :3, 3], want, rtol=1e-6)
    assert ex["src_images"].shape == (10, 100, 100, 3) and ex["src_images"].dtype == np.uint8
    assert (float(ex["near"]), float(ex["far"])) == (2.0, 6.0)
    # White background: the corner of a Blender frame is white.
    assert ex["tgt_image"][0, 0].tolist() == [255, 255, 255]
  small = next(protocols.protocol_examples(protocols.NERF_SYNTHETIC, index, local, (20, 24)))
  assert small["tgt_image"].shape == (20, 24, 3) and small["src_images"].shape[1:3] == (20, 24)
  np.testing.assert_allclose(small["tgt_intrinsics"][0, 0],
                             examples[0]["tgt_intrinsics"][0, 0] * 24 / 100, rtol=1e-6)


@needs_real
def test_differences_name_resolution_subsets_and_missing_scenes():
  llff = protocols.differences(protocols.LLFF, REAL)
  assert llff[0] == ("missing locally (6 of 8 scenes): fortress, horns, leaves, orchids, "
                     "room, trex")
  assert "fern: images_8 (504x378) instead of images_4 (1008x756)" in llff
  blender = protocols.differences(protocols.NERF_SYNTHETIC, REAL)
  assert "lego: local views {'train': 40, 'test': 10}, original {'train': 100, 'test': 200}" \
      in blender
  assert "lego: images 100x100 instead of 800x800" in blender
  dtu = protocols.differences(protocols.DTU, REAL)
  assert dtu[0].startswith("missing locally (15 of 15 scenes)")
  assert "local scans outside the protocol (not evaluated): dtu_scan24, dtu_scan37" in dtu


@needs_real
def test_protocol_run_lists_missing_scenes_and_scores_the_nearest_view(tmp_path):
  # The nearest source view as the "model": its row equals the baseline's.
  summary = protocols.run_protocol_eval("llff", str(REAL), str(tmp_path),
                                        lambda ex: protocols.nearest_view(ex), {},
                                        image_size=(24, 32), verbose=False)
  folder = tmp_path / "protocol_llff"
  data = json.loads((folder / "metrics.json").read_text())
  assert [(s["scene"], s["status"]) for s in data["scenes"]] == [
      ("fern", "ok"), ("flower", "ok")] + [(s, "missing") for s in (
          "fortress", "horns", "leaves", "orchids", "room", "trex")]
  assert data["overall"]["num_views"] == 8 and summary["overall"] == data["overall"]
  for row in data["views"]:
    assert row["nearest_view"]["psnr"] == row["psnr"]
    assert row["lpips_vgg"] == "n/a" and set(row["nearest_view"]) == set(protocols.METRICS)
  p = data["protocol"]
  assert p["missing_scenes"][0] == "fortress" and p["lpips_net_published"] == "vgg"
  table = (folder / "metrics.txt").read_text().splitlines()
  assert table[0].startswith("# protocol llff (index llff.json, sha256 ")
  assert "# differs: fern: resized to 32x24 for the model" in table
  assert [l.split() for l in table if l.startswith("trex")] == [["trex", "missing"]]
  with pytest.raises(UsageError, match=r"^--protocol_data: give the folder"):
    protocols.run_protocol_eval("llff", "", str(tmp_path), None, {})


@needs_real
def test_eval_with_a_protocol_on_a_tiny_model(tmp_path):
  c = small_config()
  c.eval.lpips = ""
  c.eval.image_size = (16, 16)
  model = train_main.build_model(c)
  params = jax.device_get(train_main.initial_params(c, model))
  summary = eval_main.run_protocol(c, model, params, "nerf_synthetic", str(REAL),
                                   str(tmp_path), verbose=False)
  folder = tmp_path / "protocol_nerf_synthetic"
  data = json.loads((folder / "metrics.json").read_text())
  p = data["protocol"]
  assert p["name"] == "nerf_synthetic" and p["index_file"].endswith("nerf_synthetic.json")
  assert p["index_sha256"] == protocols.index_sha256("nerf_synthetic")
  assert "lego: images 100x100 instead of 800x800" in p["differences"]
  assert p["missing_scenes"] == ["chair", "drums", "ficus", "hotdog", "materials", "ship"]
  assert [r["view"] for r in data["views"]] == [0, 40, 80, 120, 160] * 2
  for row in data["views"]:
    assert isinstance(row["psnr"], float) and isinstance(row["nearest_view"]["psnr"], float)
    assert (folder / row["scene"] / f"{row['view']:03d}_pred.png").is_file()
  lego = next(s for s in data["scenes"] if s["scene"] == "lego")
  assert lego["num_views"] == 5 and isinstance(lego["nearest_view"]["ssim"], float)
  assert summary["protocol"] == p


def test_llff_official_frame_matches_the_official_steps():
  """`llff_official_frame` against IBRNet's load_llff_data steps written in its own axes
  (OpenGL: right, up, back): reorder, scale by 1 / (0.75 min bounds), recentre on the
  average pose; then to OpenCV by flipping y and z."""
  path = REAL / "nerf_llff_data" / "fern" / "poses_bounds.npy"
  if not path.is_file():
    pytest.skip(f"{path} not found")
  pb = np.load(path).astype(np.float64)
  llff = pb[:, :15].reshape(-1, 3, 5)[:, :, :4]  # columns: down, right, back, centre
  bds = pb[:, 15:]
  gl = np.concatenate([llff[:, :, 1:2], -llff[:, :, 0:1], llff[:, :, 2:]], axis=2)
  sc = 1.0 / (bds.min() * 0.75)
  gl[:, :, 3] *= sc
  unit = lambda v: v / np.linalg.norm(v)
  z = unit(gl[:, :, 2].sum(0))
  x = unit(np.cross(gl[:, :, 1].sum(0), z))
  avg = np.eye(4)
  avg[:3, :4] = np.stack([x, unit(np.cross(z, x)), z, gl[:, :, 3].mean(0)], axis=1)
  gl44 = np.tile(np.eye(4), (len(gl), 1, 1))
  gl44[:, :3, :4] = gl
  want = np.linalg.inv(avg) @ gl44 @ np.diag([1.0, -1.0, -1.0, 1.0])

  rec = protocols.load_local_scene(protocols.LLFF, REAL, "fern").record
  np.testing.assert_allclose(rec.c2w, want, atol=2e-5)
  np.testing.assert_allclose(rec.near, bds[:, 0] * sc, rtol=1e-6)
  assert float(rec.near.min()) == pytest.approx(1 / 0.75, rel=1e-6)
  np.testing.assert_allclose(rec.c2w[:, :3, 3].mean(0), 0.0, atol=1e-5)  # recentred
