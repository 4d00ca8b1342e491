"""Procedural multi-view scenes rendered by analytic ray casting (pure NumPy).

The dataset ships as code, so training and tests run offline: each seed gives
a random scene of spheres, axis-aligned boxes and (forward scenes only) planes,
rendered with exact cameras and exact depth maps.

Conventions
-----------
* World frame: right-handed, +y is "up" (used by the camera layouts only).
* Camera frame: OpenCV, x right, y down, z forward.
* ``intrinsics`` is ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; the default
  principal point is ``((W - 1) / 2, (H - 1) / 2)``.
* ``c2w`` is a 4x4 camera-to-world matrix ``[R | t]``.
* Pixel ``(u, v)`` (u = column, v = row, integer, no +0.5 offset) has the ray
  ``origin = c2w[:3, 3]`` and unnormalised direction
  ``d = R @ inv(K) @ [u, v, 1]`` whose camera-frame z is 1.
* Depth maps hold the camera-frame z-depth, i.e. the ``t`` with
  ``hit = origin + t * d`` for that unnormalised ``d``. Pixels that hit nothing
  get depth 0 and ``mask = False`` (no infs leave this module).

Shading is Lambertian with a fixed light plus ambient and the textures are
solid (evaluated at the 3-D surface point in the primitive's own frame), so a
surface point has the same colour in every view: multi-view correspondence is
exact up to texture edges and uint8 rounding.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Union

import numpy as np

from movenerf.data.formats import record
from movenerf.geometry import cameras

KINDS = ("object", "forward")
OBJECT_CAMERA_RADIUS = 4.0  # object cameras sit on this sphere ...
OBJECT_BOUND = 1.5  # ... and every object lies inside this ball.
_EPS = 1e-6  # minimum ray parameter, so a ray never hits its own origin.
Vec3 = tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Texture:
  """Two-colour solid texture: 3-D checkerboard or stripes.

  ``phase`` shifts the lattice so that lattice planes (where the colour
  flips) do not coincide with box faces or planes, which would make the
  colour there depend on floating-point noise.
  """

  color_a: Vec3
  color_b: Vec3
  pattern: str = "checker"  # "checker" or "stripes"
  cell: float = 0.25  # world size of one check / stripe
  axis: Vec3 = (1.0, 0.0, 0.0)  # stripe normal (stripes only)
  phase: Vec3 = (0.0, 0.0, 0.0)

  def colour(self, local: np.ndarray) -> np.ndarray:
    """Albedo [P, 3] at local surface coordinates ``local`` [P, 3]."""
    q = (local + np.asarray(self.phase)) / self.cell
    if self.pattern == "checker":
      parity = np.floor(q).sum(axis=-1)
    elif self.pattern == "stripes":
      parity = np.floor(q @ np.asarray(self.axis))
    else:
      raise ValueError(f"unknown texture pattern {self.pattern!r}; expected 'checker' or 'stripes'")
    even = (parity.astype(np.int64) % 2 == 0)[:, None]
    return np.where(even, np.asarray(self.color_a), np.asarray(self.color_b))


# ``intersect(o [3], d [P, 3])`` of every primitive returns t [P] (inf on a
# miss), the unit normal [P, 3] and the hit point in the primitive's frame [P, 3].
def _hit_points(o, d, t, hit):
  # Misses get t = 0 so that inf * 0 never produces NaNs or warnings.
  return o + np.where(hit, t, 0.0)[:, None] * d


@dataclasses.dataclass(frozen=True)
class Sphere:
  center: Vec3
  radius: float
  texture: Texture

  def intersect(self, o: np.ndarray, d: np.ndarray):
    c = np.asarray(self.center)
    oc = o - c
    a = np.einsum("pi,pi->p", d, d)
    b = d @ oc  # half of the usual "b" in the quadratic
    disc = b * b - a * (oc @ oc - self.radius**2)
    sq = np.sqrt(np.maximum(disc, 0.0))
    t_in, t_out = (-b - sq) / a, (-b + sq) / a
    t = np.where(t_in > _EPS, t_in, t_out)  # far root if the origin is inside
    hit = (disc >= 0) & (t > _EPS)
    local = _hit_points(o, d, t, hit) - c
    return np.where(hit, t, np.inf), local / self.radius, local


@dataclasses.dataclass(frozen=True)
class Box:
  """Axis-aligned box with centre ``center`` and half side lengths ``half``."""

  center: Vec3
  half: Vec3
  texture: Texture

  def intersect(self, o: np.ndarray, d: np.ndarray):
    c, h = np.asarray(self.center), np.asarray(self.half)
    # Slab test; a zero direction component gives +-inf (or NaN when the
    # origin is exactly on a slab plane, which then compares as a miss).
    with np.errstate(divide="ignore", invalid="ignore"):
      t1, t2 = (c - h - o) / d, (c + h - o) / d
    t_near = np.minimum(t1, t2).max(axis=-1)
    t_far = np.maximum(t1, t2).min(axis=-1)
    t = np.where(t_near > _EPS, t_near, t_far)
    hit = (t_far >= t_near) & (t > _EPS)
    local = _hit_points(o, d, t, hit) - c
    # The face hit is the axis where the point is relatively farthest out.
    q = local / h
    axis = np.abs(q).argmax(axis=-1)
    normal = np.zeros_like(local)
    rows = np.arange(len(q))
    normal[rows, axis] = np.sign(q[rows, axis])
    return np.where(hit, t, np.inf), normal, local


@dataclasses.dataclass(frozen=True)
class Plane:
  """Infinite plane through ``point`` with normal ``normal`` (two-sided)."""

  point: Vec3
  normal: Vec3
  texture: Texture

  def intersect(self, o: np.ndarray, d: np.ndarray):
    p0 = np.asarray(self.point)
    n = np.asarray(self.normal) / np.linalg.norm(self.normal)
    denom = d @ n
    with np.errstate(divide="ignore", invalid="ignore"):
      t = ((p0 - o) @ n) / denom
    hit = (np.abs(denom) > 1e-12) & (t > _EPS)
    local = _hit_points(o, d, t, hit) - p0
    # Face the normal toward the ray so the plane is lit from either side;
    # still view-independent because all cameras sit on one side.
    normal = -np.sign(denom)[:, None] * n
    return np.where(hit, t, np.inf), normal, local


Primitive = Union[Sphere, Box, Plane]


@dataclasses.dataclass(frozen=True)
class SceneSpec:
  """The random content of a scene: primitives, lighting and background."""

  primitives: tuple[Primitive, ...]
  kind: str = "object"
  light_dir: Vec3 = (0.3, 0.8, -0.5)  # direction toward the light (world)
  ambient: float = 0.35
  background: Vec3 = (1.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous
class Scene:
  """Rendered views of one scene (N views of H x W pixels)."""

  images: np.ndarray  # [N, H, W, 3] uint8
  depths: np.ndarray  # [N, H, W] float32, z-depth, 0 where background
  masks: np.ndarray  # [N, H, W] bool, True on objects
  intrinsics: np.ndarray  # [N, 3, 3] float32
  c2w: np.ndarray  # [N, 4, 4] float32, OpenCV convention
  near: float
  far: float  # [near, far] contains every surface depth seen by every camera
  kind: str  # "object" or "forward"
  scene_id: str  # e.g. "procedural_object_000007"


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"unknown scene kind {kind!r}; allowed kinds: {', '.join(KINDS)}")


def _check_seed(seed: int) -> None:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
  """``cameras.look_at`` with this module's world up (+y): [4, 4] float64, OpenCV."""
  return cameras.look_at(eye, target, up)


def _random_texture(rng: np.random.Generator, cell_range: tuple[float, float]) -> Texture:
  a = rng.uniform(0.2, 0.95, size=3)
  b = a * rng.uniform(0.15, 0.5)  # darker shade of the same hue: guaranteed contrast
  axis = rng.normal(size=3)
  axis = tuple((axis / np.linalg.norm(axis)).tolist())
  pattern = str(rng.choice(["checker", "stripes"]))
  cell = float(rng.uniform(*cell_range))
  phase = tuple(rng.uniform(0.0, 1.0, size=3).tolist())
  return Texture(tuple(a.tolist()), tuple(b.tolist()), pattern, cell, axis, phase)


def _random_solid(rng: np.random.Generator, center: np.ndarray, size: float,
                  cell_range: tuple[float, float]) -> Primitive:
  """A sphere or box whose bounding sphere around ``center`` has radius ``size``."""
  tex = _random_texture(rng, cell_range)
  if rng.uniform() < 0.5:
    return Sphere(tuple(center.tolist()), float(size), tex)
  half = rng.uniform(0.5, 1.0, size=3)
  half *= size / np.linalg.norm(half)  # half-diagonal = size
  return Box(tuple(center.tolist()), tuple(half.tolist()), tex)


def scene_spec(seed: int, kind: str = "object") -> SceneSpec:
  """The random primitives of scene ``seed`` (deterministic per seed and kind)."""
  _check_kind(kind)
  _check_seed(seed)
  rng = np.random.default_rng(seed)
  prims: list[Primitive] = []
  if kind == "object":
    for _ in range(int(rng.integers(3, 7))):
      size = rng.uniform(0.3, 0.65)
      direction = rng.normal(size=3)
      direction /= np.linalg.norm(direction)
      # Uniform in the ball that keeps the whole solid within OBJECT_BOUND.
      dist = min(1.0, OBJECT_BOUND - size) * rng.uniform() ** (1 / 3)
      prims.append(_random_solid(rng, direction * dist, size, (0.12, 0.3)))
    light = rng.normal(size=3)
    light[1] = abs(light[1]) + 0.5  # light from above
    background: Vec3 = (1.0, 1.0, 1.0)
  else:
    floor_y = -1.6
    for _ in range(int(rng.integers(2, 5))):
      size = rng.uniform(0.3, 0.7)
      z = rng.uniform(3.5, 7.5)
      # Inside the view frustum and above the floor.
      center = np.array([rng.uniform(-0.3, 0.3) * z, rng.uniform(floor_y + size, 0.2 * z), z])
      prims.append(_random_solid(rng, center, size, (0.15, 0.35)))
    prims.append(Plane((0.0, 0.0, 9.0), (0.0, 0.0, -1.0), _random_texture(rng, (0.6, 1.2))))
    prims.append(Plane((0.0, floor_y, 0.0), (0.0, 1.0, 0.0), _random_texture(rng, (0.4, 0.9))))
    light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(0.3, 1.0), -1.0])  # from the camera side
    background = (0.6, 0.75, 0.95)  # sky; only rays that miss both planes see it
  light /= np.linalg.norm(light)
  return SceneSpec(tuple(prims), kind, tuple(light.tolist()), 0.35, background)


def _cast(spec: SceneSpec, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Nearest hit ``t`` [P] (inf on a miss) and shaded colour [P, 3] in [0, 1]."""
  best_t = np.full(len(d), np.inf)
  rgb = np.tile(np.asarray(spec.background, dtype=np.float64), (len(d), 1))
  light = np.asarray(spec.light_dir, dtype=np.float64)
  light = light / np.linalg.norm(light)
  for prim in spec.primitives:
    t, normal, local = prim.intersect(o, d)
    closer = t < best_t
    if not closer.any():
      continue
    lambert = np.clip(normal[closer] @ light, 0.0, None)
    shade = spec.ambient + (1.0 - spec.ambient) * lambert
    best_t[closer] = t[closer]
    rgb[closer] = prim.texture.colour(local[closer]) * shade[:, None]
  return best_t, np.clip(rgb, 0.0, 1.0)


def render_views(
    spec: SceneSpec, intrinsics: np.ndarray, c2w: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Render cameras ``intrinsics`` [N, 3, 3], ``c2w`` [N, 4, 4] of ``spec``.

  Returns images [N, H, W, 3] uint8, depths [N, H, W] float32 (z-depth, 0 on
  background) and masks [N, H, W] bool.
  """
  _check_size(height=height, width=width)
  intrinsics = np.asarray(intrinsics, dtype=np.float64)
  c2w = np.asarray(c2w, dtype=np.float64)
  if intrinsics.ndim != 3 or intrinsics.shape[1:] != (3, 3):
    raise ValueError(f"intrinsics must have shape [N, 3, 3], got {intrinsics.shape}")
  if c2w.shape != (len(intrinsics), 4, 4):
    raise ValueError(f"c2w must have shape [{len(intrinsics)}, 4, 4], got {c2w.shape}")
  n = len(intrinsics)
  v, u = np.mgrid[0:height, 0:width].astype(np.float64)
  pix = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)
  images = np.empty((n, height, width, 3), np.uint8)
  depths = np.empty((n, height, width), np.float32)
  masks = np.empty((n, height, width), bool)
  # One view at a time bounds memory at O(H * W) for any number of views.
  for i in range(n):
    d_cam = pix @ np.linalg.inv(intrinsics[i]).T
    t, rgb = _cast(spec, c2w[i, :3, 3], d_cam @ c2w[i, :3, :3].T)
    hit = np.isfinite(t)
    # t times camera-z of d is the z-depth (and equals t for a proper K).
    depth = np.where(hit, t, 0.0) * d_cam[:, 2]
    images[i] = np.round(rgb * 255.0).astype(np.uint8).reshape(height, width, 3)
    depths[i] = depth.reshape(height, width)
    masks[i] = hit.reshape(height, width)
  return images, depths, masks


def _check_size(**sizes: int) -> None:
  for name, value in sizes.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _cameras(seed: int, kind: str, num_views: int) -> np.ndarray:
  """Camera-to-world matrices [N, 4, 4] (float64) for a scene kind."""
  # A separate stream from the scene content, so the spec does not depend on N.
  rng = np.random.default_rng([seed, 1])
  if kind == "object":
    az = rng.uniform(0.0, 2.0 * math.pi, size=num_views)
    el = np.radians(rng.uniform(10.0, 60.0, size=num_views))
    eyes = np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], -1)
    eyes *= OBJECT_CAMERA_RADIUS
    return np.stack([look_at(eye, (0.0, 0.0, 0.0)) for eye in eyes])
  # Forward: a jittered grid in the z = 0 plane, like a hand-held LLFF capture.
  cols = math.ceil(math.sqrt(num_views))
  rows = math.ceil(num_views / cols)
  spacing = 0.25
  c2ws = []
  for k in range(num_views):
    r, c = divmod(k, cols)
    eye = np.array([(c - (cols - 1) / 2) * spacing, ((rows - 1) / 2 - r) * spacing, 0.0])
    eye += rng.uniform(-0.05, 0.05, size=3)
    target = np.array([0.0, -0.2, 5.5]) + rng.uniform(-0.2, 0.2, size=3)
    c2ws.append(look_at(eye, target))
  return np.stack(c2ws)


def make_scene(
    seed: int,
    kind: str = "object",
    num_views: int = 20,
    height: int = 64,
    width: int = 64,
    focal: float | None = None,
) -> Scene:
  """Generate and render scene ``seed`` of ``kind`` from ``num_views`` cameras.

  ``focal`` (pixels, fx = fy) defaults to 1.1 * width so objects fill the view.
  """
  _check_kind(kind)
  _check_seed(seed)
  _check_size(num_views=num_views, height=height, width=width)
  if focal is None:
    focal = 1.1 * width
  if not (isinstance(focal, (int, float, np.number)) and math.isfinite(focal) and focal > 0):
    raise ValueError(f"focal must be a positive finite number, got {focal!r}")
  spec = scene_spec(seed, kind)
  k = np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])
  intrinsics = np.tile(k, (num_views, 1, 1)).astype(np.float32)
  c2w = _cameras(seed, kind, num_views).astype(np.float32)
  # Render from the float32 cameras we return, so they reproduce the depths exactly.
  images, depths, masks = render_views(spec, intrinsics, c2w, height, width)
  if kind == "object":
    # z-depth = R + p . forward with |p| <= OBJECT_BOUND, for any focal.
    near, far = OBJECT_CAMERA_RADIUS - 2.0, OBJECT_CAMERA_RADIUS + 2.0
  else:
    fg = depths[masks]
    near, far = (0.9 * float(fg.min()), 1.1 * float(fg.max())) if fg.size else (0.1, 20.0)
  return Scene(images, depths, masks, intrinsics, c2w, float(near), float(far), kind,
               f"procedural_{kind}_{seed:06d}")


def make_record(seed: int, kind: str = "object", num_views: int = 20, height: int = 64,
                width: int = 64, holdout_every: int = 8) -> record.SceneRecord:
  """Scene ``seed`` as a :class:`~movenerf.data.formats.record.SceneRecord` (with depths
  and masks).

  Views ``0, holdout_every, 2 * holdout_every, ...`` form the "test" split and the rest
  "train", as in the LLFF hold-out protocol; ``holdout_every <= 0`` makes every view
  "train". Near/far are the scene's exact bounds, repeated per view.
  """
  scene = make_scene(seed, kind, num_views, height, width)
  split = np.full([num_views], "train", dtype="<U5")
  if holdout_every > 0:
    split[::holdout_every] = "test"
  return record.SceneRecord(
      scene_id=scene.scene_id,
      images=scene.images,
      intrinsics=scene.intrinsics,
      c2w=scene.c2w,
      near=np.full([num_views], scene.near, np.float32),
      far=np.full([num_views], scene.far, np.float32),
      split=split,
      masks=scene.masks,
      depths=scene.depths)


def generated_record(seed: int, options: Mapping[str, Any]) -> record.SceneRecord:
  """Scene ``seed`` under the options of the "generated" dataset format.

  Args:
    seed: the scene's seed.
    options: every key of :data:`movenerf.data.formats.registry.GENERATED_OPTIONS` (as
      ``registry.parse_options("generated", ...)`` returns them); ``num_scenes`` and
      ``first_seed`` are not used here. ``options["kind"]`` is "object", "forward" or
      "mixed" (alternating by seed, even seeds object-centric).

  Returns:
    The scene's record, as :func:`make_record` makes it.
  """
  kind = options["kind"]
  if kind == "mixed":
    kind = KINDS[seed % len(KINDS)]
  return make_record(seed, kind, options["num_views"], options["height"], options["width"],
                     options["holdout_every"])
