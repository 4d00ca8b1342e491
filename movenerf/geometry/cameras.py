"""Pinhole cameras: the library's one camera convention and converters at the edges.

Convention inside movenerf
--------------------------
* Camera frame: OpenCV (x right, y down, z forward).
* ``intrinsics``: 3x3 ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.
* ``c2w``: 4x4 camera-to-world matrix (last row ``[0, 0, 0, 1]``).
* Pixel ``(u, v)`` (u = column, v = row) has integer coordinates at pixel centres:
  no +0.5 offset, as in the official GNT / IBRNet code.

Edges
-----
* Official GNT "34-float" layout: ``[H, W, K(4x4 row-major), c2w(4x4 row-major)]``
  (``to_gnt34`` / ``from_gnt34``).
* Blender / OpenGL camera-to-world (x right, y up, z backward): ``opengl_to_opencv``.
"""

from __future__ import annotations

import flax.struct
import jax.numpy as jnp
import numpy as np

GNT34_SIZE = 34


@flax.struct.dataclass
class Cameras:
  """A batch of pinhole cameras sharing one image size.

  Attributes:
    intrinsics: [..., 3, 3] pinhole matrices.
    c2w: [..., 4, 4] camera-to-world matrices (OpenCV camera frame).
    height: image height H in pixels (static).
    width: image width W in pixels (static).
  """

  intrinsics: jnp.ndarray
  c2w: jnp.ndarray
  height: int = flax.struct.field(pytree_node=False)
  width: int = flax.struct.field(pytree_node=False)

  @property
  def centers(self) -> jnp.ndarray:
    """[..., 3] camera centres in world coordinates."""
    return self.c2w[..., :3, 3]

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return tuple(self.c2w.shape[:-2])

  def __getitem__(self, index) -> "Cameras":
    return Cameras(self.intrinsics[index], self.c2w[index], self.height, self.width)


def validate(cams: Cameras) -> None:
  """Raises ValueError naming the problem when cameras are malformed (host-side check)."""
  k = np.asarray(cams.intrinsics)
  c = np.asarray(cams.c2w)
  if k.shape[-2:] != (3, 3):
    raise ValueError(f"intrinsics must be [..., 3, 3], got shape {k.shape}")
  if c.shape[-2:] != (4, 4):
    raise ValueError(f"c2w must be [..., 4, 4], got shape {c.shape}")
  if k.shape[:-2] != c.shape[:-2]:
    raise ValueError(f"intrinsics batch {k.shape[:-2]} != c2w batch {c.shape[:-2]}")
  if not np.all(np.isfinite(k)):
    raise ValueError("intrinsics contain NaN or inf")
  if not np.all(np.isfinite(c)):
    raise ValueError("camera poses (c2w) contain NaN or inf")
  if cams.height <= 0 or cams.width <= 0:
    raise ValueError(f"image size must be positive, got H={cams.height} W={cams.width}")
  if np.any(np.abs(np.linalg.det(c[..., :3, :3])) < 1e-8):
    raise ValueError("camera rotation (c2w[:3, :3]) is singular")


def from_gnt34(params) -> Cameras:
  """Official GNT 34-float cameras -> Cameras.

  Args:
    params: [..., 34] ``[H, W, K(4x4), c2w(4x4)]`` (row-major). All cameras must share H, W.

  Returns:
    Cameras with batch shape ``params.shape[:-1]``.
  """
  p = np.asarray(params, dtype=np.float32)
  if p.shape[-1] != GNT34_SIZE:
    raise ValueError(f"GNT cameras must have {GNT34_SIZE} floats in the last axis, got {p.shape}")
  if not np.all(np.isfinite(p)):
    raise ValueError("GNT camera array contains NaN or inf")
  hw = p[..., :2].reshape(-1, 2)
  if not np.all(hw == hw[0]):
    raise ValueError("all cameras in one batch must share the image size (H, W)")
  k4 = p[..., 2:18].reshape(p.shape[:-1] + (4, 4))
  c2w = p[..., 18:34].reshape(p.shape[:-1] + (4, 4))
  cams = Cameras(jnp.asarray(k4[..., :3, :3]), jnp.asarray(c2w), int(hw[0, 0]), int(hw[0, 1]))
  validate(cams)
  return cams


def to_gnt34(cams: Cameras) -> np.ndarray:
  """Cameras -> official GNT 34-float layout, [..., 34] float32."""
  k = np.asarray(cams.intrinsics, np.float32)
  batch = k.shape[:-2]
  k4 = np.zeros(batch + (4, 4), np.float32)
  k4[..., :3, :3] = k
  k4[..., 3, 3] = 1.0
  hw = np.broadcast_to(np.array([cams.height, cams.width], np.float32), batch + (2,))
  return np.concatenate(
      [hw, k4.reshape(batch + (16,)), np.asarray(cams.c2w, np.float32).reshape(batch + (16,))],
      axis=-1)


def opengl_to_opencv(c2w):
  """Camera-to-world of an OpenGL/Blender camera (y up, z back) -> OpenCV (y down, z fwd).

  Args:
    c2w: [..., 4, 4] (or [..., 3, 4]).
  Returns:
    Same shape, with the camera's y and z axes negated.
  """
  flip = np.diag([1.0, -1.0, -1.0, 1.0])[: c2w.shape[-1], : c2w.shape[-1]]
  return c2w @ flip.astype(np.asarray(c2w).dtype)


def pinhole_intrinsics(focal_x: float, focal_y: float, cx: float, cy: float) -> np.ndarray:
  """[3, 3] float32 pinhole matrix."""
  return np.array([[focal_x, 0, cx], [0, focal_y, cy], [0, 0, 1]], np.float32)


def scale_intrinsics(intrinsics, factor: float):
  """Intrinsics for an image resized by ``factor``: fx, fy, cx, cy all scaled.

  This is the rule the IBRNet/GNT loaders use (it ignores the half-pixel shift of
  the integer-centre convention, an error of (factor - 1) / 2 pixels), kept so that
  results stay comparable with published numbers.

  Args:
    intrinsics: [..., 3, 3].
    factor: new_size / old_size.
  """
  s = np.diag([factor, factor, 1.0]).astype(np.float32)
  return s @ intrinsics


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
  """[4, 4] float64 OpenCV camera-to-world of a camera at ``eye`` looking at ``target``.

  Camera z points at the target; ``up`` is the world direction that should appear
  upwards in the image (the camera's y axis points down, away from it).
  """
  eye, target, up = (np.asarray(a, np.float64) for a in (eye, target, up))
  z = target - eye
  if np.linalg.norm(z) < 1e-12:
    raise ValueError("look_at: eye and target coincide")
  z /= np.linalg.norm(z)
  x = np.cross(z, up)  # right = down x forward, with down = -up
  if np.linalg.norm(x) < 1e-9:
    raise ValueError("look_at: viewing direction is parallel to up")
  x /= np.linalg.norm(x)
  y = np.cross(z, x)
  c2w = np.eye(4)
  c2w[:3, :3] = np.stack([x, y, z], axis=1)
  c2w[:3, 3] = eye
  return c2w


def ring_cameras(num_views: int, height: int, width: int, radius: float = 4.0,
                 elevation_deg: float = 25.0) -> Cameras:
  """V cameras on a ring around the origin, looking at it (z up), focal length = width."""
  focal = 1.0 * width
  k = pinhole_intrinsics(focal, focal, (width - 1) / 2, (height - 1) / 2)
  el = np.deg2rad(elevation_deg)
  c2w = []
  for az in np.linspace(0, 2 * np.pi, num_views, endpoint=False):
    eye = radius * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
    c2w.append(look_at(eye, np.zeros(3)))
  return Cameras(jnp.asarray(np.stack([k] * num_views)), jnp.asarray(np.stack(c2w)),
                 height, width)
