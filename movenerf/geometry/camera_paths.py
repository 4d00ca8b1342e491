"""Camera trajectories for novel-view videos, derived from the cameras of a scene.

* ``circle_path``: 360-degree (object-centric) captures. An orbit around the scene's
  up axis at the cameras' mean distance and elevation, always looking at the centre.
* ``spiral_path``: forward-facing (LLFF-style) captures. A spiral in the plane of the
  average camera, every frame looking at one focus point in front of the rig.
* ``auto_path``: picks one of the two from how widely the optical axes spread.
* ``interpolate_path``: through the input cameras themselves, in a nearest-neighbour
  chain, at constant speed (centres linear, rotations spherical between neighbours).

All poses follow the library convention (``movenerf.geometry.cameras``): [4, 4] OpenCV
camera-to-world matrices (x right, y down, z forward). Paths are returned as float32
[F, 4, 4] arrays, ready for ``Cameras(intrinsics, c2w, H, W)``.
"""

from __future__ import annotations

import numpy as np

from movenerf.geometry.alignment import rotation_angle_deg
from movenerf.geometry import rig
from movenerf.geometry.cameras import look_at

# A 360-degree orbit becomes degenerate when the cameras look straight down the up
# axis (look_at has no defined "right"); the mean elevation is clamped below this.
_MAX_ELEVATION_DEG = 85.0
# Smallest eigenvalue of sum(I - d d^T) per camera below which the optical axes count
# as parallel: then no point is "closest to all axes" in a useful sense.
_MIN_AXIS_SPREAD = 1e-4
# estimate_up: the up perpendicular to all camera x axes is trusted when the x axes
# turn enough (see there) and it is within this angle (degrees) of the average
# image-up, which rejects rigs with strongly rolled cameras.
_MIN_YAW_SPREAD = 0.01
_MAX_UP_TILT_DEG = 45.0


def _check_poses(c2w, min_views: int = 1) -> np.ndarray:
  """[N, 4, 4] or [N, 3, 4] camera-to-world -> validated float64 [N, 4, 4]."""
  poses = np.asarray(c2w)
  if not (np.issubdtype(poses.dtype, np.floating) or np.issubdtype(poses.dtype, np.integer)):
    raise ValueError(f"c2w must be a numeric array, got dtype {poses.dtype}")
  poses = poses.astype(np.float64)
  if poses.ndim != 3 or poses.shape[1:] not in ((4, 4), (3, 4)):
    raise ValueError(f"c2w must have shape [N, 4, 4] (or [N, 3, 4]), got {poses.shape}")
  if len(poses) < min_views:
    raise ValueError(f"need at least {min_views} camera(s), got {len(poses)}")
  if not np.all(np.isfinite(poses)):
    raise ValueError("c2w contains NaN or inf")
  if np.any(np.abs(np.linalg.det(poses[:, :3, :3])) < 1e-8):
    raise ValueError("camera rotation (c2w[:, :3, :3]) is singular")
  if poses.shape[1] == 3:
    bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (len(poses), 1, 4))
    poses = np.concatenate([poses, bottom], axis=1)
  return poses


def _check_num_frames(num_frames) -> int:
  if (isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer))
      or num_frames < 1):
    raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
  return int(num_frames)


def _check_depth_range(near, far) -> tuple[float, float]:
  near, far = float(near), float(far)
  if not (np.isfinite(near) and np.isfinite(far) and 0.0 < near < far):
    raise ValueError(f"need finite 0 < near < far, got near={near}, far={far}")
  return near, far


def _unit(v: np.ndarray, axis: int = -1) -> np.ndarray:
  return v / np.maximum(np.linalg.norm(v, axis=axis, keepdims=True), 1e-12)


def _stack_path(poses: list[np.ndarray]) -> np.ndarray:
  return np.stack(poses).astype(np.float32)


def viewing_directions(c2w) -> np.ndarray:
  """[N, 3] unit optical axes (camera +z) in world coordinates."""
  return _unit(_check_poses(c2w)[:, :3, 2])


def scene_center(c2w) -> np.ndarray:
  """[3] world point closest (least squares) to the optical axes of all cameras.

  Minimises ``sum_i |(I - d_i d_i^T)(p - o_i)|^2`` over p, the squared distances from p
  to each axis (centre ``o_i``, unit direction ``d_i``).

  Raises:
    ValueError: fewer than 2 cameras, or (nearly) parallel axes, as in a
      forward-facing rig, where no such point is well defined.
  """
  poses = _check_poses(c2w, min_views=2)
  d = _unit(poses[:, :3, 2])
  o = poses[:, :3, 3]
  proj = np.eye(3) - d[:, :, None] * d[:, None, :]  # [N, 3, 3] projectors off each axis
  a = proj.sum(0)
  b = np.einsum("nij,nj->i", proj, o)
  if np.linalg.eigvalsh(a)[0] < _MIN_AXIS_SPREAD * len(poses):
    raise ValueError("the cameras' optical axes are (nearly) parallel, so they share no "
                     "centre; for forward-facing scenes use spiral_path")
  return np.linalg.solve(a, b)


def estimate_up(c2w) -> np.ndarray:
  """[3] unit world 'up' of a set of cameras.

  Cameras held upright (no roll, as any ``look_at`` camera) have their x axis (image
  right) perpendicular to the world up, whatever their pitch. So 'up' is taken as the
  direction most perpendicular to all x axes (the smallest eigenvector of
  ``sum x_i x_i^T``), signed to agree with the average image-up (camera -y). This is
  exact for orbits at any mix of elevations, where the average image-up alone is
  tilted towards the side with more cameras. When the x axes are nearly parallel
  (a forward-facing rig) the eigenvector is undetermined, and the average image-up
  is returned instead.
  """
  poses = _check_poses(c2w)
  mean_up = -poses[:, :3, 1].mean(0)
  if np.linalg.norm(mean_up) < 1e-6:
    raise ValueError("cannot estimate 'up': the cameras' image-up directions cancel out")
  mean_up = _unit(mean_up)
  x = _unit(poses[:, :3, 0])
  evals, evecs = np.linalg.eigh(x.T @ x)
  # The second eigenvalue measures how far the x axes turn (about N * yaw spread^2 / 12
  # for small spreads); 0.01 * N means roughly 20 degrees of yaw.
  if evals[1] > _MIN_YAW_SPREAD * len(poses):
    up = evecs[:, 0]
    up = up if up @ mean_up >= 0 else -up
    if up @ mean_up > np.cos(np.radians(_MAX_UP_TILT_DEG)):
      return up
  return mean_up


def circle_path(c2w, num_frames: int, up=None, center=None, radius_scale: float = 1.0,
                elevation_deg: float | None = None) -> np.ndarray:
  """A 360-degree orbit around an object-centric scene.

  The orbit circles the up axis through the scene centre at the cameras' mean distance
  from the centre and their mean elevation (clamped to +-85 degrees), starting at the
  azimuth of the first camera. Each frame looks at the centre, upright (image down =
  world -up).

  Args:
    c2w: [N, 4, 4] camera-to-world matrices of the scene's cameras (N >= 2).
    num_frames: F, frames in one full turn (the last frame stops one step short of
      the first, so the video loops seamlessly).
    up: [3] world up direction; default ``estimate_up(c2w)``.
    center: [3] point to orbit and look at; default ``scene_center(c2w)``.
    radius_scale: multiplies the orbit's distance to the centre.
    elevation_deg: orbit elevation above the plane normal to up; default the mean
      elevation of the cameras.

  Returns:
    [F, 4, 4] float32 camera-to-world matrices.
  """
  poses = _check_poses(c2w, min_views=2)
  num_frames = _check_num_frames(num_frames)
  if not (np.isfinite(radius_scale) and radius_scale > 0):
    raise ValueError(f"radius_scale must be positive, got {radius_scale}")
  up = estimate_up(poses) if up is None else np.asarray(up, np.float64)
  if up.shape != (3,) or not np.all(np.isfinite(up)) or np.linalg.norm(up) < 1e-12:
    raise ValueError(f"up must be a finite nonzero [3] vector, got {up}")
  up = _unit(up)
  center = scene_center(poses) if center is None else np.asarray(center, np.float64)
  if center.shape != (3,) or not np.all(np.isfinite(center)):
    raise ValueError(f"center must be a finite [3] point, got {center}")

  offsets = poses[:, :3, 3] - center
  dist = np.linalg.norm(offsets, axis=-1)
  if np.any(dist < 1e-9):
    raise ValueError("a camera sits at the scene centre; cannot orbit around it")
  # Cameras looking away from the centre (e.g. a panorama) have no object to orbit.
  facing = np.einsum("ni,ni->n", _unit(poses[:, :3, 2]), -offsets / dist[:, None])
  if facing.mean() <= 0:
    raise ValueError("the scene centre lies behind the cameras; circle_path needs cameras "
                     "that look inwards")
  radius = float(dist.mean()) * radius_scale
  if elevation_deg is None:
    elevation = float(np.mean(np.arcsin(np.clip(offsets @ up / dist, -1.0, 1.0))))
  else:
    elevation = np.radians(float(elevation_deg))
  limit = np.radians(_MAX_ELEVATION_DEG)
  elevation = float(np.clip(elevation, -limit, limit))

  # Orbit basis: e1 towards the first camera (projected off up), e2 = up x e1, so the
  # orbit turns counter-clockwise seen from above.
  e1 = offsets[0] - (offsets[0] @ up) * up
  if np.linalg.norm(e1) < 1e-6 * radius:  # first camera straight above: any direction
    e1 = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
  e1 = _unit(e1)
  e2 = np.cross(up, e1)
  angles = np.linspace(0.0, 2.0 * np.pi, num_frames, endpoint=False)
  height = radius * np.sin(elevation)
  ring = radius * np.cos(elevation)
  path = []
  for t in angles:
    eye = center + ring * (np.cos(t) * e1 + np.sin(t) * e2) + height * up
    path.append(look_at(eye, center, up))
  return _stack_path(path)


def average_pose(c2w) -> np.ndarray:
  """[4, 4] float64 'mean' camera: mean centre, mean optical axis, mean image-down.

  The axes are re-orthonormalised around the mean optical axis (z), keeping x in the
  plane of the mean image-down (y) and z.
  """
  poses = _check_poses(c2w)
  z = _unit(poses[:, :3, 2].sum(0))
  y_mean = poses[:, :3, 1].mean(0)
  x = np.cross(y_mean, z)  # OpenCV: x = y cross z
  if np.linalg.norm(x) < 1e-9:
    raise ValueError("cannot average poses: mean image-down is parallel to the mean "
                     "viewing direction")
  x = _unit(x)
  pose = np.eye(4)
  pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
  pose[:3, 3] = poses[:, :3, 3].mean(0)
  return pose


def focus_depth(near: float, far: float, dt: float = 0.75) -> float:
  """Depth the spiral looks at: ``1 / ((1 - dt) / near + dt / far)``.

  A weighted harmonic mean of the scene bounds, as LLFF uses: disparity (1/depth) is
  interpolated, so the focus sits nearer than the arithmetic mean, where forward-facing
  scenes have most of their content in view.
  """
  near, far = _check_depth_range(near, far)
  if not 0.0 <= dt <= 1.0:
    raise ValueError(f"dt must be in [0, 1], got {dt}")
  return 1.0 / ((1.0 - dt) / near + dt / far)


def spiral_path(c2w, near: float, far: float, num_frames: int, rots: float = 2.0,
                zrate: float = 0.5, radius_scale: float = 1.0, dt: float = 0.75
                ) -> np.ndarray:
  """A spiral in front of a forward-facing (LLFF-style) rig.

  In the frame of ``average_pose(c2w)``, frame k sits at
  ``r * (cos t, sin t, sin(zrate * t))`` with ``t = 2 pi rots k / F``, where ``r`` is the
  90th percentile of |camera centre - mean centre| per axis (the extent of the rig), and
  looks at the point ``focus_depth(near, far, dt)`` in front of the average camera.

  Args:
    c2w: [N, 4, 4] camera-to-world matrices of the scene's cameras.
    near, far: scene depth bounds (0 < near < far).
    num_frames: F.
    rots: turns of the spiral over the whole path.
    zrate: forward/backward wobble frequency, in cycles per turn.
    radius_scale: multiplies the radii.
    dt: focus weight (0: focus at near, 1: at far).

  Returns:
    [F, 4, 4] float32 camera-to-world matrices.
  """
  poses = _check_poses(c2w)
  num_frames = _check_num_frames(num_frames)
  if not (np.isfinite(radius_scale) and radius_scale > 0):
    raise ValueError(f"radius_scale must be positive, got {radius_scale}")
  if not (np.isfinite(rots) and np.isfinite(zrate)):
    raise ValueError(f"rots and zrate must be finite, got {rots}, {zrate}")
  focus = focus_depth(near, far, dt)
  avg = average_pose(poses)
  rot, mean_centre = avg[:3, :3], avg[:3, 3]
  local = (poses[:, :3, 3] - mean_centre) @ rot  # centres in the average camera's frame
  radii = np.percentile(np.abs(local), 90, axis=0) * radius_scale
  target = mean_centre + focus * rot[:, 2]
  up = -rot[:, 1]
  path = []
  for t in np.linspace(0.0, 2.0 * np.pi * rots, num_frames, endpoint=False):
    eye = mean_centre + rot @ (radii * np.array([np.cos(t), np.sin(t), np.sin(zrate * t)]))
    path.append(look_at(eye, target, up))
  return _stack_path(path)


def rotation_to_quaternion(rot) -> np.ndarray:
  """[3, 3] rotation -> unit quaternion (w, x, y, z) with w >= 0."""
  m = np.asarray(rot, np.float64)
  # The largest of the four squared components gives a well-conditioned division.
  sq = np.array([1 + m[0, 0] + m[1, 1] + m[2, 2], 1 + m[0, 0] - m[1, 1] - m[2, 2],
                 1 - m[0, 0] + m[1, 1] - m[2, 2], 1 - m[0, 0] - m[1, 1] + m[2, 2]])
  k = int(np.argmax(sq))
  r = 0.5 * np.sqrt(max(sq[k], 1e-300))
  d = 0.25 / r
  if k == 0:
    q = [r, (m[2, 1] - m[1, 2]) * d, (m[0, 2] - m[2, 0]) * d, (m[1, 0] - m[0, 1]) * d]
  elif k == 1:
    q = [(m[2, 1] - m[1, 2]) * d, r, (m[0, 1] + m[1, 0]) * d, (m[0, 2] + m[2, 0]) * d]
  elif k == 2:
    q = [(m[0, 2] - m[2, 0]) * d, (m[0, 1] + m[1, 0]) * d, r, (m[1, 2] + m[2, 1]) * d]
  else:
    q = [(m[1, 0] - m[0, 1]) * d, (m[0, 2] + m[2, 0]) * d, (m[1, 2] + m[2, 1]) * d, r]
  q = np.asarray(q) / np.linalg.norm(q)
  return -q if q[0] < 0 else q


def quaternion_to_rotation(q) -> np.ndarray:
  """Unit quaternion (w, x, y, z) -> [3, 3] rotation, in float64 NumPy."""
  return rig.quaternion_to_rotation(np.asarray(q, np.float64), xp=np)


def slerp(q0, q1, t: float) -> np.ndarray:
  """Spherical interpolation between unit quaternions along the shorter arc (t in [0, 1])."""
  q0, q1 = np.asarray(q0, np.float64), np.asarray(q1, np.float64)
  dot = float(q0 @ q1)
  if dot < 0:
    q1, dot = -q1, -dot
  if dot > 1 - 1e-9:  # (nearly) the same rotation
    q = q0 + t * (q1 - q0)
    return q / np.linalg.norm(q)
  theta = np.arccos(dot)
  return (np.sin((1 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)


def neighbour_chain(c2w) -> np.ndarray:
  """An order of the cameras that walks between nearby centres: a greedy nearest-neighbour
  chain from the camera farthest from the mean centre (one end of the rig)."""
  centres = _check_poses(c2w)[:, :3, 3]
  dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
  order = [int(np.argmax(np.linalg.norm(centres - centres.mean(0), axis=-1)))]
  left = set(range(len(centres))) - set(order)
  while left:
    nxt = min(left, key=lambda j: (dist[order[-1], j], j))
    order.append(nxt)
    left.remove(nxt)
  return np.asarray(order)


def interpolate_path(c2w, num_frames: int, order=None) -> np.ndarray:
  """A path through the input cameras: frame 0 is the first camera of ``order``, the last
  frame its last camera; between two cameras the centre moves along the straight segment
  and the rotation turns spherically (slerp). Frames are spaced evenly in a measure that
  gives each segment its share of the centres' path plus its share of the total turn.

  Args:
    c2w: [N, 4, 4] camera-to-world matrices (N >= 2).
    num_frames: F >= 2.
    order: the cameras to pass, in order (indices into ``c2w``); default
      ``neighbour_chain(c2w)``.

  Returns:
    [F, 4, 4] float32 camera-to-world matrices.
  """
  poses = _check_poses(c2w, min_views=2)
  num_frames = _check_num_frames(num_frames)
  if num_frames < 2:
    raise ValueError(f"an interpolated path needs at least 2 frames, got {num_frames}")
  order = neighbour_chain(poses) if order is None else np.asarray(order, np.int64)
  if order.ndim != 1 or len(order) < 2 or order.min() < 0 or order.max() >= len(poses):
    raise ValueError(f"order must list at least 2 of the {len(poses)} cameras, got {order}")
  keys = poses[order]
  centres = keys[:, :3, 3]
  seg = np.linalg.norm(np.diff(centres, axis=0), axis=-1)
  quats = [rotation_to_quaternion(k[:3, :3]) for k in keys]
  angles = rotation_angle_deg(keys[:-1, :3, :3], keys[1:, :3, :3])
  # A segment's length is its share of the path plus its share of the turning, so that
  # cameras at one centre (a rotating tripod) still take frames to turn.
  step = sum(x / x.sum() for x in (seg, angles) if x.sum() > 1e-12)
  if np.isscalar(step):
    raise ValueError("every camera of the path has the same pose")
  cum = np.concatenate([[0.0], np.cumsum(step)])
  path = []
  for s in np.linspace(0.0, cum[-1], num_frames):
    i = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(keys) - 2))
    t = 0.0 if step[i] == 0 else float((s - cum[i]) / step[i])
    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_rotation(slerp(quats[i], quats[i + 1], t))
    pose[:3, 3] = (1 - t) * centres[i] + t * centres[i + 1]
    path.append(pose)
  return _stack_path(path)


def path_kind(c2w, spread_deg: float = 30.0) -> str:
  """'spiral' for forward-facing cameras, 'circle' for cameras around an object.

  Forward-facing rigs have nearly parallel optical axes; cameras around an object look
  in widely different directions. The 90th percentile angle between each axis and the
  mean axis (robust to a stray camera) decides: above ``spread_deg`` it is 'circle'.
  """
  d = viewing_directions(c2w)
  mean = d.mean(0)
  if np.linalg.norm(mean) < 1e-6:  # directions cancel: cameras all around
    return "circle"
  angles = np.degrees(np.arccos(np.clip(d @ _unit(mean), -1.0, 1.0)))
  return "circle" if np.percentile(angles, 90) > spread_deg else "spiral"


def auto_path(c2w, near: float, far: float, num_frames: int, spread_deg: float = 30.0
              ) -> np.ndarray:
  """``circle_path`` or ``spiral_path``, whichever ``path_kind`` picks.

  Returns:
    [F, 4, 4] float32 camera-to-world matrices.
  """
  _check_depth_range(near, far)
  if path_kind(c2w, spread_deg) == "circle":
    return circle_path(c2w, num_frames)
  return spiral_path(c2w, near, far, num_frames)
