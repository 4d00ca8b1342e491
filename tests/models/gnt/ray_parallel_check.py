"""Run in a subprocess with 4 simulated CPU devices (see test_render.py): renders rays
split over the devices and on one device, prints JSON."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from movenerf import testing  # noqa: E402
from movenerf.models.gnt.render import (encode_sources, ray_mesh,  # noqa: E402
                                        render_rays_chunked)
from tests.models.gnt import helpers, move_helpers  # noqa: E402


def _both(model, variables, rays, target, sources):
  """{key: max |difference|} between 4 devices and 1, and the 4-device result."""
  featmaps = encode_sources(model, variables, sources.images)
  kw = dict(chunk_size=8, featmaps=featmaps, sub_chunk=2)
  split = render_rays_chunked(model, variables, rays, target, sources, 2.0, 6.0, **kw)
  one = render_rays_chunked(model, variables, rays, target, sources, 2.0, 6.0,
                            devices=jax.devices()[:1], **kw)
  assert split.keys() == one.keys()
  return {k: float(np.max(np.abs(split[k] - one[k]))) for k in split}, split


def main():
  jax.config.update("jax_default_matmul_precision", "highest")
  # 22 rays: chunks of 8 (the last padded), 2 rays per device.
  rays, target, sources = testing.dummy_inputs(4, 16, 16, 22, seed=3)
  model, variables, *_ = helpers.setup()
  gnt_diff, gnt = _both(model, variables, rays, target, sources)
  move_model, move_vars = move_helpers.move()
  move_diff, move = _both(move_model, move_vars, rays, target, sources)
  print(json.dumps({
      "devices": jax.device_count(), "gnt_diff": gnt_diff, "move_diff": move_diff,
      "gnt_keys": sorted(gnt), "move_keys": sorted(move),
      "rgb_std": float(np.std(gnt["rgb"])), "experts_used": int(np.sum(move["experts"] > 0)),
      "mesh_sizes": {n: ray_mesh(n).size for n in (8, 6, 7, 512)},
  }))


if __name__ == "__main__":
  main()
