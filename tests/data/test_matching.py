"""Keypoint matching from images alone: known descriptor pairs are found and ambiguous ones
dropped; keypoints of two crops of one image differ by exactly the crop offset, at the
image's size and resized for SIFT."""

import numpy as np
import pytest

from movenerf.data import matching, procedural


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_match_finds_mutual_nearest_and_drops_ambiguous_ones():
  rng = np.random.default_rng(0)
  a = _unit(rng.normal(size=(40, 128)))
  order = rng.permutation(40)
  b = _unit(a[order] + 0.05 * rng.normal(size=(40, 128)))
  distractors = _unit(rng.normal(size=(20, 128)))
  b = np.concatenate([b, distractors])
  xy = np.zeros((60, 2))
  pairs = matching.match(matching.Features(xy[:40], a), matching.Features(xy, b))
  assert len(pairs) == 40
  np.testing.assert_array_equal(order[pairs[:, 1]], pairs[:, 0])
  # A second, equally near copy of keypoint 0 in b: neither passes the ratio test.
  twins = np.concatenate([b, _unit(a[:1] + 0.05 * rng.normal(size=(1, 128)))])
  pairs = matching.match(matching.Features(xy[:40], a),
                         matching.Features(np.zeros((61, 2)), twins))
  assert 0 not in pairs[:, 0] and len(pairs) == 39


@pytest.fixture(scope="module")
def big_image():
  return procedural.make_scene(2, "forward", num_views=1, height=160, width=200).images[0]


@pytest.mark.parametrize("size", [120, 240])
def test_keypoints_of_two_crops_differ_by_the_offset(big_image, size):
  # Crop A starts at (x 20, y 10), crop B at (x 15, y 13): B's pixel = A's + (5, -3).
  crop_a = big_image[10:130, 20:180]
  crop_b = big_image[13:133, 15:175]
  cache = matching.Cache(matching.Extractor(size=size))  # 160 px wide: shrunk or enlarged
  pairs = cache.matches(crop_a, crop_b)
  assert len(pairs) >= 20
  xy_a = cache.features(crop_a).xy[pairs[:, 0]]
  xy_b = cache.features(crop_b).xy[pairs[:, 1]]
  offset = xy_b - xy_a
  print(size, len(pairs), np.median(offset, 0))
  np.testing.assert_allclose(np.median(offset, 0), [5.0, -3.0], atol=0.05)


def test_the_cache_extracts_each_image_once(big_image):
  calls = []

  class Counting(matching.Extractor):
    def __call__(self, image):
      calls.append(image.shape)
      return super().__call__(image)

  cache = matching.Cache(Counting(size=160))
  a, b = big_image[:100, :150], big_image[5:105, 8:158]
  first = cache.matches(a, b)
  again = cache.matches(a.copy(), b.copy())  # same pixels, another array
  np.testing.assert_array_equal(first, again)
  assert len(calls) == 2
