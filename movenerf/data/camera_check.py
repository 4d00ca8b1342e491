"""Do a scene's cameras agree with its images, depth or sparse points? Checked before
training, with a verdict per scene.

A :class:`~movenerf.data.formats.record.SceneRecord` holds OpenCV camera-to-world poses
and 3x3 intrinsics whatever format it was read from; a reader that gets a convention
wrong still gives cameras that look plausible. :func:`check_scene` tests them against
evidence that does not come from the cameras, picking the first the scene has:

* ``points``: the sparse points structure from motion left (``sparse/`` of
  :mod:`movenerf.tools.process_images`, :func:`movenerf.data.sfm.read_sparse`). Each
  point is projected into every view that observed it: it must be in front of the
  camera, inside the image and within the view's near/far, and land where the view
  observed it (reprojection error, when COLMAP's model is there).
* ``depth``: per-view depth maps (generated scenes). Pixels of a few reference views are
  lifted to 3-D with their depth and projected into the reference's nearest source
  views: they must be in front of them and meet their depth maps (the source view's
  depth at the projected pixel within :data:`DEPTH_TOLERANCE` of the projected depth);
  lifted back from there they must come home (reprojection error); the depths must lie
  within near/far.
* ``images``: nothing but the photos (LLFF, Blender, DTU, the IBRNet collection). SIFT
  keypoints of a few reference views are matched with their nearest source views
  (:mod:`movenerf.data.matching`: the matches come from the images alone); their
  symmetric epipolar distance (:mod:`movenerf.geometry.two_view`) under the cameras is
  measured, and the points they triangulate must be in front of both cameras and within
  their near/far.

Thresholds (each check's figures with 4 reference views and 2 source views each, the
defaults). The correct cameras of the shared real pack (LLFF fern and flower
``images_8``, Blender lego and mic at 100x100, DTU scans 24 and 37 at 200x150) give a
median epipolar distance of 0.14 to 0.51 px, at least 99 % of their triangulated matches
in front of both cameras and 98 % within near/far; a generated object scene at 128x128
written in each IBRNet format 0.29 px. The three wrong conventions of
:data:`CORRUPTIONS` give 1.5 to 39 px, or put most points behind the cameras or outside
near/far, or leave the views the cameras call nearest without matches; intrinsics scaled
by 2, which mostly keep the points in front, give 2.3 px at the least (mic) and 2.8 px
on the generated scene. :data:`EPIPOLAR_MAX_PX` = 1.5 px is three times the largest
correct figure and two thirds of the smallest wrong one. Depth (generated scenes at
64x64): correct cameras meet 80 to 90 % of the source views' depths (the rest is
occlusion), wrong ones at most 24 % on object scenes and 54 % on forward ones
(:data:`DEPTH_SEEN_MIN` = 0.7). Sparse points are observed by their views, so correct
cameras put all of them in front and inside with a reprojection error under a pixel
(0.44 px for fern's ``process_images`` reconstruction at ``images_2``); the wrong
conventions put none in front, or a third to four fifths inside, and move them by 29 to
155 px.

Blind spot: a rig whose cameras sit near the world origin looking along +z with small
rotations (the generated ``forward`` scenes) is nearly its own inverse: the inverse
poses project the scene within a pixel of the correct ones, so no check on them can
tell. Rigs in a world frame of their own (structure from motion's, the real datasets')
are not.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from movenerf.data import matching, samplers, sfm
from movenerf.data.formats import record
from movenerf.geometry import cameras, two_view

# Images check: the median over view pairs of each pair's median symmetric epipolar
# distance, in pixels of the scene's images.
EPIPOLAR_MAX_PX = 1.5
# ... measured on at least this many pairs with matching.MIN_MATCHES verified matches.
MIN_MATCHED_PAIRS = 2
# Images and depth checks: points in front of both cameras.
IN_FRONT_MIN = 0.9
# Depth check: how many pixels of a reference view are lifted; the relative depth
# difference within which a source view's depth map meets a point; the least share of
# (point, source view) pairs that meet; the largest median round-trip error (pixels).
DEPTH_POINTS = 400
DEPTH_TOLERANCE = 0.02
DEPTH_SEEN_MIN = 0.7
DEPTH_REPROJECTION_MAX_PX = 1.0
# Points check: observations in front / inside the image; median reprojection error.
POINTS_IN_FRONT_MIN = 0.95
POINTS_INSIDE_MIN = 0.95
POINTS_REPROJECTION_MAX_PX = 1.5
# Every check: the share of point depths within the views' near/far.
NEAR_FAR_MIN = 0.9
# The thresholds, as check_cameras.json records them.
THRESHOLDS = {
    "images": dict(epipolar_max_px=EPIPOLAR_MAX_PX, min_matched_pairs=MIN_MATCHED_PAIRS,
                   in_front_min=IN_FRONT_MIN, near_far_min=NEAR_FAR_MIN),
    "depth": dict(in_front_min=IN_FRONT_MIN, depth_seen_min=DEPTH_SEEN_MIN,
                  depth_tolerance=DEPTH_TOLERANCE,
                  reprojection_max_px=DEPTH_REPROJECTION_MAX_PX, near_far_min=NEAR_FAR_MIN),
    "points": dict(in_front_min=POINTS_IN_FRONT_MIN, inside_min=POINTS_INSIDE_MIN,
                   reprojection_max_px=POINTS_REPROJECTION_MAX_PX, near_far_min=NEAR_FAR_MIN),
}
# Pixels marked on the sheet per reference view.
PICKED = 8


# --- wrong conventions, on purpose ------------------------------------------------------

def flip_yz(rec: record.SceneRecord) -> record.SceneRecord:
  """The cameras with their y and z axes negated: an OpenGL (y up, z back) camera frame
  read as OpenCV's, or the reverse."""
  return dataclasses.replace(rec, c2w=cameras.opengl_to_opencv(rec.c2w))


def inverse_pose(rec: record.SceneRecord) -> record.SceneRecord:
  """World-to-camera matrices stored as camera-to-world (the inverse of each pose)."""
  inv = np.linalg.inv(rec.c2w.astype(np.float64)).astype(rec.c2w.dtype)
  return dataclasses.replace(rec, c2w=inv)


def intrinsics_x2(rec: record.SceneRecord) -> record.SceneRecord:
  """Intrinsics scaled by 2 (focal and principal point): those of images twice the size,
  as when a full-resolution focal is used with downscaled images."""
  return dataclasses.replace(rec, intrinsics=cameras.scale_intrinsics(rec.intrinsics, 2.0))


CORRUPTIONS: Mapping[str, Callable[[record.SceneRecord], record.SceneRecord]] = {
    "flip_yz": flip_yz, "inverse": inverse_pose, "intrinsics_x2": intrinsics_x2}


def corrupt(rec: record.SceneRecord, name: str) -> record.SceneRecord:
  """``rec`` with the wrong convention ``name`` (a key of :data:`CORRUPTIONS`)."""
  if name not in CORRUPTIONS:
    raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
  return CORRUPTIONS[name](rec)


# --- verdicts ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Criterion:
  """One figure of a check and the threshold it must meet.

  ``value`` None: not measured (too little evidence); it then decides nothing.
  """

  name: str
  what: str
  value: float | None
  threshold: float
  at_most: bool  # True: passes when value <= threshold; False: when value >= threshold
  unit: str = ""

  @property
  def passed(self) -> bool | None:
    if self.value is None:
      return None
    return bool(self.value <= self.threshold if self.at_most else self.value >= self.threshold)

  @property
  def rule(self) -> str:
    return f"{'<=' if self.at_most else '>='} {_number(self.threshold)}{self.unit}"

  @property
  def label(self) -> str:
    """A short name for tables."""
    return LABELS.get(self.name, self.name)

  def shown(self) -> str:
    """The value with its unit ("n/a" when not measured)."""
    return "n/a" if self.value is None else f"{_number(self.value)}{self.unit}"

  def describe(self) -> str:
    verdict = {None: "not measured", True: "pass", False: "FAIL"}[self.passed]
    return f"{self.what}: {self.shown()} ({self.rule}): {verdict}"

  def to_json(self) -> dict:
    if self.value is None or isinstance(self.value, (int, np.integer)):
      value = None if self.value is None else int(self.value)
    else:
      value = float(self.value) if np.isfinite(self.value) else str(float(self.value))
    return dict(name=self.name, what=self.what, value=value, threshold=self.threshold,
                rule=self.rule, unit=self.unit.strip(), passed=self.passed)


LABELS = {"matched_pairs": "matched pairs", "epipolar_px": "epipolar", "in_front": "in front",
          "near_far": "near/far", "depth_seen": "meets depth", "reprojection_px": "reprojection",
          "inside": "inside"}


def _number(x: float) -> str:
  if not np.isfinite(x):
    return str(x)
  if x == int(x) and abs(x) < 1e6:
    return str(int(x))
  return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


@dataclasses.dataclass(frozen=True, eq=False)
class Illustration:
  """What the sheet draws: pixels picked in a reference view, their epipolar segments in
  its source views, and marked points per view.

  Attributes:
    reference: the reference view.
    sources: [S] its source views.
    picked: [M, 2] pixels of the reference view.
    segments: [S, M, K, 2] points of each pixel's epipolar segment (near to far) in each
      source view; segment_front [S, M, K] whether each is in front of that camera.
    found: [S, M, 2] where each source view shows the picked point (a match or an
      observation; NaN where unknown).
    marks: per view, (view, xy [Q, 2], value [Q]): the points checked in it.
    mark_kind: "depth" (values are depths, scene units) or "epipolar" (pixels).
  """

  reference: int
  sources: tuple[int, ...]
  picked: np.ndarray
  segments: np.ndarray
  segment_front: np.ndarray
  found: np.ndarray
  marks: tuple[tuple[int, np.ndarray, np.ndarray], ...]
  mark_kind: str


@dataclasses.dataclass(frozen=True, eq=False)
class SceneCheck:
  """The verdict on one scene's cameras."""

  scene: str
  method: str  # "points", "depth", "images", or "none" when nothing could be checked
  criteria: tuple[Criterion, ...]
  figures: dict
  illustration: Illustration | None = None
  note: str = ""

  @property
  def passed(self) -> bool:
    """Every measured criterion passes, and at least one was measured."""
    measured = [c.passed for c in self.criteria if c.passed is not None]
    return bool(measured) and all(measured)

  @property
  def failed(self) -> list[Criterion]:
    return [c for c in self.criteria if c.passed is False]

  def summary(self) -> str:
    """One line: the verdict and the criteria that decided it."""
    if self.passed:
      return "pass: " + "; ".join(c.describe() for c in self.criteria if c.passed)
    reasons = [c.describe() for c in self.failed] or [self.note or "nothing measured"]
    return "FAIL: " + "; ".join(reasons)

  def to_json(self) -> dict:
    return dict(scene=self.scene, method=self.method, passed=self.passed,
                criteria=[c.to_json() for c in self.criteria], figures=self.figures,
                note=self.note)


# --- the plan: reference views and their nearest source views ----------------------------

def plan_views(rec: record.SceneRecord, num_views: int, num_sources: int
               ) -> list[tuple[int, np.ndarray]]:
  """``num_views`` reference views spread evenly over the scene, each with its
  ``num_sources`` nearest views by camera centre (``samplers.select_source_views``)."""
  n = rec.num_views
  if n < 2:
    return []
  refs = np.unique(np.round(np.linspace(0, n - 1, min(num_views, n))).astype(int))
  k = min(num_sources, n - 1)
  return [(int(a), samplers.select_source_views(rec.c2w[a], rec.c2w, k, exclude=[a]))
          for a in refs]


def _inside(xy: np.ndarray, height: int, width: int) -> np.ndarray:
  """Within the image's pixels (their centres +- half a pixel)."""
  finite = np.all(np.isfinite(xy), axis=-1)
  x, y = np.where(finite, xy[:, 0], -1e9), np.where(finite, xy[:, 1], -1e9)
  return finite & (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)


def _segments(rec, a, sources, picked, num=24):
  segs, fronts = [], []
  for b in sources:
    xy, front = two_view.epipolar_segments(
        picked, rec.near[a], rec.far[a], rec.intrinsics[a], rec.c2w[a], rec.intrinsics[b],
        rec.c2w[b], num=num)
    segs.append(xy)
    fronts.append(front)
  shape = (len(sources), len(picked), num)
  return (np.stack(segs) if segs else np.zeros(shape + (2,)),
          np.stack(fronts) if fronts else np.zeros(shape, bool))


def _spread(xy: np.ndarray, count: int) -> np.ndarray:
  """Indices of up to ``count`` points of ``xy`` [P, 2] far from each other (farthest
  point sampling from the one nearest the centroid)."""
  if len(xy) <= count:
    return np.arange(len(xy))
  chosen = [int(np.argmin(np.linalg.norm(xy - xy.mean(0), axis=-1)))]
  dist = np.linalg.norm(xy - xy[chosen[0]], axis=-1)
  while len(chosen) < count:
    nxt = int(np.argmax(dist))
    chosen.append(nxt)
    dist = np.minimum(dist, np.linalg.norm(xy - xy[nxt], axis=-1))
  return np.asarray(chosen)


def _fraction(mask_list) -> float | None:
  values = np.concatenate([np.asarray(m, bool).reshape(-1) for m in mask_list]) \
      if mask_list else np.zeros(0, bool)
  return float(values.mean()) if values.size else None


def _median(value_list) -> float | None:
  values = np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in value_list]) \
      if value_list else np.zeros(0)
  return float(np.median(values)) if values.size else None


def _in_bounds(z, near, far) -> np.ndarray:
  return (z >= near) & (z <= far)


# --- images ------------------------------------------------------------------------------

def _pair_distance(rec, a, b, xy_a, xy_b) -> np.ndarray:
  """Symmetric epipolar distance under the cameras, or, for cameras that share a
  centre, the distance to where their rotation sends the pixels."""
  ka, kb, ca, cb = rec.intrinsics[a], rec.intrinsics[b], rec.c2w[a], rec.c2w[b]
  if two_view.has_baseline(ca, cb):
    f = two_view.fundamental_matrix(ka, ca, kb, cb)
    return two_view.symmetric_epipolar_distance(f, xy_a, xy_b)
  return two_view.transfer_distance(two_view.rotation_homography(ka, ca, kb, cb), xy_a, xy_b)


def check_images(rec: record.SceneRecord, plan, cache: matching.Cache) -> SceneCheck:
  """The ``images`` check (module docstring) of the views of ``plan``."""
  pair_medians, fronts, ranges, pairs = [], [], [], []
  illustration = None
  for a, sources in plan:
    feats_a = cache.features(rec.images[a])
    found_per_source, marks = [], []
    for b in sources:
      m = cache.matches(rec.images[a], rec.images[b])
      pairs.append(dict(reference=a, source=int(b), matches=int(len(m))))
      if len(m) < matching.MIN_MATCHES:
        found_per_source.append({})
        continue
      xy_a, xy_b = feats_a.xy[m[:, 0]], cache.features(rec.images[b]).xy[m[:, 1]]
      dist = _pair_distance(rec, a, b, xy_a, xy_b)
      med = float(np.median(dist))
      pairs[-1]["median_epipolar_px"] = med
      pair_medians.append(med)
      if two_view.has_baseline(rec.c2w[a], rec.c2w[b]):
        points = two_view.triangulate(xy_a, xy_b, rec.intrinsics[a], rec.c2w[a],
                                      rec.intrinsics[b], rec.c2w[b])
        _, za = two_view.project(points, rec.intrinsics[a], rec.c2w[a])
        _, zb = two_view.project(points, rec.intrinsics[b], rec.c2w[b])
        front = (za > 0) & (zb > 0)
        fronts.append(front)
        ranges.append(front & _in_bounds(za, rec.near[a], rec.far[a])
                      & _in_bounds(zb, rec.near[b], rec.far[b]))
      found_per_source.append(dict(zip(m[:, 0].tolist(), xy_b)))
      marks.append((int(b), xy_b, dist))
    if illustration is None and any(found_per_source):
      # The reference's keypoints matched in the most source views, spread out.
      counts = {}
      for found in found_per_source:
        for i in found:
          counts[i] = counts.get(i, 0) + 1
      best = max(counts.values())
      keys = np.array(sorted(i for i, c in counts.items() if c == best))
      keys = keys[_spread(feats_a.xy[keys], PICKED)]
      picked = feats_a.xy[keys]
      segs, seg_front = _segments(rec, a, sources, picked)
      found = np.full([len(sources), len(keys), 2], np.nan)
      for s, fmap in enumerate(found_per_source):
        for j, key in enumerate(keys.tolist()):
          if key in fmap:
            found[s, j] = fmap[key]
      illustration = Illustration(a, tuple(int(b) for b in sources), picked, segs, seg_front,
                                  found, tuple(marks), "epipolar")
  matched = len(pair_medians)
  enough = matched >= MIN_MATCHED_PAIRS
  epipolar = float(np.median(pair_medians)) if enough else None
  criteria = (
      Criterion("matched_pairs", f"view pairs with >= {matching.MIN_MATCHES} verified "
                f"matches (of {len(pairs)})", matched, MIN_MATCHED_PAIRS, at_most=False),
      Criterion("epipolar_px", "median epipolar distance", epipolar, EPIPOLAR_MAX_PX,
                at_most=True, unit=" px"),
      Criterion("in_front", "triangulated matches in front of both cameras",
                _fraction(fronts) if enough else None, IN_FRONT_MIN, at_most=False),
      Criterion("near_far", "triangulated matches within near/far",
                _fraction(ranges) if enough else None, NEAR_FAR_MIN, at_most=False),
  )
  figures = dict(pairs=pairs, matches=int(sum(p["matches"] for p in pairs)))
  note = "" if enough else (f"only {matched} of {len(pairs)} view pairs have "
                            f"{matching.MIN_MATCHES} matches: the images cannot decide")
  return SceneCheck(rec.scene_id, "images", criteria, figures, illustration, note)


# --- depth -------------------------------------------------------------------------------

def _depth_pixels(depth: np.ndarray, count: int) -> np.ndarray:
  """[Q, 2] up to ``count`` pixels with depth > 0, on a regular grid."""
  v, u = np.nonzero(depth > 0)
  if len(v) > count:
    keep = np.round(np.linspace(0, len(v) - 1, count)).astype(int)
    v, u = v[keep], u[keep]
  return np.stack([u, v], axis=-1).astype(np.float64)


def check_depth(rec: record.SceneRecord, plan) -> SceneCheck:
  """The ``depth`` check (module docstring) of the views of ``plan``."""
  fronts, seens, errors, covers = [], [], [], []
  illustration = None
  h, w = rec.height, rec.width
  for a, sources in plan:
    xy_a = _depth_pixels(rec.depths[a], DEPTH_POINTS)
    if not len(xy_a):
      continue
    z_a = rec.depths[a][xy_a[:, 1].astype(int), xy_a[:, 0].astype(int)].astype(np.float64)
    covers.append(_in_bounds(z_a, rec.near[a], rec.far[a]))
    points = two_view.lift(xy_a, z_a, rec.intrinsics[a], rec.c2w[a])
    marks, found = [(a, xy_a, z_a)], []
    for b in sources:
      xy_b, z_b = two_view.project(points, rec.intrinsics[b], rec.c2w[b])
      front = z_b > 0
      inside = front & _inside(xy_b, h, w)
      pix = np.clip(np.round(np.nan_to_num(xy_b)), 0, [w - 1, h - 1]).astype(int)
      d_b = np.where(inside, rec.depths[b][pix[:, 1], pix[:, 0]], 0.0).astype(np.float64)
      hit = inside & (d_b > 0)
      seen = hit & (np.abs(z_b - d_b) <= DEPTH_TOLERANCE * np.abs(z_b))
      back = two_view.lift(pix[hit].astype(np.float64), d_b[hit], rec.intrinsics[b],
                           rec.c2w[b])
      xy_back, _ = two_view.project(back, rec.intrinsics[a], rec.c2w[a])
      errors.append(np.linalg.norm(xy_back - xy_a[hit], axis=-1))
      fronts.append(front)
      seens.append(seen)
      marks.append((int(b), xy_b[inside], z_b[inside]))
      found.append(np.where(seen[:, None], xy_b, np.nan))
    if illustration is None:
      keys = _spread(xy_a, PICKED)
      segs, seg_front = _segments(rec, a, sources, xy_a[keys])
      illustration = Illustration(a, tuple(int(b) for b in sources), xy_a[keys], segs,
                                  seg_front, np.stack([f[keys] for f in found]),
                                  tuple(marks), "depth")
  errs = [e for e in errors if len(e)]
  criteria = (
      Criterion("in_front", "lifted depth points in front of the source views",
                _fraction(fronts), IN_FRONT_MIN, at_most=False),
      Criterion("depth_seen", "lifted depth points that meet the source views' depth",
                _fraction(seens), DEPTH_SEEN_MIN, at_most=False),
      Criterion("reprojection_px", "median round-trip reprojection error",
                _median(errs), DEPTH_REPROJECTION_MAX_PX, at_most=True, unit=" px"),
      Criterion("near_far", "depths within near/far", _fraction(covers), NEAR_FAR_MIN,
                at_most=False),
  )
  figures = dict(points=int(sum(len(c) for c in covers)),
                 pairs=int(sum(len(s) for _, s in plan)))
  return SceneCheck(rec.scene_id, "depth", criteria, figures, illustration)


# --- sparse points -----------------------------------------------------------------------

def check_points(rec: record.SceneRecord, sparse: sfm.SparsePoints, plan) -> SceneCheck:
  """The ``points`` check (module docstring): every view, against the points it
  observed; ``plan`` picks the views drawn."""
  if sparse.visibility.shape[1] != rec.num_views:
    raise ValueError(f"{rec.scene_id}: the sparse points are observed by "
                     f"{sparse.visibility.shape[1]} views, the scene has {rec.num_views}")
  fronts, insides, ranges, errors = [], [], [], []
  projected = []
  for i in range(rec.num_views):
    seen = sparse.visibility[:, i]
    xy, z = two_view.project(sparse.points[seen], rec.intrinsics[i], rec.c2w[i])
    front = z > 0
    fronts.append(front)
    insides.append(front & _inside(xy, rec.height, rec.width))
    ranges.append(_in_bounds(z, rec.near[i], rec.far[i]))
    if sparse.observations is not None:
      obs = sparse.observations[seen, i]
      ok = np.all(np.isfinite(obs), axis=-1)
      errors.append(np.linalg.norm(xy[ok] - obs[ok], axis=-1))
    projected.append((i, xy, z))
  illustration = None
  if plan:
    a, sources = plan[0]
    seen = np.nonzero(sparse.visibility[:, a])[0]
    if len(seen):
      if sparse.observations is not None and np.isfinite(sparse.observations[seen, a]).all():
        xy_seen = sparse.observations[seen, a]
      else:
        xy_seen, _ = two_view.project(sparse.points[seen], rec.intrinsics[a], rec.c2w[a])
      ok = np.all(np.isfinite(xy_seen), axis=-1)
      seen, xy_seen = seen[ok], xy_seen[ok]
    if len(seen):
      keys = _spread(xy_seen, PICKED)
      segs, seg_front = _segments(rec, a, sources, xy_seen[keys])
      found = np.full([len(sources), len(keys), 2], np.nan)
      if sparse.observations is not None:
        found = np.stack([sparse.observations[seen[keys], b] for b in sources])
      marks = tuple((v, xy[np.isfinite(xy).all(-1)], z[np.isfinite(xy).all(-1)])
                    for v, xy, z in (projected[j] for j in [a, *sources]))
      illustration = Illustration(a, tuple(int(b) for b in sources), xy_seen[keys], segs,
                                  seg_front, found, marks, "depth")
  errs = [e for e in errors if len(e)]
  criteria = (
      Criterion("in_front", "observed points in front of the camera", _fraction(fronts),
                POINTS_IN_FRONT_MIN, at_most=False),
      Criterion("inside", "observed points inside the image", _fraction(insides),
                POINTS_INSIDE_MIN, at_most=False),
      Criterion("reprojection_px", "median reprojection error", _median(errs),
                POINTS_REPROJECTION_MAX_PX, at_most=True, unit=" px"),
      Criterion("near_far", "observed points within near/far", _fraction(ranges),
                NEAR_FAR_MIN, at_most=False),
  )
  figures = dict(points=int(len(sparse.points)),
                 observations=int(sparse.visibility.sum()),
                 has_observations=sparse.observations is not None)
  note = "" if sparse.observations is not None else (
      "no COLMAP model (sparse/0/): the reprojection error is not measured")
  return SceneCheck(rec.scene_id, "points", criteria, figures, illustration, note)


# --- one scene ---------------------------------------------------------------------------

def method_for(rec: record.SceneRecord, sparse: sfm.SparsePoints | None) -> str:
  """The check a scene gets: ``points`` when it has sparse points, else ``depth`` when
  it has depth maps, else ``images``."""
  if sparse is not None and len(sparse.points):
    return "points"
  if rec.depths is not None:
    return "depth"
  return "images"


def check_scene(rec: record.SceneRecord, sparse: sfm.SparsePoints | None = None,
                num_views: int = 4, num_sources: int = 2,
                cache: matching.Cache | None = None) -> SceneCheck:
  """The verdict on the cameras of ``rec``.

  Args:
    rec: the scene, as a reader gives it.
    sparse: its sparse points (``sfm.read_sparse``), if it has any.
    num_views: reference views (spread evenly over the views).
    num_sources: source views per reference view (the nearest by camera centre).
    cache: image features and matches to reuse (the ``images`` check).

  Returns:
    The :class:`SceneCheck`; ``passed`` when every measured criterion passes.
  """
  plan = plan_views(rec, num_views, num_sources)
  method = method_for(rec, sparse)
  if not plan:
    return SceneCheck(rec.scene_id, "none", (), {}, None,
                      f"{rec.num_views} view: at least 2 are needed")
  if method == "points":
    return check_points(rec, sparse, plan)
  if method == "depth":
    return check_depth(rec, plan)
  return check_images(rec, plan, cache or matching.Cache())
