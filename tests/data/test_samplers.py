"""Tests for movenerf.data.samplers (host-side NumPy samplers)."""

import json

import numpy as np
import pytest

from movenerf.geometry import cameras
from movenerf.data import samplers


def _ring(n=12, radius=4.0, height=0.5):
  """[n, 4, 4] cameras evenly spaced on a circle, all looking at the origin."""
  angles = 2 * np.pi * np.arange(n) / n
  eyes = np.stack([radius * np.cos(angles), radius * np.sin(angles),
                   np.full(n, height)], axis=-1)
  return np.stack([cameras.look_at(e, (0.0, 0.0, 0.0)) for e in eyes])


# ------------------------------------------------------------------------- source views


@pytest.mark.parametrize("method", ["position", "direction", "combined"])
def test_ring_nearest_two_are_neighbours(method):
  c2w = _ring()
  for k in range(12):
    got = samplers.select_source_views(c2w[k], c2w, 2, method=method, exclude=[k])
    assert sorted(got.tolist()) == sorted([(k - 1) % 12, (k + 1) % 12])
    # Best first: the next two after them are k -/+ 2.
    got4 = samplers.select_source_views(c2w[k], c2w, 4, method=method, exclude=[k])
    assert sorted(got4[2:].tolist()) == sorted([(k - 2) % 12, (k + 2) % 12])


def test_without_exclude_target_is_first():
  c2w = _ring()
  got = samplers.select_source_views(c2w[5], c2w, 3, method="position")
  assert got[0] == 5
  assert set(got[1:].tolist()) == {4, 6}


def test_distances_values():
  c2w = _ring(radius=4.0)
  d = samplers.view_distances(c2w[0], c2w, "position")
  np.testing.assert_allclose(d[1], 2 * 4.0 * np.sin(np.pi / 12), rtol=1e-12)
  a = samplers.view_distances(c2w[0], c2w, "combined")
  np.testing.assert_allclose(a[3], np.arccos(0.25 / (16 + 0.25)), rtol=1e-9)


def test_training_mode_pool_determinism_and_variation():
  c2w = _ring()
  k, num_views = 0, 4
  pool = samplers.select_source_views(c2w[k], c2w, 6, exclude=[k])  # default pool: ceil(1.5*4)
  draws = []
  for seed in range(20):
    got = samplers.select_source_views(c2w[k], c2w, num_views, exclude=[k],
                                       rng=np.random.default_rng(seed))
    again = samplers.select_source_views(c2w[k], c2w, num_views, exclude=[k],
                                         rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(got, again)
    assert len(set(got.tolist())) == num_views
    assert set(got.tolist()) <= set(pool.tolist())
    assert k not in got
    # Best-first order: positions in the pool increase.
    ranks = [pool.tolist().index(i) for i in got]
    assert ranks == sorted(ranks)
    draws.append(tuple(got.tolist()))
  assert len(set(draws)) > 1


def test_training_mode_num_candidates():
  c2w = _ring()
  pool = set(samplers.select_source_views(c2w[3], c2w, 2, exclude=[3]).tolist())
  for seed in range(5):
    got = samplers.select_source_views(c2w[3], c2w, 2, exclude=[3], num_candidates=2,
                                       rng=np.random.default_rng(seed))
    assert set(got.tolist()) == pool
  with pytest.raises(ValueError, match="num_candidates"):
    samplers.select_source_views(c2w[3], c2w, 3, rng=np.random.default_rng(0),
                                 num_candidates=2)


def test_source_view_errors():
  c2w = _ring()
  with pytest.raises(ValueError, match=r"num_views=12 exceeds the 11"):
    samplers.select_source_views(c2w[0], c2w, 12, exclude=[0])
  bad = c2w.copy()
  bad[4, 0, 3] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    samplers.select_source_views(c2w[0], bad, 2)
  with pytest.raises(ValueError, match="NaN"):
    samplers.select_source_views(bad[4], c2w, 2)
  with pytest.raises(ValueError, match="unknown method"):
    samplers.select_source_views(c2w[0], c2w, 2, method="matrix")
  with pytest.raises(ValueError, match="out of range"):
    samplers.select_source_views(c2w[0], c2w, 2, exclude=[12])


# ------------------------------------------------------------------------- pixels


def test_uniform_pixels_range_unique_deterministic():
  h, w = 7, 9
  a = samplers.sample_pixels(h, w, 40, np.random.default_rng(1))
  b = samplers.sample_pixels(h, w, 40, np.random.default_rng(1))
  c = samplers.sample_pixels(h, w, 40, np.random.default_rng(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.dtype == np.int64 and a.shape == (40,)
  assert a.min() >= 0 and a.max() < h * w
  assert len(np.unique(a)) == 40  # no replacement by default
  with pytest.raises(ValueError, match="exceeds the 63"):
    samplers.sample_pixels(h, w, 64, np.random.default_rng(0))
  assert samplers.sample_pixels(h, w, 64, np.random.default_rng(0), replace=True).shape == (64,)


def test_center_mode_stays_in_crop():
  h, w = 20, 30
  v0, v1, u0, u1 = samplers.center_crop_bounds(h, w, 0.5)
  assert (v0, v1, u0, u1) == (5, 15, 7, 22)
  idx = samplers.sample_pixels(h, w, 150, np.random.default_rng(0), mode="center")
  v, u = idx // w, idx % w
  assert v.min() >= v0 and v.max() < v1 and u.min() >= u0 and u.max() < u1
  # All 150 crop pixels are drawn exactly once.
  assert len(np.unique(idx)) == 150


def test_mask_mode_only_true_pixels():
  h, w = 16, 16
  mask = np.zeros((h, w), bool)
  mask[3:6, 10:14] = True
  mask[12, 1] = True
  idx = samplers.sample_pixels(h, w, 10, np.random.default_rng(3), mask=mask)
  assert mask.reshape(-1)[idx].all()
  with pytest.raises(ValueError, match="no pixel"):
    samplers.sample_pixels(h, w, 1, np.random.default_rng(0), mask=np.zeros((h, w), bool))
  with pytest.raises(ValueError, match="mask must be"):
    samplers.sample_pixels(h, w, 1, np.random.default_rng(0), mask=np.ones((w, h + 1), bool))


# ------------------------------------------------------------------------- nearby pairs


def _pair_distances(indices, pairs, width):
  a, b = indices[pairs[:, 0]], indices[pairs[:, 1]]
  return np.hypot(a // width - b // width, a % width - b % width)


@pytest.mark.parametrize("max_distance", [1.0, 1.5, 2.0, 3.7])
def test_pairs_are_near_and_counted(max_distance):
  h, w, n = 24, 32, 256
  idx, pairs = samplers.sample_pixels_with_pairs(h, w, n, np.random.default_rng(0),
                                                 pair_fraction=0.25,
                                                 max_distance=max_distance)
  assert idx.shape == (n,) and pairs.shape == (32, 2)
  assert (pairs >= 0).all()  # a large image never needs padding
  assert idx.min() >= 0 and idx.max() < h * w
  d = _pair_distances(idx, pairs, w)
  assert (d > 0).all() and (d <= max_distance + 1e-9).all()
  # Every ray appears in at most one pair; 2P rays take part.
  assert len(np.unique(pairs)) == 2 * len(pairs)


def test_pairs_count_rounding_and_determinism():
  for n, frac, p in [(100, 0.25, 13), (10, 0.1, 1), (8, 0.0, 0), (64, 1.0, 32)]:
    _, pairs = samplers.sample_pixels_with_pairs(12, 12, n, np.random.default_rng(0),
                                                 pair_fraction=frac)
    assert pairs.shape == (p, 2)
  a = samplers.sample_pixels_with_pairs(20, 20, 64, np.random.default_rng(5))
  b = samplers.sample_pixels_with_pairs(20, 20, 64, np.random.default_rng(5))
  c = samplers.sample_pixels_with_pairs(20, 20, 64, np.random.default_rng(6))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])


def test_partner_uniform_over_disk():
  # Interior anchors: partners within radius 1 are the 4 edge neighbours, equally often.
  h, w = 50, 50
  counts = {}
  for seed in range(200):
    idx, pairs = samplers.sample_pixels_with_pairs(
        h, w, 40, np.random.default_rng(seed), pair_fraction=0.5, max_distance=1.0,
        mode="center", center_fraction=0.8)
    a, b = idx[pairs[:, 0]], idx[pairs[:, 1]]
    for dv, du in zip(b // w - a // w, b % w - a % w):
      counts[(dv, du)] = counts.get((dv, du), 0) + 1
  assert set(counts) == {(-1, 0), (1, 0), (0, -1), (0, 1)}
  freq = np.array(list(counts.values())) / sum(counts.values())
  np.testing.assert_allclose(freq, 0.25, atol=0.03)


def test_pairs_respect_mask_and_pad():
  h, w = 10, 10
  mask = np.zeros((h, w), bool)
  mask[2, 2] = mask[7, 7] = True  # isolated pixels: no pair possible
  mask[5, 3:5] = True  # one adjacent pair
  seen_padding = False
  for seed in range(10):
    idx, pairs = samplers.sample_pixels_with_pairs(h, w, 4, np.random.default_rng(seed),
                                                   pair_fraction=1.0, mask=mask)
    assert pairs.shape == (2, 2)
    assert mask.reshape(-1)[idx].all()
    # Only anchors (rows 0, 1) in the adjacent block can pair; padding comes last.
    pairable = int(np.isin(idx[:2], [53, 54]).sum())
    valid = pairs[pairs[:, 0] >= 0]
    assert len(valid) == pairable
    assert (pairs[pairable:] == -1).all()
    np.testing.assert_array_equal(_pair_distances(idx, valid, w), 1.0)
    seen_padding |= pairable < 2
  assert seen_padding


def test_pairs_padding_on_1x1_image():
  idx, pairs = samplers.sample_pixels_with_pairs(1, 1, 8, np.random.default_rng(0),
                                                 pair_fraction=0.5, replace=True)
  np.testing.assert_array_equal(idx, np.zeros(8, np.int64))
  np.testing.assert_array_equal(pairs, np.full((2, 2), -1))


# ------------------------------------------------------------------------- intrinsics


def test_scale_intrinsics_for():
  k = cameras.pinhole_intrinsics(100.0, 110.0, 31.5, 23.5)
  got = samplers.scale_intrinsics_for(k, (48, 64), (24, 32))
  np.testing.assert_allclose(got, cameras.pinhole_intrinsics(50.0, 55.0, 15.75, 11.75))
  got = samplers.scale_intrinsics_for(k, (48, 64), (24, 16))
  np.testing.assert_allclose(got, cameras.pinhole_intrinsics(25.0, 55.0, 7.875, 11.75))


def test_depth_range():
  near = np.array([1.0, 0.5, 2.0, 0.1])
  far = np.array([5.0, 6.0, 9.0, 3.0])
  assert samplers.depth_range(near, far, [0, 1, 2]) == (0.5, 9.0)
  assert samplers.depth_range(near, far, np.array([3])) == (0.1, 3.0)
  with pytest.raises(ValueError):
    samplers.depth_range(near, far, [])


# ------------------------------------------------------------------------- mixture


def test_mixture_frequencies():
  weights = {"llff": 2.0, "ibrnet": 1.0, "spaces": 1.0, "unused": 0.0}
  sampler = samplers.MixtureSampler(weights, seed=0)
  draws = [sampler.next_dataset() for _ in range(10_000)]
  names, counts = np.unique(draws, return_counts=True)
  freq = dict(zip(names.tolist(), (counts / len(draws)).tolist()))
  assert "unused" not in freq
  np.testing.assert_allclose([freq["llff"], freq["ibrnet"], freq["spaces"]],
                             [0.5, 0.25, 0.25], atol=0.02)


def test_mixture_determinism_and_state_round_trip():
  weights = {"a": 1.0, "b": 3.0, "c": 0.5}
  s1 = samplers.MixtureSampler(weights, seed=7)
  s2 = samplers.MixtureSampler(dict(reversed(list(weights.items()))), seed=7)
  first = [s1.next_dataset() for _ in range(50)]
  assert first == [s2.next_dataset() for _ in range(50)]
  state = json.loads(json.dumps(s1.state()))  # survives a JSON checkpoint
  resumed = samplers.MixtureSampler.from_state(state)
  assert [s1.next_dataset() for _ in range(100)] == [resumed.next_dataset()
                                                      for _ in range(100)]
  other = samplers.MixtureSampler(weights, seed=8)
  assert first != [other.next_dataset() for _ in range(50)]


@pytest.mark.parametrize("weights", [{}, {"a": -1.0, "b": 2.0}, {"a": 0.0, "b": 0.0},
                                     {"a": float("nan")}])
def test_mixture_errors(weights):
  with pytest.raises(ValueError):
    samplers.MixtureSampler(weights, seed=0)
