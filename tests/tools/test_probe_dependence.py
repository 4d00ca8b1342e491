"""Tests of movenerf.tools.probe_dependence and ``zero_shot --probe``: the probe's
arithmetic on renderers whose dependence is known, the rig transform, and GNT (whose
renders follow the sources, and which ignores translations once its absolute inputs are
cut)."""

import jax
import numpy as np
import pytest

from movenerf.configs import gnt
from movenerf.data import pipeline
from movenerf.data import sources as train_data
from movenerf.evaluation import evaluate as evaluation
from movenerf.geometry import rig
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.projection import projection_matrices
from movenerf.models import registry
from movenerf.tools import probe_dependence as pd


def _fake_examples(num_scenes=2, views=2, seed=0):
  """Examples whose target image equals their first source image."""
  rng = np.random.default_rng(seed)
  out = []
  for s in range(num_scenes):
    for v in range(views):
      src = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
      c2w = np.tile(np.eye(4, dtype=np.float32), (4, 1, 1))
      c2w[:, :3, 3] = rng.normal(size=(4, 3))
      out.append(dict(scene_id=f"s{s}", view_id=v, src_images=src, tgt_image=src[0],
                      src_c2w=c2w[:3], tgt_c2w=c2w[3], near=np.float32(1),
                      far=np.float32(3)))
  return out


def test_pose_only_renderer_has_swap_ratio_zero():
  # A renderer that maps the target pose to an image and ignores the sources.
  def predict(ex):
    c2w = np.asarray(ex["tgt_c2w"], np.float64)
    return {"rgb": np.full((8, 8, 3), 0.5 + 0.1 * np.tanh(c2w[:3, 3].sum() + c2w[0, 1]))}

  s = pd.summarize(pd.probe_views(predict, _fake_examples()))
  assert s["num_views"] == 4
  assert s["swap_change"] == 0.0 and s["swap_ratio"] == 0.0
  assert s["swap_psnr"] == pd.PSNR_CAP
  assert s["rigid_change"] > 1e-3 and s["translation_change"] > 1e-3


def test_copying_renderer_has_swap_ratio_one_and_no_rigid_change():
  # Copying the first source = re-rendering it: the render changes as much as the
  # ground truth between scenes (here target = first source) and not under the rig.
  exs = _fake_examples()
  rows = pd.probe_views(evaluation.nearest_view, exs)
  s = pd.summarize(rows)
  assert s["swap_ratio"] == pytest.approx(1.0, abs=1e-6)
  gt = [np.mean(np.abs(exs[i]["tgt_image"] / 255.0 - exs[j]["tgt_image"] / 255.0))
        for i, j in enumerate([2, 3, 0, 1])]
  np.testing.assert_allclose([r["gt_change"] for r in rows], gt, rtol=1e-6)
  assert [r["partner"] for r in rows] == ["s1", "s1", "s0", "s0"]
  for p in ("translation", "rigid", "similarity"):
    assert s[f"{p}_change"] == 0.0 and s[f"{p}_psnr"] == pd.PSNR_CAP


def test_swap_needs_two_scenes():
  with pytest.raises(ValueError, match="the source swap needs two scenes, got 1"):
    pd.probe_views(evaluation.nearest_view, _fake_examples(num_scenes=1))


def test_partners_from_other_scenes_for_a_single_scene():
  exs = _fake_examples(num_scenes=1, views=3)
  others = [dict(ex, scene_id="t0") for ex in _fake_examples(num_scenes=1, views=2, seed=1)]
  partners = pd.partners_from(exs, others)
  assert [p is o for p, o in zip(partners, [others[0], others[1], others[1]])] == [True] * 3
  s = pd.summarize(pd.probe_views(evaluation.nearest_view, exs, partners=partners))
  assert s["swap_ratio"] == pytest.approx(1.0, abs=1e-6)  # copying follows the swap
  with pytest.raises(ValueError, match="swap partners from the same scene: s0"):
    pd.partners_from(exs, exs)
  with pytest.raises(ValueError, match="2 swap partners for 3 examples"):
    pd.probe_views(evaluation.nearest_view, exs, partners=others)


def test_rig_transform_keeps_relative_geometry():
  rng = np.random.default_rng(1)
  c2w = np.tile(np.eye(4, dtype=np.float32), (3, 1, 1))
  c2w[:, :3, :3] = np.linalg.qr(rng.normal(size=(3, 3, 3)))[0] * np.array([1, 1, -1])
  c2w[:, :3, :3] *= np.sign(np.linalg.det(c2w[:, :3, :3]))[:, None, None]
  c2w[:, :3, 3] = rng.normal(size=(3, 3)) * 3
  rotation, shift, scale = rig.random_similarity(jax.random.key(3), 2.0, max_scale=2.0)
  scale = float(scale)
  assert 0.5 <= scale <= 2.0 and scale != 1.0
  moved = np.asarray(rig.transform_c2w(c2w, rotation, shift, scale), np.float64)
  np.testing.assert_allclose(np.asarray(rotation) @ np.asarray(rotation).T, np.eye(3),
                             atol=1e-6)
  # Relative poses: same rotation, baselines scaled by s.
  rel = lambda m, i, j: np.linalg.inv(m[i]) @ m[j]
  for i, j in ((0, 1), (1, 2)):
    a, b = rel(c2w.astype(np.float64), i, j), rel(moved, i, j)
    np.testing.assert_allclose(b[:3, :3], a[:3, :3], atol=1e-5)
    np.testing.assert_allclose(b[:3, 3], scale * a[:3, 3], atol=1e-4)
  # A moved point projects to the same pixels in every moved camera, s times deeper.
  k = np.array([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]], np.float32)
  cams = Cameras(np.tile(k, (3, 1, 1)), c2w, 16, 16)
  cams2 = Cameras(np.tile(k, (3, 1, 1)), moved.astype(np.float32), 16, 16)
  point = np.array([0.3, -0.2, 0.5, 1.0])
  point2 = np.append(scale * np.asarray(rotation) @ point[:3] + np.asarray(shift), 1.0)
  proj = np.asarray(projection_matrices(cams), np.float64) @ point
  proj2 = np.asarray(projection_matrices(cams2), np.float64) @ point2
  np.testing.assert_allclose(proj2[:, :2] / proj2[:, 2:], proj[:, :2] / proj[:, 2:],
                             atol=2e-3)
  np.testing.assert_allclose(proj2[:, 2], scale * proj[:, 2], rtol=1e-4)
  ex = dict(src_c2w=c2w, tgt_c2w=c2w[0], near=np.float32(2), far=np.float32(6), other=1)
  out = rig.transform_example(ex, rotation, shift, scale)
  np.testing.assert_allclose([out["near"], out["far"]], [2 * scale, 6 * scale], rtol=1e-6)
  assert out["other"] == 1


def _relative_gnt(params, width):
  """GNT parameters with its absolute inputs cut: the rows of the q-MLPs that read the
  position / view-direction encodings, and the rows of the view attention's pos_fc that
  read the world direction difference (its dot product stays)."""
  params = jax.tree.map(np.array, params)
  for net in params.values():
    for name, sub in net.items():
      if name.startswith("q_fc_"):
        sub["fc1"]["kernel"][width:] = 0.0
      if name.startswith("view_trans_"):
        sub["attn"]["pos_fc"]["fc1"]["kernel"][:3] = 0.0
  return params


@pytest.fixture(scope="module")
def gnt_probe():
  """Random tiny GNT weights and the held-out views of two generated scenes."""
  c = gnt.get_config("tiny")
  family = registry.build(c.model)
  params = family.init_params(jax.random.key(0, impl="rbg"))
  source = train_data.make_source("unseen", c.data.eval.unseen)
  examples = list(pipeline.eval_examples(source, 4, max_views_per_scene=1))
  return family, params, examples, c.model.width


def test_gnt_follows_the_sources_and_ignores_the_rig_without_absolute_inputs(gnt_probe):
  family, params, examples, width = gnt_probe
  relative = _relative_gnt(params, width)
  predict = lambda ex: evaluation.render_example(family, {"params": relative}, ex, 1024)
  s = pd.summarize(pd.probe_views(predict, examples))
  # Another scene's sources change the render as much as the scenes differ.
  assert s["swap_ratio"] > 0.5 and s["swap_psnr"] < 20
  # Only relative geometry left: invariant to the rig up to float rounding.
  for p in ("translation", "rigid", "similarity"):
    assert s[f"{p}_change"] < 1e-4, (p, s)
  # The full model reads world positions: it changes under a translation.
  full = lambda ex: evaluation.render_example(family, {"params": params}, ex, 1024)
  rows = pd.probe_views(full, examples[:1] + examples[-1:])
  assert pd.summarize(rows)["translation_change"] > 1e-2
