"""Tests of movenerf.evaluation.lpips: LPIPS against NumPy and torch references, weight files."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from movenerf.evaluation import lpips as lp
from movenerf.image import metrics

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
  net = fn.net
  out = metrics.image_metrics(a[0], b[0], {net: fn})
  assert isinstance(out[f"lpips_{net}"], float)
  assert out[f"lpips_{net}"] == pytest.approx(float(fn(a[0], b[0])), rel=1e-6)


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
