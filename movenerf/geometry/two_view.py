"""Two-view geometry of posed pinhole cameras: projection, epipolar lines and distances,
triangulation (pure NumPy, float64).

Cameras are in the library's convention (:mod:`movenerf.geometry.cameras`): 3x3
intrinsics ``K``, 4x4 camera-to-world ``c2w`` with an OpenCV camera frame (x right, y
down, z forward), pixel ``(u, v)`` with integer coordinates at pixel centres. Depth is
the camera-frame z. Shapes: P points; ``a`` is the view pixels are picked in and ``b``
the view they are looked for in.

The fundamental matrix of views ``a`` and ``b`` maps a pixel ``x_a`` of ``a`` to its
epipolar line ``l_b = F [x_a, 1]`` in ``b``: every world point on the ray of ``x_a``
projects onto it, so a true correspondence ``x_b`` has ``[x_b, 1]^T F [x_a, 1] = 0``.
Cameras that are wrong (axes flipped, the world-to-camera matrix used as camera-to-world,
intrinsics of another image size) move the lines away from the correspondences that
feature matching finds in the images; :func:`symmetric_epipolar_distance` and
:func:`sampson_distance` measure by how many pixels.
"""

from __future__ import annotations

import numpy as np


def _as64(x) -> np.ndarray:
  return np.asarray(x, np.float64)


def _homogeneous(xy: np.ndarray) -> np.ndarray:
  return np.concatenate([xy, np.ones(xy.shape[:-1] + (1,))], axis=-1)


def world_to_camera(c2w) -> np.ndarray:
  """[..., 4, 4] the inverse of camera-to-world matrices."""
  return np.linalg.inv(_as64(c2w))


def project(points, intrinsics, c2w) -> tuple[np.ndarray, np.ndarray]:
  """World points into one camera.

  Args:
    points: [P, 3] world points.
    intrinsics: [3, 3].
    c2w: [4, 4].

  Returns:
    xy [P, 2] pixel coordinates (NaN where the depth is 0) and z [P] the camera-frame
    depth (negative behind the camera).
  """
  points = _as64(points)
  w2c = world_to_camera(c2w)
  cam = points @ w2c[:3, :3].T + w2c[:3, 3]
  pix = cam @ _as64(intrinsics).T
  z = cam[:, 2]
  with np.errstate(divide="ignore", invalid="ignore"):
    xy = np.where(z[:, None] != 0, pix[:, :2] / z[:, None], np.nan)
  return xy, z


def lift(xy, depth, intrinsics, c2w) -> np.ndarray:
  """[P, 3] world points of pixels ``xy`` [P, 2] at z-depths ``depth`` [P] (or a scalar)."""
  xy = _as64(xy)
  rays = _homogeneous(xy) @ np.linalg.inv(_as64(intrinsics)).T  # camera z = 1
  cam = rays * np.broadcast_to(_as64(depth), xy.shape[:1])[:, None]
  c2w = _as64(c2w)
  return cam @ c2w[:3, :3].T + c2w[:3, 3]


def relative_pose(c2w_a, c2w_b) -> tuple[np.ndarray, np.ndarray]:
  """``(R, t)`` with ``X_b = R X_a + t`` for camera-frame points of ``a`` and ``b``."""
  rel = world_to_camera(c2w_b) @ _as64(c2w_a)
  return rel[:3, :3], rel[:3, 3]


def _skew(v: np.ndarray) -> np.ndarray:
  return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def has_baseline(c2w_a, c2w_b, tolerance: float = 1e-6) -> bool:
  """Whether the camera centres differ by more than ``tolerance`` times their distance
  from the world origin (float32 cameras that share a centre differ by ~1e-7 of it)."""
  ca, cb = _as64(c2w_a)[:3, 3], _as64(c2w_b)[:3, 3]
  scale = max(np.linalg.norm(ca), np.linalg.norm(cb))
  return bool(np.linalg.norm(ca - cb) > tolerance * scale) if scale > 0 else False


def fundamental_matrix(k_a, c2w_a, k_b, c2w_b) -> np.ndarray:
  """[3, 3] ``F`` with ``[x_b, 1]^T F [x_a, 1] = 0`` for corresponding pixels, scaled to
  unit Frobenius norm (distances do not depend on the scale).

  ``F = K_b^-T [t]_x R K_a^-1`` with ``(R, t)`` the :func:`relative_pose`. Cameras that
  share a centre (not :func:`has_baseline`) have no epipolar geometry: ValueError (their
  pixels correspond through :func:`rotation_homography`).
  """
  if not has_baseline(c2w_a, c2w_b):
    raise ValueError("fundamental_matrix: the two cameras share one centre (no baseline)")
  rot, t = relative_pose(c2w_a, c2w_b)
  f = np.linalg.inv(_as64(k_b)).T @ _skew(t) @ rot @ np.linalg.inv(_as64(k_a))
  return f / np.linalg.norm(f)


def rotation_homography(k_a, c2w_a, k_b, c2w_b) -> np.ndarray:
  """[3, 3] ``H = K_b R K_a^-1``: where view b sees the points at infinity of the rays
  of view a, and every point when the cameras share a centre."""
  rot, _ = relative_pose(c2w_a, c2w_b)
  return _as64(k_b) @ rot @ np.linalg.inv(_as64(k_a))


def transfer_distance(h, xy_a, xy_b) -> np.ndarray:
  """[P] pixels from ``xy_b`` to ``H [xy_a, 1]`` (infinite where H sends it to
  infinity or behind the camera)."""
  mapped = _homogeneous(_as64(xy_a)) @ _as64(h).T
  with np.errstate(divide="ignore", invalid="ignore"):
    xy = mapped[:, :2] / mapped[:, 2:]
  dist = np.linalg.norm(xy - _as64(xy_b), axis=-1)
  return np.where(mapped[:, 2] > 0, dist, np.inf)


def epipolar_lines(f, xy_a) -> np.ndarray:
  """[P, 3] lines ``(a, b, c)`` of view b (``a u + b v + c = 0``, ``a^2 + b^2 = 1``)
  of pixels ``xy_a`` [P, 2] of view a."""
  lines = _homogeneous(_as64(xy_a)) @ _as64(f).T
  return lines / np.maximum(np.linalg.norm(lines[:, :2], axis=-1, keepdims=True), 1e-300)


def point_line_distances(f, xy_a, xy_b) -> tuple[np.ndarray, np.ndarray]:
  """Pixels from ``xy_b`` to the epipolar line of ``xy_a`` in view b, and from ``xy_a``
  to the epipolar line of ``xy_b`` in view a: two [P] arrays."""
  f = _as64(f)
  in_b = np.abs(np.sum(epipolar_lines(f, xy_a) * _homogeneous(_as64(xy_b)), axis=-1))
  in_a = np.abs(np.sum(epipolar_lines(f.T, xy_b) * _homogeneous(_as64(xy_a)), axis=-1))
  return in_b, in_a


def symmetric_epipolar_distance(f, xy_a, xy_b) -> np.ndarray:
  """[P] the mean, in pixels, of the distance of ``xy_b`` to the epipolar line of
  ``xy_a`` and of ``xy_a`` to that of ``xy_b``; 0 for a true correspondence."""
  in_b, in_a = point_line_distances(f, xy_a, xy_b)
  return 0.5 * (in_b + in_a)


def sampson_distance(f, xy_a, xy_b) -> np.ndarray:
  """[P] Sampson's first-order geometric error in pixels: ``|x_b^T F x_a|`` over the norm
  of its gradient in ``(u_a, v_a, u_b, v_b)``; 0 for a true correspondence."""
  f = _as64(f)
  ha, hb = _homogeneous(_as64(xy_a)), _homogeneous(_as64(xy_b))
  fa = ha @ f.T  # F x_a
  fb = hb @ f  # F^T x_b
  residual = np.sum(hb * fa, axis=-1)
  grad = np.sqrt(fa[:, 0]**2 + fa[:, 1]**2 + fb[:, 0]**2 + fb[:, 1]**2)
  return np.abs(residual) / np.maximum(grad, 1e-300)


def epipolar_segments(xy_a, near, far, k_a, c2w_a, k_b, c2w_b, num: int = 2
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Where the rays of pixels of view a project in view b, from depth near to far.

  Args:
    xy_a: [P, 2] pixels of view a.
    near, far: z-depths in view a (scalars or [P]), near < far.
    k_a, c2w_a, k_b, c2w_b: the two cameras.
    num: points per ray (>= 2), spaced evenly in inverse depth (so about evenly along the
      segment in view b): the first at ``near``, the last at ``far``.

  Returns:
    xy [P, num, 2]: their pixels in view b; in_front [P, num] bool: whether each is in
    front of camera b. The points in front lie on one segment of the epipolar line of
    each pixel.
  """
  xy_a = _as64(xy_a)
  p = len(xy_a)
  near = np.broadcast_to(_as64(near), (p,))
  far = np.broadcast_to(_as64(far), (p,))
  t = np.linspace(0.0, 1.0, max(int(num), 2))
  depth = 1.0 / ((1.0 - t)[None, :] / near[:, None] + t[None, :] / far[:, None])  # [P, num]
  rays = np.repeat(xy_a, len(t), axis=0)
  xy, z = project(lift(rays, depth.reshape(-1), k_a, c2w_a), k_b, c2w_b)
  return xy.reshape(p, len(t), 2), (z > 0).reshape(p, len(t))


def triangulate(xy_a, xy_b, k_a, c2w_a, k_b, c2w_b) -> np.ndarray:
  """[P, 3] world points of correspondences ``xy_a``, ``xy_b`` [P, 2] (linear
  triangulation: the least-squares null vector of the four DLT equations, with the
  equations of each view normalised to unit row norm).

  Exact for exact correspondences; points far behind or at infinity come out with the
  sign their rays imply (:func:`project` then gives their depth in each camera).
  """
  xy_a, xy_b = _as64(xy_a), _as64(xy_b)
  rows = []
  for xy, k, c2w in ((xy_a, k_a, c2w_a), (xy_b, k_b, c2w_b)):
    mat = _as64(k) @ world_to_camera(c2w)[:3]  # [3, 4]
    mat = mat / np.linalg.norm(mat[2, :3])
    rows.append(xy[:, 0, None] * mat[2] - mat[0])
    rows.append(xy[:, 1, None] * mat[2] - mat[1])
  a = np.stack(rows, axis=1)  # [P, 4, 4]
  a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-300)
  _, _, vt = np.linalg.svd(a)
  h = vt[:, -1]
  with np.errstate(divide="ignore", invalid="ignore"):
    return h[:, :3] / h[:, 3:]
