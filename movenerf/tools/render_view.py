r"""Renders one held-out view of a generated scene (``config.render_view``) with GNT.

  python -m movenerf.tools.render_view --config experiments/gnt.py:tiny --workdir runs/view
  python -m movenerf.tools.render_view --config experiments/gnt.py:tiny --workdir runs/view \
      --config.init_from=runs/demo          # a trained movenerf run

Weights: ``--config.checkpoint`` (official GNT ``.pth`` / converted ``.npz``), else
``--config.init_from`` (a movenerf training run), else random initialisation (a render
that shows the pipeline, not a trained result). Writes to the workdir:
  render.png   prediction | ground truth
  depth.png    predicted depth | ground-truth depth (same colour scale)
  sources.png  the source views
  experts.png  (GNT-MoVE) per MoE layer, the expert that wins each pixel
  metrics.json PSNR, rays/s, timings
"""

from __future__ import annotations

import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from movenerf import storage
from movenerf.evaluation import visualize
from movenerf.image import metrics
from movenerf.moe import expert_map
from movenerf.geometry.cameras import Cameras
from movenerf.data import procedural, samplers
from movenerf.geometry.epipolar import SourceViews
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables
from movenerf.models.gnt.official_checkpoint import load_official_checkpoint
from movenerf.models.gnt.render import encode_sources, render_image
from movenerf.training import checkpoint

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/gnt.py:tiny",
                                          "experiment config file:variant", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory", required=True)


def build_model(config) -> tuple[GNTModel, dict]:
  """Model and variables from the config (official checkpoint, a run, or random init)."""
  model_cfg = GNTConfig.from_dict(config.model.to_dict())
  if config.checkpoint:
    sampling = {k: getattr(model_cfg, k) for k in
                ("num_samples", "num_importance", "inverse_depth", "dtype", "feature_dtype")}
    model_cfg, variables = load_official_checkpoint(config.checkpoint, **sampling)
    return GNTModel(model_cfg), variables
  model = GNTModel(model_cfg)
  if config.init_from:
    params, _ = checkpoint.restore_params(config.init_from)
    return model, {"params": jax.tree.map(np.asarray, params)}
  return model, init_variables(model, jax.random.PRNGKey(config.seed))


def run(config, workdir: str) -> dict:
  """Generates the scene, renders the target view, writes images and metrics."""
  data = config.render_view
  num_source_views = config.data.example.num_source_views
  if num_source_views < 1:
    raise ValueError("data.example.num_source_views must be >= 1")
  size = data.image_size
  t0 = time.perf_counter()
  scene = procedural.make_scene(data.scene_seed, data.kind, num_source_views + 1, size, size)
  t_data = time.perf_counter() - t0
  src = samplers.select_source_views(scene.c2w[data.target_view], scene.c2w,
                                     num_source_views, exclude=[data.target_view])
  cams = lambda idx: Cameras(jnp.asarray(scene.intrinsics[idx]), jnp.asarray(scene.c2w[idx]),
                             size, size)
  sources = SourceViews(jnp.asarray(scene.images[src], jnp.float32) / 255.0, cams(src))
  target = cams(data.target_view)

  model, variables = build_model(config)
  print(f"scene {scene.scene_id}: {len(src)} source views of {size}x{size}, "
        f"depth range [{scene.near:.2f}, {scene.far:.2f}]; model {model.config}")
  # Compile once on one chunk so that the timing below is the steady-state rate.
  t0 = time.perf_counter()
  featmaps = encode_sources(model, variables, sources.images)
  jax.block_until_ready(featmaps)
  t_compile = time.perf_counter() - t0
  t0 = time.perf_counter()
  out = render_image(model, variables, target, sources, scene.near, scene.far,
                     config.render.chunk_size, verbose=True)
  t_render = time.perf_counter() - t0
  gt = scene.images[data.target_view].astype(np.float32) / 255.0
  gt_depth = np.where(scene.masks[data.target_view], scene.depths[data.target_view], np.nan)

  visualize.save_png(storage.join(workdir, "render.png"),
                     visualize.contact_sheet([out["rgb"], gt], columns=2))
  depth_pair = [visualize.colorize(d, scene.near, scene.far) for d in (out["depth"], gt_depth)]
  visualize.save_png(storage.join(workdir, "depth.png"),
                     visualize.contact_sheet(depth_pair, columns=2))
  if "experts" in out:  # [H, W, L, E] -> one expert-selection map per MoE layer
    maps = [expert_map.colorize_experts(out["experts"][:, :, l])
            for l in range(out["experts"].shape[2])]
    visualize.save_png(storage.join(workdir, "experts.png"),
                       visualize.contact_sheet(maps, columns=len(maps)))
  visualize.save_png(storage.join(workdir, "sources.png"),
                     visualize.contact_sheet(list(np.asarray(sources.images)), columns=5))
  result = dict(
      scene=scene.scene_id, psnr=metrics.psnr(out["rgb"], gt),
      rays=size * size, render_seconds=t_render, rays_per_second=size * size / t_render,
      scene_generation_seconds=t_data, encode_seconds_with_compile=t_compile,
      random_init=not (config.checkpoint or config.init_from), config=config.to_dict())
  storage.write_json(storage.join(workdir, "metrics.json"),
                     result, indent=2, default=str)
  weights = config.checkpoint or config.init_from
  print(f"PSNR {result['psnr']:.2f} dB "
        f"({'random weights' if result['random_init'] else weights}); "
        f"{result['rays_per_second']:,.0f} rays/s incl. compilation; wrote {workdir}/"
        "{render,depth,sources}.png" + (", experts.png" if "experts" in out else "")
        + " and metrics.json")
  return result


def main(argv):
  del argv
  run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
