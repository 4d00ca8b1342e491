r"""Renders one held-out view of a generated scene with GNT or GNT-MoVE.

  python -m movenerf.tools.render_view --config experiments/gnt.py:tiny --workdir runs/view
  python -m movenerf.tools.render_view --config experiments/gnt.py:tiny --workdir runs/view \
      --config.init_from=runs/demo          # a trained movenerf run

The scene and view come from the config's ``render_view`` section (GNT and GNT-MoVE
configs): ``kind`` (``object`` or ``forward``), ``scene_seed``, ``image_size`` (pixels
per side) and ``target_view`` (the rendered view; the others are source views,
``data.example.num_source_views`` of them); ``render.chunk_size`` rays are rendered at a
time. Weights: ``--config.checkpoint`` (official GNT ``.pth`` / converted ``.npz``), else
``--config.init_from`` (a movenerf training run), else random initialisation (a render
that shows the pipeline, not a trained result). A weights file that is not one, or a
bad option, is one line naming it (exit status 2) before anything is written. Writes to
the workdir:
  render.png   prediction | ground truth
  depth.png    predicted depth | ground-truth depth (same colour scale)
  sources.png  the source views
  experts.png  (GNT-MoVE) per MoE layer, the expert that wins each pixel
  metrics.json PSNR, rays/s, timings
"""

from __future__ import annotations

import io
import os
import time
import zipfile

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from movenerf import cli, configs, storage
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
from movenerf.validation import UsageError

_CONFIG = configs.define_config_flag("config", "gnt:tiny", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory", required=True)


NOT_WEIGHTS = "not a movenerf/official GNT weights file"


def _read_head(path: str, size: int) -> bytes:
  with storage.path(path).open("rb") as f:
    return f.read(size)


def check_weights_file(path: str) -> None:
  """Raises UsageError (one line naming ``path``) unless ``path`` looks like GNT weights:
  an ``.npz`` of plain arrays with ``net_coarse/*`` entries, or a PyTorch ``.pth``
  archive. Reads only archive directories and array headers (nothing is unpickled)."""
  if not storage.is_file(path):
    raise UsageError(f"checkpoint={path!r}: no such file")
  name = os.fspath(path)
  if name.endswith(".npz"):
    data = storage.read_bytes(name) if storage.is_remote(name) else None
    source = io.BytesIO(data) if data is not None else name
    if not zipfile.is_zipfile(source):
      raise UsageError(f"{NOT_WEIGHTS}: {name} (not an .npz archive)")
    with zipfile.ZipFile(source) as z:
      keys = []
      for member in z.namelist():
        if not member.endswith(".npy"):
          raise UsageError(f"{NOT_WEIGHTS}: {name} (holds {member!r}, not an array)")
        try:
          with z.open(member) as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            _, _, dtype = read_header(f)
        except Exception as e:  # pylint: disable=broad-except
          raise UsageError(f"{NOT_WEIGHTS}: {name} ({member!r} is not a NumPy array: "
                           f"{e})") from None
        if dtype.hasobject:
          raise UsageError(f"{NOT_WEIGHTS}: {name} ({member!r} holds Python objects, "
                           "not numbers)")
        keys.append(member[:-len(".npy")])
    if not any(k.startswith("net_coarse/") for k in keys):
      raise UsageError(f"{NOT_WEIGHTS}: {name} (no 'net_coarse/*' arrays)")
  elif name.endswith((".pth", ".pt")):
    head = _read_head(name, 8)
    if head.startswith(b"PK"):  # PyTorch >= 1.6: a zip archive holding data.pkl
      data = storage.read_bytes(name) if storage.is_remote(name) else None
      with zipfile.ZipFile(io.BytesIO(data) if data is not None else name) as z:
        if not any(m.endswith("data.pkl") for m in z.namelist()):
          raise UsageError(f"{NOT_WEIGHTS}: {name} (a zip archive, not a PyTorch one)")
    elif not head.startswith(b"\x80"):  # the older format: a pickle (protocol >= 2)
      raise UsageError(f"{NOT_WEIGHTS}: {name} (not a PyTorch file)")
  else:
    raise UsageError(f"checkpoint={name!r}: want official GNT weights (.pth) or their "
                     ".npz conversion")


def load_weights(path: str, **sampling) -> tuple[GNTConfig, dict]:
  """Official GNT weights (``.pth`` / ``.npz``) as (config, variables); a file that is
  not one is a UsageError naming ``path``."""
  check_weights_file(path)
  try:
    return load_official_checkpoint(path, **sampling)
  except ImportError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    reason = " ".join(str(e).split())
    if "pickle" in reason:  # numpy's and torch's advice to unpickle: never follow it
      reason = "it does not load as plain arrays"
    raise UsageError(f"{NOT_WEIGHTS}: {path} ({reason})") from e


def check_options(config) -> None:
  """Raises UsageError naming the first ``render_view`` option that cannot work."""
  if "render_view" not in config:
    raise UsageError("render_view renders GNT and GNT-MoVE configs; this config has no "
                     "render_view section")
  num_source_views = config.data.example.num_source_views
  if num_source_views < 1:
    raise UsageError(f"data.example.num_source_views={num_source_views}: must be >= 1")
  view = config.render_view
  if view.kind not in procedural.KINDS:
    raise UsageError(f"render_view.kind={view.kind!r}: choose from "
                     f"{', '.join(map(repr, procedural.KINDS))}")
  if view.image_size < 1:
    raise UsageError(f"render_view.image_size={view.image_size}: must be >= 1")
  if not 0 <= view.target_view <= num_source_views:
    raise UsageError(f"render_view.target_view={view.target_view}: the scene has "
                     f"{num_source_views + 1} views (data.example.num_source_views + 1), "
                     f"choose 0..{num_source_views}")
  if config.render.chunk_size < 1:
    raise UsageError(f"render.chunk_size={config.render.chunk_size}: must be >= 1")


def build_model(config) -> tuple[GNTModel, dict]:
  """Model and variables from the config (official checkpoint, a run, or random init)."""
  model_cfg = GNTConfig.from_dict(config.model.to_dict())
  if config.checkpoint:
    sampling = {k: getattr(model_cfg, k) for k in
                ("num_samples", "num_importance", "inverse_depth", "dtype", "feature_dtype")}
    model_cfg, variables = load_weights(config.checkpoint, **sampling)
    return GNTModel(model_cfg), variables
  model = GNTModel(model_cfg)
  if config.init_from:
    params, _ = checkpoint.restore_params(config.init_from)
    return model, {"params": jax.tree.map(np.asarray, params)}
  return model, init_variables(model, jax.random.PRNGKey(config.seed))


def run(config, workdir: str) -> dict:
  """Generates the scene, renders the target view, writes images and metrics.

  Raises:
    UsageError: a bad option or weights file (before anything is written).
  """
  check_options(config)
  model, variables = build_model(config)
  data = config.render_view
  num_source_views = config.data.example.num_source_views
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


def program() -> None:
  """The ``movenerf-render-view`` console script: ``main`` with one-line errors (exit
  status 2: usage, 1: run; ``--verbose``: with the traceback)."""
  cli.run(main, "movenerf.tools.render_view", check=cli.config_check(_CONFIG))


if __name__ == "__main__":
  program()
