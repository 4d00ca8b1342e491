"""Importer for official PyTorch GNT checkpoints.

Reads, from a local file or an object-store URL (``s3://``, ``gs://``, through
:mod:`movenerf.storage`), either
* an ``.npz`` whose keys are ``<net>/<torch state_dict name>`` with ``<net>`` in
  ``feature_net``, ``net_coarse``, ``net_fine`` (the layout of the reference vectors;
  other keys are ignored), or
* an official ``.pth`` (``{'feature_net': sd, 'net_coarse': sd, 'net_fine': sd, ...}``),
  which needs PyTorch (an optional extra: ``pip install movenerf[torch]``).

and maps names and layouts onto ``GNTModel``'s Flax tree: ``Linear [out, in]`` ->
``Dense kernel [in, out]``, ``Conv2d [out, in, kh, kw]`` -> ``Conv kernel
[kh, kw, in, out]``, norm ``weight`` -> ``scale``. Both official spellings of the
transformer lists are accepted (``view_crosstrans`` / ``view_trans`` for the view
transformer, ``view_selftrans`` / ``ray_trans`` for the ray transformer).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from typing import Any, Mapping

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from movenerf import storage
from movenerf.models.gnt.model import GNTConfig, GNTModel, init_variables

NETWORKS = ("feature_net", "net_coarse", "net_fine")

# (pattern on the torch module path, replacement as a Flax module path).
_RULES = (
    # ResUNet
    (r"^layer(\d+)\.(\d+)\.downsample\.0$", r"layer\1_\2/downsample_conv/conv"),
    (r"^layer(\d+)\.(\d+)\.downsample\.1$", r"layer\1_\2/downsample_norm"),
    (r"^layer(\d+)\.(\d+)\.(conv\d)$", r"layer\1_\2/\3/conv"),
    (r"^layer(\d+)\.(\d+)\.(bn\d)$", r"layer\1_\2/\3"),
    (r"^conv1$", r"conv1/conv"),
    (r"^(upconv\d)\.conv\.conv$", r"\1/conv/conv"),
    (r"^(upconv\d)\.conv\.bn$", r"\1/norm"),
    (r"^(iconv\d)\.conv$", r"\1/conv/conv"),
    (r"^(iconv\d)\.bn$", r"\1/norm"),
    # GNT transformer
    (r"^rgbfeat_fc\.0$", r"rgbfeat_fc/fc1"),
    (r"^rgbfeat_fc\.2$", r"rgbfeat_fc/fc2"),
    (r"^q_fcs\.(\d+)\.0$", r"q_fc_\1/fc1"),
    (r"^q_fcs\.(\d+)\.2$", r"q_fc_\1/fc2"),
    (r"^(?:view_crosstrans|view_trans)\.(\d+)\.attn\.(pos_fc|attn_fc)\.0$", r"view_trans_\1/attn/\2/fc1"),
    (r"^(?:view_crosstrans|view_trans)\.(\d+)\.attn\.(pos_fc|attn_fc)\.2$", r"view_trans_\1/attn/\2/fc2"),
    (r"^(?:view_crosstrans|view_trans)\.(\d+)\.(.*)$", r"view_trans_\1/\2"),
    (r"^(?:view_selftrans|ray_trans)\.(\d+)\.(.*)$", r"ray_trans_\1/\2"),
)


# Flax module path -> torch module path (inverse of _RULES, for export).
_INVERSE_RULES = (
    (r"^layer(\d+)_(\d+)/downsample_conv/conv$", r"layer\1.\2.downsample.0"),
    (r"^layer(\d+)_(\d+)/downsample_norm$", r"layer\1.\2.downsample.1"),
    (r"^layer(\d+)_(\d+)/(conv\d)/conv$", r"layer\1.\2.\3"),
    (r"^layer(\d+)_(\d+)/(bn\d)$", r"layer\1.\2.\3"),
    (r"^conv1/conv$", r"conv1"),
    (r"^(upconv\d)/conv/conv$", r"\1.conv.conv"),
    (r"^(upconv\d)/norm$", r"\1.conv.bn"),
    (r"^(iconv\d)/conv/conv$", r"\1.conv"),
    (r"^(iconv\d)/norm$", r"\1.bn"),
    (r"^rgbfeat_fc/fc1$", r"rgbfeat_fc.0"),
    (r"^rgbfeat_fc/fc2$", r"rgbfeat_fc.2"),
    (r"^q_fc_(\d+)/fc1$", r"q_fcs.\1.0"),
    (r"^q_fc_(\d+)/fc2$", r"q_fcs.\1.2"),
    (r"^view_trans_(\d+)/attn/(pos_fc|attn_fc)/fc1$", r"view_crosstrans.\1.attn.\2.0"),
    (r"^view_trans_(\d+)/attn/(pos_fc|attn_fc)/fc2$", r"view_crosstrans.\1.attn.\2.2"),
    (r"^view_trans_(\d+)/(.*)$", r"view_crosstrans.\1.\2"),
    (r"^ray_trans_(\d+)/(.*)$", r"view_selftrans.\1.\2"),
)


class CheckpointError(ValueError):
  """The checkpoint cannot be mapped onto the model (names the offending keys)."""


def load_official_arrays(path: str) -> dict[str, np.ndarray]:
  """Reads ``<net>/<torch name>`` -> array from an ``.npz`` or ``.pth`` file (local or a
  URL)."""
  remote = storage.is_remote(path)
  if remote:
    path = os.fspath(path)
    storage.check_readable(path, "checkpoint")
  elif not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  if path.endswith(".npz"):
    with np.load(_source(path, remote)) as data:
      arrays = {k: np.asarray(data[k]) for k in data.files if k.split("/", 1)[0] in NETWORKS}
  elif path.endswith((".pth", ".pt")):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(
          "reading a .pth checkpoint needs PyTorch (pip install 'movenerf[torch]'); "
          "or convert it to .npz on a machine that has it") from e
    blob = torch.load(_source(path, remote), map_location="cpu", weights_only=False)
    arrays = {}
    for net in NETWORKS:
      for name, tensor in (blob.get(net) or {}).items():
        name = name[len("module."):] if name.startswith("module.") else name
        arrays[f"{net}/{name}"] = tensor.detach().cpu().float().numpy()
  else:
    raise CheckpointError(f"unknown checkpoint format (want .npz or .pth): {path}")
  if not any(k.startswith("net_coarse/") for k in arrays):
    raise CheckpointError(f"{path} holds no 'net_coarse/*' parameters")
  return arrays


def _source(path: str, remote: bool):
  """What np.load / torch.load read: the local path, or a URL's bytes read whole."""
  return io.BytesIO(storage.read_bytes(path)) if remote else path


def infer_config(arrays: Mapping[str, np.ndarray], **overrides) -> GNTConfig:
  """Architecture read off parameter shapes; sampling settings from ``overrides``."""
  first = arrays["net_coarse/rgbfeat_fc.0.weight"]
  ray_blocks = {m.group(1) for k in arrays
                if (m := re.match(r"net_coarse/(?:view_selftrans|ray_trans)\.(\d+)\.", k))}
  single_net = not any(k.startswith("net_fine/") for k in arrays)
  ff_hidden = arrays["net_coarse/" + next(
      k.split("/", 1)[1] for k in arrays
      if re.match(r"net_coarse/(?:view_selftrans|ray_trans)\.0\.ff\.fc1\.weight", k))].shape[0]
  fine_dim = first.shape[1] - 3
  if not single_net:
    fine_dim = arrays["net_fine/rgbfeat_fc.0.weight"].shape[1] - 3
  base = GNTConfig(width=first.shape[0], depth=len(ray_blocks),
                   ff_ratio=ff_hidden // first.shape[0], coarse_feat_dim=first.shape[1] - 3,
                   fine_feat_dim=fine_dim, single_net=single_net)
  return dataclasses.replace(base, **overrides)


def _convert_one(torch_name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
  module, _, leaf = torch_name.rpartition(".")
  for pattern, repl in _RULES:
    if re.match(pattern, module):
      module = re.sub(pattern, repl, module)
      break
  module = module.replace(".", "/")
  if leaf == "bias":
    return f"{module}/bias", value
  if leaf != "weight":
    raise CheckpointError(f"unexpected parameter {torch_name!r}")
  if value.ndim == 2:  # Linear [out, in] -> Dense [in, out]
    return f"{module}/kernel", value.T
  if value.ndim == 4:  # Conv2d [out, in, kh, kw] -> [kh, kw, in, out]
    return f"{module}/kernel", value.transpose(2, 3, 1, 0)
  return f"{module}/scale", value  # LayerNorm / InstanceNorm affine weight


def convert(arrays: Mapping[str, np.ndarray], config: GNTConfig) -> dict[str, Any]:
  """Official arrays -> ``{'params': ...}`` for ``GNTModel(config)``.

  Raises:
    CheckpointError: listing parameters that are missing, unexpected or mis-shaped.
  """
  flat = {}
  for key, value in arrays.items():
    net, _, name = key.partition("/")
    if net not in NETWORKS:
      continue
    path, converted = _convert_one(name, np.asarray(value, np.float32))
    flat[tuple(f"{net}/{path}".split("/"))] = converted
  expected = flax.traverse_util.flatten_dict(abstract_params(config))
  missing = sorted("/".join(k) for k in expected.keys() - flat.keys())
  unexpected = sorted("/".join(k) for k in flat.keys() - expected.keys())
  wrong = sorted(f"{'/'.join(k)}: {flat[k].shape} vs {expected[k].shape}"
                 for k in expected.keys() & flat.keys() if flat[k].shape != expected[k].shape)
  if missing or unexpected or wrong:
    raise CheckpointError(
        "checkpoint does not match the model:\n"
        + (f"  missing: {missing[:10]}{' ...' if len(missing) > 10 else ''}\n" if missing else "")
        + (f"  unexpected: {unexpected[:10]}\n" if unexpected else "")
        + (f"  wrong shape: {wrong[:10]}\n" if wrong else ""))
  return {"params": flax.traverse_util.unflatten_dict(
      {k: jnp.asarray(v) for k, v in flat.items()})}


def export_official_arrays(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """``GNTModel`` variables -> ``<net>/<torch name>`` arrays in PyTorch layouts.

  The inverse of ``convert`` (naming the transformer lists ``view_crosstrans`` /
  ``view_selftrans`` as the reference release does); ``np.savez`` the result to get
  a file ``load_official_checkpoint`` reads.
  """
  out = {}
  for path, value in flax.traverse_util.flatten_dict(variables["params"]).items():
    net, module, leaf = path[0], "/".join(path[1:-1]), path[-1]
    for pattern, repl in _INVERSE_RULES:
      if re.match(pattern, module):
        module = re.sub(pattern, repl, module)
        break
    module = module.replace("/", ".")
    value = np.asarray(value, np.float32)
    if leaf == "kernel":
      value = value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
    name = {"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]
    out[f"{net}/{module}.{name}"] = value
  return out


def abstract_params(config: GNTConfig) -> Any:
  """Shapes of ``GNTModel(config)``'s parameters (no computation)."""
  model = GNTModel(config)
  return jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0)))["params"]


def load_official_checkpoint(path: str, **overrides) -> tuple[GNTConfig, dict[str, Any]]:
  """Reads and converts an official checkpoint; returns (config, variables)."""
  arrays = load_official_arrays(path)
  config = infer_config(arrays, **overrides)
  return config, convert(arrays, config)
