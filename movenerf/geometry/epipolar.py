"""Epipolar aggregation: what each source view sees of each sample point.

For every sample point on a target ray and every source view: the bilinearly sampled
colour and feature vector at the point's projection, the view-direction difference
between the target and the source camera, and a visibility mask (in front of the
camera and inside the image).
"""

from __future__ import annotations

import flax.struct
import jax.numpy as jnp

from movenerf.geometry.bilinear import bilinear_sample_views
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.projection import in_image, project_points

_NORM_EPS = 1e-6


@flax.struct.dataclass
class SourceViews:
  """The posed photos a scene is rendered from.

  Attributes:
    images: [V, H, W, 3] float colours in [0, 1].
    cameras: V cameras of size H x W.
  """

  images: jnp.ndarray
  cameras: Cameras

  @property
  def num_views(self) -> int:
    return self.images.shape[0]


@flax.struct.dataclass
class EpipolarSamples:
  """Per (ray, sample, view) inputs of the view transformer.

  Attributes:
    rgb_feat: [R, S, V, 3 + D] sampled colour (3) then feature (D).
    ray_diff: [R, S, V, 4] unit direction difference (3) and dot product (1).
    mask: [R, S, V, 1] float 0/1 visibility (in front and inside the image).
  """

  rgb_feat: jnp.ndarray
  ray_diff: jnp.ndarray
  mask: jnp.ndarray


def view_direction_features(points: jnp.ndarray, target_center: jnp.ndarray,
                            source_centers: jnp.ndarray) -> jnp.ndarray:
  """Difference of the viewing directions of the target and each source camera.

  Args:
    points: [..., 3] world points.
    target_center: [3] target camera centre.
    source_centers: [V, 3] source camera centres.

  Returns:
    [..., V, 4]: ``(a - b) / |a - b|`` and ``a . b``, where a and b are the unit vectors
    from the point to the target and to the source camera.
  """
  def unit_to(center):
    offset = center - points[..., None, :]
    return offset / (jnp.linalg.norm(offset, axis=-1, keepdims=True) + _NORM_EPS)

  a = unit_to(target_center[None, :])  # [..., 1, 3]
  b = unit_to(source_centers)  # [..., V, 3]
  diff = a - b
  direction = diff / jnp.maximum(jnp.linalg.norm(diff, axis=-1, keepdims=True), _NORM_EPS)
  dot = jnp.sum(a * b, axis=-1, keepdims=True)
  return jnp.concatenate([direction, dot], axis=-1)


def project_and_sample(points: jnp.ndarray, target_camera: Cameras, sources: SourceViews,
                       features: jnp.ndarray) -> tuple[EpipolarSamples, jnp.ndarray]:
  """Gathers what every source view sees of every sample point.

  Args:
    points: [R, S, 3] sample points.
    target_camera: the camera the rays come from (batch shape ()).
    sources: V source views of size H x W.
    features: [V, h, w, D] feature maps of the source images; sampled at the point's
      projection rescaled from H x W (as the official code does with one set of
      normalised coordinates, x_feat = x * (w - 1) / (W - 1)).

  Returns:
    (EpipolarSamples, xy [V, R, S, 2] pixel coordinates in the source images).
  """
  num_rays, num_samples, _ = points.shape
  cams = sources.cameras
  xy, in_front = project_points(points.reshape(-1, 3), cams)  # [V, P, 2], [V, P]
  xy_pv = jnp.swapaxes(xy, 0, 1)  # [P, V, 2]: point-major, the layout the network reads
  visible = in_front.T & in_image(xy_pv, cams.height, cams.width)
  feat_h, feat_w = features.shape[1:3]
  # max(.., 1) keeps 1-pixel images finite; the official normalisation divides by W - 1.
  scale = jnp.array([(feat_w - 1) / max(cams.width - 1, 1),
                     (feat_h - 1) / max(cams.height - 1, 1)], jnp.float32)
  rgb = bilinear_sample_views(sources.images, xy_pv)
  feat = bilinear_sample_views(features.astype(sources.images.dtype), xy_pv * scale)
  shape = (num_rays, num_samples, sources.num_views)
  rgb_feat = jnp.concatenate([rgb, feat], axis=-1).reshape(shape + (-1,))
  mask = visible.reshape(shape + (1,)).astype(rgb_feat.dtype)
  ray_diff = view_direction_features(points, target_camera.centers, cams.centers)
  samples = EpipolarSamples(rgb_feat, ray_diff, mask)
  return samples, xy.reshape(sources.num_views, num_rays, num_samples, 2)
