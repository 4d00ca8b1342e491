"""Image resizing: area downscale, Pillow resize, nearest resize."""

import numpy as np
import pytest
from PIL import Image

from movenerf.data import images


def test_downscale_block_average_exact():
  img = np.zeros((4, 4, 3), np.uint8)
  img[:, :, 0] = np.arange(16).reshape(4, 4) * 10
  img[:2, :2, 1] = [[0, 1], [2, 3]]  # mean 1.5 -> rounds to 2
  img[:, :, 2] = 200
  out = images.downscale_image(img, 2)
  assert out.shape == (2, 2, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[..., 0], [[25, 45], [105, 125]])
  assert out[0, 0, 1] == 2
  np.testing.assert_array_equal(out[..., 2], 200)
  out4 = images.downscale_image(img, 4)
  np.testing.assert_array_equal(out4[0, 0, 0], 75)
  np.testing.assert_array_equal(images.downscale_image(img, 1), img)


def test_downscale_not_divisible_uses_box_resize():
  img = np.full((5, 7, 5), 77, np.uint8)  # 5 channels: not a Pillow multi-band mode
  out = images.downscale_image(img, 2)
  assert out.shape == (2, 3, 5) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, 77)
  with pytest.raises(ValueError):
    images.downscale_image(img, 0)


def test_resize_image_box_when_shrinking_bilinear_when_enlarging():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
  assert images.resize_image(img, (8, 12)) is img  # same size: unchanged
  small = images.resize_image(img, (4, 6))
  assert small.shape == (4, 6, 3) and small.dtype == np.uint8
  want = np.asarray(Image.fromarray(img).resize((6, 4), Image.Resampling.BOX))
  np.testing.assert_array_equal(small, want)
  # Exact halving with the box filter is the 2x2 block mean (within uint8 rounding).
  block = img.reshape(4, 2, 6, 2, 3).astype(np.float64).mean(axis=(1, 3))
  assert np.abs(small - block).max() <= 1
  big = images.resize_image(img, (16, 12))  # one side grows: bilinear
  want = np.asarray(Image.fromarray(img).resize((12, 16), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(big, want)
  flat = np.full((3, 5, 3), 40, np.uint8)
  np.testing.assert_array_equal(images.resize_image(flat, (7, 2)), 40)


def test_resize_nearest_copies_values():
  depth = np.arange(24, dtype=np.float32).reshape(4, 6)
  half = images.resize_nearest(depth, (2, 3))
  np.testing.assert_array_equal(half, depth[1::2, 1::2])  # the pixel under each centre
  assert half.dtype == np.float32
  mask = np.zeros((4, 6), bool)
  mask[:2] = True
  up = images.resize_nearest(mask, (8, 12))
  assert up.dtype == bool
  np.testing.assert_array_equal(up, np.repeat(np.repeat(mask, 2, 0), 2, 1))
  rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
  assert images.resize_nearest(rgb, (3, 5)).shape == (3, 5, 3)
  assert set(np.unique(images.resize_nearest(depth, (3, 5)))) <= set(np.unique(depth))
