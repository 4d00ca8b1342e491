"""Keypoints matched between two photos, from the images alone (no cameras).

SIFT keypoints and descriptors from COLMAP's CPU extractor (``pycolmap``, ``pip install
'movenerf[sfm]'``), matched by mutual nearest neighbours with Lowe's ratio test, then
kept only where one fundamental matrix, fitted to the matches by COLMAP's LO-RANSAC,
explains them. Those inliers are correspondences that owe nothing to the cameras a scene
records, so their distance to the epipolar lines the cameras imply
(:mod:`movenerf.geometry.two_view`) measures how wrong the cameras are.

Pixel coordinates are the library's (integer at pixel centres): COLMAP puts pixel
centres at half-integers, so its keypoints move by -0.5.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
from PIL import Image
import pycolmap

# Images are resized to this longer side before SIFT, and keep this many keypoints.
SIZE = 400
MAX_FEATURES = 2048
# Lowe's ratio: a match is kept when its descriptor distance is below this fraction of
# the second nearest's.
RATIO = 0.8
# RANSAC's inlier threshold for the image-only fundamental matrix, in pixels (COLMAP's
# two-view default is 4 px at full resolution; the scenes checked are small images).
RANSAC_MAX_ERROR = 2.0
# The fewest matches RANSAC is asked to explain (a fundamental matrix takes 7 or 8).
MIN_MATCHES = 16


@dataclasses.dataclass(frozen=True)
class Features:
  """Keypoints of one image: xy [M, 2] pixels, descriptors [M, 128] unit float32."""

  xy: np.ndarray
  descriptors: np.ndarray


def _extractor(max_features: int, num_threads: int):
  options = pycolmap.FeatureExtractionOptions()
  options.num_threads = num_threads
  sift = options.sift
  sift.max_num_features = max_features
  sift.first_octave = 0  # no 2x upsampling first: images come at SIZE already
  options.sift = sift
  return pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu)


class Extractor:
  """SIFT on uint8 RGB images, converted to grey and resized (bicubic) so that their
  longer side is ``size`` pixels: small renderings (Blender's 100x100) give few
  keypoints at their own size, and large photos cost time without adding to a check."""

  def __init__(self, size: int = SIZE, max_features: int = MAX_FEATURES,
               num_threads: int = 1):
    pycolmap.logging.minloglevel = 3  # COLMAP's own log: fatal only
    self.size = int(size)
    self._sift = _extractor(max_features, num_threads)

  def __call__(self, image: np.ndarray) -> Features:
    """``image`` [H, W, 3] uint8 -> its :class:`Features` (pixels of ``image``)."""
    image = np.asarray(image)[..., :3]
    h, w = image.shape[:2]
    scale = self.size / max(h, w)
    grey = Image.fromarray(image).convert("L")
    if scale != 1:
      grey = grey.resize((max(round(w * scale), 1), max(round(h * scale), 1)),
                         Image.Resampling.BICUBIC)
    scale_x, scale_y = grey.size[0] / w, grey.size[1] / h
    keypoints, descriptors = self._sift.extract_from_uint8_array(
        np.ascontiguousarray(np.asarray(grey, np.uint8)))
    # COLMAP's pixel (x, y) covers [x, x + 1): its centre x + 0.5 is the library's x.
    xy = np.array([(k.x, k.y) for k in keypoints], np.float64).reshape(-1, 2)
    xy = xy / [scale_x, scale_y] - 0.5
    desc = np.asarray(descriptors.data, np.float32).reshape(len(xy), -1)
    desc /= np.maximum(np.linalg.norm(desc, axis=-1, keepdims=True), 1e-12)
    return Features(xy, desc)


def match(a: Features, b: Features, ratio: float = RATIO) -> np.ndarray:
  """[K, 2] indices ``(i, j)``: keypoint i of ``a`` and j of ``b`` are each other's
  nearest descriptor, and nearer than ``ratio`` times the second nearest (both ways)."""
  if len(a.xy) < 2 or len(b.xy) < 2:
    return np.zeros([0, 2], np.int64)
  sim = a.descriptors @ b.descriptors.T  # unit vectors: distance^2 = 2 - 2 sim

  def best_two(s):
    rows = np.arange(len(s))
    first = np.argmax(s, axis=1)
    top = s[rows, first]
    s[rows, first] = -np.inf
    second = s.max(axis=1)
    s[rows, first] = top
    dist = lambda x: np.sqrt(np.maximum(2.0 - 2.0 * x, 0.0))  # noqa: E731
    return first, dist(top) < ratio * dist(second)

  best_ab, unique_ab = best_two(sim)
  best_ba, unique_ba = best_two(sim.T)
  i = np.arange(len(a.xy))
  keep = (best_ba[best_ab] == i) & unique_ab & unique_ba[best_ab]
  return np.stack([i[keep], best_ab[keep]], axis=-1).astype(np.int64)


def verified_matches(a: Features, b: Features, max_error: float = RANSAC_MAX_ERROR,
                     seed: int = 0) -> np.ndarray:
  """The :func:`match` es that one fundamental matrix fitted to them explains
  (LO-RANSAC, inlier threshold ``max_error`` pixels, fixed ``seed``): [K, 2] indices
  into ``a`` and ``b`` (K = 0 when there are fewer than :data:`MIN_MATCHES` matches or
  no fit)."""
  pairs = match(a, b)
  if len(pairs) < MIN_MATCHES:
    return np.zeros([0, 2], np.int64)
  options = pycolmap.RANSACOptions()
  options.max_error = float(max_error)
  options.random_seed = int(seed)
  fit = pycolmap.estimate_fundamental_matrix(a.xy[pairs[:, 0]], b.xy[pairs[:, 1]], options)
  if fit is None:
    return np.zeros([0, 2], np.int64)
  return pairs[np.asarray(fit["inlier_mask"], bool)]


def _digest(image: np.ndarray) -> bytes:
  image = np.ascontiguousarray(image)
  return hashlib.blake2b(str(image.shape).encode() + image.tobytes(), digest_size=16).digest()


class Cache:
  """Features and verified matches of images, computed once: keyed by the images' bytes,
  so that the same photos read by another reader, in another order or with other
  cameras are not matched again."""

  def __init__(self, extractor: Extractor | None = None, seed: int = 0):
    self.extractor = extractor or Extractor()
    self.seed = seed
    self._features: dict[bytes, Features] = {}
    self._matches: dict[tuple[bytes, bytes], np.ndarray] = {}

  def features(self, image: np.ndarray) -> Features:
    key = _digest(image)
    if key not in self._features:
      self._features[key] = self.extractor(image)
    return self._features[key]

  def matches(self, image_a: np.ndarray, image_b: np.ndarray) -> np.ndarray:
    """:func:`verified_matches` of two images: [K, 2] keypoint indices."""
    key = (_digest(image_a), _digest(image_b))
    if key not in self._matches:
      self._matches[key] = verified_matches(self.features(image_a),
                                            self.features(image_b), seed=self.seed)
    return self._matches[key]
