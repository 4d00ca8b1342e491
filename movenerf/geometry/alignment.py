"""Similarity alignment of camera rigs, and the pose errors that remain after it.

Structure from motion recovers cameras up to a similarity (scale, rotation, translation)
of the world. :func:`umeyama` finds the least-squares similarity between two point sets
(Umeyama, "Least-squares estimation of transformation parameters between two point
patterns", TPAMI 1991); :func:`pose_errors` aligns recovered camera centres to reference
ones with it and reports, per view, the rotation error in degrees and the centre error
relative to the reference rig's extent (its largest distance between two centres).

Pure NumPy; cameras are ``[N, 4, 4]`` camera-to-world matrices in one convention (the
library's is OpenCV: x right, y down, z forward).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def umeyama(src, dst, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
  """The similarity ``(s, R, t)`` minimising ``sum_i |dst_i - (s R src_i + t)|^2``.

  Args:
    src: [N, D] points (N >= D for a unique rotation; N >= 2).
    dst: [N, D] corresponding points.
    with_scale: fit the scale (else ``s = 1``: a rigid motion).

  Returns:
    ``s`` (float), ``R`` [D, D] (a proper rotation, det +1) and ``t`` [D].
  Raises:
    ValueError: shapes that differ, fewer than 2 points, non-finite values, or source
      points that all coincide.
  """
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  if src.ndim != 2 or src.shape != dst.shape:
    raise ValueError(f"umeyama: want two [N, D] arrays of one shape, got {src.shape} and "
                     f"{dst.shape}")
  if src.shape[0] < 2:
    raise ValueError(f"umeyama: need at least 2 points, got {src.shape[0]}")
  if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
    raise ValueError("umeyama: points must be finite")
  n, dim = src.shape
  mu_s, mu_d = src.mean(0), dst.mean(0)
  xs, xd = src - mu_s, dst - mu_d
  var_s = float((xs**2).sum() / n)
  if var_s <= 1e-300:
    raise ValueError("umeyama: the source points all coincide")
  cov = xd.T @ xs / n
  u, d, vt = np.linalg.svd(cov)
  sign = np.ones(dim)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    sign[-1] = -1.0  # a reflection would fit better: take the closest rotation instead
  rot = u @ np.diag(sign) @ vt
  scale = float((d * sign).sum() / var_s) if with_scale else 1.0
  trans = mu_d - scale * rot @ mu_s
  return scale, rot, trans


def rotation_angle_deg(r_a, r_b) -> np.ndarray:
  """Angle in degrees of ``r_a^T r_b`` for rotations [..., 3, 3] (the geodesic distance)."""
  rel = np.einsum("...ji,...jk->...ik", np.asarray(r_a, np.float64),
                  np.asarray(r_b, np.float64))
  cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
  return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@dataclasses.dataclass(frozen=True)
class PoseErrors:
  """Errors of recovered cameras after aligning them to reference cameras."""

  rotation_deg: np.ndarray  # [N] rotation error per view, degrees
  centre: np.ndarray  # [N] camera-centre error per view, reference units
  extent: float  # the reference rig's extent: largest distance between two centres
  scale: float  # s of the similarity that maps recovered onto reference
  rotation: np.ndarray  # [3, 3] R of that similarity
  translation: np.ndarray  # [3] t of that similarity
  relative_rotation_deg: np.ndarray  # [N, N] error of each pair's relative rotation

  @property
  def centre_relative(self) -> np.ndarray:
    """[N] centre errors as fractions of the rig's extent."""
    return self.centre / self.extent

  def summary(self) -> dict:
    """Max and mean of both errors (degrees; fractions of the extent), JSON-ready."""
    return dict(rotation_deg_max=float(self.rotation_deg.max()),
                rotation_deg_mean=float(self.rotation_deg.mean()),
                centre_rel_max=float(self.centre_relative.max()),
                centre_rel_mean=float(self.centre_relative.mean()),
                relative_rotation_deg_max=float(self.relative_rotation_deg.max()),
                extent=self.extent, scale=self.scale)


def pose_errors(c2w, c2w_ref) -> PoseErrors:
  """Aligns the centres of ``c2w`` to those of ``c2w_ref`` (Umeyama, with scale) and
  measures what the alignment leaves.

  The rotation error of view i is the angle between ``R ∘ R_i`` (the recovered camera
  rotated into the reference frame) and the reference rotation; the centre error is
  ``|s R c_i + t - c_ref_i|``, also given relative to the reference rig's extent. The
  rotation errors include the error of the alignment's rotation (fitted to centres alone);
  the relative rotation errors (the angle between ``R_i^T R_j`` and its reference, for
  every pair) need no alignment.

  Args:
    c2w: [N, 4, 4] (or [N, 3, 4]) recovered camera-to-world matrices.
    c2w_ref: [N, 4, 4] (or [N, 3, 4]) reference ones, same camera convention and order.
  Returns:
    :class:`PoseErrors`.
  Raises:
    ValueError: fewer than 3 views, shapes that differ, or reference centres that all
      coincide (no extent to measure against).
  """
  c2w = np.asarray(c2w, np.float64)
  c2w_ref = np.asarray(c2w_ref, np.float64)
  if c2w.shape[1:] not in ((4, 4), (3, 4)) or c2w_ref.shape[1:] not in ((4, 4), (3, 4)) \
      or len(c2w) != len(c2w_ref):
    raise ValueError(f"pose_errors: want [N, 4, 4] cameras of one count, got {c2w.shape} "
                     f"and {c2w_ref.shape}")
  if len(c2w) < 3:
    raise ValueError(f"pose_errors: need at least 3 views, got {len(c2w)}")
  centres, centres_ref = c2w[:, :3, 3], c2w_ref[:, :3, 3]
  diffs = centres_ref[:, None] - centres_ref[None]
  extent = float(np.sqrt((diffs**2).sum(-1)).max())
  if extent <= 0:
    raise ValueError("pose_errors: the reference camera centres all coincide")
  scale, rot, trans = umeyama(centres, centres_ref)
  aligned = scale * centres @ rot.T + trans
  rotations = np.einsum("ij,njk->nik", rot, c2w[:, :3, :3])
  return PoseErrors(
      rotation_deg=rotation_angle_deg(c2w_ref[:, :3, :3], rotations),
      centre=np.linalg.norm(aligned - centres_ref, axis=-1),
      extent=extent, scale=scale, rotation=rot, translation=trans,
      relative_rotation_deg=rotation_angle_deg(_relative(c2w_ref), _relative(c2w)))


def _relative(c2w: np.ndarray) -> np.ndarray:
  """[N, N, 3, 3] rotations ``R_i^T R_j`` between the cameras."""
  r = c2w[:, :3, :3]
  return np.einsum("nji,mjk->nmik", r, r)
