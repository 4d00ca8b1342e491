"""One similarity transform applied to a whole camera rig (sources and target together).

A similarity ``x -> s R x + t`` of the world moves every camera-to-world matrix
``[Rc | c]`` to ``[R Rc | s R c + t]``: the camera frame turns with the world and its
origin moves, while the intrinsics stay. A point at z-depth ``z`` in a camera is at
z-depth ``s z`` afterwards, so an example's ``near`` / ``far`` scale by ``s``; pixels,
images and the relative geometry between the cameras (up to the scale ``s`` of the
baselines) are unchanged. A model that uses only that relative geometry renders the
same image before and after.

The functions take NumPy or JAX arrays and work under ``jit`` (the training
augmentation draws one transform per example from its key).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The example keys a rig transform changes.
POSE_KEYS = ("src_c2w", "tgt_c2w")
RANGE_KEYS = ("near", "far")


def quaternion_to_rotation(q, xp=jnp):
  """[4] quaternion (w, x, y, z; any non-zero length) -> [3, 3] rotation matrix, computed
  with the array module ``xp`` (``jnp``, traceable; or ``np``, in the dtype of ``q``)."""
  w, x, y, z = q / xp.linalg.norm(q)
  return xp.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
      [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
      [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
  ])


def random_similarity(key: jax.Array, translation: float = 1.0, max_scale: float = 1.0
                      ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """A random similarity: (rotation [3, 3], translation [3], scale []).

  The rotation is uniform over SO(3) (a normalised Gaussian quaternion), the translation
  Gaussian with standard deviation ``translation`` per axis, the scale log-uniform in
  ``[1 / max_scale, max_scale]`` (``max_scale = 1``: a rigid transform).
  """
  kq, kt, ks = jax.random.split(key, 3)
  rotation = quaternion_to_rotation(jax.random.normal(kq, (4,)))
  shift = translation * jax.random.normal(kt, (3,))
  log_s = jnp.log(jnp.float32(max_scale))
  scale = jnp.exp(jax.random.uniform(ks, (), minval=-log_s, maxval=log_s))
  return rotation, shift, scale


def transform_c2w(c2w: jnp.ndarray, rotation, translation, scale=1.0) -> jnp.ndarray:
  """[..., 3 or 4, 4] camera-to-world matrices under ``x -> scale * rotation x +
  translation`` (same number of rows out)."""
  rotation = jnp.asarray(rotation, c2w.dtype)
  rot = jnp.einsum("ij,...jk->...ik", rotation, c2w[..., :3, :3])
  centre = scale * jnp.einsum("ij,...j->...i", rotation, c2w[..., :3, 3]) + translation
  top = jnp.concatenate([rot, centre[..., None].astype(c2w.dtype)], axis=-1)
  return jnp.concatenate([top, c2w[..., 3:, :]], axis=-2)


def transform_example(ex: dict, rotation, translation, scale=1.0) -> dict:
  """An example (training or evaluation, :mod:`movenerf.data.pipeline`) with its whole rig
  moved by the similarity: ``src_c2w``, ``tgt_c2w`` transformed, ``near`` / ``far``
  multiplied by ``scale``; every other entry is the same object."""
  out = dict(ex)
  for key in POSE_KEYS:
    out[key] = transform_c2w(jnp.asarray(ex[key]), rotation, translation, scale)
  for key in RANGE_KEYS:
    if key in ex:
      out[key] = (jnp.asarray(ex[key]) * scale).astype(jnp.asarray(ex[key]).dtype)
  return out


def rig_size(c2w: jnp.ndarray, valid: jnp.ndarray | None = None) -> jnp.ndarray:
  """Mean distance of cameras ([N, 3 or 4, 4]) from their centroid; with ``valid`` [N]
  (booleans), of the valid cameras from their centroid."""
  centres = c2w[:, :3, 3]
  if valid is None:
    return jnp.mean(jnp.linalg.norm(centres - centres.mean(axis=0), axis=-1))
  w = jnp.asarray(valid, centres.dtype)
  centroid = jnp.sum(w[:, None] * centres, axis=0) / jnp.sum(w)
  return jnp.sum(w * jnp.linalg.norm(centres - centroid, axis=-1)) / jnp.sum(w)


def random_rig_transform(ex: dict, key: jax.Array, max_scale: float = 1.0) -> dict:
  """An example with its whole rig moved by one random similarity
  (:func:`random_similarity`; the translation's standard deviation is the rig's size,
  :func:`rig_size` of its sources and target), as :func:`transform_example`."""
  poses = jnp.concatenate([ex["src_c2w"][:, :3], ex["tgt_c2w"][None, :3]])
  rotation, shift, scale = random_similarity(key, 1.0, max_scale)
  return transform_example(ex, rotation, rig_size(poses) * shift, scale)
