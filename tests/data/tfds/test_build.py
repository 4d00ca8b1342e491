"""Tests of movenerf.data.tfds.build (the build CLI): the summary, building the generated
dataset and reading it back, and bad input failing cleanly with nothing half-written."""

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from movenerf.data import procedural, views
from movenerf.data.tfds import build
from tests.data.tfds import helpers


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
    ids, got = helpers.stack_splits(source, want.scene_id)
    np.testing.assert_array_equal(ids, np.arange(9))
    helpers.assert_same_record(got, want)
  # Nothing but the finished dataset is left in the output folder.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]
  # A second build refuses to overwrite; --overwrite replaces it.
  assert build.main(["--format", "generated", "--out", str(tmp_path)] + opts) == 1
  assert "already exists" in capsys.readouterr().err
  assert build.main(["--format", "generated", "--out", str(tmp_path), "--overwrite"]
                    + opts) == 0
  assert views.TfdsSource(path).scenes("test")[0].num_views == 2


# ----------------------------------------------------------------------------- bad input


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
  src = helpers.blender(tmp_path / "src")
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
  src = helpers.blender(tmp_path / "src", sizes=[(8, 8), (8, 6), (8, 8)])
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
  if not helpers.REAL.is_dir():
    pytest.skip("no real data pack")
  edit, pattern = BAD_LLFF[case]
  src = _llff(tmp_path / "src", helpers.REAL, edit)
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


# ----------------------------------------------------------------------------- hygiene


_GENERATED = ["--format", "generated", "--option", "num_scenes=1", "--option", "num_views=3",
              "--option", "height=8", "--option", "width=8"]


def _dead_pid():
  proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  return int(proc.stdout)


def _partial(out, name, owner=None, age_s=0.0):
  folder = out / name
  (folder / "generated").mkdir(parents=True)
  (folder / "generated" / "part.tfrecord").write_bytes(b"half")
  if owner is not None:
    (folder / build.OWNER_FILE).write_text(owner)
  if age_s:
    then = time.time() - age_s
    for p in [folder] + list(folder.rglob("*")):
      os.utime(p, (then, then))
  return folder


def test_build_removes_stale_partial_builds_only(tmp_path, capsys, caplog):
  out = tmp_path / "out"
  out.mkdir()
  here = socket.gethostname()
  stale = {
      ".build-killed": f"{here} {_dead_pid()}\n",
      ".old-killed": f"{here} {_dead_pid()}\n",
      ".build-elsewhere-old": ("other-host 123\n", 2 * build.STALE_AFTER_S),
      ".build-no-owner-old": (None, 2 * build.NO_OWNER_STALE_AFTER_S),
  }
  live = {
      ".build-live": f"{here} {os.getpid()}\n",
      ".build-elsewhere-recent": ("other-host 123\n", 60),
      ".build-no-owner-recent": (None, 60),
  }
  for name, spec in {**stale, **live}.items():
    owner, age = spec if isinstance(spec, tuple) else (spec, 0.0)
    _partial(out, name, owner, age)
  (out / ".build-not-a-folder").write_text("a file")

  with caplog.at_level(logging.WARNING):
    assert build.main(_GENERATED + ["--out", str(out)]) == 0
  capsys.readouterr()
  left = sorted(p.name for p in out.iterdir())
  assert left == sorted(list(live) + [".build-not-a-folder", "generated"])
  lines = [r.getMessage() for r in caplog.records if "did not finish" in r.getMessage()]
  assert len(lines) == len(stale)
  for name in stale:
    assert sum(f"{out / name}," in line for line in lines) == 1, lines
  assert any("is gone" in line for line in lines)


def test_build_leaves_no_partial_folder_and_owner_names_the_process(tmp_path, monkeypatch):
  seen = []
  real = build._partial_dir  # pylint: disable=protected-access

  def spy(prefix, out):
    folder = real(prefix, out)
    seen.append((folder / build.OWNER_FILE).read_text().split())
    return folder

  monkeypatch.setattr(build, "_partial_dir", spy)
  build.build("generated", tmp_path, options=dict(num_scenes=1, num_views=3, height=8,
                                                   width=8))
  assert seen == [[socket.gethostname(), str(os.getpid())]]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["generated"]


def _tiny_llff(root, n=3):
  scene = root / "scene"
  (scene / "images_8").mkdir(parents=True)
  for i in range(n):
    helpers.png(scene / "images_8" / f"{i:03d}.png", (8, 8, 3))
  pb = np.zeros([n, 17])
  pb[:, :15] = np.concatenate([np.eye(3), np.zeros([3, 1]), [[8], [8], [10]]], 1).reshape(15)
  pb[:, 15:] = [1.0, 2.0]
  np.save(scene / "poses_bounds.npy", pb)
  return root


def test_llffhold_without_test_views_warns_and_negative_is_a_usage_error(
    tmp_path, capsys, caplog):
  src = _tiny_llff(tmp_path / "src")
  out = tmp_path / "out"
  assert build.main(["--format", "llff", "--src", str(src), "--out", str(out), "--option",
                     "llffhold=-1"]) == 2
  err = capsys.readouterr().err
  assert err == ("error: option llffhold=-1: give N >= 1 (every N-th view is a test view) "
                 "or 0 (no test views)\n")
  assert not out.exists()
  with caplog.at_level(logging.WARNING):
    assert build.main(["--format", "llff", "--src", str(src), "--out", str(out), "--option",
                       "llffhold=0"]) == 0
  assert "test " not in capsys.readouterr().out
  lines = [r.getMessage() for r in caplog.records if "test" in r.getMessage()]
  assert lines == ["llff: option llffhold=0 holds out no test views (every view is a train "
                   "view; the default llffhold=8 makes every 8th view a test view)"]


def test_blender_image_without_alpha_warns_once(tmp_path, capsys, caplog):
  src = helpers.blender(tmp_path / "src", n=4)
  scene = src / "blend"
  for i in (1, 2):
    (scene / "train" / f"r_{i}.png").unlink()
    Image.fromarray(np.full((8, 8, 3), 30, np.uint8)).save(scene / "train" / f"r_{i}.jpg")
  _edit_json(src, lambda m: [m["frames"][i].update(file_path=f"./train/r_{i}.jpg")
                             for i in (1, 2)])
  with caplog.at_level(logging.WARNING):
    assert build.main(["--format", "nerf_synthetic", "--src", str(src), "--out",
                       str(tmp_path / "out")]) == 0
  capsys.readouterr()
  lines = [r.getMessage() for r in caplog.records if "alpha" in r.getMessage()]
  assert lines == [f"nerf_synthetic: {scene / 'train' / 'r_1.jpg'} has no alpha channel, "
                   "unlike 2 other images of the scene: it keeps its own background, not "
                   "the white one (1 more such images)"]
