"""Image-quality metrics: PSNR, SSIM (matching scikit-image) and the glue to LPIPS.

`ssim` / `ssim_map` are written in jax.numpy, so they can be jitted and differentiated
(Decoupling-NeRF trains with ``1 - ssim``). They reproduce

  skimage.metrics.structural_similarity(a, b, data_range=1, gaussian_weights=True,
                                        sigma=1.5, channel_axis=-1)

with skimage's defaults: sample covariance (``N / (N - 1)`` with N = 11 * 11),
K1 = 0.01, K2 = 0.03, a Gaussian window truncated at 3.5 sigma (11 taps), borders
filled by half-sample symmetric reflection (scipy.ndimage ``mode='reflect'``,
``d c b a | a b c d``), and the mean taken over the map with a 5-pixel border cropped.
Each channel is handled on its own and the channel means are averaged, which equals
the mean over all channels because every channel keeps the same number of pixels.

Computed in float32 (float64 for float64 inputs under ``jax_enable_x64``), the mean
agrees with skimage's float64 result to ~1e-7 (~1e-13 in float64).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np


# scikit-image's SSIM constants (Wang et al. 2004 with skimage's window truncation).
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr(pred: Any, gt: Any) -> float:
  """PSNR in dB of images in [0, 1] (both clipped), over all pixels and channels.

  Identical images give ``+inf``.

  Args:
    pred: [..., H, W, C] prediction.
    gt: [..., H, W, C] ground truth of the same shape.

  Returns:
    A Python float.
  """
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  if pred.shape != gt.shape:
    raise ValueError(f"psnr: shapes differ: {pred.shape} vs {gt.shape}")
  mse = float(np.mean((np.clip(pred, 0, 1) - np.clip(gt, 0, 1)) ** 2))
  return float("inf") if mse == 0 else float(mse_to_psnr(mse))


def mse_to_psnr(mse):
  """PSNR in dB of images in [0, 1] whose mean squared error is ``mse`` (traceable)."""
  return -10.0 * jnp.log10(mse) if isinstance(mse, jax.Array) else -10.0 * np.log10(mse)


def _gaussian_taps(sigma: float, truncate: float) -> np.ndarray:
  """The 1-D kernel of scipy.ndimage.gaussian_filter (radius int(truncate*sigma + 0.5))."""
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  taps = np.exp(-0.5 / (sigma * sigma) * x * x)
  return taps / taps.sum()


def _blur(x: jnp.ndarray, taps: np.ndarray) -> jnp.ndarray:
  """Separable Gaussian blur of [B, H, W] maps, borders reflected like scipy.ndimage.

  Along H first, then W: scipy.ndimage.gaussian_filter's order (axis 0 before axis 1).
  """
  r = len(taps) // 2
  # numpy/jax 'symmetric' repeats the edge sample (d c b a | a b c d), which is what
  # scipy.ndimage calls 'reflect'.
  x = jnp.pad(x, ((0, 0), (r, r), (r, r)), mode="symmetric")[..., None]
  k = jnp.asarray(taps, x.dtype)
  dims = ("NHWC", "HWIO", "NHWC")
  # HIGHEST: GPUs would otherwise run float32 convolutions in TF32 (~1e-3 relative).
  x = jax.lax.conv_general_dilated(x, k.reshape(-1, 1, 1, 1), (1, 1), "VALID",
                                   dimension_numbers=dims,
                                   precision=jax.lax.Precision.HIGHEST)
  x = jax.lax.conv_general_dilated(x, k.reshape(1, -1, 1, 1), (1, 1), "VALID",
                                   dimension_numbers=dims,
                                   precision=jax.lax.Precision.HIGHEST)
  return x[..., 0]


def _check_pair(a: Any, b: Any, win: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.shape != b.shape:
    raise ValueError(f"ssim: shapes differ: {a.shape} vs {b.shape}")
  if a.ndim < 3:
    raise ValueError(f"ssim: expected [..., H, W, C] images, got shape {a.shape} "
                     "(add a trailing channel axis for grayscale)")
  if a.shape[-3] < win or a.shape[-2] < win:
    raise ValueError(f"ssim: images of {a.shape[-3]}x{a.shape[-2]} pixels are smaller than "
                     f"the {win}x{win} window")
  dtype = jnp.result_type(a.dtype, b.dtype, jnp.float32)
  return a.astype(dtype), b.astype(dtype)


@functools.partial(jax.jit, static_argnames=("sigma", "k1", "k2", "use_sample_covariance"))
def _ssim_map(a, b, data_range, *, sigma, k1, k2, use_sample_covariance):
  """`ssim_map` on checked inputs; jitted so that eager calls in eval loops are cached."""
  taps = _gaussian_taps(sigma, SSIM_TRUNCATE)
  npix = len(taps) ** 2
  cov_norm = npix / (npix - 1) if use_sample_covariance else 1.0
  # (Co)variances are E[xy] - E[x]E[y], which cancels badly in float32 on bright, flat
  # regions. Shifting both images by one constant leaves them unchanged (the reflected
  # window's weights sum to 1) and takes the shift out of the cancellation. The shift is
  # a constant of the formula, so no gradient flows through it.
  shift = jax.lax.stop_gradient((a + b).mean(axis=(-3, -2), keepdims=True) * 0.5)
  a0, b0 = a - shift, b - shift
  # One blur call for the five moment maps, each channel of each image a separate map.
  moments = jnp.stack([a0, b0, a0 * a0, b0 * b0, a0 * b0])  # [5, ..., H, W, C]
  flat = jnp.moveaxis(moments, -1, -3).reshape(-1, *a.shape[-3:-1])
  blurred = _blur(flat, taps).reshape(moments.shape[:-3] + (a.shape[-1],) + a.shape[-3:-1])
  ux0, uy0, uxx, uyy, uxy = jnp.moveaxis(blurred, -3, -1)
  vx = cov_norm * (uxx - ux0 * ux0)
  vy = cov_norm * (uyy - uy0 * uy0)
  vxy = cov_norm * (uxy - ux0 * uy0)
  ux, uy = ux0 + shift, uy0 + shift
  c1 = (k1 * data_range) ** 2
  c2 = (k2 * data_range) ** 2
  num = (2 * ux * uy + c1) * (2 * vxy + c2)
  den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
  return num / den


def ssim_map(a: Any, b: Any, data_range: float = 1.0, *, sigma: float = SSIM_SIGMA,
             k1: float = SSIM_K1, k2: float = SSIM_K2,
             use_sample_covariance: bool = True) -> jnp.ndarray:
  """Per-pixel SSIM, skimage's ``full=True`` image (borders not cropped).

  Args:
    a: [..., H, W, C] image(s); H and W at least the window size (11 for sigma 1.5).
    b: [..., H, W, C] image(s) of the same shape.
    data_range: max - min of the possible values (1 for images in [0, 1]).
    sigma: standard deviation of the Gaussian window (truncated at 3.5 sigma).
    k1: stabiliser of the luminance term, C1 = (k1 * data_range)^2.
    k2: stabiliser of the contrast-structure term, C2 = (k2 * data_range)^2.
    use_sample_covariance: normalise (co)variances by N - 1 instead of N, N = window
      pixels (skimage's default; Wang et al. 2004 used False).

  Returns:
    [..., H, W, C] SSIM values.
  """
  a, b = _check_pair(a, b, len(_gaussian_taps(sigma, SSIM_TRUNCATE)))
  return _ssim_map(a, b, data_range, sigma=sigma, k1=k1, k2=k2,
                   use_sample_covariance=use_sample_covariance)


def ssim(a: Any, b: Any, data_range: float = 1.0, *, reduce: bool = True,
         sigma: float = SSIM_SIGMA, k1: float = SSIM_K1, k2: float = SSIM_K2,
         use_sample_covariance: bool = True) -> jnp.ndarray:
  """Mean SSIM, equal to skimage's ``structural_similarity`` (see the module docstring).

  Jit-able and differentiable; ``1 - ssim(pred, gt)`` is the usual SSIM loss.

  Args:
    a: [..., H, W, C] image(s).
    b: [..., H, W, C] image(s) of the same shape.
    data_range: max - min of the possible values (1 for images in [0, 1]).
    reduce: True: average the map; False: return the cropped map itself.
    sigma, k1, k2, use_sample_covariance: as in `ssim_map`.

  Returns:
    reduce=True: [...] one SSIM per image (a scalar for a single [H, W, C] image).
    reduce=False: [..., H - 2r, W - 2r, C] map with the r-pixel border (r = 5) removed,
    whose mean is the SSIM.
  """
  full = ssim_map(a, b, data_range, sigma=sigma, k1=k1, k2=k2,
                  use_sample_covariance=use_sample_covariance)
  return _crop_and_mean(full, int(SSIM_TRUNCATE * sigma + 0.5), reduce)


@functools.partial(jax.jit, static_argnames=("r", "reduce"))
def _crop_and_mean(full, r, reduce):
  # skimage ignores the r-pixel strip where the window reaches past the border.
  cropped = full[..., r:full.shape[-3] - r, r:full.shape[-2] - r, :]
  if not reduce:
    return cropped

  def mean_hwc(x):
    return x.mean(axis=-2).mean(axis=-2).mean(axis=-1)

  # Two passes: a long float32 sum rounds to ~1e-7, but the mean of the (small) deviations
  # from a first estimate is nearly exact, which brings the result to float32 resolution.
  # The estimate is a constant of the formula, so the gradient is that of the plain mean.
  centre = jax.lax.stop_gradient(mean_hwc(cropped))
  return centre + mean_hwc(cropped - centre[..., None, None, None])


def image_metrics(pred: Any, gt: Any,
                  lpips_fns: Mapping[str, Callable[[Any, Any], Any]] | None = None
                  ) -> dict[str, float]:
  """PSNR, SSIM and LPIPS of one rendered image, as plain Python values for logs.

  Both images are clipped to [0, 1] first (as `psnr` does), so that every number
  describes the same pair of images.

  Args:
    pred: [H, W, 3] rendering in [0, 1].
    gt: [H, W, 3] ground truth in [0, 1].
    lpips_fns: {network name: callable taking the two images and returning their
      distance}, e.g. `movenerf.evaluation.lpips.default_lpips()` ({"alex": ..., "vgg":
      ...}); None or {}: no LPIPS.

  Returns:
    {"psnr": float, "ssim": float} plus "lpips_<name>" for every network of
    ``lpips_fns``.
  """
  pred = np.clip(np.asarray(pred, np.float32), 0.0, 1.0)
  gt = np.clip(np.asarray(gt, np.float32), 0.0, 1.0)
  if pred.shape != gt.shape:
    raise ValueError(f"image_metrics: shapes differ: {pred.shape} vs {gt.shape}")
  out = {"psnr": psnr(pred, gt), "ssim": float(ssim(pred, gt, data_range=1.0))}
  for name, fn in (lpips_fns or {}).items():
    out[f"lpips_{name}"] = float(np.asarray(fn(pred, gt)))
  return out
