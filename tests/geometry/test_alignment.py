"""Umeyama's similarity and the pose errors after it, on analytic cases."""

import numpy as np
import pytest

from movenerf.geometry import alignment, cameras


def _rotation(axis, degrees):
  axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  a = np.radians(degrees)
  return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def _rig(n=12, seed=0):
  rng = np.random.default_rng(seed)
  eyes = rng.uniform(-1, 1, size=(n, 3)) * [2.0, 1.0, 0.5]
  return np.stack([cameras.look_at(e, (0.0, 0.0, 6.0), up=(0.0, -1.0, 0.0)) for e in eyes])


def test_umeyama_recovers_a_known_similarity():
  rng = np.random.default_rng(1)
  src = rng.normal(size=(20, 3))
  s, r, t = 2.5, _rotation([1, 2, 3], 40), np.array([0.3, -1.0, 4.0])
  dst = s * src @ r.T + t
  s_fit, r_fit, t_fit = alignment.umeyama(src, dst)
  assert s_fit == pytest.approx(s, rel=1e-12)
  np.testing.assert_allclose(r_fit, r, atol=1e-12)
  np.testing.assert_allclose(t_fit, t, atol=1e-12)
  _, r_rigid, _ = alignment.umeyama(src, dst, with_scale=False)
  np.testing.assert_allclose(r_rigid, r, atol=1e-12)  # the rotation does not need s


def test_umeyama_never_returns_a_reflection():
  rng = np.random.default_rng(2)
  src = rng.normal(size=(10, 3))
  dst = src * [1, 1, -1]  # a mirror image: the best proper rotation, not the mirror
  _, r, _ = alignment.umeyama(src, dst)
  assert np.linalg.det(r) == pytest.approx(1.0)


def test_umeyama_rejects_degenerate_input():
  with pytest.raises(ValueError, match="coincide"):
    alignment.umeyama(np.ones((4, 3)), np.zeros((4, 3)))
  with pytest.raises(ValueError, match="one shape"):
    alignment.umeyama(np.zeros((4, 3)), np.zeros((5, 3)))


def test_pose_errors_vanish_under_a_similarity():
  ref = _rig()
  s, r, t = 0.2, _rotation([0.3, -1, 0.2], 75), np.array([5.0, 1.0, -2.0])
  # The same rig in another world frame: x' = (R^T (x - t)) / s.
  est = ref.copy()
  est[:, :3, :3] = np.einsum("ji,njk->nik", r, ref[:, :3, :3])
  est[:, :3, 3] = (ref[:, :3, 3] - t) @ r / s
  err = alignment.pose_errors(est, ref)
  assert err.rotation_deg.max() < 1e-5 and err.centre_relative.max() < 1e-10
  assert err.relative_rotation_deg.max() < 1e-5
  assert err.scale == pytest.approx(s)
  diffs = ref[:, None, :3, 3] - ref[None, :, :3, 3]
  assert err.extent == pytest.approx(np.linalg.norm(diffs, axis=-1).max())


def test_pose_errors_measure_a_known_rotation_and_offset():
  ref = _rig()
  est = ref.copy()
  est[3, :3, :3] = ref[3, :3, :3] @ _rotation([0, 0, 1], 2.0)  # camera 3 rolls 2 degrees
  err = alignment.pose_errors(est, ref)
  assert err.rotation_deg[3] == pytest.approx(2.0, abs=1e-6)
  assert np.delete(err.rotation_deg, 3).max() < 1e-5
  assert err.relative_rotation_deg[3, 0] == pytest.approx(2.0, abs=1e-6)
  # Every centre moved by the same translation: absorbed by the alignment.
  moved = ref.copy()
  moved[:, :3, 3] += [0.5, 0.0, 0.0]
  assert alignment.pose_errors(moved, ref).centre.max() < 1e-10
  # One centre off by d: Umeyama spreads it, the total stays below d.
  off = ref.copy()
  off[5, :3, 3] += [0.0, 0.1, 0.0]
  err = alignment.pose_errors(off, ref)
  assert 0.05 < err.centre[5] < 0.1 and err.centre.max() == err.centre[5]
  summary = err.summary()
  assert summary["centre_rel_max"] == pytest.approx(err.centre[5] / err.extent)
