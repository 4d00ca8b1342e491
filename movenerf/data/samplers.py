"""Host-side (NumPy) samplers for training and evaluation batches.

Everything here is deterministic given a ``np.random.Generator`` and follows the
library's camera convention (see ``movenerf.geometry.cameras``): OpenCV camera frame
(x right, y down, z forward), 4x4 camera-to-world ``c2w``, 3x3 intrinsics and
integer pixel centres. A pixel ``(u, v)`` (column, row) has the flat index
``v * W + u``.

Contents
--------
* ``select_source_views``: nearest source views of a target camera (evaluation:
  the best ones; training: a random subset of the best few, as IBRNet / GNT do).
* ``sample_pixels``: target rays, uniform, central crop (NeRF's "precrop") or
  restricted to a mask.
* ``sample_pixels_with_pairs``: a ray batch in which some rays come in nearby
  pairs, for the MoVE router consistency loss
  (``movenerf.moe.losses.consistency_loss``).
* ``scale_intrinsics_for``: intrinsics of a resized image (the resizing itself is in
  ``movenerf.data.images``).
* ``depth_range``: one near/far range for a target and its sources.
* ``MixtureSampler``: which dataset the next batch comes from, resumable.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from movenerf.geometry import cameras

METHODS = ("position", "direction", "combined")


def _round_half_up(x: float) -> int:
  # Python's round() rounds halves to even (round(0.5) == 0); counts should not.
  return int(math.floor(x + 0.5))


# --------------------------------------------------------------------------------------
# Source views.
# --------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
  norm = np.linalg.norm(v, axis=-1, keepdims=True)
  # A zero vector (camera exactly at the scene centre) gets angle pi/2 to everything
  # rather than NaN, so it ranks in the middle instead of breaking the sort.
  return v / np.maximum(norm, 1e-12)


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  cos = np.sum(_unit(a) * _unit(b), axis=-1)
  return np.arccos(np.clip(cos, -1.0, 1.0))


def view_distances(target_c2w, candidate_c2w, method: str = "position",
                   center=(0.0, 0.0, 0.0)) -> np.ndarray:
  """Dissimilarity of each candidate camera to the target (smaller is closer).

  Args:
    target_c2w: [4, 4] (or [3, 4]) camera-to-world of the target.
    candidate_c2w: [N, 4, 4] (or [N, 3, 4]) camera-to-world of the candidates.
    method: "position": Euclidean distance between camera centres.
      "direction": angle (radians) between the viewing directions (camera +z axes),
      which for cameras at similar distances ranks like IBRNet's "matrix" method.
      "combined": angle between the vectors from ``center`` to the camera centres
      (IBRNet's "vector" method); it mixes position and direction for cameras that
      look at ``center``.
    center: [3] scene centre, used by "combined" only.
  Returns:
    [N] float64 distances.
  Raises:
    ValueError: unknown method, wrong shapes or non-finite poses.
  """
  target = np.asarray(target_c2w, np.float64)
  cands = np.asarray(candidate_c2w, np.float64)
  if target.shape[-2:] not in ((4, 4), (3, 4)) or target.ndim != 2:
    raise ValueError(f"target_c2w must be [4, 4] or [3, 4], got {target.shape}")
  if cands.ndim != 3 or cands.shape[-2:] not in ((4, 4), (3, 4)):
    raise ValueError(f"candidate_c2w must be [N, 4, 4] or [N, 3, 4], got {cands.shape}")
  if not np.all(np.isfinite(target)):
    raise ValueError("target_c2w contains NaN or inf")
  bad = np.nonzero(~np.all(np.isfinite(cands), axis=(1, 2)))[0]
  if bad.size:
    raise ValueError(f"candidate_c2w contains NaN or inf in poses {bad.tolist()}")
  if method == "position":
    return np.linalg.norm(cands[:, :3, 3] - target[:3, 3], axis=-1)
  if method == "direction":
    return _angle(cands[:, :3, 2], target[:3, 2])
  if method == "combined":
    c = np.asarray(center, np.float64).reshape(3)
    return _angle(cands[:, :3, 3] - c, target[:3, 3] - c)
  raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def select_source_views(target_c2w, candidate_c2w, num_views: int, method: str = "position",
                        exclude: Optional[Sequence[int]] = None,
                        rng: Optional[np.random.Generator] = None,
                        num_candidates: Optional[int] = None,
                        center=(0.0, 0.0, 0.0)) -> np.ndarray:
  """Indices of the source views to pair with a target view.

  Evaluation (``rng is None``): the ``num_views`` closest candidates, best first.
  Training (``rng`` given), as in IBRNet / GNT: the ``num_candidates`` closest
  candidates form a pool and ``num_views`` of them are drawn without replacement;
  the draw is returned in best-first order. The random pool makes the model see
  varied source sets instead of always the same neighbours.

  Ties are broken by candidate index (stable sort), so results never depend on
  floating-point noise in the sort.

  Args:
    target_c2w: [4, 4] camera-to-world of the target.
    candidate_c2w: [N, 4, 4] camera-to-world of the candidate source views.
    num_views: how many source views to return.
    method: "position", "direction" or "combined" (see ``view_distances``).
    exclude: candidate indices never to select (e.g. the target itself when it is
      one of the candidates).
    rng: None for deterministic evaluation selection, else the training generator.
    num_candidates: training pool size. Default
      ``min(available, max(num_views, ceil(1.5 * num_views)))``; it is clipped to
      the number of available candidates and must be >= ``num_views``.
    center: [3] scene centre for "combined".
  Returns:
    [num_views] int64 candidate indices, closest first.
  Raises:
    ValueError: too few candidates, bad ``exclude`` / ``num_candidates``, unknown
      method or non-finite poses.
  """
  dist = view_distances(target_c2w, candidate_c2w, method, center)
  n = dist.shape[0]
  allowed = np.ones(n, bool)
  if exclude is not None:
    ex = np.asarray(exclude, np.int64).reshape(-1)
    if ex.size and (ex.min() < -n or ex.max() >= n):
      raise ValueError(f"exclude indices {ex.tolist()} out of range for {n} candidates")
    allowed[ex] = False
  available = int(allowed.sum())
  if num_views < 1:
    raise ValueError(f"num_views must be >= 1, got {num_views}")
  if num_views > available:
    raise ValueError(
        f"num_views={num_views} exceeds the {available} available candidates "
        f"({n} given, {n - available} excluded)")
  order = np.nonzero(allowed)[0]
  order = order[np.argsort(dist[order], kind="stable")]
  if rng is None:
    return order[:num_views].astype(np.int64)
  if num_candidates is None:
    num_candidates = max(num_views, math.ceil(1.5 * num_views))
  if num_candidates < num_views:
    raise ValueError(f"num_candidates={num_candidates} < num_views={num_views}")
  pool = min(int(num_candidates), available)
  ranks = np.sort(rng.choice(pool, size=num_views, replace=False))
  return order[ranks].astype(np.int64)


# --------------------------------------------------------------------------------------
# Target pixels.
# --------------------------------------------------------------------------------------


def _allowed_pixels(height: int, width: int, mode: str, center_fraction: float,
                    mask) -> np.ndarray:
  """[H, W] bool: pixels that ``mode`` and ``mask`` allow."""
  if height < 1 or width < 1:
    raise ValueError(f"image size must be positive, got {height}x{width}")
  allowed = np.ones((height, width), bool)
  if mode == "center":
    if not 0.0 < center_fraction <= 1.0:
      raise ValueError(f"center_fraction must be in (0, 1], got {center_fraction}")
    # A centred crop covering center_fraction of each side (at least one pixel).
    ch = max(1, _round_half_up(height * center_fraction))
    cw = max(1, _round_half_up(width * center_fraction))
    v0, u0 = (height - ch) // 2, (width - cw) // 2
    allowed[:] = False
    allowed[v0:v0 + ch, u0:u0 + cw] = True
  elif mode != "uniform":
    raise ValueError(f"unknown mode {mode!r}; expected 'uniform' or 'center'")
  if mask is not None:
    mask = np.asarray(mask)
    if mask.shape != (height, width):
      raise ValueError(f"mask must be [{height}, {width}], got {mask.shape}")
    allowed &= mask.astype(bool)
  if not allowed.any():
    raise ValueError("no pixel is allowed by the mode / mask")
  return allowed


def center_crop_bounds(height: int, width: int, center_fraction: float = 0.5):
  """(v0, v1, u0, u1): the half-open rows/columns of the "center" mode crop."""
  allowed = _allowed_pixels(height, width, "center", center_fraction, None)
  rows, cols = np.nonzero(allowed.any(1))[0], np.nonzero(allowed.any(0))[0]
  return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def sample_pixels(height: int, width: int, num_rays: int, rng: np.random.Generator,
                  mode: str = "uniform", center_fraction: float = 0.5, mask=None,
                  replace: bool = False) -> np.ndarray:
  """Random target pixels as flat indices ``v * width + u``.

  Args:
    height, width: image size.
    num_rays: number of pixels to draw.
    rng: generator.
    mode: "uniform" over the image, or "center": only the centred crop covering
      ``center_fraction`` of each side (NeRF's precrop for early iterations).
    center_fraction: crop side fraction for "center".
    mask: optional [H, W] bool; only True pixels are drawn (e.g. foreground).
      Combined with "center" it is intersected with the crop.
    replace: draw with replacement. The default (without, as NeRF / IBRNet do)
      needs ``num_rays`` <= the number of allowed pixels.
  Returns:
    [num_rays] int64 flat pixel indices.
  Raises:
    ValueError: bad mode / mask, no allowed pixel, or too few for no replacement.
  """
  allowed = np.flatnonzero(_allowed_pixels(height, width, mode, center_fraction, mask))
  if not replace and num_rays > allowed.size:
    raise ValueError(
        f"num_rays={num_rays} exceeds the {allowed.size} allowed pixels; "
        "pass replace=True")
  return allowed[rng.choice(allowed.size, size=num_rays, replace=replace)].astype(np.int64)


def _disk_offsets(max_distance: float) -> np.ndarray:
  """[O, 2] integer (dv, du) with 0 < dv^2 + du^2 <= max_distance^2."""
  r = int(math.floor(max_distance))
  dv, du = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
  d2 = dv**2 + du**2
  keep = (d2 > 0) & (d2 <= max_distance**2 + 1e-9)
  return np.stack([dv[keep], du[keep]], axis=-1)


def sample_pixels_with_pairs(height: int, width: int, num_rays: int, rng: np.random.Generator,
                             pair_fraction: float = 0.25, max_distance: float = 2.0,
                             mode: str = "uniform", center_fraction: float = 0.5, mask=None,
                             replace: bool = False):
  """Target pixels of which some form nearby pairs (MoVE consistency loss).

  First ``num_rays`` pixels are drawn as in ``sample_pixels``. Then, with
  ``P = round(num_rays * pair_fraction / 2)`` (halves round up), the last ``P`` rows
  are replaced by partners of anchors taken from the first rows: each partner is
  drawn uniformly among the allowed pixels (inside the image, the "center" crop
  and ``mask``) at Euclidean distance in ``(0, max_distance]`` from its anchor.
  Anchors without any such neighbour (an isolated mask pixel, a 1x1 image) are
  skipped in favour of later rows. A partner may coincide with a pixel elsewhere
  in the batch; that is harmless for the loss.

  Padding: when fewer than ``P`` anchors have a neighbour, the missing pairs are
  ``(-1, -1)`` rows at the end of ``pairs`` (which
  ``movenerf.moe.losses.consistency_loss`` ignores) and their rows keep their
  ordinary random pixels; ``pairs`` therefore always has the static shape [P, 2].

  Args:
    height, width, num_rays, rng, mode, center_fraction, mask, replace: as in
      ``sample_pixels``.
    pair_fraction: fraction of the batch that takes part in pairs, in [0, 1].
    max_distance: largest pixel distance within a pair, >= 1 to allow any pair.
  Returns:
    indices: [num_rays] int64 flat pixel indices.
    pairs: [P, 2] int64 row indices ``(a, b)`` into ``indices``, ``a < b``;
      padding rows are ``(-1, -1)``.
  Raises:
    ValueError: as ``sample_pixels``, or a bad ``pair_fraction`` / ``max_distance``.
  """
  if not 0.0 <= pair_fraction <= 1.0:
    raise ValueError(f"pair_fraction must be in [0, 1], got {pair_fraction}")
  if max_distance <= 0:
    raise ValueError(f"max_distance must be positive, got {max_distance}")
  allowed = _allowed_pixels(height, width, mode, center_fraction, mask)
  indices = sample_pixels(height, width, num_rays, rng, mode, center_fraction, mask, replace)
  num_pairs = _round_half_up(num_rays * pair_fraction / 2)
  pairs = np.full((num_pairs, 2), -1, np.int64)
  offsets = _disk_offsets(max_distance)
  if num_pairs == 0 or offsets.size == 0:
    return indices, pairs

  num_anchors = num_rays - num_pairs
  anchors = indices[:num_anchors]
  v = anchors[:, None] // width + offsets[None, :, 0]  # [A, O]
  u = anchors[:, None] % width + offsets[None, :, 1]
  inside = (v >= 0) & (v < height) & (u >= 0) & (u < width)
  valid = inside & allowed[np.clip(v, 0, height - 1), np.clip(u, 0, width - 1)]
  usable = np.nonzero(valid.any(axis=1))[0][:num_pairs]  # anchor rows, in order
  if usable.size == 0:
    return indices, pairs
  # Uniform choice among the valid neighbours: argmax of uniform noise on them.
  noise = rng.random((usable.size, offsets.shape[0]))
  pick = np.argmax(np.where(valid[usable], noise, -1.0), axis=1)
  partner_rows = num_anchors + np.arange(usable.size)
  indices[partner_rows] = v[usable, pick] * width + u[usable, pick]
  pairs[:usable.size, 0] = usable
  pairs[:usable.size, 1] = partner_rows
  return indices, pairs


# --------------------------------------------------------------------------------------
# Intrinsics of resized images.
# --------------------------------------------------------------------------------------


def scale_intrinsics_for(intrinsics, old_hw, new_hw) -> np.ndarray:
  """Intrinsics for an image resized from ``old_hw`` to ``new_hw``.

  Uses the library's rule (``movenerf.geometry.cameras.scale_intrinsics``): fx, cx are
  multiplied by ``new_w / old_w`` and fy, cy by ``new_h / old_h``. With integer
  pixel centres the exact area-resize mapping would be ``c' = (c + 0.5) * s - 0.5``;
  the plain product is what IBRNet / GNT use, kept for comparable numbers.

  Args:
    intrinsics: [..., 3, 3].
    old_hw: (H, W) before resizing.
    new_hw: (H', W') after.
  Returns:
    [..., 3, 3] float32 intrinsics.
  """
  sy, sx = new_hw[0] / old_hw[0], new_hw[1] / old_hw[1]
  k = np.asarray(intrinsics, np.float32)
  if sx == sy:
    return np.asarray(cameras.scale_intrinsics(k, sx), np.float32)
  # Non-proportional sizes (e.g. floor division of odd sides): same rule per axis.
  return (np.diag([sx, sy, 1.0]).astype(np.float32) @ k).astype(np.float32)


# --------------------------------------------------------------------------------------
# Depth range.
# --------------------------------------------------------------------------------------


def depth_range(near, far, view_indices):
  """One (near, far) for rendering a target from its source views.

  The union of the views' ranges (min of nears, max of fars), so that no view's
  content is clipped; this is what GNT / IBRNet use for a target and its sources.

  Args:
    near: [N] per-view near depths.
    far: [N] per-view far depths.
    view_indices: [M] indices of the target and its source views.
  Returns:
    (near, far) Python floats.
  Raises:
    ValueError: empty selection, non-finite values or near > far.
  """
  idx = np.asarray(view_indices, np.int64).reshape(-1)
  if idx.size == 0:
    raise ValueError("view_indices is empty")
  n = np.asarray(near, np.float64)[idx]
  f = np.asarray(far, np.float64)[idx]
  if not (np.all(np.isfinite(n)) and np.all(np.isfinite(f))):
    raise ValueError("near/far contain NaN or inf")
  lo, hi = float(n.min()), float(f.max())
  if lo > hi:
    raise ValueError(f"near {lo} > far {hi}")
  return lo, hi


# --------------------------------------------------------------------------------------
# Multi-scene mixtures.
# --------------------------------------------------------------------------------------


class MixtureSampler:
  """Draws dataset names with probability proportional to their weights.

  Names are kept in sorted order, so the sequence depends only on the weights and
  the seed, not on dict insertion order. ``state()`` / ``from_state()`` resume
  the exact sequence (e.g. from a training checkpoint).

  Args:
    weights: dataset name -> non-negative weight (need not sum to 1; individual
      zeros are allowed, never drawn).
    seed: integer seed.
  Raises:
    ValueError: empty weights, negative / non-finite weights or a zero sum.
  """

  def __init__(self, weights: Mapping[str, float], seed: int = 0):
    if not weights:
      raise ValueError("weights is empty")
    self._names = sorted(weights)
    w = np.array([float(weights[k]) for k in self._names], np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
      raise ValueError(f"weights must be finite and non-negative, got {dict(weights)}")
    if w.sum() <= 0:
      raise ValueError(f"weights sum to zero: {dict(weights)}")
    self._weights = {k: float(weights[k]) for k in self._names}
    self._probs = w / w.sum()
    self._seed = int(seed)
    self._rng = np.random.default_rng(self._seed)
    self._count = 0

  @property
  def names(self) -> list:
    return list(self._names)

  @property
  def probabilities(self) -> dict:
    """Normalised weights, name -> probability."""
    return dict(zip(self._names, self._probs.tolist()))

  def next_dataset(self) -> str:
    """The next dataset name."""
    self._count += 1
    return self._names[int(self._rng.choice(len(self._names), p=self._probs))]

  def state(self) -> dict:
    """A plain (JSON-serialisable) dict to resume from."""
    return {
        "weights": dict(self._weights),
        "seed": self._seed,
        "count": self._count,
        "rng": self._rng.bit_generator.state,
    }

  @classmethod
  def from_state(cls, state: Mapping) -> "MixtureSampler":
    """A sampler that continues exactly where ``state()`` was taken."""
    sampler = cls(state["weights"], state["seed"])
    sampler._rng.bit_generator.state = state["rng"]  # pylint: disable=protected-access
    sampler._count = int(state["count"])  # pylint: disable=protected-access
    return sampler
