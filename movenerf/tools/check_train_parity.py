"""Parity of movenerf's training with the official GNT's, on a training-vector file.

  python -m movenerf.tools.check_parity --vectors ../shared/reference/gnt_train_vectors.npz

A training file (``gnt_train_vectors.npz`` + its JSON sidecar, recognised by its
``step1/loss``) holds a few steps of the official training: the initial parameters
``params0/<net>/<torch name>``, the scene, each step's pixels, colours, loss, coarse and
fine MSE and learning rates (``step<k>/...``), the first step's gradients of the
transformer nets (``grads1/...``), their parameters after the last step
(``params_final/...``), and the final feature maps and a render of fixed rays
(``final/*``). The JSON names the run: sizes, depth and width, a single or a separate
fine net, samples, inverse depth, deterministic sampling, learning rates and their
StepLR decay (Adam's betas and epsilon are PyTorch's defaults unless it names them as
``betas`` and ``eps``).

:func:`train_config` turns that into a movenerf config, the keys a user sets
(``model.*``, ``optim.lr_feature``, ``optim.lr_transformer``, ``optim.decay_steps``,
``optim.decay_rate``, ``optim.eps`` ...); the check imports ``params0`` with the official
checkpoint importer and runs movenerf's own training on the stored rays of each step:
``optim.make_optimizer``, ``state.create_state`` and ``step.make_train_step``, as
``movenerf.train`` does.

What it compares, each row against its own tolerance (the figures in parentheses are
measured on ``gnt_train_vectors.npz`` in float32; the README's "Parity with the official
GNT" has them all):

- ``step1/loss``, ``step1/mse_coarse``, ``step1/mse_fine``: relative difference, 1e-5.
  The first step runs the initial weights: the forward pass, float32 rounding (4e-7).
- ``step<k>/...`` for k > 1: relative difference, 1e-2. After an update the feature
  CNN's trajectory is chaotic (below): movenerf's own float32 programs spread by ~5e-4
  (1.6e-3 to the reference); one step of schedule offset moves these by 5e-2 to 0.3.
- ``step<k>/lr_transformer``, ``step<k>/lr_feature``: relative difference, 1e-6. The
  learning rate of update k: the optimiser's schedule at the step count in its state.
- ``grads1/<net>``: relative L2 difference, 1e-3. The first update's gradient of each
  transformer net, read back from Adam's first moment; float32 rounding (5e-5, 1e-4).
- ``params_final/<net>``: relative L2 difference of the update (final minus initial
  parameters), on the entries whose first gradient is at least 1% of the net's RMS
  gradient (~70%), 2e-2. Float32 gives 4e-3; one step of schedule offset 0.17.
- ``params_final/<net>:eps``: |1 - the ratio of mean update sizes| on the entries whose
  first gradient lies in [eps / 10, 100 eps), where Adam's epsilon sets the size of a
  step (9% to 99% of the learning rate), 0.05. Float32 gives 0.004; epsilon 10x too
  large 0.17.
- ``final/featmap_coarse``, ``final/featmap_fine``: relative L2 difference, 0.5 (0.31).
  The run moves the maps 1.1 from their start; half the CNN's update lands 0.6 away.
- ``final/rgb_coarse``, ``final/rgb_fine``: max absolute difference of the render of
  the fixed rays, 2e-2 (8e-3); one step of schedule offset moves it by 0.2.

Why the later steps and the feature maps are loose: Adam's first steps move every weight
by about its learning rate whatever the size of its gradient, so a weight whose gradient
is at the level of rounding moves by a full step in a direction rounding decides. The
feature CNN's gradient reaches it through the transformers' input gradients and carries
~3e-3 relative rounding in float32 (against the same computation in float64); after the
first update it is so sensitive that two float32 programs of movenerf's own step (the
jitted step and the host loop over slices) give feature-CNN gradients 7% apart at step 2
and 84% at step 3, and final feature maps 0.15 apart. The transformer nets, whose
gradients are well-conditioned, are compared tightly; the feature maps coarsely.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import json
import os
from typing import Any, Mapping, Sequence

import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from movenerf import cli, sharding
from movenerf.configs import base, gnt
from movenerf.data import pipeline
from movenerf.geometry import cameras as cameras_lib
from movenerf.geometry.epipolar import SourceViews
from movenerf.geometry.rays import flat_index_to_pixels, pixel_rays
from movenerf.models import registry
from movenerf.models.gnt.official_checkpoint import (NETWORKS, convert,
                                                     export_official_arrays, infer_config)
from movenerf.models.gnt.render import encode_sources, render_rays_chunked
from movenerf.tools.parity_report import Comparison, ParityReport
from movenerf.training import optim
from movenerf.training import state as train_state
from movenerf.training import step as train_step

# Tolerances: see the module docstring.
FIRST_STEP_RTOL = 1e-5
LATER_STEP_RTOL = 1e-2
LR_RTOL = 1e-6
GRAD_RTOL = 1e-3
UPDATE_RTOL = 2e-2
EPS_SIZE_TOL = 0.05
FEATURE_RTOL = 0.5
RENDER_ATOL = 2e-2
# Entries whose first gradient is at least this share of their net's RMS gradient are
# "well-determined"; those in [eps * EPS_BAND[0], eps * EPS_BAND[1]) are where Adam's
# epsilon sets the first step's size (from 9% to 99% of the learning rate).
WELL_DETERMINED = 1e-2
EPS_BAND = (0.1, 100.0)

# PyTorch's Adam defaults (the official GNT does not change them).
TORCH_ADAM = dict(b1=0.9, b2=0.999, eps=1e-8)
# JSON keys the check needs.
REQUIRED_META = ("trans_depth", "netwidth", "n_views", "H", "W", "n_rays", "n_samples",
                 "n_importance", "single_net", "inv_uniform", "steps", "decay_steps",
                 "decay", "lr_gnt", "lr_feature", "det")
# Learning-rate groups: movenerf's name -> the file's.
LR_GROUPS = {"transformer": "lr_gnt", "feature": "lr_feature"}


def is_train_vectors(path: str) -> bool:
  """True for a training-vector file (``gnt_train_vectors.npz`` format)."""
  with np.load(path) as data:
    return "step1/loss" in data.files


def load(path: str) -> tuple[dict[str, np.ndarray], dict]:
  """(arrays, JSON sidecar) of a training file.

  Raises:
    FileNotFoundError: the file or its sidecar is missing.
    ValueError: the sidecar lacks a key the check needs, or the arrays disagree with it.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"reference vectors not found: {path}")
  sidecar = os.path.splitext(path)[0] + ".json"
  if not os.path.exists(sidecar):
    raise FileNotFoundError(f"a training file needs its JSON sidecar: {sidecar} not found")
  with np.load(path) as data:
    arrays = {k: np.asarray(data[k]) for k in data.files}
  with open(sidecar) as f:
    meta = json.load(f)
  missing = [k for k in REQUIRED_META if k not in meta]
  if missing:
    raise ValueError(f"{sidecar} lacks {missing}")
  if not meta["det"]:
    raise ValueError(f"{sidecar}: det={meta['det']}: a run with random sampling cannot be "
                     "replayed (the official random numbers are not stored)")
  if not str(meta.get("dropout", "off")).startswith("off"):
    raise ValueError(f"{sidecar}: dropout={meta['dropout']!r}: a run with dropout cannot be "
                     "replayed")
  v, h, w = int(meta["n_views"]), int(meta["H"]), int(meta["W"])
  expected = {"src_rgbs": (1, v, h, w, 3), "src_cameras": (1, v, 34), "query_camera": (1, 34),
              "depth_range": (1, 2)}
  for k in range(1, int(meta["steps"]) + 1):
    expected.update({f"step{k}/pixel_inds": (int(meta["n_rays"]),),
                     f"step{k}/rgb": (int(meta["n_rays"]), 3), f"step{k}/loss": ()})
  wrong = [f"{k}: {arrays[k].shape if k in arrays else 'missing'} (want {s})"
           for k, s in expected.items() if k not in arrays or arrays[k].shape != s]
  if "depth_range" in meta and "depth_range" in arrays and not np.allclose(
      arrays["depth_range"][0], meta["depth_range"]):
    wrong.append(f"depth_range: {arrays['depth_range'][0].tolist()} (want {meta['depth_range']})")
  if wrong:
    raise ValueError(f"{path} does not match its sidecar: " + "; ".join(wrong))
  return arrays, meta


def network_arrays(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """``<prefix>/<net>/<torch name>`` -> ``<net>/<torch name>``."""
  n = len(prefix) + 1
  return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}


def train_config(meta: Mapping[str, Any],
                 params0: Mapping[str, np.ndarray]) -> ml_collections.ConfigDict:
  """The movenerf config of the official run a training file's sidecar describes.

  The architecture the sidecar does not name (feature channels, FFN width) is read off
  the parameters; everything it names comes from it.
  """
  model = infer_config(
      params0, width=int(meta["netwidth"]), depth=int(meta["trans_depth"]),
      single_net=bool(meta["single_net"]), num_samples=int(meta["n_samples"]),
      num_importance=int(meta["n_importance"]), inverse_depth=bool(meta["inv_uniform"]),
      deterministic_sampling=bool(meta["det"]), dropout=0.0)
  config = gnt.get_config("reference")
  with config.unlocked():
    config.model = base.from_dataclass(model)
  config.data.example.update(num_source_views=int(meta["n_views"]),
                             rays_per_example=int(meta["n_rays"]))
  config.data.global_batch = 1
  betas = meta.get("betas", (TORCH_ADAM["b1"], TORCH_ADAM["b2"]))
  config.optim.update(
      name="adam", lr_feature=float(meta["lr_feature"]), lr_transformer=float(meta["lr_gnt"]),
      decay_steps=int(meta["decay_steps"]), decay_rate=float(meta["decay"]),
      b1=float(betas[0]), b2=float(betas[1]), eps=float(meta.get("eps", TORCH_ADAM["eps"])),
      clip_norm=0.0, accumulate_steps=1)
  config.loss.update(coarse_weight=1.0, fine_weight=1.0, diversity_weight=0.0,
                     consistency_weight=0.0)
  config.train.num_steps = int(meta["steps"])
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """``KEY=VALUE`` settings (``optim.eps=1e-7``) on ``config``, values read as Python
  literals (else strings).

  Raises:
    ValueError: a setting without ``=`` (:func:`movenerf.cli.key_values`) or for a key
      the config lacks.
  """
  for key, text in cli.key_values(overrides, "--set").items():
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *path, leaf = key.split(".")
    node = config
    for part in path:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ValueError(f"--set {key}={text}: the config has no key {key!r}")
    node[leaf] = value


def _states(opt_state, kind) -> dict[str, Any]:
  """{learning-rate group: its optimiser state of type ``kind``}."""
  out = {}
  leaves = jax.tree_util.tree_flatten_with_path(
      opt_state, is_leaf=lambda x: isinstance(x, kind))[0]
  for path, leaf in leaves:
    groups = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)
              and p.key in LR_GROUPS]
    if isinstance(leaf, kind) and groups:
      out[groups[-1]] = leaf
  return out


def shift_schedule(opt_state, offset: int):
  """``opt_state`` with every learning-rate schedule ``offset`` steps ahead (a mistake
  the check injects to show it catches it; Adam's bias correction keeps its count)."""
  return jax.tree.map(
      lambda s: s._replace(count=s.count + offset)
      if isinstance(s, optax.ScaleByScheduleState) else s,
      opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByScheduleState))


def applied_learning_rates(optim_cfg, opt_state) -> dict[str, float]:
  """The learning rate of each group that the next update applies: the schedule of
  ``optim.learning_rate_fns`` at the step count in ``opt_state``."""
  fns = optim.learning_rate_fns(optim_cfg)
  counts = _states(opt_state, optax.ScaleByScheduleState)
  return {g: float(fns[g](int(counts[g].count))) for g in fns if g in counts}


def first_gradients(opt_state, params, b1: float):
  """The gradient of the first update, read back from Adam's first moment (after one
  update ``mu = (1 - b1) g``); a tree like ``params``."""
  flat = {}
  for state in _states(opt_state, optax.ScaleByAdamState).values():
    for path, leaf in jax.tree_util.tree_flatten_with_path(state.mu)[0]:
      flat[tuple(p.key for p in path)] = np.asarray(leaf, np.float64) / (1.0 - b1)
  want = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: flat[k] for k in want})


def _example(arrays, k: int, width: int, src_cams, query_cam) -> dict[str, np.ndarray]:
  """Step ``k``'s rays as one training example (the layout of ``data.pipeline``)."""
  rgbs = arrays["src_rgbs"][0]
  images = np.round(rgbs * 255.0)
  if not np.array_equal((images / 255.0).astype(np.float32), rgbs.astype(np.float32)):
    raise ValueError("src_rgbs are not 8-bit colours (k / 255): movenerf's examples hold "
                     "uint8 images")
  inds = arrays[f"step{k}/pixel_inds"]
  near, far = (np.float32(x) for x in arrays["depth_range"][0])
  return {"src_images": images.astype(np.uint8),
          "src_intrinsics": np.asarray(src_cams.intrinsics, np.float32),
          "src_c2w": np.asarray(src_cams.c2w, np.float32),
          "tgt_intrinsics": np.asarray(query_cam.intrinsics, np.float32),
          "tgt_c2w": np.asarray(query_cam.c2w, np.float32),
          "pixels": np.stack([inds % width, inds // width], -1).astype(np.int32),
          "rgb": arrays[f"step{k}/rgb"].astype(np.float32),
          "pairs": np.zeros((0, 2), np.int32), "near": near, "far": far}


def _relative(a: float, b: float) -> float:
  return abs(a - b) / max(abs(b), 1e-12)


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _flat(tree: Mapping[str, np.ndarray], keys) -> np.ndarray:
  return np.concatenate([np.asarray(tree[k], np.float64).ravel() for k in keys])


@dataclasses.dataclass
class _Programs:
  """movenerf's training of one config: the model family, optimiser, mesh, the train step
  (``step(state shardings)``) and the feature encoder (``encode(params, images=...)``)."""

  config: ml_collections.ConfigDict
  image_hw: tuple[int, int]
  family: Any
  tx: Any
  mesh: Any
  encode: Any
  _step: Any = None

  def step(self, shardings):
    if self._step is None:
      self._step = train_step.make_train_step(
          self.family, self.tx, self.config.loss, self.image_hw, self.mesh, shardings,
          sub_chunk=self.config.train.sub_chunk)
    return self._step


# Built once per process and config: a replay that differs only in its optimiser state
# (an injected schedule offset) reuses the compiled step.
_PROGRAMS: dict[str, _Programs] = {}


def _programs(config: ml_collections.ConfigDict, image_hw: tuple[int, int]) -> _Programs:
  key = config.to_json_best_effort(sort_keys=True) + repr(image_hw)
  if key not in _PROGRAMS:
    family = registry.build(config.model)
    model = family.module
    _PROGRAMS[key] = _Programs(
        config=copy.deepcopy(config), image_hw=image_hw, family=family,
        tx=optim.make_optimizer(config.optim),
        mesh=sharding.make_mesh(expert=config.train.mesh_expert),
        encode=jax.jit(lambda p, images: encode_sources(model, {"params": p}, images)))
  return _PROGRAMS[key]


def run_train_parity(path: str, overrides: Sequence[str] = (),
                     schedule_offset: int = 0) -> ParityReport:
  """Replays a training file with movenerf's train step and compares what it stores.

  ``overrides`` (``KEY=VALUE``) and ``schedule_offset`` inject mistakes into the config
  and the optimiser state built from the file, to show that the check catches them.
  """
  arrays, meta = load(path)
  params0 = network_arrays(arrays, "params0")
  config = train_config(meta, params0)
  official_eps = float(config.optim.eps)
  apply_overrides(config, overrides)
  height, width = int(meta["H"]), int(meta["W"])
  programs = _programs(config, (height, width))
  family = programs.family
  params = convert(params0, family.config)["params"]
  state, shardings = train_state.create_state(params, programs.tx, config.seed, programs.mesh)
  if schedule_offset:
    state = state.replace(opt_state=shift_schedule(state.opt_state, schedule_offset))
  step_fn = programs.step(shardings)
  src_cams = cameras_lib.from_gnt34(arrays["src_cameras"][0])
  query_cam = cameras_lib.from_gnt34(arrays["query_camera"][0])
  images = jnp.asarray(arrays["src_rgbs"][0], jnp.float32)
  encode = functools.partial(programs.encode, images=images)
  start = jax.device_get(encode(state.params))

  rows: list[Comparison] = []
  metric_keys = ["loss", "mse_coarse"] + (["mse_fine"] if family.config.num_importance else [])
  grads1 = None
  mesh = programs.mesh
  with jax.set_mesh(mesh):
    for k in range(1, int(meta["steps"]) + 1):
      rates = applied_learning_rates(config.optim, state.opt_state)
      example = _example(arrays, k, width, src_cams, query_cam)
      batch = pipeline.to_device_batch({n: v[None] for n, v in example.items()}, mesh)
      state, metrics = step_fn(state, batch)
      metrics = jax.device_get(metrics)
      rtol = FIRST_STEP_RTOL if k == 1 else LATER_STEP_RTOL
      for name in metric_keys:
        key = f"step{k}/{name}"
        if key in arrays:
          ours, ref = float(metrics[name]), float(arrays[key])
          rows.append(Comparison(key, _relative(ours, ref), f"{ours:.6f} vs {ref:.6f}, relative",
                                 rtol))
      for group, name in LR_GROUPS.items():
        key = f"step{k}/{name}"
        if key in arrays and group in rates:
          ref = float(arrays[key])
          rows.append(Comparison(f"step{k}/lr_{group}", _relative(rates[group], ref),
                                 f"{rates[group]:g} vs {ref:g} ({name}), relative", LR_RTOL))
      if k == 1:
        grads1 = first_gradients(state.opt_state, state.params, config.optim.b1)
  final = jax.device_get(state.params)

  ours_g = export_official_arrays({"params": grads1})
  ours_p = export_official_arrays({"params": final})
  for net in NETWORKS:
    keys = sorted(k[len("grads1/"):] for k in arrays if k.startswith(f"grads1/{net}/"))
    if not keys:
      continue
    g_ref, g = _flat(network_arrays(arrays, "grads1"), keys), _flat(ours_g, keys)
    rows.append(Comparison(f"grads1/{net}", _rel_l2(g, g_ref),
                           f"relative L2; max |diff| / max |ref| "
                           f"{np.max(np.abs(g - g_ref)) / np.max(np.abs(g_ref)):.1e}", GRAD_RTOL))
    if not all(f"params_final/{k}" in arrays for k in keys):
      continue
    p0 = _flat(params0, keys)
    step_ref = _flat(network_arrays(arrays, "params_final"), keys) - p0
    step = _flat(ours_p, keys) - p0
    size = np.abs(g_ref)
    well = size >= WELL_DETERMINED * np.sqrt(np.mean(g_ref ** 2))
    rows.append(Comparison(f"params_final/{net}", _rel_l2(step[well], step_ref[well]),
                           f"relative L2 of the update, {well.mean():.0%} of entries (first "
                           f"gradient >= {WELL_DETERMINED:g} x RMS); all entries "
                           f"{_rel_l2(step, step_ref):.1e}", UPDATE_RTOL))
    band = (size >= EPS_BAND[0] * official_eps) & (size < EPS_BAND[1] * official_eps)
    if band.any():
      ratio = np.mean(np.abs(step[band])) / np.mean(np.abs(step_ref[band]))
      rows.append(Comparison(f"params_final/{net}:eps", abs(1.0 - ratio),
                             f"|1 - mean update size ratio| {ratio:.3f}, {band.sum()} entries "
                             f"with first gradient in [{EPS_BAND[0] * official_eps:g}, "
                             f"{EPS_BAND[1] * official_eps:g})", EPS_SIZE_TOL))
    lr = float(config.optim.lr_transformer)
    rows.append(Comparison(f"params_final/{net}:max", float(np.max(np.abs(step - step_ref))),
                           f"max |diff| ({np.max(np.abs(step - step_ref)) / lr:.1f} x lr_gnt), "
                           "for information"))

  rows += _final_outputs(arrays, family, state.params, encode, start,
                         SourceViews(images, src_cams), query_cam)
  return ParityReport(rows, LATER_STEP_RTOL, final_keys=(), what="training quantities",
                      header="difference")


def _final_outputs(arrays, family, final, encode, start, sources: SourceViews,
                   query_cam) -> list[Comparison]:
  """Final feature maps (and how far the run moved them from ``start``, the initial
  weights' maps) and the render of the stored fixed rays; ``final``: the parameters on
  the device, as the train step left them (the encoder compiled for them)."""
  rows = []
  featmaps = encode(final)
  to_nchw = lambda f: np.transpose(np.asarray(f, np.float64), (0, 3, 1, 2))
  for i, name in enumerate(("coarse", "fine")):
    key = f"final/featmap_{name}"
    if key in arrays:
      ref = arrays[key].astype(np.float64)
      moved = _rel_l2(to_nchw(start[i]), ref)
      rows.append(Comparison(key, _rel_l2(to_nchw(featmaps[i]), ref),
                             f"relative L2; the run moved them {moved:.2f}", FEATURE_RTOL))
  if "final/eval_pixel_inds" in arrays:
    rays = pixel_rays(query_cam, flat_index_to_pixels(
        jnp.asarray(arrays["final/eval_pixel_inds"]), query_cam.width))
    near, far = (float(x) for x in arrays["depth_range"][0])
    out = render_rays_chunked(family.module, {"params": final}, rays, query_cam, sources,
                              near, far, chunk_size=rays.num_rays, featmaps=featmaps,
                              sub_chunk=0)
    fine = family.config.num_importance > 0
    renders = {"final/rgb_coarse": out["rgb_coarse"] if fine else out["rgb"]}
    if fine:
      renders["final/rgb_fine"] = out["rgb"]
    for key, value in renders.items():
      if key in arrays:
        rows.append(Comparison(key, float(np.max(np.abs(value - arrays[key]))), "max abs",
                               RENDER_ATOL))
  return rows
