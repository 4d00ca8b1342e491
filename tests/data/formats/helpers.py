"""Shared by the reader tests: the real data pack, a read cache and the common checks."""

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

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


def save_image(path: Path, image: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path)


# ----------------------------------------------------------------------------- writers
# A procedural.Scene (exact cameras) written in each IBRNet-family format's own
# conventions.


def write_gso(root: Path, scene) -> Path:
  """``scene`` (procedural.Scene) as a Google Scanned Objects scene ``root/gso_object``."""
  d = root / "gso_object"
  for i in range(len(scene.images)):
    name = f"{i:06d}"
    save_image(d / "rgb" / f"{name}.png", scene.images[i])
    (d / "pose").mkdir(parents=True, exist_ok=True)
    (d / "intrinsics").mkdir(parents=True, exist_ok=True)
    np.savetxt(d / "pose" / f"{name}.txt", scene.c2w[i].astype(np.float64))
    k4 = np.eye(4)
    k4[:3, :3] = scene.intrinsics[i]
    # Both accepted intrinsics layouts: 16 numbers on one line, or a 3x3 block.
    if i % 2:
      np.savetxt(d / "intrinsics" / f"{name}.txt", scene.intrinsics[i].astype(np.float64))
    else:
      np.savetxt(d / "intrinsics" / f"{name}.txt", k4.reshape(1, 16))
  return d


def write_collected(root: Path, scene, collection: str = "ibrnet_collected_1",
                    factor: int = 2) -> Path:
  """``scene`` as the IBRNet-collected scene ``root/collection/room`` (LLFF layout, its
  images in ``images_{factor}``)."""
  d = root / collection / "room"
  rows = []
  n, h, w = scene.images.shape[:3]
  for i in range(n):
    c2w = scene.c2w[i].astype(np.float64)
    # LLFF rotation columns are (down, right, backwards) = (y, x, -z) of the OpenCV frame;
    # hwf is at full resolution, ``factor`` times the stored images.
    mat = np.stack([c2w[:3, 1], c2w[:3, 0], -c2w[:3, 2], c2w[:3, 3],
                    np.array([h, w, scene.intrinsics[i, 0, 0]]) * factor], axis=1)
    fg = scene.depths[i][scene.masks[i]]
    rows.append(np.concatenate([mat.reshape(-1), [0.9 * fg.min(), 1.1 * fg.max()]]))
    save_image(d / f"images_{factor}" / f"IMG_{i:04d}.png", scene.images[i])
  np.save(d / "poses_bounds.npy", np.stack(rows))
  return d


# Frame timestamps in view order; their string order differs from their numeric order.
STAMPS = [5, 900, 1000, 20000, 100000, 3000000]


def stamps(n: int) -> list[int]:
  """Timestamps of ``n`` frames: :data:`STAMPS`, then more above them."""
  return (STAMPS + [4000000 + 1000 * k for k in range(max(n - len(STAMPS), 0))])[:n]


def _realestate_line(stamp, k, c2w, h, w) -> str:
  w2c = np.linalg.inv(c2w.astype(np.float64))
  # Normalised intrinsics in edge coordinates: pixel centre u sits at (u + 0.5) / W.
  intr = [k[0, 0] / w, k[1, 1] / h, (k[0, 2] + 0.5) / w, (k[1, 2] + 0.5) / h]
  nums = [float(x) for x in intr] + [0.0, 0.0] + [float(x) for x in w2c[:3].reshape(-1)]
  return " ".join([str(stamp)] + [repr(x) for x in nums])


def write_realestate(root: Path, scene, mode: str = "train", name: str = "clip") -> Path:
  """``scene`` as the RealEstate10K clip ``root/mode/frames/name`` (frames named by
  :func:`stamps`) with its camera file, lines shuffled."""
  frames = root / mode / "frames" / name
  n, h, w = scene.images.shape[:3]
  times = stamps(n)
  for i, stamp in enumerate(times):
    save_image(frames / f"{stamp}.png", scene.images[i])
  lines = [_realestate_line(s, scene.intrinsics[i], scene.c2w[i], h, w)
           for i, s in enumerate(times)]
  # A camera line without a frame (the subset keeps only some frames) must be ignored.
  lines.append(_realestate_line(7, scene.intrinsics[0], scene.c2w[1], h, w))
  order = ([3, 0, 6, 5, 1, 4, 2] if n == 6
           else np.random.default_rng(0).permutation(n + 1).tolist())
  cam_file = root / mode / "cameras" / f"{name}.txt"
  cam_file.parent.mkdir(parents=True, exist_ok=True)
  cam_file.write_text("\n".join(["https://www.youtube.com/watch?v=abcdefghijk"]
                                + [lines[j] for j in order]) + "\n")
  return frames


def _spaces_view(scene, i: int, rel: str, scale: float = 1.0) -> dict:
  k = scene.intrinsics[i].astype(np.float64)
  c2w = scene.c2w[i].astype(np.float64)
  h, w = scene.images.shape[1:3]
  return {
      "relative_path": rel,
      "width": w * scale,
      "height": h * scale,
      "focal_length": k[0, 0] * scale,
      "pixel_aspect_ratio": k[1, 1] / k[0, 0],
      # The Spaces calibration puts pixel centres at half-integers.
      "principal_point": [(k[0, 2] + 0.5) * scale, (k[1, 2] + 0.5) * scale],
      # Axis-angle of the world-to-camera rotation, and the camera centre.
      "orientation": Rotation.from_matrix(c2w[:3, :3].T).as_rotvec().tolist(),
      "position": c2w[:3, 3].tolist(),
  }


def write_spaces(root: Path, scene, scale: float = 1.0) -> Path:
  """``scene`` as the Spaces scene ``root/scene_000``: rigs of 3 cameras (views 3r to
  3r + 2 at rig position r), calibrated for images ``scale`` times the stored size."""
  d = root / "scene_000"
  rigs = []
  for r in range(len(scene.images) // 3):
    rig = []
    for c in range(3):
      i = 3 * r + c
      rel = f"cam_{c:02d}/image_{r:03d}.png"
      save_image(d / rel, scene.images[i])
      rig.append(_spaces_view(scene, i, rel, scale))
    rigs.append(rig)
  (d / "models.json").write_text(json.dumps(rigs))
  return d
