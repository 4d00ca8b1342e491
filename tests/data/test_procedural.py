"""Tests for the procedural NumPy multi-view renderer."""

import numpy as np
import pytest

from movenerf.data import procedural as P


def _unproject(scene, view, v, u):
  """World points [M, 3] of pixels (row v, col u) of ``view`` using its depth map."""
  K = scene.intrinsics[view].astype(np.float64)
  c2w = scene.c2w[view].astype(np.float64)
  pix = np.stack([u, v, np.ones_like(u)], axis=-1).astype(np.float64)
  d = pix @ np.linalg.inv(K).T @ c2w[:3, :3].T
  return c2w[:3, 3] + scene.depths[view, v, u][:, None].astype(np.float64) * d


def _project(scene, view, points):
  """Sub-pixel (u, v) [M, 2] and camera z-depth [M] of world ``points`` in ``view``."""
  K = scene.intrinsics[view].astype(np.float64)
  c2w = scene.c2w[view].astype(np.float64)
  cam = (points - c2w[:3, 3]) @ c2w[:3, :3]  # R^T (p - o), row-vector form
  uvw = cam @ K.T
  return uvw[:, :2] / uvw[:, 2:], cam[:, 2]


def _bilinear_depth(depth, uv):
  """Depth map [H, W] sampled at sub-pixel uv [M, 2] by bilinear interpolation
  of inverse depth; NaN where a neighbour is background or out of the image."""
  H, W = depth.shape
  u0 = np.clip(np.floor(uv[:, 0]).astype(int), 0, W - 2)
  v0 = np.clip(np.floor(uv[:, 1]).astype(int), 0, H - 2)
  fu, fv = uv[:, 0] - u0, uv[:, 1] - v0
  corners = depth.astype(np.float64)[v0[:, None] + [0, 0, 1, 1], u0[:, None] + [0, 1, 0, 1]]
  weights = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv], axis=-1)
  with np.errstate(divide="ignore"):
    inv = (weights / corners).sum(-1)
  return np.where((corners > 0).all(-1), 1.0 / inv, np.nan)


@pytest.mark.parametrize("kind", P.KINDS)
def test_deterministic_per_seed_and_seeds_differ(kind):
  a, b = P.make_scene(5, kind, num_views=4), P.make_scene(5, kind, num_views=4)
  for field in ("images", "depths", "masks", "intrinsics", "c2w"):
    x, y = getattr(a, field), getattr(b, field)
    assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), field
  assert (a.near, a.far, a.scene_id) == (b.near, b.far, b.scene_id)
  assert P.scene_spec(5, kind) == P.scene_spec(5, kind)
  c = P.make_scene(6, kind, num_views=4)
  assert np.abs(a.images.astype(int) - c.images.astype(int)).mean() > 5
  assert not np.allclose(a.c2w, c.c2w)
  assert P.scene_spec(5, kind) != P.scene_spec(6, kind)


def test_shapes_dtypes_and_id():
  s = P.make_scene(7, "object", num_views=3, height=24, width=32)
  assert s.images.shape == (3, 24, 32, 3) and s.images.dtype == np.uint8
  assert s.depths.shape == (3, 24, 32) and s.depths.dtype == np.float32
  assert s.masks.shape == (3, 24, 32) and s.masks.dtype == bool
  assert s.intrinsics.shape == (3, 3, 3) and s.intrinsics.dtype == np.float32
  assert s.c2w.shape == (3, 4, 4) and s.c2w.dtype == np.float32
  assert s.scene_id == "procedural_object_000007" and s.kind == "object"
  expected_k = [[35.2, 0, 15.5], [0, 35.2, 11.5], [0, 0, 1]]
  np.testing.assert_allclose(s.intrinsics[0], expected_k, rtol=1e-6)
  # Rotations are orthonormal with determinant +1.
  R = s.c2w[:, :3, :3].astype(np.float64)
  np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape),
                             atol=1e-6)
  np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-6)
  np.testing.assert_array_equal(s.c2w[:, 3], np.broadcast_to([0, 0, 0, 1], (3, 4)))


def test_look_at_opencv_convention():
  c2w = P.look_at(eye=(0.0, 0.0, -3.0), target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0))
  np.testing.assert_allclose(c2w[:3, 2], [0, 0, 1], atol=1e-12)  # z forward, toward target
  np.testing.assert_allclose(c2w[:3, 1], [0, -1, 0], atol=1e-12)  # y down = -up
  np.testing.assert_allclose(np.cross(c2w[:3, 0], c2w[:3, 1]), c2w[:3, 2], atol=1e-12)
  np.testing.assert_allclose(c2w[:3, 3], [0, 0, -3])
  with pytest.raises(ValueError):
    P.look_at((0, 0, 0), (0, 0, 0))
  with pytest.raises(ValueError):
    P.look_at((0, 0, 0), (0, 5, 0), up=(0, 1, 0))


@pytest.mark.parametrize("kind,seed", [("object", 3), ("object", 11), ("forward", 4)])
def test_multiview_depth_and_colour_consistency(kind, seed):
  scene = P.make_scene(seed, kind, num_views=10)
  spec = P.scene_spec(seed, kind)
  H, W = scene.masks.shape[1:]
  rng = np.random.default_rng(0)
  fg_v, fg_u = np.nonzero(scene.masks[0])
  pick = rng.choice(len(fg_v), size=min(300, len(fg_v)), replace=False)
  v0, u0 = fg_v[pick], fg_u[pick]
  points = _unproject(scene, 0, v0, u0)
  colour0 = scene.images[0, v0, u0].astype(np.float64)

  n_inside, n_beyond, n_visible, exact_err, map_err, colour_err = 0, 0, 0, [], [], []
  # The views nearest to view 0 share most of what it sees.
  centre_dist = np.linalg.norm(scene.c2w[1:, :3, 3] - scene.c2w[0, :3, 3], axis=-1)
  for j in 1 + np.argsort(centre_dist)[:5]:
    uv, z = _project(scene, j, points)
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
    if not inside.any():
      continue
    uv, z = uv[inside], z[inside]
    # Render view j exactly at each sub-pixel location: a 1x1 camera whose
    # principal point is shifted so the projected point falls on pixel (0, 0).
    K = np.repeat(scene.intrinsics[j : j + 1].astype(np.float64), len(uv), axis=0)
    K[:, 0, 2] -= uv[:, 0]
    K[:, 1, 2] -= uv[:, 1]
    c2w = np.repeat(scene.c2w[j : j + 1], len(uv), axis=0)
    img_j, depth_j, mask_j = P.render_views(spec, K, c2w, 1, 1)
    depth_j, mask_j = depth_j[:, 0, 0].astype(np.float64), mask_j[:, 0, 0]
    # A surface point exists at depth z, so view j can never see beyond it
    # (bar float32 rounding of the depth on exactly grazing silhouette rays).
    n_inside += len(z)
    n_beyond += np.sum(~mask_j | (depth_j > z + 1e-3))
    visible = np.abs(depth_j - z) < 1e-3
    n_visible += visible.sum()
    exact_err.extend(np.abs(depth_j - z)[visible])
    # The same (view-independent) colour is seen from view j ...
    seen0 = colour0[inside][visible]
    colour_err.extend(np.abs(img_j[visible, 0, 0].astype(np.float64) - seen0).max(-1))
    # ... and the stored depth map / image of view j agree with it. 1/z is
    # affine in (u, v) on a plane, so bilinear 1/z is exact inside box faces.
    map_err.extend(np.abs(_bilinear_depth(scene.depths[j], uv[visible]) - z[visible]))
    ui, vi = np.round(uv[visible]).astype(int).T
    colour_err.extend(np.abs(scene.images[j, vi, ui].astype(np.float64) - seen0).max(-1))
  assert n_beyond <= 0.005 * n_inside
  assert n_visible > 0.15 * n_inside  # occlusion must not hide most points: the test has teeth
  assert np.max(exact_err) < 1e-3
  # Interpolation is exact on box faces and planes, approximate on spheres
  # (curvature) and wrong across occlusion edges, hence the fractions.
  map_err = np.asarray(map_err)[~np.isnan(map_err)]
  assert len(map_err) > 100
  assert np.median(map_err) < 5e-3 and np.mean(map_err < 1e-2) > 0.7
  assert np.median(colour_err) <= 2.0


@pytest.mark.parametrize("kind", P.KINDS)
def test_foreground_depths_within_near_far(kind):
  for seed in range(4):
    s = P.make_scene(seed, kind, num_views=10)
    d = s.depths[s.masks]
    assert d.size > 0
    assert 0 < s.near < d.min() and d.max() < s.far
    assert np.all(s.depths[~s.masks] == 0) and np.all(np.isfinite(s.depths))


def test_object_near_far_hold_for_a_wide_lens():
  s = P.make_scene(2, "object", num_views=6, focal=12.0)
  d = s.depths[s.masks]
  assert s.masks.any() and s.near < d.min() and d.max() < s.far


def test_backgrounds():
  obj = P.make_scene(1, "object", num_views=6)
  assert 0.02 < obj.masks.mean() < 0.9
  assert np.all(obj.images[~obj.masks] == 255)
  fwd = P.make_scene(1, "forward", num_views=6)
  assert fwd.masks.mean() > 0.95


def _single_sphere_spec(radius):
  tex = P.Texture(color_a=(0.8, 0.2, 0.2), color_b=(0.2, 0.2, 0.8), cell=0.3, phase=(0.1, 0.2, 0.3))
  return P.SceneSpec(primitives=(P.Sphere(center=(0.0, 0.0, 0.0), radius=radius, texture=tex),))


@pytest.mark.parametrize("D,r", [(4.0, 1.0), (7.5, 0.4), (3.0, 2.5)])
def test_sphere_centre_depth_is_analytic(D, r):
  size = 65  # odd, so the principal point (W - 1) / 2 is the centre pixel
  f = 80.0
  K = np.array([[[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]]])
  c2w = P.look_at((0.0, 0.0, -D), (0.0, 0.0, 0.0))[None]
  images, depths, masks = P.render_views(_single_sphere_spec(r), K, c2w, size, size)
  c = size // 2
  assert masks[0, c, c]
  np.testing.assert_allclose(depths[0, c, c], D - r, rtol=1e-6)
  # Silhouette radius in pixels: f * tan(asin(r / D)).
  ang = np.arcsin(r / D)
  radius_px = f * np.tan(ang)
  v, u = np.mgrid[0:size, 0:size]
  rho = np.hypot(u - c, v - c)
  assert np.all(masks[0][rho < radius_px - 1]) and not np.any(masks[0][rho > radius_px + 1])
  # Off-centre depth: the ray through pixel (c + k, c) has direction (k / f, 0, 1).
  k = min(int(radius_px * 0.5), c)
  x = k / f
  a, b, cc = x * x + 1, -2 * D, D * D - r * r  # |(x t, 0, t - D)|^2 = r^2
  t = (-b - np.sqrt(b * b - 4 * a * cc)) / (2 * a)
  np.testing.assert_allclose(depths[0, c, c + k], t, rtol=1e-6)
  assert np.all(images[0][~masks[0]] == 255)


def test_box_and_plane_depths_are_analytic():
  tex = P.Texture((0.9, 0.9, 0.1), (0.1, 0.5, 0.1), pattern="stripes", cell=0.5,
                  axis=(0.0, 1.0, 0.0))
  box = P.Box(center=(0.0, 0.0, 5.0), half=(0.5, 0.5, 1.0), texture=tex)
  wall = P.Plane(point=(0.0, 0.0, 10.0), normal=(0.0, 0.0, -1.0), texture=tex)
  spec = P.SceneSpec(primitives=(box, wall), kind="forward")
  K = np.array([[[50.0, 0, 16], [0, 50.0, 16], [0, 0, 1]]])
  _, depths, masks = P.render_views(spec, K, P.look_at((0, 0, 0), (0, 0, 1))[None], 33, 33)
  assert masks.all()
  np.testing.assert_allclose(depths[0, 16, 16], 4.0, rtol=1e-6)  # front face at z = 4
  np.testing.assert_allclose(depths[0, 0, 0], 10.0, rtol=1e-6)  # wall: z-depth is constant


def test_render_views_reproduces_make_scene():
  s = P.make_scene(9, "forward", num_views=3, height=16, width=20)
  images, depths, masks = P.render_views(P.scene_spec(9, "forward"), s.intrinsics, s.c2w, 16, 20)
  assert images.tobytes() == s.images.tobytes() and depths.tobytes() == s.depths.tobytes()
  assert masks.tobytes() == s.masks.tobytes()


def test_argument_validation():
  with pytest.raises(ValueError, match="object.*forward"):
    P.make_scene(0, kind="indoor")
  with pytest.raises(ValueError, match="object.*forward"):
    P.scene_spec(0, kind="indoor")
  for kwargs in ({"num_views": 0}, {"height": 0}, {"width": -3}, {"focal": 0.0}, {"focal": -1.0}):
    with pytest.raises(ValueError):
      P.make_scene(0, **kwargs)
  with pytest.raises(ValueError):
    P.make_scene(-1)
  spec = P.scene_spec(0)
  with pytest.raises(ValueError):
    P.render_views(spec, np.eye(3)[None], np.eye(4)[None], 0, 8)
  with pytest.raises(ValueError):
    P.render_views(spec, np.eye(3)[None], np.eye(4)[None].repeat(2, 0), 8, 8)


def test_default_size_scene_is_fast_enough_and_sane():
  s = P.make_scene(0, "object")  # 20 views of 64x64; well under a second in practice
  assert s.images.shape == (20, 64, 64, 3)
  assert s.masks.mean(axis=(1, 2)).min() > 0.02  # the object is in every view


def test_generated_record_follows_the_options():
  opts = {"kind": "mixed", "num_views": 5, "height": 8, "width": 12, "holdout_every": 2}
  for seed, kind in ((4, "object"), (5, "forward")):  # "mixed": even seeds object-centric
    got = P.generated_record(seed, opts)
    want = P.make_record(seed, kind, 5, 8, 12, holdout_every=2)
    assert got.scene_id == want.scene_id
    np.testing.assert_array_equal(got.images, want.images)
    np.testing.assert_array_equal(got.split, want.split)
  assert P.generated_record(5, dict(opts, kind="object")).scene_id == P.make_record(
      5, "object", 5, 8, 12).scene_id
