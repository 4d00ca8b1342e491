"""Tests of movenerf.tools.zero_shot: the comparison table of runs against the
nearest-source-view baseline, on a short Decoupling-NeRF run."""

import json

import imageio.v3 as imageio
import numpy as np
import pytest

from movenerf.data import sources as train_data
from movenerf.evaluation import visualize
from movenerf.tools import zero_shot

# One worker runs every test of the shared decoupled_run fixture (conftest.py).
pytestmark = pytest.mark.xdist_group("decoupled_run")


@pytest.fixture
def trained(decoupled_run):
  """A 6-step Decoupling-NeRF run, then resumed to 8 steps; returns (workdir, first
  result, resumed). One run per session (tests/conftest.py), shared with
  tests/models/decoupled/test_family.py."""
  return decoupled_run


def test_zero_shot_table(trained, tmp_path):
  workdir, _, _ = trained
  results = zero_shot.compare([("A", str(workdir)), ("B", str(workdir))], str(tmp_path),
                              seen_scenes=1, verbose=False)
  assert list(results) == [zero_shot.BASELINE, "A", "B"]
  # The same checkpoint twice scores identically; the baseline differs from both.
  for group in ("unseen", "seen"):
    assert results["A"][group] == results["B"][group]
    assert results["A"][group]["num_views"] == 1
    assert results[zero_shot.BASELINE][group]["psnr"] != results["A"][group]["psnr"]
    assert 0 < results["A"][group]["lpips_vgg"] < 1
  assert results["A"]["budget"]["updates"] == 8
  table = (tmp_path / "zero_shot.md").read_text()
  assert "| nearest source view |" in table and "| A | 8 |" in table
  assert "| unseen PSNR | unseen SSIM | unseen LPIPS-vgg | seen PSNR |" in table
  sheets = list((tmp_path / "sheets").glob("*.png"))
  assert len(sheets) == 2  # one unseen view, one seen view
  # Labelled panels: ground truth, the baseline, A side by side, a line of text above each.
  sheet = imageio.imread(sheets[0])[..., :3].astype(np.float32) / 255.0
  label_band = sheet[:visualize.TEXT_SCALE * 13]
  assert label_band.min() < 0.5 and sheet.shape[1] >= 3 * sheet.shape[0] // 2


def test_zero_shot_probe(trained, tmp_path, monkeypatch):
  workdir, _, _ = trained
  load = zero_shot.load_run

  def two_eval_scenes(path):
    config, model, params, budget = load(path)
    config.data.eval.unseen.options.num_scenes = 2
    return config, model, params, budget

  # The run evaluates on one scene: its swap partners are held-out views of the first
  # training scene.
  single = zero_shot.probe([("A", str(workdir))], str(tmp_path / "one"), verbose=False)
  config = load(str(workdir))[0]
  name = sorted(config.data.train.keys())[0]
  first = train_data.make_source(name, config.data.train[name]).scenes("test")[0].scene_id
  views = single["A"]["views"]
  assert [v["partner"] for v in views] == [first] and views[0]["scene"] != first
  assert single["A"]["gt_change"] > 0 and single["A"]["swap_change"] > 0
  monkeypatch.setattr(zero_shot, "load_run", two_eval_scenes)
  results = zero_shot.probe([("A", str(workdir)), ("B", str(workdir))], str(tmp_path),
                            seed=1, verbose=False)
  assert list(results) == [zero_shot.BASELINE, "A", "B"]
  a, b, base = results["A"], results["B"], results[zero_shot.BASELINE]
  assert a["num_views"] == 2 and [v["partner"] for v in a["views"]] == [
      v["scene"] for v in reversed(a["views"])]
  # The same checkpoint and seed probe identically; copying a source never moves.
  assert {k: v for k, v in a.items() if k != "views"} == {
      k: v for k, v in b.items() if k != "views"}
  assert base["rigid_change"] == 0.0 and base["gt_change"] == a["gt_change"] > 0
  mean = lambda key: sum(v[key] for v in a["views"]) / 2
  assert a["swap_ratio"] == pytest.approx(mean("swap_change") / mean("gt_change"))
  table = (tmp_path / "probe.md").read_text()
  assert "| nearest source view | 2 |" in table and "| swap change | swap ratio |" in table
  stored = json.loads((tmp_path / "probe.json").read_text())
  assert stored["seed"] == 1 and stored["models"]["A"]["swap_ratio"] == a["swap_ratio"]
