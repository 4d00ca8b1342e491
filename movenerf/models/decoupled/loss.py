"""The Decoupling-NeRF training loss: SSIM (+ MSE) over the whole target image.

  loss = ssim_weight x (1 - SSIM) + mse_weight x MSE

with SSIM as :func:`movenerf.image.metrics.ssim` (scikit-image's, differentiable).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from movenerf.geometry import rig
from movenerf.image import metrics
from movenerf.models.decoupled.model import POSE_AUGMENTATIONS, DecoupledNeRF
from movenerf.models.examples import example_views


def image_loss(pred: jnp.ndarray, target: jnp.ndarray, ssim_weight: float = 1.0,
               mse_weight: float = 0.0) -> tuple[jnp.ndarray, dict]:
  """(loss, {'mse', 'ssim', 'loss'}) of [..., H, W, C] images in [0, 1] (H, W >= 11 for the
  SSIM window), averaged over any leading batch axes."""
  mse = jnp.mean((pred - target) ** 2)
  ssim = jnp.mean(metrics.ssim(pred, target, data_range=1.0))
  loss = ssim_weight * (1.0 - ssim) + mse_weight * mse
  return loss, {"mse": mse, "ssim": ssim, "loss": loss}


def example_loss(model: DecoupledNeRF, params, ex: dict, key: jax.Array, loss_cfg,
                 image_hw: tuple[int, int]) -> tuple[jnp.ndarray, dict]:
  """(loss, metrics) of one example: the whole target image from its source views.

  ``ex["rgb"]`` holds every target pixel in raster order ([H * W, 3]); ``key`` draws the
  rig transform of ``config.pose_augmentation`` (unused without it).
  """
  max_scale = POSE_AUGMENTATIONS[model.config.pose_augmentation]
  if max_scale is not None:
    ex = rig.random_rig_transform(ex, key, max_scale)
  h, w = image_hw
  if ex["rgb"].shape[0] != h * w:
    raise ValueError(f"Decoupling-NeRF trains on whole images: {ex['rgb'].shape[0]} target "
                     f"pixels for a {h}x{w} view; draw examples with pixel_mode='image'")
  _, target, sources = example_views(ex, image_hw)
  out = model.apply({"params": params}, sources.images, sources.cameras, target)
  return image_loss(out["rgb"], ex["rgb"].reshape(h, w, 3), loss_cfg.ssim_weight,
                    loss_cfg.mse_weight)
