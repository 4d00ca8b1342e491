"""Tests of movenerf.image.metrics: PSNR and SSIM (against scikit-image and a SciPy reference)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from movenerf.image import metrics

# ---------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------

SHAPES = [(64, 64, 3), (37, 53, 3), (11, 11, 1), (96, 40, 1), (128, 128, 3)]
KINDS = ["random", "smooth", "noisy", "bright"]


def _pair(shape, kind, seed=0):
  """Two float32 images in [0, 1] of a given character."""
  rng = np.random.default_rng(seed)
  a = rng.random(shape)
  b = rng.random(shape)
  if kind == "smooth":
    a = ndimage.gaussian_filter(a, (4, 4, 0))
    b = ndimage.gaussian_filter(a + 0.05 * rng.standard_normal(shape), (2, 2, 0))
  elif kind == "noisy":
    b = a + 0.02 * rng.standard_normal(shape)
  elif kind == "bright":
    # Near-flat bright images: the float32 cancellation case of E[x^2] - E[x]^2.
    a = 0.9 + 0.02 * a
    b = a + 0.001 * rng.standard_normal(shape)
  return (np.clip(a, 0, 1).astype(np.float32), np.clip(b, 0, 1).astype(np.float32))


def _reference_ssim_map(a, b):
  """skimage's algorithm written out in float64 with scipy.ndimage, per channel."""
  a, b = a.astype(np.float64), b.astype(np.float64)

  def blur(x):
    return ndimage.gaussian_filter(x, sigma=(1.5, 1.5, 0), truncate=3.5, mode="reflect")

  ux, uy = blur(a), blur(b)
  cov_norm = 121 / 120
  vx = cov_norm * (blur(a * a) - ux * ux)
  vy = cov_norm * (blur(b * b) - uy * uy)
  vxy = cov_norm * (blur(a * b) - ux * uy)
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))


@pytest.mark.parametrize("shape", SHAPES)
def test_ssim_matches_skimage(shape):
  skm = pytest.importorskip("skimage.metrics")
  worst = 0.0
  for kind in KINDS:
    a, b = _pair(shape, kind)
    # float64 copies of the same float32 data: the reference is skimage at full precision.
    want = skm.structural_similarity(a.astype(np.float64), b.astype(np.float64), data_range=1,
                                     gaussian_weights=True, sigma=1.5, channel_axis=-1)
    got = float(metrics.ssim(a, b, data_range=1.0))
    worst = max(worst, abs(got - want))
  # Measured: <= 6e-8 from 37x53 up (float32 spacing near 1 is 6e-8); 2.4e-7 at 11x11,
  # where the mean is a single pixel of the map and no averaging hides its rounding.
  assert worst < 1e-6, worst


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_ssim_map_matches_scipy_reference(shape):
  for kind in KINDS:
    a, b = _pair(shape, kind, seed=1)
    want = _reference_ssim_map(a, b)
    np.testing.assert_allclose(np.asarray(metrics.ssim_map(a, b)), want, rtol=0, atol=1e-5)
    cropped = want[5:-5, 5:-5]
    np.testing.assert_allclose(float(metrics.ssim(a, b)), cropped.mean(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(metrics.ssim(a, b, reduce=False)), cropped,
                               rtol=0, atol=1e-5)


def test_ssim_identical_images_is_one():
  for shape in SHAPES:
    a, _ = _pair(shape, "random")
    assert float(metrics.ssim(a, a)) == pytest.approx(1.0, abs=1e-7)


def test_ssim_batched_equals_per_image():
  images = [_pair((40, 48, 3), kind, seed=s) for s, kind in enumerate(KINDS + KINDS[:2])]
  a = np.stack([p[0] for p in images]).reshape(2, 3, 40, 48, 3)
  b = np.stack([p[1] for p in images]).reshape(2, 3, 40, 48, 3)
  got = np.asarray(metrics.ssim(a, b))
  assert got.shape == (2, 3)
  want = np.array([float(metrics.ssim(x, y)) for x, y in images]).reshape(2, 3)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


def test_ssim_jit_equals_eager_and_gradient_is_finite():
  a, b = _pair((48, 40, 3), "noisy")
  eager = metrics.ssim(a, b)
  jitted = jax.jit(metrics.ssim)(a, b)
  np.testing.assert_allclose(float(jitted), float(eager), rtol=0, atol=1e-7)

  loss = lambda x: 1.0 - metrics.ssim(x, b)  # pylint: disable=unnecessary-lambda-assignment
  grad = jax.jit(jax.grad(loss))(jnp.asarray(a))
  assert grad.shape == a.shape
  assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.abs(grad).max()) > 0
  # A small step against the gradient improves SSIM: the gradient points the right way.
  assert float(loss(a - 0.5 * grad)) < float(loss(a))
  # Identical images are a maximum: zero gradient there, not NaN.
  grad_same = jax.grad(loss)(jnp.asarray(b))
  assert np.all(np.isfinite(np.asarray(grad_same)))
  assert float(jnp.abs(grad_same).max()) < 1e-5


def test_ssim_rejects_bad_shapes():
  a, b = _pair((32, 32, 3), "random")
  with pytest.raises(ValueError, match="shapes differ"):
    metrics.ssim(a, b[:, :16])
  with pytest.raises(ValueError, match="window"):
    metrics.ssim(a[:10], b[:10])
  with pytest.raises(ValueError, match="channel"):
    metrics.ssim(a[..., 0], b[..., 0])


def test_psnr():
  gt = np.zeros((8, 8, 3))
  assert metrics.psnr(gt, gt) == float("inf")
  assert metrics.psnr(gt + 0.1, gt) == pytest.approx(20.0, abs=1e-9)
  assert metrics.psnr(gt + 2.0, gt) == pytest.approx(0.0, abs=1e-9)  # clipped to [0, 1]
  with pytest.raises(ValueError):
    metrics.psnr(gt, gt[:4])


def test_image_metrics_without_and_with_lpips():
  a, b = _pair((32, 32, 3), "noisy")
  out = metrics.image_metrics(a, b)
  assert set(out) == {"psnr", "ssim"}
  assert out["psnr"] == pytest.approx(metrics.psnr(a, b))
  assert out["ssim"] == pytest.approx(float(metrics.ssim(a, b)), abs=1e-7)
  assert isinstance(out["psnr"], float) and isinstance(out["ssim"], float)
  out = metrics.image_metrics(a, b, {"alex": lambda x, y: jnp.float32(0.25),
                                      "vgg": lambda x, y: jnp.float32(0.5)})
  assert out["lpips_alex"] == 0.25 and out["lpips_vgg"] == 0.5
