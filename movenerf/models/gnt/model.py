"""The complete GNT model: feature extractor + coarse (+ optional fine) transformer.

Parameter tree (mirrors the official checkpoint's top-level names)::

  {'feature_net': ResUNet, 'net_coarse': GNTNet, 'net_fine': GNTNet (unless single_net)}

``GNTModel.render_rays`` renders rays against precomputed feature maps so that, for a
whole image, the feature extractor runs once and rays are rendered in chunks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from movenerf.geometry.cameras import Cameras
from movenerf.geometry.epipolar import SourceViews, project_and_sample
from movenerf.geometry.importance import fine_depths
from movenerf.geometry.rays import Rays, points_along_rays, sample_depths
from movenerf.models.examples import dummy_inputs
from movenerf.models.gnt.network import GNTNet
from movenerf.models.gnt.resunet import ResUNet
from movenerf.moe.config import MoEConfig
from movenerf import validation
from movenerf.nn import prng


# Compute dtypes a model may use.
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class GNTConfig:
  """Architecture and sampling settings (defaults: the published GNT).

  Attributes:
    width: token width D (``netwidth``).
    depth: transformer rounds (``trans_depth``).
    num_heads: ray-transformer heads.
    ff_ratio: FFN hidden width / D.
    dropout: dropout rate (training only).
    coarse_feat_dim: feature channels of the coarse map.
    fine_feat_dim: feature channels of the fine map (separate fine network only).
    single_net: one network and one feature map for both passes.
    num_samples: coarse samples per ray (S).
    num_importance: extra importance samples per ray for the fine pass (0: none).
    inverse_depth: sample uniformly in inverse depth (forward-facing scenes).
    deterministic_sampling: training takes the evenly spaced coarse depths and the
      evenly spaced importance samples of evaluation instead of stratified and random
      ones (the official ``det`` option).
    dtype: compute dtype of the transformer matmuls ("float32" or "bfloat16").
    moe: GNT-MoVE mixture of view experts (None: dense GNT).
    feature_width: channel scale of the ResUNet (64: the official network; the tiny CPU
      configs use 16, a 16x smaller CNN).
    feature_dtype: compute dtype of the CNN feature extractor. It runs once per set
      of source views, and bfloat16 convolutions (accumulated in bfloat16 on CPU)
      shift its features by ~20%, so it defaults to float32.
  """

  width: int = 64
  depth: int = 8
  num_heads: int = 4
  ff_ratio: int = 4
  dropout: float = 0.1
  coarse_feat_dim: int = 32
  fine_feat_dim: int = 32
  single_net: bool = True
  num_samples: int = 64
  num_importance: int = 0
  inverse_depth: bool = False
  deterministic_sampling: bool = False
  dtype: str = "float32"
  feature_dtype: str = "float32"
  feature_width: int = 64
  moe: MoEConfig | None = None

  def __post_init__(self):
    for key in ("width", "depth", "num_heads", "ff_ratio", "coarse_feat_dim",
                "fine_feat_dim", "num_samples", "feature_width"):
      validation.integer(key, getattr(self, key), minimum=1)
    validation.integer("num_importance", self.num_importance, minimum=0)
    validation.number("dropout", self.dropout, minimum=0.0, below=1.0)
    validation.one_of("dtype", self.dtype, DTYPES)
    validation.one_of("feature_dtype", self.feature_dtype, DTYPES)
    if self.width % self.num_heads:
      raise validation.UsageError(f"width={self.width} is not divisible by "
                                  f"num_heads={self.num_heads}")
    if self.moe is not None:
      bad = [i for i in self.moe.layers if not 0 <= i < self.depth]
      if bad:
        raise validation.UsageError(f"moe.layers={tuple(self.moe.layers)}: blocks {bad} "
                                    f"are not in [0, depth={self.depth})")

  @property
  def compute_dtype(self) -> Any:
    return jnp.dtype(self.dtype)

  @classmethod
  def from_dict(cls, values: dict) -> "GNTConfig":
    """From a plain dict (e.g. ``config.model.to_dict()``); unknown keys are errors."""
    values = dict(values)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown model config keys: {unknown}")
    moe = values.pop("moe", None)
    if moe is not None and not isinstance(moe, MoEConfig):
      moe = dict(moe)
      moe_known = {f.name for f in dataclasses.fields(MoEConfig)}
      if set(moe) - moe_known:
        raise ValueError(f"unknown model.moe config keys: {sorted(set(moe) - moe_known)}")
      moe = MoEConfig(**{**moe, "layers": tuple(moe.get("layers", MoEConfig.layers))})
    return cls(**values, moe=moe)


@flax.struct.dataclass
class PassOutput:
  """One rendering pass.

  Attributes:
    rgb: [R, 3] colours.
    depth: [R] expected depth ``sum(weights * depths)``.
    weights: [R, S] attention weights over samples (rows sum to 1).
    depths: [R, S] sample depths.
  """

  rgb: jnp.ndarray
  depth: jnp.ndarray
  weights: jnp.ndarray
  depths: jnp.ndarray


@flax.struct.dataclass
class RenderOutput:
  """Coarse pass, and fine pass when ``num_importance > 0`` (else None)."""

  coarse: PassOutput
  fine: PassOutput | None = None

  @property
  def final(self) -> PassOutput:
    return self.fine if self.fine is not None else self.coarse


class GNTModel(nn.Module):
  """GNT with its feature extractor."""

  config: GNTConfig = GNTConfig()

  def setup(self):
    c = self.config
    net = lambda: GNTNet(width=c.width, depth=c.depth, num_heads=c.num_heads,
                         ff_ratio=c.ff_ratio, dropout=c.dropout, dtype=c.compute_dtype,
                         moe=c.moe)
    self.feature_net = ResUNet(c.coarse_feat_dim, c.fine_feat_dim, c.single_net,
                               width=c.feature_width, dtype=jnp.dtype(c.feature_dtype))
    self.net_coarse = net()
    self.net_fine = None if c.single_net else net()

  def encode(self, images: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """[V, H, W, 3] images -> (coarse, fine) feature maps [V, H/4, W/4, D]."""
    return self.feature_net(images)

  def _render_pass(self, net, rays, depths, target_camera, sources, featmap, train):
    points = points_along_rays(rays, depths)
    samples, _ = project_and_sample(points, target_camera, sources, featmap)
    rgb, weights = net(samples, points, rays.directions, deterministic=not train)
    return PassOutput(rgb, jnp.sum(weights * depths, axis=-1), weights, depths)

  def render_rays(self, rays: Rays, target_camera: Cameras, sources: SourceViews,
                  featmaps: tuple[jnp.ndarray, jnp.ndarray], near, far,
                  train: bool = False) -> RenderOutput:
    """Renders rays of the target camera from the source views.

    Args:
      rays: R rays of ``target_camera``.
      target_camera: the camera the rays come from.
      sources: V source views.
      featmaps: (coarse, fine) maps from ``encode``.
      near, far: depth range (scalars or [R]).
      train: stratified sampling and random importance samples (unless
        ``deterministic_sampling``), dropout and router noise; needs the 'sample',
        'dropout' (and with MoE 'router') RNG streams. MoE auxiliaries are sown into
        the 'moe' collection (``mutable=['moe']``).

    Returns:
      RenderOutput.
    """
    c = self.config
    random = train and not c.deterministic_sampling
    rng = self.make_rng("sample") if random else None
    coarse_rng, fine_rng = jax.random.split(rng) if random else (None, None)
    depths = sample_depths(near, far, rays.num_rays, c.num_samples, c.inverse_depth, coarse_rng)
    coarse = self._render_pass(self.net_coarse, rays, depths, target_camera, sources,
                               featmaps[0], train)
    if c.num_importance <= 0:
      if self.net_fine is not None and self.is_initializing():
        # Create the fine network's parameters even when no fine pass is configured
        # (e.g. importing a checkpoint that has one, to render coarse only).
        self._render_pass(self.net_fine, rays, depths, target_camera, sources, featmaps[1],
                          train)
      return RenderOutput(coarse)
    _, depths_fine = fine_depths(depths, coarse.weights, c.num_importance, c.inverse_depth,
                                 fine_rng)
    net = self.net_coarse if c.single_net else self.net_fine
    fine = self._render_pass(net, rays, depths_fine, target_camera, sources, featmaps[1], train)
    return RenderOutput(coarse, fine)

  def __call__(self, rays: Rays, target_camera: Cameras, sources: SourceViews, near, far,
               train: bool = False) -> RenderOutput:
    """Encodes the source images and renders the rays (used for ``init``)."""
    return self.render_rays(rays, target_camera, sources, self.encode(sources.images), near,
                            far, train)


def init_variables(model: GNTModel, rng: jax.Array) -> dict[str, Any]:
  """Fresh ``{'params': ...}`` for ``model`` (compiled; the MoE auxiliaries that
  ``init`` also sows are dropped, they are outputs, not state).

  The parameters are a deterministic function of ``rng``, drawn through a hashed key
  (:func:`prng.hashed_key`: no threefry while loop per parameter in the init program);
  the initialisers' distributions are those of threefry keys.

  The parameters (float32) do not depend on the compute dtypes, so they are drawn
  through the float32 model: one init program for every dtype, which a persistent
  compilation cache then serves to each (the benchmark suite's bfloat16 cases).
  """
  model = GNTModel(dataclasses.replace(model.config, dtype="float32", feature_dtype="float32"))
  rays, target, sources = dummy_inputs(2, 32, 32, 4)
  init = jax.jit(lambda key: model.init(prng.hashed_key(key), rays, target, sources, 2.0,
                                        6.0)["params"])
  return {"params": init(rng)}
