"""Tests of movenerf.models.gnt.render: rendering rays in chunks, over devices."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from movenerf.models.gnt.render import encode_sources, render_chunk, render_rays_chunked
from tests.models.gnt import helpers

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]


def test_chunked_rendering_matches_one_batch():
  model, variables, rays, target, sources = helpers.setup()
  featmaps = encode_sources(model, variables, sources.images)
  whole = render_chunk(model, variables, rays, target, sources, featmaps, 2.0, 6.0)
  chunked = render_rays_chunked(model, variables, rays, target, sources, 2.0, 6.0, chunk_size=4)
  np.testing.assert_allclose(chunked["rgb_coarse"], whole.coarse.rgb, atol=1e-4)
  np.testing.assert_allclose(chunked["rgb"], whole.fine.rgb, atol=2e-4)
  np.testing.assert_allclose(chunked["depth_coarse"], whole.coarse.depth, atol=1e-4)


def test_rays_split_over_devices_render_as_on_one_device():
  """GNT (with a fine pass) and GNT-MoVE (with its expert maps) on 4 simulated devices,
  each rendering its share of every chunk, against one device; in a subprocess because
  the device count is fixed when JAX starts."""
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, str(HERE / "ray_parallel_check.py")], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4
  assert result["gnt_keys"] == ["depth", "depth_coarse", "rgb", "rgb_coarse"]
  assert result["move_keys"] == ["depth", "experts", "rgb"]
  assert result["rgb_std"] > 0.05  # the rays do not all render alike
  assert result["experts_used"] > 0
  assert max(result["gnt_diff"].values()) <= 1e-5, result["gnt_diff"]
  # Each device's slices hold the same rays as the one device's: the same routing.
  assert result["move_diff"]["experts"] == 0.0
  assert max(result["move_diff"].values()) <= 1e-5, result["move_diff"]
  # The most devices (of 4) whose number divides the chunk.
  assert result["mesh_sizes"] == {"8": 4, "6": 3, "7": 1, "512": 4}
