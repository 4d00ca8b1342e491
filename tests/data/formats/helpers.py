"""Shared by the reader tests: the real data pack, a read cache and the common checks."""

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image

from movenerf.geometry import cameras, projection

_REPO = Path(__file__).resolve().parents[3]
_SHARED = Path(os.environ.get("MOVENERF_SHARED", _REPO.parent / "shared"))
REAL = _SHARED / "data" / "real"

_CACHE = {}


def read_cached(reader, scene_dir, **kw):
  """Reads each (reader, scene, options) once per test session; readers are pure so caching
  is safe."""
  key = (reader.__module__, reader.__name__, str(scene_dir), tuple(sorted(kw.items())))
  if key not in _CACHE:
    _CACHE[key] = reader(scene_dir, **kw)
  return _CACHE[key]


def check_common(rec, n, h, w):
  assert rec.images.shape == (n, h, w, 3) and rec.images.dtype == np.uint8
  assert rec.intrinsics.shape == (n, 3, 3) and rec.intrinsics.dtype == np.float32
  assert rec.c2w.shape == (n, 4, 4) and rec.c2w.dtype == np.float32
  assert rec.near.shape == (n,) and rec.far.shape == (n,)
  assert rec.near.dtype == np.float32 and rec.far.dtype == np.float32
  assert rec.split.shape == (n,)
  for a in (rec.intrinsics, rec.c2w, rec.near, rec.far):
    assert np.all(np.isfinite(a))
  assert np.all(rec.near < rec.far)
  np.testing.assert_allclose(rec.c2w[:, 3], np.tile([0, 0, 0, 1], (n, 1)))
  # Rotations are orthonormal with det +1 (a wrong axis swap would give det -1).
  rot = rec.c2w[:, :3, :3].astype(np.float64)
  np.testing.assert_allclose(rot @ np.swapaxes(rot, 1, 2), np.tile(np.eye(3), (n, 1, 1)),
                             atol=1e-4)
  np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-4)


def axes_centre(c2w):
  """[3] least-squares point closest to all optical axes (camera centre + t * z axis)."""
  origins = c2w[:, :3, 3].astype(np.float64)
  dirs = c2w[:, :3, 2].astype(np.float64)
  dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
  proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # [N, 3, 3]
  return np.linalg.solve(proj.sum(0), np.einsum("nij,nj->i", proj, origins))


def project_fraction(rec, point):
  cams = cameras.Cameras(jnp.asarray(rec.intrinsics), jnp.asarray(rec.c2w), rec.height,
                         rec.width)
  xy, front = projection.project_points(jnp.asarray(point, jnp.float32)[None], cams)
  inside = np.asarray(projection.in_image(xy, rec.height, rec.width) & front)[:, 0]
  return inside.mean(), np.asarray(front)[:, 0]


def write_png(path, shape=(8, 8, 4)):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full(shape, 128, np.uint8)).save(path)
