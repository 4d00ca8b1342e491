"""What a trained model's render depends on: the source images, or the absolute pose.

Two probes per held-out view of the evaluation scenes (``python -m
movenerf.tools.zero_shot --probe``):

* **source swap**: the same target camera and source cameras, with the source images
  replaced by those of the example at the same position in another scene of the same
  dataset (for a dataset with a single scene, in a held-out view of a training scene;
  its cameras differ, so the swap also moves the images' viewpoints). Reported: the mean
  absolute change of the rendered RGB (``swap_change``), the PSNR between the two
  renders, and for scale the mean absolute difference of the two scenes' ground-truth
  targets (``gt_change``). ``swap_ratio = mean swap_change / mean
  gt_change``: about 1 for a model that re-renders what the sources show (copying the
  nearest source view scores the ratio of the two scenes' source difference to their
  target difference), 0 for one that maps the pose to an image and ignores the sources.
* **translation**, **rigid** and **similarity**: one random transform of the world
  applied to all cameras of the example (:mod:`movenerf.geometry.rig`): a translation
  with a standard deviation of the rig's size (the mean distance of its cameras from
  their centroid) per axis; that translation after a rotation uniform over SO(3); and
  that rigid transform scaling by ``max_scale`` or its inverse (``near`` / ``far``
  too). Reported: the mean absolute change of the render and the PSNR between the
  renders; ``<probe>_ratio = mean change / mean gt_change`` puts the change on the scale
  of the swap. A model that uses only relative geometry changes by float rounding. (GNT
  is invariant to translations only where it ignores its absolute inputs, the encodings
  of sample positions and view directions; its view-direction differences are world
  vectors, so it is not invariant to rotations.)

PSNRs between renders are capped at ``PSNR_CAP`` dB (an MSE of at most 1e-10).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from movenerf.geometry import rig

PSNR_CAP = 100.0
PROBES = ("swap", "translation", "rigid", "similarity")

Predict = Callable[[dict], dict]


def pair_scenes(examples: Sequence[dict]) -> list[int]:
  """For every example, the index of its partner: the example at the same position (or
  the last one) in the next scene, cyclically, in the order of first appearance.

  Raises:
    ValueError: fewer than two scenes.
  """
  scenes: dict[str, list[int]] = {}
  for i, ex in enumerate(examples):
    scenes.setdefault(ex["scene_id"], []).append(i)
  order = list(scenes)
  if len(order) < 2:
    raise ValueError(f"the source swap needs two scenes, got {len(order)} "
                     f"({', '.join(order) or 'none'})")
  partners = []
  for ex, position in zip(examples, _scene_positions(examples)):
    there = scenes[order[(order.index(ex["scene_id"]) + 1) % len(order)]]
    partners.append(there[min(position, len(there) - 1)])
  return partners


def _scene_positions(examples: Sequence[dict]) -> list[int]:
  """Each example's position among the examples of its scene, in their order."""
  count: dict[str, int] = {}
  positions = []
  for ex in examples:
    count[ex["scene_id"]] = count.get(ex["scene_id"], -1) + 1
    positions.append(count[ex["scene_id"]])
  return positions


def _mean_abs(a, b) -> float:
  return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _psnr(a, b) -> float:
  mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
  return PSNR_CAP if mse <= 10 ** (-PSNR_CAP / 10) else float(-10.0 * np.log10(mse))


def moved(ex: dict, key: jax.Array, rotate: bool = True, max_scale: float = 1.0) -> dict:
  """The example with its whole rig moved by a random translation, then (``rotate``) a
  random rotation, then (``max_scale`` > 1) a scaling by ``max_scale`` or its inverse;
  NumPy arrays."""
  k_rt, k_s = jax.random.split(key)
  poses = np.concatenate([np.asarray(ex["src_c2w"])[:, :3],
                          np.asarray(ex["tgt_c2w"])[None, :3]])
  rotation, shift, _ = rig.random_similarity(k_rt, translation=float(rig.rig_size(poses)))
  if not rotate:
    rotation = np.eye(3, dtype=np.float32)
  scale = float(max_scale) ** (1 if jax.random.bernoulli(k_s) else -1)
  out = rig.transform_example(ex, rotation, shift, scale)
  for k in rig.POSE_KEYS + rig.RANGE_KEYS:
    out[k] = np.asarray(out[k], np.asarray(ex[k]).dtype)
  return out


def partners_from(examples: Sequence[dict], others: Sequence[dict]) -> list[dict]:
  """For every example, the example of ``others`` at its position within its scene (or
  the last one): swap partners from another set of scenes, for a dataset with one scene.

  Raises:
    ValueError: ``others`` is empty or shares a scene with ``examples``.
  """
  if not others:
    raise ValueError("no partner examples for the source swap")
  shared = {ex["scene_id"] for ex in examples} & {ex["scene_id"] for ex in others}
  if shared:
    raise ValueError(f"swap partners from the same scene: {', '.join(sorted(shared))}")
  return [others[min(i, len(others) - 1)] for i in _scene_positions(examples)]


def probe_views(predict: Predict, examples: Sequence[dict], seed: int = 0,
                max_scale: float = 2.0,
                partners: Sequence[dict] | None = None) -> list[dict]:
  """Per example: dataset-free rows with ``scene``, ``view``, ``partner`` (its swap
  partner's scene), ``gt_change``, and ``<probe>_change`` / ``<probe>_psnr`` for each of
  ``PROBES``. ``predict(example) -> {'rgb': [H, W, 3] in [0, 1], ...}``. The swap
  partners are ``partners`` (one per example), else those of :func:`pair_scenes`."""
  if max_scale < 1.0:
    raise ValueError(f"max_scale={max_scale}: must be >= 1")
  examples = list(examples)
  if partners is None:
    partners = [examples[j] for j in pair_scenes(examples)]
  if len(partners) != len(examples):
    raise ValueError(f"{len(partners)} swap partners for {len(examples)} examples")
  key = jax.random.key(seed)
  rows = []
  for i, ex in enumerate(examples):
    other = partners[i]
    base = predict(ex)["rgb"]
    k = jax.random.fold_in(key, i)
    renders = {
        "swap": predict(dict(ex, src_images=other["src_images"]))["rgb"],
        "translation": predict(moved(ex, k, rotate=False))["rgb"],
        "rigid": predict(moved(ex, k))["rgb"],
        "similarity": predict(moved(ex, k, max_scale=max_scale))["rgb"],
    }
    gt = lambda e: np.asarray(e["tgt_image"], np.float32) / 255.0
    row = dict(scene=ex["scene_id"], view=int(ex["view_id"]), partner=other["scene_id"],
               gt_change=_mean_abs(gt(ex), gt(other)))
    for name, image in renders.items():
      row[f"{name}_change"] = _mean_abs(image, base)
      row[f"{name}_psnr"] = _psnr(image, base)
    rows.append(row)
  return rows


def summarize(rows: Sequence[dict]) -> dict:
  """Means over views of every number of :func:`probe_views`, and the ratios
  ``swap_ratio``, ``rigid_ratio`` and ``similarity_ratio`` (mean change / mean
  gt_change)."""
  keys = ["gt_change"] + [f"{p}_{m}" for p in PROBES for m in ("change", "psnr")]
  out = {"num_views": len(rows)}
  out.update({k: float(np.mean([r[k] for r in rows])) for k in keys})
  for p in PROBES:
    out[f"{p}_ratio"] = (out[f"{p}_change"] / out["gt_change"] if out["gt_change"] > 0
                         else None)
  return out


def format_table(results: dict) -> str:
  """Markdown: one row per model of ``{name: summary}``."""
  fmt = lambda v, spec: "" if v is None else format(v, spec)
  lines = ["| model | views | GT change | " +
           " | ".join(f"{p} change | {p} ratio | {p} PSNR" for p in PROBES) + " |",
           "|---|---:|---:|" + "---:|" * (3 * len(PROBES))]
  for name, s in results.items():
    lines.append(
        f"| {name} | {s['num_views']} | {fmt(s['gt_change'], '.4f')} | " +
        " | ".join(f"{fmt(s[p + '_change'], '.2e')} | {fmt(s[p + '_ratio'], '.3f')} | "
                   f"{fmt(s[p + '_psnr'], '.2f')}" for p in PROBES) + " |")
  return "\n".join(lines)
