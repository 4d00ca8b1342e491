"""render_path: a fly-through of a real scene from official-format weights, with and
without a short fine-tune, and its one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from movenerf import configs
from movenerf.data.formats import registry as formats
from movenerf.evaluation import video
from movenerf.models import registry
from movenerf.models.gnt import official_checkpoint
from movenerf.tools import render_path
from movenerf.training import checkpoint
from movenerf.validation import UsageError
from tests.conftest import SHARED

REPO = Path(__file__).resolve().parents[2]
LLFF = SHARED / "data" / "real" / "nerf_llff_data"
# The tiny model with the official feature network's width, so that it has an official
# checkpoint layout.
TINY = ["--config", "gnt:tiny", "--config.model.feature_width=64"]


@pytest.fixture(scope="module")
def official_npz(tmp_path_factory):
  """Random weights of the tiny model written as an official-format .npz."""
  c = configs.load("gnt:tiny", lock=False)
  c.model.feature_width = 64
  params = registry.build(c.model).init_params(jax.random.PRNGKey(0))
  path = tmp_path_factory.mktemp("weights") / "tiny.npz"
  np.savez(path, **official_checkpoint.export_official_arrays({"params": params}))
  return path


def _run(*args):
  return subprocess.run([sys.executable, "-m", "movenerf.tools.render_path", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=900,
                        env=dict(os.environ, PYTHONPATH=str(REPO)))


def _args(npz, out, *extra):
  return ["--checkpoint", str(npz), *TINY, "--format", "llff", "--src", str(LLFF),
          "--scene", "fern", "--frames", "3", "--downscale", "8", "--out", str(out), *extra]


def test_fern_fly_through_from_official_weights_after_a_fine_tune(official_npz, tmp_path):
  if not (LLFF / "fern").exists():
    pytest.skip(f"shared LLFF data not found at {LLFF}")
  out = tmp_path / "fern.mp4"
  proc = _run(*_args(official_npz, out, "--path", "interpolate", "--finetune_steps", "2"))
  assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
  assert "frame 3/3" in proc.stdout and "ETA" in proc.stdout
  # 3 frames of RGB | depth at fern's images_8 size / 8 (378x504 -> 47x63, padded even).
  frames = [video.read_frame(str(out), i) for i in range(3)]
  assert frames[0].shape == (48, 126, 3)
  summary = json.loads((tmp_path / "fern.json").read_text())
  assert summary["path"] == "interpolate" and summary["size"] == [47, 63]
  assert (tmp_path / "fern.png").stat().st_size > 0
  # Each frame's sources are the views nearest to it; the path starts and ends on input
  # cameras, whose nearest view is themselves.
  rec = formats.read_scene("llff", LLFF / "fern")
  _, path = render_path.camera_path("interpolate", rec.c2w, float(rec.near.min()),
                                    float(rec.far.max()), 3)
  expected = video.frame_sources(path, rec.c2w, summary["num_source_views"])
  assert summary["sources_per_frame"] == expected.tolist()
  for frame in (0, 2):
    np.testing.assert_allclose(path[frame], rec.c2w[expected[frame][0]], atol=1e-5)
  # The fine-tune is a training run from the official weights, on fern at the render size.
  run = tmp_path / "fern.finetune"
  params, config = checkpoint.restore_params(str(run))
  assert config["data"]["train"]["scene"]["scenes"] == "fern"
  assert tuple(config["data"]["example"]["source_size"]) == (47, 63)
  assert config["train"]["num_steps"] == 2
  start = registry.build(config["model"]).import_params(str(official_npz))
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       params, start)
  assert max(jax.tree.leaves(moved)) > 0


def test_bad_input_is_one_line_and_writes_nothing(official_npz, tmp_path):
  out = tmp_path / "x.mp4"
  proc = _run(*_args(official_npz, out, "--scene", "nosuch"))
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "movenerf.tools.render_path: error: --src/--scene: scene folder not found")
  assert list(tmp_path.iterdir()) == []

  def check(**changes):
    given = dict(workdir=None, checkpoint_file=str(official_npz), fmt="llff", src=str(LLFF),
                 scene="fern", path_kind="spiral", frames=3, out=str(out), overwrite=False,
                 downscale=1, num_source_views=0, chunk_size=0, finetune_steps=0, options=[])
    given.update(changes)
    return render_path.check_inputs(**given)

  for changes, message in [
      (dict(checkpoint_file=None), "give one of --workdir"),
      (dict(workdir="runs/x"), "give one of --workdir"),
      (dict(checkpoint_file="w.ckpt"), r"--checkpoint w.ckpt: official GNT weights end in"),
      (dict(fmt="generated"), r"--format 'generated'.*render_view renders them"),
      (dict(fmt="colmap"), r"--format 'colmap': choose one of dtu, "),
      (dict(path_kind="zigzag"), r"--path 'zigzag': choose one of auto, spiral"),
      (dict(path_kind="interpolate", frames=1), r"--frames 1: at least 2"),
      (dict(downscale=0), r"--downscale 0: must be >= 1"),
      (dict(out=str(tmp_path / "x.gif")), r"must end in \.mp4"),
      (dict(options=["factor"]), r"--option=factor: give KEY=VALUE"),
      (dict(options=["facter=8"]), r"--option: .*facter"),
  ]:
    with pytest.raises(UsageError, match=message):
      check(**changes)
  if (LLFF / "fern").exists():
    assert check()[0] == LLFF / "fern"
    out.write_bytes(b"")
    with pytest.raises(UsageError, match=r"exists \(pass --overwrite"):
      check()
