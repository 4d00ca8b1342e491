"""Stage-by-stage parity of the JAX GNT port with official reference vectors.

  python -m movenerf.tools.check_parity --vectors ../shared/reference/gnt_ref_vectors.npz
  python -m movenerf.tools.check_parity --vectors ../shared/reference/move_gate_vectors.npz
  python -m movenerf.tools.check_parity --vectors ../shared/reference/gnt_train_vectors.npz

Loads a reference-vector file (``.npz`` + optional ``.json`` sidecar, the format of
``shared/reference/gnt_ref_vectors*.npz``), imports its parameters, runs the JAX
pipeline from the stored inputs (cameras, pixel indices, source images), and prints the
max absolute difference of every stored intermediate it knows. Exits 1 when the final
colours differ by more than ``--tolerance`` (1e-4), 2 on unreadable input. A GNT-MoVE
gate file (``move_gate_vectors.npz``) is recognised by its keys and checked case by
case (router, diversity losses with gradients, consistency loss); there every case's
result counts as final (relative difference for losses).

A training file (``gnt_train_vectors.npz``, recognised by its ``step1/loss``) is replayed
with movenerf's own train step and compared step by step, each quantity against its own
tolerance (:mod:`movenerf.tools.check_train_parity` states them and why). There
``--set KEY=VALUE`` (a config key, e.g. ``optim.eps=1e-7``) and ``--schedule_offset N``
(the optimiser's schedule N steps ahead) inject a mistake, to show that the check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from movenerf.geometry import cameras as cameras_lib
from movenerf.geometry import importance, rays as rays_lib
from movenerf.geometry.epipolar import SourceViews, project_and_sample
from movenerf.models.gnt.model import GNTModel
from movenerf.models.gnt.official_checkpoint import convert, infer_config
from movenerf.tools.check_gate_parity import run_gate_parity
from movenerf.tools.check_train_parity import is_train_vectors, run_train_parity
from movenerf.tools.parity_report import Comparison, ParityReport

PDF_STRESS_TOLERANCE = 1e-3


def _load(path: str) -> tuple[dict[str, np.ndarray], dict]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"reference vectors not found: {path}")
  with np.load(path) as data:
    arrays = {k: np.asarray(data[k]) for k in data.files}
  sidecar = os.path.splitext(path)[0] + ".json"
  meta = json.load(open(sidecar)) if os.path.exists(sidecar) else {}
  required = ("inputs/src_rgbs_u8", "inputs/src_cameras", "inputs/query_camera",
              "inputs/depth_range", "inputs/pixel_inds", "net_coarse/rgbfeat_fc.0.weight")
  missing = [k for k in required if k not in arrays]
  if missing:
    raise ValueError(f"{path} lacks required arrays: {missing}")
  return arrays, meta


def _sampling_settings(arrays, meta) -> dict:
  """num_samples / num_importance / inverse_depth from the sidecar, else from arrays."""
  cfg = {**meta.get("config", {}), **meta.get("model_args", {})}
  num_samples = int(cfg.get("n_samples", cfg.get("N_samples", arrays["inter/z_vals"].shape[1]
                                                  if "inter/z_vals" in arrays else 64)))
  num_importance = cfg.get("n_importance", cfg.get("N_importance"))
  if num_importance is None:
    num_importance = (arrays["inter/z_vals_fine"].shape[1] - num_samples
                      if "inter/z_vals_fine" in arrays else 0)
  inverse = cfg.get("inv_uniform")
  if inverse is None and "inter/z_vals" in arrays:  # inverse depths have uneven spacing
    z = arrays["inter/z_vals"][0].astype(np.float64)
    inverse = bool(np.ptp(np.diff(z)) > 1e-4 * (z[-1] - z[0]))
  return dict(num_samples=num_samples, num_importance=int(num_importance),
              inverse_depth=bool(inverse))


def is_gate_vectors(path: str) -> bool:
  """True for a GNT-MoVE router reference file (``move_gate_vectors.npz`` format)."""
  with np.load(path) as data:
    return "params/reduce_dim" in data.files


def run_parity(path: str, tolerance: float = 1e-4) -> ParityReport:
  """Runs the pipeline on a reference file and compares every known array."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"reference vectors not found: {path}")
  if is_gate_vectors(path):
    return run_gate_parity(path, tolerance)
  if is_train_vectors(path):
    return run_train_parity(path)
  arrays, meta = _load(path)
  config = infer_config(arrays, dropout=0.0, **_sampling_settings(arrays, meta))
  variables = convert(arrays, config)
  model = GNTModel(config)

  images = jnp.asarray(arrays["inputs/src_rgbs_u8"][0].astype(np.float32) / 255.0)
  src_cams = cameras_lib.from_gnt34(arrays["inputs/src_cameras"][0])
  query_cam = cameras_lib.from_gnt34(arrays["inputs/query_camera"][0])
  sources = SourceViews(images, src_cams)
  near, far = (float(x) for x in arrays["inputs/depth_range"][0])
  pixels = rays_lib.flat_index_to_pixels(jnp.asarray(arrays["inputs/pixel_inds"]), query_cam.width)
  rays = rays_lib.pixel_rays(query_cam, pixels)
  debug_ray = int(meta.get("checks", {}).get("debug_ray_index", 0))

  rows: list[Comparison] = []

  def compare(key: str, value, transform: Callable | None = None, note: str = "",
              relative: bool = False):
    if key not in arrays:
      return
    ref = arrays[key]
    value = np.asarray(value, np.float64)
    if transform is not None:
      value = transform(value)
    if value.shape != ref.shape:
      raise ValueError(f"{key}: computed shape {value.shape} != reference {ref.shape}")
    diff = np.abs(value - ref)
    if relative:
      diff = diff / np.maximum(1.0, np.abs(ref))
    rows.append(Comparison(key, float(np.max(diff)) if ref.size else 0.0, note))

  compare("inputs/src_rgbs", images[:1])
  compare("inputs/ray_o", rays.origins)
  compare("inputs/ray_d", rays.directions)

  featmaps = jax.jit(lambda v, x: model.apply(v, x, method=GNTModel.encode))(variables, images)
  to_nchw = lambda f: np.transpose(np.asarray(f), (0, 3, 1, 2))
  compare("inter/featmaps_coarse", to_nchw(featmaps[0]))
  compare("inter/featmaps_fine", to_nchw(featmaps[1]))

  def render_pass(net_name, depths, featmap, prefix, out_prefix, debug_prefix, n_sub):
    points = rays_lib.points_along_rays(rays, depths)
    samples, xy = project_and_sample(points, query_cam, sources, featmap)

    def run_net(module):
      return getattr(module, net_name)(samples, points, rays.directions, deterministic=True)

    (rgb, weights), inter = model.apply(variables, method=run_net, mutable=["intermediates"])
    compare(f"inter/pts{prefix}", points)
    compare(f"inter/mask{prefix}", samples.mask)
    compare(f"inter/ray_diff{prefix}_sub", samples.ray_diff[:n_sub])
    compare(f"inter/rgb_feat{prefix}_sub", samples.rgb_feat[:n_sub])
    # Points near a camera plane project to coordinates up to the 1e6 clamp.
    compare(f"inter/pixel_locations{prefix}_sub", xy[:, :n_sub], relative=True,
            note="relative to max(1, |ref|)")
    compare(f"{out_prefix}/rgb", rgb)
    compare(f"{out_prefix}/weights", weights)
    compare(f"{out_prefix}/depth", jnp.sum(weights * depths, -1))
    inter = inter["intermediates"][net_name]
    for key in sorted(k for k in arrays if k.startswith(debug_prefix + "/")):
      name = key.split("/", 1)[1]
      if name == "ray_attn_heads_last":
        value = inter[f"ray_trans_{config.depth - 1}"]["attn"]["attn_heads"][0]
      elif name in inter:
        value = inter[name][0]
      else:
        rows.append(Comparison(key, float("nan"), "not produced by the port"))
        continue
      compare(key, value[debug_ray:debug_ray + 1])
    return weights

  n_sub = next((arrays[k].shape[0] for k in ("inter/ray_diff_sub", "inter/rgb_feat_sub")
                if k in arrays), 8)
  depths = rays_lib.sample_depths(near, far, rays.num_rays, config.num_samples,
                                  config.inverse_depth)
  compare("inter/z_vals", depths)
  weights = render_pass("net_coarse", depths, featmaps[0], "", "outputs", "debug", n_sub)

  if config.num_importance > 0:
    w = np.asarray(weights)
    if config.inverse_depth:
      inv = 1.0 / np.asarray(depths)
      bins = np.flip(0.5 * (inv[:, 1:] + inv[:, :-1]), -1)
      w_in = np.flip(w[:, 1:-1], -1)
    else:
      bins = 0.5 * (np.asarray(depths)[:, 1:] + np.asarray(depths)[:, :-1])
      w_in = w[:, 1:-1]
    compare("inter/pdf_bins", bins)
    compare("inter/pdf_weights_in", w_in)
    compare("inter/pdf_u", importance.linspace01(config.num_importance))
    samples, depths_fine = importance.fine_depths(depths, weights, config.num_importance,
                                                  config.inverse_depth)
    compare("inter/pdf_samples", 1.0 / np.asarray(samples) if config.inverse_depth else samples)
    compare("inter/z_samples", samples)
    compare("inter/z_vals_fine", depths_fine)
    net_name = "net_coarse" if config.single_net else "net_fine"
    render_pass(net_name, depths_fine, featmaps[1], "_fine", "outputs_fine", "debug_fine", n_sub)
    if "pdf_stress/weights" in arrays:
      _compare_pdf_stress(arrays, config, compare)
  return ParityReport(rows, tolerance)


def _compare_pdf_stress(arrays, config, compare):
  """Synthetic weight rows through the importance sampler (tolerance ~1e-3)."""
  weights = jnp.asarray(arrays["pdf_stress/weights"])
  n = weights.shape[0]
  bins = jnp.asarray(arrays["pdf_stress/pdf_bins"])
  w_in = jnp.asarray(arrays["pdf_stress/pdf_weights_in"])
  num = arrays["pdf_stress/pdf_samples"].shape[1]
  samples = importance.sample_pdf(bins, w_in, num)
  note = f"synthetic rows; expected <~{PDF_STRESS_TOLERANCE:g}"
  compare("pdf_stress/pdf_samples", samples, note=note)
  if "pdf_stress/z_vals_fine" in arrays and "inter/z_vals" in arrays:
    z = jnp.asarray(arrays["inter/z_vals"][:n])
    _, merged = importance.fine_depths(z, weights, num, config.inverse_depth)
    compare("pdf_stress/z_vals_fine", merged, note=note)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--vectors", required=True, help="reference .npz (sidecar .json beside it)")
  parser.add_argument("--tolerance", type=float, default=1e-4,
                      help="max |diff| allowed on the final colours (not for training files)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="training files: set a config key of the replayed run (a mistake "
                           "to inject, e.g. optim.eps=1e-7); repeatable")
  parser.add_argument("--schedule_offset", type=int, default=0, metavar="N",
                      help="training files: start the optimiser's learning-rate schedules N "
                           "steps ahead (a mistake to inject)")
  args = parser.parse_args(argv)
  # Parity is a float32 question: no reduced-precision matmuls on GPU/TPU.
  jax.config.update("jax_default_matmul_precision", "highest")
  try:
    training = os.path.exists(args.vectors) and is_train_vectors(args.vectors)
    if (args.set or args.schedule_offset) and not training:
      raise ValueError("--set and --schedule_offset apply to training files only")
    if training:
      report = run_train_parity(args.vectors, args.set, args.schedule_offset)
    else:
      report = run_parity(args.vectors, args.tolerance)
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"reference: {args.vectors}")
  print(report.format())
  return 0 if report.passed else 1


if __name__ == "__main__":
  sys.exit(main())
