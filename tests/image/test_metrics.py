"""PSNR, SSIM (against scikit-image and a SciPy reference) and LPIPS (against NumPy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from movenerf.evaluation import lpips as lp
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
  assert out["lpips"] == "n/a"
  assert out["psnr"] == pytest.approx(metrics.psnr(a, b))
  assert out["ssim"] == pytest.approx(float(metrics.ssim(a, b)), abs=1e-7)
  assert isinstance(out["psnr"], float) and isinstance(out["ssim"], float)
  out = metrics.image_metrics(a, b, lpips_fn=lambda x, y: jnp.float32(0.25))
  assert out["lpips"] == 0.25


# ---------------------------------------------------------------------------------------
# LPIPS: an independent NumPy implementation in torch layouts (NCHW, OIHW).
# ---------------------------------------------------------------------------------------

# torchvision `features` Sequentials, layer by layer: ("conv", in, out, k, stride, pad),
# ("relu",), ("pool", k, stride). LPIPS taps the ReLUs at TAPS (lpips' slice ends).
ALEX_FEATURES = [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2),
                 ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
                 ("conv", 192, 384, 3, 1, 1), ("relu",),
                 ("conv", 384, 256, 3, 1, 1), ("relu",),
                 ("conv", 256, 256, 3, 1, 1), ("relu",), ("pool", 3, 2)]
ALEX_TAPS = (1, 4, 7, 9, 11)


def _vgg16_features():
  layers, c_in = [], 3
  for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
            512, 512, 512, "M"]:
    if v == "M":
      layers.append(("pool", 2, 2))
    else:
      layers += [("conv", c_in, v, 3, 1, 1), ("relu",)]
      c_in = v
  return layers


VGG_FEATURES = _vgg16_features()
VGG_TAPS = (3, 8, 15, 22, 29)
ARCHS = {"alex": (ALEX_FEATURES, ALEX_TAPS), "vgg": (VGG_FEATURES, VGG_TAPS)}


def _random_torch_states(net, seed=0):
  """Random (lin, backbone) state dicts in the torch files' names and layouts."""
  features, taps = ARCHS[net]
  rng = np.random.default_rng(seed)
  backbone = {}
  for i, layer in enumerate(features):
    if layer[0] == "conv":
      _, c_in, c_out, k, _, _ = layer
      std = np.sqrt(2.0 / (c_in * k * k))  # He init keeps activations O(1) through depth
      backbone[f"features.{i}.weight"] = (std * rng.standard_normal((c_out, c_in, k, k))
                                          ).astype(np.float32)
      backbone[f"features.{i}.bias"] = (0.05 * rng.standard_normal(c_out)).astype(np.float32)
  lin = {}
  for l, t in enumerate(taps):
    c = next(layer[2] for layer in reversed(features[:t]) if layer[0] == "conv")
    lin[f"lin{l}.model.1.weight"] = rng.random((1, c, 1, 1)).astype(np.float32)
  return lin, backbone


def _np_conv(x, w, b, stride, pad):
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  win = sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
  out = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # [N, Ho, Wo, O]
  return out.transpose(0, 3, 1, 2) + b[None, :, None, None]


def _np_maxpool(x, k, stride):
  return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride].max(axis=(4, 5))


def _np_lpips(img0, img1, net, lin, backbone):
  """[N, H, W, 3] images in [0, 1] -> [N] distances, float64 throughout."""
  features, taps = ARCHS[net]
  shift = np.array([-0.030, -0.088, -0.188])[None, :, None, None]
  scale = np.array([0.458, 0.448, 0.450])[None, :, None, None]

  def feats(img):
    x = (2.0 * img.astype(np.float64).transpose(0, 3, 1, 2) - 1.0 - shift) / scale
    out = []
    for i, layer in enumerate(features[:taps[-1] + 1]):
      if layer[0] == "conv":
        x = _np_conv(x, backbone[f"features.{i}.weight"].astype(np.float64),
                     backbone[f"features.{i}.bias"].astype(np.float64), layer[4], layer[5])
      elif layer[0] == "relu":
        x = np.maximum(x, 0.0)
        if i in taps:
          out.append(x)
      else:
        x = _np_maxpool(x, layer[1], layer[2])
    return out

  total = 0.0
  for l, (f0, f1) in enumerate(zip(feats(img0), feats(img1))):
    f0 = f0 / (np.sqrt((f0 ** 2).sum(axis=1, keepdims=True)) + 1e-10)
    f1 = f1 / (np.sqrt((f1 ** 2).sum(axis=1, keepdims=True)) + 1e-10)
    w = lin[f"lin{l}.model.1.weight"].astype(np.float64).reshape(-1)
    total = total + np.tensordot((f0 - f1) ** 2, w, axes=([1], [0])).mean(axis=(1, 2))
  return total


def _images(n, h, w, seed=0):
  rng = np.random.default_rng(seed)
  a = ndimage.gaussian_filter(rng.random((n, h, w, 3)), (0, 2, 2, 0))
  a = (a - a.min()) / (a.max() - a.min())
  b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
  return a.astype(np.float32), b.astype(np.float32)


@pytest.fixture(scope="module", params=["alex", "vgg"])
def random_lpips(request):
  net = request.param
  lin, backbone = _random_torch_states(net, seed=3)
  params, got_net = lp.params_from_torch_state(lin, backbone)
  assert got_net == net  # inferred from the lin widths
  # Non-square sizes whose pooling inputs are odd somewhere, to exercise floor rounding:
  # alex 64x72 -> conv1 15x17 -> pools 7x8 -> 3x3; vgg 24x40 -> pools ... 3x5 -> 1x2.
  h, w = (64, 72) if net == "alex" else (24, 40)
  return net, lin, backbone, lp.LpipsFn(params, net), _images(2, h, w)


def test_lpips_matches_numpy_reference(random_lpips):
  net, lin, backbone, fn, (a, b) = random_lpips
  want = _np_lpips(a, b, net, lin, backbone)
  got = np.asarray(fn(a, b))
  assert got.shape == (2,) and np.all(want > 1e-3)
  # Measured: ~1e-7 relative (float32 vs float64).
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(float(fn(a[1], b[1])), want[1], rtol=1e-5)


def test_lpips_identical_is_zero_and_symmetric(random_lpips):
  _, _, _, fn, (a, b) = random_lpips
  # Not exactly 0: XLA may round a sample's convolution differently at another batch
  # position. Real distances here are ~0.1.
  np.testing.assert_allclose(np.asarray(fn(a, a)), 0.0, rtol=0, atol=1e-10)
  np.testing.assert_allclose(np.asarray(fn(b, a)), np.asarray(fn(a, b)), rtol=1e-6)


def test_lpips_npz_round_trip(random_lpips, tmp_path):
  net, _, _, fn, (a, b) = random_lpips
  path = str(tmp_path / f"lpips_{net}.npz")
  lp.save_lpips_npz(path, fn.params, net)
  with np.load(path) as data:
    assert str(data["net"]) == net
    assert set(data.files) == {"net"} | set(lp.expected_shapes(net))
  loaded = lp.load_lpips(path)
  assert loaded.net == net
  np.testing.assert_array_equal(np.asarray(loaded(a, b)), np.asarray(fn(a, b)))
  again = lp.maybe_load_lpips(path)
  np.testing.assert_array_equal(np.asarray(again(a, b)), np.asarray(fn(a, b)))


def test_lpips_file_errors(tmp_path):
  missing = str(tmp_path / "nope" / "alex.npz")
  with pytest.raises(FileNotFoundError, match="nope"):
    lp.load_lpips(missing)
  with pytest.raises(FileNotFoundError, match="nope"):
    lp.maybe_load_lpips(missing)
  assert lp.maybe_load_lpips("") is None and lp.maybe_load_lpips(None) is None

  shapes = lp.expected_shapes("alex")
  arrays = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
  arrays["conv3.kernel"] = np.zeros((3, 3, 192, 385), np.float32)
  bad = str(tmp_path / "bad.npz")
  np.savez(bad, **arrays)
  with pytest.raises(ValueError, match=r"conv3\.kernel"):
    lp.load_lpips(bad)
  del arrays["conv3.kernel"]
  np.savez(bad, **arrays)
  with pytest.raises(ValueError, match=r"missing key 'conv3\.kernel'"):
    lp.load_lpips(bad)


def test_image_metrics_with_loaded_lpips(random_lpips):
  _, _, _, fn, (a, b) = random_lpips
  out = metrics.image_metrics(a[0], b[0], lpips_fn=fn)
  assert isinstance(out["lpips"], float)
  assert out["lpips"] == pytest.approx(float(fn(a[0], b[0])), rel=1e-6)


def _torch_lpips(torch, img0, img1, net, lin, backbone):
  """The same network written with torch.nn.functional (the lpips package's ops)."""
  F = torch.nn.functional  # pylint: disable=invalid-name
  features, taps = ARCHS[net]
  shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
  scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]

  def feats(img):
    x = (2 * torch.from_numpy(img).permute(0, 3, 1, 2) - 1 - shift) / scale
    out = []
    for i, layer in enumerate(features[:taps[-1] + 1]):
      if layer[0] == "conv":
        x = F.conv2d(x, torch.from_numpy(backbone[f"features.{i}.weight"]),
                     torch.from_numpy(backbone[f"features.{i}.bias"]), stride=layer[4],
                     padding=layer[5])
      elif layer[0] == "relu":
        x = F.relu(x)
        if i in taps:
          out.append(x)
      else:
        x = F.max_pool2d(x, layer[1], layer[2])
    return out

  total = 0
  for l, (f0, f1) in enumerate(zip(feats(img0), feats(img1))):
    f0 = f0 / (torch.sqrt((f0 ** 2).sum(1, keepdim=True)) + 1e-10)
    f1 = f1 / (torch.sqrt((f1 ** 2).sum(1, keepdim=True)) + 1e-10)
    d = F.conv2d((f0 - f1) ** 2, torch.from_numpy(lin[f"lin{l}.model.1.weight"]))
    total = total + d.mean((2, 3))[:, 0]
  return total.numpy()


def test_lpips_torch_files(random_lpips, tmp_path, monkeypatch):
  torch = pytest.importorskip("torch")
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no real hub cache
  net, lin, backbone, _, (a, b) = random_lpips
  with torch.no_grad():
    want = _torch_lpips(torch, a, b, net, lin, backbone)
  lin_pth, backbone_pth = str(tmp_path / f"{net}.pth"), str(tmp_path / "backbone.pth")
  torch.save({k: torch.from_numpy(v) for k, v in lin.items()}, lin_pth)
  classifier = {"classifier.1.weight": torch.zeros(4, 4)}  # ignored
  torch.save({**{k: torch.from_numpy(v) for k, v in backbone.items()}, **classifier},
             backbone_pth)

  npz = str(tmp_path / "converted.npz")
  assert lp.convert_torch_weights(lin_pth, backbone_pth, npz) == net
  np.testing.assert_allclose(np.asarray(lp.load_lpips(npz)(a, b)), want, rtol=1e-5)
  direct = lp.load_lpips(lin_pth, backbone_path=backbone_pth)
  np.testing.assert_allclose(np.asarray(direct(a, b)), want, rtol=1e-5)

  # A full lpips.LPIPS state dict ("net.slice<s>.<i>.*" + lins) needs no backbone file.
  full = {f"net.slice1.{k.split('.', 1)[1]}": torch.from_numpy(v) for k, v in backbone.items()}
  full.update({k: torch.from_numpy(v) for k, v in lin.items()})
  full["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
  full_pth = str(tmp_path / "full.pth")
  torch.save(full, full_pth)
  np.testing.assert_allclose(np.asarray(lp.load_lpips(full_pth)(a, b)), want, rtol=1e-5)

  # Lin weights alone: the backbone is looked up next to them under torchvision's name.
  name = lp.NETS[net].backbone_file
  with pytest.raises(FileNotFoundError, match=name):
    lp.load_lpips(lin_pth)
  torch.save({k: torch.from_numpy(v) for k, v in backbone.items()}, str(tmp_path / name))
  np.testing.assert_allclose(np.asarray(lp.load_lpips(lin_pth)(a, b)), want, rtol=1e-5)
