"""The Decoupling-NeRF training loss: SSIM (+ MSE) over the whole target image, and a
feature-level contrastive term.

  loss = ssim_weight x (1 - SSIM) + mse_weight x MSE + contrastive_weight x InfoNCE
         [+ codebook + vq_commitment x commitment + vq_entropy_weight x usage]

with SSIM as :func:`movenerf.image.metrics.ssim` (scikit-image's, differentiable). The
bracketed VQ-VAE terms (:func:`movenerf.models.decoupled.model.vector_quantise`) are
there while the model's ``vq_codebook_size`` is > 0; ``vq_commitment`` is beta (0.25).
The usage term (:func:`codebook_usage_loss`, off while ``vq_entropy_weight`` is 0) asks
for every feature vector to be near one codeword and for the codewords to be used
equally, against the codebook collapse.

The contrastive term (:func:`contrastive_loss`, off while ``contrastive_weight`` is 0)
asks the scene encoder for features that name the 3D content under a pixel, whatever
source view it is seen from: ``contrastive_points`` target pixels are drawn at random,
each lifted to the world point at the depth the model renders there
(:func:`movenerf.models.decoupled.model.layer_depth` of its compositing weights, held
fixed), projected into every source view and the encoder's feature maps sampled there
(:func:`movenerf.geometry.epipolar.project_and_sample`). Then :func:`info_nce` over
every ordered pair of source views: the positive of a point in one view is the same
point in the other, the negatives the other points, using only points visible in both.
The loss is per example and a batch holds one example (one scene) per vmapped call, so
the negatives are other points of the same scene, not other scenes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from movenerf import validation
from movenerf.geometry import rig
from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews, project_and_sample
from movenerf.geometry.rays import flat_index_to_pixels, pixel_rays
from movenerf.image import metrics
from movenerf.models.decoupled.model import (POSE_AUGMENTATIONS, DecoupledNeRF, entropy,
                                             layer_depth)
from movenerf.models.examples import example_views

# The contrastive settings of a loss section that lacks them: the term is off.
CONTRASTIVE_DEFAULTS = {"contrastive_weight": 0.0, "contrastive_temperature": 0.1,
                        "contrastive_points": 64}
# beta of the VQ-VAE commitment loss in a loss section that lacks it.
VQ_COMMITMENT = 0.25
# The codebook usage term's settings in a loss section that lacks them: off.
VQ_ENTROPY_DEFAULTS = {"vq_entropy_weight": 0.0, "vq_entropy_temperature": 0.1}


def image_loss(pred: jnp.ndarray, target: jnp.ndarray, ssim_weight: float = 1.0,
               mse_weight: float = 0.0) -> tuple[jnp.ndarray, dict]:
  """(loss, {'mse', 'ssim', 'loss'}) of [..., H, W, C] images in [0, 1] (H, W >= 11 for the
  SSIM window), averaged over any leading batch axes."""
  mse = jnp.mean((pred - target) ** 2)
  ssim = jnp.mean(metrics.ssim(pred, target, data_range=1.0))
  loss = ssim_weight * (1.0 - ssim) + mse_weight * mse
  return loss, {"mse": mse, "ssim": ssim, "loss": loss}


def contrastive_settings(loss_cfg) -> tuple[float, float, int]:
  """(weight, temperature, points) of a loss section, checked; missing keys take
  :data:`CONTRASTIVE_DEFAULTS`.

  Raises:
    UsageError: a negative weight, a temperature <= 0 or fewer than 2 points, naming the
      key (``loss.contrastive_...``).
  """
  get = lambda k: loss_cfg.get(k, CONTRASTIVE_DEFAULTS[k])
  weight = validation.number("loss.contrastive_weight", get("contrastive_weight"),
                             minimum=0.0)
  temperature = validation.number("loss.contrastive_temperature",
                                  get("contrastive_temperature"), above=0.0)
  points = validation.integer("loss.contrastive_points", get("contrastive_points"),
                              minimum=2)
  return weight, temperature, points


def vq_commitment(loss_cfg) -> float:
  """beta, ``loss.vq_commitment`` (default :data:`VQ_COMMITMENT`), checked.

  Raises:
    UsageError: a negative value, naming the key.
  """
  return validation.number("loss.vq_commitment", loss_cfg.get("vq_commitment", VQ_COMMITMENT),
                           minimum=0.0)


def vq_entropy_settings(loss_cfg) -> tuple[float, float]:
  """(weight, temperature) of the codebook usage term, checked; missing keys take
  :data:`VQ_ENTROPY_DEFAULTS`.

  Raises:
    UsageError: a negative weight or a temperature <= 0, naming the key.
  """
  get = lambda k: loss_cfg.get(k, VQ_ENTROPY_DEFAULTS[k])
  weight = validation.number("loss.vq_entropy_weight", get("vq_entropy_weight"), minimum=0.0)
  temperature = validation.number("loss.vq_entropy_temperature",
                                  get("vq_entropy_temperature"), above=0.0)
  return weight, temperature


def codebook_usage_loss(distances: jnp.ndarray, temperature: float) -> jnp.ndarray:
  """``mean_i H(p_i) - H(mean_i p_i)`` with ``p_i = softmax(-d_i / temperature)`` the
  soft assignment of vector i to the codewords (natural logarithms).

  The first term is low when every vector is near one codeword, the second (subtracted)
  high when the vectors spread over the codewords equally: the entropy penalty of
  Yu et al. 2023's lookup-free quantisation (MAGVIT-v2), here on the soft assignments
  of a learned codebook. Its range is [-log min(N, K), log K] for N vectors and K
  codewords: 0 when every vector's assignment is the same, -log N when N <= K vectors
  each pick a different codeword with certainty.

  Args:
    distances: [..., K] squared distances of each vector to the codewords.
    temperature: > 0, in the distances' units.

  Returns:
    [] the term.
  """
  logits = -distances.reshape(-1, distances.shape[-1]) / temperature
  logp = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(logp)
  per_vector = -jnp.mean(jnp.sum(p * logp, axis=-1))
  return per_vector - entropy(jnp.mean(p, axis=0))


def info_nce(features: jnp.ndarray, visible: jnp.ndarray, temperature: float) -> jnp.ndarray:
  """InfoNCE of P points' features across V views, averaged over (view a, view b != a,
  anchor point i) with i visible in both views.

  With unit vectors ``z = f / |f|`` and ``s_ij = z_i(a) . z_j(b) / temperature``, the
  term of an anchor is ``-log(exp(s_ii) / sum_j exp(s_ij))``, the sum over the points j
  visible in both a and b (i included). Invisible points are neither anchors nor
  negatives; with no anchor at all the loss is 0. Identical features across views of
  mutually orthogonal points give the minimum ``log(1 + (N - 1) exp(-1 / temperature))``
  for N visible points; features unrelated across views give about ``log(N)``.

  Args:
    features: [P, V, C].
    visible: [P, V] bool.
    temperature: > 0.

  Returns:
    [] the mean term.
  """
  num_points, num_views = features.shape[:2]
  # rsqrt of a clamped square: finite gradients at the zero features of points outside
  # a view (where a norm's gradient is 0 / 0).
  z = features * jax.lax.rsqrt(jnp.maximum(jnp.sum(features ** 2, -1, keepdims=True), 1e-12))
  logits = jnp.einsum("iac,jbc->abij", z, z) / temperature  # [V, V, P, P]
  vis = visible.T.astype(bool)  # [V, P]
  both = vis[:, None, :] & vis[None, :, :]  # [a, b, point]
  anchors = both & ~jnp.eye(num_views, dtype=bool)[:, :, None]
  # Candidates: the points visible in both views, and the anchor itself (which keeps the
  # rows of non-anchors finite; they are dropped below).
  candidates = both[:, :, None, :] | jnp.eye(num_points, dtype=bool)
  lse = jax.nn.logsumexp(jnp.where(candidates, logits, -jnp.inf), axis=-1)  # [V, V, P]
  terms = lse - jnp.diagonal(logits, axis1=2, axis2=3)
  count = jnp.sum(anchors)
  return jnp.sum(jnp.where(anchors, terms, 0.0)) / jnp.maximum(count, 1)


def surface_points(target: Cameras, depth: jnp.ndarray, key: jax.Array,
                   num_points: int) -> jnp.ndarray:
  """[P, 3] world points: P distinct target pixels drawn with ``key`` (all of them when
  P >= H * W), each at its z-depth in ``depth`` [H, W] along its ray."""
  height, width = depth.shape
  num_points = min(num_points, height * width)
  flat = jax.random.choice(key, height * width, (num_points,), replace=False)
  rays = pixel_rays(target, flat_index_to_pixels(flat, width))
  return rays.origins + depth.reshape(-1)[flat][:, None] * rays.directions


def contrastive_loss(features: jnp.ndarray, points: jnp.ndarray, target: Cameras,
                     sources: SourceViews, temperature: float) -> jnp.ndarray:
  """:func:`info_nce` of the source feature maps [V, h, w, C] sampled at the projections
  of ``points`` [P, 3] into the sources (visible: in front of the camera and inside the
  image)."""
  samples, _ = project_and_sample(points[:, None], target, sources, features)
  num_channels = features.shape[-1]
  feats = samples.rgb_feat[:, 0, :, -num_channels:]  # [P, V, C]
  return info_nce(feats, samples.mask[:, 0, :, 0] > 0, temperature)


def example_loss(model: DecoupledNeRF, params, ex: dict, key: jax.Array, loss_cfg,
                 image_hw: tuple[int, int]) -> tuple[jnp.ndarray, dict]:
  """(loss, metrics) of one example: the whole target image from its source views.

  ``ex["rgb"]`` holds every target pixel in raster order ([H * W, 3]); ``key`` draws the
  rig transform of ``config.pose_augmentation`` and, folded with 1, the contrastive
  term's pixels (each unused without its option). With ``loss_cfg.contrastive_weight``
  > 0 the metrics also hold ``contrastive``, the unweighted InfoNCE; with the model's
  ``vq_codebook_size`` > 0 they hold ``vq_codebook`` and ``vq_commitment`` (unweighted)
  and ``vq_perplexity``, the codebook usage (and ``vq_renderer_perplexity``, the second
  codebook's, with ``vq_renderer_input``), and with ``loss.vq_entropy_weight`` > 0
  ``vq_entropy``, the unweighted usage term of the encoder's codebook.
  """
  weight, temperature, num_points = contrastive_settings(loss_cfg)
  beta = vq_commitment(loss_cfg)
  usage_weight, usage_temperature = vq_entropy_settings(loss_cfg)
  max_scale = POSE_AUGMENTATIONS[model.config.pose_augmentation]
  if max_scale is not None:
    ex = rig.random_rig_transform(ex, key, max_scale)
  h, w = image_hw
  if ex["rgb"].shape[0] != h * w:
    raise ValueError(f"Decoupling-NeRF trains on whole images: {ex['rgb'].shape[0]} target "
                     f"pixels for a {h}x{w} view; draw examples with pixel_mode='image'")
  _, target, sources = example_views(ex, image_hw)
  out = model.apply({"params": params}, sources.images, sources.cameras, target)
  loss, terms = image_loss(out["rgb"], ex["rgb"].reshape(h, w, 3), loss_cfg.ssim_weight,
                           loss_cfg.mse_weight)
  if weight > 0:
    depth = layer_depth(jax.lax.stop_gradient(out["weights"]), ex["near"], ex["far"])
    points = surface_points(target, depth, jax.random.fold_in(key, 1), num_points)
    term = contrastive_loss(out["features"], points, target, sources, temperature)
    loss = loss + weight * term
    terms = dict(terms, contrastive=term, loss=loss)
  if model.config.vq_codebook_size:
    loss = loss + out["vq_codebook"] + beta * out["vq_commitment"]
    terms = dict(terms, loss=loss, **{k: out[k] for k in (
        "vq_codebook", "vq_commitment", "vq_perplexity", "vq_renderer_perplexity")
        if k in out})
    if usage_weight > 0:
      usage = codebook_usage_loss(out["vq_distances"], usage_temperature)
      loss = loss + usage_weight * usage
      terms = dict(terms, vq_entropy=usage, loss=loss)
  return loss, terms
