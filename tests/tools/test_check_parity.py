"""Tests of movenerf.tools.check_parity: exit codes of the CLI, and the tool on reference
files of other shapes and modes written by this port. (The port's parity with the official
vectors is tested in tests/models/gnt/test_model.py.)"""

import json

import jax
import jax.numpy as jnp
import numpy as np

from movenerf import testing
from movenerf.geometry import cameras as cam_lib
from movenerf.geometry.rays import flat_index_to_pixels, pixel_rays
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables
from movenerf.models.gnt.official_checkpoint import export_official_arrays
from movenerf.models.gnt.render import encode_sources, render_chunk
from movenerf.tools import check_parity


def test_cli_exit_codes(reference_dir, tmp_path, capsys):
  path = reference_dir / "gnt_ref_vectors.npz"
  assert check_parity.main(["--vectors", str(path)]) == 0
  assert "PASS" in capsys.readouterr().out
  assert check_parity.main(["--vectors", str(tmp_path / "missing.npz")]) == 2
  assert "not found" in capsys.readouterr().err
  # A perturbed colour head must be caught.
  with np.load(path) as data:
    arrays = dict(data)
  arrays["net_coarse/rgb_fc.bias"] = arrays["net_coarse/rgb_fc.bias"] + 1e-3
  np.savez(tmp_path / "perturbed.npz", **arrays)
  assert check_parity.main(["--vectors", str(tmp_path / "perturbed.npz")]) == 1
  assert "FAIL" in capsys.readouterr().out


def _write_vectors(path, config: GNTConfig, num_views, height, width, num_rays):
  """A file in the reference format produced by this port (any depth/size/mode)."""
  _, target, sources = testing.dummy_inputs(num_views, height, width, seed=3)
  images_u8 = np.asarray(jnp.round(sources.images * 255), np.uint8)
  sources = sources.replace(images=jnp.asarray(images_u8, jnp.float32) / 255.0)
  model = GNTModel(config)
  variables = init_variables(model, jax.random.PRNGKey(5))
  inds = np.random.default_rng(0).integers(0, height * width, num_rays)
  rays = pixel_rays(target, flat_index_to_pixels(jnp.asarray(inds), width))
  featmaps = encode_sources(model, variables, sources.images)
  out = render_chunk(model, variables, rays, target, sources, featmaps, 2.0, 6.0)
  arrays = dict(export_official_arrays(variables))
  arrays.update({
      "inputs/src_rgbs_u8": images_u8[None],
      "inputs/src_cameras": cam_lib.to_gnt34(sources.cameras)[None],
      "inputs/query_camera": cam_lib.to_gnt34(target)[None],
      "inputs/depth_range": np.array([[2.0, 6.0]], np.float32),
      "inputs/pixel_inds": inds.astype(np.int64),
      "inter/z_vals": np.asarray(out.coarse.depths),
      "outputs/rgb": np.asarray(out.coarse.rgb), "outputs/weights": np.asarray(out.coarse.weights),
      "outputs_fine/rgb": np.asarray(out.fine.rgb), "inter/z_vals_fine": np.asarray(out.fine.depths),
  })
  np.savez(path, **arrays)
  json.dump({"config": {"n_samples": config.num_samples, "n_importance": config.num_importance,
                        "inv_uniform": config.inverse_depth}}, open(str(path)[:-4] + ".json", "w"))


def test_tool_handles_other_shapes_and_modes(tmp_path):
  """Depth 2, 3 views, non-square 40x24, inverse depth, a separate fine network."""
  config = GNTConfig(width=32, depth=2, coarse_feat_dim=8, fine_feat_dim=8, single_net=False,
                     num_samples=8, num_importance=6, inverse_depth=True)
  path = tmp_path / "vectors.npz"
  _write_vectors(path, config, num_views=3, height=24, width=40, num_rays=5)
  # The file was made under jit, the tool runs eagerly: float32 re-association of
  # inverse depths (~1e-5) is amplified by the 2^9 encoding frequency, hence 1e-3.
  report = check_parity.run_parity(str(path), tolerance=1e-3)
  assert report.passed, report.format()
  assert report.colour_keys == ["outputs/rgb", "outputs_fine/rgb"]
  assert report.diff("inter/z_vals") < 1e-5 and report.diff("inter/z_vals_fine") < 1e-4
  # The same file with the fine network perturbed must fail on the fine colours only.
  with np.load(path) as data:
    arrays = dict(data)
  arrays["net_fine/rgb_fc.bias"] = arrays["net_fine/rgb_fc.bias"] + 1e-2
  np.savez(path, **arrays)
  report = check_parity.run_parity(str(path), tolerance=1e-3)
  assert not report.passed
  assert report.diff("outputs/rgb") < 1e-3 and report.diff("outputs_fine/rgb") > 5e-3
