"""The format registry: names, options, config names, scene discovery, dispatch."""

import numpy as np
import pytest

from movenerf.data.formats import ibrnet, llff, nerf_synthetic, registry
from tests.data.formats import helpers


def test_unknown_format():
  with pytest.raises(ValueError, match=r"unknown dataset format 'colmap'.*nerf_synthetic"):
    registry.read_scene("colmap", "/nonexistent")
  with pytest.raises(ValueError, match=r"unknown dataset format 'colmap'; known formats: .*"
                     r"generated"):
    registry.check_format("colmap")


def test_format_names_and_readers():
  assert registry.format_names() == [
      "dtu", "google_scanned_objects", "ibrnet_collected", "llff", "nerf_synthetic",
      "realestate10k", "spaces", "generated"]
  assert registry.FORMATS["nerf_synthetic"].reader is nerf_synthetic.read_nerf_synthetic
  assert registry.FORMATS["llff"].reader is llff.read_llff
  assert registry.FORMATS["dtu"].reader is llff.read_dtu and registry.FORMATS["dtu"].has_masks
  for name, reader in ibrnet.READERS.items():
    assert registry.FORMATS[name].reader is reader
  registry.check_format(registry.GENERATED)


def test_read_scene_dispatches_with_the_readers_defaults(tmp_path):
  scene = tmp_path / "blend"
  helpers.write_png(scene / "train" / "r_0.png")
  (scene / "transforms_train.json").write_text(
      '{"camera_angle_x": 0.7, "frames": [{"file_path": "./train/r_0", '
      '"transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]}]}')
  got = registry.read_scene("nerf_synthetic", scene, white_background=False)
  want = nerf_synthetic.read_nerf_synthetic(scene, white_background=False)
  np.testing.assert_array_equal(got.images, want.images)
  np.testing.assert_array_equal(got.c2w, want.c2w)


def test_parse_options_defaults_coercion_and_errors():
  assert registry.parse_options("llff", {}) == {"factor": 8, "llffhold": 8}
  assert registry.parse_options("llff", {"factor": "4"}) == {"factor": 4, "llffhold": 8}
  opts = registry.parse_options("nerf_synthetic", {"white_background": "no"})
  assert opts == {"white_background": False, "downsample": 1}
  assert registry.parse_options("spaces", {})["mixed_sizes"] == "crop"
  gen = registry.parse_options("generated", {"num_scenes": "3", "kind": "mixed"})
  assert gen == dict(registry.GENERATED_OPTIONS, num_scenes=3, kind="mixed")
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['facter'\] for format 'llff'"):
    registry.parse_options("llff", {"facter": 4})
  with pytest.raises(ValueError, match="option factor='four': expected a int"):
    registry.parse_options("llff", {"factor": "four"})
  with pytest.raises(ValueError, match="expected a bool"):
    registry.parse_options("nerf_synthetic", {"white_background": "maybe"})
  with pytest.raises(ValueError, match="unknown dataset format 'colmap'"):
    registry.parse_options("colmap", {})


def test_config_name():
  assert registry.config_name({}) == "default"
  assert registry.config_name({"llffhold": 8, "factor": 8}) == "factor-8_llffhold-8"
  assert registry.config_name({"white_background": True, "x": "a/b"}) == (
      "white_background-1_x-a-b")


def test_find_scenes(tmp_path):
  fmt = registry.FORMATS["llff"]
  for name in ("b", "a"):
    (tmp_path / name).mkdir()
    (tmp_path / name / "poses_bounds.npy").write_bytes(b"")
  (tmp_path / "other").mkdir()
  assert registry.find_scenes(fmt, tmp_path) == [tmp_path / "a", tmp_path / "b"]
  assert registry.find_scenes(fmt, tmp_path / "b") == [tmp_path / "b"]  # a scene itself
  assert registry.find_scenes(fmt, tmp_path, ["b"]) == [tmp_path / "b"]
  with pytest.raises(FileNotFoundError, match="scene folder not found"):
    registry.find_scenes(fmt, tmp_path, ["c"])
  with pytest.raises(FileNotFoundError, match="source folder not found"):
    registry.find_scenes(fmt, tmp_path / "nope")
  with pytest.raises(ValueError, match=r"empty scene list: no llff scenes under .*other"):
    registry.find_scenes(fmt, tmp_path / "other")
  # RealEstate10K keeps its scenes in frames/.
  clip = tmp_path / "re" / "frames" / "clip"
  helpers.write_png(clip / "0001.png")
  assert registry.find_scenes(registry.FORMATS["realestate10k"], tmp_path / "re") == [clip]


def test_llffhold_options():
  with pytest.raises(ValueError, match=r"^option llffhold=-1: give N >= 1"):
    registry.parse_options("llff", {"llffhold": "-1"})
  with pytest.raises(ValueError, match=r"^option llffhold=-2: give N >= 1"):
    registry.parse_options("ibrnet_collected", {"llffhold": -2})
  for fmt in ("llff", "dtu"):
    assert registry.no_test_split(fmt, registry.parse_options(fmt, {})) is None
    line = registry.no_test_split(fmt, registry.parse_options(fmt, {"llffhold": "0"}))
    assert line.startswith(f"{fmt}: option llffhold=0 holds out no test views")
  # The IBRNet training collection holds out nothing by default: no line.
  assert registry.no_test_split("ibrnet_collected",
                                registry.parse_options("ibrnet_collected", {})) is None
  assert registry.no_test_split("nerf_synthetic", {}) is None
