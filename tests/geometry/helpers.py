"""A small camera shared by the geometry tests."""

import jax.numpy as jnp

from movenerf.geometry import cameras as cam_lib


def camera(height=48, width=64):
  k = cam_lib.pinhole_intrinsics(50.0, 55.0, 31.5, 23.5)
  c2w = cam_lib.look_at([3.0, -2.0, 1.5], [0.2, 0.1, -0.3])
  return cam_lib.Cameras(jnp.asarray(k)[None], jnp.asarray(c2w)[None], height, width)
